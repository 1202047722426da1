//! The `[[webhooks]]` tables (PROTOCOL.md section 10) as the file gives
//! them, and their checks, each naming its key as `webhooks[N].key`
//! (tables counted from 1, as users count them). What a webhook does is
//! `crate::webhooks`.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};
use crate::auth::RoomPattern;

/// Shortest secret, as PROTOCOL.md section 9 asks of every signing key.
const MIN_SECRET: usize = 16;

/// The event types a webhook may ask for, as PROTOCOL.md section 10
/// names them.
pub const EVENT_TYPES: [&str; 7] = [
    "room.occupied",
    "room.vacated",
    "member.joined",
    "member.left",
    "user.online",
    "user.offline",
    "message.published",
];

/// One `[[webhooks]]` table; unknown keys are refused by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTable {
    /// `url`: where the batches are `POST`ed (http://).
    pub url: String,
    /// `secret`: the HMAC-SHA256 key of `Hubcast-Signature` (16+
    /// characters).
    pub secret: String,
    /// `events`: the event types sent (default: all of them).
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// `rooms`: a pattern as in the token's `rooms` claim; the room events
    /// of rooms it matches are sent (personal rooms never). User events
    /// have no room and are always sent when asked for.
    #[serde(default = "all_rooms")]
    pub rooms: String,
}

fn all_events() -> Vec<String> {
    EVENT_TYPES.iter().map(|s| s.to_string()).collect()
}

fn all_rooms() -> String {
    "**".into()
}

/// Checks every table; the first bad key is the error.
pub(super) fn check(tables: &[WebhookTable], _: &Config) -> Result<(), ConfigError> {
    for (i, w) in tables.iter().enumerate() {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            key: format!("webhooks[{}].{key}", i + 1),
            message,
        };
        // This build's HTTP client has no TLS (as for [hooks]).
        let rest = w.url.strip_prefix("http://").unwrap_or_default();
        if rest.is_empty() || rest.starts_with('/') || w.url.parse::<reqwest::Url>().is_err() {
            return Err(bad(
                "url",
                format!(
                    "{:?}: must be an http:// URL with a host (https is not supported by this \
                     build; reach the receiver through a local proxy)",
                    w.url
                ),
            ));
        }
        if w.secret.chars().count() < MIN_SECRET {
            return Err(bad(
                "secret",
                format!("must be at least {MIN_SECRET} characters"),
            ));
        }
        if w.events.is_empty() {
            return Err(bad(
                "events",
                format!("must name at least one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if let Some(e) = w.events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return Err(bad(
                "events",
                format!("{e:?} is not an event; they are {}", EVENT_TYPES.join(", ")),
            ));
        }
        RoomPattern::parse(&w.rooms).map_err(|m| bad("rooms", m))?;
    }
    Ok(())
}

/// What a `[[webhooks]]` table may hold, for the error naming an unknown key.
pub(super) const KEYS: &str = "url, secret, events and rooms";

//! The `[hooks]` table (PROTOCOL.md section 9) as the file gives it, and
//! its checks, each naming its key as `hooks.key`. What the hooks do is
//! `crate::hooks`.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// Shortest secret, as PROTOCOL.md section 9 asks.
const MIN_SECRET: usize = 16;
/// Longest `timeout_ms`: a minute (a hook holds a client's frames back).
const MAX_TIMEOUT_MS: u64 = 60_000;

/// `[hooks]`: where the application's backend is asked, and which hooks
/// are on. Unknown keys are refused by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksTable {
    /// `url`: every hook is a `POST` here; none: no hooks (rooms cannot
    /// say `"hook"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `secret`: the HMAC-SHA256 key of `Hubcast-Signature` (16+ characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `timeout_ms`: how long a hook may take before the action gets
    /// `unavailable`.
    pub timeout_ms: u64,
    /// `connect`: a handshake without a JWT asks the backend.
    pub connect: bool,
    /// `rpc`: `rpc` frames go to the backend.
    pub rpc: bool,
    /// `max_in_flight` (extension): hook requests under way on this node at
    /// once; past it, the action gets `unavailable` at once instead of
    /// waiting in a queue.
    pub max_in_flight: usize,
}

impl Default for HooksTable {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            timeout_ms: 1000,
            connect: false,
            rpc: false,
            max_in_flight: 1000,
        }
    }
}

/// Checks the table; the first bad key is the error, as `hooks.key`.
pub(super) fn check(h: &HooksTable, _: &Config) -> Result<(), ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Invalid {
        key: format!("hooks.{key}"),
        message,
    };
    match &h.url {
        None => {
            for (key, on) in [("connect", h.connect), ("rpc", h.rpc)] {
                if on {
                    return Err(bad(
                        key,
                        format!("{key} = true needs hooks.url (the backend to ask)"),
                    ));
                }
            }
        }
        Some(url) => {
            // This build's HTTP client has no TLS (as for jwt_jwks_url).
            let rest = url.strip_prefix("http://").unwrap_or_default();
            if rest.is_empty() || rest.starts_with('/') || url.parse::<reqwest::Url>().is_err() {
                return Err(bad(
                    "url",
                    format!(
                        "{url:?}: must be an http:// URL with a host (https is not supported \
                         by this build; reach the backend through a local proxy)"
                    ),
                ));
            }
            match &h.secret {
                Some(s) if s.chars().count() >= MIN_SECRET => {}
                Some(_) => {
                    return Err(bad(
                        "secret",
                        format!("must be at least {MIN_SECRET} characters"),
                    ));
                }
                None => {
                    return Err(bad(
                        "secret",
                        format!(
                            "is required with hooks.url (at least {MIN_SECRET} characters; the \
                             backend checks Hubcast-Signature with it)"
                        ),
                    ));
                }
            }
        }
    }
    if !(1..=MAX_TIMEOUT_MS).contains(&h.timeout_ms) {
        return Err(bad(
            "timeout_ms",
            format!("must be between 1 and {MAX_TIMEOUT_MS} milliseconds"),
        ));
    }
    if !(1..=1_000_000).contains(&h.max_in_flight) {
        return Err(bad(
            "max_in_flight",
            "must be between 1 and 1000000 requests".into(),
        ));
    }
    Ok(())
}

//! Room rules (PROTOCOL.md section 7): the config's `[[rooms]]` tables,
//! compiled once at start, and the lookup that gives a room its effective
//! rule: the first table whose `match` matches the room, else the global
//! settings.
//!
//! The lookup sits on the publish and join paths (and in the Redis engine's
//! publish, recover and history), so it neither locks nor allocates: a scan
//! of the compiled patterns, each walked segment by segment against the
//! room's name (`auth::RoomPattern::matches`). A config without tables and
//! a personal room return the global rule without scanning.
//!
//! Personal rooms (`@user`) always follow the global settings: a `*` or
//! `**` pattern would match their single segment, but they are a user's
//! inbox, written with `send`, not rooms an application lays out (the
//! token's `rooms` claim leaves them out the same way).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::RoomPattern;
use crate::config::{Config, ConfigError, RoomTable};
use crate::protocol;

/// Most messages a rule (or the global `history_size`) may keep per room.
const MAX_HISTORY_SIZE: usize = 1_000_000;
/// Longest `history_ttl`, in seconds: 7 days.
const MAX_HISTORY_TTL: u64 = 7 * 24 * 3600;

/// Who may publish into a room (`publish`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Publishers {
    /// Every connection its token allows, as section 2 says.
    #[default]
    Members,
    /// The server API only: a client's `publish` answers `forbidden`.
    Server,
    /// The publish hook decides for clients (section 9; the server API is
    /// not asked). Needs `[hooks]` with a `url`.
    Hook,
}

/// Who may join a room (`join`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Joiners {
    /// Everyone the token allows.
    #[default]
    Open,
    /// The join hook decides, after the token allows the room (section 9).
    /// Needs `[hooks]` with a `url`.
    Hook,
}

/// How much of a room's stream an engine keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Messages kept; 0 keeps none (offsets are still assigned).
    pub size: usize,
    /// How long a message is kept, and its msgId in the idempotency window.
    pub ttl: Duration,
}

/// A room's effective rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `publish`.
    pub publish: Publishers,
    /// `join`.
    pub join: Joiners,
    /// `history_size` and `history_ttl`.
    pub history: History,
    /// `presence`: whether the room keeps presence (members, events).
    pub presence: bool,
}

/// Every room's rule: the compiled tables, first match wins, and the
/// global settings' rule for the rest.
#[derive(Debug)]
pub struct Rules {
    tables: Box<[(RoomPattern, Rule)]>,
    global: Rule,
}

impl Rules {
    /// No tables: every room keeps `history` and presence, members publish.
    pub fn uniform(history: History) -> Rules {
        Rules {
            tables: Box::new([]),
            global: Rule {
                publish: Publishers::Members,
                join: Joiners::Open,
                history,
                presence: true,
            },
        }
    }

    /// Compiles the config's `[[rooms]]` tables over its global settings;
    /// the first bad table is the error, naming its key as `rooms[N].key`
    /// (N from 1).
    pub fn from_config(cfg: &Config) -> Result<Rules, ConfigError> {
        let global = Rules::uniform(History {
            size: cfg.history_size,
            ttl: cfg.history_ttl(),
        })
        .global;
        let tables = cfg
            .rooms
            .iter()
            .enumerate()
            .map(|(i, table)| compile(i + 1, table, &global, cfg.hooks.url.is_some()))
            .collect::<Result<_, _>>()?;
        Ok(Rules { tables, global })
    }

    /// The room's effective rule: the first table that matches, else the
    /// global one (always for personal rooms).
    pub fn for_room(&self, room: &str) -> &Rule {
        if self.tables.is_empty() || protocol::is_personal(room) {
            return &self.global;
        }
        self.tables
            .iter()
            .find(|(pattern, _)| pattern.matches(room))
            .map_or(&self.global, |(_, rule)| rule)
    }

    /// What the engines keep of the room's stream.
    pub fn history(&self, room: &str) -> History {
        self.for_room(room).history
    }

    /// The global settings' rule (rooms no table matches).
    pub fn global(&self) -> &Rule {
        &self.global
    }

    /// The most any room keeps: the largest `history_size` and the longest
    /// `history_ttl` over every rule (an engine whose limits are per store,
    /// not per room, sets these and trims each room further as it reads).
    pub fn largest(&self) -> History {
        self.tables
            .iter()
            .map(|(_, rule)| rule.history)
            .fold(self.global.history, |a, b| History {
                size: a.size.max(b.size),
                ttl: a.ttl.max(b.ttl),
            })
    }

    /// The shortest `history_ttl` of any room: how often an engine must
    /// sweep to forget expired entries about on time.
    pub fn shortest_ttl(&self) -> Duration {
        self.tables
            .iter()
            .map(|(_, rule)| rule.history.ttl)
            .fold(self.global.history.ttl, Duration::min)
    }
}

/// Table `n` (from 1) checked and compiled; errors name `rooms[n].key`.
fn compile(
    n: usize,
    table: &RoomTable,
    global: &Rule,
    hooks: bool,
) -> Result<(RoomPattern, Rule), ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Invalid {
        key: format!("rooms[{n}].{key}"),
        message,
    };
    let pattern = RoomPattern::parse(&table.pattern).map_err(|m| bad("match", m))?;
    if table.publish == Publishers::Hook && !hooks {
        return Err(bad(
            "publish",
            needs_hooks("publish", "\"members\" or \"server\""),
        ));
    }
    if table.join == Joiners::Hook && !hooks {
        return Err(bad("join", needs_hooks("join", "\"open\"")));
    }
    let size = table.history_size.unwrap_or(global.history.size);
    if size > MAX_HISTORY_SIZE {
        return Err(bad(
            "history_size",
            format!("must be at most {MAX_HISTORY_SIZE} messages"),
        ));
    }
    let ttl = table.history_ttl.unwrap_or(global.history.ttl.as_secs());
    if !(1..=MAX_HISTORY_TTL).contains(&ttl) {
        return Err(bad(
            "history_ttl",
            "must be between 1 second and 7 days".into(),
        ));
    }
    let rule = Rule {
        publish: table.publish,
        join: table.join,
        history: History {
            size,
            ttl: Duration::from_secs(ttl),
        },
        presence: table.presence,
    };
    Ok((pattern, rule))
}

/// Why `key = "hook"` cannot start without `[hooks]`.
fn needs_hooks(key: &str, instead: &str) -> String {
    format!(
        "{key} = \"hook\" needs backend hooks: set url and secret in [hooks], \
         or use {instead}"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn table(pattern: &str) -> RoomTable {
        RoomTable::new(pattern)
    }

    fn rules(tables: Vec<RoomTable>) -> Result<Rules, String> {
        let cfg = Config {
            rooms: tables,
            ..Config::default()
        };
        Rules::from_config(&cfg).map_err(|e| e.to_string())
    }

    #[test]
    fn first_match_wins_and_the_rest_follow_the_globals() {
        let r = rules(vec![
            RoomTable {
                history_size: Some(5),
                ..table("news.sport")
            },
            RoomTable {
                publish: Publishers::Server,
                history_ttl: Some(60),
                ..table("news.**")
            },
            RoomTable {
                presence: false,
                ..table("*")
            },
        ])
        .unwrap();
        let sport = r.for_room("news.sport");
        assert_eq!(sport.history.size, 5);
        assert_eq!(sport.publish, Publishers::Members, "the first match only");
        let eu = r.for_room("news.eu.today");
        assert_eq!(eu.publish, Publishers::Server);
        assert_eq!(eu.history.ttl, Duration::from_secs(60));
        assert_eq!(eu.history.size, 1000, "unset keys take the global value");
        assert!(!r.for_room("lobby").presence);
        assert_eq!(r.for_room("chat.x"), r.global());
        // `news.**` needs a segment after `news`: `*` is the first match.
        assert!(!r.for_room("news").presence);
        // Personal rooms are never ruled, though `*` matches one segment.
        assert_eq!(r.for_room("@alice"), r.global());
        assert_eq!(r.shortest_ttl(), Duration::from_secs(60));
    }

    #[test]
    fn bad_tables_name_their_key_counting_from_one() {
        let err = rules(vec![table("ok"), table("a..b")]).unwrap_err();
        assert!(err.contains("rooms[2].match"), "{err}");
        let err = rules(vec![RoomTable {
            publish: Publishers::Hook,
            ..table("x")
        }])
        .unwrap_err();
        assert!(
            err.contains("rooms[1].publish")
                && err.contains(
                    "publish = \"hook\" needs backend hooks: set url and secret in [hooks]"
                ),
            "{err}"
        );
        let err = rules(vec![RoomTable {
            join: Joiners::Hook,
            ..table("x")
        }])
        .unwrap_err();
        assert!(
            err.contains("rooms[1].join") && err.contains("needs backend hooks"),
            "{err}"
        );
        let err = rules(vec![RoomTable {
            history_size: Some(2_000_000),
            ..table("x")
        }])
        .unwrap_err();
        assert!(err.contains("rooms[1].history_size"), "{err}");
        let err = rules(vec![RoomTable {
            history_ttl: Some(0),
            ..table("x")
        }])
        .unwrap_err();
        assert!(err.contains("rooms[1].history_ttl"), "{err}");
    }

    #[test]
    fn hook_rules_are_allowed_once_hooks_have_a_url() {
        let cfg = Config {
            rooms: vec![
                RoomTable {
                    publish: Publishers::Hook,
                    ..table("a.*")
                },
                RoomTable {
                    join: Joiners::Hook,
                    ..table("b.*")
                },
            ],
            hooks: crate::config::HooksTable {
                url: Some("http://127.0.0.1:3000/hooks".into()),
                secret: Some("0123456789abcdef".into()),
                ..Default::default()
            },
            ..Config::default()
        };
        let r = Rules::from_config(&cfg).unwrap();
        assert_eq!(r.for_room("a.x").publish, Publishers::Hook);
        assert_eq!(r.for_room("b.x").join, Joiners::Hook);
        assert_eq!(r.for_room("c").join, Joiners::Open);
    }
}

//! The `[[rooms]]` tables as the file gives them (PROTOCOL.md section 7),
//! and errors that name a table's key as users count tables:
//! `rooms[1]` is the first `[[rooms]]` table of the file. What a table
//! means, and its checks, are `crate::rules`.

use serde::{Deserialize, Serialize};

use crate::rules::{Joiners, Publishers};

/// One `[[rooms]]` table as the file gives it (`Config::rooms`);
/// unknown keys are refused by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomTable {
    /// `match`: a pattern as in the token's `rooms` claim.
    #[serde(rename = "match")]
    pub pattern: String,
    /// `publish`: members (default), server or hook.
    #[serde(default)]
    pub publish: Publishers,
    /// `join`: open (default) or hook.
    #[serde(default)]
    pub join: Joiners,
    /// `history_size`; none: the global one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_size: Option<usize>,
    /// `history_ttl` in seconds; none: the global one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_ttl: Option<u64>,
    /// `presence` (default true).
    #[serde(default = "keeps_presence")]
    pub presence: bool,
}

fn keeps_presence() -> bool {
    true
}

impl RoomTable {
    /// The table `[[rooms]]` with only `match = pattern` reads: every
    /// other key at its default.
    pub fn new(pattern: &str) -> RoomTable {
        RoomTable {
            pattern: pattern.into(),
            publish: Publishers::default(),
            join: Joiners::default(),
            history_size: None,
            history_ttl: None,
            presence: keeps_presence(),
        }
    }
}

/// What a `[[rooms]]` table may hold, for the error naming an unknown key.
pub(super) const KEYS: &str = "match, publish, join, history_size, history_ttl and presence";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_new_table_is_one_that_names_only_its_pattern() {
        let read: RoomTable = serde_json::from_str(r#"{"match": "chat.*"}"#).unwrap();
        assert_eq!(RoomTable::new("chat.*"), read);
    }
}

//! The `[[rooms]]` tables as the file gives them (PROTOCOL.md section 7),
//! and errors that name a table's key as users count tables:
//! `rooms[1]` is the first `[[rooms]]` table of the file. What a table
//! means, and its checks, are `crate::rules`.

use serde::{Deserialize, Serialize};

use super::ConfigError;
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

/// A file error inside a `[[rooms]]` table (a bad type or value, an
/// unknown or missing key), named `rooms[N].key`; `None` for any other
/// error. Figment counts the tables from 0 in its error paths.
pub(super) fn named(e: &figment::Error) -> Option<ConfigError> {
    use figment::error::Kind;
    let [first, index, rest @ ..] = e.path.as_slice() else {
        return None;
    };
    if first != "rooms" {
        return None;
    }
    let n = index.parse::<usize>().ok()? + 1;
    let (key, message) = match &e.kind {
        Kind::UnknownField(field, _) => (
            field.clone(),
            "unknown key; a [[rooms]] table has match, publish, join, history_size, \
             history_ttl and presence"
                .to_string(),
        ),
        Kind::MissingField(field) => (field.to_string(), "is required".to_string()),
        kind => (rest.join("."), kind.to_string()),
    };
    let key = if key.is_empty() {
        format!("rooms[{n}]")
    } else {
        format!("rooms[{n}].{key}")
    };
    Some(ConfigError::Invalid { key, message })
}

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

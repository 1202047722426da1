//! Presence: a user's status, the members a room lists, and what a
//! presence event reports.

use serde::{Deserialize, Serialize};

/// A user's presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Connected and active.
    Online,
    /// Connected, away.
    Away,
    /// Connected, do not disturb.
    Busy,
    /// No connection (only in user status replies).
    Offline,
}

impl Status {
    /// The wire name.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Offline => "offline",
        }
    }
}

/// A presence member as listed in `joined.members` and `presence` replies.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Member {
    /// User id.
    pub user: String,
    /// Display name.
    pub name: String,
    /// online, away or busy.
    pub status: Status,
    /// The user's connections in the room.
    pub connections: u32,
}

/// What happened in a presence event.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PresenceAction {
    /// First connection of a user joined.
    Join,
    /// Last connection of a user left.
    Leave,
    /// The user's status changed.
    Status,
}

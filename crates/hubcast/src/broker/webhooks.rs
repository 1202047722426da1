//! The engine's side of webhooks (PROTOCOL.md section 10): the log of
//! events every node's delivery reads.
//!
//! The engine decides the transitions (first member of a room, last
//! connection of a user, ...) where it already decides presence, once for
//! the cluster, and appends the event to its log in the same step, so a
//! node that dies after noticing takes nothing with it. `room.vacated` and
//! `user.offline` wait `webhook_offline_delay` as pending entries; a
//! return within the delay cancels them (and sends no second
//! `room.occupied` / `user.online`); [`WebhookLog::promote`] moves the
//! due ones into the log. `message.published` is recorded by the publish
//! itself when its request says a webhook wants it
//! (`PublishRequest::webhook`), in the same step as the message.
//!
//! The log is read per webhook (a consumer group of one fixed consumer):
//! [`WebhookLog::read`] returns the entries not yet acknowledged, oldest
//! first, the same ones again until [`WebhookLog::ack`] says they are
//! done. So a batch is delivered at least once, and in order.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use super::BrokerError;

/// A webhook event type (PROTOCOL.md section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A room got its first member on any node.
    RoomOccupied,
    /// A room's last member left, and nobody came back within the delay.
    RoomVacated,
    /// A user's first connection joined a room.
    MemberJoined,
    /// A user's last connection left a room.
    MemberLeft,
    /// A user's first connection anywhere.
    UserOnline,
    /// A user's last connection closed, and none opened within the delay.
    UserOffline,
    /// A message was published in a room.
    MessagePublished,
}

impl EventType {
    /// Every type, in PROTOCOL.md's order.
    pub const ALL: [EventType; 7] = [
        EventType::RoomOccupied,
        EventType::RoomVacated,
        EventType::MemberJoined,
        EventType::MemberLeft,
        EventType::UserOnline,
        EventType::UserOffline,
        EventType::MessagePublished,
    ];

    /// The name the body's `type` carries.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RoomOccupied => "room.occupied",
            EventType::RoomVacated => "room.vacated",
            EventType::MemberJoined => "member.joined",
            EventType::MemberLeft => "member.left",
            EventType::UserOnline => "user.online",
            EventType::UserOffline => "user.offline",
            EventType::MessagePublished => "message.published",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// A webhook event as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// What happened.
    pub kind: EventType,
    /// When, Unix ms (for a delayed event: when the last one left).
    pub time: i64,
    /// The room (room, member and message events).
    pub room: Option<Arc<str>>,
    /// The user (member and user events).
    pub user: Option<Arc<str>>,
    /// The message's envelope (`message.published`).
    pub message: Option<Bytes>,
}

impl WebhookEvent {
    /// An event of a room (`room.*`).
    pub fn room(kind: EventType, room: &str, time: i64) -> Self {
        Self {
            kind,
            time,
            room: Some(room.into()),
            user: None,
            message: None,
        }
    }

    /// An event of a member (`member.*`).
    pub fn member(kind: EventType, room: &str, user: &str, time: i64) -> Self {
        Self {
            user: Some(user.into()),
            ..Self::room(kind, room, time)
        }
    }

    /// An event of a user (`user.*`).
    pub fn user(kind: EventType, user: &str, time: i64) -> Self {
        Self {
            kind,
            time,
            room: None,
            user: Some(user.into()),
            message: None,
        }
    }
}

/// An event with the id the log gave it: unique, and the same at every
/// read until acknowledged (what receivers dedupe on).
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// The event's id.
    pub id: String,
    /// The event.
    pub event: WebhookEvent,
}

/// One event as the body's `events` lists it.
#[derive(Serialize)]
pub struct EventBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a serde_json::value::RawValue>,
}

impl LoggedEvent {
    /// The event as the body lists it.
    pub fn body(&self) -> EventBody<'_> {
        let e = &self.event;
        EventBody {
            id: &self.id,
            kind: e.kind.as_str(),
            time: e.time,
            room: e.room.as_deref(),
            user: e.user.as_deref(),
            message: e.message.as_ref().map(crate::protocol::as_raw),
        }
    }
}

/// The engine's webhook log; see the module documentation.
#[async_trait]
pub trait WebhookLog: Send + Sync + 'static {
    /// Records transitions for the consumer groups named (one per
    /// webhook, the ones in force: a group not named any more is
    /// forgotten), with `webhook_offline_delay`. Called at start with
    /// webhooks configured, and again by each reload that changes them;
    /// with none, the engine records nothing (more).
    async fn enable_webhooks(&self, groups: &[String], delay: Duration) -> Result<(), BrokerError>;

    /// Moves the pending events whose delay has passed into the log, once
    /// for the cluster whichever node calls it.
    async fn promote(&self) -> Result<(), BrokerError>;

    /// Whether this node delivers `group` now: takes or renews the group's
    /// lease for `ttl` (one delivering node at a time). The memory engine
    /// is the only node there is.
    async fn lead(&self, group: &str, ttl: Duration) -> Result<bool, BrokerError>;

    /// Up to `max` entries of `group` not yet acknowledged, oldest first.
    async fn read(&self, group: &str, max: usize) -> Result<Vec<LoggedEvent>, BrokerError>;

    /// Acknowledges `group`'s entries `ids` (delivered, filtered out, or
    /// dropped after their retries).
    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BrokerError>;
}

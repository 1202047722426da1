//! Server frames other than message envelopes, as serde structs that
//! borrow what they carry: a frame is serialized once, straight from the
//! server's own data, with no intermediate copy.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::ErrorCode;
use crate::presence::{Member, PresenceAction, Status};

/// `welcome`
#[derive(Serialize)]
pub struct Welcome<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub protocol: u32,
    #[serde(rename = "connId")]
    pub conn_id: &'a str,
    pub user: &'a str,
    /// Extension: the display name the server uses for this connection.
    pub name: &'a str,
    pub node: &'a str,
    pub heartbeat: u64,
    /// Extension: the largest frame the server accepts.
    #[serde(rename = "maxMessageBytes")]
    pub max_message_bytes: usize,
}

/// `joined`
#[derive(Serialize)]
pub struct Joined<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a RawValue>,
    pub room: &'a str,
    pub offset: u64,
    pub epoch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    pub members: &'a [Member],
    /// Extension: users present in all (`members` lists at most
    /// `max_presence_members`).
    pub total: usize,
}

/// `left`
#[derive(Serialize)]
pub struct Left<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a RawValue>,
    pub room: &'a str,
}

/// `ok`
#[derive(Serialize)]
pub struct Ok<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a RawValue>,
}

/// `pong`
#[derive(Serialize)]
pub struct Pong<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a RawValue>,
    pub timestamp: i64,
}

/// `ack`
#[derive(Serialize)]
pub struct Ack<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a RawValue>,
    #[serde(rename = "msgId")]
    pub msg_id: &'a str,
    pub room: &'a str,
    pub offset: u64,
    /// Extension: the epoch of `offset`.
    pub epoch: &'a str,
    pub duplicate: bool,
}

/// `presence` reply.
#[derive(Serialize)]
pub struct PresenceReply<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a RawValue>,
    pub room: &'a str,
    pub members: &'a [Member],
    /// Extension: users present in all.
    pub total: usize,
}

/// `presence` event.
#[derive(Serialize)]
pub struct PresenceEvent<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub room: &'a str,
    pub action: PresenceAction,
    pub user: &'a str,
    pub name: &'a str,
    pub status: Status,
}

/// One event of a `presence` batch (extension, see docs/protocol.md).
#[derive(Serialize)]
pub struct PresenceChange<'a> {
    pub action: PresenceAction,
    pub user: &'a str,
    pub name: &'a str,
    pub status: Status,
}

/// `presence` event of a busy room: the events held since its last flush
/// (extension: `action` is `batch`).
#[derive(Serialize)]
pub struct PresenceBatch<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub room: &'a str,
    pub action: &'static str,
    pub events: &'a [PresenceChange<'a>],
}

/// `presence` event of a room too busy to list its changes: how many there
/// were (extension: `action` is `sync`; fetch the member list).
#[derive(Serialize)]
pub struct PresenceSync<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub room: &'a str,
    pub action: &'static str,
    pub changes: usize,
}

/// `history` reply; `messages` are the stored envelopes.
#[derive(Serialize)]
pub struct History<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a RawValue>,
    pub room: &'a str,
    pub epoch: &'a str,
    pub messages: Vec<&'a RawValue>,
    pub complete: bool,
}

/// `error`
#[derive(Serialize)]
pub struct Error<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a RawValue>,
    pub code: ErrorCode,
    pub message: &'a str,
    /// The message's id, on a `timeout` for a publish or send: the id to
    /// retry with.
    #[serde(rename = "msgId", skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<&'a str>,
    /// The room, on the error of a join the server made for the client (a
    /// token's `subs`): it has no `id` to match a request by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<&'a str>,
}

/// `result` (version 1.1): the reply to an `rpc`, the backend's `data` or
/// an `error` (the backend's own, or the server's when the backend could
/// not be asked).
#[derive(Serialize)]
pub struct RpcResult<'a> {
    #[serde(rename = "type")]
    pub ty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError<'a>>,
}

/// The `error` of a `result`: a code and a message.
#[derive(Serialize)]
pub struct RpcError<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

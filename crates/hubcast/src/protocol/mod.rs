//! The frames of PROTOCOL.md section 2, the error codes of section 3 and the
//! close codes of section 4: parsing client frames (checking each field and
//! naming the one that is wrong) and encoding server frames.
//!
//! Client frames are parsed in two steps: serde borrows every known field as
//! raw JSON, then each is checked on its own, so an error can say which
//! field is missing or of the wrong type. Server frames are encoded once into
//! [`Bytes`]; message envelopes are written by hand from pre-escaped parts.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

mod envelope;
pub use envelope::{EnvelopeParts, as_raw, envelope_trace_id, json_string};

/// Protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// WebSocket subprotocol a client may offer.
pub const SUBPROTOCOL: &str = "hubcast.v1";
/// Largest `limit` a `history` request may ask for.
pub const MAX_HISTORY_LIMIT: usize = 1000;
/// `limit` when a `history` request gives none.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// `error.code` values (PROTOCOL.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, missing or invalid field, binary frame.
    BadRequest,
    /// A `type` the server does not know.
    UnknownType,
    /// No or bad credentials.
    Unauthorized,
    /// Credentials do not allow this.
    Forbidden,
    /// `leave` of a room the connection has not joined.
    NotJoined,
    /// More rooms than `max_rooms_per_conn`.
    TooManyRooms,
    /// Too many frames.
    RateLimited,
    /// A body or frame over the size limit.
    TooLarge,
    /// The broker cannot serve the request now.
    Unavailable,
    /// A bug; details are in the server log.
    Internal,
    /// HTTP only: no such route or resource.
    NotFound,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::NotFound => "not_found",
        }
    }
}

/// WebSocket close codes (PROTOCOL.md section 4).
pub mod close {
    /// Normal close.
    pub const NORMAL: u16 = 1000;
    /// Server shutting down; reconnect (to another node).
    pub const GOING_AWAY: u16 = 1001;
    /// A broken WebSocket frame.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation.
    pub const POLICY: u16 = 1008;
    /// A frame larger than `max_message_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL: u16 = 1011;
    /// Slow consumer: the outbound queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4000;
    /// Token expired.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Nothing arrived for `2 * heartbeat + 5` seconds.
    pub const HEARTBEAT_TIMEOUT: u16 = 4002;
    /// Rate limit exceeded repeatedly.
    pub const FLOODING: u16 = 4003;
}

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
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Offline => "offline",
        }
    }
}

/// A client frame's `id`, kept as the raw JSON it arrived as so the reply
/// echoes it exactly (number or string).
pub type FrameId = Box<RawValue>;

/// A parsed, checked client frame.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    /// `join`
    Join {
        /// Room to join.
        room: Cow<'a, str>,
        /// Last offset the client processed.
        since: Option<u64>,
        /// Epoch of `since`.
        epoch: Option<Cow<'a, str>>,
    },
    /// `leave`
    Leave {
        /// Room to leave.
        room: Cow<'a, str>,
    },
    /// `publish`
    Publish {
        /// Target room.
        room: Cow<'a, str>,
        /// Event type.
        event: Cow<'a, str>,
        /// Payload, any JSON, as received.
        data: &'a RawValue,
        /// Client-chosen idempotency key.
        msg_id: Option<Cow<'a, str>>,
        /// Deliver to the publishing connection too.
        echo: bool,
    },
    /// `send`
    Send {
        /// Recipient user id.
        to: Cow<'a, str>,
        /// Event type.
        event: Cow<'a, str>,
        /// Payload.
        data: &'a RawValue,
        /// Client-chosen idempotency key.
        msg_id: Option<Cow<'a, str>>,
    },
    /// `presence`
    Presence {
        /// Room whose members are asked for.
        room: Cow<'a, str>,
    },
    /// `history`
    History {
        /// Room.
        room: Cow<'a, str>,
        /// Only messages after this offset.
        since: Option<u64>,
        /// At most this many (1..=1000).
        limit: usize,
    },
    /// `status`
    Status {
        /// New status (never `offline`).
        status: Status,
    },
    /// `ping`
    Ping,
}

/// A frame that could not be accepted: the reply is an `error` frame.
#[derive(Debug)]
pub struct FrameError {
    /// The failed frame's id, when it had a valid one.
    pub id: Option<FrameId>,
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl FrameError {
    fn bad(id: Option<FrameId>, message: impl Into<String>) -> Self {
        Self {
            id,
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }
}

/// Deserializes a present field, `null` included, as `Some(raw)`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Every field any client frame may carry, unchecked. Unknown fields are
/// ignored (PROTOCOL.md section 2).
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    ty: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    epoch: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    event: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(rename = "msgId", default, borrow, deserialize_with = "present")]
    msg_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    echo: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    limit: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    status: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    source: Option<&'a RawValue>,
}

/// Field checks for one frame, carrying its id for error replies.
struct Fields<'a, 'f> {
    raw: &'f RawFrame<'a>,
    id: &'f Option<FrameId>,
}

impl<'a> Fields<'a, '_> {
    fn err(&self, message: impl Into<String>) -> FrameError {
        FrameError::bad(self.id.clone(), message)
    }

    fn string(
        &self,
        name: &str,
        v: Option<&'a RawValue>,
    ) -> Result<Option<Cow<'a, str>>, FrameError> {
        match v {
            None => Ok(None),
            Some(raw) => match serde_json::from_str::<&'a str>(raw.get()) {
                Ok(s) => Ok(Some(Cow::Borrowed(s))),
                // Strings with escapes cannot be borrowed; parse them owned.
                Err(_) => serde_json::from_str::<String>(raw.get())
                    .map(|s| Some(Cow::Owned(s)))
                    .map_err(|_| self.err(format!("field `{name}` must be a string"))),
            },
        }
    }

    fn required_string(
        &self,
        name: &str,
        v: Option<&'a RawValue>,
    ) -> Result<Cow<'a, str>, FrameError> {
        self.string(name, v)?
            .ok_or_else(|| self.err(format!("field `{name}` is required")))
    }

    fn u64(&self, name: &str, v: Option<&'a RawValue>) -> Result<Option<u64>, FrameError> {
        match v {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<u64>(raw.get())
                .map(Some)
                .map_err(|_| self.err(format!("field `{name}` must be a non-negative integer"))),
        }
    }

    fn room(&self) -> Result<Cow<'a, str>, FrameError> {
        let room = self.required_string("room", self.raw.room)?;
        check_room(&room).map_err(|m| self.err(m))?;
        Ok(room)
    }

    fn event(&self) -> Result<Cow<'a, str>, FrameError> {
        let event = self.required_string("event", self.raw.event)?;
        check_event(&event).map_err(|m| self.err(m))?;
        Ok(event)
    }

    fn data(&self) -> Result<&'a RawValue, FrameError> {
        self.raw
            .data
            .ok_or_else(|| self.err("field `data` is required (any JSON value, null included)"))
    }

    fn msg_id(&self) -> Result<Option<Cow<'a, str>>, FrameError> {
        let msg_id = self.string("msgId", self.raw.msg_id)?;
        if let Some(m) = &msg_id {
            check_msg_id(m).map_err(|e| self.err(e))?;
        }
        Ok(msg_id)
    }
}

/// The body of `POST /api/publish` or `POST /api/send`, checked like the
/// WebSocket frames.
#[derive(Debug)]
pub struct ApiPublish<'a> {
    /// Target room (`@to` for a send).
    pub room: Cow<'a, str>,
    /// Event type.
    pub event: Cow<'a, str>,
    /// Payload.
    pub data: &'a RawValue,
    /// Caller-chosen idempotency key.
    pub msg_id: Option<Cow<'a, str>>,
    /// The envelope's `source` (default `api`).
    pub source: Option<Cow<'a, str>>,
}

/// Parses an API publish (`send` false: `room`) or send (`to`) body. Errors
/// name the field, as for frames.
pub fn parse_api_publish(body: &[u8], send: bool) -> Result<ApiPublish<'_>, FrameError> {
    let value: &RawValue = serde_json::from_slice(body)
        .map_err(|e| FrameError::bad(None, format!("malformed JSON: {e}")))?;
    if !value.get().starts_with('{') {
        return Err(FrameError::bad(None, "the body must be a JSON object"));
    }
    let raw: RawFrame<'_> = serde_json::from_str(value.get())
        .map_err(|e| FrameError::bad(None, format!("malformed body: {e}")))?;
    let id = None;
    let f = Fields { raw: &raw, id: &id };
    let room = if send {
        let to = f.required_string("to", raw.to)?;
        check_user(&to).map_err(|m| f.err(format!("field `to`: {m}")))?;
        Cow::Owned(personal_room(&to))
    } else {
        f.room()?
    };
    let event = f.event()?;
    let data = f.data()?;
    let msg_id = f.msg_id()?;
    let source = f.string("source", raw.source)?;
    if let Some(s) = &source {
        check_user(s).map_err(|m| f.err(format!("field `source`: {m}")))?;
    }
    Ok(ApiPublish {
        room,
        event,
        data,
        msg_id,
        source,
    })
}

/// Parses and checks one client text frame.
pub fn parse_client_frame(text: &[u8]) -> Result<(Option<FrameId>, ClientFrame<'_>), FrameError> {
    let value: &RawValue = serde_json::from_slice(text)
        .map_err(|e| FrameError::bad(None, format!("malformed JSON: {e}")))?;
    if !value.get().starts_with('{') {
        return Err(FrameError::bad(None, "a frame must be a JSON object"));
    }
    let raw: RawFrame<'_> = serde_json::from_str(value.get())
        .map_err(|e| FrameError::bad(None, format!("malformed frame: {e}")))?;
    let id = match raw.id {
        None => None,
        Some(id) => Some(check_id(id).map_err(|m| FrameError::bad(None, m))?),
    };
    let f = Fields { raw: &raw, id: &id };
    let ty = f.required_string("type", raw.ty)?;
    let frame = match ty.as_ref() {
        "join" => {
            let room = f.room()?;
            let since = f.u64("since", raw.since)?;
            let epoch = f.string("epoch", raw.epoch)?;
            if epoch.as_ref().is_some_and(|e| e.len() > 64) {
                return Err(f.err("field `epoch` is longer than 64 characters"));
            }
            ClientFrame::Join { room, since, epoch }
        }
        "leave" => ClientFrame::Leave { room: f.room()? },
        "publish" => {
            let room = f.room()?;
            let event = f.event()?;
            let data = f.data()?;
            let msg_id = f.msg_id()?;
            let echo = match raw.echo {
                None => false,
                Some(v) => serde_json::from_str::<bool>(v.get())
                    .map_err(|_| f.err("field `echo` must be a boolean"))?,
            };
            ClientFrame::Publish {
                room,
                event,
                data,
                msg_id,
                echo,
            }
        }
        "send" => {
            let to = f.required_string("to", raw.to)?;
            check_user(&to).map_err(|m| f.err(format!("field `to`: {m}")))?;
            let event = f.event()?;
            let data = f.data()?;
            let msg_id = f.msg_id()?;
            ClientFrame::Send {
                to,
                event,
                data,
                msg_id,
            }
        }
        "presence" => ClientFrame::Presence { room: f.room()? },
        "history" => {
            let room = f.room()?;
            let since = f.u64("since", raw.since)?;
            let limit = match f.u64("limit", raw.limit) {
                Ok(None) => DEFAULT_HISTORY_LIMIT,
                Ok(Some(n)) if (1..=MAX_HISTORY_LIMIT as u64).contains(&n) => n as usize,
                _ => {
                    return Err(f.err(format!(
                        "field `limit` must be an integer from 1 to {MAX_HISTORY_LIMIT}"
                    )));
                }
            };
            ClientFrame::History { room, since, limit }
        }
        "status" => {
            let status = f.required_string("status", raw.status)?;
            let status = match status.as_ref() {
                "online" => Status::Online,
                "away" => Status::Away,
                "busy" => Status::Busy,
                other => {
                    return Err(f.err(format!(
                        "field `status` must be online, away or busy, not {other:?}"
                    )));
                }
            };
            ClientFrame::Status { status }
        }
        "ping" => ClientFrame::Ping,
        other => {
            let mut shown: String = other.chars().take(64).collect();
            if shown.len() < other.len() {
                shown.push('…');
            }
            return Err(FrameError {
                id,
                code: ErrorCode::UnknownType,
                message: format!("unknown frame type {shown:?}"),
            });
        }
    };
    Ok((id, frame))
}

fn check_id(raw: &RawValue) -> Result<FrameId, &'static str> {
    const MSG: &str = "field `id` must be a number or a string of at most 64 characters";
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let s: String = serde_json::from_str(text).map_err(|_| MSG)?;
            if s.chars().count() > 64 {
                return Err(MSG);
            }
        }
        Some(b'-' | b'0'..=b'9') if text.len() <= 64 => {}
        _ => return Err(MSG),
    }
    Ok(raw.to_owned())
}

/// Checks a room name: `^[A-Za-z0-9_.:-]{1,128}$`, or `@` and a user id for
/// a personal room.
pub fn check_room(room: &str) -> Result<(), String> {
    if let Some(user) = room.strip_prefix('@') {
        return check_user(user).map_err(|m| format!("personal room {room:?}: {m}"));
    }
    if room.is_empty() || room.len() > 128 || !room.bytes().all(name_byte) {
        return Err(format!(
            "invalid room name {:?}: 1 to 128 characters of A-Z a-z 0-9 _ . : -, or @user",
            truncate(room, 140)
        ));
    }
    Ok(())
}

/// Checks an event type: `^[A-Za-z0-9_.:-]{1,64}$`.
pub fn check_event(event: &str) -> Result<(), String> {
    if event.is_empty() || event.len() > 64 || !event.bytes().all(name_byte) {
        return Err(format!(
            "invalid event {:?}: 1 to 64 characters of A-Z a-z 0-9 _ . : -",
            truncate(event, 80)
        ));
    }
    Ok(())
}

/// Checks a user id: 1 to 128 characters, no control characters.
pub fn check_user(user: &str) -> Result<(), String> {
    let n = user.chars().count();
    if n == 0 || n > 128 || user.chars().any(char::is_control) {
        return Err("a user id is 1 to 128 characters without control characters".into());
    }
    Ok(())
}

/// Checks a client-chosen `msgId`: 1 to 128 characters, no control characters.
pub fn check_msg_id(msg_id: &str) -> Result<(), String> {
    let n = msg_id.chars().count();
    if n == 0 || n > 128 || msg_id.chars().any(char::is_control) {
        return Err("field `msgId` must be 1 to 128 characters without control characters".into());
    }
    Ok(())
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Whether a room is a user's personal room (`@user`).
pub fn is_personal(room: &str) -> bool {
    room.starts_with('@')
}

/// The personal room of a user.
pub fn personal_room(user: &str) -> String {
    format!("@{user}")
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

/// Encodes any serializable server frame.
pub fn encode<T: Serialize>(frame: &T) -> Bytes {
    match serde_json::to_vec(frame) {
        Ok(v) => Bytes::from(v),
        // Our frame types always serialize; keep the connection usable if not.
        Err(_) => {
            Bytes::from_static(br#"{"type":"error","code":"internal","message":"encoding failed"}"#)
        }
    }
}

/// Server frames other than envelopes.
pub mod out {
    use super::*;

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

    /// `left` and `ok` and `pong`: a reply with an id and a few fields.
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
    }
}

/// Encodes an `error` frame.
pub fn error_frame(id: Option<&RawValue>, code: ErrorCode, message: &str) -> Bytes {
    encode(&out::Error {
        ty: "error",
        id,
        code,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> FrameError {
        parse_client_frame(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_every_type() {
        let cases = [
            r#"{"type":"join","room":"lobby","since":4,"epoch":"e1","id":1}"#,
            r#"{"type":"leave","room":"lobby"}"#,
            r#"{"type":"publish","room":"lobby","event":"chat.message","data":{"a":1},"msgId":"m1","echo":true}"#,
            r#"{"type":"send","to":"bob","event":"dm","data":null}"#,
            r#"{"type":"presence","room":"lobby"}"#,
            r#"{"type":"history","room":"lobby","since":3,"limit":1000}"#,
            r#"{"type":"status","status":"away"}"#,
            r#"{"type":"ping","id":"x","extra":[1,2]}"#,
        ];
        for c in cases {
            parse_client_frame(c.as_bytes()).unwrap_or_else(|e| panic!("{c}: {}", e.message));
        }
        let (_, f) =
            parse_client_frame(br#"{"type":"publish","room":"r","event":"e","data":[1, 2]}"#)
                .unwrap();
        match f {
            ClientFrame::Publish { data, echo, .. } => {
                assert_eq!(data.get(), "[1, 2]");
                assert!(!echo);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_frames_with_the_field_named() {
        assert!(err_of("{nope").message.contains("malformed JSON"));
        assert!(err_of("[1]").message.contains("JSON object"));
        assert!(err_of("42").message.contains("JSON object"));
        assert!(err_of(r#"{"room":"x"}"#).message.contains("`type`"));
        let e = err_of(r#"{"type":"dance","id":7}"#);
        assert_eq!(e.code, ErrorCode::UnknownType);
        assert_eq!(e.id.unwrap().get(), "7");
        assert!(err_of(r#"{"type":"join"}"#).message.contains("`room`"));
        assert!(
            err_of(r#"{"type":"join","room":5}"#)
                .message
                .contains("`room` must be a string")
        );
        assert!(
            err_of(r#"{"type":"join","room":"a b"}"#)
                .message
                .contains("invalid room")
        );
        assert!(
            err_of(r#"{"type":"join","room":"r","since":-1}"#)
                .message
                .contains("`since`")
        );
        assert!(
            err_of(r#"{"type":"publish","room":"r","event":"e e","data":1}"#)
                .message
                .contains("invalid event")
        );
        assert!(
            err_of(r#"{"type":"publish","room":"r","event":"e"}"#)
                .message
                .contains("`data`")
        );
        assert!(
            err_of(r#"{"type":"publish","room":"r","event":"e","data":1,"echo":"yes"}"#)
                .message
                .contains("`echo`")
        );
        assert!(
            err_of(r#"{"type":"history","room":"r","limit":0}"#)
                .message
                .contains("`limit`")
        );
        assert!(
            err_of(r#"{"type":"history","room":"r","limit":1001}"#)
                .message
                .contains("`limit`")
        );
        assert!(
            err_of(r#"{"type":"status","status":"sleeping"}"#)
                .message
                .contains("`status`")
        );
        assert!(
            err_of(r#"{"type":"status","status":"offline"}"#)
                .message
                .contains("`status`")
        );
        assert!(
            err_of(r#"{"type":"ping","id":{"a":1}}"#)
                .message
                .contains("`id`")
        );
        let long = "x".repeat(65);
        assert!(
            err_of(&format!(r#"{{"type":"ping","id":"{long}"}}"#))
                .message
                .contains("`id`")
        );
        assert!(
            err_of(r#"{"type":"send","to":"","event":"e","data":1}"#)
                .message
                .contains("`to`")
        );
    }

    #[test]
    fn ids_are_echoed_verbatim() {
        let (id, _) = parse_client_frame(br#"{"type":"ping","id":"a\"b"}"#).unwrap();
        assert_eq!(id.unwrap().get(), r#""a\"b""#);
        let (id, _) = parse_client_frame(br#"{"type":"ping","id":12.5}"#).unwrap();
        assert_eq!(id.unwrap().get(), "12.5");
    }

    #[test]
    fn room_names() {
        assert!(check_room("lobby").is_ok());
        assert!(check_room("a.b:c_d-e").is_ok());
        assert!(check_room(&"x".repeat(128)).is_ok());
        assert!(check_room(&"x".repeat(129)).is_err());
        assert!(check_room("").is_err());
        assert!(check_room("é").is_err());
        assert!(check_room("@bob").is_ok());
        assert!(check_room("@").is_err());
    }
}

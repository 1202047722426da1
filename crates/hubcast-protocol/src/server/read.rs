//! Server frames as a client reads them. [`Head`] borrows a frame's `type`
//! and `id` without parsing the rest, so a client decodes each frame once,
//! into the one type it needs. Fields a client does not act on stay out.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::raw::present;

/// A server frame's `type` and `id`, borrowed from its text.
#[derive(Debug, Deserialize)]
pub struct Head<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    ty: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

impl<'a> Head<'a> {
    /// Reads the head of a frame; `None` when it is not a JSON object
    /// (serde would take an array for a struct too).
    pub fn parse(text: &'a [u8]) -> Option<Self> {
        if !text.trim_ascii_start().starts_with(b"{") {
            return None;
        }
        serde_json::from_slice(text).ok()
    }

    /// The frame's `type`, when it is a string (the server's never need
    /// escapes).
    pub fn ty(&self) -> Option<&'a str> {
        self.ty
            .and_then(|t| serde_json::from_str::<&str>(t.get()).ok())
    }

    /// Whether the frame has an `id`: then it is a reply to the request
    /// that carried it, else an event.
    pub fn has_id(&self) -> bool {
        self.id.is_some()
    }

    /// The `id`, when it is a non-negative integer (what clients that
    /// number their requests get back).
    pub fn id_u64(&self) -> Option<u64> {
        self.id.and_then(|i| serde_json::from_str(i.get()).ok())
    }
}

/// A string field, or `""` when it is missing or not a string: a client
/// still reports a frame whose detail it cannot read.
fn string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.as_str().unwrap_or_default().to_owned())
}

/// The `welcome` frame's fields a client uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Welcome {
    /// Connection id.
    #[serde(rename = "connId", default, deserialize_with = "string_or_empty")]
    pub conn_id: String,
    /// The connection's user id.
    #[serde(default, deserialize_with = "string_or_empty")]
    pub user: String,
}

/// An `error` frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorReply {
    /// Its `code` (PROTOCOL.md section 3).
    #[serde(default, deserialize_with = "string_or_empty")]
    pub code: String,
    /// Its human-readable `message`.
    #[serde(default, deserialize_with = "string_or_empty")]
    pub message: String,
    /// The message's id, on a `timeout` for a publish or send.
    #[serde(rename = "msgId", default, deserialize_with = "string_or_empty")]
    pub msg_id: String,
}

/// A delivered message (the `message` envelope).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    /// Its room (`@user` for a direct message to this user).
    pub room: String,
    /// Position in the room's stream.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
    /// Unique id (the publisher's, or a UUIDv7).
    #[serde(rename = "msgId")]
    pub msg_id: String,
    /// Server receive time, Unix milliseconds.
    pub timestamp: i64,
    /// The publisher's event name.
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// The publisher's user id (or the API caller's `source`).
    pub source: String,
    /// The payload.
    #[serde(default)]
    pub data: Value,
}

/// Where a `message` envelope sits, without its content: what a client
/// still reads of a message whose `data` it cannot decode (the skipped
/// `data` is not parsed, so whatever it holds does not fail this).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Position {
    /// Its room.
    pub room: String,
    /// Its offset.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
    /// Its msgId.
    #[serde(rename = "msgId")]
    pub msg_id: String,
}

/// The server's `ack` of a publish or send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ack {
    /// The message's id.
    #[serde(rename = "msgId")]
    pub msg_id: String,
    /// Its room.
    pub room: String,
    /// Its offset.
    pub offset: u64,
    /// The epoch of `offset`.
    #[serde(default)]
    pub epoch: String,
    /// The msgId had been published already (not delivered again).
    pub duplicate: bool,
}

/// A `joined` reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Joined {
    /// The room.
    pub room: String,
    /// Its latest offset.
    pub offset: u64,
    /// Its epoch.
    pub epoch: String,
    /// Whether a join with `since` got everything after it.
    #[serde(default)]
    pub recovered: Option<bool>,
    /// Presence list.
    #[serde(default)]
    pub members: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{encode, error_frame, out, timeout_frame};
    use crate::{ErrorCode, Member, Status};

    #[test]
    fn heads_tell_replies_from_events() {
        let h = Head::parse(br#"{"type":"pong","id":7,"timestamp":1}"#).unwrap();
        assert_eq!(
            (h.ty(), h.has_id(), h.id_u64()),
            (Some("pong"), true, Some(7))
        );
        let h = Head::parse(br#"{"type":"presence","room":"r"}"#).unwrap();
        assert_eq!(
            (h.ty(), h.has_id(), h.id_u64()),
            (Some("presence"), false, None)
        );
        let h = Head::parse(br#"{"type":"error","id":"x"}"#).unwrap();
        assert_eq!((h.has_id(), h.id_u64()), (true, None));
        let h = Head::parse(br#"{"type":5,"id":null}"#).unwrap();
        assert_eq!((h.ty(), h.has_id()), (None, true));
        assert!(Head::parse(b"{nope").is_none());
        assert!(Head::parse(br#"["presence"]"#).is_none());
        assert!(Head::parse(br#" {"type":"ok"} "#).is_some());
    }

    #[test]
    fn the_position_of_a_message_is_read_whatever_its_data() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for data in [deep.as_str(), "1e400", r#""\ud800""#] {
            let text = format!(
                r#"{{"type":"message","room":"r","offset":7,"epoch":"e","msgId":"m","timestamp":1,"eventType":"x","source":"u","data":{data}}}"#
            );
            assert!(serde_json::from_str::<Envelope>(&text).is_err(), "{data}");
            let p: Position = serde_json::from_str(&text).unwrap();
            assert_eq!(
                (p.room.as_str(), p.offset, p.msg_id.as_str()),
                ("r", 7, "m")
            );
        }
    }

    #[test]
    fn a_client_reads_what_the_server_encodes() {
        let id = RawValue::from_string("3".into()).unwrap();
        let e = error_frame(Some(&id), ErrorCode::Forbidden, "no");
        let h = Head::parse(&e).unwrap();
        assert_eq!((h.ty(), h.id_u64()), (Some("error"), Some(3)));
        let r: ErrorReply = serde_json::from_slice(&e).unwrap();
        assert_eq!((r.code.as_str(), r.message.as_str()), ("forbidden", "no"));
        let lax: ErrorReply = serde_json::from_slice(br#"{"type":"error","code":5}"#).unwrap();
        assert_eq!(lax, ErrorReply::default());
        let t = timeout_frame(Some(&id), "m-1", "redis: timed out");
        let r: ErrorReply = serde_json::from_slice(&t).unwrap();
        assert_eq!((r.code.as_str(), r.msg_id.as_str()), ("timeout", "m-1"));
        assert!(r.message.contains("timed out"));

        let w = encode(&out::Welcome {
            ty: "welcome",
            protocol: 1,
            conn_id: "c1",
            user: "ada",
            name: "Ada",
            node: "n1",
            heartbeat: 25,
            max_message_bytes: 65536,
        });
        let w: Welcome = serde_json::from_slice(&w).unwrap();
        assert_eq!((w.conn_id.as_str(), w.user.as_str()), ("c1", "ada"));

        let members = [Member {
            user: "ada".into(),
            name: "Ada".into(),
            status: Status::Online,
            connections: 1,
        }];
        let j = encode(&out::Joined {
            ty: "joined",
            id: Some(&id),
            room: "lobby",
            offset: 4,
            epoch: "e1",
            recovered: Some(true),
            members: &members,
            total: 1,
        });
        let j: Joined = serde_json::from_slice(&j).unwrap();
        assert_eq!((j.offset, j.recovered), (4, Some(true)));
        assert_eq!(j.members[0]["user"], "ada");

        let a = encode(&out::Ack {
            ty: "ack",
            id: Some(&id),
            msg_id: "m",
            room: "lobby",
            offset: 5,
            epoch: "e1",
            duplicate: true,
        });
        let a: Ack = serde_json::from_slice(&a).unwrap();
        assert_eq!((a.offset, a.duplicate, a.epoch.as_str()), (5, true, "e1"));
    }
}

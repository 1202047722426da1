//! The frames a client builds, typed, so a client cannot misspell a field
//! or a type. Each serializes to the frame PROTOCOL.md section 2 lists;
//! optional fields that are not set are left out, as the server's defaults
//! then apply.

use serde::Serialize;
use serde_json::Value;

/// A client frame to send. `D` is the type of `data` (any JSON: a
/// [`Value`], a [`serde_json::value::RawValue`], or any serializable type).
/// `id` is the client's request id; the reply echoes it.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Request<'a, D: ?Sized = Value> {
    /// `join`: replied with `joined`, then any missed messages.
    Join {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room to join.
        room: &'a str,
        /// Last offset processed, to recover what came after it.
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// Epoch of `since`.
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    /// `leave`: replied with `left`.
    Leave {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room to leave.
        room: &'a str,
    },
    /// `publish`: replied with `ack`.
    Publish {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Target room.
        room: &'a str,
        /// Event type.
        event: &'a str,
        /// Payload.
        data: &'a D,
        /// Idempotency key: a retry with it is acked, not delivered twice.
        #[serde(rename = "msgId", skip_serializing_if = "Option::is_none")]
        msg_id: Option<&'a str>,
        /// Deliver to the publishing connection too (default false).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        echo: bool,
    },
    /// `send`: a direct message, replied with `ack`.
    Send {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Recipient user id.
        to: &'a str,
        /// Event type.
        event: &'a str,
        /// Payload.
        data: &'a D,
        /// Idempotency key.
        #[serde(rename = "msgId", skip_serializing_if = "Option::is_none")]
        msg_id: Option<&'a str>,
    },
    /// `presence`: replied with the room's members.
    Presence {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room.
        room: &'a str,
    },
    /// `history`: replied with stored envelopes.
    History {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Room.
        room: &'a str,
        /// Only messages after this offset.
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// At most this many (server default 100, at most 1000).
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// `status`: replied with `ok`.
    Status {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// `online`, `away` or `busy` (see [`crate::Status::as_str`]); a
        /// string, not a [`crate::Status`], because the server is the one
        /// that checks it and answers `bad_request` for anything else.
        status: &'a str,
    },
    /// `ping`: replied with `pong`.
    Ping {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// `rpc` (version 1.1): replied with `result`, the backend's answer.
    Rpc {
        /// Request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The backend's method.
        method: &'a str,
        /// Arguments.
        data: &'a D,
    },
}

impl<D: ?Sized + Serialize> Request<'_, D> {
    /// The frame's text.
    pub fn to_text(&self) -> String {
        // Serializing these fields cannot fail, unless a caller's `D` does.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::client::{ClientFrame, parse_client_frame};

    fn value<D: ?Sized + Serialize>(r: &Request<'_, D>) -> Value {
        serde_json::from_str(&r.to_text()).unwrap()
    }

    /// For frames without `data`, whose `D` is the default.
    fn plain(r: Request<'_>) -> Value {
        value(&r)
    }

    #[test]
    fn frames_serialize_as_the_protocol_lists_them() {
        let join: Request = Request::Join {
            id: Some(1),
            room: "lobby",
            since: Some(5),
            epoch: Some("e1"),
        };
        assert_eq!(
            value(&join),
            json!({"type": "join", "id": 1, "room": "lobby", "since": 5, "epoch": "e1"})
        );
        let first: Request = Request::Join {
            id: Some(2),
            room: "lobby",
            since: None,
            epoch: None,
        };
        assert_eq!(
            value(&first),
            json!({"type": "join", "id": 2, "room": "lobby"})
        );
        let data = json!({"text": "hi"});
        let publish = Request::Publish {
            id: Some(3),
            room: "lobby",
            event: "chat.message",
            data: &data,
            msg_id: Some("m1"),
            echo: false,
        };
        assert_eq!(
            value(&publish),
            json!({"type": "publish", "id": 3, "room": "lobby", "event": "chat.message",
                   "data": {"text": "hi"}, "msgId": "m1"})
        );
        let echo = Request::Publish {
            id: None,
            room: "r",
            event: "e",
            data: &Value::Null,
            msg_id: None,
            echo: true,
        };
        assert_eq!(
            value(&echo),
            json!({"type": "publish", "room": "r", "event": "e", "data": null, "echo": true})
        );
        let send = Request::Send {
            id: Some(4),
            to: "bob",
            event: "dm",
            data: &json!("psst"),
            msg_id: Some("m2"),
        };
        assert_eq!(
            value(&send),
            json!({"type": "send", "id": 4, "to": "bob", "event": "dm", "data": "psst", "msgId": "m2"})
        );
        assert_eq!(
            plain(Request::Leave {
                id: Some(5),
                room: "r"
            }),
            json!({"type": "leave", "id": 5, "room": "r"})
        );
        assert_eq!(
            plain(Request::Status {
                id: Some(6),
                status: "away"
            }),
            json!({"type": "status", "id": 6, "status": "away"})
        );
        assert_eq!(
            plain(Request::Ping { id: Some(7) }),
            json!({"type": "ping", "id": 7})
        );
        assert_eq!(
            value(&Request::Rpc {
                id: Some(8),
                method: "m.x",
                data: &json!({"a": 1})
            }),
            json!({"type": "rpc", "id": 8, "method": "m.x", "data": {"a": 1}})
        );
        assert_eq!(
            plain(Request::History {
                id: None,
                room: "r",
                since: Some(3),
                limit: Some(10)
            }),
            json!({"type": "history", "room": "r", "since": 3, "limit": 10})
        );
        assert_eq!(
            plain(Request::Presence {
                id: None,
                room: "r"
            }),
            json!({"type": "presence", "room": "r"})
        );
    }

    #[test]
    fn the_server_parser_accepts_what_a_client_builds() {
        let data = json!([1, 2]);
        let text = Request::Publish {
            id: Some(9),
            room: "r",
            event: "e",
            data: &data,
            msg_id: Some("m"),
            echo: true,
        }
        .to_text();
        let (id, frame) = parse_client_frame(text.as_bytes()).unwrap();
        assert_eq!(id.unwrap().get(), "9");
        match frame {
            ClientFrame::Publish(p) => {
                assert_eq!((p.room.as_ref(), p.message.event.as_ref()), ("r", "e"));
                assert_eq!(p.message.data.get(), "[1,2]");
                assert_eq!(p.message.msg_id.as_deref(), Some("m"));
                assert!(p.echo);
            }
            other => panic!("{other:?}"),
        }
    }
}

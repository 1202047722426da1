//! Server frames (PROTOCOL.md section 2, "Server to client"): the server
//! encodes each once into [`Bytes`] ([`encode`], [`out`]); a client decodes
//! them into the typed views of [`read`].

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::ErrorCode;

pub mod out;
pub mod read;

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

/// Encodes an `error` frame.
pub fn error_frame(id: Option<&RawValue>, code: ErrorCode, message: &str) -> Bytes {
    encode(&out::Error {
        ty: "error",
        id,
        code,
        message,
        msg_id: None,
        room: None,
    })
}

/// Encodes the `error` frame of a join the server made for the client (a
/// token's `subs` room refused): no `id`, and `room` names the room.
pub fn room_error_frame(room: &str, code: ErrorCode, message: &str) -> Bytes {
    encode(&out::Error {
        ty: "error",
        id: None,
        code,
        message,
        msg_id: None,
        room: Some(room),
    })
}

/// Encodes the `error` frame of a publish or send whose outcome is unknown
/// (`timeout`): it names the message's `msgId`, which a retry must reuse.
pub fn timeout_frame(id: Option<&RawValue>, msg_id: &str, message: &str) -> Bytes {
    encode(&out::Error {
        ty: "error",
        id,
        code: ErrorCode::Timeout,
        message,
        msg_id: Some(msg_id),
        room: None,
    })
}

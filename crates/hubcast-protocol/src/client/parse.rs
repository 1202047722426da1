//! The server's parser of client frames, in two steps: serde borrows every
//! known field as raw JSON, then each is checked on its own, so an error can
//! say which field is missing or of the wrong type. Strings without escapes
//! stay borrowed from the frame's text: no allocation per field.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ClientFrame, FrameError, FrameId, Message, PublishFrame};
use crate::error::ErrorCode;
use crate::json::{MAX_DATA_DEPTH, check_number, check_value};
use crate::names::{
    check_event, check_method, check_msg_id, check_room, check_user, personal_room,
};
use crate::presence::Status;
use crate::raw::present;
use crate::version::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};

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
    #[serde(default, borrow, deserialize_with = "present")]
    method: Option<&'a RawValue>,
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

    /// `data`, which is relayed as it came: only JSON every client reads.
    fn data(&self) -> Result<&'a RawValue, FrameError> {
        let data = self
            .raw
            .data
            .ok_or_else(|| self.err("field `data` is required (any JSON value, null included)"))?;
        check_value(data.get(), MAX_DATA_DEPTH)
            .map_err(|r| self.err(format!("field `data` {}", r.describe(MAX_DATA_DEPTH))))?;
        Ok(data)
    }

    fn msg_id(&self) -> Result<Option<Cow<'a, str>>, FrameError> {
        let msg_id = self.string("msgId", self.raw.msg_id)?;
        if let Some(m) = &msg_id {
            check_msg_id(m).map_err(|e| self.err(e))?;
        }
        Ok(msg_id)
    }

    /// `event`, `data` and `msgId`, as every publish and send has them.
    fn message(&self) -> Result<Message<'a>, FrameError> {
        Ok(Message {
            event: self.event()?,
            data: self.data()?,
            msg_id: self.msg_id()?,
        })
    }
}

/// The body of `POST /api/publish` or `POST /api/send`, checked like the
/// WebSocket frames.
#[derive(Debug)]
pub struct ApiPublish<'a> {
    /// Target room (`@to` for a send).
    pub room: Cow<'a, str>,
    /// What is published.
    pub message: Message<'a>,
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
    let message = f.message()?;
    let source = f.string("source", raw.source)?;
    if let Some(s) = &source {
        check_user(s).map_err(|m| f.err(format!("field `source`: {m}")))?;
    }
    Ok(ApiPublish {
        room,
        message,
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
        "publish" => ClientFrame::Publish(PublishFrame {
            room: f.room()?,
            message: f.message()?,
            echo: match raw.echo {
                None => false,
                Some(v) => serde_json::from_str::<bool>(v.get())
                    .map_err(|_| f.err("field `echo` must be a boolean"))?,
            },
        }),
        "send" => {
            let to = f.required_string("to", raw.to)?;
            check_user(&to).map_err(|m| f.err(format!("field `to`: {m}")))?;
            ClientFrame::Send {
                to,
                message: f.message()?,
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
        "rpc" => {
            let method = f.required_string("method", raw.method)?;
            check_method(&method).map_err(|m| f.err(m))?;
            ClientFrame::Rpc {
                method,
                data: f.data()?,
            }
        }
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
        // Echoed verbatim: a number a client cannot read back is refused.
        Some(b'-' | b'0'..=b'9') if text.len() <= 64 && check_number(text).is_ok() => {}
        _ => return Err(MSG),
    }
    Ok(raw.to_owned())
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
            ClientFrame::Publish(p) => {
                assert_eq!(p.message.data.get(), "[1, 2]");
                assert!(!p.echo);
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
    fn data_no_client_could_read_back_is_refused_with_the_id_echoed() {
        let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        let cases = [
            (deep.as_str(), "nested deeper than 64 levels"),
            ("1e400", "not finite"),
            (r#"{"s":"\ud800"}"#, "lone UTF-16 surrogate"),
        ];
        for (data, words) in cases {
            for frame in [
                format!(r#"{{"type":"publish","id":9,"room":"r","event":"e","data":{data}}}"#),
                format!(r#"{{"type":"send","id":9,"to":"bob","event":"e","data":{data}}}"#),
            ] {
                let e = err_of(&frame);
                assert_eq!(e.code, ErrorCode::BadRequest, "{frame}");
                assert!(e.message.starts_with("field `data` "), "{}", e.message);
                assert!(e.message.contains(words), "{}", e.message);
                assert_eq!(e.id.map(|i| i.get().to_owned()).as_deref(), Some("9"));
            }
            let body = format!(r#"{{"room":"r","event":"e","data":{data}}}"#);
            let e = parse_api_publish(body.as_bytes(), false).unwrap_err();
            assert!(e.message.contains(words), "{}", e.message);
        }
        let at = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        let frame = format!(r#"{{"type":"publish","room":"r","event":"e","data":{at}}}"#);
        assert!(parse_client_frame(frame.as_bytes()).is_ok());
    }

    #[test]
    fn rpc_frames_name_their_method_and_carry_data() {
        let (id, frame) =
            parse_client_frame(br#"{"type":"rpc","id":3,"method":"cart.add","data":{"n":1}}"#)
                .unwrap();
        assert_eq!(id.unwrap().get(), "3");
        match frame {
            ClientFrame::Rpc { method, data } => {
                assert_eq!(method, "cart.add");
                assert_eq!(data.get(), r#"{"n":1}"#);
            }
            other => panic!("{other:?}"),
        }
        let e = err_of(r#"{"type":"rpc","id":1,"method":"a b","data":1}"#);
        assert!(e.message.contains("invalid method"), "{}", e.message);
        let e = err_of(r#"{"type":"rpc","id":1,"data":1}"#);
        assert!(
            e.message.contains("field `method` is required"),
            "{}",
            e.message
        );
        let e = err_of(r#"{"type":"rpc","id":1,"method":"m"}"#);
        assert!(
            e.message.contains("field `data` is required"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_numeric_id_must_be_finite() {
        assert!(err_of(r#"{"type":"ping","id":1e400}"#).id.is_none());
        assert!(parse_client_frame(br#"{"type":"ping","id":1e300}"#).is_ok());
    }

    #[test]
    fn ids_are_echoed_verbatim() {
        let (id, _) = parse_client_frame(br#"{"type":"ping","id":"a\"b"}"#).unwrap();
        assert_eq!(id.unwrap().get(), r#""a\"b""#);
        let (id, _) = parse_client_frame(br#"{"type":"ping","id":12.5}"#).unwrap();
        assert_eq!(id.unwrap().get(), "12.5");
    }
}

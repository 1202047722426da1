//! Message envelopes: the `message` frame every recipient of a publication
//! shares, written by hand from pre-escaped parts so the broker can encode it
//! once, after it has assigned the offset.

use std::fmt::Write as _;
use std::io::Write as _;

use bytes::Bytes;
use serde_json::value::RawValue;

/// A JSON string literal for `s`, quotes included.
pub(crate) fn json_string(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// The fields of a message envelope that are known before the broker
/// assigns an offset, each already encoded as JSON.
#[derive(Debug, Clone)]
pub struct EnvelopeParts {
    /// `"room":"…"` value, quoted.
    pub room: String,
    /// `msgId` value, quoted.
    pub msg_id: String,
    /// Server receive time, Unix ms.
    pub timestamp: i64,
    /// `eventType` value, quoted.
    pub event: String,
    /// `source` value, quoted.
    pub source: String,
    /// `data`, raw JSON.
    pub data: String,
    /// Extension: the W3C trace id the publish came with (32 hex digits).
    pub trace_id: Option<String>,
}

impl EnvelopeParts {
    /// Sets the trace id the envelope carries (32 hex digits; anything else
    /// is ignored).
    pub(crate) fn with_trace_id(mut self, trace_id: Option<&str>) -> Self {
        self.trace_id = trace_id
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned);
        self
    }

    /// Builds the parts from plain values.
    pub fn new(
        room: &str,
        msg_id: &str,
        timestamp: i64,
        event: &str,
        source: &str,
        data: &str,
    ) -> Self {
        Self {
            room: json_string(room),
            msg_id: json_string(msg_id),
            timestamp,
            event: json_string(event),
            source: json_string(source),
            data: data.to_owned(),
            trace_id: None,
        }
    }

    /// The envelope's text after the epoch: `,"msgId":…,"data":…}`. An
    /// engine that assigns offsets elsewhere (a Redis script) stores and
    /// forwards this as opaque bytes and builds the envelope with
    /// [`EnvelopeParts::assemble`] once the offset is known.
    pub(crate) fn tail(&self) -> String {
        let mut s = String::with_capacity(
            80 + self.msg_id.len() + self.event.len() + self.source.len() + self.data.len(),
        );
        s.push_str(r#","msgId":"#);
        s.push_str(&self.msg_id);
        // Writing into a String cannot fail.
        let _ = write!(s, r#","timestamp":{}"#, self.timestamp);
        s.push_str(r#","eventType":"#);
        s.push_str(&self.event);
        s.push_str(r#","source":"#);
        s.push_str(&self.source);
        if let Some(t) = &self.trace_id {
            // Hex digits only: nothing to escape.
            s.push_str(r#","traceId":""#);
            s.push_str(t);
            s.push('"');
        }
        s.push_str(r#","data":"#);
        s.push_str(&self.data);
        s.push('}');
        s
    }

    /// Encodes the envelope with its offset and epoch: the one encoding every
    /// recipient shares.
    pub fn encode(&self, offset: u64, epoch: &str) -> Bytes {
        Self::assemble(&self.room, offset, epoch, self.tail().as_bytes())
    }

    /// Assembles a `message` envelope: `{"type":"message","room":R,"offset":O,
    /// "epoch":E` followed by `tail` (see [`EnvelopeParts::tail`]). The only
    /// place that layout is written, whichever engine assigned the offset, so
    /// every engine hands clients the same bytes. `room_json` is the room as a
    /// JSON string literal, quotes included.
    pub(crate) fn assemble(room_json: &str, offset: u64, epoch: &str, tail: &[u8]) -> Bytes {
        const HEAD: &[u8] = br#"{"type":"message","room":"#;
        let mut out =
            Vec::with_capacity(HEAD.len() + room_json.len() + 40 + epoch.len() + tail.len());
        out.extend_from_slice(HEAD);
        out.extend_from_slice(room_json.as_bytes());
        // Writing into a Vec cannot fail, nor can serializing a &str.
        let _ = write!(out, r#","offset":{offset},"epoch":"#);
        let _ = serde_json::to_writer(&mut out, epoch);
        out.extend_from_slice(tail);
        Bytes::from(out)
    }
}

/// The `traceId` of an envelope, if it has one. Only the fields before
/// `data` are searched: they are the server's own (strings escaped), so the
/// first `,"data":` is the envelope's and nothing before it can fake a key.
pub(crate) fn envelope_trace_id(envelope: &[u8]) -> Option<&str> {
    const DATA: &[u8] = br#","data":"#;
    const KEY: &[u8] = br#","traceId":""#;
    let end = envelope.windows(DATA.len()).position(|w| w == DATA)?;
    let head = &envelope[..end];
    let at = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let id = head.get(at..at + 32)?;
    std::str::from_utf8(id).ok()
}

/// Views stored envelope bytes as raw JSON for embedding in a reply.
pub(crate) fn as_raw(envelope: &Bytes) -> &RawValue {
    // Envelopes are produced by `EnvelopeParts::encode` from checked JSON,
    // so this only fails on a bug; fall back to null rather than panic.
    std::str::from_utf8(envelope)
        .ok()
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
        .unwrap_or(RawValue::NULL)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with a quote in its id, so escaping is exercised.
    fn lobby_hi() -> EnvelopeParts {
        EnvelopeParts::new(
            "lobby",
            "m\"1",
            1763800000123,
            "chat.message",
            "alice",
            r#"{"text":"hi"}"#,
        )
    }

    #[test]
    fn trace_ids_ride_in_the_envelope_before_data() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parts = EnvelopeParts::new(
            "r",
            "m",
            1,
            "e",
            "s",
            r#"{"traceId":"ffffffffffffffffffffffffffffffff"}"#,
        )
        .with_trace_id(Some(id));
        let env = parts.encode(1, "ep");
        let v: serde_json::Value = serde_json::from_slice(&env).unwrap();
        assert_eq!(v["traceId"], id);
        assert_eq!(envelope_trace_id(&env), Some(id));
        // Without one, a `traceId` inside data is not taken for it.
        let plain = EnvelopeParts::new(
            "r",
            "m",
            1,
            "e",
            "s",
            r#"{"a":1,"traceId":"ffffffffffffffffffffffffffffffff"}"#,
        )
        .encode(1, "ep");
        assert_eq!(envelope_trace_id(&plain), None);
        // Anything but 32 hex digits is not carried.
        let odd =
            EnvelopeParts::new("r", "m", 1, "e", "s", "1").with_trace_id(Some("not-a-trace-id"));
        assert!(odd.trace_id.is_none());
    }

    #[test]
    fn envelope_is_valid_json_with_every_field() {
        let parts = lobby_hi();
        let bytes = parts.encode(43, "e1");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["room"], "lobby");
        assert_eq!(v["offset"], 43);
        assert_eq!(v["epoch"], "e1");
        assert_eq!(v["msgId"], "m\"1");
        assert_eq!(v["timestamp"], 1763800000123i64);
        assert_eq!(v["eventType"], "chat.message");
        assert_eq!(v["source"], "alice");
        assert_eq!(v["data"]["text"], "hi");
        assert_eq!(as_raw(&bytes).get(), std::str::from_utf8(&bytes).unwrap());
    }

    #[test]
    fn the_envelope_layout_is_fixed_and_assembled_in_one_place() {
        let parts = lobby_hi();
        let want = r#"{"type":"message","room":"lobby","offset":43,"epoch":"e1","msgId":"m\"1","timestamp":1763800000123,"eventType":"chat.message","source":"alice","data":{"text":"hi"}}"#;
        assert_eq!(parts.encode(43, "e1"), want.as_bytes());
        // An engine holding only the tail builds the same bytes.
        let tail = parts.tail();
        assert_eq!(
            EnvelopeParts::assemble(&json_string("lobby"), 43, "e1", tail.as_bytes()),
            want.as_bytes()
        );
        let traced = parts.with_trace_id(Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(
            std::str::from_utf8(&traced.encode(1, "e"))
                .unwrap()
                .contains(
                    r#","source":"alice","traceId":"4bf92f3577b34da6a3ce929d0e0e4736","data":"#
                )
        );
    }
}

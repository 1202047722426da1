//! What travels on a room's channel and sits in its stream, in one codec.
//!
//! A publication goes out as `offset \n epoch \n node \n key \n payload`:
//! the script writes the prefix (it assigns the offset and knows the epoch)
//! and treats the payload as opaque bytes; the payload is the envelope's
//! tail ([`EnvelopeParts::tail`]) and every node builds the envelope around
//! it with [`EnvelopeParts::assemble`], once per publication. The stream
//! stores the same payload (field `d`). A presence change goes out as
//! `p \n action \n user \n name \n status`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::broker::PresenceEvent;
use crate::protocol::{EnvelopeParts, PresenceAction, Status};

/// A message received on a room's channel.
#[derive(Debug, PartialEq)]
pub(crate) enum ChannelMessage<'a> {
    /// A new message in the room.
    Publication {
        offset: u64,
        epoch: Cow<'a, str>,
        /// The publishing node, and its connection key (empty: none), for
        /// the echo-off skip.
        node: Cow<'a, str>,
        key: Cow<'a, str>,
        /// The opaque payload (see [`envelope`]).
        payload: &'a [u8],
    },
    /// A presence change.
    Presence(PresenceEvent),
}

/// Decodes a channel message; `None` for anything malformed (dropped: it
/// is not ours to deliver).
pub(crate) fn decode(message: &[u8]) -> Option<ChannelMessage<'_>> {
    if let Some(rest) = message.strip_prefix(b"p\n") {
        let text = String::from_utf8_lossy(rest);
        let mut it = text.split('\n');
        let (Some(action), Some(user), Some(name), Some(status)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return None;
        };
        let action = match action {
            "join" => PresenceAction::Join,
            "leave" => PresenceAction::Leave,
            _ => PresenceAction::Status,
        };
        return Some(ChannelMessage::Presence(PresenceEvent {
            action,
            user: Arc::from(user),
            name: Arc::from(name),
            status: parse_status(Some(status)),
        }));
    }
    let mut parts = message.splitn(5, |b| *b == b'\n');
    let (Some(off), Some(epoch), Some(node), Some(key), Some(payload)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let offset = std::str::from_utf8(off).ok()?.parse::<u64>().ok()?;
    Some(ChannelMessage::Publication {
        offset,
        epoch: String::from_utf8_lossy(epoch),
        node: String::from_utf8_lossy(node),
        key: String::from_utf8_lossy(key),
        payload,
    })
}

/// The channel message of a status change (join and leave are written by
/// their scripts in the same form).
pub(crate) fn encode_status(user: &str, name: &str, status: Status) -> String {
    format!("p\nstatus\n{user}\n{name}\n{}", status.as_str())
}

/// The envelope of a publication from its stored or received payload.
/// `room_json` is the room as a JSON string literal.
///
/// A payload that is a whole envelope (it starts with `{`, a tail never
/// does) was written by a node from before the payload became opaque: it is
/// used as it is, so history written then still reads.
pub(crate) fn envelope(room_json: &str, offset: u64, epoch: &str, payload: &[u8]) -> Bytes {
    if payload.first() == Some(&b'{') {
        return Bytes::copy_from_slice(payload);
    }
    EnvelopeParts::assemble(room_json, offset, epoch, payload)
}

/// A stored or broadcast status as the engine reads it (online when
/// missing or unknown).
pub(crate) fn parse_status(s: Option<&str>) -> Status {
    match s {
        Some("away") => Status::Away,
        Some("busy") => Status::Busy,
        Some("offline") => Status::Offline,
        _ => Status::Online,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json_string;

    /// What `lua/publish.lua` sends on the channel.
    fn as_script_sends(offset: u64, epoch: &str, node: &str, key: &str, payload: &str) -> String {
        format!("{offset}\n{epoch}\n{node}\n{key}\n{payload}")
    }

    #[test]
    fn a_publication_round_trips_with_newlines_in_the_payload() {
        let parts = EnvelopeParts::new("room", "m1", 5, "e", "s", "\"a\\nb\"");
        let tail = parts.tail();
        let wire = as_script_sends(17, "ab12cd34", "node-1", "42", &format!("{tail}\n{{"));
        let Some(ChannelMessage::Publication {
            offset,
            epoch,
            node,
            key,
            payload,
        }) = decode(wire.as_bytes())
        else {
            panic!("not a publication");
        };
        assert_eq!(
            (offset, &*epoch, &*node, &*key),
            (17, "ab12cd34", "node-1", "42")
        );
        assert_eq!(payload, format!("{tail}\n{{").as_bytes());
        let env = envelope(&json_string("room"), offset, &epoch, tail.as_bytes());
        assert_eq!(env, parts.encode(17, "ab12cd34"));
    }

    #[test]
    fn an_old_nodes_whole_envelope_is_used_as_it_is() {
        let whole = EnvelopeParts::new("room", "m1", 5, "e", "s", "1").encode(3, "e0");
        assert_eq!(envelope(&json_string("room"), 3, "e0", &whole), whole);
    }

    #[test]
    fn presence_events_decode() {
        let wire = encode_status("u1", "Ann", Status::Busy);
        let m = decode(wire.as_bytes());
        let Some(ChannelMessage::Presence(e)) = m else {
            panic!("not presence: {m:?}");
        };
        assert_eq!(e.action, PresenceAction::Status);
        assert_eq!((&*e.user, &*e.name, e.status), ("u1", "Ann", Status::Busy));
        // As the join and leave scripts write them.
        for (wire, action) in [
            ("p\njoin\nu\nn\naway", PresenceAction::Join),
            ("p\nleave\nu\nn\noffline", PresenceAction::Leave),
        ] {
            let Some(ChannelMessage::Presence(e)) = decode(wire.as_bytes()) else {
                panic!("not presence: {wire}");
            };
            assert_eq!(e.action, action);
        }
    }

    #[test]
    fn malformed_messages_are_dropped() {
        for wire in [
            "",
            "p\njoin\nu",
            "x\ne\nn\nk\n{}",
            "1\ne\nn\nk",
            "-1\ne\nn\nk\n,",
        ] {
            assert_eq!(decode(wire.as_bytes()), None, "{wire:?}");
        }
        assert_eq!(parse_status(Some("weird")), Status::Online);
        assert_eq!(parse_status(None), Status::Online);
    }
}

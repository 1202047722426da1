//! Names: the stream, the buckets, subjects and keys of one prefix, and the
//! reversible encoding of room and user names into subject tokens.
//!
//! A subject token may not hold `.`, `*`, `>` or white space, and a
//! key-value key only `A-Z a-z 0-9 - _ / = .`; room names hold `.` and `:`
//! and user ids anything. So a name is written as its bytes, `A-Z a-z 0-9
//! -` as they are and every other byte as `_` plus two upper-case hex
//! digits (`_` itself is `_5F`): one token, valid in both, and decoded back
//! exactly.

/// Names for one deployment prefix.
#[derive(Clone, Debug)]
pub(super) struct Names {
    /// The subject prefix (`--nats-prefix`), dots allowed.
    prefix: String,
    /// The prefix as a stream or bucket name part (no dots).
    flat: String,
}

impl Names {
    pub(super) fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_string(),
            flat: prefix.replace(['.', ':'], "_"),
        }
    }

    /// The stream holding every room's history.
    pub(super) fn stream(&self) -> String {
        format!("{}_ROOMS", self.flat)
    }

    /// The stream's subjects.
    pub(super) fn stream_subjects(&self) -> String {
        format!("{}.room.>", self.prefix)
    }

    /// The subject a room's messages are stored under.
    pub(super) fn room_subject(&self, room: &str) -> String {
        format!("{}.room.{}", self.prefix, encode(room))
    }

    /// The core subject a room's stored messages and presence events are
    /// announced on (never captured by the stream).
    pub(super) fn live_subject(&self, room: &str) -> String {
        format!("{}.live.{}", self.prefix, encode(room))
    }

    /// The core subject of user controls.
    pub(super) fn controls_subject(&self) -> String {
        format!("{}.controls", self.prefix)
    }

    /// The bucket of room epochs, presence, user status and kept controls.
    pub(super) fn state_bucket(&self) -> String {
        format!("{}_state", self.flat)
    }

    /// The bucket of node leases (entries expire after the lease).
    pub(super) fn nodes_bucket(&self) -> String {
        format!("{}_nodes", self.flat)
    }

    /// The stream of webhook events (`webhooks`).
    pub(super) fn webhook_stream(&self) -> String {
        format!("{}_WEBHOOKS", self.flat)
    }

    /// The webhook events' subject.
    pub(super) fn webhook_subject(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// The bucket of webhook cursors, leases and pending events.
    pub(super) fn webhook_bucket(&self) -> String {
        format!("{}_webhooks", self.flat)
    }
}

/// Keys in the state bucket.
pub(super) fn epoch_key(room: &str) -> String {
    format!("e.{}", encode(room))
}
pub(super) fn presence_key(room: &str) -> String {
    format!("p.{}", encode(room))
}
pub(super) fn user_key(user: &str) -> String {
    format!("u.{}", encode(user))
}
pub(super) fn control_key(kind: &str, name: &str) -> String {
    format!("c.{kind}.{}", encode(name))
}
pub(super) fn node_key(node: &str) -> String {
    format!("n.{}", encode(node))
}

/// A name as one subject token (see the module documentation).
pub(super) fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The name of a token [`encode`] wrote; `None` for anything else.
pub(super) fn decode(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'_' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_single_valid_tokens() {
        for name in [
            "lobby",
            "a.b:c_d-e",
            "@bob",
            "@anon-1f2e",
            "_5F",
            "ünïcode room",
            "*>.",
        ] {
            let t = encode(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{t}"
            );
            assert_eq!(decode(&t).as_deref(), Some(name), "{t}");
        }
        // Distinct names never share a token.
        assert_ne!(encode("a_2E"), encode("a.2E"));
        assert_eq!(decode("a_2"), None);
        assert_eq!(decode("a.b"), None);
        assert_eq!(decode("_ZZ"), None);
    }
}

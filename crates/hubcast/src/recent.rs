//! The last notable events on this node, for the dashboard
//! (`GET /api/events`): error replies sent to clients and connections
//! closed for a reason other than a normal close (slow consumer, heartbeat
//! timeout, flooding, token expiry, oversized frame, internal error).
//!
//! A bounded ring: the newest [`CAPACITY`] events, each with a sequence
//! number so a poller can ask only for what it has not seen. Rate-limit
//! refusals are not recorded one by one (a flood would push everything else
//! out); the connection's 4003 close is.
//!
//! A connection keeps one event per kind and code: a repeat replaces it
//! (newest message and time, a new `seq`, `count` one more). Otherwise one
//! client sending bad frames, each answered within its frame budget, would
//! push every other connection's event out of the ring.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Events kept.
pub(crate) const CAPACITY: usize = 200;

/// Longest message kept per event.
const MAX_MESSAGE: usize = 200;

/// One event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    /// Increases by one per event recorded on this node.
    pub seq: u64,
    /// Unix milliseconds.
    pub time: i64,
    /// `error` (a reply to a client frame) or `close`.
    pub kind: &'static str,
    /// The error code, or the close reason label (`slow_consumer`, ...).
    pub code: &'static str,
    /// The close code, for `close` events.
    #[serde(rename = "closeCode", skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
    /// What the client was told.
    pub message: String,
    /// Connection id.
    pub conn: String,
    /// User id.
    pub user: String,
    /// Times this connection had this kind and code of event (the rest are
    /// the latest one's).
    pub count: u64,
}

/// The ring of recent events.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    next: u64,
    events: VecDeque<Event>,
}

impl Recent {
    /// Records an error reply to a client frame.
    pub(crate) fn error(&self, code: &'static str, message: &str, conn: &str, user: &str) {
        self.push("error", code, None, message, conn, user);
    }

    /// Records a connection closed by the server for a notable reason
    /// (normal closes, client closes and shutdown are not recorded).
    pub(crate) fn close(&self, code: u16, reason: &str, conn: &str, user: &str) {
        let label = crate::metrics::close_reason(Some(code));
        if matches!(label, "normal" | "going_away") {
            return;
        }
        self.push("close", label, Some(code), reason, conn, user);
    }

    fn push(
        &self,
        kind: &'static str,
        code: &'static str,
        close_code: Option<u16>,
        message: &str,
        conn: &str,
        user: &str,
    ) {
        let message: String = message.chars().take(MAX_MESSAGE).collect();
        let time = crate::unix_ms();
        let mut r = crate::lock(&self.inner);
        r.next += 1;
        let seq = r.next;
        let repeat = r
            .events
            .iter()
            .position(|e| e.code == code && e.kind == kind && e.conn == conn);
        let count = match repeat.and_then(|i| r.events.remove(i)) {
            Some(earlier) => earlier.count + 1,
            None => {
                if r.events.len() == CAPACITY {
                    r.events.pop_front();
                }
                1
            }
        };
        r.events.push_back(Event {
            seq,
            time,
            kind,
            code,
            close_code,
            message,
            conn: conn.to_string(),
            user: user.to_string(),
            count,
        });
    }

    /// Events with `seq > after`, newest first, at most `limit`.
    pub(crate) fn list(&self, after: u64, limit: usize) -> Vec<Event> {
        let r = crate::lock(&self.inner);
        r.events
            .iter()
            .rev()
            .take_while(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_skips_normal_closes() {
        let r = Recent::default();
        r.close(1000, "bye", "c1", "u");
        r.close(1001, "shutdown", "c1", "u");
        assert!(r.list(0, 10).is_empty());
        for i in 0..(CAPACITY + 5) {
            r.error("bad_request", &format!("m{i}"), &format!("c{i}"), "u");
        }
        r.close(4000, "slow consumer", "c2", "v");
        let all = r.list(0, 1000);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].code, "slow_consumer");
        assert_eq!(all[0].close_code, Some(4000));
        assert_eq!(all[0].seq, (CAPACITY + 6) as u64);
        // Only what came after a given sequence number.
        let newer = r.list(all[2].seq, 1000);
        assert_eq!(newer.len(), 2);
        assert_eq!(r.list(0, 3).len(), 3);
    }

    #[test]
    fn one_connection_cannot_push_the_others_out() {
        let r = Recent::default();
        r.error("forbidden", "cannot join x", "calm", "u1");
        for i in 0..1000 {
            r.error("bad_request", &format!("bad {i}"), "noisy", "u2");
            r.error("unknown_type", &format!("what {i}"), "noisy", "u2");
        }
        let all = r.list(0, CAPACITY);
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!((all[0].code, all[0].count), ("unknown_type", 1000));
        assert_eq!(all[0].message, "what 999");
        assert_eq!((all[1].code, all[1].count), ("bad_request", 1000));
        assert_eq!((all[2].conn.as_str(), all[2].count), ("calm", 1));
        // A repeat is new to a poller: it has the newest seq.
        assert_eq!(all[0].seq, 2001);
        assert_eq!(r.list(all[1].seq, 10).len(), 1);
    }

    #[test]
    fn long_messages_are_cut() {
        let r = Recent::default();
        r.error("bad_request", &"x".repeat(1000), "c", "u");
        assert_eq!(r.list(0, 1)[0].message.len(), MAX_MESSAGE);
    }
}

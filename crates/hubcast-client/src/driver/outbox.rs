//! Publishes waiting for their ack (sent, waiting for a connection, or
//! waiting to be retried after `unavailable`/`timeout`/`rate_limited`), requests
//! waiting for a reply, and their deadlines.

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Driver;
use crate::backoff::random_fraction;
use crate::client::Outgoing;
use crate::error::Error;
use crate::events::Ack;

/// A publish or send waiting for its ack.
pub(crate) struct Out {
    pub(crate) msg: Outgoing,
    pub(crate) reply: oneshot::Sender<Result<Ack, Error>>,
    /// Past it the caller gets a timeout (a retry with the msgId is safe).
    pub(crate) deadline: Instant,
    /// Frame id of the copy on the current connection.
    pub(crate) sent: Option<u64>,
    /// When to send it again after `unavailable`, `timeout` or
    /// `rate_limited`.
    pub(crate) retry_at: Option<Instant>,
}

/// What the reply to a request id is for.
pub(crate) enum Waiting {
    /// A join of this room.
    Join(String),
    /// The outbox entry with this key.
    Out(u64),
    /// A [`Client::request`](crate::Client::request), until its deadline.
    Request(oneshot::Sender<Result<Value, Error>>, Instant),
    /// Nobody: `leave`, `status`, `ping`.
    Ignore,
}

/// The earlier of two optional deadlines.
pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Driver {
    /// Sends an outbox entry on the current connection, unless it is
    /// already on it or waits for a retry.
    pub(super) fn transmit(&mut self, key: u64) {
        let Some(o) = self.outbox.get(&key) else {
            return;
        };
        if o.sent.is_some() || o.retry_at.is_some() {
            return;
        }
        let id = self.id(Waiting::Out(key));
        if let Some(o) = self.outbox.get_mut(&key) {
            self.out.push(o.msg.frame(id));
            o.sent = Some(id);
        }
    }

    /// After `unavailable`, `timeout` or `rate_limited`: send again after the retry
    /// delay, jittered (0.5 to 1.5 times).
    pub(super) fn retry_later(&mut self, key: u64, now: Instant) {
        if let Some(o) = self.outbox.get_mut(&key) {
            o.sent = None;
            o.retry_at = Some(now + self.opts.retry_delay.mul_f64(0.5 + random_fraction()));
        }
    }

    /// The earliest publish or request timeout: what [`Driver::expire`]
    /// handles.
    pub(super) fn expiry_deadline(&self) -> Option<Instant> {
        let publishes = self.outbox.values().map(|o| o.deadline).min();
        let requests = self
            .waiting
            .values()
            .filter_map(|w| match w {
                Waiting::Request(_, d) => Some(*d),
                _ => None,
            })
            .min();
        earliest(publishes, requests)
    }

    /// The earliest deadline of a connected driver's state: timeouts,
    /// retries and gaps, what [`Driver::expire`] and
    /// [`Driver::retry_and_gaps`] handle.
    pub(super) fn online_deadline(&self) -> Option<Instant> {
        let retries = self.outbox.values().filter_map(|o| o.retry_at).min();
        let rejoins = self.rooms.values().filter_map(|r| r.rejoin_at).min();
        let retries = earliest(retries, rejoins);
        let gaps = self
            .rooms
            .values()
            .filter_map(|r| r.gap_deadline(self.opts.gap_timeout))
            .min();
        earliest(self.expiry_deadline(), earliest(retries, gaps))
    }

    /// Publishes and requests past their deadline fail.
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .outbox
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            if let Some(o) = self.outbox.remove(&k) {
                if let Some(id) = o.sent {
                    self.waiting.remove(&id);
                }
                let _ = o.reply.send(Err(Error::Timeout(format!(
                    "no ack for {}; retrying with the same msgId is safe",
                    o.msg.msg_id
                ))));
            }
        }
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| matches!(w, Waiting::Request(_, d) if *d <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            if let Some(Waiting::Request(tx, _)) = self.waiting.remove(&k) {
                let _ = tx.send(Err(Error::Timeout("no reply".into())));
            }
        }
    }

    /// Publishes and rejoins due for a retry are sent again; gaps waited
    /// for long enough are given up on.
    pub(super) fn retry_and_gaps(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .outbox
            .iter()
            .filter(|(_, o)| o.retry_at.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(o) = self.outbox.get_mut(&k) {
                o.retry_at = None;
            }
            self.transmit(k);
        }
        let rejoins: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.rejoin_at.is_some_and(|t| t <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in rejoins {
            self.send_join(&name);
        }
        let mut out = Vec::new();
        let cap = self.opts.dedupe_window;
        for r in self.rooms.values_mut() {
            if r.gap_deadline(self.opts.gap_timeout)
                .is_some_and(|d| d <= now)
            {
                r.flush_gap(&mut out, cap);
            }
        }
        self.emit(out);
    }
}

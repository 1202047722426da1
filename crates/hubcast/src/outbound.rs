//! A connection's bounded outbound queue.
//!
//! Everything a connection sends goes through this queue, so one writer
//! orders it: frames (replies, messages, presence events), the answer to
//! the client's latest ping, and the close decision. Pushing never blocks and
//! never drops silently: a push into a full queue marks the connection for a
//! slow-consumer close (4000), and nothing is queued after that. The writer
//! takes the whole queue at once and writes it as one batch; an idle
//! connection holds no buffer (an empty `VecDeque` does not allocate).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::protocol::close;

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CloseReason {
    /// WebSocket close code (PROTOCOL.md section 4).
    pub code: u16,
    /// Short reason sent in the close frame and logged.
    pub reason: &'static str,
}

/// The queue and its wake-up signal.
#[derive(Debug)]
pub(crate) struct Outbound {
    /// Frames waiting for the writer, and the close decision once made.
    state: Mutex<State>,
    /// Wakes the consumer when frames, a pong or a close arrive. Each queue
    /// has one consumer (a connection's writer, an SSE stream, a poll
    /// request), so one waker does, and waking it walks no list of waiters
    /// under a lock.
    waker: AtomicWaker,
    /// Queued frames allowed before the slow-consumer close.
    cap: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    close: Option<CloseReason>,
    /// The payload of the latest ping not answered yet (RFC 6455 5.5.3:
    /// only the latest needs a pong).
    pong: Option<Bytes>,
    /// A wake-up not yet seen by the consumer (kept while nobody waits).
    woken: bool,
}

/// What [`Outbound::take`] found besides the frames.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    /// The close decision, if one was made (it stays made).
    pub close: Option<CloseReason>,
    /// A pong to send before the frames.
    pub pong: Option<Bytes>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued.
    Queued,
    /// The queue was full: the connection is now closing with 4000.
    Overflow,
    /// The connection is already closing; the frame was not queued (the
    /// client recovers what it missed after reconnecting).
    Closing,
}

impl Outbound {
    /// An empty queue holding at most `cap` frames.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// Queues one frame, or starts the slow-consumer close when full.
    pub(crate) fn push(&self, frame: Bytes) -> Pushed {
        let mut s = self.lock();
        if s.close.is_some() {
            return Pushed::Closing;
        }
        if s.frames.len() >= self.cap {
            s.frames.clear();
            self.decide(
                s,
                CloseReason {
                    code: close::SLOW_CONSUMER,
                    reason: "slow consumer: outbound queue full",
                },
            );
            return Pushed::Overflow;
        }
        self.append(s, |frames| {
            if frames.capacity() == 0 {
                *frames = crate::pool::queue();
            }
            frames.push_back(frame);
        })
    }

    /// Queues frames that must stay together (a `joined` reply and the
    /// recovered messages). Their number is bounded by the history size, so
    /// they may go past the cap; the next single push then decides.
    pub(crate) fn push_all(&self, frames: impl IntoIterator<Item = Bytes>) -> Pushed {
        let s = self.lock();
        if s.close.is_some() {
            return Pushed::Closing;
        }
        self.append(s, |queue| queue.extend(frames))
    }

    /// Adds to the frames under the lock `s`, then wakes the drainer when
    /// the queue was empty (it may be waiting) once the lock is released.
    #[inline]
    fn append(
        &self,
        mut s: MutexGuard<'_, State>,
        add: impl FnOnce(&mut VecDeque<Bytes>),
    ) -> Pushed {
        let wake = s.frames.is_empty();
        add(&mut s.frames);
        s.woken |= wake;
        drop(s);
        if wake {
            self.waker.wake();
        }
        Pushed::Queued
    }

    /// Decides to close the connection (the first reason wins).
    pub(crate) fn close(&self, code: u16, reason: &'static str) {
        let s = self.lock();
        self.decide(s, CloseReason { code, reason });
    }

    /// The one place a close is decided, under the lock `s`: the first
    /// reason wins, and every slow-consumer close (a full queue, a join
    /// buffer that overflowed, a room whose stream broke) is counted here
    /// and only here.
    fn decide(&self, mut s: MutexGuard<'_, State>, reason: CloseReason) {
        let first = s.close.is_none();
        if first {
            s.close = Some(reason);
        }
        s.woken = true;
        drop(s);
        self.waker.wake();
        if first && reason.code == close::SLOW_CONSUMER {
            crate::metrics::handles().slow_consumers.increment(1);
        }
    }

    /// The close decision, if one was made.
    pub(crate) fn closing(&self) -> Option<CloseReason> {
        self.lock().close
    }

    /// Takes every queued frame, the pong due and the close decision.
    pub(crate) fn take(&self, into: &mut VecDeque<Bytes>) -> Taken {
        let mut s = self.lock();
        if into.is_empty() {
            std::mem::swap(into, &mut s.frames);
        } else {
            into.extend(s.frames.drain(..));
        }
        Taken {
            close: s.close,
            pong: s.pong.take(),
        }
    }

    /// Whether a close or a pong waits: neither is held back to batch
    /// frames (`write_delay`).
    pub(crate) fn urgent(&self) -> bool {
        let s = self.lock();
        s.close.is_some() || s.pong.is_some()
    }

    /// Frames waiting now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Whether nothing is waiting.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues the answer to a client's ping (replacing an unsent one).
    pub(crate) fn pong(&self, payload: Bytes) {
        let mut s = self.lock();
        s.pong = Some(payload);
        s.woken = true;
        drop(s);
        self.waker.wake();
    }

    /// Wakes the consumer with nothing queued: it has other work (an SSE
    /// stream's server-side subscribes).
    pub(crate) fn wake(&self) {
        self.lock().woken = true;
        self.waker.wake();
    }

    /// Waits until something was pushed or a close decided since the last
    /// wake-up (a notification sent while nobody waits is kept).
    pub(crate) async fn notified(&self) {
        std::future::poll_fn(|cx| {
            // Registered before the flag is read: a wake-up after the read
            // wakes this waker.
            self.waker.register(cx.waker());
            if std::mem::take(&mut self.lock().woken) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hubcast_slow_consumer_closes_total` as /metrics shows it now.
    fn slow_consumer_closes() -> f64 {
        let text = crate::metrics::install()
            .map(|h| h.render())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("hubcast_slow_consumer_closes_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Every 4000 is counted, not only a full queue's: a close decided
    /// elsewhere (a join buffer's overflow, a broken room stream) too,
    /// once per connection. Other tests run beside this one and may add
    /// their own closes, so the count can only be at least this one's.
    #[test]
    fn every_slow_consumer_close_is_counted_once() {
        crate::metrics::handles();
        let before = slow_consumer_closes();
        let q = Outbound::new(8);
        q.close(close::SLOW_CONSUMER, "messages lost between nodes");
        q.close(close::SLOW_CONSUMER, "again");
        let after = slow_consumer_closes();
        assert!(after >= before + 1.0, "{before} -> {after}");
    }

    #[test]
    fn overflow_closes_and_never_queues_after() {
        let q = Outbound::new(2);
        assert_eq!(q.push(Bytes::from_static(b"1")), Pushed::Queued);
        assert_eq!(q.push(Bytes::from_static(b"2")), Pushed::Queued);
        assert_eq!(q.push(Bytes::from_static(b"3")), Pushed::Overflow);
        assert_eq!(q.closing().map(|c| c.code), Some(4000));
        assert_eq!(q.push(Bytes::from_static(b"4")), Pushed::Closing);
        let mut out = VecDeque::new();
        assert!(q.take(&mut out).close.is_some());
        assert!(
            out.is_empty(),
            "a slow consumer gets its close, not a partial stream"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_is_kept_until_seen_and_seen_once() {
        use std::time::Duration;
        use tokio::time::timeout;
        let q = std::sync::Arc::new(Outbound::new(8));
        let waits = |q: std::sync::Arc<Outbound>| async move {
            timeout(Duration::from_secs(1), q.notified()).await.is_ok()
        };
        assert!(!waits(q.clone()).await, "nothing happened yet");
        // Sent while nobody waits: kept, and seen once.
        q.push(Bytes::from_static(b"a"));
        assert!(waits(q.clone()).await);
        assert!(!waits(q.clone()).await, "seen already");
        // A second frame into a non-empty queue needs no wake-up.
        q.push(Bytes::from_static(b"b"));
        assert!(!waits(q.clone()).await);
        // Sent while the consumer waits: it wakes.
        let mut out = VecDeque::new();
        q.take(&mut out);
        let waiter = tokio::spawn(waits(q.clone()));
        tokio::task::yield_now().await;
        q.push(Bytes::from_static(b"c"));
        assert!(waiter.await.unwrap());
        // A close and a pong wake it too.
        let waiter = tokio::spawn(waits(q.clone()));
        tokio::task::yield_now().await;
        q.pong(Bytes::from_static(b"p"));
        assert!(waiter.await.unwrap());
        let waiter = tokio::spawn(waits(q.clone()));
        tokio::task::yield_now().await;
        q.close(1000, "");
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn take_moves_everything() {
        let q = Outbound::new(8);
        q.push(Bytes::from_static(b"a"));
        q.push_all([Bytes::from_static(b"b"), Bytes::from_static(b"c")]);
        q.pong(Bytes::from_static(b"old"));
        q.pong(Bytes::from_static(b"new"));
        assert!(q.urgent());
        let mut out = VecDeque::new();
        let taken = q.take(&mut out);
        assert!(taken.close.is_none());
        assert_eq!(
            taken.pong.as_deref(),
            Some(&b"new"[..]),
            "the latest ping's"
        );
        assert_eq!(out.len(), 3);
        assert!(q.is_empty() && !q.urgent());
    }
}

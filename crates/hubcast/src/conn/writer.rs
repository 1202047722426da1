//! The write loop: the only code that writes to the socket. It drains the
//! connection's queue (frames, the pong due, the close decision) into one
//! batch per wake-up, sends a ping every `heartbeat`, and closes a silent
//! connection or one whose token expired.

use std::collections::VecDeque;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::time::{Instant, sleep_until, timeout};

use super::frame::{self, Batch};
use super::{CLOSE_GRACE, Conn, Seen, grace};
use crate::outbound::{CloseReason, Taken};
use crate::protocol::close;

/// Writes until the close frame is out or the socket fails.
///
/// Not an `async fn`, which would hold its arguments twice for the
/// connection's life (see `super::serve`).
#[allow(clippy::manual_async_fn)]
pub(super) fn write_loop<W>(
    io: &mut W,
    conn: &Conn,
    seen: &Seen,
    heartbeat: Duration,
    write_delay: Duration,
) -> impl Future<Output = ()>
where
    W: AsyncWrite + Unpin,
{
    async move {
        // One timer for the next ping, the heartbeat deadline and the token's
        // expiry, whichever comes first; a frame arriving does not touch it (it
        // is re-armed when it fires), and an idle connection holds one timer.
        let mut next_ping = Instant::now() + heartbeat;
        let expiry = conn.expires.unwrap_or_else(far_future);
        let due = |next_ping: Instant| next_ping.min(seen.deadline()).min(expiry);
        let timer = sleep_until(due(next_ping));
        tokio::pin!(timer);
        loop {
            // Scoped: nothing of a batch is kept while the connection waits.
            {
                let mut queue = VecDeque::new();
                let taken = conn.out.take(&mut queue);
                let closing = taken.close;
                if !queue.is_empty() || taken.pong.is_some() || closing.is_some() {
                    let mut batch = batch(&queue, taken);
                    // An idle connection keeps no queue buffer (the thread
                    // keeps a few spares).
                    crate::pool::recycle_queue(queue);
                    if !send(io, &mut batch, conn, seen).await || closing.is_some() {
                        return;
                    }
                    continue;
                }
            }
            tokio::select! {
                biased;
                _ = conn.out.notified() => {
                    // The first frame after a quiet spell waits `write_delay`
                    // (off by default) so the frames queued meanwhile share its
                    // write. Frames pushed onto a queue that is not empty wake
                    // nobody, so what ends the wait early is a close or a pong;
                    // neither waits to begin with. Boxed: an idle connection's
                    // task keeps no room for it.
                    if !write_delay.is_zero() && !conn.out.urgent() {
                        let _ = Box::pin(timeout(write_delay, conn.out.notified())).await;
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= expiry {
                        conn.out.close(close::TOKEN_EXPIRED, "token expired");
                    } else if now >= seen.deadline() {
                        conn.out.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    } else if now >= next_ping {
                        next_ping = now + heartbeat;
                        let mut batch = Batch::default();
                        batch.frame(frame::opcode::PING, &Bytes::new());
                        if !send(io, &mut batch, conn, seen).await {
                            return;
                        }
                    }
                    timer.as_mut().reset(due(next_ping));
                }
            }
        }
    }
}

/// The frames to write: the pong, the queue (unless a slow consumer's
/// queue was dropped: it gets its close only) and the close frame.
fn batch(queue: &VecDeque<Bytes>, taken: Taken) -> Batch {
    let mut batch = Batch::for_frames(queue);
    // The pong answers the latest ping with its payload.
    if let Some(p) = taken.pong {
        batch.frame(frame::opcode::PONG, &p);
    }
    let closing: Option<CloseReason> = taken.close;
    if !queue.is_empty() && closing.is_none_or(|c| c.code != close::SLOW_CONSUMER) {
        let m = crate::metrics::handles();
        m.queue_depth.record(queue.len() as f64);
        m.bytes_out
            .increment(queue.iter().map(|f| f.len() as u64).sum::<u64>());
        for f in queue {
            batch.text(f);
        }
    }
    if let Some(c) = closing {
        batch.close(c.code, c.reason);
    }
    batch
}

/// An instant no connection lives to see.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Writes a batch (see [`write`]). Most writes finish at once, the socket
/// having room: those set no timer and box no future.
async fn send<W>(io: &mut W, batch: &mut Batch, conn: &Conn, seen: &Seen) -> bool
where
    W: AsyncWrite + Unpin,
{
    match std::future::poll_fn(|cx| Poll::Ready(batch.poll_write(io, cx))).await {
        Poll::Ready(r) => r.is_ok(),
        // Boxed: its timers would otherwise sit in every idle connection's
        // task.
        Poll::Pending => Box::pin(write(io, batch, conn, seen)).await,
    }
}

/// Writes the rest of a batch the socket did not take at once; `false`
/// when the socket failed, or when a close was decided meanwhile and the
/// client has not taken the data within the close grace (a slow consumer
/// that stopped reading altogether). A client silent past the heartbeat
/// deadline is closed here too (its write may never end).
async fn write<W>(io: &mut W, batch: &mut Batch, conn: &Conn, seen: &Seen) -> bool
where
    W: AsyncWrite + Unpin,
{
    let written = std::future::poll_fn(|cx| batch.poll_write(io, cx));
    tokio::pin!(written);
    let mut deadline = conn.out.closing().map(|c| Instant::now() + grace(Some(c)));
    let silent = sleep_until(seen.deadline());
    tokio::pin!(silent);
    loop {
        tokio::select! {
            r = &mut written => return r.is_ok(),
            _ = conn.out.notified(), if deadline.is_none() => {
                // A wake-up taken here is not lost: the writer looks at the
                // queue after this write anyway.
                if let Some(c) = conn.out.closing() {
                    deadline = Some(Instant::now() + grace(Some(c)));
                }
            }
            _ = &mut silent, if deadline.is_none() => {
                let at = seen.deadline();
                if at <= Instant::now() {
                    conn.out.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    deadline = Some(Instant::now() + CLOSE_GRACE);
                } else {
                    silent.as_mut().reset(at);
                }
            }
            _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => return false,
        }
    }
}

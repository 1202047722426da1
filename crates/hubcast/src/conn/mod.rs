//! A WebSocket connection after the upgrade: one task runs a reader and a
//! writer side by side.
//!
//! - The reader takes frames off the socket, keeps the heartbeat deadline and
//!   hands text frames to the [`session::Session`].
//! - The writer owns every write: it takes the whole outbound queue at once,
//!   feeds it to the socket and flushes once per batch, sends pings every
//!   `heartbeat`, and sends the close frame (1001 on shutdown, 4000 for a
//!   slow consumer, ...).
//!
//! Whichever side ends first decides the close; the other gets a short
//! grace period to finish the close handshake.

pub mod frame;
pub mod limit;
pub mod session;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use crate::App;
use crate::broker::ConnKey;
use crate::hub::Subscriber;
use crate::outbound::{CloseReason, Outbound};
use crate::protocol::{self, close, out};
use frame::{Batch, Incoming, ReadError, Reader};
use session::Session;

/// How long a close handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a slow consumer's 4000 close frame may wait behind the data the
/// client has not read yet: it must see the 4000 (to recover with `since`)
/// once it reads on, rather than a bare disconnect.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// A connection's identity and outbound queue, shared with the hub.
#[derive(Debug)]
pub struct Conn {
    /// Node-local key for the hub.
    pub key: ConnKey,
    /// Globally unique id (`c-<uuid v7>`), sent in `welcome`.
    pub id: Arc<str>,
    /// User id.
    pub user: Arc<str>,
    /// Display name.
    pub name: Arc<str>,
    /// What the token allows.
    pub grants: crate::auth::Grants,
    /// When the token expires (the connection is closed with 4001 then).
    pub expires: Option<Instant>,
    /// Connected without a token (its user id is this connection's alone).
    pub anonymous: bool,
    /// Everything to send to this client.
    pub out: Outbound,
    /// The trace id of the upgrade request (W3C `traceparent` or our own).
    pub trace_id: crate::trace::TraceId,
    /// Tells the connection's task its reader was woken.
    pub read_gate: ReadGate,
}

/// The reader's own wake-ups. One task runs a connection's reader and
/// writer; every frame queued wakes it for the writer, and polling the
/// reader then (split lock, hyper's wrappers, the socket's readiness) was
/// about 7% of the instructions per delivery for nothing. The reader is
/// polled with a waker of its own (the `Conn`, see its `Wake`), which
/// marks `woken` before waking the task, and only when it is marked.
#[derive(Debug)]
pub struct ReadGate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Default for ReadGate {
    fn default() -> Self {
        Self {
            // The first poll reads.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl Wake for Conn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.read_gate.woken.store(true, Ordering::Release);
        self.read_gate.task.wake();
    }
}

/// Which side of [`serve`]'s pair finished first.
enum First {
    Reader(ReadEnd),
    Writer,
}

impl Conn {
    /// A span for the connection's log lines, made while it does something
    /// (handles a frame, opens, closes) rather than held for its life.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("conn", trace_id = %self.trace_id)
    }
}

impl Subscriber for Conn {
    fn key(&self) -> ConnKey {
        self.key
    }

    fn outbound(&self) -> &Outbound {
        &self.out
    }
}

/// Why the reader stopped.
#[derive(Debug)]
enum ReadEnd {
    /// The client sent a close frame (its code) or closed the socket.
    Peer(Option<u16>),
    /// A frame over `max_message_bytes`.
    TooBig,
    /// A WebSocket protocol violation.
    Protocol(&'static str),
    /// A text message that is not UTF-8.
    BadUtf8,
    /// The socket failed.
    Io(String),
    /// The server decided to close (the writer sends the frame).
    Closing,
}

/// Serves one upgraded connection until it closes: frames are read from
/// `reader` and written to `writer` (the two halves of the socket). The
/// caller logs the opening (it has the remote address, which this task
/// does not keep).
pub async fn serve<R, W>(app: Arc<App>, mut reader: Reader<R>, mut writer: W, conn: Arc<Conn>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut counted = crate::metrics::OpenConnection::new(crate::metrics::Transport::Ws, &app.open);
    conn.out.push(protocol::encode(&out::Welcome {
        ty: "welcome",
        protocol: protocol::PROTOCOL_VERSION,
        conn_id: &conn.id,
        user: &conn.user,
        name: &conn.name,
        node: &app.config.node_id,
        heartbeat: app.config.heartbeat,
        max_message_bytes: app.config.max_message_bytes,
    }));
    // Futures that run once or only for a moment are boxed (here and
    // below): a future awaited inline reserves its size in the connection's
    // task for the task's whole life, and an idle connection should hold
    // only what it waits on (the task went from 4,000 to 1,984 bytes).
    let mut session = match Box::pin(
        Session::open(app.clone(), conn.clone()).instrument(conn.span()),
    )
    .await
    {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(conn = %conn.id, trace_id = %conn.trace_id, error = %e, "cannot register connection with the broker");
            conn.out.close(close::INTERNAL, "broker unavailable");
            None
        }
    };
    // A shutdown reaches connections through the hub's table of them
    // (`Hub::close_all`); one that began before this connection was in the
    // table is seen here.
    app.hub.register(conn.clone());
    if app.shutdown.is_cancelled() {
        conn.out.close(close::GOING_AWAY, "server shutting down");
    }
    let mut frames_in: u64 = 0;
    // A ping's payload, for the writer's pong.
    let pong = Mutex::new(None);
    // When the last frame arrived (the writer's timer closes a silent
    // connection); the reader and writer hold a reference each.
    let seen = Seen {
        base: Instant::now(),
        at: AtomicU64::new(0),
        idle: app.config.idle_timeout(),
    };
    let end = {
        let reader = read_loop(
            &mut reader,
            session.as_mut(),
            &conn,
            &seen,
            &pong,
            &mut frames_in,
        );
        let writer = write_loop(
            &mut writer,
            &conn,
            &pong,
            &seen,
            app.config.heartbeat_interval(),
            app.config.write_delay(),
        );
        tokio::pin!(reader, writer);
        let reader_waker = Waker::from(conn.clone());
        let first = std::future::poll_fn(|cx| {
            // Registered before the mark is read: a wake-up after the read
            // wakes this task.
            conn.read_gate.task.register(cx.waker());
            if conn.read_gate.woken.swap(false, Ordering::AcqRel)
                && let Poll::Ready(end) = reader
                    .as_mut()
                    .poll(&mut Context::from_waker(&reader_waker))
            {
                return Poll::Ready(First::Reader(end));
            }
            writer.as_mut().poll(cx).map(|()| First::Writer)
        })
        .await;
        // From here on both sides are polled with the task's own waker.
        match first {
            First::Reader(end) => {
                match &end {
                    ReadEnd::TooBig => conn
                        .out
                        .close(close::TOO_BIG, "frame larger than max_message_bytes"),
                    ReadEnd::Protocol(_) => conn.out.close(close::PROTOCOL_ERROR, "protocol error"),
                    ReadEnd::BadUtf8 => conn
                        .out
                        .close(close::INVALID_DATA, "text frame is not UTF-8"),
                    _ => conn.out.close(close::NORMAL, ""),
                }
                // A slow consumer that kept sending gets the same time to
                // read its 4000 as one that did not.
                let _ = Box::pin(timeout(grace(conn.out.closing()), &mut writer)).await;
                end
            }
            First::Writer => {
                // Our close frame is out (or the socket failed): wait briefly
                // for the client's close reply so it reads ours before the
                // TCP connection goes away.
                Box::pin(timeout(CLOSE_GRACE, &mut reader))
                    .await
                    .unwrap_or(ReadEnd::Closing)
            }
        }
    };
    if let Some(session) = session {
        Box::pin(session.close().instrument(conn.span())).await;
    }
    app.hub.unregister(&*conn);
    let closed = conn.out.closing();
    let (code, reason) = match (&end, closed) {
        (
            ReadEnd::Peer(code),
            Some(CloseReason {
                code: close::NORMAL,
                ..
            })
            | None,
        ) => (*code, "client closed".to_string()),
        (_, Some(c)) => (Some(c.code), c.reason.to_string()),
        (e, None) => (None, format!("{e:?}")),
    };
    counted.reason = crate::metrics::close_reason(code);
    // Closes the server decided (slow consumer, heartbeat, flooding, ...).
    if let Some(c) = closed.filter(|c| c.code != close::NORMAL) {
        app.recent.close(c.code, c.reason, &conn.id, &conn.user);
    }
    let detail = match &end {
        ReadEnd::Protocol(m) => m,
        ReadEnd::Io(m) => m.as_str(),
        _ => "",
    };
    tracing::info!(
        conn = %conn.id,
        user = %conn.user,
        trace_id = %conn.trace_id,
        code = code.unwrap_or(1005),
        reason = %reason,
        detail,
        duration_ms = seen.base.elapsed().as_millis() as u64,
        frames_in,
        "connection closed"
    );
}

/// How long the close may take once decided.
fn grace(closing: Option<CloseReason>) -> Duration {
    if closing.is_some_and(|c| c.code == close::SLOW_CONSUMER) {
        SLOW_CLOSE_GRACE
    } else {
        CLOSE_GRACE
    }
}

/// Frames read after the server decided to close, waiting for the client's
/// close reply, before it stops reading altogether.
const FRAMES_WHILE_CLOSING: u32 = 64;

async fn read_loop<R>(
    reader: &mut Reader<R>,
    mut session: Option<&mut Session>,
    conn: &Conn,
    seen: &Seen,
    pong: &Mutex<Option<Bytes>>,
    frames_in: &mut u64,
) -> ReadEnd
where
    R: AsyncRead + Unpin,
{
    let mut ignored = 0u32;
    loop {
        let pending = session.as_deref().is_some_and(Session::has_pending);
        let next = tokio::select! {
            biased;
            // Replies of publishes under way, as they complete.
            _ = async { if let Some(s) = session.as_deref_mut() { s.next_reply().await } }, if pending => continue,
            next = reader.next() => next,
        };
        let next = match next {
            Ok(None) => return ReadEnd::Peer(None),
            Err(ReadError::TooBig(_)) => return ReadEnd::TooBig,
            Err(ReadError::Protocol(p)) => return ReadEnd::Protocol(p),
            Err(ReadError::BadUtf8) => return ReadEnd::BadUtf8,
            Err(ReadError::Io(e)) => return ReadEnd::Io(e.to_string()),
            Ok(Some(msg)) => msg,
        };
        seen.now();
        *frames_in += 1;
        let payload = match next {
            // A close frame without a code is 1005 ("no status received").
            Incoming::Close(code) => return ReadEnd::Peer(Some(code.unwrap_or(1005))),
            Incoming::Ping(p) => {
                // Answered with the latest ping's payload (RFC 6455 5.5.3).
                *crate::lock(pong) = Some(p);
                conn.out.wake();
                continue;
            }
            // Pongs only count as activity.
            Incoming::Pong => continue,
            Incoming::Text(p) => Some(p),
            Incoming::Binary(_) => None,
        };
        if conn.out.closing().is_some() {
            // Closing: read on only to see the client's close reply. A client
            // that keeps sending instead (a flood) is not read any further.
            ignored += 1;
            if ignored > FRAMES_WHILE_CLOSING {
                return ReadEnd::Closing;
            }
            continue;
        }
        let Some(session) = session.as_deref_mut() else {
            continue;
        };
        match payload {
            Some(text) => {
                crate::metrics::handles()
                    .bytes_in
                    .increment(text.len() as u64);
                // Boxed: one allocation per client frame instead of its
                // largest future's size in every idle connection's task.
                Box::pin(session.on_text(&text).instrument(conn.span())).await;
            }
            None => session.on_binary(),
        }
    }
}

/// When the last frame arrived, shared by the reader (which sets it) and
/// the writer (whose timers check it).
#[derive(Debug)]
struct Seen {
    base: Instant,
    /// Milliseconds after `base`.
    at: AtomicU64,
    /// Silence after which the connection is closed with 4002.
    idle: Duration,
}

impl Seen {
    fn now(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.at.store(ms, Ordering::Relaxed);
    }

    /// When the connection counts as silent (heartbeat timeout).
    fn deadline(&self) -> Instant {
        self.base + Duration::from_millis(self.at.load(Ordering::Relaxed)) + self.idle
    }
}

async fn write_loop<W>(
    io: &mut W,
    conn: &Conn,
    pong: &Mutex<Option<Bytes>>,
    seen: &Seen,
    heartbeat: Duration,
    write_delay: Duration,
) where
    W: AsyncWrite + Unpin,
{
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
            let closing = conn.out.take(&mut queue);
            let ping = crate::lock(pong).take();
            if !queue.is_empty() || ping.is_some() || closing.is_some() {
                let mut batch = batch(&queue, ping, closing);
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
                if !write_delay.is_zero()
                    && conn.out.closing().is_none()
                    && crate::lock(pong).is_none()
                {
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

/// The frames to write: a pong, the queue (unless a slow consumer's queue
/// was dropped: it gets its close only) and the close frame.
fn batch(queue: &VecDeque<Bytes>, ping: Option<Bytes>, closing: Option<CloseReason>) -> Batch {
    let mut batch = Batch::for_frames(queue);
    // The pong answers the latest ping with its payload.
    if let Some(p) = ping {
        batch.frame(frame::opcode::PONG, &p);
    }
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

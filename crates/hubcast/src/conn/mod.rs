//! A WebSocket connection after the upgrade: one task runs a reader and a
//! writer side by side.
//!
//! - `reader`: takes frames off the socket, keeps the heartbeat deadline,
//!   queues the pong a ping asks for, and hands text frames to the
//!   `session::Session`.
//! - `writer`: owns every write: it drains the whole outbound queue at once
//!   (frames, pong, close decision) and writes it as one batch, sends pings every `heartbeat`, and sends the close frame
//!   (1001 on shutdown, 4000 for a slow consumer, ...).
//! - `session`: what each client frame does; [`frame`]: RFC 6455 framing;
//!   `limit`: the incoming frame rate limit.
//!
//! Whichever side ends first decides the close; the other gets a short
//! grace period to finish the close handshake.

pub mod frame;
pub(crate) mod limit;
mod reader;
pub(crate) mod session;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use crate::App;
use crate::broker::ConnKey;
use crate::http::linger::LINGER_TIME;
use crate::hub::Subscriber;
use crate::outbound::{CloseReason, Outbound};
use crate::protocol::{self, close, out};
use frame::Reader;
use reader::{ReadEnd, read_loop};
use session::Session;
use writer::write_loop;

/// How long a close handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a slow consumer's 4000 close frame may wait behind the data the
/// client has not read yet: it must see the 4000 (to recover with `since`)
/// once it reads on, rather than a bare disconnect.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// A connection's identity and outbound queue, shared with the hub.
#[derive(Debug)]
pub(crate) struct Conn {
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
    /// Server-side subscribes and unsubscribes for the session, which the
    /// read loop applies between client frames.
    pub commands: crate::hub::Commands,
}

/// The reader's own wake-ups. One task runs a connection's reader and
/// writer, and every frame queued wakes it for the writer; polling the
/// reader then (split lock, hyper's wrappers, the socket's readiness)
/// would be work for nothing on the fan-out path. So the reader is polled
/// with a waker of its own (the `Conn`, see its `Wake`), which marks
/// `woken` before waking the task, and only when it is marked.
#[derive(Debug)]
pub(crate) struct ReadGate {
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

impl ReadGate {
    /// Marks the reader woken and wakes the connection's task.
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Wake for Conn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.read_gate.wake();
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
    pub(crate) fn span(&self) -> tracing::Span {
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

    fn holder(&self) -> Option<(&str, &crate::auth::TokenId)> {
        Some((&self.user, &self.grants.token))
    }

    // The read loop checks the queue whenever the reader is polled, and
    // waking the read gate makes the task poll it.
    fn command(&self, cmd: crate::hub::RoomCommand) -> bool {
        self.commands.push(cmd);
        self.read_gate.wake();
        true
    }
}

/// Serves one upgraded connection until it closes: frames are read from
/// `reader` and written to `writer` (the two halves of the socket). The
/// caller logs the opening (it has the remote address, which this task
/// does not keep). `slot`, the connection's place under the connection
/// caps, is given back when this ends.
///
/// Not an `async fn`: one moves its arguments into locals of its own,
/// so the task would hold each of them twice for the connection's life
/// (the reader's state alone is 96 bytes); the block uses them in place.
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve<R, W>(
    app: Arc<App>,
    mut reader: Reader<R>,
    mut writer: W,
    conn: Arc<Conn>,
    subs: Vec<String>,
    slot: crate::http::limits::ConnSlot,
) -> impl Future<Output = ()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    async move {
        let mut counted =
            crate::metrics::OpenConnection::new(crate::metrics::Transport::Ws, &app.open);
        conn.out.push(protocol::encode(&out::Welcome {
            ty: "welcome",
            protocol: protocol::PROTOCOL_VERSION,
            conn_id: &conn.id,
            user: &conn.user,
            name: &conn.name,
            node: &app.config.node_id,
            heartbeat: app.config.heartbeat,
            max_message_bytes: app.live().config.max_message_bytes,
        }));
        // Futures that run once or only for a moment are boxed (here and
        // below): a future awaited inline reserves its size in the connection's
        // task for the task's whole life, and an idle connection should hold
        // only what it waits on.
        // A shutdown and the user controls reach connections through the
        // hub's table of them (`Hub::open_conns`, `Hub::close_where`,
        // `Hub::command_where`), so the connection is in it before its session
        // opens: a server-side subscribe made meanwhile waits in its queue.
        app.hub.register(conn.clone());
        // A shutdown, block or revocation that walked the table before this
        // connection was in it (after the handshake checked) is seen here.
        if app.shutdown.is_cancelled() {
            conn.out.close(close::GOING_AWAY, "server shutting down");
        } else if !conn.anonymous
            && let Err(refusal) = app.controls.admits(&conn.user, &conn.grants.token)
        {
            conn.out.close(close::REVOKED, refusal.message());
        }
        let mut session = match Box::pin(
            Session::open(app.clone(), conn.clone(), subs).instrument(conn.span()),
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
        let mut frames_in: u64 = 0;
        // When the last frame arrived (the writer's timer closes a silent
        // connection); the reader and writer hold a reference each.
        let seen = Seen {
            base: Instant::now(),
            at: AtomicU64::new(0),
            idle: app.config.idle_timeout(),
        };
        let end = {
            let reader = read_loop(&mut reader, session.as_mut(), &conn, &seen, &mut frames_in);
            let writer = write_loop(
                &mut writer,
                &conn,
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
                        ReadEnd::Protocol(_) => {
                            conn.out.close(close::PROTOCOL_ERROR, "protocol error")
                        }
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
        // What the client sent and this side did not read (a flood, the rest of
        // a frame too large to read, whatever followed a protocol error) would
        // make closing the socket reset it, destroying our close frame in the
        // client's buffer: such a socket gets a lingering close (see
        // `http::linger`). A client that sent its close or its FIN has nothing
        // left in flight.
        let linger = !matches!(end, ReadEnd::Peer(_));
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
        // The connection is gone for the hub, the engine and the metrics; the
        // socket keeps its place under the per-address cap while it lingers.
        drop(counted);
        if linger {
            // Bounded by the lingering itself; this bound is for a transport
            // whose shutdown would not be.
            let _ = Box::pin(timeout(LINGER_TIME + CLOSE_GRACE, writer.shutdown())).await;
        }
        // The socket is gone (or lingered): its place under the caps is free.
        drop(slot);
    }
}

/// How long the close may take once decided.
fn grace(closing: Option<CloseReason>) -> Duration {
    if closing.is_some_and(|c| c.code == close::SLOW_CONSUMER) {
        SLOW_CLOSE_GRACE
    } else {
        CLOSE_GRACE
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

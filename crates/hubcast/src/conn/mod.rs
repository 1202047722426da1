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

pub mod limit;
pub mod outbound;
pub mod session;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_websockets::{CloseCode, Error as WsError, Message, Payload};

use crate::App;
use crate::broker::ConnKey;
use crate::hub::Subscriber;
use crate::protocol::{self, close, out};
use outbound::{CloseReason, Outbound};
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
    /// Nothing arrived within the heartbeat deadline.
    Timeout,
    /// A frame over `max_message_bytes`.
    TooBig,
    /// A WebSocket protocol violation.
    Protocol(String),
    /// The socket failed.
    Io(String),
    /// The server decided to close (the writer sends the frame).
    Closing,
}

/// Serves one upgraded connection until it closes.
pub async fn serve<S>(app: Arc<App>, ws: S, conn: Arc<Conn>, remote: SocketAddr)
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let opened = Instant::now();
    let mut counted = crate::metrics::OpenConnection::new(crate::metrics::Transport::Ws, &app.open);
    tracing::info!(conn = %conn.id, user = %conn.user, remote = %remote, "connection opened");
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
    let (mut sink, mut stream) = ws.split();
    // Futures that run once or only for a moment are boxed (here and
    // below): a future awaited inline reserves its size in the connection's
    // task for the task's whole life, and an idle connection should hold
    // only what it waits on (the task went from 4,000 to 1,984 bytes).
    let mut session = match Box::pin(Session::open(app.clone(), conn.clone())).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(conn = %conn.id, error = %e, "cannot register connection with the broker");
            conn.out.close(close::INTERNAL, "broker unavailable");
            None
        }
    };
    let mut frames_in: u64 = 0;
    let end = {
        let reader = read_loop(&mut stream, session.as_mut(), &conn, &app, &mut frames_in);
        let writer = write_loop(
            &mut sink,
            &conn,
            app.config.heartbeat_interval(),
            &app.shutdown,
        );
        tokio::pin!(reader, writer);
        tokio::select! {
            end = &mut reader => {
                match &end {
                    ReadEnd::Timeout => conn.out.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout"),
                    ReadEnd::TooBig => conn.out.close(close::TOO_BIG, "frame larger than max_message_bytes"),
                    ReadEnd::Protocol(_) => conn.out.close(1002, "protocol error"),
                    _ => conn.out.close(close::NORMAL, ""),
                }
                // A slow consumer that kept sending gets the same time to
                // read its 4000 as one that did not.
                let grace = if conn.out.closing().is_some_and(|c| c.code == close::SLOW_CONSUMER) {
                    SLOW_CLOSE_GRACE
                } else {
                    CLOSE_GRACE
                };
                let _ = Box::pin(timeout(grace, &mut writer)).await;
                end
            }
            _ = &mut writer => {
                // Our close frame is out (or the socket failed): wait briefly
                // for the client's close reply so it reads ours before the
                // TCP connection goes away.
                Box::pin(timeout(CLOSE_GRACE, &mut reader)).await.unwrap_or(ReadEnd::Closing)
            }
        }
    };
    if let Some(session) = session {
        Box::pin(session.close()).await;
    }
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
        ReadEnd::Protocol(m) | ReadEnd::Io(m) => m.as_str(),
        _ => "",
    };
    tracing::info!(
        conn = %conn.id,
        user = %conn.user,
        code = code.unwrap_or(1005),
        reason = %reason,
        detail,
        duration_ms = opened.elapsed().as_millis() as u64,
        frames_in,
        "connection closed"
    );
}

/// Frames read after the server decided to close, waiting for the client's
/// close reply, before it stops reading altogether.
const FRAMES_WHILE_CLOSING: u32 = 64;

async fn read_loop<S>(
    stream: &mut S,
    mut session: Option<&mut Session>,
    conn: &Conn,
    app: &App,
    frames_in: &mut u64,
) -> ReadEnd
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let idle = app.config.idle_timeout();
    // One timer for the connection's life, re-armed only when it fires: a
    // busy connection does not touch the timer wheel per frame.
    let mut last_seen = Instant::now();
    let deadline = tokio::time::sleep_until(last_seen + idle);
    tokio::pin!(deadline);
    let mut ignored = 0u32;
    loop {
        let pending = session.as_deref().is_some_and(Session::has_pending);
        let next = tokio::select! {
            biased;
            // Replies of publishes under way, as they complete.
            _ = async { if let Some(s) = session.as_deref_mut() { s.next_reply().await } }, if pending => continue,
            next = stream.next() => next,
            _ = &mut deadline => {
                if last_seen + idle <= Instant::now() {
                    return ReadEnd::Timeout;
                }
                deadline.as_mut().reset(last_seen + idle);
                continue;
            }
        };
        let next = match next {
            None => return ReadEnd::Peer(None),
            Some(Err(e)) => {
                return match e {
                    WsError::PayloadTooLong { .. } => ReadEnd::TooBig,
                    WsError::Protocol(p) => ReadEnd::Protocol(p.to_string()),
                    WsError::AlreadyClosed => ReadEnd::Peer(None),
                    other => ReadEnd::Io(other.to_string()),
                };
            }
            Some(Ok(msg)) => msg,
        };
        last_seen = Instant::now();
        *frames_in += 1;
        if let Some((code, _)) = next.as_close() {
            return ReadEnd::Peer(Some(u16::from(code)));
        }
        if next.is_close() {
            return ReadEnd::Peer(None);
        }
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
        if next.is_text() {
            crate::metrics::handles()
                .bytes_in
                .increment(next.as_payload().len() as u64);
            // Boxed: one allocation per client frame instead of its
            // largest future's size in every idle connection's task.
            Box::pin(session.on_text(next.as_payload())).await;
        } else if next.is_binary() {
            session.on_binary();
        }
        // Pings are answered by the WebSocket layer; pongs only count as
        // activity.
    }
}

async fn write_loop<S>(sink: &mut S, conn: &Conn, heartbeat: Duration, shutdown: &CancellationToken)
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut batch: VecDeque<bytes::Bytes> = VecDeque::new();
    let ping = sleep_until(Instant::now() + heartbeat);
    tokio::pin!(ping);
    // A far-away deadline stands in for "never" when the token has no expiry.
    let expiry = sleep_until(
        conn.expires
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)),
    );
    tokio::pin!(expiry);
    loop {
        let closing = conn.out.take(&mut batch);
        let slow = closing.is_some_and(|c| c.code == close::SLOW_CONSUMER);
        if !batch.is_empty() && !slow {
            let m = crate::metrics::handles();
            m.queue_depth.record(batch.len() as f64);
            m.bytes_out
                .increment(batch.iter().map(|f| f.len() as u64).sum::<u64>());
            for frame in batch.drain(..) {
                if sink
                    .feed(Message::text(Payload::from(frame)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // An idle connection keeps no batch buffer.
            batch = VecDeque::new();
            match flush(sink, conn).await {
                Flushed::Done if closing.is_none() => continue,
                Flushed::Done | Flushed::Slow => {}
                Flushed::Failed => return,
            }
        }
        batch.clear();
        if let Some(c) = conn.out.closing() {
            Box::pin(send_close(sink, c)).await;
            return;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => conn.out.close(close::GOING_AWAY, "server shutting down"),
            _ = conn.out.notified() => {}
            _ = &mut expiry, if conn.expires.is_some() => conn.out.close(close::TOKEN_EXPIRED, "token expired"),
            _ = &mut ping => {
                ping.as_mut().reset(Instant::now() + heartbeat);
                if sink.feed(Message::ping(Payload::from(bytes::Bytes::new()))).await.is_err()
                    || flush(sink, conn).await == Flushed::Failed
                {
                    return;
                }
            }
        }
    }
}

/// How a flush ended.
#[derive(Debug, PartialEq, Eq)]
enum Flushed {
    /// Everything written.
    Done,
    /// Given up: the connection was declared a slow consumer meanwhile.
    Slow,
    /// The socket failed.
    Failed,
}

/// Flushes, unless the connection is declared a slow consumer meanwhile.
async fn flush<S>(sink: &mut S, conn: &Conn) -> Flushed
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    loop {
        tokio::select! {
            r = sink.flush() => return if r.is_ok() { Flushed::Done } else { Flushed::Failed },
            _ = conn.out.notified() => {
                if conn.out.closing().is_some_and(|c| c.code == close::SLOW_CONSUMER) {
                    return Flushed::Slow;
                }
            }
        }
    }
}

async fn send_close<S>(sink: &mut S, reason: CloseReason)
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let code = CloseCode::try_from(reason.code).unwrap_or(CloseCode::INTERNAL_SERVER_ERROR);
    let grace = if reason.code == close::SLOW_CONSUMER {
        SLOW_CLOSE_GRACE
    } else {
        CLOSE_GRACE
    };
    let _ = timeout(grace, async {
        // The WebSocket layer may have queued a close already (the client
        // closed, or broke the protocol): then just get it out.
        if let Err(WsError::AlreadyClosed) =
            sink.send(Message::close(Some(code), reason.reason)).await
        {
            let _ = sink.flush().await;
        }
    })
    .await;
}

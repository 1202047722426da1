//! The read loop: takes frames off the socket, marks the connection alive,
//! answers pings through the queue and hands text to the session, and
//! the server-side subscribes queued for the connection too.

use std::task::Poll;

use tokio::io::AsyncRead;
use tracing::Instrument;

use super::frame::{Incoming, ReadError, Reader};
use super::session::Session;
use super::{Conn, Seen};

/// Why the reader stopped.
#[derive(Debug)]
pub(super) enum ReadEnd {
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

/// Frames read after the server decided to close, waiting for the client's
/// close reply, before it stops reading altogether.
const FRAMES_WHILE_CLOSING: u32 = 64;

/// Reads until the client closes, the socket fails, a frame breaks the
/// protocol, or (once the server decided to close) the client's close
/// reply or too many other frames arrive.
///
/// Not an `async fn`, which would hold its arguments twice for the
/// connection's life (see `super::serve`).
#[allow(clippy::manual_async_fn)]
pub(super) fn read_loop<R>(
    reader: &mut Reader<R>,
    mut session: Option<&mut Session>,
    conn: &Conn,
    seen: &Seen,
    frames_in: &mut u64,
) -> impl Future<Output = ReadEnd>
where
    R: AsyncRead + Unpin,
{
    async move {
        let mut ignored = 0u32;
        loop {
            let pending = session.as_deref().is_some_and(Session::has_pending);
            let commands = std::future::poll_fn(|_| {
                // No waker kept: `Conn::command` wakes the read gate, which
                // polls this loop again.
                if conn.commands.waiting() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            let next = tokio::select! {
                biased;
                // Replies of publishes under way, as they complete.
                _ = async { if let Some(s) = session.as_deref_mut() { s.next_reply().await } }, if pending => continue,
                // Server-side subscribes, between client frames.
                () = commands, if session.is_some() => {
                    for cmd in conn.commands.take() {
                        if conn.out.closing().is_some() {
                            break;
                        }
                        if let Some(s) = session.as_deref_mut() {
                            Box::pin(s.on_command(cmd).instrument(conn.span())).await;
                        }
                    }
                    continue;
                }
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
                    conn.out.pong(p);
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
}

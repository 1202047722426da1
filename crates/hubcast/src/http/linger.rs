//! A lingering close for every accepted socket.
//!
//! Closing a TCP socket that still has unread input makes the kernel answer
//! with a reset, and a reset destroys whatever the peer has not read yet:
//! the WebSocket close frame the server just sent (4000, 4003, 1009, ...),
//! the frames before it, or an HTTP error answer to a request whose body
//! was not read. So the server closes as nginx and Apache do: it stops
//! writing (a FIN after its last bytes), reads and discards what the client
//! still sends, and lets the socket go when the client closes its side or a
//! bound passes ([`LINGER_TIME`], and a byte budget), so that a flooder
//! cannot hold a socket this way. The socket keeps its place under
//! `max_connections_per_ip` until it is really gone.
//!
//! [`Lingering`] does this in `poll_shutdown`, which is where hyper ends a
//! connection it is done with and where a WebSocket ends after its close
//! (through the upgraded stream, under TLS when TLS is on: rustls sends its
//! close_notify first, then shuts the socket down through this type).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep_until};

use super::limits::TcpSlot;

/// Longest a closing socket is read from after the server's FIN.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);
/// Bytes read and discarded after the FIN, at least; a server with a larger
/// `max_message_bytes` allows twice that, the rest of a too-large frame
/// being the usual thing still in flight.
const LINGER_BYTES: usize = 1 << 20;

/// An accepted TCP socket whose shutdown lingers (see the module docs).
#[derive(Debug)]
pub(crate) struct Lingering {
    tcp: TcpStream,
    /// The socket's place under the per-address cap, given back on drop.
    _slot: Option<TcpSlot>,
    /// Bytes that may be discarded once shutting down.
    budget: u32,
    /// Boxed: every open socket holds this, only a closing one needs more
    /// than a pointer's room.
    drain: Option<Box<Drain>>,
}

/// Why a lingering close ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer closed its side (or the socket failed).
    Peer,
    /// [`LINGER_TIME`] passed.
    Time,
    /// The byte budget was used up.
    Budget,
}

#[derive(Debug)]
struct Drain {
    /// The FIN was sent (or the socket could not send it: then there is
    /// nothing to wait for either).
    shut: bool,
    until: Pin<Box<Sleep>>,
    left: usize,
    /// Why the lingering ended, once it has.
    ended: Option<End>,
}

impl Lingering {
    /// Wraps an accepted socket; `max_message` is the server's
    /// `max_message_bytes`.
    pub(crate) fn new(tcp: TcpStream, slot: Option<TcpSlot>, max_message: usize) -> Self {
        Self {
            tcp,
            _slot: slot,
            budget: u32::try_from(LINGER_BYTES.max(max_message.saturating_mul(2)))
                .unwrap_or(u32::MAX),
            drain: None,
        }
    }

    /// Why the lingering close ended, once it has.
    #[cfg(test)]
    fn ended(&self) -> Option<End> {
        self.drain.as_ref().and_then(|d| d.ended)
    }

    /// Sends the FIN, then reads until the peer's FIN, an error, or a bound.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let budget = self.budget as usize;
        let drain = self.drain.get_or_insert_with(|| {
            Box::new(Drain {
                shut: false,
                until: Box::pin(sleep_until(Instant::now() + LINGER_TIME)),
                left: budget,
                ended: None,
            })
        });
        if drain.ended.is_none() {
            let end = ready!(poll_drain(&mut self.tcp, drain, cx));
            drain.ended = Some(end);
        }
        Poll::Ready(Ok(()))
    }
}

/// Sends the FIN once, then reads and discards until the peer's FIN, an
/// error, or a bound.
fn poll_drain(tcp: &mut TcpStream, drain: &mut Drain, cx: &mut Context<'_>) -> Poll<End> {
    if !drain.shut {
        // A socket that cannot even send its FIN (reset by the peer)
        // has nothing left to protect.
        if ready!(Pin::new(&mut *tcp).poll_shutdown(cx)).is_err() {
            return Poll::Ready(End::Peer);
        }
        drain.shut = true;
    }
    let mut space = [0u8; 8192];
    loop {
        if drain.until.as_mut().poll(cx).is_ready() {
            return Poll::Ready(End::Time);
        }
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut *tcp).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            // The peer's FIN, or a socket that failed: done either way.
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(End::Peer),
            Poll::Ready(Err(_)) => return Poll::Ready(End::Peer),
            Poll::Ready(Ok(())) => {
                drain.left = drain.left.saturating_sub(buf.filled().len());
                if drain.left == 0 {
                    return Poll::Ready(End::Budget);
                }
            }
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_linger(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (Lingering, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (Lingering::new(server, None, 0), client)
    }

    /// The server's answer survives input it never read: the client reads
    /// it in full, and an EOF after it (the FIN), not a reset.
    #[tokio::test]
    async fn unread_input_does_not_reset_the_answer() {
        let (mut server, mut client) = pair().await;
        client.write_all(&[7u8; 300 * 1024]).await.unwrap();
        server.write_all(b"goodbye").await.unwrap();
        let closing = tokio::spawn(async move {
            server.shutdown().await.unwrap();
            server
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"goodbye");
        drop(client);
        assert_eq!(closing.await.unwrap().ended(), Some(End::Peer));
    }

    /// A client that never closes its side does not hold the socket past
    /// the bound.
    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_in_time() {
        let (mut server, _client) = pair().await;
        server.shutdown().await.unwrap();
        assert_eq!(server.ended(), Some(End::Time));
    }

    /// A client that keeps sending does not hold it past the byte budget.
    #[tokio::test]
    async fn the_wait_is_bounded_in_bytes() {
        let (mut server, mut client) = pair().await;
        let flood = tokio::spawn(async move {
            let chunk = [1u8; 64 * 1024];
            // Until the server lets the socket go.
            while client.write_all(&chunk).await.is_ok() {}
        });
        server.shutdown().await.unwrap();
        assert_eq!(server.ended(), Some(End::Budget));
        drop(server);
        flood.await.unwrap();
    }
}

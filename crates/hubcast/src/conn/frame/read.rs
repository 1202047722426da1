//! Reading client frames: [`Reader`] and the checks RFC 6455 asks of them.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use super::{apply_mask, opcode};

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message (valid UTF-8).
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping; the payload goes back in the pong.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A message over the size limit (close with 1009).
    #[error("message of {0} bytes or more is over the limit")]
    TooBig(u64),
    /// A text message or close reason that is not UTF-8 (close with 1007).
    #[error("text is not valid UTF-8")]
    BadUtf8,
    /// A broken frame (close with 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Bytes read from the socket in one go while no frame is incomplete (on the
/// stack; only a frame's unfinished rest is kept on the heap).
const READ_CHUNK: usize = 4096;

/// Reads client frames from `R`.
#[derive(Debug)]
pub struct Reader<R> {
    io: R,
    /// Bytes read but not yet consumed: empty and unallocated while idle.
    buf: BytesMut,
    /// Largest message accepted, in bytes.
    max: usize,
    /// A fragmented message being put together: its opcode and data.
    partial: Option<(u8, BytesMut)>,
    /// End of stream seen.
    eof: bool,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header length in bytes.
    len: usize,
    /// Payload length.
    payload: u64,
}

/// Parses a client frame's header from the start of `b`: `Ok(None)` when
/// more bytes are needed.
fn parse_header(b: &[u8]) -> Result<Option<Header>, ReadError> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    if b[0] & 0x70 != 0 {
        return Err(ReadError::Protocol(
            "reserved bits set without an extension",
        ));
    }
    let opcode = b[0] & 0x0F;
    if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
        return Err(ReadError::Protocol("reserved opcode"));
    }
    if b[1] & 0x80 == 0 {
        return Err(ReadError::Protocol("client frames must be masked"));
    }
    let short = u64::from(b[1] & 0x7F);
    let (payload, at) = match short {
        126 => {
            let Some(x) = b.get(2..4) else {
                return Ok(None);
            };
            let n = u64::from(u16::from_be_bytes([x[0], x[1]]));
            if n < 126 {
                return Err(ReadError::Protocol("length not in its shortest form"));
            }
            (n, 4)
        }
        127 => {
            let Some(x) = b.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(x);
            let n = u64::from_be_bytes(a);
            if n >> 63 != 0 {
                return Err(ReadError::Protocol("length with its top bit set"));
            }
            if n <= 0xFFFF {
                return Err(ReadError::Protocol("length not in its shortest form"));
            }
            (n, 10)
        }
        n => (n, 2),
    };
    if opcode >= opcode::CLOSE {
        if !fin {
            return Err(ReadError::Protocol("fragmented control frame"));
        }
        if payload > 125 {
            return Err(ReadError::Protocol("control frame over 125 bytes"));
        }
    }
    let Some(m) = b.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        len: at + 4,
        payload,
    }))
}

/// Whether a received close code may be sent by a peer (RFC 6455 section
/// 7.4; 1004-1006 and 1015 are reserved, 1012-1014 are registered since).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads from `io` (bytes a client sent along with its handshake are
    /// given back by hyper's upgraded stream), accepting messages up to
    /// `max` bytes.
    pub fn new(io: R, max: usize) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            max,
            partial: None,
            eof: false,
        }
    }

    /// The next message; `Ok(None)` at the end of the stream.
    ///
    /// Cancel-safe: everything read is kept in `self` before a wait, so a
    /// dropped call loses nothing.
    pub async fn next(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            if let Some(m) = self.decode()? {
                return Ok(Some(m));
            }
            if self.eof {
                return if self.buf.is_empty() && self.partial.is_none() {
                    Ok(None)
                } else {
                    Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))
                };
            }
            std::future::poll_fn(|cx| self.poll_fill(cx)).await?;
        }
    }

    /// Reads once from the socket into `buf`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.is_empty() {
            // Nothing pending: read on the stack, so an idle connection
            // keeps no buffer; the heap is used only for what is left over.
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut rb = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                self.eof = true;
            } else {
                self.buf = BytesMut::from(rb.filled());
            }
        } else {
            // A frame is incomplete: read straight after it. Room grows
            // with what arrived (at most doubling), never to the declared
            // length at once: a header costs nothing to send, so reserving
            // what it declares would let idle connections hold
            // `max_message_bytes` each.
            let need = self
                .needed()
                .min(self.buf.len().max(READ_CHUNK))
                .max(READ_CHUNK);
            self.buf.reserve(need);
            if ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                cx,
                &mut self.buf
            ))? == 0
            {
                self.eof = true;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Bytes the incomplete frame at the start of `buf` still needs (a
    /// guess when its header is incomplete).
    fn needed(&self) -> usize {
        match parse_header(&self.buf) {
            Ok(Some(h)) => (h.len as u64 + h.payload)
                .saturating_sub(self.buf.len() as u64)
                .try_into()
                .unwrap_or(usize::MAX),
            _ => 14,
        }
    }

    /// Takes complete frames off `buf` until one completes a message.
    fn decode(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(h) = parse_header(&self.buf)? else {
                return Ok(None);
            };
            // The limit holds before the payload is buffered.
            let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
            if h.opcode < opcode::CLOSE && so_far + h.payload > self.max as u64 {
                return Err(ReadError::TooBig(so_far + h.payload));
            }
            let total = h.len + h.payload as usize;
            if self.buf.len() < total {
                return Ok(None);
            }
            self.buf.advance(h.len);
            let mut payload = self.buf.split_to(h.payload as usize);
            if self.buf.is_empty() {
                // Release the read buffer (the payload keeps only its part).
                self.buf = BytesMut::new();
            }
            apply_mask(&mut payload, h.mask);
            match h.opcode {
                opcode::CLOSE => return close_frame(&payload).map(Some),
                opcode::PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                opcode::PONG => return Ok(Some(Incoming::Pong)),
                opcode::CONTINUATION => {
                    let Some((op, mut data)) = self.partial.take() else {
                        return Err(ReadError::Protocol("continuation without a message"));
                    };
                    data.extend_from_slice(&payload);
                    if h.fin {
                        return message(op, data).map(Some);
                    }
                    self.partial = Some((op, data));
                }
                op => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol("new message inside a fragmented one"));
                    }
                    if h.fin {
                        return message(op, payload).map(Some);
                    }
                    self.partial = Some((op, payload));
                }
            }
        }
    }
}

fn message(op: u8, data: BytesMut) -> Result<Incoming, ReadError> {
    if op == opcode::TEXT {
        if std::str::from_utf8(&data).is_err() {
            return Err(ReadError::BadUtf8);
        }
        Ok(Incoming::Text(data.freeze()))
    } else {
        Ok(Incoming::Binary(data.freeze()))
    }
}

fn close_frame(p: &[u8]) -> Result<Incoming, ReadError> {
    match p {
        [] => Ok(Incoming::Close(None)),
        [_] => Err(ReadError::Protocol("close payload of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(ReadError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(ReadError::BadUtf8);
            }
            Ok(Incoming::Close(Some(code)))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::put_header;
    use super::super::tests::client;
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, String>> {
        let (mut a, b) = tokio::io::duplex(64);
        let w = tokio::spawn(async move {
            // Written in small pieces: frames arrive split anywhere.
            for c in bytes.chunks(7) {
                if a.write_all(c).await.is_err() {
                    break;
                }
            }
        });
        let mut r = Reader::new(b, max);
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        // The writer may be stuck on a frame the reader refused.
        drop(r);
        let _ = w.await;
        out
    }

    #[tokio::test]
    async fn reads_messages_of_every_length_form() {
        let big = vec![b'x'; 70_000];
        let mid = vec![b'y'; 300];
        let mut bytes = client(true, opcode::TEXT, b"hello");
        bytes.extend(client(true, opcode::BINARY, &mid));
        bytes.extend(client(true, opcode::TEXT, &big));
        bytes.extend(client(true, opcode::PING, b"p"));
        bytes.extend(client(true, opcode::PONG, b""));
        bytes.extend(client(true, opcode::CLOSE, &[0x03, 0xE8, b'b', b'y', b'e']));
        let got = read_all(bytes, 100_000).await;
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Text(Bytes::from_static(b"hello"))),
                Ok(Incoming::Binary(Bytes::from(mid))),
                Ok(Incoming::Text(Bytes::from(big))),
                Ok(Incoming::Ping(Bytes::from_static(b"p"))),
                Ok(Incoming::Pong),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
    }

    #[tokio::test]
    async fn joins_fragments_with_control_frames_between() {
        let mut bytes = client(false, opcode::TEXT, "hé".as_bytes()[..2].as_ref());
        bytes.extend(client(true, opcode::PING, b""));
        bytes.extend(client(false, opcode::CONTINUATION, &"hé".as_bytes()[2..]));
        bytes.extend(client(true, opcode::CONTINUATION, b"!"));
        let got = read_all(bytes, 100).await;
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Ping(Bytes::new())),
                Ok(Incoming::Text(Bytes::from("hé!"))),
            ]
        );
    }

    #[tokio::test]
    async fn refuses_what_rfc_6455_forbids() {
        let unmasked = {
            let mut b = Vec::new();
            put_header(&mut b, opcode::TEXT, 2);
            b.extend_from_slice(b"hi");
            b
        };
        let mut rsv = client(true, opcode::TEXT, b"x");
        rsv[0] |= 0x40;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked, "masked"),
            (rsv, "reserved bits"),
            (client(true, 0x3, b""), "reserved opcode"),
            (client(true, opcode::CONTINUATION, b"x"), "continuation"),
            (client(false, opcode::PING, b""), "fragmented control"),
            (client(true, opcode::PING, &[0u8; 126]), "over 125"),
            (client(true, opcode::CLOSE, &[3]), "one byte"),
            (
                client(true, opcode::CLOSE, &[0x03, 0xED]),
                "invalid close code",
            ),
            (client(true, opcode::TEXT, &[0xff, 0xfe]), "UTF-8"),
            (
                [
                    client(false, opcode::TEXT, b"a"),
                    client(true, opcode::TEXT, b"b"),
                ]
                .concat(),
                "inside a fragmented",
            ),
            (client(true, opcode::TEXT, &[b'a'; 101]), "over the limit"),
            (
                [
                    client(false, opcode::TEXT, &[b'a'; 60]),
                    client(true, opcode::CONTINUATION, &[b'a'; 60]),
                ]
                .concat(),
                "over the limit",
            ),
        ];
        for (bytes, want) in cases {
            let got = read_all(bytes, 100).await;
            let last = got.last().unwrap();
            assert!(
                matches!(last, Err(e) if e.contains(want)),
                "want an error with {want:?}, got {got:?}"
            );
        }
    }

    #[tokio::test]
    async fn too_long_is_refused_from_the_header_alone() {
        // Only the header of a 1 GiB frame arrives: refused at once.
        let mut b = vec![0x81, 0xFF];
        b.extend_from_slice(&(1u64 << 30).to_be_bytes());
        b.extend_from_slice(&[1, 2, 3, 4]);
        let mut r = Reader::new(&b[..], 1 << 16);
        assert!(matches!(r.next().await, Err(ReadError::TooBig(n)) if n == 1 << 30));
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_an_error_and_between_frames_is_not() {
        let whole = client(true, opcode::TEXT, b"abc");
        let mut r = Reader::new(&whole[..], 100);
        assert!(matches!(r.next().await, Ok(Some(Incoming::Text(_)))));
        assert!(matches!(r.next().await, Ok(None)));
        let cut = &whole[..whole.len() - 1];
        let mut r = Reader::new(cut, 100);
        assert!(matches!(r.next().await, Err(ReadError::Io(_))));
    }

    #[tokio::test]
    async fn frames_read_together_come_out_one_by_one_and_idle_holds_no_buffer() {
        let both = [
            client(true, opcode::TEXT, b"one"),
            client(true, opcode::TEXT, b"two"),
        ]
        .concat();
        let mut r = Reader::new(&both[..], 100);
        assert_eq!(
            r.next().await.unwrap(),
            Some(Incoming::Text(Bytes::from("one")))
        );
        assert_eq!(
            r.next().await.unwrap(),
            Some(Incoming::Text(Bytes::from("two")))
        );
        assert_eq!(r.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn a_declared_length_is_not_reserved_before_its_bytes_arrive() {
        // A 60 000-byte frame is declared; 20 bytes of it arrive, in two
        // reads (the second goes to the heap buffer).
        let frame = client(true, opcode::TEXT, &[b'a'; 60_000]);
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut r = Reader::new(b, 1 << 16);
        a.write_all(&frame[..20]).await.unwrap();
        std::future::poll_fn(|cx| r.poll_fill(cx)).await.unwrap();
        assert_eq!(r.decode().unwrap(), None);
        a.write_all(&frame[20..40]).await.unwrap();
        std::future::poll_fn(|cx| r.poll_fill(cx)).await.unwrap();
        assert_eq!(r.decode().unwrap(), None);
        assert!(
            r.buf.capacity() <= 4 * READ_CHUNK,
            "{} bytes reserved for 40 received",
            r.buf.capacity()
        );
        // The rest arrives: the buffer grows with it and the frame is whole.
        a.write_all(&frame[40..]).await.unwrap();
        let m = r.next().await.unwrap();
        assert_eq!(m, Some(Incoming::Text(Bytes::from(vec![b'a'; 60_000]))));
    }
}

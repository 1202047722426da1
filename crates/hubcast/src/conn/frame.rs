//! The server side of RFC 6455 framing, written for the fan-out path.
//!
//! Why not a WebSocket crate: with one, every frame went through `feed` on a
//! `split()` sink (a lock per frame), its header was encoded per frame and
//! connection, and every connection held an 8 KiB read buffer from its first
//! byte to its last, idle or not (see docs/benchmarks.md). Here:
//!
//! - [`Reader`] holds no buffer while nothing is pending: it reads into a
//!   stack buffer and keeps bytes on the heap only while a frame is
//!   incomplete. It checks what RFC 6455 requires of a client's frames
//!   (masking, opcodes, reserved bits, control frame rules, fragmentation,
//!   UTF-8 of text, close codes) and the message size limit before buffering
//!   a payload.
//! - [`Batch`] turns a writer's whole queue into one vectored write: small
//!   frames are copied (header and payload) into one buffer, large payloads
//!   are written from the shared message bytes without a copy.
//!
//! The handshake is done in `http::ws`; no extension is negotiated, so the
//! reserved bits must be zero.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Frame opcodes (RFC 6455 section 5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

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

/// Unmasks (or masks: the same XOR) `data` with `key`, starting at key
/// position 0.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
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
            // A frame is incomplete: read straight after it, as much as
            // the frame still needs (at least a chunk).
            let need = self.needed().max(READ_CHUNK);
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

/// Appends a server frame header (FIN set, unmasked) for `len` payload bytes.
pub fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Payloads up to this size are copied into the batch buffer; larger ones
/// are written from the message's own bytes.
const COPY_MAX: usize = 1024;

/// The longest server frame header (64-bit length form).
const MAX_HEADER: usize = 10;

/// Whether a payload is copied into the batch buffer.
fn copied(payload: &[u8]) -> bool {
    payload.len() <= COPY_MAX
}

/// Most slices handed to one vectored write (the rest go in the next).
const MAX_SLICES: usize = 64;

/// Frames to go out in one vectored write.
#[derive(Debug, Default)]
pub struct Batch {
    /// Headers and small payloads.
    bytes: Vec<u8>,
    /// Large payloads, each after `bytes[..end]`: `(end, payload)`.
    shared: Vec<(usize, Bytes)>,
    /// Bytes of the large payloads.
    shared_len: usize,
    /// Bytes of the batch already written.
    written: usize,
}

impl Drop for Batch {
    fn drop(&mut self) {
        // The buffer goes to the thread's spares for the next batch.
        crate::pool::recycle_buffer(std::mem::take(&mut self.bytes));
    }
}

impl Batch {
    /// A batch for `frames`, its buffer sized once for all of them (no
    /// regrowth while they are added).
    pub fn for_frames<'a>(frames: impl IntoIterator<Item = &'a Bytes>) -> Self {
        let (bytes, shared) = frames.into_iter().fold((0, 0), |(b, s), f| {
            if copied(f) {
                (b + MAX_HEADER + f.len(), s)
            } else {
                (b + MAX_HEADER, s + 1)
            }
        });
        Self {
            // Room for a pong and a close frame too (control frames: a
            // 2-byte header and at most 125 bytes).
            bytes: crate::pool::buffer(bytes + 2 * 127),
            shared: Vec::with_capacity(shared),
            shared_len: 0,
            written: 0,
        }
    }

    /// Adds a text frame.
    pub fn text(&mut self, payload: &Bytes) {
        self.frame(opcode::TEXT, payload);
    }

    /// Adds a frame of any opcode.
    pub fn frame(&mut self, op: u8, payload: &Bytes) {
        put_header(&mut self.bytes, op, payload.len());
        if copied(payload) {
            self.bytes.extend_from_slice(payload);
        } else {
            self.shared.push((self.bytes.len(), payload.clone()));
            self.shared_len += payload.len();
        }
    }

    /// Adds a close frame.
    pub fn close(&mut self, code: u16, reason: &str) {
        // A control frame's payload is at most 125 bytes.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = &reason[..end];
        put_header(&mut self.bytes, opcode::CLOSE, 2 + reason.len());
        self.bytes.extend_from_slice(&code.to_be_bytes());
        self.bytes.extend_from_slice(reason.as_bytes());
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The batch's bytes in order: buffer pieces and shared payloads.
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        let last = self.shared.last().map_or(0, |(end, _)| *end);
        let mut start = 0;
        self.shared
            .iter()
            .flat_map(move |(end, payload)| {
                let piece = &self.bytes[start..*end];
                start = *end;
                [piece, &payload[..]]
            })
            .chain(std::iter::once(&self.bytes[last..]))
            .filter(|s| !s.is_empty())
    }

    /// Writes what is left of the batch, with as few vectored writes as the
    /// socket takes; resumable (it keeps its place), so a caller can try a
    /// write at once and wait only when the socket is full. The slices are
    /// built on the stack: no allocation per write.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.written < self.bytes.len() + self.shared_len {
            if self.shared.is_empty() {
                // The usual batch: one buffer, one plain write.
                let rest = &self.bytes[self.written..];
                let w = ready!(Pin::new(&mut *io).poll_write(cx, rest))?;
                if w == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += w;
                continue;
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut n = 0;
            let mut skip = self.written;
            for seg in self.segments() {
                if skip >= seg.len() {
                    skip -= seg.len();
                    continue;
                }
                slices[n] = IoSlice::new(&seg[skip..]);
                skip = 0;
                n += 1;
                if n == MAX_SLICES {
                    break;
                }
            }
            let w = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?;
            if w == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += w;
        }
        Pin::new(&mut *io).poll_flush(cx)
    }

    /// Writes all that is left (see [`Batch::poll_write`]).
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write(io, cx)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A client frame: masked with a fixed key.
    fn client(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = Vec::new();
        put_header(&mut out, op, payload.len());
        if !fin {
            out[0] &= 0x7F;
        }
        out[1] |= 0x80;
        out.extend_from_slice(&key);
        let mut p = payload.to_vec();
        apply_mask(&mut p, key);
        out.extend_from_slice(&p);
        out
    }

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

    /// A socket that takes at most 7 bytes per write and is full (pending,
    /// waking at once) every other call.
    struct Trickle {
        out: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(7);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_batch_resumes_where_a_short_or_pending_write_left_it() {
        // More shared payloads than one vectored write takes slices, small
        // frames between them, and a socket taking a few bytes at a time.
        let mut batch = Batch::default();
        let mut want = Vec::new();
        for i in 0..(MAX_SLICES + 10) {
            let big = Bytes::from(vec![b'a' + (i % 26) as u8; COPY_MAX + 1 + i]);
            batch.text(&big);
            batch.text(&Bytes::from(format!("small {i}")));
            want.push(big.to_vec());
            want.push(format!("small {i}").into_bytes());
        }
        let mut whole = Vec::new();
        let mut copy = Batch::default();
        for w in &want {
            copy.text(&Bytes::from(w.clone()));
        }
        copy.write_to(&mut whole).await.unwrap();
        let mut io = Trickle {
            out: Vec::new(),
            calls: 0,
        };
        batch.write_to(&mut io).await.unwrap();
        assert_eq!(io.out.len(), whole.len());
        assert!(io.out == whole, "the same bytes, in order");
        // Written: a second call writes nothing more.
        let before = io.calls;
        batch.write_to(&mut io).await.unwrap();
        assert_eq!(io.calls, before);

        // Small frames only: one buffer, resumed the same way.
        let mut small = Batch::default();
        let mut whole = Vec::new();
        for i in 0..50 {
            small.text(&Bytes::from(format!("message {i}")));
        }
        small.close(1001, "bye");
        let mut copy = Batch::default();
        for i in 0..50 {
            copy.text(&Bytes::from(format!("message {i}")));
        }
        copy.close(1001, "bye");
        copy.write_to(&mut whole).await.unwrap();
        let mut io = Trickle {
            out: Vec::new(),
            calls: 0,
        };
        small.write_to(&mut io).await.unwrap();
        assert!(io.out == whole);
    }

    #[tokio::test]
    async fn batch_writes_frames_a_client_reads_back() {
        let big = Bytes::from(vec![b'z'; 5000]);
        let mut batch = Batch::default();
        batch.text(&Bytes::from_static(b"a"));
        batch.text(&big);
        batch.text(&Bytes::from(vec![b'm'; 200]));
        batch.frame(opcode::PING, &Bytes::new());
        batch.close(4000, "slow consumer");
        let mut out = Vec::new();
        batch.write_to(&mut out).await.unwrap();
        // Parse back (server frames are unmasked).
        let mut p = &out[..];
        let mut got = Vec::new();
        while !p.is_empty() {
            let op = p[0] & 0x0F;
            assert_eq!(p[0] & 0x80, 0x80);
            let (len, at) = match p[1] {
                126 => (u16::from_be_bytes([p[2], p[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(p[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            got.push((op, p[at..at + len].to_vec()));
            p = &p[at + len..];
        }
        assert_eq!(got[0], (opcode::TEXT, b"a".to_vec()));
        assert_eq!(got[1], (opcode::TEXT, big.to_vec()));
        assert_eq!(got[2], (opcode::TEXT, vec![b'm'; 200]));
        assert_eq!(got[3], (opcode::PING, vec![]));
        assert_eq!(got[4].0, opcode::CLOSE);
        assert_eq!(&got[4].1[..2], &4000u16.to_be_bytes());
        assert_eq!(&got[4].1[2..], b"slow consumer");
    }

    #[test]
    fn mask_matches_bytewise_xor() {
        let key = [1, 2, 3, 250];
        for n in 0..20 {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut a = data.clone();
            apply_mask(&mut a, key);
            let b: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, x)| x ^ key[i % 4])
                .collect();
            assert_eq!(a, b);
        }
    }
}

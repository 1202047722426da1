//! Writing server frames: [`Batch`], a writer's queue as one vectored
//! write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::{opcode, put_header};

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
pub(crate) struct Batch {
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
    pub(crate) fn for_frames<'a>(frames: impl IntoIterator<Item = &'a Bytes>) -> Self {
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
    pub(crate) fn text(&mut self, payload: &Bytes) {
        self.frame(opcode::TEXT, payload);
    }

    /// Adds a frame of any opcode.
    pub(crate) fn frame(&mut self, op: u8, payload: &Bytes) {
        put_header(&mut self.bytes, op, payload.len());
        if copied(payload) {
            self.bytes.extend_from_slice(payload);
        } else {
            self.shared.push((self.bytes.len(), payload.clone()));
            self.shared_len += payload.len();
        }
    }

    /// Adds a close frame.
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
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
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
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
    #[cfg(test)]
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write(io, cx)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
}

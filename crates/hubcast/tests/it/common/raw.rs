//! A raw WebSocket client for tests that need the wire as written: frames
//! built and read byte by byte, the sending half usable from another task
//! while this one reads.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::Server;

const WAIT: Duration = Duration::from_secs(10);

/// A client frame, masked.
pub(crate) fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![if fin { 0x80 | op } else { op }];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

pub(crate) fn text(v: Value) -> Vec<u8> {
    frame(true, 0x1, v.to_string().as_bytes())
}

pub(crate) const HANDSHAKE: &str = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A raw connection: the handshake, sent together with `first` (frames a
/// client may send right after its request), then the 101 read.
pub(crate) struct Raw {
    r: OwnedReadHalf,
    /// `None` once taken by [`Raw::sender`].
    w: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
}

impl Raw {
    pub(crate) async fn open(s: &Server, first: &[u8]) -> Raw {
        Raw::open_at(s, "/ws", first).await
    }

    /// [`Raw::open`] with another request target (a token in the query).
    pub(crate) async fn open_at(s: &Server, target: &str, first: &[u8]) -> Raw {
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        Raw::handshake(tcp, target, first).await
    }

    /// The handshake over a connected socket.
    pub(crate) async fn handshake(mut tcp: TcpStream, target: &str, first: &[u8]) -> Raw {
        let mut out = HANDSHAKE.replacen("/ws", target, 1).into_bytes();
        out.extend_from_slice(first);
        tcp.write_all(&out).await.unwrap();
        let (r, w) = tcp.into_split();
        let mut raw = Raw {
            r,
            w: Some(w),
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill().await;
        };
        let head = String::from_utf8(raw.buf.drain(..end).collect()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
        raw
    }

    pub(crate) async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(WAIT, self.r.read(&mut chunk))
            .await
            .expect("data in time")
            // A reset after the close (the server did not read all a
            // refused frame) ends the stream like a FIN.
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next server frame: (opcode, payload); `None` at end of stream.
    pub(crate) async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[0] & 0x70, 0, "reserved bits");
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
                let (len, at) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    assert_eq!(self.buf[0] & 0x80, 0x80, "server frames are not fragmented");
                    let op = self.buf[0] & 0x0F;
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((op, payload));
                }
            }
            if self.fill().await == 0 {
                assert!(self.buf.is_empty(), "stream ends inside a frame");
                return None;
            }
        }
    }

    /// The next text frame as JSON (pings skipped).
    pub(crate) async fn json(&mut self) -> Value {
        loop {
            let (op, p) = self.next().await.expect("a frame");
            match op {
                0x1 => return serde_json::from_slice(&p).unwrap(),
                0x9 => {}
                other => panic!("expected text, got opcode {other}: {p:?}"),
            }
        }
    }

    /// Reads to the close frame; its code, then checks the server ends the
    /// TCP connection after the client's reply.
    pub(crate) async fn close_code(&mut self) -> u16 {
        let code = loop {
            match self.next().await {
                Some((0x8, p)) => break u16::from_be_bytes([p[0], p[1]]),
                Some(_) => {}
                None => panic!("closed without a close frame"),
            }
        };
        if let Some(w) = &mut self.w {
            let _ = w.write_all(&frame(true, 0x8, &code.to_be_bytes())).await;
        }
        assert_eq!(self.next().await, None, "nothing after the close frame");
        code
    }

    /// The sending half, for a task that sends while this one reads.
    pub(crate) fn sender(&mut self) -> OwnedWriteHalf {
        self.w.take().expect("the sending half is here")
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        let w = self.w.as_mut().expect("the sending half is here");
        w.write_all(bytes).await.unwrap();
    }
}

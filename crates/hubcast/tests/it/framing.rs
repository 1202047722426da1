//! hubcast's own RFC 6455 framing, seen from a raw TCP client: frames are
//! written and read byte by byte here, so what a WebSocket library would
//! hide (fragments, control frames between them, bytes sent along with the
//! handshake, broken frames, length forms) is on the wire as written.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::Server;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// A client frame, masked.
fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
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

fn text(v: Value) -> Vec<u8> {
    frame(true, 0x1, v.to_string().as_bytes())
}

const HANDSHAKE: &str = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A raw connection: the handshake, sent together with `first` (frames a
/// client may send right after its request), then the 101 read.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn open(s: &Server, first: &[u8]) -> Raw {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let mut out = HANDSHAKE.as_bytes().to_vec();
        out.extend_from_slice(first);
        tcp.write_all(&out).await.unwrap();
        let mut raw = Raw {
            tcp,
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

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
            .await
            .expect("data in time")
            // A reset after the close (the server did not read all a
            // refused frame) ends the stream like a FIN.
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next server frame: (opcode, payload); `None` at end of stream.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
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
    async fn json(&mut self) -> Value {
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
    async fn close_code(&mut self) -> u16 {
        let code = loop {
            match self.next().await {
                Some((0x8, p)) => break u16::from_be_bytes([p[0], p[1]]),
                Some(_) => {}
                None => panic!("closed without a close frame"),
            }
        };
        let _ = self
            .tcp
            .write_all(&frame(true, 0x8, &code.to_be_bytes()))
            .await;
        assert_eq!(self.next().await, None, "nothing after the close frame");
        code
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }
}

#[tokio::test]
async fn frames_sent_with_the_handshake_fragments_and_pings_are_read() {
    let s = Server::default().await;
    let mut other = s.client().await;
    other.join("f").await;
    // A join sent in the same write as the HTTP request.
    let mut c = Raw::open(&s, &text(json!({"type":"join","room":"f","id":1}))).await;
    assert_eq!(c.json().await["type"], "welcome");
    assert_eq!(c.json().await["type"], "joined");
    assert_eq!(c.json().await["type"], "presence");
    // A publish in three fragments with a ping between them.
    let publish = json!({"type":"publish","room":"f","event":"e","data":"héllo","id":2})
        .to_string()
        .into_bytes();
    let mut bytes = frame(false, 0x1, &publish[..10]);
    bytes.extend(frame(true, 0x9, b"are you there"));
    bytes.extend(frame(false, 0x0, &publish[10..31]));
    bytes.extend(frame(true, 0x0, &publish[31..]));
    c.send(&bytes).await;
    assert_eq!(c.next().await, Some((0xA, b"are you there".to_vec())));
    assert_eq!(c.json().await["type"], "ack");
    let m = other.messages("f", 1).await.remove(0);
    assert_eq!(m["data"], "héllo");
    // Binary frames are refused with an error, and the connection goes on.
    c.send(&frame(true, 0x2, b"\x00\x01")).await;
    assert_eq!(c.json().await["type"], "error");
    c.send(&frame(true, 0x8, &1000u16.to_be_bytes())).await;
    assert_eq!(c.close_code().await, 1000);
}

#[tokio::test]
async fn every_length_form_both_ways() {
    let s = Server::start(|c| c.max_message_bytes = 200_000).await;
    let mut sub = Raw::open(&s, &text(json!({"type":"join","room":"big","id":1}))).await;
    for _ in 0..3 {
        sub.json().await;
    }
    let mut pubr = Raw::open(&s, &[]).await;
    pubr.json().await;
    // 7-bit, 16-bit and 64-bit payload lengths in and out.
    for (i, size) in [10usize, 1000, 70_000].into_iter().enumerate() {
        let data = "x".repeat(size);
        pubr.send(&text(
            json!({"type":"publish","room":"big","event":"e","data":data,"id":i}),
        ))
        .await;
        assert_eq!(pubr.json().await["type"], "ack");
        let m = sub.json().await;
        assert_eq!(m["type"], "message");
        assert_eq!(m["data"].as_str().unwrap().len(), size);
    }
}

#[tokio::test]
async fn broken_frames_get_their_close_codes() {
    let s = Server::default().await;
    let unmasked = {
        let mut f = vec![0x81, 2];
        f.extend_from_slice(b"{}");
        f
    };
    let mut rsv = text(json!({"type":"ping"}));
    rsv[0] |= 0x20;
    let over = vec![b' '; 65537];
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", unmasked, 1002),
        ("reserved bit", rsv, 1002),
        ("reserved opcode", frame(true, 0x5, b""), 1002),
        ("stray continuation", frame(true, 0x0, b"{}"), 1002),
        (
            "control frame over 125 bytes",
            frame(true, 0x9, &[0; 126]),
            1002,
        ),
        (
            "bad close code",
            frame(true, 0x8, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "text not UTF-8",
            frame(true, 0x1, b"{\"type\":\"\xff\"}"),
            1007,
        ),
        ("over max_message_bytes", frame(true, 0x1, &over), 1009),
    ];
    for (what, bytes, want) in cases {
        let mut c = Raw::open(&s, &[]).await;
        assert_eq!(c.json().await["type"], "welcome");
        c.send(&bytes).await;
        assert_eq!(c.close_code().await, want, "{what}");
    }
    // Other connections are untouched.
    let mut ok = s.client().await;
    ok.join("after").await;
}

/// An upgrade request over HTTP/1.0 is refused with 400 (RFC 6455 needs
/// HTTP/1.1): no 101 for a peer that closes after the response.
#[tokio::test]
async fn an_http_1_0_upgrade_is_a_400() {
    let s = Server::default().await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(HANDSHAKE.replacen("HTTP/1.1", "HTTP/1.0", 1).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a response");
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.0 400") || head.starts_with("HTTP/1.1 400"),
        "{head}"
    );
    s.stop().await;
}

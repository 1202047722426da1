//! hubcast's own RFC 6455 framing, seen from a raw TCP client: frames are
//! written and read byte by byte here, so what a WebSocket library would
//! hide (fragments, control frames between them, bytes sent along with the
//! handshake, broken frames, length forms) is on the wire as written.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::Server;
use common::raw::{HANDSHAKE, Raw, frame, text};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

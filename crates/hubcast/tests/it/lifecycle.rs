//! Close codes and the server's life (PROTOCOL.md section 4): slow
//! consumers (4000), heartbeat timeouts (4002), graceful shutdown (1001),
//! and the `hubcast` binary itself (signals, config errors).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

#[allow(unused_imports)]
use common::Engine;
use common::Server;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

both_engines! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_consumer_is_closed_with_4000_and_nobody_else_waits(engine) {
        let s = Server::start_on(engine, |c| c.queue_size = 16).await;
        let mut slow = s.client().await;
        slow.join("firehose").await;
        let mut fast = s.client().await;
        fast.join("firehose").await;
        let _ = slow.expect("presence").await; // fast's arrival
        let mut publisher = s.client().await;

        // 600 x 60 KiB = 36 MiB: far more than the socket buffers hold, so the
        // slow client's queue overflows while it reads nothing.
        let payload = "x".repeat(60 * 1024);
        let fast_reader = tokio::spawn(async move {
            let mut next = 1;
            while next <= 600 {
                let v = fast.recv().await;
                if v["type"] == "message" {
                    assert_eq!(v["offset"], next, "the fast subscriber misses nothing");
                    next += 1;
                }
            }
            fast
        });
        // The slow client reads again after 300 messages (18 MiB, more than
        // the socket buffers hold, so the server has decided to close it by
        // then), as a client that was only slow would: it must get an
        // unbroken run of messages, then 4000. (A client that reads nothing
        // for the close grace after the decision is dropped without its
        // close frame: not this case.)
        let slow_user = slow.user();
        let (overflowed, reads) = tokio::sync::oneshot::channel::<()>();
        let slow_reader = tokio::spawn(async move {
            let _ = reads.await;
            slow.until_close().await
        });
        // Published with up to 8 publishes in flight (the acks stay well
        // under the publisher's own queue of 16): the server decides on
        // the close early, and the slow client must start reading within
        // the slow-close grace after that decision, however slow a loaded
        // machine makes each publish's round trip.
        const WINDOW: u64 = 8;
        let mut overflowed = Some(overflowed);
        let mut acked = 0u64;
        for i in 1..=600u64 + WINDOW {
            if i <= 600 {
                publisher
                    .send(json!({"type":"publish","id":i,"room":"firehose","event":"big","data":payload}))
                    .await;
            }
            if i > WINDOW {
                let ack = publisher.expect("ack").await;
                acked += 1;
                assert_eq!(ack["id"], acked);
                assert_eq!(
                    ack["offset"], acked,
                    "the publisher is never refused or blocked"
                );
                if acked == 300 {
                    overflowed.take().map(|t| t.send(()));
                }
            }
        }
        assert_eq!(acked, 600);
        let (code, reason, frames) = slow_reader.await.unwrap();
        assert_eq!(code, Some(4000), "reason {reason:?}");
        // The dashboard's recent events list it.
        let ev: serde_json::Value = common::wait_until(|| async {
            let r: serde_json::Value = reqwest::get(s.http("/api/events")).await.ok()?.json().await.ok()?;
            r["events"].as_array()?.iter().find(|e| e["code"] == "slow_consumer").cloned()
        })
        .await;
        assert_eq!(ev["closeCode"], 4000);
        assert_eq!(ev["user"], slow_user);
        let _fast = tokio::time::timeout(Duration::from_secs(60), fast_reader)
            .await
            .unwrap()
            .unwrap();
        let offsets: Vec<u64> = frames
            .iter()
            .filter(|f| f["type"] == "message")
            .map(|f| f["offset"].as_u64().unwrap())
            .collect();
        assert!(offsets.len() < 600, "it could not have kept up");
        for w in offsets.windows(2) {
            assert_eq!(w[1], w[0] + 1, "no silent gap before the close");
        }
        // It recovers everything it missed on a new connection.
        let last = offsets.last().copied().unwrap_or(0);
        let mut again = s.client().await;
        let (j, _) = again
            .request(json!({"type":"join","room":"firehose","since":last}))
            .await;
        assert_eq!(j["recovered"], true, "{j}");
        let mut next = last + 1;
        while next <= 600 {
            let v = again.recv().await;
            if v["type"] == "message" {
                assert_eq!(v["offset"], next);
                next += 1;
            }
        }
        s.stop().await;
    }
}

/// A raw WebSocket client that never writes after the handshake (so never
/// answers a ping), and reads the server's frames from the bytes.
async fn raw_silent_client(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// Server frames (unmasked) in `bytes`: (opcode, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let op = bytes[0] & 0x0f;
        let (len, hdr) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        if bytes.len() < hdr + len {
            break;
        }
        out.push((op, bytes[hdr..hdr + len].to_vec()));
        bytes = &bytes[hdr + len..];
    }
    out
}

#[tokio::test(start_paused = true)]
async fn silent_client_is_closed_with_4002_after_twice_the_heartbeat_plus_5s() {
    use tokio::io::AsyncReadExt;
    let s = Server::start(|c| c.heartbeat = 10).await;
    let mut raw = raw_silent_client(s.addr).await;
    let t0 = tokio::time::Instant::now();
    // A client that answers pings (tungstenite does when it reads) stays.
    let mut alive = s.client().await;
    let keep = tokio::spawn(async move {
        for _ in 0..40 {
            alive.send(json!({"type":"ping"})).await;
            let _ = alive.expect("pong").await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        alive
    });
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), raw.read_to_end(&mut bytes))
        .await
        .expect("the server closes a silent client")
        .unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(25),
        "closed after {waited:?}, before 2 x 10 + 5 s"
    );
    assert!(waited < Duration::from_secs(30), "closed after {waited:?}");
    let frames = frames(&bytes);
    assert!(
        frames.iter().filter(|(op, _)| *op == 9).count() >= 2,
        "pinged every 10 s: {frames:?}"
    );
    let close = frames
        .iter()
        .find(|(op, _)| *op == 8)
        .expect("a close frame");
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 4002);
    let alive = keep.await.unwrap();
    drop(alive);
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn server_pings_every_heartbeat() {
    let s = Server::start(|c| c.heartbeat = 5).await;
    let mut c = s.client().await;
    let start = tokio::time::Instant::now();
    let mut pings = 0;
    while pings < 3 {
        match tokio::time::timeout(Duration::from_secs(30), c.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?}"),
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(17),
        "{took:?}"
    );
    s.stop().await;
}

both_engines! {
    #[tokio::test]
    async fn shutdown_closes_every_connection_with_1001(engine) {
        let s = Server::on(engine).await;
        let mut a = s.client().await;
        let mut b = s.client().await;
        b.join("r").await;
        let token = s.shutdown.clone();
        let stopping = tokio::spawn(s.stop());
        let (code_a, _, _) = a.until_close().await;
        let (code_b, _, _) = b.until_close().await;
        assert_eq!(code_a, Some(1001));
        assert_eq!(code_b, Some(1001));
        tokio::time::timeout(Duration::from_secs(10), stopping)
            .await
            .unwrap()
            .unwrap();
        assert!(token.is_cancelled());
    }
}

fn hubcast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hubcast"))
}

#[tokio::test]
async fn binary_serves_and_exits_0_on_sigterm_after_closing_with_1001() {
    let mut child = hubcast()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HUBCAST_HEARTBEAT", "30")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = common::listening_port(&mut child).await;
    let url = format!("ws://127.0.0.1:{port}/ws");
    common::wait_for(port, "/healthz").await;
    let mut c = common::Client::connect(&url).await;
    assert_eq!(c.welcome["heartbeat"], 30, "environment variables are read");
    // A message body never reaches the logs at info level.
    c.call(json!({"type":"publish","room":"r","event":"e","data":"BODY-7f3a9c-SECRET"}))
        .await;
    let t0 = std::time::Instant::now();
    common::send_term(&child);
    let (code, _, _) = c.until_close().await;
    assert_eq!(code, Some(1001));
    let status = common::wait_stderr(child).await;
    assert!(status.0.success(), "exit status {:?}", status.0);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "exits within a few seconds"
    );
    let logs = status.1;
    assert!(logs.contains("connection opened"), "{logs}");
    assert!(logs.contains("connection closed"), "{logs}");
    assert!(logs.contains("duration_ms"), "{logs}");
    assert!(
        !logs.contains("BODY-7f3a9c-SECRET"),
        "message body in logs:\n{logs}"
    );
}

both_engines! {
    #[tokio::test]
    async fn client_close_is_answered_with_1000(engine) {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let s = Server::on(engine).await;
        let mut c = s.client().await;
        c.join("r").await;
        c.ws.send(Message::Close(Some(CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        })))
        .await
        .unwrap();
        let (code, _, _) = c.until_close().await;
        assert_eq!(code, Some(1000));
        // Its presence is gone (cleanup runs right after the close handshake).
        let mut d = s.client().await;
        let mut members = json!(null);
        for _ in 0..100 {
            members = d.call(json!({"type":"presence","room":"r"})).await["members"].clone();
            if members == json!([]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(members, json!([]));
        s.stop().await;
    }
}

#[test]
fn bad_config_fails_at_start_naming_the_key() {
    let out = hubcast()
        .args(["serve", "--heartbeat", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("heartbeat"), "{err}");

    let out = hubcast()
        .args(["serve"])
        .env("HUBCAST_QUEUE_SIZE", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("queue-size") || err.contains("queue_size"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("hubcast-bin-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "history_ttl = -3\n").unwrap();
    let out = hubcast()
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("history_ttl"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn serve_help_documents_every_setting() {
    let out = hubcast().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--heartbeat",
        "--max-message-bytes",
        "--history-size",
        "--history-ttl",
        "--queue-size",
        "--max-rooms-per-conn",
        "--allowed-origins",
        "--node-id",
        "--log-format",
        "--config",
    ] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
    }
    assert!(help.contains("[default: 65536]"), "{help}");
}

//! Every close the server decides reaches a client that is still sending.
//!
//! A server that closes a socket with unread input makes the kernel reset
//! it, and the reset destroys what the client has not read yet: its close
//! frame and the frames queued before it. Each case here has the client go
//! on sending (more frames than the server reads while closing, then one a
//! millisecond) and read only after that, as a client busy writing does,
//! and it must read every frame queued before the close, then the close
//! with its code. Each case runs many times: a reset is a race the client
//! loses most of the time, not every time.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Server;
use common::raw::{Raw, frame, text};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

const RUNS: usize = 100;
/// Frames sent at once before the client reads: more than the server reads
/// from a client that is being closed.
const BURST: usize = 80;
/// Pings sent one a millisecond before the client reads.
const PACED: usize = 20;
/// Messages published to the client before its close.
const QUEUED: u64 = 5;

/// A client that sends `prelude` once `go` fires, then [`BURST`] pings at
/// once, then a ping every millisecond until `stop` or until the server no
/// longer takes them; `burst_sent` is told after the first [`PACED`] of
/// those, when the server has had time to close on its side.
struct Sender {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    fn start(
        mut w: OwnedWriteHalf,
        go: oneshot::Receiver<()>,
        prelude: Vec<u8>,
        burst_sent: oneshot::Sender<()>,
    ) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let _ = go.await;
            let ping = frame(true, 0x9, b"still here");
            let mut burst = prelude;
            for _ in 0..BURST {
                burst.extend_from_slice(&ping);
            }
            let mut burst_sent = Some(burst_sent);
            let mut paced = 0;
            let mut sending = w.write_all(&burst).await.is_ok();
            while sending && !stopped.load(Ordering::Relaxed) {
                paced += 1;
                if paced == PACED {
                    burst_sent.take().map(|t| t.send(()));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                sending = w.write_all(&ping).await.is_ok();
            }
            burst_sent.take().map(|t| t.send(()));
        });
        Sender { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the sender stops")
            .unwrap();
    }
}

/// Reads to the close frame: the offsets of the messages of `room` and
/// the other text frames before it, and the close code. A stream that ends
/// without a close frame (a reset) fails the test.
async fn read_to_close(c: &mut Raw, room: &str) -> (Vec<u64>, Vec<Value>, u16) {
    let mut offsets = Vec::new();
    let mut others = Vec::new();
    loop {
        match c.next().await {
            Some((0x8, p)) => {
                assert!(p.len() >= 2, "a close frame with a code");
                return (offsets, others, u16::from_be_bytes([p[0], p[1]]));
            }
            Some((0x1, p)) => {
                let v: Value = serde_json::from_slice(&p).unwrap();
                if v["type"] == "message" && v["room"] == room {
                    offsets.push(v["offset"].as_u64().unwrap());
                } else {
                    others.push(v);
                }
            }
            Some(_) => {}
            None => panic!("the connection ended without a close frame (reset)"),
        }
    }
}

/// A connection whose receive buffer is small, so that what the server
/// sends waits in the server's socket until the client reads: what a reset
/// throws away.
async fn small_window(s: &Server, target: &str, first: &[u8]) -> Raw {
    small_window_at(s.addr, target, first).await
}

async fn small_window_at(addr: std::net::SocketAddr, target: &str, first: &[u8]) -> Raw {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    Raw::handshake(tcp, target, first).await
}

/// A client in `room` with [`QUEUED`] messages published to it (more than
/// its receive buffer holds) and not read yet.
async fn member_with_queued(s: &Server, target: &str, room: &str) -> Raw {
    let mut c = small_window(s, target, &text(json!({"type":"join","room":room,"id":1}))).await;
    assert_eq!(c.json().await["type"], "welcome");
    assert_eq!(c.json().await["type"], "joined");
    let data = "q".repeat(8 * 1024);
    for _ in 0..QUEUED {
        let ack = s.api_publish(room, json!(data)).await;
        assert!(ack["offset"].is_u64(), "{ack}");
    }
    c
}

/// One run: the client sends `prelude` (or, with `trigger`, waits for it
/// to close the connection from the server's side), keeps sending, then
/// reads. Returns the frames other than the room's messages.
async fn one_run(
    s: &Server,
    target: &str,
    room: &str,
    prelude: Vec<u8>,
    trigger: impl std::future::Future<Output = ()>,
    want: u16,
) -> Vec<Value> {
    one_run_reading_at(s, target, room, prelude, trigger, want, None).await
}

/// [`one_run`] for a close the server decides on a timer: the client reads
/// nothing before `read_at` (after the close), so the queued messages are
/// still in the server's socket when it closes, as a reset would lose them.
async fn one_run_reading_at(
    s: &Server,
    target: &str,
    room: &str,
    prelude: Vec<u8>,
    trigger: impl std::future::Future<Output = ()>,
    want: u16,
    read_at: Option<tokio::time::Instant>,
) -> Vec<Value> {
    let mut c = member_with_queued(s, target, room).await;
    let (go, went) = oneshot::channel();
    let (sent, burst_sent) = oneshot::channel();
    let sender = Sender::start(c.sender(), went, prelude, sent);
    trigger.await;
    let _ = go.send(());
    let _ = burst_sent.await;
    if let Some(at) = read_at {
        tokio::time::sleep_until(at).await;
    }
    let (offsets, others, code) = read_to_close(&mut c, room).await;
    sender.stop().await;
    assert_eq!(code, want, "close code; frames before it: {others:?}");
    assert_eq!(
        offsets,
        (1..=QUEUED).collect::<Vec<_>>(),
        "every message queued before the close arrives before it"
    );
    others
}

async fn runs(s: &Server, prelude: impl Fn() -> Vec<u8>, want: u16) {
    for run in 0..RUNS {
        let room = format!("closing-{want}-{run}");
        one_run(s, "/ws", &room, prelude(), async {}, want).await;
    }
}

fn quiet(c: &mut hubcast::config::Config) {
    c.handshakes_per_ip_per_sec = 0;
}

#[tokio::test]
async fn a_protocol_error_close_arrives_1002() {
    let s = Server::start(quiet).await;
    // An unmasked client frame.
    runs(&s, || vec![0x81, 2, b'{', b'}'], 1002).await;
}

#[tokio::test]
async fn a_bad_utf8_close_arrives_1007() {
    let s = Server::start(quiet).await;
    runs(&s, || frame(true, 0x1, b"{\"type\":\"\xff\"}"), 1007).await;
}

/// A 1 MB frame against the 64 KiB limit: the server reads its header,
/// closes with 1009 and discards the rest.
#[tokio::test]
async fn a_too_large_frame_close_arrives_1009() {
    let s = Server::start(quiet).await;
    let big = frame(true, 0x1, &vec![b' '; 1_000_000]);
    runs(&s, || big.clone(), 1009).await;
}

/// 400 publishes as fast as the client can against 20/s with a burst of
/// 40: `rate_limited` errors, then 4003, all of it read.
#[tokio::test]
async fn a_flooding_close_arrives_4003_after_its_errors() {
    let s = Server::start(|c| {
        quiet(c);
        c.rate_limit_per_conn = 20;
        c.rate_limit_burst = 40;
    })
    .await;
    for run in 0..RUNS {
        let room = format!("flood-{run}");
        let mut flood = Vec::new();
        for i in 0..400 {
            flood.extend(text(
                json!({"type":"publish","room":room,"event":"e","data":i,"id":i}),
            ));
        }
        let others = one_run(&s, "/ws", &room, flood, async {}, 4003).await;
        assert!(
            others
                .iter()
                .any(|v| v["type"] == "error" && v["code"] == "rate_limited"),
            "the refusals before the close arrive too: {others:?}"
        );
    }
}

/// Shutdown closes with 1001 after the messages queued before it.
#[tokio::test]
async fn a_shutdown_close_arrives_1001() {
    for run in 0..RUNS / 4 {
        let s = Server::start(quiet).await;
        let room = format!("shutdown-{run}");
        let stop = s.shutdown.clone();
        one_run(&s, "/ws", &room, Vec::new(), async { stop.cancel() }, 1001).await;
        s.stop().await;
    }
}

/// Tokens expiring together: each connection gets its 4001 while it
/// sends.
#[tokio::test]
async fn a_token_expiry_close_arrives_4001() {
    const SECRET: &str = "a-secret-for-the-closing-tests-0123456789";
    let s = Arc::new(
        Server::start(|c| {
            quiet(c);
            c.jwt_secret = Some(SECRET.into());
        })
        .await,
    );
    // Far enough ahead for every connection to be open with its queued
    // messages before it (on a loaded machine too).
    let exp = hubcast::unix_ms() as u64 / 1000 + 8;
    let read_at = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    for run in 0..RUNS / 2 {
        let s = s.clone();
        all.push(tokio::spawn(async move {
            let token = common::hs256(SECRET, &json!({"sub":format!("u{run}"),"exp":exp}));
            let room = format!("expiry-{run}");
            // The close comes at `exp`; the client sends on and reads
            // only after it.
            one_run_reading_at(
                &s,
                &format!("/ws?token={token}"),
                &room,
                Vec::new(),
                async {},
                4001,
                Some(read_at),
            )
            .await;
        }));
    }
    for t in all {
        t.await.unwrap();
    }
}

/// A slow consumer that keeps sending pings while it does not read gets
/// the messages up to its close, then 4000.
#[tokio::test]
async fn a_slow_consumer_close_arrives_4000() {
    let s = Server::start(|c| {
        quiet(c);
        c.queue_size = 16;
    })
    .await;
    let mut publisher = s.client().await;
    let payload = "x".repeat(16 * 1024);
    for run in 0..10 {
        let room = format!("slow-{run}");
        let mut c = small_window(&s, "/ws", &text(json!({"type":"join","room":room,"id":1}))).await;
        assert_eq!(c.json().await["type"], "welcome");
        assert_eq!(c.json().await["type"], "joined");
        let (go, went) = oneshot::channel();
        let (sent, burst_sent) = oneshot::channel();
        let sender = Sender::start(c.sender(), went, Vec::new(), sent);
        let _ = go.send(());
        let _ = burst_sent.await;
        for _ in 0..400 {
            publisher.publish(&room, json!(payload)).await;
        }
        let (offsets, others, code) = read_to_close(&mut c, &room).await;
        sender.stop().await;
        assert_eq!(code, 4000, "{others:?}");
        assert!(offsets.len() < 400, "it could not have kept up");
        for (i, o) in offsets.iter().enumerate() {
            assert_eq!(*o, i as u64 + 1, "no gap before the close");
        }
    }
}

/// An HTTP error answered before the request body was read (413 for a
/// body over the limit) reaches a client still sending that body.
#[tokio::test]
async fn an_http_error_before_the_body_was_read_arrives() {
    let s = Server::start(quiet).await;
    for _ in 0..RUNS / 4 {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let total = 8 * 1024 * 1024;
        let head = format!(
            "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {total}\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        // Part of the body, more than the server reads before refusing it.
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..8 {
            if tcp.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
                .await
                .expect("an answer in time")
            {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => panic!("the answer was reset ({e}) after {answer:?}"),
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("too_large"), "{answer}");
    }
}

/// The server API's disconnect (4005) and block (4004) reach a client
/// that keeps sending, after the messages queued before them.
#[tokio::test]
async fn user_control_closes_arrive_4005_and_4004() {
    const SECRET: &str = "a-secret-for-the-closing-tests-0123456789";
    let s = Server::start(|c| {
        quiet(c);
        c.jwt_secret = Some(SECRET.into());
    })
    .await;
    let exp = hubcast::unix_ms() as u64 / 1000 + 3600;
    let http = reqwest::Client::new();
    for run in 0..RUNS / 4 {
        for want in [4005u16, 4004] {
            let user = format!("u{run}-{want}");
            let token = common::hs256(SECRET, &json!({"sub":user,"exp":exp}));
            let room = format!("control-{want}-{run}");
            let trigger = async {
                let sent = if want == 4005 {
                    http.post(s.http("/api/disconnect"))
                        .json(&json!({"user":user}))
                        .send()
                        .await
                } else {
                    http.put(s.http(&format!("/api/users/{user}/block")))
                        .send()
                        .await
                };
                assert_eq!(sent.unwrap().status(), 200);
            };
            one_run(
                &s,
                &format!("/ws?token={token}"),
                &room,
                Vec::new(),
                trigger,
                want,
            )
            .await;
        }
    }
}

/// The head of a masked binary frame of 1 MiB: what the client sends after
/// it is that frame's payload, so the server sees bytes but no frame.
fn endless_frame() -> Vec<u8> {
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 20).to_be_bytes());
    head.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    head
}

/// A client sending all the time inside one frame that never ends: no
/// frame arrives for `2 * heartbeat + 5` s, so it is closed with 4002, and
/// it reads that close, once it reads, after the messages queued before
/// it. Runs in two waves of concurrent clients (each waits 7 s for its
/// close).
#[tokio::test]
async fn a_heartbeat_timeout_close_arrives_4002() {
    let s = Arc::new(
        Server::start(|c| {
            quiet(c);
            c.heartbeat = 1;
            c.max_message_bytes = 2 << 20;
        })
        .await,
    );
    for wave in 0..2 {
        // The last frame of each arrives within a second or so (its
        // join); the close 7 s after it.
        let read_at = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut all = Vec::new();
        for run in 0..RUNS / 2 {
            let s = s.clone();
            all.push(tokio::spawn(async move {
                let room = format!("silent-{wave}-{run}");
                let prelude = endless_frame();
                one_run_reading_at(&s, "/ws", &room, prelude, async {}, 4002, Some(read_at)).await;
            }));
        }
        for t in all {
            t.await.unwrap();
        }
    }
}

/// A connection the engine cannot register (the engine is down) is closed
/// with 1011 right after its `welcome`; a client sending meanwhile reads
/// both.
#[tokio::test]
async fn a_broker_failure_close_arrives_1011() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut config = hubcast::config::Config::default();
    quiet(&mut config);
    let server = tokio::spawn(hubcast::run_with_broker(
        config,
        listener,
        shutdown.clone(),
        crate::broker_failure::Flaky::new(true),
    ));
    for run in 0..RUNS {
        let join = text(json!({"type":"join","room":format!("down-{run}"),"id":1}));
        let mut c = small_window_at(addr, "/ws", &join).await;
        let (go, went) = oneshot::channel();
        let (sent, burst_sent) = oneshot::channel();
        let sender = Sender::start(c.sender(), went, Vec::new(), sent);
        let _ = go.send(());
        let _ = burst_sent.await;
        let (offsets, others, code) = read_to_close(&mut c, "none").await;
        sender.stop().await;
        assert_eq!(code, 1011, "close code; frames before it: {others:?}");
        assert!(offsets.is_empty());
        assert_eq!(others.len(), 1, "{others:?}");
        assert_eq!(others[0]["type"], "welcome", "{others:?}");
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

//! The driver's timers on tokio's paused clock: each deadline fires at its
//! instant (the clock jumps to it), not on the next tick of a poll. A
//! session runs over an in-memory stream whose other end plays the server
//! with hand-written WebSocket frames.

use std::time::Duration;

use hubcast_protocol::server::read::Head;
use hubcast_protocol::{ClientFrame, ErrorCode, PublishFrame, close, encode, error_frame, out};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_websockets::ClientBuilder;

use super::Driver;
use crate::client::{Cmd, Outgoing, Target};
use crate::error::Error;
use crate::events::{Event, State};
use crate::options::Options;
use crate::raw::Ws;

fn driver(opts: Options) -> (Driver, mpsc::UnboundedSender<Cmd>) {
    let (d, cmds, _) = driver_with_events(opts);
    (d, cmds)
}

fn driver_with_events(
    opts: Options,
) -> (
    Driver,
    mpsc::UnboundedSender<Cmd>,
    mpsc::UnboundedReceiver<Event>,
) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Event>();
    let (state_tx, _) = watch::channel(State::Connecting);
    let (user_tx, _) = watch::channel(None);
    let d = Driver::new(
        "ws://127.0.0.1:9/ws",
        opts,
        cmd_rx,
        ev_tx,
        state_tx,
        user_tx,
    );
    (d, cmd_tx, ev_rx)
}

fn publish(room: &str, msg_id: &str) -> Outgoing {
    Outgoing {
        target: Target::Room {
            room: room.into(),
            echo: false,
        },
        event: "e".into(),
        data: Value::Null,
        msg_id: msg_id.into(),
    }
}

/// A client connection and the server's end of it.
fn connection() -> (Ws<DuplexStream>, DuplexStream) {
    let (client, server) = tokio::io::duplex(1 << 16);
    (Ws(ClientBuilder::new().take_over(client)), server)
}

/// Writes one unmasked text frame, as a server does.
async fn write_text(io: &mut DuplexStream, text: &[u8]) {
    let mut f = vec![0x81];
    match u16::try_from(text.len()) {
        Ok(n) if n < 126 => f.push(n as u8),
        Ok(n) => {
            f.push(126);
            f.extend(n.to_be_bytes());
        }
        Err(_) => panic!("test frames are small"),
    }
    f.extend_from_slice(text);
    io.write_all(&f).await.unwrap();
}

/// Reads one masked client frame's payload; `None` once the client is gone
/// or closes.
async fn read_frame(io: &mut DuplexStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 2];
    io.read_exact(&mut h).await.ok()?;
    let len = match h[1] & 0x7f {
        126 => usize::from(io.read_u16().await.ok()?),
        127 => usize::try_from(io.read_u64().await.ok()?).ok()?,
        n => usize::from(n),
    };
    let mut mask = [0u8; 4];
    io.read_exact(&mut mask).await.ok()?;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.ok()?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    (h[0] & 0x0f == 1).then_some(payload)
}

fn welcome(user: &str) -> bytes::Bytes {
    encode(&out::Welcome {
        ty: "welcome",
        protocol: 1,
        conn_id: "c1",
        user,
        name: user,
        node: "n1",
        heartbeat: 25,
        max_message_bytes: 65536,
    })
}

fn ty(frame: &[u8]) -> String {
    Head::parse(frame)
        .and_then(|h| h.ty())
        .unwrap_or_default()
        .to_string()
}

/// The server's side of a session's start for user `ada`: the welcome,
/// then the personal room's join answered.
async fn open_personal_room(server: &mut DuplexStream) {
    write_text(server, &welcome("ada")).await;
    let (id, room) = join_of(&read_frame(server).await.unwrap());
    assert_eq!(room, "@ada");
    write_text(server, &joined("@ada", Some(&id))).await;
}

/// A client frame, which must be a `join`: its id and room.
fn join_of(frame: &[u8]) -> (Box<RawValue>, String) {
    match hubcast_protocol::parse_client_frame(frame) {
        Ok((Some(id), ClientFrame::Join { room, .. })) => (id, room.into_owned()),
        _ => panic!("not a join: {}", String::from_utf8_lossy(frame)),
    }
}

/// The `joined` reply to the join `id` of `room` (none: a join the server
/// made), at offset 0 of epoch `e1`, no members.
fn joined(room: &str, id: Option<&RawValue>) -> bytes::Bytes {
    encode(&out::Joined {
        ty: "joined",
        id,
        room,
        offset: 0,
        epoch: "e1",
        recovered: None,
        members: &[],
        total: 0,
    })
}

#[tokio::test(start_paused = true)]
async fn a_queued_publish_times_out_at_its_deadline_while_disconnected() {
    let (mut d, _cmds) = driver(Options::default());
    let start = Instant::now();
    let (tx, rx) = oneshot::channel();
    // Not a multiple of the old 100 ms tick: it would have answered late.
    d.command(
        Cmd::Publish(publish("r", "m1"), Duration::from_millis(5050), tx),
        false,
    );
    let waited = async {
        let r = rx.await;
        (r, start.elapsed())
    };
    let backoff_end = start + Duration::from_secs(60);
    let ((r, at), ()) = tokio::join!(waited, d.idle(Some(backoff_end)));
    assert_eq!(at, Duration::from_millis(5050));
    assert!(
        matches!(r, Ok(Err(Error::Timeout(ref m))) if m.contains("m1")),
        "{r:?}"
    );
    assert_eq!(
        Instant::now(),
        backoff_end,
        "idle ends when the backoff does"
    );
    assert!(d.outbox.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_new_token_after_4001_ends_the_wait_at_once() {
    let (mut d, cmds) = driver(Options::default());
    d.token_expired = true;
    let start = Instant::now();
    let later = async {
        tokio::time::sleep(Duration::from_millis(1234)).await;
        let _ = cmds.send(Cmd::Token("fresh".into()));
    };
    tokio::join!(later, d.idle(None));
    assert_eq!(start.elapsed(), Duration::from_millis(1234));
    assert!(!d.token_expired);
    assert_eq!(d.opts.token.as_deref(), Some("fresh"));
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_ping_ends_the_connection_after_ping_timeout() {
    let opts = Options {
        ping_interval: Duration::from_secs(20),
        ping_timeout: Duration::from_secs(10),
        stable_after: Duration::from_secs(10),
        ..Options::default()
    };
    let (mut d, _cmds) = driver(opts);
    d.attempt = 3;
    let (ws, mut server) = connection();
    let start = Instant::now();
    let server_side = async {
        write_text(&mut server, &welcome("ada")).await;
        let mut seen = Vec::new();
        while let Some(f) = read_frame(&mut server).await {
            seen.push((ty(&f), start.elapsed()));
        }
        seen
    };
    let (seen, end) = tokio::join!(server_side, d.session(ws));
    assert_eq!(end.code, Some(close::ABNORMAL));
    assert_eq!(end.reason, "no reply to ping");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(
        seen,
        [
            ("join".to_string(), Duration::ZERO),
            ("ping".to_string(), Duration::from_secs(20)),
        ]
    );
    assert_eq!(
        d.attempt, 0,
        "a connection up for stable_after resets the backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_publish_is_retried_after_the_retry_delay_with_its_msg_id() {
    retried_after_the_retry_delay_with_its_msg_id(ErrorCode::Unavailable).await;
}

/// `timeout`: the server does not know whether the message went out; the
/// retry carries the same msgId, which the server acks once.
#[tokio::test(start_paused = true)]
async fn a_timed_out_publish_is_retried_after_the_retry_delay_with_its_msg_id() {
    retried_after_the_retry_delay_with_its_msg_id(ErrorCode::Timeout).await;
}

async fn retried_after_the_retry_delay_with_its_msg_id(code: ErrorCode) {
    let opts = Options {
        retry_delay: Duration::from_secs(1),
        ..Options::default()
    };
    let (mut d, cmds) = driver(opts);
    let (ws, mut server) = connection();
    let (tx, rx) = oneshot::channel();
    let _ = cmds.send(Cmd::Publish(publish("r", "m7"), Duration::ZERO, tx));
    let start = Instant::now();
    let server_side = async {
        write_text(&mut server, &welcome("ada")).await;
        let mut attempts = Vec::new();
        while attempts.len() < 2 {
            let Some(f) = read_frame(&mut server).await else {
                break;
            };
            let Ok((Some(id), ClientFrame::Publish(PublishFrame { message, .. }))) =
                hubcast_protocol::parse_client_frame(&f)
            else {
                continue;
            };
            attempts.push((message.msg_id.map(|m| m.into_owned()), start.elapsed()));
            let reply = if attempts.len() == 1 {
                if code == ErrorCode::Timeout {
                    hubcast_protocol::timeout_frame(Some(&id), "m7", "engine slow")
                } else {
                    error_frame(Some(&id), code, "engine down")
                }
            } else {
                encode(&out::Ack {
                    ty: "ack",
                    id: Some(&id),
                    msg_id: "m7",
                    room: "r",
                    offset: 1,
                    epoch: "e1",
                    duplicate: false,
                })
            };
            write_text(&mut server, &reply).await;
        }
        let ack = rx.await;
        drop(server);
        (attempts, ack)
    };
    let ((attempts, ack), end) = tokio::join!(server_side, d.session(ws));
    assert_eq!(end.code, Some(close::ABNORMAL));
    let ack = ack.unwrap().unwrap();
    assert_eq!((ack.msg_id.as_str(), ack.offset), ("m7", 1));
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0], (Some("m7".into()), Duration::ZERO));
    assert_eq!(attempts[1].0.as_deref(), Some("m7"));
    // Jittered: 0.5 to 1.5 times the retry delay.
    let gap = attempts[1].1;
    assert!(
        (Duration::from_millis(500)..Duration::from_millis(1500)).contains(&gap),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unacked_publish_times_out_at_its_deadline_while_connected() {
    let (mut d, cmds) = driver(Options::default());
    let (ws, mut server) = connection();
    let (tx, rx) = oneshot::channel();
    let _ = cmds.send(Cmd::Publish(
        publish("r", "m9"),
        Duration::from_millis(2550),
        tx,
    ));
    let start = Instant::now();
    let server_side = async {
        write_text(&mut server, &welcome("ada")).await;
        let r = rx.await;
        let at = start.elapsed();
        drop(server);
        (r, at)
    };
    let ((r, at), _end) = tokio::join!(server_side, d.session(ws));
    assert_eq!(at, Duration::from_millis(2550));
    assert!(matches!(r, Ok(Err(Error::Timeout(_)))), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn a_gap_is_given_up_on_after_gap_timeout() {
    let (mut d, _cmds, mut events) = driver_with_events(Options {
        gap_timeout: Duration::from_millis(3050),
        ..Options::default()
    });
    let (ws, mut server) = connection();
    let start = Instant::now();
    let server_side = async {
        open_personal_room(&mut server).await;
        // Offset 1 never comes: 2 waits for it, then is delivered anyway.
        let message = br#"{"type":"message","room":"@ada","offset":2,"epoch":"e1","msgId":"m2","timestamp":1,"eventType":"dm","source":"bob","data":null}"#;
        write_text(&mut server, message).await;
        let delivered = loop {
            match events.recv().await {
                Some(Event::Message(m)) => break (m.offset, start.elapsed()),
                Some(_) => {}
                None => panic!("events ended"),
            }
        };
        drop(server);
        delivered
    };
    let (delivered, _end) = tokio::join!(server_side, d.session(ws));
    assert_eq!(delivered, (2, Duration::from_millis(3050)));
}

#[tokio::test(start_paused = true)]
async fn a_message_the_client_cannot_decode_is_reported_in_its_place_without_a_gap() {
    let (mut d, _cmds, mut events) = driver_with_events(Options {
        gap_timeout: Duration::from_secs(5),
        ..Options::default()
    });
    let (ws, mut server) = connection();
    let start = Instant::now();
    let server_side = async {
        open_personal_room(&mut server).await;
        // serde_json reads neither data (a server that relays them): each
        // is reported at its offset, and the message after them is not
        // held up.
        let head = r#"{"type":"message","room":"@ada","epoch":"e1","timestamp":1,"eventType":"dm","source":"bob""#;
        let message = |offset: u64, data: &str| {
            format!(r#"{head},"offset":{offset},"msgId":"m{offset}","data":{data}}}"#)
        };
        for (offset, data) in [(1, "1e400"), (2, r#""\ud800""#), (3, "7")] {
            write_text(&mut server, message(offset, data).as_bytes()).await;
        }
        write_text(&mut server, b"[not json").await;
        // The barrier: everything before it has been handled.
        write_text(&mut server, message(4, "8").as_bytes()).await;
        let mut got = Vec::new();
        while got.last().is_none_or(|g| g != "message 4") {
            match events.recv().await {
                Some(Event::Message(m)) => got.push(format!("message {}", m.offset)),
                Some(Event::Unreadable(u)) => {
                    assert!(u.text.contains("e1") || u.text == "[not json", "{u:?}");
                    assert!(!u.error.is_empty());
                    got.push(match u.position {
                        Some(p) => format!("unreadable {}", p.offset),
                        None => "unreadable".into(),
                    });
                }
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
        drop(server);
        (got, start.elapsed())
    };
    let ((got, elapsed), _end) = tokio::join!(server_side, d.session(ws));
    assert_eq!(
        got,
        [
            "unreadable 1",
            "unreadable 2",
            "message 3",
            "unreadable",
            "message 4"
        ]
    );
    assert_eq!(elapsed, Duration::ZERO, "no gap was waited for");
    assert_eq!(d.rooms["@ada"].offset, Some(4));
}

#[tokio::test]
async fn a_request_that_is_not_an_object_is_answered_without_being_sent() {
    let (mut d, _cmds) = driver(Options::default());
    let (tx, rx) = oneshot::channel();
    d.command(Cmd::Request(Value::from(1), tx), true);
    let e = rx.await.unwrap().unwrap_err();
    assert!(
        matches!(e, Error::Server { ref code, .. } if code == "bad_request"),
        "{e:?}"
    );
    assert!(d.out.is_empty() && d.waiting.is_empty());
    // `null` stands for an empty frame, given its id as any other.
    let (tx, _rx) = oneshot::channel();
    d.command(Cmd::Request(Value::Null, tx), true);
    assert_eq!(d.out, [r#"{"id":1}"#]);
}

#[tokio::test(start_paused = true)]
async fn a_server_side_left_drops_the_room_unless_a_join_of_ours_is_in_flight() {
    let (mut d, _cmds, mut events) = driver_with_events(Options::default());
    let (ws, mut server) = connection();
    let server_side = async {
        write_text(&mut server, &welcome("ada")).await;
        let (id, room) = join_of(&read_frame(&mut server).await.unwrap());
        assert_eq!(room, "@ada");
        // The personal room's join is in flight: a `left` of it is older
        // than the join's reply, and changes nothing.
        write_text(&mut server, br#"{"type":"left","room":"@ada"}"#).await;
        write_text(&mut server, &joined("@ada", Some(&id))).await;
        // A room the server joined us to, then took us out of.
        write_text(&mut server, &joined("news", None)).await;
        write_text(&mut server, br#"{"type":"left","room":"news"}"#).await;
        // Unknown rooms are ignored.
        write_text(&mut server, br#"{"type":"left","room":"other"}"#).await;
        let message = br#"{"type":"message","room":"@ada","offset":1,"epoch":"e1","msgId":"m1","timestamp":1,"eventType":"dm","source":"bob","data":null}"#;
        write_text(&mut server, message).await;
        let mut got = Vec::new();
        loop {
            match events.recv().await {
                Some(Event::Joined(j)) => got.push(format!("joined {}", j.room)),
                Some(Event::Left { room }) => got.push(format!("left {room}")),
                Some(Event::Message(m)) => {
                    got.push(format!("message {}", m.room));
                    break;
                }
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
        drop(server);
        got
    };
    let (got, _end) = tokio::join!(server_side, d.session(ws));
    assert_eq!(got, ["joined news", "left news", "message @ada"]);
    assert!(!d.rooms.contains_key("news"));
    assert!(d.rooms.contains_key("@ada"));
}

/// A rejoin (no caller waits on it) that the server refuses for a passing
/// reason keeps the room and is sent again after the retry delay; before,
/// the room was dropped and its messages silently stopped.
#[tokio::test(start_paused = true)]
async fn an_unavailable_rejoin_is_sent_again_after_the_retry_delay() {
    let opts = Options {
        retry_delay: Duration::from_secs(1),
        ..Options::default()
    };
    let (mut d, _cmds, mut events) = driver_with_events(opts);
    let (ws, mut server) = connection();
    let start = Instant::now();
    let server_side = async {
        write_text(&mut server, &welcome("ada")).await;
        let mut joins = Vec::new();
        while joins.len() < 2 {
            let next = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut server));
            let Ok(Some(f)) = next.await else { break };
            if ty(&f) != "join" {
                continue;
            }
            let (id, room) = join_of(&f);
            joins.push((room.clone(), start.elapsed()));
            let reply = if joins.len() == 1 {
                error_frame(Some(&id), ErrorCode::Unavailable, "engine slow")
            } else {
                joined(&room, Some(&id))
            };
            write_text(&mut server, &reply).await;
        }
        let message = br#"{"type":"message","room":"@ada","offset":1,"epoch":"e1","msgId":"m1","timestamp":1,"eventType":"dm","source":"bob","data":null}"#;
        write_text(&mut server, message).await;
        let got = loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(Event::Message(m))) => break Some(m.msg_id),
                Ok(Some(_)) => {}
                _ => break None,
            }
        };
        drop(server);
        (joins, got)
    };
    let ((joins, got), _end) = tokio::join!(server_side, d.session(ws));
    assert_eq!(joins.len(), 2, "the refused rejoin was not sent again");
    assert_eq!(joins[1].0, "@ada");
    let gap = joins[1].1 - joins[0].1;
    assert!(
        (Duration::from_millis(500)..Duration::from_millis(1500)).contains(&gap),
        "{gap:?}"
    );
    assert_eq!(got.as_deref(), Some("m1"));
}

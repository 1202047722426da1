//! A join storm in one room: every join is a presence event to every
//! member, so unpaced the frames grow with the square of the joiners (the
//! red team's 1,500 joins: 1.15 M frames, 79 honest joiners closed with
//! 4000). Paced (see `hub::presence`), a busy room's events go out in one
//! frame per flush: no honest member is closed, and the frames stay within
//! the room's rate.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, Server};
use futures_util::StreamExt;
use hubcast_client::{Event, Options, State};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// Joiners in the storm.
const JOINERS: usize = 1_500;
/// Handshakes and joins under way at once.
const AT_ONCE: usize = 64;
/// The room's presence budget (`hub::presence`): frames a second, burst.
const RATE: f64 = 20_000.0;
const BURST: f64 = 2_000.0;

/// What one member read.
#[derive(Debug, Default)]
struct Tally {
    /// `presence` event frames (each form).
    frames: usize,
    /// Presence changes they carried (a `batch` its events, a `sync` its
    /// count).
    events: usize,
    /// A close before the marker.
    close: Option<u16>,
}

/// Reads until the marker (and, for `want`, until that many presence
/// changes arrived), sleeping a little every few frames when `slow`;
/// `joined` is told when the `joined` reply comes.
async fn tally(
    c: &mut Client,
    want: usize,
    slow: bool,
    mut joined: Option<mpsc::UnboundedSender<()>>,
) -> Tally {
    let mut t = Tally::default();
    let mut marked = false;
    let mut read = 0u64;
    while !marked || t.events < want {
        let next = tokio::time::timeout(Duration::from_secs(60), c.ws.next())
            .await
            .expect("a frame within 60 s");
        match next {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["type"] == "presence" && v.get("id").is_none() {
                    t.frames += 1;
                    t.events += match v["action"].as_str() {
                        Some("batch") => v["events"].as_array().map_or(0, Vec::len),
                        Some("sync") => v["changes"].as_u64().unwrap_or(0) as usize,
                        _ => 1,
                    };
                } else if v["type"] == "joined" {
                    assert_eq!(v["id"], 1, "{v}");
                    if let Some(j) = joined.take() {
                        j.send(()).unwrap();
                    }
                } else if v["type"] == "message" && v["data"] == "marker" {
                    marked = true;
                }
            }
            Some(Ok(Message::Close(f))) => {
                t.close = Some(f.map_or(1005, |f| u16::from(f.code)));
                return t;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                t.close = Some(1006);
                return t;
            }
        }
        read += 1;
        if slow && read.is_multiple_of(4) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    t
}

/// Counts the Rust client's presence changes of others (a `sync` by its
/// count) until the marker and `want` of them arrived; the close code if
/// its connection ended first.
async fn rust_joins(
    mut events: UnboundedReceiver<Event>,
    me: &str,
    want: usize,
) -> Result<usize, Option<u16>> {
    let mut joins = 0;
    let mut marked = false;
    while !marked || joins < want {
        let e = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("an event within 60 s")
            .expect("the client runs");
        match e {
            Event::Presence(v) if v["action"] == "sync" => {
                joins += v["changes"].as_u64().unwrap() as usize;
            }
            Event::Presence(v) if v["user"] != me => {
                assert_eq!(v["action"], "join", "{v}");
                assert_eq!(v["type"], "presence", "{v}");
                assert_eq!(v["room"], "storm", "{v}");
                assert!(v["name"].is_string() && v["status"].is_string(), "{v}");
                joins += 1;
            }
            Event::Message(m) if m.data == "marker" => marked = true,
            Event::State { state, code, .. } if state != State::Connected => return Err(code),
            _ => {}
        }
    }
    Ok(joins)
}

#[tokio::test]
async fn a_join_storm_closes_no_honest_member_and_its_frames_stay_within_the_rate() {
    let s = Server::start(|c| {
        c.handshakes_per_ip_per_sec = 0;
        c.max_connections_per_ip = 10_000;
        // A member done counting reads nothing more (nor answers pings)
        // while the others count: it must not be closed as silent (4002),
        // its leave would be one more change.
        c.heartbeat = 600;
    })
    .await;
    let room = "storm";
    let url = s.ws_url();
    // A member on the Rust client, which reads every form as 1.1 events:
    // it must report every join after its own.
    let (rust, rust_events) = hubcast_client::Client::connect(&url, Options::default());
    rust.join(room).await.unwrap();
    let rust_user = rust.user().unwrap();
    let rust = tokio::spawn(async move {
        let joins = rust_joins(rust_events, &rust_user, JOINERS + 1).await;
        (joins, rust)
    });
    // The member there before the storm reads slowly, and must see every
    // join (each form counted).
    let mut first = Client::connect(&url).await;
    first.join(room).await;
    // The joiners connect first, then all send their join at once: a
    // storm as fast as the server takes it, however slowly this process
    // (its clients and the server on one thread) opens connections.
    let gate = Arc::new(Semaphore::new(AT_ONCE));
    let mut connecting = Vec::new();
    for _ in 0..JOINERS {
        let (url, gate) = (url.clone(), gate.clone());
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            Client::connect(&url).await
        }));
    }
    let mut clients = Vec::new();
    for c in connecting {
        clients.push(c.await.unwrap());
    }
    let started = tokio::time::Instant::now();
    let first = tokio::spawn(async move { (tally(&mut first, JOINERS, true, None).await, first) });
    let (joined, mut all_joined) = mpsc::unbounded_channel();
    let mut members = Vec::new();
    for mut c in clients {
        let joined = joined.clone();
        members.push(tokio::spawn(async move {
            c.send(json!({"type":"join","room":room,"id":1})).await;
            // The connection stays open until every count is in: its
            // leave would be one more change.
            (tally(&mut c, 0, false, Some(joined)).await, c)
        }));
    }
    for _ in 0..JOINERS {
        all_joined.recv().await.unwrap();
    }
    // Everyone has joined: the marker is the barrier each member reads to.
    s.api_publish(room, json!("marker")).await;
    let (first, first_client) = first.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let (rust_joins, rust) = rust.await.unwrap();
    let mut frames = first.frames;
    let mut closed = Vec::new();
    let mut open = Vec::new();
    for m in members {
        let (t, c) = m.await.unwrap();
        frames += t.frames;
        closed.extend(t.close);
        open.push(c);
    }
    eprintln!(
        "presence storm: {JOINERS} joiners, {frames} presence frames to members \
         ({:.1} per joiner), first member {} frames for {} changes, {elapsed:.1} s, {} members closed (codes {:?}), first member closed {:?}, \
         Rust client member {rust_joins:?}",
        frames as f64 / JOINERS as f64,
        first.frames,
        first.events,
        closed.len(),
        closed.iter().collect::<std::collections::BTreeSet<_>>(),
        first.close,
    );
    // The slow member's join and the storm's, each once.
    assert_eq!(rust_joins, Ok(JOINERS + 1));
    assert!(closed.is_empty(), "honest members closed: {closed:?}");
    assert_eq!(first.close, None);
    // Every join reached the member that was there, each once.
    assert_eq!(first.events, JOINERS, "{first:?}");
    // Within the room's rate (the joiners' own joins, one each, aside) ...
    let budget = BURST + RATE * elapsed + JOINERS as f64;
    assert!((frames as f64) <= budget, "{frames} frames > {budget}");
    // ... and far from one frame per join per member.
    let unpaced = JOINERS * (JOINERS + 1) / 2;
    assert!(frames < unpaced / 4, "{frames} frames, unpaced {unpaced}");
    drop((open, first_client));
    rust.close().await;
}

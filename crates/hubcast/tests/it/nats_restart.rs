//! NATS restarted under traffic: publishers and subscribers on two nodes
//! while the NATS server (this test's own) is killed and started again.
//!
//! - Stream on disk (`nats_storage = "file"`): every acked message reaches
//!   every subscriber exactly once, in one gapless run of offsets, in the
//!   epoch it had before the restart.
//! - Stream in memory: the restart loses it. Every subscriber is told (a
//!   4000 close, then its rejoin answered `recovered: false` with the new
//!   epoch) before anything of the new epoch reaches it; never a silent
//!   jump.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::nats_outage::OwnNats;
use crate::outage::ready;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Client, Server};
use futures_util::StreamExt;
use hubcast::config::NatsStorage;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "busy";
/// Publishes per publisher (one publisher per node).
const PER_PUBLISHER: u64 = 120;
/// Acked publishes before NATS is killed.
const KILL_AFTER: u64 = 40;
/// The msgId of the last message, published once every other was acked.
const END: &str = "end";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_storage_delivers_every_acked_message_once_across_a_restart() {
    let run = restart_under_traffic(NatsStorage::File).await;
    let epochs: BTreeSet<&str> = run.acked.iter().map(|a| a.epoch.as_str()).collect();
    assert_eq!(epochs.len(), 1, "the epoch stayed: {epochs:?}");
    let mut offsets: Vec<u64> = run.acked.iter().map(|a| a.offset).collect();
    offsets.sort_unstable();
    let n = run.acked.len() as u64;
    assert_eq!(offsets, (1..=n).collect::<Vec<_>>(), "acked offsets");
    let acked: BTreeSet<&str> = run.acked.iter().map(|a| a.msg_id.as_str()).collect();
    for (i, events) in run.subs.iter().enumerate() {
        let seen = walk(events);
        assert!(
            seen.told.is_empty(),
            "subscriber {i} told of a loss: {:?}",
            seen.told
        );
        // One run, 1..=n (the walk checked each is the next offset), so
        // nothing twice and nothing skipped.
        assert_eq!(seen.delivered.len() as u64, n, "subscriber {i}");
        let got: BTreeSet<&str> = seen.delivered.iter().map(String::as_str).collect();
        assert_eq!(got, acked, "subscriber {i}: every acked message, no other");
    }
    eprintln!(
        "file storage: {n} acked and delivered to each of {} subscribers, {} publishes refused or timed out during the restart, {} reconnects",
        run.subs.len(),
        run.errors,
        run.reconnects()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_storage_announces_the_new_epoch_after_a_restart() {
    let run = restart_under_traffic(NatsStorage::Memory).await;
    let before = run.acked[0].epoch.clone();
    let end = run.acked.last().unwrap();
    let after = end.epoch.clone();
    assert_ne!(before, after, "history was lost: a new epoch");
    // The new epoch's offsets start again at 1, each acked once.
    let mut offsets: Vec<u64> = run
        .acked
        .iter()
        .filter(|a| a.epoch == after)
        .map(|a| a.offset)
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=end.offset).collect::<Vec<_>>(), "new epoch");
    for (i, events) in run.subs.iter().enumerate() {
        let seen = walk(events);
        // Its connection stayed open through the outage: the room's reset
        // closed it with 4000, and the rejoin said what was lost.
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Closed(Some(4000)))),
            "subscriber {i} got a 4000 close: {events:?}"
        );
        let told = seen
            .told
            .last()
            .unwrap_or_else(|| panic!("subscriber {i} was told"));
        assert_eq!(told["epoch"], json!(after), "subscriber {i}: {told}");
        // From the rejoin on, everything acked in the new epoch arrived.
        let from = told["offset"].as_u64().unwrap();
        let got: BTreeSet<&str> = seen.delivered.iter().map(String::as_str).collect();
        for a in run
            .acked
            .iter()
            .filter(|a| a.epoch == after && a.offset > from)
        {
            assert!(
                got.contains(a.msg_id.as_str()),
                "subscriber {i} got {}",
                a.msg_id
            );
        }
    }
    eprintln!(
        "memory storage: {} acked ({} in the new epoch), {} publishes refused or timed out, {} reconnects",
        run.acked.len(),
        end.offset,
        run.errors,
        run.reconnects()
    );
}

/// With memory storage a restarted NATS has no stream: a node nobody uses
/// (no room, no publish) creates it again from its readiness probe, or it
/// would answer 503 for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_is_ready_again_after_a_memory_restart() {
    let mut nats = OwnNats::start();
    let mut config = common::nats_config(&common::unique_nats_prefix(), "idle");
    config.nats_url = nats.url();
    config.nats_storage = NatsStorage::Memory;
    let s = Server::with_config(config, None).await;
    assert_eq!(ready(&s).await, 200);
    nats.kill();
    wait_ready(&s, 503).await;
    nats.resume();
    wait_ready(&s, 200).await;
    s.stop().await;
}

async fn wait_ready(s: &Server, status: u16) {
    common::wait_until(|| async { (ready(s).await == status).then_some(()) }).await;
}

/// A publish acked to a publisher.
#[derive(Debug)]
struct Acked {
    msg_id: String,
    offset: u64,
    epoch: String,
}

/// What a subscriber saw, in order.
#[derive(Debug)]
enum Event {
    Joined(Value),
    JoinFailed(Value),
    Message(Value),
    Closed(Option<u16>),
}

struct Run {
    acked: Vec<Acked>,
    subs: Vec<Vec<Event>>,
    /// Publishes answered `timeout` or `unavailable` (and retried).
    errors: u64,
}

impl Run {
    fn reconnects(&self) -> usize {
        let closes = |e: &Vec<Event>| e.iter().filter(|e| matches!(e, Event::Closed(_))).count();
        self.subs.iter().map(closes).sum()
    }
}

/// Two nodes on a NATS of their own with `storage`, two subscribers on each
/// (joined before the first publish) and one publisher on each; NATS is
/// killed after [`KILL_AFTER`] acks, started again once a publish failed,
/// and the publishers go on until each of their messages is acked. Then
/// [`END`], and every subscriber reads up to it.
async fn restart_under_traffic(storage: NatsStorage) -> Run {
    let mut nats = OwnNats::start();
    let prefix = common::unique_nats_prefix();
    let node = |name: &str| {
        let mut c = common::nats_config(&prefix, name);
        c.nats_url = nats.url();
        c.nats_storage = storage;
        c
    };
    let a = Server::with_config(node("a"), None).await;
    let b = Server::with_config(node("b"), None).await;

    let (joined_tx, mut joined_rx) = mpsc::channel(4);
    let (end_tx, end_rx) = watch::channel(None);
    let subs: Vec<_> = [&a, &b, &a, &b]
        .iter()
        .map(|s| tokio::spawn(subscriber(s.ws_url(), joined_tx.clone(), end_rx.clone())))
        .collect();
    for _ in 0..subs.len() {
        joined_rx.recv().await.unwrap();
    }

    let acks = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let pubs: Vec<_> = [(&a, "pa"), (&b, "pb")]
        .iter()
        .map(|(s, tag)| {
            let (url, tag, acks, errors) =
                (s.ws_url(), tag.to_string(), acks.clone(), errors.clone());
            tokio::spawn(async move {
                let mut c = Client::connect(&url).await;
                let mut out = Vec::new();
                for k in 0..PER_PUBLISHER {
                    out.push(publish_acked(&mut c, &format!("{tag}-{k}"), &errors).await);
                    acks.fetch_add(1, Ordering::SeqCst);
                    // Paced, so that the restart lands mid-run.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                out
            })
        })
        .collect();
    let wait_for = |counter: &Arc<AtomicU64>, n: u64| {
        let counter = counter.clone();
        common::wait_until(move || {
            let done = counter.load(Ordering::SeqCst) >= n;
            async move { done.then_some(()) }
        })
    };
    wait_for(&acks, KILL_AFTER).await;
    nats.kill();
    // Publishing goes on while NATS is down: a publish fails, then NATS
    // returns on the same port and store.
    wait_for(&errors, 1).await;
    // Held down a little longer: more publishes fail and are retried.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        acks.load(Ordering::SeqCst) < 2 * PER_PUBLISHER,
        "the restart landed mid-traffic"
    );
    nats.resume();

    let mut acked = Vec::new();
    for p in pubs {
        acked.extend(p.await.unwrap());
    }
    let mut p = a.client().await;
    let end = publish_acked(&mut p, END, &errors).await;
    end_tx.send_replace(Some((end.epoch.clone(), end.offset)));
    acked.push(end);
    let mut seen = Vec::new();
    for s in subs {
        seen.push(s.await.unwrap());
    }
    drop(p);
    a.stop().await;
    b.stop().await;
    Run {
        acked,
        subs: seen,
        errors: errors.load(Ordering::SeqCst),
    }
}

/// Publishes `msg_id` (also its data) into [`ROOM`] until it is acked: a
/// `timeout` or `unavailable` is retried with the same msgId, which makes
/// the retry of a publish that went through a duplicate of it.
async fn publish_acked(c: &mut Client, msg_id: &str, errors: &AtomicU64) -> Acked {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let frame = json!({"type":"publish","room":ROOM,"event":"e","data":msg_id,"msgId":msg_id});
        let (r, others) = c.request(frame).await;
        assert!(others.is_empty(), "{others:?}");
        if r["type"] == "ack" {
            return Acked {
                msg_id: msg_id.to_string(),
                offset: r["offset"].as_u64().unwrap(),
                epoch: r["epoch"].as_str().unwrap().to_string(),
            };
        }
        assert!(r["code"] == "timeout" || r["code"] == "unavailable", "{r}");
        errors.fetch_add(1, Ordering::SeqCst);
        assert!(Instant::now() < deadline, "{msg_id} not acked in 60 s: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscriber of [`ROOM`] on `url`, as a client library would be: joins
/// (and says so on `joined`), and after any close connects again and
/// rejoins with `since` and `epoch` of the last message it has (or of the
/// `joined` that did not recover). Returns what it saw once its position
/// reaches the end `end` announces.
async fn subscriber(
    url: String,
    joined: mpsc::Sender<()>,
    mut end: watch::Receiver<Option<(String, u64)>>,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut pos: Option<(String, u64)> = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "subscriber did not finish: {events:?}"
        );
        let mut c = Client::connect(&url).await;
        let mut join = json!({"type":"join","room":ROOM,"id":1});
        if let Some((epoch, offset)) = &pos {
            join["since"] = json!(offset);
            join["epoch"] = json!(epoch);
        }
        c.send(join).await;
        loop {
            let done = match (&pos, &*end.borrow()) {
                (Some((e, o)), Some((end_e, end_o))) => e == end_e && o >= end_o,
                _ => false,
            };
            if done {
                return events;
            }
            let frame = tokio::select! {
                f = next_frame(&mut c) => f,
                _ = end.changed() => continue,
            };
            let v = match frame {
                Ok(v) => v,
                Err(code) => {
                    events.push(Event::Closed(code));
                    break;
                }
            };
            match v["type"].as_str() {
                Some("joined") => {
                    if pos.is_none() {
                        let _ = joined.send(()).await;
                    }
                    if pos.is_none() || v["recovered"] != true {
                        pos = Some((
                            v["epoch"].as_str().unwrap().to_string(),
                            v["offset"].as_u64().unwrap(),
                        ));
                    }
                    events.push(Event::Joined(v));
                }
                Some("message") => {
                    pos = Some((
                        v["epoch"].as_str().unwrap().to_string(),
                        v["offset"].as_u64().unwrap(),
                    ));
                    events.push(Event::Message(v));
                }
                Some("error") if v["id"] == 1 => {
                    // NATS down: the join is refused; try again.
                    events.push(Event::JoinFailed(v));
                    break;
                }
                _ => {}
            }
        }
        drop(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next text frame, or the close code (`None`: no close frame).
async fn next_frame(c: &mut Client) -> Result<Value, Option<u16>> {
    let read = async {
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(f))) => return Err(f.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(None),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("a frame or a close within 30 s")
}

/// A subscriber's events, checked: every message is the next offset of
/// the run it is in, and a run changes only at a join answered
/// `recovered: false`.
struct Walked {
    /// msgIds, in order.
    delivered: Vec<String>,
    /// The joins after the first that did not recover.
    told: Vec<Value>,
}

fn walk(events: &[Event]) -> Walked {
    let mut pos: Option<(String, u64)> = None;
    let mut w = Walked {
        delivered: Vec::new(),
        told: Vec::new(),
    };
    for e in events {
        match e {
            Event::Joined(j) => {
                let here = (
                    j["epoch"].as_str().unwrap().to_string(),
                    j["offset"].as_u64().unwrap(),
                );
                match &pos {
                    None => pos = Some(here),
                    Some(p) if j["recovered"] == true => {
                        assert_eq!(here.0, p.0, "recovered in its epoch: {j}");
                    }
                    Some(_) => {
                        w.told.push(j.clone());
                        pos = Some(here);
                    }
                }
            }
            Event::Message(m) => {
                let p = pos.as_mut().expect("a message after a join");
                let epoch = m["epoch"].as_str().unwrap();
                let offset = m["offset"].as_u64().unwrap();
                assert_eq!(
                    (epoch, offset),
                    (p.0.as_str(), p.1 + 1),
                    "the next message of the run: {m}\n{events:?}"
                );
                p.1 = offset;
                w.delivered.push(m["msgId"].as_str().unwrap().to_string());
            }
            Event::JoinFailed(e) => assert_eq!(e["code"], "unavailable", "{e}"),
            Event::Closed(_) => {}
        }
    }
    w
}

/// A stream's storage cannot change: a node whose `nats_storage` differs
/// from the stream's refuses to start, saying why.
#[tokio::test]
async fn a_node_refuses_a_stream_stored_otherwise() {
    let prefix = common::unique_nats_prefix();
    let file = Server::with_config(common::nats_config(&prefix, "file"), None).await;
    file.stop().await;
    let mut config = common::nats_config(&prefix, "memory");
    config.nats_storage = NatsStorage::Memory;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let err = hubcast::run(config, listener, shutdown)
        .await
        .expect_err("the node does not start");
    common::clean_nats(&prefix);
    let err = format!("{err:#}");
    assert!(
        err.contains("stored in file, but nats_storage is memory"),
        "{err}"
    );
}

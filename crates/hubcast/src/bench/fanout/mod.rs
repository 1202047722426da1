//! The fan-out run every scenario is built from: subscribers join rooms
//! (over WebSocket or long polling), publishers publish into them (over
//! WebSocket or the HTTP API), and every delivery is counted, checked for
//! order and timed from the publisher's clock.
//!
//! Measured the way `../shared/bench/wsload` measures, so the two agree on
//! the same scenario: latency from the send time in the payload (`"t"`,
//! Unix nanoseconds) to its arrival; deliveries per second over the
//! publishing time plus the drain; server CPU over the same span.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::net::Dialer;
use super::nodes::Nodes;
use super::{procfs, round};

mod offsets;
mod publish;
mod report;
mod subscribe;

pub(crate) use subscribe::{Joined, connect_measured};

/// How subscribers receive.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubVia {
    /// A WebSocket each, joined to one room.
    Ws,
    /// `GET /api/poll` in a loop, each on its own keep-alive connection.
    Poll,
}

/// How publishers publish.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PubVia {
    /// `publish` frames on a WebSocket, acks counted.
    Ws,
    /// `POST /api/publish`, one request at a time per publisher.
    Http,
}

/// The shape of a fan-out run.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct FanoutArgs {
    /// Subscriber connections (subscriber i joins room i mod rooms).
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Publisher connections (publish n of publisher p goes to room (p + n * pubs) mod rooms).
    #[arg(long, default_value_t = 4)]
    pub pubs: usize,
    /// Publishes per second, all publishers together (0: as fast as acks allow).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Unacknowledged publishes per publisher when --rate is 0.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// How subscribers receive.
    #[arg(long, value_enum, default_value_t = SubVia::Ws)]
    pub subscribe_via: SubVia,
    /// How publishers publish.
    #[arg(long, value_enum, default_value_t = PubVia::Ws)]
    pub publish_via: PubVia,
}

/// What the load runs against.
#[derive(Clone)]
pub(crate) struct Target {
    pub nodes: Arc<Nodes>,
    pub dialer: Dialer,
    pub redis_pid: Option<u32>,
}

impl Target {
    /// A run's result with the keys every run has: its label and the
    /// number of nodes under load.
    pub(crate) fn result(&self, label: &str) -> Map<String, Value> {
        let mut res = Map::new();
        res.insert("label".into(), json!(label));
        res.insert("nodes".into(), json!(self.nodes.nodes.len()));
        res
    }
}

/// Counters shared by a run's tasks.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    published: AtomicU64,
    rejected: AtomicU64,
    publisher_errors: AtomicU64,
    /// Acknowledged publishes, per room.
    acked: Vec<AtomicU64>,
    /// Their offsets, per room: a delivery of any other offset is of a
    /// publish whose acknowledgement never came (its publisher closed
    /// first, or it was answered with an error such as `timeout`).
    acked_offsets: Vec<std::sync::Mutex<offsets::Offsets>>,
}

impl Tally {
    /// A tally for `rooms` rooms.
    fn new(rooms: usize) -> Tally {
        Tally {
            acked: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            acked_offsets: (0..rooms).map(|_| Default::default()).collect(),
            ..Tally::default()
        }
    }

    /// A publish into `room` was acknowledged, at `offset` when the ack
    /// said.
    fn ack(&self, room: usize, offset: Option<u64>) {
        self.acked[room].fetch_add(1, Ordering::Relaxed);
        if let (Some(o), Some(set)) = (offset, self.acked_offsets.get(room)) {
            crate::lock(set).insert(o);
        }
    }

    /// Deliveries due: every acknowledged publish to each of its room's members.
    fn expected(&self, members: &[u64]) -> u64 {
        self.acked
            .iter()
            .zip(members)
            .map(|(a, m)| a.load(Ordering::Relaxed) * m)
            .sum()
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A name no earlier run used, so rooms start empty (offset 0).
pub(crate) fn fresh_prefix() -> String {
    format!("bench-{}-", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Something else running beside the publishers (a flood), started with
/// them and stopped before the drain ends.
pub(crate) type Beside =
    Box<dyn FnOnce(CancellationToken) -> tokio::task::JoinHandle<Map<String, Value>> + Send>;

/// A whole fan-out run; the result as one JSON object (wsload's keys, and more).
pub(crate) async fn run(
    t: &Target,
    spec: &FanoutArgs,
    label: &str,
    beside: Option<Beside>,
) -> anyhow::Result<Map<String, Value>> {
    let mut res = report::describe(t, spec, label);
    let (joined, before, after) =
        connect_measured(t, spec.subs, spec.rooms, spec.subscribe_via, &mut res).await?;
    let ok = joined.connected();
    if !t.nodes.pids.is_empty() && ok > 0 {
        res.insert("rss_mib".into(), json!(after.mib()));
        res.insert(
            "kib_per_conn".into(),
            json!(round(after.kib_per(&before, ok), 1)),
        );
    }

    // Subscribers read until the end.
    let rooms = spec.rooms.max(1);
    let tally = Arc::new(Tally::new(rooms));
    let stop = CancellationToken::new();
    let Joined {
        subs,
        members,
        wire,
        prefix,
        ..
    } = joined;
    let mut readers = subscribe::start(subs, &prefix, &tally, &stop);
    let wire_before = (
        wire.read.load(Ordering::Relaxed),
        wire.written.load(Ordering::Relaxed),
    );

    // Phase 2: publish.
    let cpu0 = procfs::sum(&t.nodes.pids);
    let redis0 = t.redis_pid.and_then(procfs::sample);
    let t1 = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(spec.seconds);
    let beside_stop = CancellationToken::new();
    let beside = beside.map(|f| f(beside_stop.clone()));
    let mut publishers = publish::start(t, spec, &prefix, &tally, deadline).await;
    while publishers.join_next().await.is_some() {}
    let pub_secs = t1.elapsed().as_secs_f64();
    // Drain: until deliveries stop growing (10 s at most).
    let mut last = u64::MAX;
    for _ in 0..50 {
        let cur = tally.received.load(Ordering::Relaxed);
        if cur >= tally.expected(&members) || cur == last {
            break;
        }
        last = cur;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = t1.elapsed().as_secs_f64();
    let cpu1 = procfs::sum(&t.nodes.pids);
    let redis1 = t.redis_pid.and_then(procfs::sample);
    beside_stop.cancel();
    let beside = match beside {
        Some(h) => h.await.ok(),
        None => None,
    };
    stop.cancel();
    let mut subs = Vec::new();
    while let Some(r) = readers.join_next().await {
        if let Ok(s) = r {
            subs.push(s);
        }
    }

    let readings = report::Readings {
        pub_secs,
        elapsed,
        server_cpu_s: (!t.nodes.pids.is_empty()).then_some(cpu1.cpu_s - cpu0.cpu_s),
        redis_cpu_s: redis0.zip(redis1).map(|(a, b)| b.cpu_s - a.cpu_s),
        sub_read: wire.read.load(Ordering::Relaxed) - wire_before.0,
        sub_written: wire.written.load(Ordering::Relaxed) - wire_before.1,
    };
    report::results(&mut res, spec, &tally, &members, &subs, &readings);
    if let Some(b) = beside {
        res.extend(b);
    }
    Ok(res)
}

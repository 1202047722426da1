//! `hubcast bench faults`: several nodes on a private Redis or NATS
//! (`--broker`), clients on the Rust client, and a schedule of faults; then
//! a verdict.
//!
//! - `backing`: the engine's private server, `redis` (`redis-server`,
//!   append-only file, fsync always) or `nats` (`nats-server -js`);
//! - `proxy`: the userspace TCP proxy that cuts and delays links (`tc
//!   netem` needs `sch_netem`, which not every kernel has);
//! - `nodes`: `hubcast serve` children, each behind a proxy to the engine
//!   and a proxy from its clients;
//! - `schedule`: the faults, injected, held, healed and logged;
//! - `balancer`, `rolling`: the rolling schedule's load balancer (round
//!   robin over the nodes whose `/readyz` is 200) and its restarts;
//! - `clients`: subscribers recording every delivery and every gap they
//!   were told of, publishers recording every ack (one msgId per message,
//!   however often it is sent);
//! - `check`: the delivery verdict; presence and memory are judged here;
//! - `report`: one JSON line or a summary.
//!
//! The run fails (exit 1) when an acked message was lost or duplicated, a
//! gap went untold, presence kept a ghost or missed a live connection past
//! the lease, a node cut off from its engine stayed ready, or (long runs) a
//! node's memory kept growing.

mod backing;
mod balancer;
mod check;
mod clients;
mod nats;
mod nodes;
mod owned;
mod proxy;
mod redis;
mod report;
mod rolling;
mod schedule;

use owned::Owned;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::lock::lock;
use backing::{Backing, Engine};
use clients::Clients;
use schedule::{Cluster, Injected, Rng, Schedule, kinds};

/// `hubcast bench faults`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct FaultsArgs {
    /// Nodes (at least 2).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The engine the nodes share, on a server of the run's own.
    #[arg(long, value_enum, default_value = "redis")]
    pub(crate) broker: Engine,
    /// `short`: one of each fault, about a minute; `long`: random faults
    /// for --seconds; `rolling`: a rolling restart behind a load balancer.
    #[arg(long, value_enum, default_value = "short")]
    schedule: Schedule,
    /// Length of a long schedule, seconds (a short one takes what it takes).
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Rooms; every subscriber joins all of them.
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// Publishing clients.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Subscribing clients.
    #[arg(long, default_value_t = 6)]
    subscribers: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seed of the long schedule's draws (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Presence lease of the nodes, seconds (SIGSTOP holds a node past it).
    #[arg(long, default_value_t = 5)]
    lease: u64,
    /// Rolling schedule: node restarts, round the nodes in turn (default:
    /// each node once).
    #[arg(long)]
    restarts: Option<usize>,
    /// Rolling schedule: the nodes' `--drain-delay`, seconds (longer than
    /// the balancer's health check interval, 250 ms).
    #[arg(long, default_value_t = 1)]
    drain_delay: u64,
    /// Rolling schedule: the nodes' `--shutdown-timeout`, seconds (their
    /// 1001 closes are spread over most of it).
    #[arg(long, default_value_t = 5)]
    shutdown_timeout: u64,
}

/// Runs the scenario: its report, and whether it passed.
pub(crate) async fn run(a: &FaultsArgs, label: &str) -> anyhow::Result<(Map<String, Value>, bool)> {
    anyhow::ensure!(a.nodes >= 2, "--nodes must be at least 2");
    anyhow::ensure!(
        a.rooms >= 1 && a.subscribers >= 1 && a.publishers >= 1,
        "--rooms, --subscribers and --publishers must be at least 1"
    );
    let seed = a
        .seed
        .unwrap_or_else(|| crate::clock::unix_ms().unsigned_abs());
    let run_id = format!("f{}", uuid::Uuid::new_v4().simple());
    let dir = std::env::temp_dir().join(format!(
        "hubcast-faults-{}-{}",
        std::process::id(),
        &run_id[..9]
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let result = scenario(a, label, seed, &run_id, &dir).await;
    match &result {
        Ok((_, true)) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => eprintln!(
            "hubcast bench faults: logs of the nodes and the engine's server kept in {}",
            dir.display()
        ),
    }
    result
}

async fn scenario(
    a: &FaultsArgs,
    label: &str,
    seed: u64,
    run_id: &str,
    dir: &Path,
) -> anyhow::Result<(Map<String, Value>, bool)> {
    let t0 = Instant::now();
    let fsync_always = a.schedule != Schedule::Rolling;
    let engine = Backing::start(a.broker, dir, fsync_always).await?;
    let node_drain = rolling::Drain {
        delay_s: a.drain_delay,
        shutdown_timeout_s: a.shutdown_timeout,
    };
    let mut serve_args = match a.schedule {
        Schedule::Rolling => node_drain.args(),
        _ => Vec::new(),
    };
    // Every client comes from 127.0.0.1 (through the balancer or a
    // proxy), as behind a TCP load balancer: one node must take them all
    // at once, with room for the sockets a reconnect wave leaves closing.
    let clients = a.subscribers + a.publishers;
    serve_args.extend([
        "--max-connections-per-ip".to_string(),
        (2 * clients + 64).max(2000).to_string(),
    ]);
    // A NATS prefix is at most 32 characters; the server is the run's own
    // either way.
    let prefix = &run_id[..17];
    let mut nodes = Vec::new();
    for k in 0..a.nodes {
        nodes.push(nodes::Node::start(k, &engine, prefix, a.lease, dir, &serve_args).await?);
    }
    let pids = Arc::new(Mutex::new(
        nodes.iter().map(nodes::Node::pid).collect::<Vec<_>>(),
    ));
    let mut cluster = Cluster {
        engine,
        nodes,
        pids: pids.clone(),
        lease: a.lease,
        t0,
    };
    let memory = Memory::start(pids, t0);
    // Rolling: every client goes through the balancer, as behind HAProxy.
    let balancer = match a.schedule {
        Schedule::Rolling => {
            let listen: Vec<_> = cluster.nodes.iter().map(|n| n.listen).collect();
            Some(balancer::Balancer::start(&listen).await?)
        }
        _ => None,
    };
    let urls: Vec<String> = match &balancer {
        Some(b) => vec![b.ws_url()],
        None => cluster.nodes.iter().map(nodes::Node::ws_url).collect(),
    };
    let rooms: Vec<String> = (0..a.rooms)
        .map(|r| format!("faults.{run_id}.r{r}"))
        .collect();
    let patient = a.schedule == Schedule::Rolling;
    let mut clients = Clients::subscribe(&urls, a.subscribers, &rooms, patient).await?;
    clients.publish(&urls, a.publishers, &rooms, a.rate, run_id, patient);
    eprintln!(
        "[{:7.1}s] {} nodes, {} subscribers, {} publishers over {} rooms; seed {seed}",
        t0.elapsed().as_secs_f64(),
        a.nodes,
        a.subscribers,
        a.publishers,
        a.rooms
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut rng = Rng::new(seed);
    let mut injected: Vec<Injected> = Vec::new();
    let schedule_start = Instant::now();
    match a.schedule {
        Schedule::Short => {
            for (i, kind) in kinds(a.broker).iter().enumerate() {
                let k = i % a.nodes;
                injected.push(cluster.inject(*kind, k, a.schedule, &mut rng).await?);
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }
        Schedule::Long => {
            // Room for the last fault to heal before the end.
            let end = t0 + Duration::from_secs(a.seconds.saturating_sub(40).max(10));
            let all = kinds(a.broker);
            while Instant::now() < end {
                let kind = all[rng.range(0, all.len() as u64 - 1) as usize];
                let k = rng.range(0, a.nodes as u64 - 1) as usize;
                injected.push(cluster.inject(kind, k, a.schedule, &mut rng).await?);
                tokio::time::sleep(Duration::from_secs(rng.range(3, 10))).await;
            }
        }
        Schedule::Rolling => {
            if let Some(b) = &balancer {
                for i in 0..a.restarts.unwrap_or(a.nodes) {
                    injected.push(cluster.roll(i % a.nodes, b, node_drain).await?);
                }
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    // Per node: the most connections it was handed within one second, and
    // within 100 ms (a burst a second's count smooths over), while the
    // schedule ran (the clients' first connections excluded).
    let peak_reconnects = balancer.as_ref().map(|b| {
        (
            b.peak(schedule_start, Duration::from_secs(1)),
            b.peak(schedule_start, Duration::from_millis(100)),
        )
    });
    let last_heal = Instant::now();
    let publishing_s = t0.elapsed().as_secs_f64();
    eprintln!("[{publishing_s:7.1}s] publishing stops");
    clients.stop_publishing(Duration::from_secs(45)).await;
    let drained = drain(&clients, Duration::from_secs(30)).await;
    eprintln!(
        "[{:7.1}s] subscribers caught up: {drained}",
        t0.elapsed().as_secs_f64()
    );

    // Presence: after a lease past the last fault, each room lists exactly
    // the connected subscribers, on every node.
    let lease_end = last_heal + Duration::from_secs(a.lease + 2);
    tokio::time::sleep_until(lease_end).await;
    let presence = presence(&cluster, &clients, &rooms, Duration::from_secs(20)).await;
    eprintln!(
        "[{:7.1}s] presence: {} ghosts, {} missing",
        t0.elapsed().as_secs_f64(),
        presence.ghosts,
        presence.missing
    );
    let rss = memory.stop().await;

    let logs: Vec<_> = clients
        .subscribers
        .iter()
        .map(|s| lock(&s.log).clone())
        .collect();
    let publog = {
        let p = lock(&clients.publog);
        (p.acks.clone(), p.errors, p.abandoned)
    };
    let subs: Vec<&clients::SubLog> = logs.iter().collect();
    let tally = check::check(&subs, &publog.0);
    let reconnects: u64 = logs.iter().map(|l| l.welcomes.saturating_sub(1)).sum();
    let unreadable: u64 = logs.iter().map(|l| l.unreadable).sum();
    let join_retries: u64 = logs.iter().map(|l| l.join_retries).sum();
    drop(clients);
    drop(balancer);
    drop(cluster);

    let judge_memory = a.schedule == Schedule::Long && a.seconds >= 300;
    let r = report::Report {
        label,
        args: a,
        seed,
        seconds: t0.elapsed().as_secs_f64(),
        publishing_s,
        injected: &injected,
        tally: &tally,
        publish_errors: publog.1,
        abandoned: publog.2,
        reconnects,
        unreadable,
        join_retries,
        drained,
        presence: &presence,
        rss: &rss,
        judge_memory,
        peak_reconnects: peak_reconnects.as_ref().map(|(s, t)| (&s[..], &t[..])),
    };
    Ok(r.build())
}

/// Waits until every subscriber is at (or was told past) the last acked
/// offset of each room; whether they all got there within `within`.
async fn drain(clients: &Clients, within: Duration) -> bool {
    let mut last: HashMap<String, (String, u64)> = HashMap::new();
    for a in &lock(&clients.publog).acks {
        let e = last.entry(a.room.clone()).or_insert((a.epoch.clone(), 0));
        if a.epoch == e.0 {
            e.1 = e.1.max(a.offset);
        } else {
            *e = (a.epoch.clone(), a.offset);
        }
    }
    let end = Instant::now() + within;
    loop {
        let done = clients.subscribers.iter().all(|s| {
            let log = lock(&s.log);
            last.iter().all(|(room, (epoch, offset))| {
                log.rooms
                    .get(room)
                    .and_then(|r| r.pos.as_ref())
                    .is_some_and(|(e, o)| e != epoch || o >= offset)
            })
        });
        if done {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What presence listed at the end.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    /// Members (user and connection counted per node and room) listed
    /// beyond the connected subscribers.
    pub ghosts: u64,
    /// Connected subscribers not listed.
    pub missing: u64,
    /// Rooms x nodes that could not be asked.
    pub unanswered: u64,
    /// Seconds after the lease until presence was exact.
    pub exact_after_s: Option<f64>,
    /// The first few differences, to start looking from.
    pub examples: Vec<String>,
}

/// Asks every node for every room's presence until it lists exactly the
/// connected subscribers, or `within` passes.
async fn presence(
    cluster: &Cluster,
    clients: &Clients,
    rooms: &[String],
    within: Duration,
) -> Presence {
    let start = Instant::now();
    loop {
        let mut p = Presence::default();
        let mut expected: HashMap<String, u64> = HashMap::new();
        for s in &clients.subscribers {
            if s.client.state() == hubcast_client::State::Connected
                && let Some(u) = s.client.user()
            {
                *expected.entry(u).or_default() += 1;
            }
        }
        for node in &cluster.nodes {
            for room in rooms {
                let Some((200, body)) = crate::bench::net::get(
                    node.listen,
                    &format!("/api/rooms/{room}/presence"),
                    Duration::from_secs(5),
                )
                .await
                else {
                    p.unanswered += 1;
                    continue;
                };
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (ghosts, missing) = check::compare_lists(&v, &expected);
                p.ghosts += ghosts.len() as u64;
                p.missing += missing.len() as u64;
                for (what, users) in [("lists", ghosts), ("does not list", missing)] {
                    for u in users {
                        if p.examples.len() < 6 {
                            p.examples
                                .push(format!("node {} {what} {u} in {room}", node.k));
                        }
                    }
                }
            }
        }
        if p.ghosts == 0 && p.missing == 0 && p.unanswered == 0 {
            p.exact_after_s = Some(crate::bench::round(start.elapsed().as_secs_f64(), 1));
            return p;
        }
        if start.elapsed() >= within {
            return p;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One node's resident memory over the run: `(seconds, pid, KiB)`.
pub(crate) type Series = Vec<(f64, u32, u64)>;

/// Samples each node's RSS every 2 s, in a task it owns.
struct Memory {
    series: Arc<Mutex<Vec<Series>>>,
    owned: Owned,
}

impl Memory {
    fn start(pids: Arc<Mutex<Vec<Option<u32>>>>, t0: Instant) -> Memory {
        let n = lock(&pids).len();
        let series = Arc::new(Mutex::new(vec![Series::new(); n]));
        let owned = Owned::default();
        let s = series.clone();
        owned.spawn(async move {
            loop {
                let now: Vec<Option<u32>> = lock(&pids).clone();
                for (k, pid) in now.iter().enumerate() {
                    if let Some(pid) = pid
                        && let Some(sample) = crate::bench::procfs::sample(*pid)
                        && let Some(v) = lock(&s).get_mut(k)
                    {
                        v.push((t0.elapsed().as_secs_f64(), *pid, sample.rss_kib));
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        Memory { series, owned }
    }

    async fn stop(self) -> Vec<Series> {
        self.owned.stop().await;
        std::mem::take(&mut *lock(&self.series))
    }
}

//! The scenarios besides plain fan-out: idle connections, churn, a flood
//! beside well-behaved traffic, and long polling against WebSocket.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tokio_websockets::Message;

use super::fanout::{self, FanoutArgs, SubVia, Target};
use super::net::{Node, Wire};
use super::{procfs, round};

/// `idle`: hold joined connections and report the server's memory for them.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct IdleArgs {
    /// Connections (connection i joins room i mod rooms).
    #[arg(long, default_value_t = 15_000)]
    pub subs: usize,
    /// Rooms.
    #[arg(long, default_value_t = 150)]
    pub rooms: usize,
    /// Seconds to hold them after they joined (memory is read again at the end).
    #[arg(long, default_value_t = 3.0)]
    pub hold: f64,
}

pub(crate) async fn idle(
    t: &Target,
    a: &IdleArgs,
    label: &str,
) -> anyhow::Result<Map<String, Value>> {
    let mut res = t.result(label);
    res.insert("scenario".into(), json!("idle"));
    res.insert("subs".into(), json!(a.subs));
    res.insert("rooms".into(), json!(a.rooms));
    let (joined, before, after) =
        fanout::connect_measured(t, a.subs, a.rooms, SubVia::Ws, &mut res).await?;
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let held = procfs::sum(&t.nodes.pids);
    let ok = joined.connected();
    if !t.nodes.pids.is_empty() && ok > 0 {
        res.insert("rss_start_mib".into(), json!(before.mib()));
        res.insert("rss_mib".into(), json!(held.mib()));
        res.insert(
            "kib_per_conn".into(),
            json!(round(after.kib_per(&before, ok), 2)),
        );
        res.insert(
            "kib_per_conn_after_hold".into(),
            json!(round(held.kib_per(&before, ok), 2)),
        );
    }
    drop(joined);
    Ok(res)
}

/// `churn`: connections that connect, join, publish once, leave and
/// disconnect in a loop; the server's memory before, during and after.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ChurnArgs {
    /// Concurrent connect/join/publish/disconnect loops.
    #[arg(long, default_value_t = 50)]
    pub workers: usize,
    /// Rooms the workers pick from.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Seconds of churn before the starting memory is read (allocator warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub warmup: f64,
    /// Seconds of churn measured.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Print the server's memory every this many seconds (0: never).
    #[arg(long, default_value_t = 10.0)]
    pub report_every: f64,
    /// Distinct user names the connections cycle through (0: a new user
    /// every cycle, so the server also remembers ever more offline users).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
}

/// One connection's life; errors count, they do not stop the run.
async fn churn_once(
    t: &Target,
    i: usize,
    user: usize,
    room: &str,
    wire: &Arc<Wire>,
) -> anyhow::Result<()> {
    let node = &t.nodes.nodes[i % t.nodes.nodes.len()];
    let mut ws = t.dialer.ws(node, i, &format!("churn{user}"), wire).await?;
    ws.join(room).await?;
    ws.send(format!(
        r#"{{"type":"publish","id":2,"room":"{room}","event":"churn","data":{{"i":{i}}}}}"#
    ))
    .await?;
    ws.await_type("ack").await?;
    ws.send(format!(r#"{{"type":"leave","id":3,"room":"{room}"}}"#))
        .await?;
    ws.await_type("left").await?;
    ws.close().await;
    Ok(())
}

async fn churn_for(
    t: &Target,
    a: &ChurnArgs,
    prefix: &str,
    secs: f64,
    next: &AtomicU64,
    errors: &AtomicU64,
) -> u64 {
    let wire = Arc::new(Wire::default());
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let done = AtomicU64::new(0);
    let workers = (0..a.workers.max(1)).map(|_| async {
        while Instant::now() < deadline {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            let room = format!("{prefix}{}", i % a.rooms.max(1));
            let user = if a.users == 0 { i } else { i % a.users };
            match churn_once(t, i, user, &room, &wire).await {
                Ok(()) => {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("churn: {e:#}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    let reporter = async {
        if a.report_every <= 0.0 || t.nodes.pids.is_empty() {
            return std::future::pending::<()>().await;
        }
        loop {
            tokio::time::sleep(Duration::from_secs_f64(a.report_every)).await;
            let s = procfs::sum(&t.nodes.pids);
            eprintln!(
                "churn: {} cycles, server RSS {:.1} MiB",
                done.load(Ordering::Relaxed),
                s.mib()
            );
        }
    };
    tokio::select! {
        _ = futures_util::future::join_all(workers) => {}
        _ = reporter => {}
    }
    done.load(Ordering::Relaxed)
}

pub(crate) async fn churn(t: &Target, a: &ChurnArgs, label: &str) -> Map<String, Value> {
    let prefix = fanout::fresh_prefix();
    let next = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let idle = procfs::sum(&t.nodes.pids);
    if a.warmup > 0.0 {
        churn_for(t, a, &prefix, a.warmup, &next, &errors).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let start = procfs::sum(&t.nodes.pids);
    let started = Instant::now();
    let cycles = churn_for(t, a, &prefix, a.seconds, &next, &errors).await;
    let secs = started.elapsed().as_secs_f64();
    let peak_during = procfs::sum(&t.nodes.pids);
    // Let the server finish closing what just left.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = procfs::sum(&t.nodes.pids);
    let mut res = t.result(label);
    res.insert("scenario".into(), json!("churn"));
    res.insert("workers".into(), json!(a.workers));
    res.insert("users".into(), json!(a.users));
    res.insert("seconds".into(), json!(a.seconds));
    res.insert("cycles".into(), json!(cycles));
    res.insert("cycles_per_s".into(), json!((cycles as f64 / secs).round()));
    res.insert("errors".into(), json!(errors.load(Ordering::Relaxed)));
    if !t.nodes.pids.is_empty() {
        res.insert("rss_idle_mib".into(), json!(idle.mib()));
        res.insert("rss_start_mib".into(), json!(start.mib()));
        res.insert("rss_at_end_of_churn_mib".into(), json!(peak_during.mib()));
        res.insert("rss_end_mib".into(), json!(end.mib()));
        if start.rss_kib > 0 {
            res.insert(
                "rss_growth_pct".into(),
                json!(round(
                    (end.rss_kib as f64 - start.rss_kib as f64) / start.rss_kib as f64 * 100.0,
                    1
                )),
            );
        }
    }
    res
}

/// `flood`: the same fan-out twice, the second time beside clients that
/// publish as fast as they can (and reconnect when the server closes them).
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct FloodArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Flooding connections.
    #[arg(long, default_value_t = 1)]
    pub flooders: usize,
    /// Flood this node instead of the measured ones: a control run that
    /// costs the machine the same but shares no server with the
    /// well-behaved clients.
    #[arg(long, value_name = "URL")]
    pub flood_url: Option<String>,
}

#[derive(Default)]
struct FloodTally {
    frames: AtomicU64,
    connections: AtomicU64,
    refused: AtomicU64,
    closes: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

async fn flooder(
    k: usize,
    t: Target,
    flood_node: Option<Node>,
    prefix: String,
    tally: Arc<FloodTally>,
    stop: CancellationToken,
) {
    let wire = Arc::new(Wire::default());
    let frame = bytes::Bytes::from(format!(
        r#"{{"type":"publish","id":1,"room":"{prefix}flood","event":"flood","data":{{"x":1}}}}"#
    ));
    let mut attempt = 0usize;
    while !stop.is_cancelled() {
        attempt += 1;
        let node = flood_node
            .as_ref()
            .unwrap_or(&t.nodes.nodes[k % t.nodes.nodes.len()]);
        // Far from the subscribers' and publishers' source addresses.
        let i = 1_000_000 + k * 10_000 + attempt;
        let name = format!("flood{k}");
        let ws = tokio::select! {
            _ = stop.cancelled() => break,
            ws = t.dialer.ws(node, i, &name, &wire) => ws,
        };
        let ws = match ws {
            Ok(ws) => ws,
            Err(_) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        tally.connections.fetch_add(1, Ordering::Relaxed);
        let (mut sink, mut stream) = ws.0.split();
        let reader = async {
            while let Some(Ok(m)) = stream.next().await {
                if let Some((code, _)) = m.as_close() {
                    return u16::from(code);
                }
            }
            1006
        };
        let writer = async {
            loop {
                for _ in 0..64 {
                    if sink.feed(Message::text(frame.clone())).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
                tally.frames.fetch_add(64, Ordering::Relaxed);
            }
        };
        let code = tokio::select! {
            _ = stop.cancelled() => break,
            code = reader => code,
            _ = writer => 1006,
        };
        if let Ok(mut c) = tally.closes.lock() {
            *c.entry(code).or_default() += 1;
        }
    }
}

pub(crate) async fn flood(
    t: &Target,
    a: &FloodArgs,
    label: &str,
) -> anyhow::Result<Vec<Map<String, Value>>> {
    let base = fanout::run(t, &a.fanout, &format!("{label}baseline"), None).await?;
    let flooders = a.flooders;
    let flood_node = a.flood_url.as_deref().map(Node::from_url).transpose()?;
    let target = Target {
        redis_pid: None,
        ..t.clone()
    };
    // The flooders get a thread of their own, so they compete with the
    // measuring tasks for the CPU (as a neighbour would) but never hold up
    // their runtime's workers.
    let beside: fanout::Beside = Box::new(move |stop: CancellationToken| {
        tokio::task::spawn_blocking(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let mut m = Map::new();
                    m.insert("flood_error".into(), json!(e.to_string()));
                    return m;
                }
            };
            rt.block_on(async move {
                let tally = Arc::new(FloodTally::default());
                let prefix = fanout::fresh_prefix();
                let started = Instant::now();
                let tasks: Vec<_> = (0..flooders)
                    .map(|k| {
                        tokio::spawn(flooder(
                            k,
                            target.clone(),
                            flood_node.clone(),
                            prefix.clone(),
                            tally.clone(),
                            stop.clone(),
                        ))
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
                let secs = started.elapsed().as_secs_f64();
                let frames = tally.frames.load(Ordering::Relaxed);
                let mut m = Map::new();
                m.insert("flooders".into(), json!(flooders));
                m.insert("flood_frames".into(), json!(frames));
                m.insert(
                    "flood_frames_per_s".into(),
                    json!((frames as f64 / secs).round()),
                );
                m.insert(
                    "flood_connections".into(),
                    json!(tally.connections.load(Ordering::Relaxed)),
                );
                m.insert(
                    "flood_handshakes_refused".into(),
                    json!(tally.refused.load(Ordering::Relaxed)),
                );
                let closes = tally
                    .closes
                    .lock()
                    .map(|c| {
                        c.iter()
                            .map(|(k, v)| (k.to_string(), json!(v)))
                            .collect::<Map<_, _>>()
                    })
                    .unwrap_or_default();
                m.insert("flood_closed_by_server".into(), Value::Object(closes));
                m
            })
        })
    });
    let mut flooded = fanout::run(t, &a.fanout, &format!("{label}flood"), Some(beside)).await?;
    for k in ["p50_ms", "p99_ms"] {
        if let (Some(b), Some(f)) = (
            base.get(k).and_then(Value::as_f64),
            flooded.get(k).and_then(Value::as_f64),
        ) && b > 0.0
        {
            flooded.insert(format!("{k}_vs_baseline"), json!(round(f / b, 2)));
        }
    }
    Ok(vec![base, flooded])
}

/// `poll-vs-ws`: the same publish stream delivered to WebSocket
/// subscribers, then to long-polling ones.
pub(crate) async fn poll_vs_ws(
    t: &Target,
    a: &FanoutArgs,
    label: &str,
) -> anyhow::Result<Vec<Map<String, Value>>> {
    let mut ws = a.clone();
    ws.subscribe_via = SubVia::Ws;
    let mut poll = a.clone();
    poll.subscribe_via = SubVia::Poll;
    let w = fanout::run(t, &ws, &format!("{label}ws"), None).await?;
    let p = fanout::run(t, &poll, &format!("{label}poll"), None).await?;
    Ok(vec![w, p])
}

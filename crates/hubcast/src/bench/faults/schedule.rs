//! The faults: each injected, held, healed, and logged with its times; the
//! next one starts once every node is ready again, so their effects do not
//! overlap and each can be told apart in the log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::backing::{Backing, Engine};
use super::nodes::Node;
use super::proxy::Link;
use crate::lock::lock;

/// Which schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Schedule {
    /// One of each fault, in a fixed order, short holds (about a minute).
    Short,
    /// Faults drawn at random (seeded) until `--seconds` pass.
    Long,
    /// A rolling deploy behind a load balancer: each node in turn stopped
    /// with SIGTERM (drain), started again, back in rotation; `--restarts`
    /// of them (`rolling`).
    Rolling,
}

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `CLIENT KILL TYPE pubsub` on Redis (Redis only).
    PubsubKill,
    /// SIGKILL a node, start it again.
    NodeKill,
    /// SIGSTOP a node past its presence lease, then SIGCONT.
    NodeStop,
    /// SIGKILL the engine's server, start it again from its files.
    EngineRestart,
    /// Blackhole a node's link to the engine; it must report not ready.
    EngineCut,
    /// Blackhole a node's clients' link to it.
    ClientCut,
    /// Delay a node's links, to the engine and to its clients.
    Delay,
    /// SIGTERM a node (it drains), start it again (`rolling`).
    Restart,
}

/// Every kind, in the short schedule's order.
const ALL: [Kind; 7] = [
    Kind::PubsubKill,
    Kind::NodeKill,
    Kind::NodeStop,
    Kind::EngineRestart,
    Kind::EngineCut,
    Kind::ClientCut,
    Kind::Delay,
];

/// The kinds of fault a schedule draws from on `engine`, in the short
/// schedule's order.
pub(crate) fn kinds(engine: Engine) -> Vec<Kind> {
    ALL.into_iter()
        .filter(|k| engine == Engine::Redis || *k != Kind::PubsubKill)
        .collect()
}

impl Kind {
    /// Its name in the log and the report (`redis_restart` on Redis,
    /// `nats_restart` on NATS).
    pub(crate) fn name(self, engine: Engine) -> &'static str {
        match (self, engine) {
            (Kind::PubsubKill, _) => "pubsub_kill",
            (Kind::NodeKill, _) => "node_kill",
            (Kind::NodeStop, _) => "node_stop",
            (Kind::EngineRestart, Engine::Redis) => "redis_restart",
            (Kind::EngineRestart, Engine::Nats) => "nats_restart",
            (Kind::EngineCut, Engine::Redis) => "redis_cut",
            (Kind::EngineCut, Engine::Nats) => "nats_cut",
            (Kind::ClientCut, _) => "client_cut",
            (Kind::Delay, _) => "delay",
            (Kind::Restart, _) => "rolling_restart",
        }
    }
}

/// A small seeded generator (splitmix64): a schedule is reproduced by its
/// seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The cluster the faults act on.
pub(crate) struct Cluster {
    pub engine: Backing,
    pub nodes: Vec<Node>,
    /// Each node's pid now, for the memory sampler.
    pub pids: Arc<Mutex<Vec<Option<u32>>>>,
    /// Presence lease of the nodes, seconds.
    pub lease: u64,
    /// When the run started.
    pub t0: Instant,
}

/// How a node answered `/readyz` around a cut of its engine link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readiness {
    /// First 503 after the cut, ms after it (none: stayed ready).
    pub not_ready_after_ms: Option<u64>,
    /// First 200 after the heal, ms after it (none: not within 30 s).
    pub ready_again_ms: Option<u64>,
}

/// One fault, as it happened.
#[derive(Debug, Clone)]
pub(crate) struct Injected {
    pub kind: Kind,
    pub node: Option<usize>,
    /// Seconds since the start of the run.
    pub at_s: f64,
    pub healed_s: f64,
    pub detail: String,
    pub readiness: Option<Readiness>,
    /// How a node stopped with SIGTERM exited: with 0 (a restart only).
    pub clean_exit: Option<bool>,
}

impl Injected {
    pub(crate) fn json(&self, engine: Engine) -> Value {
        let mut v = json!({
            "fault": self.kind.name(engine),
            "at_s": crate::bench::round(self.at_s, 1),
            "healed_s": crate::bench::round(self.healed_s, 1),
            "detail": self.detail,
        });
        if let Some(k) = self.node {
            v["node"] = json!(k);
        }
        if let Some(ok) = self.clean_exit {
            v["clean_exit"] = json!(ok);
        }
        if let Some(r) = self.readiness {
            v["not_ready_after_ms"] = json!(r.not_ready_after_ms);
            v["ready_again_ms"] = json!(r.ready_again_ms);
        }
        v
    }
}

/// How long a fault is held, by schedule.
struct Holds {
    kill_down: Duration,
    engine_down: Duration,
    cut: Duration,
    client_cut: Duration,
    delay: Duration,
    delay_by: Duration,
}

fn holds(schedule: Schedule, rng: &mut Rng) -> Holds {
    let s = Duration::from_secs;
    match schedule {
        Schedule::Short | Schedule::Rolling => Holds {
            kill_down: s(2),
            engine_down: s(1),
            cut: s(6),
            client_cut: s(5),
            delay: s(6),
            delay_by: Duration::from_millis(100),
        },
        Schedule::Long => Holds {
            kill_down: s(rng.range(1, 5)),
            engine_down: s(rng.range(1, 5)),
            cut: s(rng.range(5, 15)),
            client_cut: s(rng.range(4, 12)),
            delay: s(rng.range(5, 20)),
            delay_by: Duration::from_millis(rng.range(20, 250)),
        },
    }
}

impl Cluster {
    pub(super) fn since(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub(super) fn note_pids(&self) {
        let pids = self.nodes.iter().map(Node::pid).collect();
        *lock(&self.pids) = pids;
    }

    /// Injects one fault on node `k` (when it concerns a node), holds it,
    /// heals it, and waits until every node is ready again.
    pub(crate) async fn inject(
        &mut self,
        kind: Kind,
        k: usize,
        schedule: Schedule,
        rng: &mut Rng,
    ) -> anyhow::Result<Injected> {
        let h = holds(schedule, rng);
        let at_s = self.since();
        let mut node = Some(k);
        let mut readiness = None;
        let engine = self.engine.engine();
        eprintln!(
            "[{at_s:7.1}s] {} {}",
            kind.name(engine),
            node_label(kind, k)
        );
        let detail = match kind {
            Kind::PubsubKill => {
                node = None;
                let n = self.engine.kill_pubsub().await?;
                format!("{n} pub/sub connections killed")
            }
            Kind::NodeKill => {
                self.nodes[k].kill();
                self.note_pids();
                tokio::time::sleep(h.kill_down).await;
                self.nodes[k].restart().await?;
                self.note_pids();
                format!("SIGKILL, restarted after {:?}", h.kill_down)
            }
            Kind::NodeStop => {
                // Past the lease: other nodes reap its presence meanwhile,
                // and it must find out and take it back when it goes on.
                let hold = Duration::from_secs(self.lease + 3);
                self.nodes[k].signal("STOP")?;
                tokio::time::sleep(hold).await;
                self.nodes[k].signal("CONT")?;
                format!("SIGSTOP for {hold:?} (lease {} s), SIGCONT", self.lease)
            }
            Kind::EngineRestart => {
                node = None;
                self.engine.kill();
                tokio::time::sleep(h.engine_down).await;
                self.engine.restart().await?;
                format!(
                    "{} SIGKILLed, restarted from its files after {:?}",
                    engine.name(),
                    h.engine_down
                )
            }
            Kind::EngineCut => {
                let n = &self.nodes[k];
                n.engine_link.set(Link {
                    blackhole: true,
                    delay: Duration::ZERO,
                });
                let cut = Instant::now();
                let mut not_ready = None;
                while cut.elapsed() < h.cut {
                    if not_ready.is_none() && n.ready().await == Some(false) {
                        not_ready = Some(cut.elapsed().as_millis() as u64);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                n.engine_link.set(Link::default());
                let healed = Instant::now();
                let mut again = None;
                while healed.elapsed() < Duration::from_secs(30) {
                    if n.ready().await == Some(true) {
                        again = Some(healed.elapsed().as_millis() as u64);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                readiness = Some(Readiness {
                    not_ready_after_ms: not_ready,
                    ready_again_ms: again,
                });
                format!(
                    "{} link blackholed for {:?}: not ready after {} ms, ready again {} ms after the heal",
                    engine.name(),
                    h.cut,
                    not_ready.map_or("-".into(), |v| v.to_string()),
                    again.map_or("-".into(), |v| v.to_string()),
                )
            }
            Kind::ClientCut => {
                let n = &self.nodes[k];
                n.client_link.set(Link {
                    blackhole: true,
                    delay: Duration::ZERO,
                });
                tokio::time::sleep(h.client_cut).await;
                n.client_link.set(Link::default());
                format!("clients' link blackholed for {:?}", h.client_cut)
            }
            Kind::Restart => {
                // It needs the balancer's rotation: `Cluster::roll`.
                anyhow::bail!("a rolling restart is not a fault of this schedule");
            }
            Kind::Delay => {
                let n = &self.nodes[k];
                let link = Link {
                    blackhole: false,
                    delay: h.delay_by,
                };
                n.engine_link.set(link);
                n.client_link.set(link);
                tokio::time::sleep(h.delay).await;
                n.engine_link.set(Link::default());
                n.client_link.set(Link::default());
                format!(
                    "{:?} added on its {} and client links for {:?}",
                    h.delay_by,
                    engine.name(),
                    h.delay
                )
            }
        };
        for n in &mut self.nodes {
            n.wait_ready(Duration::from_secs(30)).await?;
        }
        let healed_s = self.since();
        eprintln!("[{healed_s:7.1}s]   healed: {detail}");
        Ok(Injected {
            kind,
            node,
            at_s,
            healed_s,
            detail,
            readiness,
            clean_exit: None,
        })
    }
}

fn node_label(kind: Kind, k: usize) -> String {
    match kind {
        Kind::PubsubKill | Kind::EngineRestart => String::new(),
        _ => format!("node {k}"),
    }
}

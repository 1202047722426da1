//! The run's report: one JSON object (printed as a line with `--json`, as
//! a summary otherwise) and the verdict, with the reason of each failure.

use serde_json::{Map, Value, json};

use super::check::Tally;
use super::schedule::{Injected, Kind, Schedule, kinds};
use super::{FaultsArgs, Presence, Series};
use crate::bench::round;

/// A node cut off from its engine must answer not ready within this.
const NOT_READY_WITHIN_MS: u64 = 10_000;

/// Growth over the second half of a long run that counts as a leak, when
/// it is also more than a fifth of where that half started.
const GROWTH_KIB: f64 = 16.0 * 1024.0;

/// What the report is made from.
pub(crate) struct Report<'a> {
    pub label: &'a str,
    pub args: &'a FaultsArgs,
    pub seed: u64,
    pub seconds: f64,
    pub publishing_s: f64,
    pub injected: &'a [Injected],
    pub tally: &'a Tally,
    pub publish_errors: u64,
    pub abandoned: u64,
    pub reconnects: u64,
    pub unreadable: u64,
    /// Subscribers' first joins refused for a passing reason and sent
    /// again.
    pub join_retries: u64,
    pub drained: bool,
    pub presence: &'a Presence,
    pub rss: &'a [Series],
    pub judge_memory: bool,
    /// Rolling schedule: per node, the most connections the balancer
    /// handed it within one second, and within 100 ms, while the schedule
    /// ran.
    pub peak_reconnects: Option<(&'a [u64], &'a [u64])>,
}

/// One node's memory: first and last RSS (MiB), and the fitted growth over
/// the second half of the run of its last process (MiB).
struct NodeMemory {
    first_mib: f64,
    last_mib: f64,
    growth_mib: Option<f64>,
    growing: bool,
}

fn node_memory(series: &Series, seconds: f64) -> NodeMemory {
    let mib = |kib: u64| round(kib as f64 / 1024.0, 1);
    let first = series.first().map_or(0, |s| s.2);
    let last = series.last().map_or(0, |s| s.2);
    let pid = series.last().map(|s| s.1);
    let half: Vec<(f64, f64)> = series
        .iter()
        .filter(|s| Some(s.1) == pid && s.0 >= seconds / 2.0)
        .map(|s| (s.0, s.2 as f64))
        .collect();
    let mut m = NodeMemory {
        first_mib: mib(first),
        last_mib: mib(last),
        growth_mib: None,
        growing: false,
    };
    if half.len() >= 10 {
        // Least squares: the trend, not one sample's noise.
        let n = half.len() as f64;
        let mx = half.iter().map(|p| p.0).sum::<f64>() / n;
        let my = half.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = half.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
        let sxy: f64 = half.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx > 0.0 {
            let span = half[half.len() - 1].0 - half[0].0;
            let growth = sxy / sxx * span;
            m.growth_mib = Some(round(growth / 1024.0, 1));
            m.growing = growth > GROWTH_KIB && growth > 0.2 * half[0].1;
        }
    }
    m
}

impl Report<'_> {
    /// The report, and whether the run passed.
    pub(crate) fn build(&self) -> (Map<String, Value>, bool) {
        let t = self.tally;
        let a = self.args;
        let mut failures: Vec<String> = Vec::new();
        if t.lost > 0 {
            failures.push(format!("{} acked messages lost", t.lost));
        }
        if t.duplicated > 0 {
            failures.push(format!("{} deliveries duplicated", t.duplicated));
        }
        if t.out_of_order > 0 {
            failures.push(format!("{} deliveries out of order", t.out_of_order));
        }
        if t.silent_gaps > 0 {
            failures.push(format!("{} offsets skipped untold", t.silent_gaps));
        }
        if t.conflicting_acks > 0 {
            failures.push(format!("{} conflicting acks", t.conflicting_acks));
        }
        if t.acked == 0 {
            failures.push("nothing was acked".into());
        }
        if !self.drained {
            failures.push("subscribers did not catch up within 30 s".into());
        }
        // After the lease, presence must be exact: a ghost (the entry of a
        // connection that is gone) is what the lease exists to remove, and a
        // live connection missing from the list is a presence the clients
        // were told about wrongly; either fails the run.
        // No check warns today; the report keeps the field for its readers.
        let warnings: Vec<String> = Vec::new();
        if self.presence.ghosts > 0 || self.presence.unanswered > 0 {
            failures.push(format!(
                "presence after the lease: {} ghosts, {} unanswered",
                self.presence.ghosts, self.presence.unanswered
            ));
        }
        if self.presence.missing > 0 {
            failures.push(format!(
                "presence after the lease: {} live connections not listed",
                self.presence.missing
            ));
        }
        let rolling = a.schedule == Schedule::Rolling;
        if rolling && t.told > 0 {
            // Recovery covers a rolling restart whole: no client may be
            // told it missed anything.
            failures.push(format!(
                "clients told {} times that messages were missed (unrecovered)",
                t.told
            ));
        }
        let unclean = self
            .injected
            .iter()
            .filter(|i| i.clean_exit == Some(false))
            .count();
        if unclean > 0 {
            failures.push(format!(
                "{unclean} nodes exited with an error after SIGTERM"
            ));
        }
        let cuts: Vec<_> = self.injected.iter().filter_map(|i| i.readiness).collect();
        for r in &cuts {
            match r.not_ready_after_ms {
                Some(ms) if ms <= NOT_READY_WITHIN_MS => {}
                _ => failures.push(format!(
                    "a node cut off from its engine was not reported not ready within {NOT_READY_WITHIN_MS} ms"
                )),
            }
            if r.ready_again_ms.is_none() {
                failures.push("a node was not ready again within 30 s of the heal".into());
            }
        }
        let memory: Vec<NodeMemory> = self
            .rss
            .iter()
            .map(|s| node_memory(s, self.seconds))
            .collect();
        if self.judge_memory && memory.iter().any(|m| m.growing) {
            failures.push("a node's memory kept growing in the second half".into());
        }

        let mut by_kind = Map::new();
        for kind in kinds(a.broker).into_iter().chain([Kind::Restart]) {
            let n = self.injected.iter().filter(|i| i.kind == kind).count();
            by_kind.insert(kind.name(a.broker).into(), json!(n));
        }
        let mut r = Map::new();
        let mut put = |k: &str, v: Value| {
            r.insert(k.into(), v);
        };
        put("label", json!(self.label));
        put("broker", json!(a.broker.key()));
        put(
            "schedule",
            json!(format!("{:?}", a.schedule).to_lowercase()),
        );
        put("seed", json!(self.seed));
        put("nodes", json!(a.nodes));
        put("rooms", json!(a.rooms));
        put("publishers", json!(a.publishers));
        put("subscribers", json!(a.subscribers));
        put("rate_per_publisher", json!(a.rate));
        put("seconds", json!(round(self.seconds, 1)));
        put("publishing_s", json!(round(self.publishing_s, 1)));
        put("faults_injected", json!(self.injected.len()));
        put("faults", Value::Object(by_kind));
        put("acked", json!(t.acked));
        put("acked_duplicate", json!(t.acked_duplicate));
        put("publish_errors_retried", json!(self.publish_errors));
        put("acked_after_retries", json!(t.retried));
        put("abandoned", json!(self.abandoned));
        put("expected", json!(t.expected));
        put("delivered", json!(t.delivered));
        put("lost", json!(t.lost));
        put("duplicated", json!(t.duplicated));
        put("out_of_order", json!(t.out_of_order));
        put("silent_gaps", json!(t.silent_gaps));
        put("told", json!(t.told));
        put("excused", json!(t.excused));
        put("conflicting_acks", json!(t.conflicting_acks));
        put("reconnects", json!(self.reconnects));
        put("join_retries", json!(self.join_retries));
        if let Some((peak, burst)) = self.peak_reconnects {
            put("restarts", json!(self.injected.len()));
            put("drain_delay_s", json!(a.drain_delay));
            put("shutdown_timeout_s", json!(a.shutdown_timeout));
            put(
                "peak_reconnects_per_s",
                json!(peak.iter().copied().max().unwrap_or(0)),
            );
            put("peak_reconnects_per_s_by_node", json!(peak));
            put(
                "peak_reconnects_per_100ms",
                json!(burst.iter().copied().max().unwrap_or(0)),
            );
        }
        put("unreadable", json!(self.unreadable));
        put("caught_up", json!(self.drained));
        put("presence_ghosts", json!(self.presence.ghosts));
        put("presence_missing", json!(self.presence.missing));
        put("presence_exact_after_s", json!(self.presence.exact_after_s));
        put(
            "not_ready_after_ms",
            json!(
                cuts.iter()
                    .map(|c| c.not_ready_after_ms)
                    .collect::<Vec<_>>()
            ),
        );
        put(
            "ready_again_ms",
            json!(cuts.iter().map(|c| c.ready_again_ms).collect::<Vec<_>>()),
        );
        put(
            "rss_first_mib",
            json!(memory.iter().map(|m| m.first_mib).collect::<Vec<_>>()),
        );
        put(
            "rss_last_mib",
            json!(memory.iter().map(|m| m.last_mib).collect::<Vec<_>>()),
        );
        put(
            "rss_growth_second_half_mib",
            json!(memory.iter().map(|m| m.growth_mib).collect::<Vec<_>>()),
        );
        put("memory_judged", json!(self.judge_memory));
        put(
            "fault_log",
            json!(
                self.injected
                    .iter()
                    .map(|i| i.json(a.broker))
                    .collect::<Vec<_>>()
            ),
        );
        if !self.presence.examples.is_empty() {
            put("presence_examples", json!(self.presence.examples));
        }
        if !t.examples.is_empty() {
            put("lost_examples", json!(t.examples));
        }
        let passed = failures.is_empty();
        put("verdict", json!(if passed { "pass" } else { "fail" }));
        put("failures", json!(failures));
        put("warnings", json!(warnings));
        (r, passed)
    }
}

//! A fan-out run's result: the run's shape, then the subscribers' accounts
//! summed against what was acknowledged (lost, duplicated, out of order,
//! closed by the server), latency percentiles and cost per delivery.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use super::super::hist::Hist;
use super::super::round;
use super::subscribe::SubStats;
use super::{FanoutArgs, SubVia, Tally, Target};

/// The run's shape, the first keys of its result.
pub(super) fn describe(t: &Target, spec: &FanoutArgs, label: &str) -> Map<String, Value> {
    let mut res = t.result(label);
    res.insert("subs".into(), json!(spec.subs));
    res.insert("rooms".into(), json!(spec.rooms));
    res.insert("pubs".into(), json!(spec.pubs));
    res.insert("rate".into(), json!(spec.rate));
    res.insert("size".into(), json!(spec.size));
    res.insert(
        "subscribe_via".into(),
        json!(format!("{:?}", spec.subscribe_via).to_lowercase()),
    );
    res.insert(
        "publish_via".into(),
        json!(format!("{:?}", spec.publish_via).to_lowercase()),
    );
    res
}

/// What was measured around the publishing and the drain.
pub(super) struct Readings {
    /// Seconds of publishing.
    pub(super) pub_secs: f64,
    /// Seconds of publishing plus the drain.
    pub(super) elapsed: f64,
    /// Server CPU seconds over `elapsed`, when server pids are known.
    pub(super) server_cpu_s: Option<f64>,
    /// Redis CPU seconds over `elapsed`, when its pid is known.
    pub(super) redis_cpu_s: Option<f64>,
    /// Bytes the subscribers read and wrote over `elapsed`.
    pub(super) sub_read: u64,
    pub(super) sub_written: u64,
}

/// Adds the outcome to `res`: deliveries against what was due, latency,
/// and costs per delivery.
pub(super) fn results(
    res: &mut Map<String, Value>,
    spec: &FanoutArgs,
    tally: &Tally,
    members: &[u64],
    subs: &[SubStats],
    r: &Readings,
) {
    let mut all = Hist::default();
    let (mut lost, mut extra, mut disorder, mut requests, mut http_errors) = (0, 0, 0, 0, 0);
    let mut closed: BTreeMap<u16, u64> = BTreeMap::new();
    for s in subs {
        all.merge(&s.hist);
        disorder += s.disorder;
        requests += s.requests;
        http_errors += s.http_errors;
        let want = tally.acked[s.room].load(Ordering::Relaxed);
        match s.closed {
            // Closed by the server (4000 for a slow consumer): not silent
            // loss, counted apart.
            Some(code) => *closed.entry(code).or_default() += 1,
            None => {
                lost += want.saturating_sub(s.received);
                extra += s.received.saturating_sub(want);
            }
        }
    }
    let rcv = tally.received.load(Ordering::Relaxed);
    let published = tally.published.load(Ordering::Relaxed);
    res.insert("published".into(), json!(published));
    res.insert(
        "publish_per_s".into(),
        json!((published as f64 / r.pub_secs).round()),
    );
    res.insert("expected".into(), json!(tally.expected(members)));
    res.insert("received".into(), json!(rcv));
    res.insert("lost".into(), json!(lost));
    res.insert("duplicates".into(), json!(extra));
    res.insert("out_of_order".into(), json!(disorder));
    res.insert(
        "closed_by_server".into(),
        Value::Object(
            closed
                .iter()
                .map(|(c, n)| (c.to_string(), json!(n)))
                .collect(),
        ),
    );
    res.insert(
        "deliveries_per_s".into(),
        json!((rcv as f64 / r.elapsed).round()),
    );
    for (k, p) in [
        ("p50_ms", 0.5),
        ("p90_ms", 0.9),
        ("p99_ms", 0.99),
        ("p999_ms", 0.999),
        ("max_ms", 1.0),
    ] {
        res.insert(k.into(), json!(round(all.pct_ms(p), 3)));
    }
    if rcv > 0 {
        for (name, cpu) in [("server", r.server_cpu_s), ("redis", r.redis_cpu_s)] {
            if let Some(cpu) = cpu {
                res.insert(format!("{name}_cpu_s"), json!(round(cpu, 2)));
                res.insert(
                    format!("{name}_cpu_us_per_delivery"),
                    json!(round(cpu / rcv as f64 * 1e6, 2)),
                );
            }
        }
        res.insert(
            "sub_bytes_in_per_delivery".into(),
            json!(round(r.sub_read as f64 / rcv as f64, 1)),
        );
        res.insert(
            "sub_bytes_out_per_delivery".into(),
            json!(round(r.sub_written as f64 / rcv as f64, 1)),
        );
        if spec.subscribe_via == SubVia::Poll {
            res.insert(
                "requests_per_delivery".into(),
                json!(round(requests as f64 / rcv as f64, 4)),
            );
            res.insert("poll_requests".into(), json!(requests));
            res.insert("poll_http_errors".into(), json!(http_errors));
        }
    }
    res.insert(
        "publishes_rejected".into(),
        json!(tally.rejected.load(Ordering::Relaxed)),
    );
    res.insert(
        "publisher_errors".into(),
        json!(tally.publisher_errors.load(Ordering::Relaxed)),
    );
}

//! A fan-out run's result: the run's shape, then the subscribers' accounts
//! held against what was acknowledged (lost, received twice, delivered
//! without an acknowledgement, out of order, closed by the server), latency
//! percentiles and cost per delivery.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use super::super::hist::Hist;
use super::super::round;
use super::offsets::Offsets;
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

/// The subscribers' deliveries held against the acknowledged offsets of
/// their rooms.
#[derive(Debug, Default, PartialEq, Eq)]
struct Account {
    /// Acknowledged offsets an open subscriber never received. A
    /// subscriber the server closed (4000 for a slow consumer) is not
    /// silent loss: it is counted in `closed_by_server` instead.
    lost: u64,
    /// Offsets a subscriber received more than once: the server sent a
    /// message twice.
    duplicates: u64,
    /// Offsets received that no acknowledgement named: publishes that went
    /// through while their acknowledgement was lost (the publisher closed
    /// before it came, or was answered with an error such as `timeout`).
    /// Not the server's fault, and no duplicate: each arrived once.
    unacked: u64,
}

impl Account {
    /// Adds one subscriber's deliveries; `acked` is its room's.
    fn add(&mut self, s: &SubStats, acked: Option<&Offsets>) {
        let none = Offsets::default();
        let acked = acked.unwrap_or(&none);
        self.duplicates += s.repeats;
        self.unacked += s.offsets.count_not_in(acked);
        if s.closed.is_none() {
            self.lost += acked.count_not_in(&s.offsets);
        }
    }
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
    let (mut disorder, mut requests, mut http_errors) = (0, 0, 0);
    let mut closed: BTreeMap<u16, u64> = BTreeMap::new();
    let acked: Vec<Offsets> = tally
        .acked_offsets
        .iter()
        .map(|set| crate::lock(set).clone())
        .collect();
    let mut account = Account::default();
    for s in subs {
        all.merge(&s.hist);
        disorder += s.disorder;
        requests += s.requests;
        http_errors += s.http_errors;
        if let Some(code) = s.closed {
            *closed.entry(code).or_default() += 1;
        }
        account.add(s, acked.get(s.room));
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
    res.insert("lost".into(), json!(account.lost));
    res.insert("duplicates".into(), json!(account.duplicates));
    res.insert("unacked_deliveries".into(), json!(account.unacked));
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

#[cfg(test)]
mod tests {
    use super::super::{PubVia, SubVia};
    use super::*;

    fn offsets(of: impl IntoIterator<Item = u64>) -> Offsets {
        let mut set = Offsets::default();
        for o in of {
            set.insert(o);
        }
        set
    }

    /// A subscriber of room 0 that received `received`, in that order.
    fn sub(received: &[u64], closed: Option<u16>) -> SubStats {
        let tally = Tally::default();
        let mut s = SubStats::new(0);
        for o in received {
            let frame = format!(r#"{{"type":"message","room":"r","offset":{o},"data":{{}}}}"#);
            s.on_frame(frame.as_bytes(), &tally);
        }
        s.closed = closed;
        s
    }

    fn account(acked: &Offsets, subs: &[SubStats]) -> Account {
        let mut a = Account::default();
        for s in subs {
            a.add(s, Some(acked));
        }
        a
    }

    #[test]
    fn a_delivery_whose_ack_was_lost_is_no_duplicate() {
        // 6 and 7 went through, but their publisher closed before the
        // acks came: each arrived once.
        let acked = offsets(1..=5);
        let a = account(&acked, &[sub(&[1, 2, 3, 4, 5, 6, 7], None)]);
        assert_eq!(
            a,
            Account {
                lost: 0,
                duplicates: 0,
                unacked: 2
            }
        );
    }

    #[test]
    fn an_offset_received_twice_is_a_duplicate() {
        let acked = offsets(1..=3);
        let a = account(&acked, &[sub(&[1, 2, 2, 3, 1], None)]);
        assert_eq!(
            a,
            Account {
                lost: 0,
                duplicates: 2,
                unacked: 0
            }
        );
    }

    #[test]
    fn a_loss_and_an_unacked_delivery_do_not_cancel_out() {
        // 3 was acknowledged and never came; 4 came without an ack. Equal
        // counts, so comparing numbers alone saw neither.
        let acked = offsets([1, 2, 3]);
        let a = account(&acked, &[sub(&[1, 2, 4], None)]);
        assert_eq!(
            a,
            Account {
                lost: 1,
                duplicates: 0,
                unacked: 1
            }
        );
    }

    #[test]
    fn a_subscriber_the_server_closed_loses_nothing_silently() {
        let acked = offsets(1..=4);
        let a = account(&acked, &[sub(&[1, 1, 5], Some(4000)), sub(&[1, 2], None)]);
        assert_eq!(
            a,
            Account {
                lost: 2,
                duplicates: 1,
                unacked: 1
            }
        );
    }

    #[test]
    fn the_report_names_both_counts() {
        let spec = FanoutArgs {
            subs: 2,
            rooms: 1,
            pubs: 1,
            rate: 0,
            seconds: 1.0,
            size: 1,
            window: 1,
            subscribe_via: SubVia::Ws,
            publish_via: PubVia::Ws,
        };
        let tally = Tally::new(1);
        for o in 1..=3 {
            tally.ack(0, Some(o));
        }
        // One subscriber got 1 twice, the other 4, whose ack was lost.
        let subs = [sub(&[1, 1, 2, 3], None), sub(&[1, 2, 3, 4], None)];
        let readings = Readings {
            pub_secs: 1.0,
            elapsed: 1.0,
            server_cpu_s: None,
            redis_cpu_s: None,
            sub_read: 0,
            sub_written: 0,
        };
        let mut res = Map::new();
        results(&mut res, &spec, &tally, &[2], &subs, &readings);
        assert_eq!(res["expected"], 6);
        assert_eq!(res["lost"], 0);
        assert_eq!(res["duplicates"], 1);
        assert_eq!(res["unacked_deliveries"], 1);
        assert_eq!(res["out_of_order"], 0);
    }
}

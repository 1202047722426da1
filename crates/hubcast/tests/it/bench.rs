//! A short smoke of `hubcast bench`: every scenario against nodes it starts
//! itself, small and bounded (a few seconds each). The figures are not
//! judged here (the machines are shared); what must hold is that the tool
//! runs, reports what it claims to measure, and counts every message.

use crate::common;

use std::process::Command;

use serde_json::Value;

/// Runs `hubcast bench ARGS --json` and parses its result lines.
fn bench(args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .arg("bench")
        .args(args)
        .args(["--json", "--src-ips", "4"])
        .output()
        .expect("run hubcast bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn num(r: &Value, k: &str) -> f64 {
    r[k].as_f64()
        .unwrap_or_else(|| panic!("no number `{k}` in {r}"))
}

/// Every subscriber got every acknowledged message once, in order.
fn assert_complete(r: &Value, subs: f64) {
    assert_eq!(num(r, "connected"), subs, "{r}");
    assert!(num(r, "expected") > 0.0, "nothing published: {r}");
    assert_eq!(num(r, "received"), num(r, "expected"), "{r}");
    assert_eq!(num(r, "lost"), 0.0, "{r}");
    assert_eq!(num(r, "duplicates"), 0.0, "{r}");
    assert_eq!(num(r, "unacked_deliveries"), 0.0, "{r}");
    assert_eq!(num(r, "out_of_order"), 0.0, "{r}");
    assert!(
        num(r, "p50_ms") > 0.0 && num(r, "p99_ms") >= num(r, "p50_ms"),
        "{r}"
    );
    assert!(num(r, "server_cpu_us_per_delivery") >= 0.0, "{r}");
    assert!(num(r, "kib_per_conn").is_finite(), "{r}");
}

#[test]
fn fanout_over_two_nodes_on_redis_counts_every_message() {
    // Two nodes act as one server only on a shared engine.
    let prefix = common::unique_prefix();
    let serve = format!(
        "--broker redis --redis-url {} --redis-prefix {prefix}",
        common::redis_url()
    );
    let r = bench(&[
        "fanout",
        "--spawn",
        "2",
        "--serve-args",
        &serve,
        "--subs",
        "60",
        "--rooms",
        "3",
        "--pubs",
        "2",
        "--rate",
        "200",
        "--seconds",
        "1",
    ]);
    common::clean_redis(&prefix);
    assert_eq!(r.len(), 1);
    assert_eq!(num(&r[0], "nodes"), 2.0);
    assert_complete(&r[0], 60.0);
    // Each message went to the 20 members of its room, on both nodes.
    assert_eq!(
        num(&r[0], "expected"),
        num(&r[0], "published") * 20.0,
        "{}",
        r[0]
    );
}

#[test]
fn two_memory_nodes_are_two_servers_and_the_bench_says_so() {
    // Without a shared engine, half of each room's members are on the
    // other node: the tool must report them as lost, not hide them.
    let r = bench(&[
        "fanout",
        "--spawn",
        "2",
        "--subs",
        "20",
        "--rooms",
        "1",
        "--pubs",
        "1",
        "--rate",
        "100",
        "--seconds",
        "0.5",
    ]);
    assert_eq!(
        num(&r[0], "received") * 2.0,
        num(&r[0], "expected"),
        "{}",
        r[0]
    );
    assert_eq!(num(&r[0], "lost"), num(&r[0], "received"), "{}", r[0]);
}

#[test]
fn fanout_as_fast_as_acks_allow_over_http() {
    let r = bench(&[
        "fanout",
        "--spawn",
        "1",
        "--subs",
        "40",
        "--rooms",
        "2",
        "--pubs",
        "2",
        "--rate",
        "0",
        "--seconds",
        "1",
        "--publish-via",
        "http",
    ]);
    assert_complete(&r[0], 40.0);
    assert_eq!(r[0]["publish_via"], "http");
}

#[test]
fn poll_vs_ws_delivers_the_same_stream_both_ways() {
    let r = bench(&[
        "poll-vs-ws",
        "--spawn",
        "1",
        "--subs",
        "30",
        "--rooms",
        "3",
        "--pubs",
        "1",
        "--rate",
        "100",
        "--seconds",
        "1",
    ]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["subscribe_via"], "ws");
    assert_eq!(r[1]["subscribe_via"], "poll");
    for run in &r {
        assert_complete(run, 30.0);
        assert!(num(run, "sub_bytes_in_per_delivery") > 0.0, "{run}");
    }
    let rpd = num(&r[1], "requests_per_delivery");
    assert!(rpd > 0.0 && rpd <= 1.5, "{}", r[1]);
}

#[test]
fn flood_runs_beside_a_baseline_and_the_flooder_is_closed() {
    let r = bench(&[
        "flood",
        "--spawn",
        "1",
        "--subs",
        "30",
        "--rooms",
        "3",
        "--pubs",
        "1",
        "--rate",
        "100",
        "--seconds",
        "2",
    ]);
    assert_eq!(r.len(), 2);
    assert_complete(&r[0], 30.0);
    assert_complete(&r[1], 30.0);
    assert!(num(&r[1], "flood_frames") > 0.0, "{}", r[1]);
    assert!(num(&r[1], "p99_ms_vs_baseline") > 0.0, "{}", r[1]);
    // The server closed the flooding connection at least once.
    let closes = r[1]["flood_closed_by_server"].as_object().expect("closes");
    assert!(!closes.is_empty(), "{}", r[1]);
}

#[test]
fn idle_and_churn_report_memory() {
    let r = bench(&[
        "idle", "--spawn", "1", "--subs", "100", "--rooms", "5", "--hold", "0.2",
    ]);
    assert_eq!(num(&r[0], "connected"), 100.0);
    assert!(num(&r[0], "kib_per_conn") > 0.0, "{}", r[0]);
    let r = bench(&[
        "churn",
        "--spawn",
        "1",
        "--workers",
        "4",
        "--warmup",
        "0.5",
        "--seconds",
        "1",
        "--report-every",
        "0",
    ]);
    assert!(num(&r[0], "cycles") > 0.0, "{}", r[0]);
    assert_eq!(num(&r[0], "errors"), 0.0, "{}", r[0]);
    assert!(num(&r[0], "rss_end_mib") > 0.0, "{}", r[0]);
}

#[test]
fn bad_targets_are_clear_failures() {
    for (url, says) in [
        ("ws://localhost:1/ws", "must be an IP address"),
        ("ws://127.0.0.1:1/ws", "no subscriber could connect"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hubcast"))
            .args([
                "bench",
                "fanout",
                "--subs",
                "3",
                "--seconds",
                "0.1",
                "--url",
                url,
            ])
            .output()
            .expect("run hubcast bench");
        assert!(!out.status.success(), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{url}: {err}");
    }
}

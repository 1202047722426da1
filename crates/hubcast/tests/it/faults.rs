//! The fault-injection harness (`hubcast bench faults`), short schedule:
//! three nodes on a private Redis (append-only file on), and again on a
//! private NATS JetStream, clients on the Rust client, one of each fault
//! (pub/sub connections killed, on Redis; a node SIGKILLed and restarted;
//! a node SIGSTOPped past its presence lease; the engine's server SIGKILLed
//! and restarted; a node's link to it blackholed; a node's clients' link
//! blackholed; both links delayed). The harness starts and stops every
//! process and port it uses; its engine's server is its own, so nothing
//! outlives it. Each takes about a minute and a half.

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Reads a pipe to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

pub(crate) fn num(r: &Value, k: &str) -> u64 {
    r[k].as_u64()
        .unwrap_or_else(|| panic!("no count `{k}` in {r}"))
}

#[test]
fn short_schedule_loses_and_duplicates_nothing() {
    short_schedule(
        "redis",
        &[
            "pubsub_kill",
            "node_kill",
            "node_stop",
            "redis_restart",
            "redis_cut",
            "client_cut",
            "delay",
        ],
    );
}

/// The same on NATS JetStream (its own `nats-server -js`): every fault but
/// the pub/sub kill, which is Redis's own. A node stopped or cut off past
/// its lease registers its presence again.
#[test]
fn short_schedule_on_nats_loses_and_duplicates_nothing() {
    short_schedule(
        "nats",
        &[
            "node_kill",
            "node_stop",
            "nats_restart",
            "nats_cut",
            "client_cut",
            "delay",
        ],
    );
}

/// The short schedule on `broker`: each of `kinds` injected once, and the
/// verdict and counts of a pass.
fn short_schedule(broker: &str, kinds: &[&str]) {
    let (r, stderr, status) = run_faults(&[
        "--broker",
        broker,
        "--schedule",
        "short",
        "--nodes",
        "3",
        "--rooms",
        "2",
        "--publishers",
        "2",
        "--subscribers",
        "4",
        "--rate",
        "10",
    ]);
    let faults = &r["faults"];
    for kind in kinds {
        assert_eq!(faults[kind], 1, "one {kind}: {r}");
    }
    assert_eq!(r["broker"], broker, "{r}");
    assert!(num(&r, "acked") > 0, "{r}");
    assert_eq!(num(&r, "lost"), 0, "{r}\n{stderr}");
    assert_eq!(num(&r, "duplicated"), 0, "{r}\n{stderr}");
    assert_eq!(num(&r, "out_of_order"), 0, "{r}");
    assert_eq!(num(&r, "silent_gaps"), 0, "{r}");
    assert_eq!(num(&r, "presence_ghosts"), 0, "{r}");
    assert_eq!(num(&r, "presence_missing"), 0, "{r}\n{stderr}");
    // Cut off from its engine, the node said so within seconds, and came
    // back.
    let not_ready = r["not_ready_after_ms"].as_array().expect("readiness");
    assert_eq!(not_ready.len(), 1, "{r}");
    assert!(not_ready[0].as_u64().is_some_and(|ms| ms <= 10_000), "{r}");
    assert!(r["ready_again_ms"][0].as_u64().is_some(), "{r}");
    assert_eq!(r["verdict"], "pass", "{r}\n{stderr}");
    assert!(status.success(), "{r}\n{stderr}");
}

/// Runs `hubcast bench faults ARGS --json` to its end: its report, its
/// stderr (the run's log), and how it exited.
pub(crate) fn run_faults(args: &[&str]) -> (Value, String, std::process::ExitStatus) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["bench", "faults"])
        .args(args)
        .arg("--json")
        // Its own process group: the nodes and Redis it starts are in it,
        // so a run that hangs can be killed whole.
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hubcast bench faults");
    // The harness bounds each of its own waits; this bound is the last
    // resort. The pipes are read meanwhile so the run never blocks on them.
    let pid = child.id();
    let out_reader = drain(child.stdout.take());
    let err_reader = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{pid}")])
                .status();
            let _ = child.wait();
            panic!("hubcast bench faults did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out_reader.join().expect("stdout");
    let stderr = err_reader.join().expect("stderr");
    let line = stdout.lines().last().unwrap_or_default();
    let r: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (r, stderr, status)
}

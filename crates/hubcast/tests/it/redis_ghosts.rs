//! A node killed with SIGKILL leaves no ghost users: when its lease runs
//! out, another node removes its presence entries and sends the leave
//! events.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Server};
use hubcast::config::{BrokerKind, Config};
use serde_json::json;

#[tokio::test]
async fn a_killed_node_leaves_no_ghost_presence() {
    let (_, mut doomed, port, survivor) = child_and_survivor("doomed").await;
    let mut ghost = Client::connect(&format!("ws://127.0.0.1:{port}/ws?name=Ghost")).await;
    ghost.join("lobby").await;
    let mut watcher = survivor.named("Watcher").await;
    let j = watcher.join("lobby").await;
    assert_eq!(j["members"].as_array().unwrap().len(), 2, "{j}");

    doomed.kill().unwrap(); // SIGKILL: no cleanup on that node
    doomed.wait().unwrap();
    let t0 = Instant::now();
    let ev = watcher.expect("presence").await;
    assert_eq!(ev["action"], "leave");
    assert_eq!(ev["name"], "Ghost");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "ghost removed after {took:?}"
    );
    let p = watcher
        .call(json!({"type":"presence","room":"lobby"}))
        .await;
    let names: Vec<&str> = p["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Watcher"]);
    drop(ghost);
    survivor.stop().await;
}

/// A node cut off past its lease is reaped by another; a renewal it had
/// sent before the cut, held in the network, lands after the reap and puts
/// its lease back. The node must still notice that its entries are gone
/// and register them again (found by `hubcast bench faults`).
#[tokio::test]
async fn a_reaped_node_whose_late_renewal_lands_registers_again() {
    let (prefix, mut stalled, port, survivor) = child_and_survivor("stalled").await;
    let mut alive = Client::connect(&format!("ws://127.0.0.1:{port}/ws?name=Alive")).await;
    alive.join("lobby").await;
    let mut watcher = survivor.named("Watcher").await;
    let j = watcher.join("lobby").await;
    assert_eq!(j["members"].as_array().unwrap().len(), 2, "{j}");

    // The cut: the node renews nothing, and its lease runs out.
    let pid = stalled.id().to_string();
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let ev = watcher.expect("presence").await;
    assert_eq!(
        (ev["action"].as_str(), ev["name"].as_str()),
        (Some("leave"), Some("Alive"))
    );
    // The held renewal lands after the reap (which removes the lease last).
    let mut redis = redis::Client::open(common::redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let nodes = format!("{prefix}:nodes");
    common::wait_until(|| {
        let gone = redis::cmd("ZSCORE")
            .arg(&nodes)
            .arg("stalled")
            .query::<Option<f64>>(&mut redis)
            .unwrap()
            .is_none();
        async move { gone.then_some(()) }
    })
    .await;
    let until = hubcast::unix_ms() + 60_000;
    let _: i64 = redis::cmd("ZADD")
        .arg(&nodes)
        .arg(until)
        .arg("stalled")
        .query(&mut redis)
        .unwrap();
    signal("-CONT");
    // The node registers its entries again: the watcher sees Alive come back.
    let ev = watcher.expect("presence").await;
    assert_eq!(
        (ev["action"].as_str(), ev["name"].as_str()),
        (Some("join"), Some("Alive")),
        "{ev}"
    );
    drop(alive);
    let _ = stalled.kill();
    let _ = stalled.wait();
    survivor.stop().await;
}

/// A `hubcast serve` child named `node` on a fresh Redis prefix (presence
/// lease 2 s), ready, and an in-process node "survivor" on the same
/// prefix: the prefix, the child, its port and the survivor.
async fn child_and_survivor(node: &str) -> (String, std::process::Child, u16, Server) {
    let prefix = common::unique_prefix();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--broker", "redis"])
        .args([
            "--redis-url",
            &common::redis_url(),
            "--redis-prefix",
            &prefix,
        ])
        .args(["--presence-lease", "2", "--node-id", node])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = common::listening_port(&mut child).await;
    common::wait_for(port, "/readyz").await;
    let survivor = Server::with_config(
        Config {
            node_id: "survivor".into(),
            broker: BrokerKind::Redis,
            redis_url: common::redis_url(),
            redis_prefix: prefix.clone(),
            presence_lease: 2,
            ..Config::default()
        },
        Some(prefix.clone()),
    )
    .await;
    (prefix, child, port, survivor)
}

//! A node killed with SIGKILL leaves no ghosts, on Redis and on NATS: when
//! its lease runs out, another node removes its presence entries and
//! connections, sends the leave events, and its users go offline.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Engine, Server};
use hubcast::config::{BrokerKind, Config};
use serde_json::json;

mod a_killed_node_leaves_no_ghost_presence {
    use super::*;

    #[tokio::test]
    async fn redis() {
        killed_node_leaves_no_ghost(Engine::Redis).await;
    }

    #[tokio::test]
    async fn nats() {
        killed_node_leaves_no_ghost(Engine::Nats).await;
    }
}

async fn killed_node_leaves_no_ghost(engine: Engine) {
    let mut pair = child_and_survivor(engine, "doomed").await;
    let survivor = pair.survivor.take().unwrap();
    let mut ghost = Client::connect(&format!("ws://127.0.0.1:{}/ws?name=Ghost", pair.port)).await;
    ghost.join("lobby").await;
    let mut watcher = survivor.named("Watcher").await;
    let j = watcher.join("lobby").await;
    assert_eq!(j["members"].as_array().unwrap().len(), 2, "{j}");
    // The ghost's user is connected only on the doomed node.
    let user = ghost.user();
    let st = survivor.user_status(&user).await;
    assert_eq!(
        (st["status"].as_str(), st["connections"].as_u64()),
        (Some("online"), Some(1)),
        "{st}"
    );

    pair.child.kill().unwrap(); // SIGKILL: no cleanup on that node
    pair.child.wait().unwrap();
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
    // The user is offline once the reaper took its connection too (the
    // same pass as its presence, so soon after the leave event).
    common::wait_until(|| {
        let (survivor, user) = (&survivor, &user);
        async move {
            let st = survivor.user_status(user).await;
            (st["status"] == "offline" && st["connections"] == 0).then_some(())
        }
    })
    .await;
    drop(ghost);
    survivor.stop().await;
}

/// A node cut off past its lease is reaped by another; a renewal it had
/// sent before the cut, held in the network, lands after the reap and puts
/// its lease back. The node must still notice that its entries are gone
/// and register them again (found by `hubcast bench faults`).
#[tokio::test]
async fn a_reaped_node_whose_late_renewal_lands_registers_again() {
    let mut pair = child_and_survivor(Engine::Redis, "stalled").await;
    let survivor = pair.survivor.take().unwrap();
    let prefix = pair.prefix.clone();
    let mut alive = Client::connect(&format!("ws://127.0.0.1:{}/ws?name=Alive", pair.port)).await;
    alive.join("lobby").await;
    let mut watcher = survivor.named("Watcher").await;
    let j = watcher.join("lobby").await;
    assert_eq!(j["members"].as_array().unwrap().len(), 2, "{j}");

    // The cut: the node renews nothing, and its lease runs out.
    let pid = pair.child.id().to_string();
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
    survivor.stop().await;
}

/// A `hubcast serve` child and an in-process node "survivor" on one fresh
/// prefix of `engine` (Redis or NATS). The child is killed and the NATS
/// prefix deleted when it is dropped (the survivor cleans a Redis prefix).
struct Pair {
    engine: Engine,
    prefix: String,
    child: std::process::Child,
    /// The child's port.
    port: u16,
    survivor: Option<Server>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.engine == Engine::Nats {
            common::clean_nats(&self.prefix);
        }
    }
}

/// A child named `node` on a fresh prefix of `engine` (presence lease
/// 2 s), ready, and the survivor on the same prefix.
async fn child_and_survivor(engine: Engine, node: &str) -> Pair {
    let (prefix, engine_args, mut config) = match engine {
        Engine::Redis => {
            let prefix = common::unique_prefix();
            let args = [
                "--broker",
                "redis",
                "--redis-url",
                &common::redis_url(),
                "--redis-prefix",
                &prefix,
            ]
            .map(String::from);
            let config = Config {
                broker: BrokerKind::Redis,
                redis_url: common::redis_url(),
                redis_prefix: prefix.clone(),
                ..Config::default()
            };
            (prefix, args, config)
        }
        Engine::Nats => {
            let prefix = common::unique_nats_prefix();
            let args = [
                "--broker",
                "nats",
                "--nats-url",
                &common::nats_url(),
                "--nats-prefix",
                &prefix,
            ]
            .map(String::from);
            (
                prefix.clone(),
                args,
                common::nats_config(&prefix, "survivor"),
            )
        }
        Engine::Memory => unreachable!("one node only"),
    };
    config.node_id = "survivor".into();
    config.presence_lease = 2;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(&engine_args)
        .args(["--presence-lease", "2", "--node-id", node])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = common::listening_port(&mut child).await;
    // From here the pair kills the child, whatever happens.
    let mut pair = Pair {
        engine,
        prefix: prefix.clone(),
        child,
        port,
        survivor: None,
    };
    common::wait_for(port, "/readyz").await;
    let redis_prefix = (engine == Engine::Redis).then_some(prefix);
    pair.survivor = Some(Server::with_config(config, redis_prefix).await);
    pair
}

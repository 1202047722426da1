//! Webhooks over several nodes on Redis and on NATS: each event once per webhook
//! whatever the number of nodes; a SIGKILLed node's members' events come
//! after its presence lease; events it held undelivered (a message's
//! included) come from another node.

use std::process::{Command, Stdio};

use hubcast::config::{BrokerKind, Config};
use serde_json::Value;

use super::{JWT, Receiver, connect, count, user};
use crate::common::{self, Server};

/// The engine the nodes of a test share, on a prefix of the test's own
/// (NATS objects deleted at the end; Redis keys by the nodes themselves).
enum Cluster {
    Redis(String),
    Nats(String),
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Cluster::Nats(prefix) = self {
            common::clean_nats(prefix);
        }
    }
}

impl Cluster {
    fn redis() -> Cluster {
        Cluster::Redis(common::unique_prefix())
    }

    fn nats() -> Cluster {
        Cluster::Nats(common::unique_nats_prefix())
    }

    /// An in-process node `node` with `r`'s webhook.
    async fn node(&self, node: &str, r: &Receiver) -> Server {
        let (mut config, redis_prefix) = match self {
            Cluster::Redis(prefix) => (
                Config {
                    broker: BrokerKind::Redis,
                    redis_url: common::redis_url(),
                    redis_prefix: prefix.clone(),
                    ..Config::default()
                },
                Some(prefix.clone()),
            ),
            Cluster::Nats(prefix) => (common::nats_config(prefix, node), None),
        };
        config.node_id = node.into();
        config.presence_lease = 2;
        config.webhook_offline_delay = 1;
        config.webhooks = vec![r.table()];
        config.jwt_secret = Some(JWT.into());
        Server::with_config(config, redis_prefix).await
    }

    /// The `hubcast serve` flags of this engine.
    fn flags(&self) -> Vec<String> {
        let (broker, url, prefix) = match self {
            Cluster::Redis(p) => ("redis", common::redis_url(), p),
            Cluster::Nats(p) => ("nats", common::nats_url(), p),
        };
        [
            "--broker".to_string(),
            broker.into(),
            format!("--{broker}-url"),
            url,
            format!("--{broker}-prefix"),
            prefix.clone(),
        ]
        .into()
    }

    /// A `hubcast serve` child with `r`'s webhook (from a config file),
    /// ready: the child, its port, and the file's directory.
    async fn child(&self, r: &Receiver) -> (std::process::Child, u16, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("hubcast-wh-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hubcast.toml");
        std::fs::write(
            &file,
            format!(
                "jwt_secret = \"{JWT}\"\nwebhook_offline_delay = 1\n\n[[webhooks]]\nurl = \"{}\"\nsecret = \"{}\"\n",
                r.url,
                super::SECRET
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
            .args(["serve", "--config", file.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .args(self.flags())
            .args(["--presence-lease", "2", "--node-id", "doomed"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let port = common::listening_port(&mut child).await;
        common::wait_for(port, "/readyz").await;
        (child, port, dir)
    }
}

/// Connects as `user` to the child on `port`.
async fn connect_port(port: u16, user: &str) -> common::Client {
    let exp = hubcast::unix_ms() as u64 / 1000 + 600;
    let token = common::hs256(JWT, &serde_json::json!({"sub": user, "exp": exp}));
    common::Client::connect(&format!("ws://127.0.0.1:{port}/ws?token={token}")).await
}

fn ids_unique(events: &[Value]) {
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "each event once: {events:?}");
}

/// Runs a test body once on Redis, once on NATS: `name::redis`,
/// `name::nats`.
macro_rules! on_redis_and_nats {
    ($(#[$attr:meta])* async fn $name:ident($cluster:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($cluster: Cluster) $body
            $(#[$attr])*
            async fn redis() {
                body(Cluster::redis()).await
            }
            $(#[$attr])*
            async fn nats() {
                body(Cluster::nats()).await
            }
        }
    };
}

on_redis_and_nats! {
#[tokio::test]
async fn each_event_is_sent_once_whatever_the_number_of_nodes(cluster) {
    let r = Receiver::start().await;
    let (a, b) = (cluster.node("a", &r).await, cluster.node("b", &r).await);
    let room = format!("both.{}", uuid::Uuid::new_v4().simple());
    let (u1, u2) = (user("on-a"), user("on-b"));
    let mut c1 = connect(&a, &u1).await;
    let mut c2 = connect(&b, &u2).await;
    let mut c3 = connect(&b, &u1).await;
    c1.join(&room).await;
    c2.join(&room).await;
    c3.join_quiet(&room).await;
    // Barrier: a room occupied after all of the above.
    let end = format!("end.{}", uuid::Uuid::new_v4().simple());
    c2.join(&end).await;
    let events = r.until_event("room.occupied", &end).await;
    assert_eq!(count(&events, "room.occupied", &room), 1, "{events:?}");
    assert_eq!(count(&events, "member.joined", &room), 2, "{events:?}");
    assert_eq!(count(&events, "user.online", &u1), 1, "{events:?}");
    ids_unique(&events);
    r.assert_all_signed();
}
}

on_redis_and_nats! {
#[tokio::test]
async fn a_killed_nodes_members_leave_after_its_lease(cluster) {
    let r = Receiver::start().await;
    let (mut doomed, port, dir) = cluster.child(&r).await;
    let survivor = cluster.node("survivor", &r).await;
    let room = format!("doomed.{}", uuid::Uuid::new_v4().simple());
    let ghost = user("ghost");
    let mut c = connect_port(port, &ghost).await;
    c.join(&room).await;
    r.until_event("member.joined", &room).await;
    doomed.kill().unwrap(); // SIGKILL: no cleanup on that node
    doomed.wait().unwrap();
    // The dead node may have been the webhook's delivering node: the
    // survivor then delivers once that lease (10 s) has passed, after the
    // presence lease's reaping. `until` waits up to 10 s: wait in two steps.
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    r.until_event("member.left", &room).await;
    r.until_event("room.vacated", &room).await;
    let events = r.until_event("user.offline", &ghost).await;
    assert_eq!(count(&events, "member.left", &room), 1, "{events:?}");
    // At least once: the dead node may have been answered 2xx for its last
    // batch and died before acknowledging it; the survivor then sends that
    // batch again, with the same ids (receivers dedupe on them). One id is
    // still one event.
    let delivered = r.delivered();
    let mut seen = std::collections::HashMap::new();
    for e in &delivered {
        let before = seen.insert(e["id"].as_str().unwrap(), e);
        assert!(before.is_none_or(|b| b == e), "{delivered:?}");
    }
    drop(c);
    survivor.stop().await;
    std::fs::remove_dir_all(dir).ok();
}
}

on_redis_and_nats! {
#[tokio::test]
async fn events_a_killed_node_held_undelivered_come_from_another_node(cluster) {
    let r = Receiver::start().await;
    r.answer_always(Some(503));
    let (mut doomed, port, dir) = cluster.child(&r).await;
    let room = format!("held.{}", uuid::Uuid::new_v4().simple());
    let held = user("held");
    let mut c = connect_port(port, &held).await;
    c.join(&room).await;
    // An acknowledged publish has its event in the engine's log, whatever
    // happens to the node next.
    let ack = c.publish(&room, serde_json::json!({"n": 1})).await;
    // The doomed node read the first batch and retries it: it holds
    // events noticed and not delivered.
    common::wait_until(|| async { (!r.requests().is_empty()).then_some(()) }).await;
    assert!(r.delivered().is_empty());
    let survivor = cluster.node("survivor", &r).await;
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    r.answer_always(None);
    // The survivor takes the webhook's lease once the dead node's expires,
    // and reads its pending entries first. `until` waits up to 10 s; the
    // lease is 10 s, so wait for it in two steps.
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let events = r.until_event("message.published", &room).await;
    assert_eq!(count(&events, "room.occupied", &room), 1, "{events:?}");
    let published = events.last().unwrap();
    assert_eq!(published["message"]["offset"], ack["offset"], "{published}");
    assert_eq!(published["message"]["msgId"], ack["msgId"], "{published}");
    let delivered = r.delivered();
    let at = |ty: &str| {
        delivered
            .iter()
            .position(|e| crate::webhooks::is(e, ty, &room))
            .unwrap()
    };
    assert!(
        at("room.occupied") < at("member.joined") && at("member.joined") < at("message.published"),
        "in order: {delivered:?}"
    );
    drop(c);
    survivor.stop().await;
    std::fs::remove_dir_all(dir).ok();
}
}

//! Several hubcast nodes sharing one Redis (or one NATS) act as one
//! server: one offset order per room, recovery and idempotency on any node,
//! presence across nodes. The cases that hold for any shared engine run on
//! both (`redis_and_nats!`).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Client, Engine, Server};
use hubcast::config::{BrokerKind, Config};
use serde_json::{Value, json};

/// `n` nodes on one Redis prefix.
async fn cluster(n: usize) -> Vec<Server> {
    cluster_on(Engine::Redis, n).await
}

/// `n` nodes sharing one prefix of `engine` (Redis or NATS); the first
/// cleans the prefix up when dropped.
async fn cluster_on(engine: Engine, n: usize) -> Vec<Server> {
    if engine == Engine::Nats {
        let prefix = common::unique_nats_prefix();
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(Server::nats_node(&prefix, &format!("node-{i}"), i == 0).await);
        }
        return nodes;
    }
    let prefix = common::unique_prefix();
    let mut nodes = Vec::new();
    for i in 0..n {
        let config = Config {
            node_id: format!("node-{i}"),
            broker: BrokerKind::Redis,
            redis_url: common::redis_url(),
            redis_prefix: prefix.clone(),
            ..Config::default()
        };
        nodes.push(Server::with_config(config, Some(prefix.clone())).await);
    }
    nodes
}

/// A test body run on each shared engine: `name::redis` and `name::nats`.
macro_rules! redis_and_nats {
    ($(#[$attr:meta])* async fn $name:ident($engine:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($engine: Engine) $body
            $(#[$attr])*
            async fn redis() {
                body(Engine::Redis).await
            }
            $(#[$attr])*
            async fn nats() {
                body(Engine::Nats).await
            }
        }
    };
}

redis_and_nats! {
    #[tokio::test]
    async fn a_message_published_on_one_node_reaches_subscribers_on_all(engine) {
        let nodes = cluster_on(engine, 3).await;
        let mut subs = Vec::new();
        for n in &nodes {
            let mut c = n.client().await;
            c.join_quiet("x").await;
            subs.push(c);
        }
        let mut p = nodes[1].client().await;
        let ack = p.publish("x", json!({"hello": "world"})).await;
        assert_eq!(ack["offset"], 1);
        for (i, c) in subs.iter_mut().enumerate() {
            let m = c.messages("x", 1).await;
            assert_eq!(m[0]["offset"], 1, "node {i}");
            assert_eq!(m[0]["data"], json!({"hello": "world"}));
            assert_eq!(m[0]["msgId"], ack["msgId"]);
        }
        for n in nodes {
            n.stop().await;
        }
    }
}

redis_and_nats! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishers_on_every_node_give_one_gapless_order(engine) {
        let nodes = cluster_on(engine, 2).await;
        let mut subs = Vec::new();
        for n in &nodes {
            for _ in 0..2 {
                let mut c = n.client().await;
                c.join_quiet("order").await;
                subs.push(c);
            }
        }
        const EACH: usize = 150;
        let mut pubs = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let url = n.ws_url();
            pubs.push(tokio::spawn(async move {
                let mut p = Client::connect(&url).await;
                for k in 0..EACH {
                    p.publish("order", json!(format!("n{i}-{k}"))).await;
                }
            }));
        }
        for p in pubs {
            p.await.unwrap();
        }
        let mut first: Option<Vec<Value>> = None;
        for c in &mut subs {
            let got = c.messages("order", 2 * EACH).await;
            for (k, m) in got.iter().enumerate() {
                assert_eq!(m["offset"], k as u64 + 1, "gapless, in offset order");
            }
            let ids: Vec<Value> = got.iter().map(|m| m["msgId"].clone()).collect();
            match &first {
                None => first = Some(ids),
                Some(f) => assert_eq!(&ids, f, "every subscriber sees one order"),
            }
        }
        for n in nodes {
            n.stop().await;
        }
    }
}

redis_and_nats! {
    #[tokio::test]
    async fn recovery_on_another_node_than_the_one_left(engine) {
        let nodes = cluster_on(engine, 2).await;
        let (mut p, mut c2) = common::recover_on_another_node(&nodes[0], &nodes[1], "rec", 5, 7).await;
        // History reads the same from either node.
        let h0 = p
            .call(json!({"type":"history","room":"rec","limit":3}))
            .await;
        let (h1, _) = c2
            .request(json!({"type":"history","room":"rec","limit":3}))
            .await;
        assert_eq!(h0["messages"], h1["messages"]);
        assert_eq!(h0["messages"][2]["offset"], 12);
        for n in nodes {
            n.stop().await;
        }
    }
}

redis_and_nats! {
    #[tokio::test]
    async fn idempotent_publish_across_nodes(engine) {
        let nodes = cluster_on(engine, 2).await;
        let mut sub = nodes[0].client().await;
        sub.join_quiet("idem").await;
        let mut a = nodes[0].client().await;
        let mut b = nodes[1].client().await;
        let frame = json!({"type":"publish","room":"idem","event":"e","data":1,"msgId":"once"});
        let first = a.call(frame.clone()).await;
        let again = b.call(frame).await;
        assert_eq!(first["duplicate"], false);
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["offset"], first["offset"]);
        let m = sub.messages("idem", 1).await;
        assert_eq!(m[0]["msgId"], "once");
        nodes[1].barrier(&mut sub, "idem").await;
        for n in nodes {
            n.stop().await;
        }
    }
}

redis_and_nats! {
    #[tokio::test]
    async fn presence_and_status_across_nodes(engine) {
        let nodes = cluster_on(engine, 2).await;
        let mut a = nodes[0].named("Ada").await;
        let mut b = nodes[1].named("Bob").await;
        a.join("lobby").await;
        let j = b.join("lobby").await;
        let names: HashSet<&str> = j["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, HashSet::from(["Ada", "Bob"]));
        let ev = a.expect("presence").await;
        assert_eq!(
            (ev["action"].clone(), ev["name"].clone()),
            (json!("join"), json!("Bob"))
        );

        let (_, _) = b.request(json!({"type":"status","status":"busy"})).await;
        let ev = a.expect("presence").await;
        assert_eq!(ev["action"], "status");
        assert_eq!(ev["status"], "busy");
        let st = reqwest_status(&nodes[0], &b.user()).await;
        assert_eq!(st, "busy");

        b.close().await;
        let ev = a.expect("presence").await;
        assert_eq!(
            (ev["action"].clone(), ev["name"].clone()),
            (json!("leave"), json!("Bob"))
        );
        for n in nodes {
            n.stop().await;
        }
    }
}

/// A user's status in the `lobby` presence list, as `node` reports it
/// (waits for it to leave `online`).
async fn reqwest_status(node: &Server, user: &str) -> String {
    let mut c = node.client().await;
    for _ in 0..50 {
        let p = c.call(json!({"type":"presence","room":"lobby"})).await;
        if let Some(m) = p["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user"] == user)
            && m["status"] != "online"
        {
            return m["status"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    "online".into()
}

/// The room channels a Redis has subscribers for, under `prefix`.
async fn channels(prefix: &str) -> Vec<String> {
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut v: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("{prefix}:{{room-*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    v.sort();
    v
}

#[tokio::test]
async fn a_node_subscribes_a_room_only_while_it_has_members_there() {
    let prefix = common::unique_prefix();
    let config = Config {
        broker: BrokerKind::Redis,
        redis_url: common::redis_url(),
        redis_prefix: prefix.clone(),
        ..Config::default()
    };
    let s = Server::with_config(config, Some(prefix.clone())).await;
    let channel = format!("{prefix}:{{room-a}}:c");
    assert!(channels(&prefix).await.is_empty());
    let mut c = s.client().await;
    c.join("room-a").await;
    assert_eq!(channels(&prefix).await, vec![channel.clone()]);
    // Leaving and joining again at once keeps the subscription.
    c.call(json!({"type":"leave","room":"room-a"})).await;
    assert_eq!(
        channels(&prefix).await,
        vec![channel.clone()],
        "unsubscribed after a delay, not at once"
    );
    c.join("room-a").await;
    c.call(json!({"type":"leave","room":"room-a"})).await;
    let mut gone = false;
    for _ in 0..60 {
        if channels(&prefix).await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the node unsubscribes once its last member has left");
    s.stop().await;
}

#[tokio::test]
async fn an_http_publish_on_one_node_reaches_websockets_on_the_others() {
    let nodes = cluster(3).await;
    let mut subs = Vec::new();
    for n in &nodes[1..] {
        let mut c = n.client().await;
        c.join_quiet("api-x").await;
        subs.push(c);
    }
    let ack = nodes[0]
        .api_post(
            "/api/publish",
            &json!({"room":"api-x","event":"e","data":"from-http","msgId":"h-1"}),
        )
        .await;
    assert_eq!(ack["offset"], 1, "{ack}");
    for c in subs.iter_mut() {
        let m = c.messages("api-x", 1).await;
        assert_eq!(m[0]["msgId"], "h-1");
        assert_eq!(m[0]["data"], "from-http");
        assert_eq!(m[0]["source"], "api");
    }
    // The same msgId over WebSocket on another node is a duplicate.
    let mut ws = nodes[2].client().await;
    let dup = ws
        .call(json!({"type":"publish","room":"api-x","event":"e","data":"again","msgId":"h-1"}))
        .await;
    assert_eq!(dup["duplicate"], true);
    assert_eq!(dup["offset"], 1);
    // And history over HTTP on a third node has it once.
    let h: Value = reqwest::Client::new()
        .get(nodes[1].http("/api/rooms/api-x/history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
    assert_eq!(h["messages"][0]["msgId"], "h-1");
    for n in nodes {
        n.stop().await;
    }
}

//! Redis failures under traffic: a killed pub/sub connection loses nothing
//! (the gap is read back from the stream); Redis down means `unavailable`
//! and not ready, connections stay open, and the node comes back by itself.
//! Every test here runs its own Redis server, on a Unix socket (no port to
//! pick): `CLIENT KILL TYPE pubsub` would hit every pub/sub client of the
//! shared Redis, which the tests running beside these use.
#![allow(clippy::unwrap_used)]

use crate::{common, outage};

use std::time::Duration;

use common::{Client, OwnRedis, Server};
use hubcast::config::{BrokerKind, Config};
use serde_json::json;

fn redis_config(url: String, prefix: &str) -> Config {
    Config {
        node_id: "outage-node".into(),
        broker: BrokerKind::Redis,
        redis_url: url,
        redis_prefix: prefix.into(),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_pubsub_connection_loses_nothing() {
    let prefix = common::unique_prefix();
    let redis = OwnRedis::start();
    let redis_url = redis.url();
    let a = Server::with_config(redis_config(redis_url.clone(), &prefix), None).await;
    let mut b_cfg = redis_config(redis_url.clone(), &prefix);
    b_cfg.node_id = "outage-node-2".into();
    let b = Server::with_config(b_cfg, None).await;
    let mut sub = a.client().await;
    sub.join_quiet("kill").await;
    const N: u64 = 400;
    let url = b.ws_url();
    let publisher = tokio::spawn(async move {
        let mut p = Client::connect(&url).await;
        for i in 1..=N {
            p.publish("kill", json!(i)).await;
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let killer = tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            common::kill_pubsub(&redis_url).await;
        }
    });
    let mut next = 1;
    while next <= N {
        let v = sub.recv().await;
        if v["type"] == "message" {
            assert_eq!(v["offset"], next, "every message once, in order");
            assert_eq!(v["data"], next);
            next += 1;
        }
    }
    publisher.await.unwrap();
    killer.await.unwrap();
    b.barrier(&mut sub, "kill").await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_and_back() {
    let mut redis = OwnRedis::start();
    let s = Server::with_config(redis_config(redis.url(), "outage"), None).await;
    let (mut sub, mut p, epoch) = outage::traffic(&s).await;

    redis.kill();
    // The first command learns of the closed connection by a broken pipe,
    // which cannot tell whether it was written before: `timeout`, or
    // `unavailable` when the node noticed first.
    outage::assert_down(&s, &mut p, &mut sub).await;

    // Redis comes back (empty: it kept nothing). The node reconnects and
    // resubscribes by itself; the room's history is gone, so it restarts
    // with a new epoch, which every subscriber sees in the envelopes.
    redis.restart();
    outage::wait_ready(&s).await;
    let ack = p.publish("r", json!(3)).await;
    assert_eq!(ack["offset"], 1);
    assert_ne!(ack["epoch"], epoch, "lost history means a new epoch");
    let m = sub.expect("message").await;
    assert_eq!(m["data"], 3);
    assert_eq!(m["epoch"], ack["epoch"]);
    let mut fresh = s.client().await;
    let j2 = fresh.join("r").await;
    assert_eq!(j2["epoch"], ack["epoch"]);
    assert_eq!(j2["offset"], 1);
    s.stop().await;
}

/// Redis restarts empty while users are connected: each node notices its
/// lease is gone and registers its connections and presence again, so the
/// users are present (and online) again without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_comes_back_after_redis_loses_it() {
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let mut a_cfg = redis_config(url.clone(), "relost");
    a_cfg.node_id = "relost-a".into();
    a_cfg.presence_lease = 3;
    let mut b_cfg = redis_config(url, "relost");
    b_cfg.node_id = "relost-b".into();
    b_cfg.presence_lease = 3;
    let a = Server::with_config(a_cfg, None).await;
    let b = Server::with_config(b_cfg, None).await;
    let mut ada = a.named("Ada").await;
    ada.join("lobby").await;
    let mut bob = b.named("Bob").await;
    bob.join("lobby").await;
    let ev = ada.expect("presence").await;
    assert_eq!(
        (ev["action"].clone(), ev["name"].clone()),
        (json!("join"), json!("Bob"))
    );

    redis.restart();

    // Within a lease period both nodes register again; each side sees the
    // other's join event again, and a newcomer sees both in the list.
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let v = bob.recv().await;
            if v["type"] == "presence" && v["name"] == "Ada" {
                return v;
            }
        }
    })
    .await
    .expect("Ada's presence registered again");
    assert_eq!(ev["action"], "join");
    let ev = loop {
        let v = ada.recv().await;
        if v["type"] == "presence" && v["name"] == "Bob" {
            break v;
        }
    };
    assert_eq!(ev["action"], "join");
    let mut carol = a.named("Carol").await;
    let mut names = Vec::new();
    for _ in 0..50 {
        let (j, _) = carol
            .request(json!({"type":"presence","room":"lobby"}))
            .await;
        names = j["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| m["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if names == ["Ada", "Bob"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names, ["Ada", "Bob"]);

    // A connection closing afterwards still leaves cleanly.
    bob.close().await;
    let ev = loop {
        let v = ada.recv().await;
        if v["type"] == "presence" && v["name"] == "Bob" {
            break v;
        }
    };
    assert_eq!(ev["action"], "leave");
    a.stop().await;
    b.stop().await;
}

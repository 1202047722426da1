//! The Redis engine on a Redis Cluster: three masters the test starts on
//! loopback ports (`redis-server --cluster-enabled yes` and `redis-cli
//! --cluster create`), two hubcast nodes on it. Rooms spread over the
//! masters by hash tag and use sharded pub/sub; every guarantee of the
//! single-server engine holds, including across killed pub/sub connections.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Client, Server};
use hubcast::config::{BrokerKind, Config};
use serde_json::json;

/// A three-master Redis Cluster in a scratch directory, stopped on drop.
struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl RedisCluster {
    fn start() -> RedisCluster {
        let dir =
            std::env::temp_dir().join(format!("hubcast-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let (port, child) = cluster_node(&cluster.dir);
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Every master must agree the cluster is up before clients use it.
        for port in &cluster.ports {
            let mut ok = false;
            for _ in 0..250 {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut cluster.conn(*port))
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
            assert!(ok, "cluster not ok on port {port}");
        }
        cluster
    }

    fn conn(&self, port: u16) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The seed list hubcast gets.
    fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master holding `key`.
    fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.conn(self.ports[0]))
            .unwrap();
        let mut conn = self.conn(self.ports[0]);
        let slots: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|v| {
                let redis::Value::Array(parts) = v else {
                    panic!("CLUSTER SLOTS entry")
                };
                let start: u16 = redis::from_redis_value(parts[0].clone()).unwrap();
                let end: u16 = redis::from_redis_value(parts[1].clone()).unwrap();
                let redis::Value::Array(node) = parts[2].clone() else {
                    panic!("CLUSTER SLOTS node")
                };
                let host: String = redis::from_redis_value(node[0].clone()).unwrap();
                let port: u16 = redis::from_redis_value(node[1].clone()).unwrap();
                (start, end, (host, port))
            })
            .collect();
        slots
            .iter()
            .find(|(s, e, _)| (*s..=*e).contains(&slot))
            .map(|(_, _, (_, p))| *p)
            .unwrap()
    }

    /// Channels with subscribers, over all masters: `SHARDCHANNELS`
    /// (sharded pub/sub) or `CHANNELS` (classic).
    fn channels(&self, kind: &str) -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for p in &self.ports {
            let chans: Vec<String> = redis::cmd("PUBSUB")
                .arg(kind)
                .query(&mut self.conn(*p))
                .unwrap();
            all.extend(chans);
        }
        all
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` hubcast nodes on `cluster`, sharing one prefix.
async fn nodes(cluster: &RedisCluster, n: usize) -> Vec<Server> {
    let prefix = common::unique_prefix();
    let mut out = Vec::new();
    for i in 0..n {
        let config = Config {
            node_id: format!("cnode-{i}"),
            broker: BrokerKind::Redis,
            redis_url: cluster.url(),
            redis_cluster: true,
            redis_prefix: prefix.clone(),
            ..Config::default()
        };
        // The cluster goes away with the test: nothing to clean up.
        out.push(Server::with_config(config, None).await);
    }
    out
}

/// Rooms that, between them, live on every master.
fn rooms_on_every_master(cluster: &RedisCluster, prefix_probe: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut rooms = Vec::new();
    for i in 0..200 {
        let room = format!("room-{i}");
        // The slot is the hash tag's, whatever the prefix.
        let port = cluster.master_of(&format!("{prefix_probe}:{{{room}}}:m"));
        if seen.insert(port) {
            rooms.push(room);
        }
        if seen.len() == cluster.ports.len() {
            return rooms;
        }
    }
    panic!("no room found on some master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_every_master_deliver_across_nodes_in_one_order() {
    let cluster = RedisCluster::start();
    let nodes = nodes(&cluster, 2).await;
    let rooms = rooms_on_every_master(&cluster, "x");
    assert_eq!(rooms.len(), 3);

    let mut subs = Vec::new();
    for n in &nodes {
        let mut c = n.client().await;
        for r in &rooms {
            c.join(r).await;
        }
        subs.push(c);
    }
    // Sharded pub/sub, one channel per room, nothing on classic pub/sub.
    // (Each connection also joined its personal room `@user`.)
    let shard: BTreeSet<String> = cluster
        .channels("SHARDCHANNELS")
        .into_iter()
        .filter(|c| !c.contains("{@"))
        .collect();
    assert_eq!(shard.len(), rooms.len(), "{shard:?}");
    assert!(cluster.channels("CHANNELS").is_empty());

    // Publishers on both nodes at once, every room.
    const PER: u64 = 30;
    let mut tasks = Vec::new();
    for n in &nodes {
        let url = n.ws_url();
        let rooms = rooms.clone();
        tasks.push(tokio::spawn(async move {
            let mut p = Client::connect(&url).await;
            for i in 0..PER {
                for r in &rooms {
                    p.publish(r, json!(i)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = rooms.len() * 2 * PER as usize;
    for (i, c) in subs.iter_mut().enumerate() {
        let mut next: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for _ in 0..total {
            let v = loop {
                let v = c.recv().await;
                if v["type"] == "message" {
                    break v;
                }
            };
            let room = v["room"].as_str().unwrap().to_string();
            let e = next.entry(room.clone()).or_insert(1);
            assert_eq!(v["offset"], *e, "node {i}, room {room}: one gapless order");
            *e += 1;
        }
        for r in &rooms {
            assert_eq!(next[r], 2 * PER + 1, "node {i} saw all of {r}");
        }
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_idempotency_history_and_presence_on_a_cluster() {
    let cluster = RedisCluster::start();
    let nodes = nodes(&cluster, 2).await;
    for room in rooms_on_every_master(&cluster, "x") {
        let (mut p, mut c2) =
            common::recover_on_another_node(&nodes[0], &nodes[1], &room, 3, 6).await;

        // Idempotency across nodes.
        let frame = json!({"type":"publish","room":&room,"event":"e","data":0,"msgId":"once"});
        let first = p.call(frame.clone()).await;
        let (again, _) = c2.request(frame).await;
        assert_eq!(first["duplicate"], false);
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["offset"], first["offset"]);

        // History from either node.
        let (h, _) = c2
            .request(json!({"type":"history","room":&room,"limit":2}))
            .await;
        let offs = common::reply_offsets(&h);
        assert_eq!(offs, vec![9, 10], "{room}");

        // Presence across nodes, with the join event.
        let mut a = nodes[0].named("Ada").await;
        a.join(&room).await;
        let mut b = nodes[1].named("Bob").await;
        let j = b.join(&room).await;
        let names: HashSet<&str> = j["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert!(names.contains("Ada") && names.contains("Bob"), "{j}");
        loop {
            let ev = a.expect("presence").await;
            if ev["name"] == "Bob" {
                assert_eq!(ev["action"], "join");
                break;
            }
        }
        // Status goes out with SPUBLISH too.
        let _ = b.request(json!({"type":"status","status":"busy"})).await;
        loop {
            let ev = a.expect("presence").await;
            if ev["action"] == "status" {
                assert_eq!(ev["status"], "busy");
                break;
            }
        }
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_shards_pubsub_connection_loses_nothing() {
    let cluster = RedisCluster::start();
    let nodes = nodes(&cluster, 2).await;
    let rooms = rooms_on_every_master(&cluster, "x");
    let mut sub = nodes[0].client().await;
    for r in &rooms {
        sub.join(r).await;
    }
    const N: u64 = 200;
    let url = nodes[1].ws_url();
    let publish_rooms = rooms.clone();
    let publisher = tokio::spawn(async move {
        let mut p = Client::connect(&url).await;
        for i in 1..=N {
            for r in &publish_rooms {
                p.publish(r, json!(i)).await;
            }
            if i % 25 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let ports = cluster.ports.clone();
    let killer = tokio::spawn(async move {
        let mut killed = 0;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(80)).await;
            for p in &ports {
                killed += common::kill_pubsub(&format!("redis://127.0.0.1:{p}")).await;
            }
        }
        killed
    });
    let mut next: std::collections::HashMap<String, u64> =
        rooms.iter().map(|r| (r.clone(), 1)).collect();
    let mut left = N as usize * rooms.len();
    while left > 0 {
        let v = sub.recv().await;
        if v["type"] != "message" {
            continue;
        }
        let room = v["room"].as_str().unwrap().to_string();
        let e = next.get_mut(&room).unwrap();
        assert_eq!(v["offset"], *e, "{room}: every message once, in order");
        assert_eq!(v["data"], *e);
        *e += 1;
        left -= 1;
    }
    publisher.await.unwrap();
    let killed = killer.await.unwrap();
    assert!(killed >= 3, "the kills hit pub/sub connections ({killed})");
    // A barrier per room (each room's messages keep their order, rooms on
    // different shards do not): the next frames are the markers.
    let mut markers = std::collections::HashMap::new();
    for r in &rooms {
        let marker = json!(format!("barrier-{r}"));
        assert!(nodes[1].api_publish(r, marker.clone()).await["offset"].is_u64());
        markers.insert(r.clone(), marker);
    }
    for _ in 0..rooms.len() {
        let v = sub.recv().await;
        let room = v["room"].as_str().unwrap_or_default().to_string();
        assert!(
            v["type"] == "message" && markers.remove(&room) == Some(v["data"].clone()),
            "expected a room's marker as the next frame, got {v}"
        );
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_controls_reach_every_node_of_a_cluster() {
    let cluster = RedisCluster::start();
    let nodes = nodes(&cluster, 2).await;
    let mut c = nodes[1].client().await;
    let user = c.user();
    let r = reqwest::Client::new()
        .put(nodes[0].http(&format!("/api/users/{user}/block")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (code, _, _) = c.until_close().await;
    assert_eq!(code, Some(4004));
}

/// A cluster-enabled redis-server on a free port, up and answering. A port
/// found free can be taken before redis-server binds it (or its cluster bus
/// port, 10,000 higher, can be busy): a server that exits is started again
/// on another port.
fn cluster_node(dir: &std::path::Path) -> (u16, Child) {
    for _ in 0..10 {
        let port = common::free_port();
        // The cluster bus listens on port + 10000.
        if port > 55_000 {
            continue;
        }
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (port, child);
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no cluster-enabled redis-server started in 10 attempts");
}

//! A Redis that refuses writes (out of memory under `noeviction`, or a
//! read-only replica) while it still answers PING and reads: `/readyz` says
//! so (503, reason `out_of_memory` or `read_only`), and clients are told so
//! in a fixed sentence, never Redis' own error text, over WebSocket and
//! every HTTP route that reaches the engine. Each test runs its own Redis: a Redis out of memory would
//! fail every other test using it.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{OwnRedis, Server, redis_config};
use serde_json::{Value, json};

/// What a client is told while Redis is out of memory.
const OUT_OF_MEMORY: &str = "the message store is out of memory";

/// What a client is told while Redis is a read-only replica.
const READ_ONLY: &str = "the message store refuses writes";

/// Runs one command on the test's own Redis.
async fn redis_cmd(redis: &OwnRedis, args: &[&str]) {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<()>(&mut conn).await.unwrap();
}

/// Makes Redis refuse every write that needs memory (`OOM command not
/// allowed when used memory > 'maxmemory'`): a limit below what it already
/// uses, and no eviction to make room.
async fn out_of_memory(redis: &OwnRedis) {
    redis_cmd(redis, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).await;
    redis_cmd(redis, &["CONFIG", "SET", "maxmemory", "1"]).await;
    // Reads and PING still answer: what a PING-only probe saw.
    redis_cmd(redis, &["PING"]).await;
}

/// No limit again.
async fn memory_back(redis: &OwnRedis) {
    redis_cmd(redis, &["CONFIG", "SET", "maxmemory", "0"]).await;
}

async fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = reqwest::get(s.http(path)).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.http(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_redis_refuses_writes() {
    let redis = OwnRedis::start();
    let s = Server::with_config(redis_config(redis.url(), "oom-ready"), None).await;
    let (status, body) = get(&s, "/readyz").await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")), "{body}");
    // The room exists before: see `clients_read_a_fixed_sentence...`.
    let (status, body) = post(&s, "/api/publish", json!({"room":"r","event":"e","data":0})).await;
    assert_eq!(status, 200, "{body}");

    out_of_memory(&redis).await;
    let (status, body) = get(&s, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unready", "{body}");
    assert_eq!(body["reason"], "out_of_memory", "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(body["error"]["message"], OUT_OF_MEMORY, "{body}");
    assert_eq!(
        (&body["node"], &body["broker"]),
        (&json!("oom-ready"), &json!("redis"))
    );
    // What readiness said: a publish cannot be taken.
    let (status, body) = post(&s, "/api/publish", json!({"room":"r","event":"e","data":1})).await;
    assert_eq!(status, 503, "{body}");

    memory_back(&redis).await;
    let (status, body) = get(&s, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&s, "/api/publish", json!({"room":"r","event":"e","data":2})).await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_read_a_fixed_sentence_not_the_redis_error() {
    let redis = OwnRedis::start();
    let s = Server::with_config(redis_config(redis.url(), "oom-errors"), None).await;
    let mut c = s.client().await;
    // The rooms written to exist before Redis runs out of memory: a
    // script's first write into a room Redis never saw is a DEL (of a
    // stream of a lost epoch), which Redis allows, and once a script has
    // written Redis lets it finish, so such a publish gets through.
    c.join("r").await;
    let (status, body) = post(&s, "/api/send", json!({"to":"bob","event":"e","data":0})).await;
    assert_eq!(status, 200, "{body}");
    out_of_memory(&redis).await;

    // WebSocket: a publish, a send, and a join (presence is written).
    for frame in [
        json!({"type":"publish","room":"r","event":"e","data":1}),
        json!({"type":"send","to":"bob","event":"e","data":1}),
        json!({"type":"join","room":"new-ws"}),
    ] {
        let e = c.call(frame.clone()).await;
        assert_eq!(e["type"], "error", "{frame}: {e}");
        assert_eq!(e["code"], "unavailable", "{frame}: {e}");
        assert_eq!(e["message"], OUT_OF_MEMORY, "{frame}: {e}");
    }
    // HTTP: the API's writes.
    let replies = [
        post(&s, "/api/publish", json!({"room":"r","event":"e","data":1})).await,
        post(&s, "/api/send", json!({"to":"bob","event":"e","data":1})).await,
    ];
    for (status, body) in replies {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert_eq!(body["error"]["message"], OUT_OF_MEMORY, "{body}");
    }
    memory_back(&redis).await;

    // A read-only Redis (a replica: `READONLY`) refuses every write,
    // scripts' first DEL included, so joining a new room fails too: the
    // long poll's and the SSE stream's.
    let master = common::free_port().to_string();
    redis_cmd(&redis, &["REPLICAOF", "127.0.0.1", &master]).await;
    let replies = [
        get(&s, "/readyz").await,
        get(&s, "/api/poll?room=new-poll&timeout=0").await,
        get(&s, "/sse?rooms=new-sse").await,
    ];
    for (status, body) in replies {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert_eq!(body["error"]["message"], READ_ONLY, "{body}");
    }
    let e = c
        .call(json!({"type":"publish","room":"r","event":"e","data":1}))
        .await;
    assert_eq!(
        (&e["code"], &e["message"]),
        (&json!("unavailable"), &json!(READ_ONLY)),
        "{e}"
    );
    redis_cmd(&redis, &["REPLICAOF", "NO", "ONE"]).await;

    // The connection stays usable: with writes back, the same publish goes.
    let ack = c
        .call(json!({"type":"publish","room":"r","event":"e","data":2}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    s.stop().await;
}

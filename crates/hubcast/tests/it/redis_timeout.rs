//! A publish whose outcome is unknown (Redis paused: the command is written,
//! no answer comes) is answered `timeout` (HTTP 504) with its msgId, and a
//! retry with that msgId is acked once; `unavailable` (503) only when
//! nothing was published (Redis gone before the command was sent). Each
//! test runs its own Redis server on a Unix socket: pausing the machine's
//! Redis would stall every other test.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Client, OwnRedis, Server, redis_config};
use hubcast::broker::TIMEOUT_MESSAGE;
use serde_json::{Value, json};

async fn api_publish(s: &Server, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.http("/api/publish"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The msgIds of `room`'s history, oldest first.
async fn history_ids(s: &Server, room: &str) -> Vec<String> {
    let h: Value = reqwest::get(s.http(&format!("/api/rooms/{room}/history?limit=1000")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msgId"].as_str().unwrap().to_owned())
        .collect()
}

/// The message ids `c` receives in `room` before the barrier's marker.
async fn delivered_until_barrier(s: &Server, c: &mut Client, room: &str) -> Vec<String> {
    let marker = json!(format!("barrier-{}", uuid::Uuid::new_v4().simple()));
    let ack = s.api_publish(room, marker.clone()).await;
    assert!(ack["offset"].is_u64(), "the marker is published: {ack}");
    let mut ids = Vec::new();
    loop {
        let v = c.recv().await;
        if v["type"] != "message" || v["room"] != room {
            continue;
        }
        if v["data"] == marker {
            return ids;
        }
        ids.push(v["msgId"].as_str().unwrap().to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_redis_does_not_answer_is_a_timeout_with_its_msg_id() {
    let redis = OwnRedis::start();
    let s = Server::with_config(redis_config(redis.url(), "timeout-node"), None).await;
    let mut sub = s.client().await;
    sub.join("r").await;
    let mut p = s.client().await;
    // A first publish loads the script into Redis: a first attempt that
    // reaches a Redis without it only asks for it (NOSCRIPT) and never
    // publishes, which would make the retries below first publications.
    p.publish("r", json!(0)).await;
    assert_eq!(sub.expect("message").await["data"], 0);

    redis.pause();
    // HTTP, without a msgId: the server's own one comes back.
    let (status, body) = api_publish(&s, json!({"room":"r","event":"e","data":1})).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    let http_id = body["error"]["msgId"].as_str().unwrap().to_owned();
    assert!(!http_id.is_empty(), "{body}");
    // The client reads a fixed sentence, not the redis client's error.
    assert_eq!(body["error"]["message"], TIMEOUT_MESSAGE, "{body}");
    // WebSocket, with the client's msgId.
    let e = p
        .call(json!({"type":"publish","room":"r","event":"e","data":2,"msgId":"ws-1"}))
        .await;
    assert_eq!(
        (e["type"].clone(), e["code"].clone(), e["msgId"].clone()),
        (json!("error"), json!("timeout"), json!("ws-1")),
        "{e}"
    );
    assert_eq!(e["message"], TIMEOUT_MESSAGE, "{e}");
    redis.resume();

    // The retries are acked once: both first attempts were written before
    // Redis paused, so they ran first and the retries are duplicates.
    let (status, ack) =
        api_publish(&s, json!({"room":"r","event":"e","data":1,"msgId":http_id})).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(
        (ack["msgId"].clone(), ack["duplicate"].clone()),
        (json!(http_id), json!(true))
    );
    let ack = p
        .call(json!({"type":"publish","room":"r","event":"e","data":2,"msgId":"ws-1"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["duplicate"], true, "{ack}");

    let history = history_ids(&s, "r").await;
    assert_eq!(history[1..], [http_id.clone(), "ws-1".to_owned()]);
    let delivered = delivered_until_barrier(&s, &mut sub, "r").await;
    assert_eq!(
        delivered,
        [http_id, "ws-1".to_owned()],
        "delivered once each"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_without_redis_is_unavailable() {
    let mut redis = OwnRedis::start();
    let s = Server::with_config(redis_config(redis.url(), "gone-node"), None).await;
    let mut p = s.client().await;
    redis.kill();
    // The first command after Redis closed the connection learns it by a
    // broken pipe, which the redis client also reports for a command
    // written before the connection broke: its outcome is unknown.
    let (status, body) =
        api_publish(&s, json!({"room":"r","event":"e","data":0,"msgId":"h-0"})).await;
    assert!(status == 503 || status == 504, "{status} {body}");
    // From then on the node reconnects, is refused, and sends nothing.
    let (status, body) =
        api_publish(&s, json!({"room":"r","event":"e","data":1,"msgId":"h-1"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(body["error"].get("msgId").is_none(), "{body}");
    // Neither the redis client's error nor the socket's path.
    assert_eq!(
        body["error"]["message"], "the message store is unavailable",
        "{body}"
    );
    let e = p
        .call(json!({"type":"publish","room":"r","event":"e","data":2,"msgId":"w-1"}))
        .await;
    assert_eq!(
        (e["type"].clone(), e["code"].clone()),
        (json!("error"), json!("unavailable")),
        "{e}"
    );
    assert!(e.get("msgId").is_none(), "{e}");
    assert_eq!(e["message"], "the message store is unavailable", "{e}");
    s.stop().await;
}

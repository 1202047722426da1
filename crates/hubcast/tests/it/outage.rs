//! What the engine outage tests (`redis_outage`, `nats_outage`) share: a
//! node with traffic before the outage, what it answers while its engine
//! is down, and waiting for it to be ready again.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Client, Server};

/// `/readyz`'s status.
pub(crate) async fn ready(s: &Server) -> u16 {
    reqwest::get(s.http("/readyz"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Before the outage: a subscriber of room `r` got the publisher's first
/// message, and the node is ready. Returns the subscriber, the publisher
/// and the room's epoch.
pub(crate) async fn traffic(s: &Server) -> (Client, Client, Value) {
    let mut sub = s.client().await;
    let epoch = sub.join("r").await["epoch"].clone();
    let mut p = s.client().await;
    p.publish("r", json!(1)).await;
    assert_eq!(sub.expect("message").await["offset"], 1);
    assert_eq!(ready(s).await, 200);
    (sub, p, epoch)
}

/// The engine is down: publishing fails loudly, the node says it is not
/// ready, and connections stay open. The first publish may be sent before
/// the node noticed, and its fate is unknown: `timeout`, or `unavailable`
/// when the node noticed first; once it knows, `unavailable`.
///
/// Returns whether that first publish was answered `timeout`: it may then
/// be stored once the engine is back (a client that buffered it sends it
/// on reconnecting).
pub(crate) async fn assert_down(s: &Server, p: &mut Client, sub: &mut Client) -> bool {
    let publish = json!({"type":"publish","room":"r","event":"e","data":2});
    let e = p.call(publish.clone()).await;
    assert_eq!(e["type"], "error");
    assert!(e["code"] == "timeout" || e["code"] == "unavailable", "{e}");
    let timed_out = e["code"] == "timeout";
    let e = p.call(publish).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "unavailable", "{e}");
    assert_eq!(ready(s).await, 503);
    assert_eq!(sub.call(json!({"type":"ping"})).await["type"], "pong");
    timed_out
}

/// Waits (up to 10 s) until the node is ready again by itself.
pub(crate) async fn wait_ready(s: &Server) {
    for _ in 0..200 {
        if ready(s).await == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not ready again within 10 s of the engine's return");
}

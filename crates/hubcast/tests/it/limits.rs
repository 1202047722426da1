//! Handshake limits: the global cap (503), connections per address and
//! handshakes per address per second (429), each with `Retry-After`.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Client, Server};
use tokio_tungstenite::tungstenite;

/// The status and `Retry-After` of a refused handshake.
async fn refusal(url: &str) -> (u16, Option<String>, String) {
    match Client::connect_request(url).await {
        Err(tungstenite::Error::Http(resp)) => {
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            (
                resp.status().as_u16(),
                resp.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string()),
                body["error"]["code"].as_str().unwrap().to_string(),
            )
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// Connects from a chosen loopback source address.
async fn connect_from(src: &str, url: &str) -> Result<(), tungstenite::Error> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
    let tcp = sock.connect(addr.parse().unwrap()).await.unwrap();
    tokio_tungstenite::client_async(url, tcp).await.map(|_| ())
}

#[tokio::test]
async fn the_global_cap_answers_503_then_frees_up() {
    let s = Server::start(|c| c.max_connections = 2).await;
    let a = s.client().await;
    let _b = s.client().await;
    let (status, retry, code) = refusal(&s.ws_url()).await;
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    assert!(retry.is_some());
    a.close().await;
    let mut ok = false;
    for _ in 0..100 {
        if Client::connect_request(s.ws_url()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a closed connection gives its place back");
    s.stop().await;
}

#[tokio::test]
async fn connections_per_address_answer_429() {
    let s = Server::start(|c| c.max_connections_per_ip = 2).await;
    let _a = s.client().await;
    let _b = s.client().await;
    let (status, retry, code) = refusal(&s.ws_url()).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    assert!(retry.is_some());
    // Another address is counted on its own.
    connect_from("127.0.0.2", &s.ws_url()).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn handshakes_per_address_per_second_answer_429() {
    let s = Server::start(|c| c.handshakes_per_ip_per_sec = 2).await;
    let mut statuses = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..8 {
        match Client::connect_request(s.ws_url()).await {
            Ok(ws) => {
                statuses.push(101);
                kept.push(ws);
            }
            Err(tungstenite::Error::Http(resp)) => {
                assert!(resp.headers().get("retry-after").is_some());
                statuses.push(resp.status().as_u16());
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        statuses.iter().filter(|s| **s == 101).count() >= 4,
        "the burst is allowed: {statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    // Other addresses are not affected.
    connect_from("127.0.0.3", &s.ws_url()).await.unwrap();
    s.stop().await;
}

/// A long poll holds a connection open, so it counts under the caps like a
/// WebSocket or an SSE stream: past `max_connections_per_ip` a poll is
/// refused with 429, and a finished poll gives its place back.
#[tokio::test]
async fn long_polls_count_under_the_connection_caps() {
    let s = Server::start(|c| c.max_connections_per_ip = 1).await;
    let waiting = tokio::spawn(reqwest::get(
        s.http("/api/poll?room=capped&since=0&timeout=3"),
    ));
    // The first poll holds the address's one place while it waits.
    let mut refused = None;
    for _ in 0..100 {
        let r = reqwest::get(s.http("/api/poll?room=capped&since=0&timeout=1"))
            .await
            .unwrap();
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = refused.expect("a second poll from the same address is refused");
    assert!(r.headers().get("retry-after").is_some());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(waiting.await.unwrap().unwrap().status(), 200);
    // Its place is free again.
    let r = reqwest::get(s.http("/api/poll?room=capped&since=0&timeout=0"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

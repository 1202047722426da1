//! Bad input gets the protocol's error and leaves the connection usable
//! (PROTOCOL.md section 3); refused handshakes are JSON HTTP errors.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

#[allow(unused_imports)]
use common::Engine;
use common::Server;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Sends raw text; expects an error with `code` (and the id echoed when the
/// frame had a valid one); then checks the connection still works.
async fn rejects(c: &mut common::Client, text: &str, code: &str, id: Option<Value>) {
    c.send_text(text).await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], code, "{text} → {e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert_eq!(e.get("id").cloned(), id, "{text} → {e}");
    let pong = c.call(json!({"type":"ping"})).await;
    assert_eq!(pong["type"], "pong", "connection usable after {text}");
}

both_engines! {
    #[tokio::test]
    async fn each_bad_frame_gets_its_error_and_the_connection_stays_usable(engine) {
        let s = Server::start_on(engine, |c| c.max_rooms_per_conn = 2).await;
        let mut c = s.client().await;
        rejects(&mut c, "{not json", "bad_request", None).await;
        rejects(&mut c, "[1,2]", "bad_request", None).await;
        rejects(&mut c, "\"hello\"", "bad_request", None).await;
        rejects(&mut c, r#"{"id":1}"#, "bad_request", Some(json!(1))).await;
        rejects(
            &mut c,
            r#"{"type":"dance","id":"x"}"#,
            "unknown_type",
            Some(json!("x")),
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":7,"id":2}"#,
            "bad_request",
            Some(json!(2)),
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"join","id":3}"#,
            "bad_request",
            Some(json!(3)),
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"join","room":["a"],"id":4}"#,
            "bad_request",
            Some(json!(4)),
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"join","room":"no spaces","id":5}"#,
            "bad_request",
            Some(json!(5)),
        )
        .await;
        rejects(
            &mut c,
            &format!(r#"{{"type":"join","room":"{}"}}"#, "x".repeat(129)),
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"join","room":"r","since":"3"}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"publish","room":"r","event":"bad event!","data":1}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"publish","room":"r","data":1}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"publish","room":"r","event":"e"}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"send","event":"e","data":1}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"leave","room":"never-joined","id":6}"#,
            "not_joined",
            Some(json!(6)),
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"history","room":"r","limit":1001}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"history","room":"r","limit":0}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"history","room":"r","limit":-5}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"status","status":"asleep"}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"ping","id":{"nested":true}}"#,
            "bad_request",
            None,
        )
        .await;
        rejects(
            &mut c,
            r#"{"type":"join","room":"@somebody-else"}"#,
            "forbidden",
            None,
        )
        .await;
        // Binary frames.
        c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        let e = c.expect("error").await;
        assert_eq!(e["code"], "bad_request");
        // Too many rooms: the personal room is not counted.
        c.join("one").await;
        c.join("two").await;
        let e = c.call(json!({"type":"join","room":"three"})).await;
        assert_eq!(e["code"], "too_many_rooms", "{e}");
        // Rejoining an already joined room is not a new room.
        let j = c.call(json!({"type":"join","room":"one"})).await;
        assert_eq!(j["type"], "joined", "{j}");
        // After all that, publishing still works.
        let ack = c.publish("one", json!("still here")).await;
        assert_eq!(ack["offset"], 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn frame_over_max_message_bytes_closes_with_1009() {
    let s = Server::start(|c| c.max_message_bytes = 1024).await;
    let mut c = s.client().await;
    // Just under the limit is fine.
    let data = "x".repeat(900);
    c.publish("r", json!(data)).await;
    let big = json!({"type":"publish","room":"r","event":"e","data":"y".repeat(2000)});
    c.send(big).await;
    let (code, _reason, _) = c.until_close().await;
    assert_eq!(code, Some(1009));
    // Other clients are unaffected.
    let mut d = s.client().await;
    d.publish("r", json!(1)).await;
    s.stop().await;
}

#[tokio::test]
async fn refused_handshakes_are_json_http_errors() {
    let s = Server::default().await;
    let http = reqwest::Client::new();
    // Not an upgrade.
    let r = http.get(s.http("/ws")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    // Wrong version.
    let r = http
        .get(s.http("/ws"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "8")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 426);
    assert_eq!(r.headers()["sec-websocket-version"], "13");
    // No version at all: a malformed handshake.
    let r = http
        .get(s.http("/ws"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Bad display name.
    let long = "n".repeat(65);
    let err = common::Client::connect_request(format!("{}?name={long}", s.ws_url()))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 400);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "bad_request");
        }
        other => panic!("{other:?}"),
    }
    // A display name with a direction override (U+202E, percent-encoded).
    let err = common::Client::connect_request(format!("{}?name=eve%E2%80%AEtxt", s.ws_url()))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 400);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "bad_request");
            let m = body["error"]["message"].as_str().unwrap();
            assert!(m.contains("bidirectional"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn foreign_origin_gets_403_before_the_upgrade() {
    let s = Server::start(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let with_origin = |o: &str| {
        let mut req = s.ws_url().into_client_request().unwrap();
        req.headers_mut().insert("Origin", o.parse().unwrap());
        req
    };
    match common::Client::connect_request(with_origin("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "forbidden");
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(
        common::Client::connect_request(with_origin("https://app.example.com"))
            .await
            .is_ok()
    );
    // The request's own host is always allowed.
    let own = format!("http://{}", s.addr);
    assert!(
        common::Client::connect_request(with_origin(&own))
            .await
            .is_ok()
    );
    // No Origin (not a browser): allowed.
    assert!(common::Client::connect_request(s.ws_url()).await.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn default_origin_policy_is_loopback_and_same_host() {
    let s = Server::default().await;
    let with_origin = |o: &str| {
        let mut req = s.ws_url().into_client_request().unwrap();
        req.headers_mut().insert("Origin", o.parse().unwrap());
        req
    };
    assert!(
        common::Client::connect_request(with_origin("http://localhost:5173"))
            .await
            .is_ok()
    );
    assert!(
        common::Client::connect_request(with_origin("https://example.com"))
            .await
            .is_err()
    );
    s.stop().await;
}

#[tokio::test]
async fn a_flood_does_not_stall_other_connections() {
    let s = Server::default().await;
    let mut flooder = s.client().await;
    let mut calm = s.client().await;
    calm.join("calm").await;
    let mut other = s.client().await;
    // Queue thousands of frames without reading replies.
    let flood = tokio::spawn(async move {
        for i in 0..20_000 {
            let frame = if i % 2 == 0 {
                r#"{"type":"ping"}"#.to_string()
            } else {
                r#"{"type":"publish","room":"flood","event":"e","data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#.to_string()
            };
            if flooder.ws.feed(Message::text(frame)).await.is_err() {
                break;
            }
        }
        let _ = flooder.ws.flush().await;
        flooder
    });
    // Meanwhile a well-behaved pair keeps getting answers.
    for i in 0..20 {
        other.publish("calm", json!(i)).await;
        let m = calm.expect("message").await;
        assert_eq!(m["data"], i);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The flooder went past the default limit (1000 frames/s, bursts of
    // 2000) without reading its replies: it is closed, for flooding (4003)
    // or because its reply queue overflowed (4000), whichever came first.
    let mut flooder = flood.await.unwrap();
    let (code, _, _) = flooder.until_close().await;
    assert!(matches!(code, Some(4000) | Some(4003)), "{code:?}");
    s.stop().await;
}

both_engines! {
    #[tokio::test]
    async fn frames_over_the_rate_limit_are_refused_then_a_flood_is_closed_with_4003(engine) {
        let s = Server::start_on(engine, |c| {
            c.rate_limit_per_conn = 5;
            c.rate_limit_burst = 10;
        })
        .await;
        let mut c = s.client().await;
        for i in 0..15 {
            c.send(json!({"type":"ping","id":i})).await;
        }
        let mut replies = Vec::new();
        for _ in 0..15 {
            replies.push(c.recv().await);
        }
        for (i, r) in replies.iter().enumerate().take(10) {
            assert_eq!(r["type"], "pong", "the burst is allowed: {r}");
            assert_eq!(r["id"], i);
        }
        let refused: Vec<&Value> = replies[10..]
            .iter()
            .filter(|r| r["code"] == "rate_limited")
            .collect();
        assert!(refused.len() >= 3, "{replies:?}");
        for r in &refused {
            assert_eq!(r["type"], "error");
            assert!(
                r["id"].as_u64().unwrap() >= 10,
                "the refused frame's id is echoed: {r}"
            );
        }
        // The bucket refills: after a pause the connection is usable again.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(c.call(json!({"type":"ping"})).await["type"], "pong");
        // Keeping on past the limit is flooding: closed with 4003.
        for _ in 0..40 {
            c.ws.feed(Message::text(r#"{"type":"ping"}"#))
                .await
                .unwrap();
        }
        c.ws.flush().await.unwrap();
        let (code, reason, _) = c.until_close().await;
        assert_eq!(code, Some(4003), "{reason}");
        s.stop().await;
    }
}

/// Joins have a budget of their own (every join is a presence event to
/// the whole room): a client may join all its rooms at once, excess joins
/// are refused with `rate_limited`, and neither that nor a leave closes it.
#[tokio::test]
async fn joins_over_their_rate_are_refused_and_the_connection_stays() {
    let s = Server::start(|c| {
        c.join_rate_per_conn = 1;
        c.max_rooms_per_conn = 4;
    })
    .await;
    let mut c = s.client().await;
    // A burst of max_rooms_per_conn joins, then 20 more of the same room,
    // sent without waiting for replies.
    for i in 0..24 {
        let room = format!("storm{}", i.min(3));
        c.send(json!({"type":"join","room":room,"id":i})).await;
    }
    let mut joined = 0;
    let mut refused = 0;
    let mut replies = 0;
    while replies < 24 {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("presence") => continue,
            Some("joined") => joined += 1,
            Some("error") => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                assert!(v["id"].as_u64().unwrap() >= 4, "the burst is allowed: {v}");
                refused += 1;
            }
            _ => panic!("unexpected {v}"),
        }
        replies += 1;
    }
    assert!(joined >= 4, "{joined} joined");
    assert!(refused >= 10, "{refused} of 20 refused");
    // Leaving needs no token; the connection is still usable.
    for i in 0..4 {
        let (left, _) = c
            .request(json!({"type":"leave","room":format!("storm{i}")}))
            .await;
        assert_eq!(left["type"], "left", "{left}");
    }
    assert_eq!(c.call(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

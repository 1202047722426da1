//! `data` is relayed verbatim, so the server takes only JSON its clients
//! can read back (docs/protocol.md, "Relayed JSON"): nesting deeper than
//! 64 levels, numbers that overflow an f64 and lone UTF-16 surrogate
//! escapes are refused with `bad_request` over WebSocket and HTTP, and
//! nothing of them is published.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::Server;
use serde_json::{Value, json};

/// Each unreadable `data`, as raw JSON text, and what the refusal says.
fn unreadable() -> Vec<(String, &'static str)> {
    vec![
        (
            format!("{}1{}", "[".repeat(65), "]".repeat(65)),
            "nested deeper than 64 levels",
        ),
        (
            format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200)),
            "nested deeper than 64 levels",
        ),
        ("1e400".into(), "not finite"),
        (r#"{"n":[-1e400]}"#.into(), "not finite"),
        ("9".repeat(400), "not finite"),
        (r#""\ud800""#.into(), "lone UTF-16 surrogate"),
        (r#"["\udfff and more"]"#.into(), "lone UTF-16 surrogate"),
    ]
}

/// Data exactly 64 deep, the largest finite number and a surrogate pair:
/// accepted.
fn at_the_limits() -> Vec<String> {
    vec![
        format!("{}1{}", "[".repeat(64), "]".repeat(64)),
        "1.7976931348623157e308".into(),
        r#""\ud83d\ude00""#.into(),
    ]
}

both_engines! {
    #[tokio::test]
    async fn websocket_publish_and_send_of_unreadable_data_are_refused_and_nothing_is_published(engine) {
        let s = Server::start_on(engine, |_| {}).await;
        let mut sub = s.client().await;
        sub.join("r").await;
        let me = sub.user();
        let mut c = s.client().await;
        let mut id = 100;
        for (data, words) in unreadable() {
            for target in [r#""type":"publish","room":"r""#, &format!(r#""type":"send","to":"{me}""#)] {
                c.send_text(&format!(r#"{{{target},"id":{id},"event":"e","data":{data}}}"#)).await;
                let e = c.expect("error").await;
                assert_eq!(e["code"], "bad_request", "{e}");
                assert_eq!(e["id"], id, "{e}");
                let message = e["message"].as_str().unwrap();
                assert!(
                    message.starts_with("field `data` ") && message.contains(words),
                    "{message:?} should say {words:?}"
                );
                // The connection stays usable.
                let pong = c.call(json!({"type":"ping"})).await;
                assert_eq!(pong["type"], "pong");
                id += 1;
            }
        }
        let h = c.call(json!({"type":"history","room":"r"})).await;
        assert_eq!(h["messages"], json!([]), "{h}");
        // What is at the limits goes through, in order after the refusals:
        // the subscriber's first messages are these, from offset 1.
        for (n, data) in at_the_limits().iter().enumerate() {
            let frame = format!(r#"{{"type":"publish","id":1,"room":"r","event":"e","data":{data}}}"#);
            c.send_text(&frame).await;
            let ack = c.expect("ack").await;
            assert_eq!(ack["offset"], n + 1, "{ack}");
            let m = sub.expect("message").await;
            assert_eq!(m["offset"], n + 1, "{m}");
            let sent: Value = serde_json::from_str(data).unwrap();
            assert_eq!(m["data"], sent);
        }
        // No direct message reached the subscriber's personal room either.
        let h = sub.call(json!({"type":"history","room":format!("@{me}")})).await;
        assert_eq!(h["messages"], json!([]), "{h}");
    }
}

#[tokio::test]
async fn a_numeric_id_that_is_not_finite_is_refused_and_not_echoed() {
    let s = Server::start(|_| {}).await;
    let mut c = s.client().await;
    c.send_text(r#"{"type":"ping","id":1e400}"#).await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(e.get("id").is_none(), "{e}");
    assert!(e["message"].as_str().unwrap().contains("`id`"), "{e}");
    let pong = c.call(json!({"type":"ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn http_publish_and_send_of_unreadable_data_answer_400_and_publish_nothing() {
    let s = Server::start(|_| {}).await;
    let mut sub = s.client().await;
    sub.join("r").await;
    let me = sub.user();
    let http = reqwest::Client::new();
    for (data, words) in unreadable() {
        for (path, body) in [
            (
                "/api/publish",
                format!(r#"{{"room":"r","event":"e","data":{data}}}"#),
            ),
            (
                "/api/send",
                format!(r#"{{"to":"{me}","event":"e","data":{data}}}"#),
            ),
        ] {
            let r = http
                .post(s.http(path))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{path} {words}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "bad_request", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("field `data` ") && message.contains(words),
                "{message:?} should say {words:?}"
            );
        }
    }
    for room in ["r", &format!("@{me}")] {
        let url = s.http(&format!("/api/rooms/{}/history", room.replace('@', "%40")));
        let h: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(h["messages"], json!([]), "{room}: {h}");
    }
    // The limits pass; the subscriber's first message is the first of them.
    for (n, data) in at_the_limits().iter().enumerate() {
        let r = http
            .post(s.http("/api/publish"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"room":"r","event":"e","data":{data}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let m = sub.expect("message").await;
        assert_eq!(m["offset"], n + 1, "{m}");
    }
}

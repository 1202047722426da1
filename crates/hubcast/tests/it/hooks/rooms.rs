//! The join and publish hooks, for rooms whose rule says `hook`: the
//! backend allows, refuses with a message (`rejected`), or replaces a
//! publish's data; a backend that fails never allows (`unavailable`), and
//! replies keep the order of the frames.

use hubcast::rules::{Joiners, Publishers};
use serde_json::{Value, json};

use super::{Answer, Backend, Case, table};
use crate::common::Server;

/// `h.*` joins and `p.*` publishes ask the hook.
async fn server(backend: &Backend) -> Server {
    backend
        .server(|c| {
            c.rooms = vec![
                table("h.*", Joiners::Hook, Publishers::Members),
                table("p.*", Joiners::Open, Publishers::Hook),
            ];
        })
        .await
}

/// Allows everything except rooms and data marked `no`; `swap` data is
/// replaced.
fn decide(b: &Value) -> Answer {
    let room = b["room"].as_str().unwrap_or_default();
    if room.ends_with(".no") || b["data"] == "no" {
        return Answer::Json(json!({"allow": false, "message": format!("not {room}")}));
    }
    if b["data"] == "swap" {
        return Answer::Json(json!({"allow": true, "data": {"swapped": b["user"]}}));
    }
    Answer::Json(json!({"allow": true}))
}

#[tokio::test]
async fn joins_ask_the_backend_which_allows_or_rejects() {
    let backend = Backend::start(decide).await;
    let s = server(&backend).await;
    let mut c = s.client().await;
    c.join("h.yes").await;
    let r = c.call(json!({"type":"join","room":"h.no"})).await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["code"], "rejected");
    assert_eq!(r["message"], "not h.no");
    // Rooms without the rule are not asked.
    c.join("open").await;
    let joins = backend.seen_of("join");
    assert_eq!(joins.len(), 2);
    let b = &joins[0].body;
    assert_eq!(b["room"], "h.yes");
    assert_eq!(b["user"], c.user());
    assert_eq!(b["conn"], c.welcome["connId"]);
    // SSE joins ask too: a refused room refuses the stream.
    let r = reqwest::get(s.http("/sse?rooms=h.no")).await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rejected");
    let r = reqwest::get(s.http("/sse?rooms=h.yes")).await.unwrap();
    assert_eq!(r.status(), 200);
    backend.assert_all_signed();
}

#[tokio::test]
async fn publishes_ask_the_backend_which_allows_rejects_or_replaces() {
    let backend = Backend::start(decide).await;
    let s = server(&backend).await;
    let mut sub = s.client().await;
    sub.join("p.a").await;
    let mut c = s.client().await;
    let ack = c
        .call(json!({"type":"publish","room":"p.a","event":"chat","data":"hi","msgId":"m-1"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = sub.messages("p.a", 1).await;
    assert_eq!(m[0]["data"], "hi");
    let r = c
        .call(json!({"type":"publish","room":"p.a","event":"chat","data":"no"}))
        .await;
    assert_eq!(r["code"], "rejected", "{r}");
    assert_eq!(r["message"], "not p.a");
    let ack = c
        .call(json!({"type":"publish","room":"p.a","event":"chat","data":"swap"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = sub.messages("p.a", 1).await;
    assert_eq!(m[0]["data"], json!({"swapped": c.user()}));
    // The msgId the backend saw is the message's.
    assert_eq!(m[0]["msgId"], ack["msgId"]);
    let publishes = backend.seen_of("publish");
    assert_eq!(publishes.len(), 3);
    let b = &publishes[0].body;
    assert_eq!(
        (b["room"].clone(), b["event"].clone(), b["msgId"].clone()),
        (json!("p.a"), json!("chat"), json!("m-1"))
    );
    assert_eq!(publishes[2].body["msgId"], ack["msgId"]);
    // The server API is not asked (PROTOCOL.md section 7).
    let api = s.api_publish("p.a", json!("no")).await;
    assert!(api["offset"].is_u64(), "{api}");
    assert_eq!(backend.seen_of("publish").len(), 3);
    // Nothing refused was published: the next message is the API's.
    let m = sub.messages("p.a", 1).await;
    assert_eq!(m[0]["data"], "no");
    assert_eq!(m[0]["source"], "api");
    backend.assert_all_signed();
}

#[tokio::test]
async fn replies_keep_the_order_of_the_frames() {
    let backend = Backend::start(decide).await;
    let s = server(&backend).await;
    let mut c = s.client().await;
    let frames = [
        json!({"type":"publish","id":1,"room":"open","event":"e","data":1}),
        json!({"type":"publish","id":2,"room":"p.a","event":"e","data":"no"}),
        json!({"type":"publish","id":3,"room":"open","event":"e","data":3}),
        json!({"type":"join","id":4,"room":"h.x"}),
        json!({"type":"publish","id":5,"room":"p.a","event":"e","data":5}),
        json!({"type":"ping","id":6}),
    ];
    for f in &frames {
        c.send(f.clone()).await;
    }
    let mut ids = Vec::new();
    while ids.len() < frames.len() {
        let v = c.recv().await;
        if v["id"].is_u64() {
            ids.push(v["id"].as_u64().unwrap());
        }
    }
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn a_backend_that_fails_allows_nothing() {
    let cases: [Case; 4] = [
        (|| Answer::Hang, "timeout"),
        (|| Answer::Status(500), "status"),
        (|| Answer::Garbage, "unreadable"),
        (|| Answer::Json(json!({"allowed": true})), "unreadable"),
    ];
    for (answer, reason) in cases {
        let backend = Backend::start(move |_| answer()).await;
        let s = server(&backend).await;
        let mut sub = s.client().await;
        sub.join("p.a").await;
        let mut c = s.client().await;
        let r = c.call(json!({"type":"join","room":"h.a"})).await;
        assert_eq!(r["code"], "unavailable", "{reason}: {r}");
        assert!(r["message"].as_str().unwrap().contains(reason), "{r}");
        let r = c
            .call(json!({"type":"publish","room":"p.a","event":"e","data":1}))
            .await;
        assert_eq!(r["code"], "unavailable", "{reason}: {r}");
        // Nothing was published: the barrier is the subscriber's next frame.
        s.barrier(&mut sub, "p.a").await;
        let r = reqwest::get(s.http("/sse?rooms=h.a")).await.unwrap();
        assert_eq!(r.status(), 503, "{reason}: SSE");
    }
}

#[tokio::test]
async fn past_the_in_flight_cap_a_hook_is_unavailable_at_once() {
    let backend = Backend::start(|b| {
        if b["room"] == "h.slow" {
            Answer::Hang
        } else {
            Answer::Json(json!({"allow": true}))
        }
    })
    .await;
    let s = backend
        .server(|c| {
            c.rooms = vec![table("h.*", Joiners::Hook, Publishers::Members)];
            c.hooks.max_in_flight = 1;
            c.hooks.timeout_ms = 10_000;
        })
        .await;
    let mut slow = s.client().await;
    slow.send(json!({"type":"join","id":1,"room":"h.slow"}))
        .await;
    crate::common::wait_until(|| async { (!backend.seen_of("join").is_empty()).then_some(()) })
        .await;
    let mut c = s.client().await;
    let r = c.call(json!({"type":"join","room":"h.fast"})).await;
    assert_eq!(r["code"], "unavailable", "{r}");
    assert!(r["message"].as_str().unwrap().contains("busy"), "{r}");
    assert_eq!(
        backend.seen_of("join").len(),
        1,
        "the capped request was never sent"
    );
}

#[tokio::test]
async fn replacement_data_over_the_frame_limit_is_unreadable_and_not_published() {
    let backend =
        Backend::start(|_| Answer::Json(json!({"allow": true, "data": "x".repeat(70_000)}))).await;
    let s = server(&backend).await;
    let mut sub = s.client().await;
    sub.join("p.a").await;
    let mut c = s.client().await;
    let r = c
        .call(json!({"type":"publish","room":"p.a","event":"e","data":1}))
        .await;
    assert_eq!(r["code"], "unavailable", "{r}");
    assert!(r["message"].as_str().unwrap().contains("unreadable"), "{r}");
    s.barrier(&mut sub, "p.a").await;
}

//! A token's `subs` claim (PROTOCOL.md section 8): the rooms a connection
//! joins at connect, each checked like a `join`: after `welcome`, one
//! `joined` without `id` per room, or an `error` without `id` naming the
//! refused room; SSE streams join them too.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Client, Server};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-0123456789abcdef";

fn token(claims: Value) -> String {
    common::hs256(SECRET, &claims)
}

fn exp() -> u64 {
    hubcast::unix_ms() as u64 / 1000 + 600
}

/// The next frame of type `ty`, skipping presence events (the
/// connection's own joins make some).
async fn expect(c: &mut Client, ty: &str) -> Value {
    loop {
        let v = c.recv().await;
        if v["type"] != "presence" {
            assert_eq!(v["type"], ty, "expected a {ty} frame, got {v}");
            return v;
        }
    }
}

#[tokio::test]
async fn subs_are_joined_after_welcome_and_refused_ones_named_in_errors() {
    let s = Server::start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.max_rooms_per_conn = 2;
    })
    .await;
    let t = token(json!({
        "sub": "sam", "exp": exp(), "rooms": ["a", "b", "c"],
        "subs": ["a", "secret", "bad name", "b", "c"],
    }));
    let mut sam = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
    let j = expect(&mut sam, "joined").await;
    assert_eq!(j["room"], "a");
    assert!(j.get("id").is_none(), "{j}");
    assert_eq!(j["offset"], 0);
    assert!(j.get("recovered").is_none(), "{j}");
    assert_eq!(j["members"][0]["user"], "sam");
    let e = expect(&mut sam, "error").await;
    assert!(e.get("id").is_none(), "{e}");
    assert_eq!(
        (&e["code"], &e["room"]),
        (&json!("forbidden"), &json!("secret"))
    );
    assert!(e["message"].as_str().unwrap().contains("secret"), "{e}");
    let e = expect(&mut sam, "error").await;
    assert_eq!(
        (&e["code"], &e["room"]),
        (&json!("bad_request"), &json!("bad name"))
    );
    let j = expect(&mut sam, "joined").await;
    assert_eq!(j["room"], "b");
    // Past max_rooms_per_conn, as a `join` would be.
    let e = expect(&mut sam, "error").await;
    assert_eq!(
        (&e["code"], &e["room"]),
        (&json!("too_many_rooms"), &json!("c"))
    );
    // The rooms are joined: messages arrive, and a leave needs no join.
    let ack = s.api_publish("a", json!("hi")).await;
    let m = expect(&mut sam, "message").await;
    assert_eq!((&m["room"], &m["msgId"]), (&json!("a"), &ack["msgId"]));
    let left = sam.call(json!({"type":"leave","room":"b"})).await;
    assert_eq!(left["type"], "left");
    // Refused ones are not: `c` fits now that `b` is left, but was not joined.
    let e = sam.call(json!({"type":"leave","room":"c"})).await;
    assert_eq!(e["code"], "not_joined");
    s.stop().await;
}

#[tokio::test]
async fn a_token_without_subs_joins_nothing_but_its_personal_room() {
    let s = Server::start(|c| c.jwt_secret = Some(SECRET.into())).await;
    let t = token(json!({"sub": "nat", "exp": exp()}));
    let mut nat = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
    // The first frame after welcome is the reply to our own request.
    let pong = nat.call(json!({"type":"ping"})).await;
    assert_eq!(pong["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn sse_streams_join_the_subs_too() {
    let s = Server::start(|c| c.jwt_secret = Some(SECRET.into())).await;
    let t = token(json!({
        "sub": "sue", "exp": exp(), "rooms": ["x", "y"], "subs": ["y", "z"],
    }));
    // No `rooms` needed when the token names some.
    let mut sse = crate::sse::Sse::open(&s, &format!("token={t}"), None).await;
    let (_, e) = sse.next().await;
    assert_eq!(
        (&e["type"], &e["code"], &e["room"]),
        (&json!("error"), &json!("forbidden"), &json!("z"))
    );
    let (_, j) = sse.next().await;
    assert_eq!((&j["type"], &j["room"]), (&json!("joined"), &json!("y")));
    // `rooms` and `subs` together: a room in both is joined once.
    let mut both = crate::sse::Sse::open(&s, &format!("rooms=x,y&token={t}"), None).await;
    let mut joined = Vec::new();
    while joined.len() < 2 {
        let (_, f) = both.next().await;
        if f["type"] == "joined" {
            joined.push(f["room"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(joined, ["x", "y"]);
    s.api_publish("y", json!(1)).await;
    let (id, m) = both.message().await;
    assert_eq!(id, "y:1");
    assert_eq!(m["data"], 1);
    let (id, _) = sse.message().await;
    assert_eq!(id, "y:1");
    s.stop().await;
}

//! Server-side subscribe and unsubscribe (PROTOCOL.md section 8): `POST
//! /api/subscribe` and `/api/unsubscribe` join and take every connection of
//! a user (WebSocket and SSE, on every node) in and out of a room, through
//! the same gap-free join as a client's `join`.
#![allow(clippy::unwrap_used)]

use crate::common;

use crate::sse::Sse;
use common::{Client, Engine, Server};
use hubcast::config::{Config, RoomTable};
use hubcast::rules::{Joiners, Publishers};
use serde_json::{Value, json};

const SECRET: &str = "subscribe-secret-0123456789";

fn token(user: &str, extra: Value) -> String {
    let exp = hubcast::unix_ms() as u64 / 1000 + 3600;
    let mut claims = json!({"sub": user, "exp": exp});
    if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
        c.extend(e);
    }
    common::hs256(SECRET, &claims)
}

/// One node on memory; two on one Redis or NATS prefix (the first cleans
/// it up).
async fn nodes(engine: Engine, f: impl Fn(&mut Config)) -> Vec<Server> {
    let first = Server::start_on(engine, |c| {
        c.jwt_secret = Some(SECRET.into());
        f(c);
    })
    .await;
    let mut nodes = vec![];
    if let Some(prefix) = first.redis_prefix() {
        let mut config = common::redis_config(common::redis_url(), "node-b");
        config.redis_prefix = prefix;
        config.jwt_secret = Some(SECRET.into());
        f(&mut config);
        nodes.push(Server::with_config(config, None).await);
    }
    if let Some(prefix) = first.nats_prefix() {
        let mut config = common::nats_config(&prefix, "node-b");
        config.jwt_secret = Some(SECRET.into());
        f(&mut config);
        nodes.push(Server::with_config(config, None).await);
    }
    nodes.insert(0, first);
    nodes
}

fn url(s: &Server, token: &str) -> String {
    format!("{}?token={token}", s.ws_url())
}

/// `POST` of `body` to `path`: the status and the JSON reply.
async fn post(s: &Server, path: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.http(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn subscribe(s: &Server, path: &str, user: &str, room: &str) -> Value {
    let (st, reply) = post(s, path, &json!({"user": user, "room": room}).to_string()).await;
    assert_eq!(st, 200, "{reply}");
    reply
}

/// A barrier through `user`'s personal room: one `POST /api/send`, which
/// must be the next frame of each of `clients` (all `user`'s).
async fn personal_barrier(s: &Server, user: &str, clients: &mut [&mut Client]) {
    let marker = json!(format!("barrier-{}", uuid::Uuid::new_v4().simple()));
    let ack = s
        .api_post(
            "/api/send",
            &json!({"to": user, "event": "e", "data": marker}),
        )
        .await;
    assert!(ack["offset"].is_u64(), "{ack}");
    for c in clients {
        c.expect_marker(&format!("@{user}"), &marker).await;
    }
}

/// The next frame that is not a presence event.
async fn next(c: &mut Client) -> Value {
    loop {
        let v = c.recv().await;
        if v["type"] != "presence" {
            return v;
        }
    }
}

/// The next SSE event whose room is `room`, presence events skipped.
async fn sse_next(sse: &mut Sse, room: &str) -> Value {
    loop {
        let (_, v) = sse.next().await;
        if v["room"] == room && v["type"] != "presence" {
            return v;
        }
    }
}

both_engines! {
    #[tokio::test]
    async fn subscribe_joins_every_connection_of_the_user_and_unsubscribe_leaves(engine) {
        let n = nodes(engine, |_| {}).await;
        let last = n.len() - 1;
        let tok = token("alice", json!({}));
        // Alice on both nodes (WebSocket) and an SSE stream on the last.
        let mut a0 = Client::connect(&url(&n[0], &tok)).await;
        let mut a1 = Client::connect(&url(&n[last], &tok)).await;
        let mut sse = Sse::open(&n[last], &format!("rooms=lobby&token={tok}"), None).await;
        assert_eq!(sse_next(&mut sse, "lobby").await["type"], "joined");
        let mut bob = Client::connect(&url(&n[last], &token("bob", json!({})))).await;
        // Their sessions are open (presence counts them): a send reached each.
        personal_barrier(&n[0], "alice", &mut [&mut a0, &mut a1]).await;
        n[0].barrier_personal(&mut bob).await;
        n[0].api_publish("news", json!("before")).await;

        let reply = subscribe(&n[0], "/api/subscribe", "alice", "news").await;
        assert_eq!(reply, json!({"user":"alice","room":"news","connections":2}));
        for c in [&mut a0, &mut a1] {
            let j = next(c).await;
            assert_eq!((&j["type"], &j["room"]), (&json!("joined"), &json!("news")), "{j}");
            assert!(j.get("id").is_none(), "{j}");
            assert_eq!(j["offset"], 1, "{j}");
            assert_eq!(j["members"].as_array().map(|m| !m.is_empty()), Some(true), "{j}");
        }
        let j = sse_next(&mut sse, "news").await;
        assert_eq!((&j["type"], &j["offset"]), (&json!("joined"), &json!(1)), "{j}");
        assert!(j.get("id").is_none(), "{j}");

        // Messages published after the joined frame arrive, once each.
        let ack = n[last].api_publish("news", json!("after")).await;
        assert_eq!(ack["offset"], 2);
        for c in [&mut a0, &mut a1] {
            let m = next(c).await;
            assert_eq!((&m["type"], &m["offset"], &m["data"]), (&json!("message"), &json!(2), &json!("after")), "{m}");
        }
        let (id, m) = sse.message().await;
        assert_eq!((id.as_str(), &m["data"]), ("news:2", &json!("after")));

        // A second subscribe changes nothing: no second `joined`. Every
        // node applies the commands in the order they were made, so the
        // `joined` of a later subscribe comes after anything the second
        // one would have sent.
        let reply = subscribe(&n[last], "/api/subscribe", "alice", "news").await;
        assert_eq!(reply["connections"], 2);
        subscribe(&n[0], "/api/unsubscribe", "alice", "elsewhere").await;
        subscribe(&n[0], "/api/subscribe", "alice", "mark").await;
        for c in [&mut a0, &mut a1] {
            let j = next(c).await;
            assert_eq!((&j["type"], &j["room"]), (&json!("joined"), &json!("mark")), "{j}");
        }
        let j = loop {
            let (_, j) = sse.next().await;
            if j["type"] != "presence" {
                break j;
            }
        };
        assert_eq!((&j["type"], &j["room"]), (&json!("joined"), &json!("mark")), "{j}");
        n[0].api_publish("news", json!("third")).await;
        for c in [&mut a0, &mut a1] {
            let m = next(c).await;
            assert_eq!((&m["type"], &m["data"]), (&json!("message"), &json!("third")), "{m}");
        }
        let (id, _) = sse.message().await;
        assert_eq!(id, "news:3");

        // Bob was not subscribed.
        n[last].barrier_personal(&mut bob).await;

        // Unsubscribe (through the other node): `left` without `id`.
        let reply = subscribe(&n[last], "/api/unsubscribe", "alice", "news").await;
        assert_eq!(reply, json!({"user":"alice","room":"news","connections":2}));
        for c in [&mut a0, &mut a1] {
            let l = next(c).await;
            assert_eq!(l, json!({"type":"left","room":"news"}));
        }
        let l = sse_next(&mut sse, "news").await;
        assert_eq!(l, json!({"type":"left","room":"news"}));
        // Nothing of the room arrives any more.
        n[0].api_publish("news", json!("gone")).await;
        personal_barrier(&n[0], "alice", &mut [&mut a0, &mut a1]).await;
        n[0].api_publish("lobby", json!("still here")).await;
        let (id, _) = sse.message().await;
        assert!(id.starts_with("lobby:"), "{id}");
        // The WebSocket connections can join the room again themselves.
        let j = a0.join("news").await;
        assert_eq!(j["offset"], 4);
    }
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_applies_nothing() {
    let s = Server::start(|c| c.jwt_secret = Some(SECRET.into())).await;
    let mut alice = Client::connect(&url(&s, &token("alice", json!({})))).await;
    s.barrier_personal(&mut alice).await;
    let long = "u".repeat(129);
    let cases: &[(String, &str)] = &[
        (json!({"room": "r"}).to_string(), "`user` is required"),
        (json!({"user": "", "room": "r"}).to_string(), "`user`: "),
        (json!({"user": long, "room": "r"}).to_string(), "`user`: "),
        (
            json!({"user": 5, "room": "r"}).to_string(),
            "`user` must be a string",
        ),
        (json!({"user": "alice"}).to_string(), "`room` is required"),
        (
            json!({"user": "alice", "room": 7}).to_string(),
            "`room` must be a string",
        ),
        (
            json!({"user": "alice", "room": ["r"]}).to_string(),
            "`room` must be a string",
        ),
        (
            json!({"user": "alice", "room": "bad name"}).to_string(),
            "`room`: ",
        ),
        (json!({"user": "alice", "room": ""}).to_string(), "`room`: "),
        (
            json!({"user": "alice", "room": "r".repeat(129)}).to_string(),
            "`room`: ",
        ),
        (
            json!({"user": "alice", "room": "@bob"}).to_string(),
            "`room`: a personal room",
        ),
        (
            json!({"user": "alice", "room": "@alice"}).to_string(),
            "`room`: a personal room",
        ),
        ("[1]".to_string(), "JSON object"),
        ("{\"user\":".to_string(), "malformed JSON"),
    ];
    for path in ["/api/subscribe", "/api/unsubscribe"] {
        for (body, names) in cases {
            let (st, reply) = post(&s, path, body).await;
            assert_eq!(st, 400, "{path} {body}: {reply}");
            assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
            let message = reply["error"]["message"].as_str().unwrap();
            assert!(message.contains(names), "{path} {body}: {message}");
        }
    }
    // A user never seen: nobody to reach, not an error.
    let reply = subscribe(&s, "/api/subscribe", "nobody", "r").await;
    assert_eq!(reply, json!({"user":"nobody","room":"r","connections":0}));
    // None of the refused calls reached alice: the next frame is the
    // `joined` of a good call.
    let reply = subscribe(&s, "/api/subscribe", "alice", "good").await;
    assert_eq!(reply["connections"], 1);
    let j = alice.recv().await;
    assert_eq!(
        (&j["type"], &j["room"]),
        (&json!("joined"), &json!("good")),
        "{j}"
    );
    s.stop().await;
}

both_engines! {
    #[tokio::test]
    async fn the_token_and_room_rules_do_not_refuse_but_max_rooms_per_conn_does(engine) {
        let n = nodes(engine, |c| {
            c.max_rooms_per_conn = 1;
            c.rooms = vec![RoomTable {
                pattern: "quiet.**".into(),
                publish: Publishers::Server,
                join: Joiners::Open,
                history_size: None,
                history_ttl: None,
                presence: false,
            }];
        })
        .await;
        let last = n.len() - 1;
        // The token allows `only`; the server joins it elsewhere all the same.
        let tok = token("carol", json!({"rooms": ["only"]}));
        let mut ws = Client::connect(&url(&n[last], &tok)).await;
        n[last].barrier_personal(&mut ws).await;
        let mut sse = Sse::open(&n[last], &format!("rooms=only&token={tok}"), None).await;
        assert_eq!(sse_next(&mut sse, "only").await["type"], "joined");

        subscribe(&n[0], "/api/subscribe", "carol", "quiet.x").await;
        let j = next(&mut ws).await;
        assert_eq!((&j["type"], &j["room"]), (&json!("joined"), &json!("quiet.x")), "{j}");
        assert_eq!(j["members"], json!([]), "no presence in a quiet room: {j}");
        // The stream is at its one room: refused, and told which.
        let e = sse_next(&mut sse, "quiet.x").await;
        assert_eq!((&e["type"], &e["code"]), (&json!("error"), &json!("too_many_rooms")), "{e}");
        assert!(e.get("id").is_none(), "{e}");

        // The connection is at its limit now too.
        subscribe(&n[0], "/api/subscribe", "carol", "other").await;
        let e = next(&mut ws).await;
        assert_eq!(
            (&e["type"], &e["code"], &e["room"]),
            (&json!("error"), &json!("too_many_rooms"), &json!("other")),
            "{e}"
        );
        assert!(e.get("id").is_none(), "{e}");
        let e = sse_next(&mut sse, "other").await;
        assert_eq!(e["code"], "too_many_rooms", "{e}");

        // Unsubscribed, it has room again.
        subscribe(&n[0], "/api/unsubscribe", "carol", "quiet.x").await;
        assert_eq!(next(&mut ws).await, json!({"type":"left","room":"quiet.x"}));
        subscribe(&n[0], "/api/subscribe", "carol", "other").await;
        let j = next(&mut ws).await;
        assert_eq!((&j["type"], &j["room"]), (&json!("joined"), &json!("other")), "{j}");
        // A client's own leave of the server's room works like any other.
        let (left, _presence) = ws.request(json!({"type":"leave","room":"other"})).await;
        assert_eq!(left["type"], "left");
    }
}

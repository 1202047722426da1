//! The server API (PROTOCOL.md sections 5 and 6) over real HTTP: what a
//! backend publishes reaches WebSocket subscribers with the same envelope,
//! offsets and msgId deduplication; every error is a JSON body with the
//! right status.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Client, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "test-api-key-0123456789";

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(s: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    let r = http().post(s.http(path)).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn get(s: &Server, path: &str) -> (StatusCode, Value) {
    let r = http().get(s.http(path)).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

both_engines! {
    #[tokio::test]
    async fn an_http_publish_reaches_websocket_subscribers(engine) {
        let s = Server::on(engine).await;
        let mut sub = s.client().await;
        sub.join("news").await;
        let (st, ack) = post(&s, "/api/publish", json!({"room":"news","event":"post","data":{"n":1}})).await;
        assert_eq!(st, 200, "{ack}");
        assert_eq!(ack["room"], "news");
        assert_eq!(ack["offset"], 1);
        assert_eq!(ack["duplicate"], false);
        assert!(ack["epoch"].is_string());
        let m = sub.expect("message").await;
        assert_eq!(m["msgId"], ack["msgId"]);
        assert_eq!(m["offset"], 1);
        assert_eq!(m["epoch"], ack["epoch"]);
        assert_eq!(m["eventType"], "post");
        assert_eq!(m["data"], json!({"n":1}));
        assert_eq!(m["source"], "api", "default source");

        let (_, ack2) = post(&s, "/api/publish", json!({"room":"news","event":"post","data":null,"source":"billing"})).await;
        assert_eq!(ack2["offset"], 2);
        let m = sub.expect("message").await;
        assert_eq!(m["source"], "billing");
        assert_eq!(m["data"], Value::Null);
    }
}

both_engines! {
    #[tokio::test]
    async fn msg_id_deduplicates_across_websocket_and_http(engine) {
        let s = Server::on(engine).await;
        let mut sub = s.client().await;
        sub.join("orders").await;
        let mut ws = s.client().await;
        let first = ws
            .call(json!({"type":"publish","room":"orders","event":"e","data":1,"msgId":"order-17"}))
            .await;
        assert_eq!(first["duplicate"], false);
        let (st, again) = post(&s, "/api/publish", json!({"room":"orders","event":"e","data":1,"msgId":"order-17"})).await;
        assert_eq!(st, 200);
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["offset"], first["offset"]);
        assert_eq!(again["msgId"], "order-17");
        // And the other way round.
        let (_, h) = post(&s, "/api/publish", json!({"room":"orders","event":"e","data":2,"msgId":"order-18"})).await;
        let w = ws
            .call(json!({"type":"publish","room":"orders","event":"e","data":2,"msgId":"order-18"}))
            .await;
        assert_eq!(w["duplicate"], true);
        assert_eq!(w["offset"], h["offset"]);
        // The subscriber got each message once.
        assert_eq!(sub.expect("message").await["msgId"], "order-17");
        assert_eq!(sub.expect("message").await["msgId"], "order-18");
        s.barrier(&mut sub, "orders").await;
    }
}

both_engines! {
    #[tokio::test]
    async fn send_presence_history_and_status(engine) {
        let s = Server::on(engine).await;
        let mut ada = s.named("Ada").await;
        let user = ada.user();
        // send: into the user's personal room.
        let (st, ack) = post(&s, "/api/send", json!({"to":user,"event":"dm","data":"hi"})).await;
        assert_eq!(st, 200, "{ack}");
        assert_eq!(ack["room"], format!("@{user}"));
        let m = ada.expect("message").await;
        assert_eq!(m["room"], format!("@{user}"));
        assert_eq!(m["data"], "hi");

        ada.join("lobby").await;
        let (st, p) = get(&s, "/api/rooms/lobby/presence").await;
        assert_eq!(st, 200);
        assert_eq!(p["room"], "lobby");
        assert_eq!(p["members"][0]["name"], "Ada");
        assert_eq!(p["members"][0]["connections"], 1);
        let (_, p) = get(&s, "/api/rooms/empty/presence").await;
        assert_eq!(p["members"], json!([]));

        for i in 1..=5 {
            post(&s, "/api/publish", json!({"room":"lobby","event":"e","data":i})).await;
        }
        let (st, h) = get(&s, "/api/rooms/lobby/history?limit=2").await;
        assert_eq!(st, 200);
        let offs = common::reply_offsets(&h);
        assert_eq!(offs, vec![4, 5]);
        assert_eq!(h["room"], "lobby");
        assert!(h["epoch"].is_string());
        let (_, h) = get(&s, "/api/rooms/lobby/history?since=3").await;
        let offs = common::reply_offsets(&h);
        assert_eq!(offs, vec![4, 5]);
        assert_eq!(h["complete"], true);
        // Room names are percent-decoded: a personal room's history.
        let (st, h) = get(&s, &format!("/api/rooms/%40{user}/history")).await;
        assert_eq!(st, 200, "{h}");
        assert_eq!(h["messages"][0]["data"], "hi");

        let (st, u) = get(&s, &format!("/api/users/{user}/status")).await;
        assert_eq!(st, 200);
        assert_eq!(u, json!({"user":user,"status":"online","connections":1,"lastSeen":null}));
        // An anonymous user lives as long as its one connection: once it
        // closes, it reads as never seen.
        ada.close().await;
        let never = json!({"user":user,"status":"offline","connections":0,"lastSeen":null});
        let mut u = Value::Null;
        for _ in 0..50 {
            u = get(&s, &format!("/api/users/{user}/status")).await.1;
            if u == never {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(u, never);
        // A user never seen is offline, not 404 (PROTOCOL.md section 8).
        let (st, u) = get(&s, "/api/users/nobody-ever/status").await;
        assert_eq!(st, 200, "{u}");
        assert_eq!(
            u,
            json!({"user":"nobody-ever","status":"offline","connections":0,"lastSeen":null})
        );
    }
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_lose_nothing() {
    let s = Server::start(|c| c.max_message_bytes = 4096).await;
    let mut sub = s.client().await;
    sub.join("r").await;
    let url = s.http("/api/publish");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (
            http()
                .post(&url)
                .header("content-type", "application/json")
                .body("{\"room\":"),
            400,
            "bad_request",
            "malformed JSON",
        ),
        (
            http()
                .post(&url)
                .header("content-type", "text/plain")
                .body("{}"),
            400,
            "bad_request",
            "Content-Type must be application/json",
        ),
        (
            http().post(&url).body("{}"),
            400,
            "bad_request",
            "Content-Type",
        ),
        (
            http().post(&url).json(&json!([1, 2])),
            400,
            "bad_request",
            "JSON object",
        ),
        (
            http().post(&url).json(&json!({"event":"e","data":1})),
            400,
            "bad_request",
            "`room` is required",
        ),
        (
            http().post(&url).json(&json!({"room":"r","data":1})),
            400,
            "bad_request",
            "`event` is required",
        ),
        (
            http().post(&url).json(&json!({"room":"r","event":"e"})),
            400,
            "bad_request",
            "`data` is required",
        ),
        (
            http()
                .post(&url)
                .json(&json!({"room":"a b","event":"e","data":1})),
            400,
            "bad_request",
            "invalid room",
        ),
        (
            http()
                .post(&url)
                .json(&json!({"room":"r","event":"e","data":1,"msgId":7})),
            400,
            "bad_request",
            "`msgId` must be a string",
        ),
        (
            http()
                .post(&url)
                .json(&json!({"room":"r","event":"e","data":1,"source":""})),
            400,
            "bad_request",
            "`source`",
        ),
        (
            http()
                .post(s.http("/api/send"))
                .json(&json!({"event":"e","data":1})),
            400,
            "bad_request",
            "`to` is required",
        ),
        (
            http()
                .post(&url)
                .json(&json!({"room":"r","event":"e","data":"x".repeat(5000)})),
            413,
            "too_large",
            "max_message_bytes",
        ),
        (
            http().get(s.http("/api/rooms/r/history?limit=0")),
            400,
            "bad_request",
            "`limit`",
        ),
        (
            http().get(s.http("/api/rooms/r/history?since=-1")),
            400,
            "bad_request",
            "`since`",
        ),
        (
            http().get(s.http("/api/rooms/a%20b/presence")),
            400,
            "bad_request",
            "invalid room",
        ),
        (
            http().get(s.http("/api/nothing")),
            404,
            "not_found",
            "no such route",
        ),
        (http().get(&url), 405, "bad_request", "method not allowed"),
    ];
    for (req, status, code, words) in cases {
        let r = req.send().await.unwrap();
        let got = r.status().as_u16();
        let url = r.url().to_string();
        let body: Value = r.json().await.unwrap();
        assert_eq!(got, status, "{url}: {body}");
        assert_eq!(error_code(&body), code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message:?} should say {words:?}");
    }
    // A chunked body (no Content-Length) over the limit is refused too.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))),
    );
    let r = http()
        .post(&url)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // None of it reached the room, and the server still publishes.
    let (st, ack) = post(&s, "/api/publish", json!({"room":"r","event":"e","data":1})).await;
    assert_eq!(st, 200);
    assert_eq!(ack["offset"], 1);
    assert_eq!(sub.expect("message").await["offset"], 1);
}

#[tokio::test]
async fn api_keys_are_required_when_configured() {
    let s =
        Server::start(|c| c.api_keys = vec![KEY.into(), "second-key-abcdefghijkl".into()]).await;
    let url = s.http("/api/publish");
    let body = json!({"room":"r","event":"e","data":1});
    let r = http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(error_code(&e), "unauthorized");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing API key")
    );
    for wrong in [
        "nope",
        "test-api-key-012345678",
        "test-api-key-01234567890",
        "",
    ] {
        let r = http()
            .post(&url)
            .bearer_auth(wrong)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "key {wrong:?}");
    }
    // Reads need the key too.
    let r = http()
        .get(s.http("/api/rooms/r/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for key in [KEY, "second-key-abcdefghijkl"] {
        let r = http()
            .post(&url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "key {key}");
    }
    let r = http()
        .get(s.http("/api/rooms/r/history"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The WebSocket side is not affected by API keys.
    let mut c = Client::connect(&s.ws_url()).await;
    c.join_quiet("r").await;
}

both_engines! {
    #[tokio::test]
    async fn presence_replies_list_at_most_max_presence_members(engine) {
        let s = Server::start_on(engine, |c| c.max_presence_members = 2).await;
        let mut clients = Vec::new();
        for name in ["A", "B", "C"] {
            let mut c = s.named(name).await;
            c.join("big").await;
            clients.push(c);
        }
        let mut d = s.named("D").await;
        let (j, _) = d.request(json!({"type":"join","room":"big"})).await;
        assert_eq!(j["members"].as_array().unwrap().len(), 2, "{j}");
        assert_eq!(j["total"], 4, "{j}");
        let mut users: Vec<String> = clients.iter().map(|c| c.user()).chain([d.user()]).collect();
        users.sort();
        let (p, _) = d.request(json!({"type":"presence","room":"big"})).await;
        let listed: Vec<&str> = p["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
        assert_eq!(listed, users[..2].iter().map(String::as_str).collect::<Vec<_>>(), "the first by user id");
        assert_eq!(p["total"], 4);
        let (st, h) = get(&s, "/api/rooms/big/presence").await;
        assert_eq!(st, 200);
        assert_eq!(h["members"].as_array().unwrap().len(), 2);
        assert_eq!(h["total"], 4);
    }
}

#[tokio::test]
async fn stats_summarize_the_node() {
    let s = Server::default().await;
    let mut sub = s.client().await;
    sub.join("st").await;
    let mut p = s.client().await;
    for i in 0..4 {
        p.publish("st", json!(i)).await;
    }
    post(
        &s,
        "/api/publish",
        json!({"room":"st","event":"e","data":"h"}),
    )
    .await;
    for _ in 0..5 {
        sub.expect("message").await;
    }
    let sse = http().get(s.http("/sse?rooms=st")).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    let base = s.http("");
    let waiting = tokio::spawn(async move {
        reqwest::get(format!("{base}/api/poll?room=quiet&timeout=3"))
            .await
            .unwrap()
            .status()
    });
    // Two rate samples a second apart include the publishes.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let (st, v) = get(&s, "/api/stats").await;
    assert_eq!(st, 200);
    assert_eq!(v["node"], "test-node");
    assert_eq!(v["broker"], "memory");
    assert!(v["uptimeSeconds"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(
        v["connections"],
        json!({"total":4,"ws":2,"sse":1,"poll":1}),
        "{v}"
    );
    assert_eq!(v["messages"]["published"], 5);
    // 5 to the WebSocket subscriber (the SSE stream joined after them).
    assert_eq!(v["messages"]["delivered"], 5);
    assert!(
        v["rooms"].as_u64().unwrap() >= 3,
        "st, quiet and personal rooms: {v}"
    );
    assert!(
        v["rates"]["publishedPerSecond"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(
        v["rates"]["deliveredPerSecond"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert_eq!(waiting.await.unwrap(), 200);
}

both_engines! {
    #[tokio::test]
    async fn token_users_are_remembered_offline_with_last_seen(engine) {
        let secret = "0123456789abcdef0123456789abcdef";
        let s = Server::start_on(engine, |c| c.jwt_secret = Some(secret.into())).await;
        let exp = hubcast::unix_ms() as u64 / 1000 + 600;
        let user = format!("bob-{}", uuid::Uuid::new_v4().simple());
        let token = common::hs256(secret, &json!({"sub": user, "exp": exp}));
        let bob = Client::connect(&format!("{}?token={token}", s.ws_url())).await;
        let (st, u) = get(&s, &format!("/api/users/{user}/status")).await;
        assert_eq!(st, 200, "{u}");
        assert_eq!(u["status"], "online");
        bob.close().await;
        let mut u = Value::Null;
        for _ in 0..50 {
            u = get(&s, &format!("/api/users/{user}/status")).await.1;
            if u["status"] == "offline" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(u["status"], "offline", "{u}");
        assert_eq!(u["connections"], 0);
        assert!(u["lastSeen"].as_i64().unwrap() > 0);
    }
}

//! User controls (PROTOCOL.md section 8): disconnect, block, token
//! revocation, on every node of a cluster, and (with Redis) on a node
//! started afterwards.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Client, Engine, Server};
use hubcast::config::Config;
use serde_json::{Value, json};

const SECRET: &str = "controls-secret-0123456789";

fn now() -> u64 {
    (hubcast::unix_ms() / 1000) as u64
}

/// A token for `user`, with the extra claims in `extra`.
fn token(user: &str, extra: Value) -> String {
    let mut claims = json!({"sub": user, "exp": now() + 3600});
    if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
        c.extend(e);
    }
    common::hs256(SECRET, &claims)
}

/// One node on memory; two on one Redis or NATS prefix (the second does
/// not clean the prefix up: the first does).
async fn nodes(engine: Engine) -> Vec<Server> {
    nodes_with(engine, |_| {}).await
}

/// [`nodes`] with settings changed by `f` on each.
async fn nodes_with(engine: Engine, f: impl Fn(&mut Config)) -> Vec<Server> {
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

/// A node on `prefix` that leaves the keys in place when it stops.
async fn another_node(prefix: &str, id: &str) -> Server {
    let mut config = common::redis_config(common::redis_url(), id);
    config.redis_prefix = prefix.to_string();
    config.jwt_secret = Some(SECRET.into());
    Server::with_config(config, None).await
}

fn url(s: &Server, token: &str) -> String {
    format!("{}?token={token}", s.ws_url())
}

/// The HTTP status of a WebSocket handshake (101 when it succeeds).
async fn handshake(s: &Server, token: &str) -> u16 {
    match tokio_tungstenite::connect_async(url(s, token)).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

async fn call(s: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), s.http(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn expect_close(c: &mut Client, code: u16) {
    let (got, reason, _) = c.until_close().await;
    assert_eq!(got, Some(code), "close reason {reason:?}");
}

both_engines! {
    #[tokio::test]
    async fn disconnect_closes_every_connection_of_the_user_with_4005(engine) {
        let n = nodes(engine).await;
        let last = n.len() - 1;
        let tok = token("alice", json!({}));
        let mut a0 = Client::connect(&url(&n[0], &tok)).await;
        let mut a1 = Client::connect(&url(&n[last], &tok)).await;
        let mut bob = Client::connect(&url(&n[last], &token("bob", json!({})))).await;
        let (st, reply) = call(&n[0], "POST", "/api/disconnect", Some(json!({"user":"alice","reason":"bye"}))).await;
        assert_eq!(st, 200, "{reply}");
        assert_eq!(reply, json!({"user":"alice","connections":2}));
        expect_close(&mut a0, 4005).await;
        expect_close(&mut a1, 4005).await;
        // Others stay, and the user may come back.
        n[last].barrier_personal(&mut bob).await;
        assert_eq!(handshake(&n[last], &tok).await, 101);
    }
}

both_engines! {
    #[tokio::test]
    async fn a_blocked_user_is_closed_with_4004_and_refused_until_unblocked(engine) {
        let n = nodes(engine).await;
        let last = n.len() - 1;
        let tok = token("alice", json!({}));
        let mut a0 = Client::connect(&url(&n[0], &tok)).await;
        let mut a1 = Client::connect(&url(&n[last], &tok)).await;
        let mut bob = Client::connect(&url(&n[0], &token("bob", json!({})))).await;
        let (st, reply) = call(&n[last], "PUT", "/api/users/alice/block", None).await;
        assert_eq!((st, reply), (200, json!({"user":"alice","blocked":true})));
        expect_close(&mut a0, 4004).await;
        expect_close(&mut a1, 4004).await;
        // Both nodes applied the block (they closed alice): both refuse.
        for s in &n {
            assert_eq!(handshake(s, &tok).await, 403);
        }
        n[0].barrier_personal(&mut bob).await;
        let (st, reply) = call(&n[0], "DELETE", "/api/users/alice/block", None).await;
        assert_eq!((st, reply), (200, json!({"user":"alice","blocked":false})));
        for s in &n {
            common::wait_until(|| async { (handshake(s, &tok).await == 101).then_some(()) }).await;
        }

        // A block with a ttl ends by itself.
        let (st, _) = call(&n[0], "PUT", "/api/users/alice/block", Some(json!({"ttl": 1}))).await;
        assert_eq!(st, 200);
        common::wait_until(|| async { (handshake(&n[last], &tok).await == 403).then_some(()) }).await;
        for s in &n {
            common::wait_until(|| async { (handshake(s, &tok).await == 101).then_some(()) }).await;
        }
    }
}

both_engines! {
    #[tokio::test]
    async fn a_revoked_jti_closes_its_connections_and_is_refused(engine) {
        let n = nodes(engine).await;
        let last = n.len() - 1;
        let revoked = token("alice", json!({"jti": "j-1"}));
        let kept = token("alice", json!({"jti": "j-2"}));
        let mut r = Client::connect(&url(&n[last], &revoked)).await;
        let mut k = Client::connect(&url(&n[last], &kept)).await;
        let (st, reply) = call(&n[0], "POST", "/api/tokens/revoke", Some(json!({"jti": "j-1"}))).await;
        assert_eq!(st, 200, "{reply}");
        assert_eq!(reply["jti"], "j-1");
        expect_close(&mut r, 4004).await;
        n[last].barrier_personal(&mut k).await;
        assert_eq!(handshake(&n[last], &revoked).await, 401);
        assert_eq!(handshake(&n[last], &kept).await, 101);
        common::wait_until(|| async { (handshake(&n[0], &revoked).await == 401).then_some(()) }).await;
    }
}

both_engines! {
    #[tokio::test]
    async fn revoking_by_issued_before_closes_older_tokens_only(engine) {
        let n = nodes(engine).await;
        let last = n.len() - 1;
        let cut = now() - 100;
        let old = token("alice", json!({"iat": cut - 10}));
        let fresh = token("alice", json!({"iat": cut + 10}));
        let no_iat = token("alice", json!({}));
        let other = token("bob", json!({"iat": cut - 10}));
        let mut o = Client::connect(&url(&n[last], &old)).await;
        let mut f = Client::connect(&url(&n[last], &fresh)).await;
        let mut b = Client::connect(&url(&n[last], &other)).await;
        let (st, reply) = call(&n[0], "POST", "/api/users/alice/tokens/revoke", Some(json!({"issuedBefore": cut}))).await;
        assert_eq!((st, reply), (200, json!({"user":"alice","issuedBefore":cut})));
        expect_close(&mut o, 4004).await;
        n[last].barrier_personal(&mut f).await;
        n[last].barrier_personal(&mut b).await;
        assert_eq!(handshake(&n[last], &old).await, 401);
        assert_eq!(handshake(&n[last], &no_iat).await, 401);
        assert_eq!(handshake(&n[last], &fresh).await, 101);
    }
}

#[tokio::test]
async fn a_node_started_after_a_block_or_a_revocation_refuses() {
    let n = nodes(Engine::Redis).await;
    let prefix = n[0].redis_prefix().unwrap();
    assert_eq!(
        call(&n[0], "PUT", "/api/users/alice/block", None).await.0,
        200
    );
    let body = json!({"jti": "j-late"});
    assert_eq!(
        call(&n[0], "POST", "/api/tokens/revoke", Some(body))
            .await
            .0,
        200
    );
    let body = json!({"issuedBefore": now() - 100});
    assert_eq!(
        call(&n[0], "POST", "/api/users/carol/tokens/revoke", Some(body))
            .await
            .0,
        200
    );
    // A node started afterwards, as after a restart, knows all three.
    let late = another_node(&prefix, "node-late").await;
    assert_eq!(handshake(&late, &token("alice", json!({}))).await, 403);
    assert_eq!(
        handshake(&late, &token("bob", json!({"jti": "j-late"}))).await,
        401
    );
    assert_eq!(
        handshake(&late, &token("carol", json!({"iat": now() - 200}))).await,
        401
    );
    assert_eq!(
        handshake(&late, &token("bob", json!({"jti": "j-other"}))).await,
        101
    );
    late.stop().await;
}

#[tokio::test]
async fn bad_control_requests_get_400_with_a_reason() {
    let s = Server::start(|c: &mut Config| c.jwt_secret = Some(SECRET.into())).await;
    let cases = [
        ("POST", "/api/disconnect", json!({}), "`user` is required"),
        (
            "POST",
            "/api/disconnect",
            json!({"user": 5}),
            "`user` must be a string",
        ),
        ("POST", "/api/disconnect", json!({"user": ""}), "`user`:"),
        (
            "PUT",
            "/api/users/alice/block",
            json!({"ttl": 0}),
            "`ttl` must be",
        ),
        (
            "PUT",
            "/api/users/alice/block",
            json!({"ttl": "1"}),
            "`ttl` must be",
        ),
        ("POST", "/api/tokens/revoke", json!({}), "`jti` is required"),
        (
            "POST",
            "/api/tokens/revoke",
            // Milliseconds by mistake.
            json!({"jti": "x", "until": 1_700_000_000_000u64}),
            "`until` must be",
        ),
        (
            "POST",
            "/api/users/alice/tokens/revoke",
            json!({}),
            "`issuedBefore` is required",
        ),
        (
            "POST",
            "/api/users/alice/tokens/revoke",
            json!({"issuedBefore": -1}),
            "`issuedBefore` must be",
        ),
    ];
    for (method, path, body, expected) in cases {
        let (st, reply) = call(&s, method, path, Some(body.clone())).await;
        assert_eq!(st, 400, "{method} {path} {body}: {reply}");
        assert_eq!(reply["error"]["code"], "bad_request");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{method} {path} {body}: {message}"
        );
    }
    // Nothing was blocked by the refused calls.
    assert_eq!(handshake(&s, &token("alice", json!({}))).await, 101);

    // Valid by the OpenAPI document, so accepted: a whole number written
    // as a float, and an `until` already past, which revokes nothing (the
    // connection that used the token stays open).
    let past = token("alice", json!({"jti": "j-past"}));
    let mut open = Client::connect(&url(&s, &past)).await;
    let (st, reply) = call(
        &s,
        "POST",
        "/api/tokens/revoke",
        Some(json!({"jti": "j-past", "until": 1.0})),
    )
    .await;
    assert_eq!((st, reply), (200, json!({"jti": "j-past", "until": 1})));
    let (st, reply) = call(
        &s,
        "POST",
        "/api/users/carol/tokens/revoke",
        Some(json!({"issuedBefore": 5.0})),
    )
    .await;
    assert_eq!(
        (st, reply),
        (200, json!({"user": "carol", "issuedBefore": 5}))
    );
    let (st, _) = call(
        &s,
        "PUT",
        "/api/users/carol/block",
        Some(json!({"ttl": 60.0})),
    )
    .await;
    assert_eq!(st, 200);
    s.barrier_personal(&mut open).await;
    assert_eq!(handshake(&s, &past).await, 101);
}

/// The next state change of a Rust client, within 10 s.
async fn next_state(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<hubcast_client::Event>,
) -> (hubcast_client::State, Option<u16>) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Some(hubcast_client::Event::State { state, code, .. }) => return (state, code),
                Some(_) => {}
                None => panic!("the client's events ended"),
            }
        }
    })
    .await
    .expect("a state change in time")
}

#[tokio::test]
async fn the_rust_client_reconnects_after_4005_and_stops_after_4004() {
    use hubcast_client::{Client as RustClient, Options, State};
    let s = Server::start(|c| c.jwt_secret = Some(SECRET.into())).await;
    let mut opts = Options::with_token(&token("alice", json!({})));
    opts.min_delay = std::time::Duration::from_millis(20);
    opts.max_delay = std::time::Duration::from_millis(100);
    let (client, mut events) = RustClient::connect(&s.ws_url(), opts);
    assert_eq!(next_state(&mut events).await, (State::Connected, None));

    assert_eq!(
        call(&s, "POST", "/api/disconnect", Some(json!({"user":"alice"})))
            .await
            .0,
        200
    );
    assert_eq!(
        next_state(&mut events).await,
        (State::Reconnecting, Some(4005))
    );
    loop {
        if next_state(&mut events).await.0 == State::Connected {
            break;
        }
    }

    assert_eq!(call(&s, "PUT", "/api/users/alice/block", None).await.0, 200);
    assert_eq!(next_state(&mut events).await, (State::Closed, Some(4004)));
    // It stopped: its driver ended without another attempt.
    let rest = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut rest = vec![];
        while let Some(e) = events.recv().await {
            rest.push(e);
        }
        rest
    })
    .await
    .expect("the client's events end");
    assert!(
        rest.iter().all(
            |e| !matches!(e, hubcast_client::Event::State { state, .. } if *state != State::Closed)
        ),
        "no reconnect after 4004: {rest:?}"
    );
    assert_eq!(client.state(), State::Closed);
}

both_engines! {
    #[tokio::test]
    async fn a_block_ends_the_users_sse_streams_and_refuses_new_ones(engine) {
        use futures_util::StreamExt;
        let n = nodes(engine).await;
        let last = n.len() - 1;
        let tok = token("alice", json!({}));
        let sse = |s: &Server| reqwest::Client::new().get(s.http(&format!("/sse?rooms=r&token={tok}"))).send();
        let r = sse(&n[last]).await.unwrap();
        assert_eq!(r.status(), 200);
        let mut body = r.bytes_stream();
        assert_eq!(call(&n[0], "PUT", "/api/users/alice/block", None).await.0, 200);
        // The stream ends (its chunks so far are `retry:` and heartbeats).
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(Ok(_)) = body.next().await {}
        })
        .await
        .expect("the stream ends");
        assert_eq!(sse(&n[last]).await.unwrap().status(), 403);
    }
}

both_engines! {
    #[tokio::test]
    async fn max_connections_per_user_counts_every_node(engine) {
        let n = nodes_with(engine, |c| c.max_connections_per_user = 2).await;
        let last = n.len() - 1;
        let tok = token("alice", json!({}));
        let a0 = Client::connect(&url(&n[0], &tok)).await;
        let _a1 = Client::connect(&url(&n[last], &tok)).await;
        for s in &n {
            let r = tokio_tungstenite::connect_async(url(s, &tok)).await;
            let Err(tokio_tungstenite::tungstenite::Error::Http(r)) = r else {
                panic!("a third connection is refused");
            };
            assert_eq!(r.status(), 429);
            let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_connections");
        }
        // Other users are not counted with alice.
        assert_eq!(handshake(&n[0], &token("bob", json!({}))).await, 101);
        a0.close().await;
        common::wait_until(|| async { (handshake(&n[last], &tok).await == 101).then_some(()) }).await;
    }
}

/// A node killed with SIGKILL holds its user's place under the cap only
/// until its presence lease runs out.
#[tokio::test]
async fn a_killed_nodes_connections_stop_counting_after_its_lease() {
    use std::process::{Command, Stdio};
    let prefix = common::unique_prefix();
    let mut doomed = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--broker", "redis"])
        .args([
            "--redis-url",
            &common::redis_url(),
            "--redis-prefix",
            &prefix,
        ])
        .args(["--presence-lease", "2", "--node-id", "doomed"])
        .args(["--jwt-secret", SECRET])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = common::listening_port(&mut doomed).await;
    common::wait_for(port, "/readyz").await;
    let mut config = common::redis_config(common::redis_url(), "survivor");
    config.redis_prefix = prefix.clone();
    config.presence_lease = 2;
    config.jwt_secret = Some(SECRET.into());
    config.max_connections_per_user = 1;
    let survivor = Server::with_config(config, Some(prefix)).await;

    let tok = token("alice", json!({}));
    let _ghost = Client::connect(&format!("ws://127.0.0.1:{port}/ws?token={tok}")).await;
    assert_eq!(handshake(&survivor, &tok).await, 429);
    doomed.kill().unwrap(); // SIGKILL: no cleanup on that node
    doomed.wait().unwrap();
    common::wait_until(|| async { (handshake(&survivor, &tok).await == 101).then_some(()) }).await;
    survivor.stop().await;
}

both_engines! {
    #[tokio::test]
    async fn the_blocked_users_list_is_the_same_on_every_node(engine) {
        let n = nodes(engine).await;
        let last = n.len() - 1;
        let listed = |s: &Server| {
            let url = s.http("/api/users/blocked");
            async move {
                let r = reqwest::get(url).await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<Value>().await.unwrap()
            }
        };
        assert_eq!(listed(&n[0]).await, json!({"users": []}));
        let (st, _) = call(&n[0], "PUT", "/api/users/zed/block", None).await;
        assert_eq!(st, 200);
        let before = now();
        let (st, _) = call(&n[last], "PUT", "/api/users/amy%20b/block", Some(json!({"ttl": 600}))).await;
        assert_eq!(st, 200);
        let after = now();
        // Every node answers from the engine: at once, by user id.
        for s in &n {
            let users = listed(s).await["users"].clone();
            assert_eq!(users.as_array().unwrap().len(), 2, "{users}");
            assert_eq!(users[0]["user"], "amy b");
            let until = users[0]["until"].as_u64().unwrap();
            assert!((before + 600..=after + 601).contains(&until), "{until}");
            assert_eq!(users[1], json!({"user": "zed", "until": null}));
        }
        let (st, _) = call(&n[0], "DELETE", "/api/users/zed/block", None).await;
        assert_eq!(st, 200);
        // An expired block is not listed.
        let (st, _) = call(&n[0], "PUT", "/api/users/amy%20b/block", Some(json!({"ttl": 1}))).await;
        assert_eq!(st, 200);
        for s in &n {
            common::wait_until(|| async {
                (listed(s).await == json!({"users": []})).then_some(())
            })
            .await;
        }
    }
}

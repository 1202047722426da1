//! hubcast behind a proxy (`trusted_proxies`): a trusted peer's
//! `Forwarded` / `X-Forwarded-For` names the client, whose address the
//! per-address limits, the API's loopback check and the connect hook
//! see; an untrusted peer's headers are ignored; a reload changes who is
//! trusted; garbage headers fall back to the peer and lose nothing.
//!
//! Loopback source addresses stand for hosts: `127.0.0.2` is the proxy
//! where one is needed besides a direct client on `127.0.0.1`.
#![allow(clippy::unwrap_used)]

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::common::{self, Server};
use crate::hooks::{Answer, Backend};

/// A WebSocket handshake from source address `src` with `headers`: the
/// stream after its `welcome`, or the refusal's status and error code.
async fn open(
    s: &Server,
    src: &str,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<TcpStream>, (u16, String)> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let tcp = sock.connect(s.addr).await.unwrap();
    let mut req = s.ws_url().into_client_request().unwrap();
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .append(name, tungstenite::http::HeaderValue::from_str(v).unwrap());
    }
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((mut ws, _)) => {
            let welcome = common::recv_json(&mut ws).await;
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => {
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            Err((
                resp.status().as_u16(),
                body["error"]["code"].as_str().unwrap().to_string(),
            ))
        }
        Err(e) => panic!("{e}"),
    }
}

/// A backend whose connect hook lets everyone in as `u`.
async fn backend() -> Backend {
    Backend::start(|_| {
        Answer::Json(json!({"user": "u", "expiresAt": hubcast::unix_ms() / 1000 + 600}))
    })
    .await
}

/// The `remote` the connect hook was shown for the last handshake.
fn last_remote(b: &Backend) -> String {
    let seen = b.seen_of("connect");
    seen.last().unwrap().body["remote"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_limited_by_their_own_addresses() {
    let s = Server::start(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".into()];
        c.max_connections_per_ip = 1;
    })
    .await;
    let xff = |ip| [("x-forwarded-for", ip)];
    let _a = open(&s, "127.0.0.1", &xff("198.51.100.1")).await.unwrap();
    // Another client behind the same proxy has its own place.
    let _b = open(&s, "127.0.0.1", &xff("198.51.100.2")).await.unwrap();
    // The same client again is over its cap of one.
    let refused = open(&s, "127.0.0.1", &xff("198.51.100.1")).await.err();
    assert_eq!(refused, Some((429, "rate_limited".into())));
    // RFC 7239 names a client too (IPv6, quoted, with a port), and the
    // proxy's own requests count under its address: the proxy's sockets
    // are not held to the per-address TCP cap, which every client behind
    // it would share.
    let fwd = [("forwarded", "for=\"[2001:db8::7]:4711\";proto=http")];
    let _c = open(&s, "127.0.0.1", &fwd).await.unwrap();
    let refused = open(&s, "127.0.0.1", &fwd).await.err();
    assert_eq!(refused, Some((429, "rate_limited".into())));
    let _d = open(&s, "127.0.0.1", &[]).await.unwrap();
}

#[tokio::test]
async fn the_connect_hook_sees_the_forwarded_client_and_untrusted_headers_are_ignored() {
    let b = backend().await;
    let s = b
        .server(|c| {
            c.hooks.connect = true;
            c.trusted_proxies = vec!["127.0.0.2".into()];
        })
        .await;
    let spoof = [("x-forwarded-for", "198.51.100.7")];
    let _proxied = open(&s, "127.0.0.2", &spoof).await.unwrap();
    assert_eq!(last_remote(&b), "198.51.100.7");
    // The same header from a peer that is not a trusted proxy (loopback
    // included) is the client's own word: ignored.
    let _direct = open(&s, "127.0.0.1", &spoof).await.unwrap();
    assert_eq!(last_remote(&b), "127.0.0.1");
    let fwd = [("forwarded", "for=198.51.100.8")];
    let _direct = open(&s, "127.0.0.1", &fwd).await.unwrap();
    assert_eq!(last_remote(&b), "127.0.0.1");
}

#[tokio::test]
async fn a_spoofed_header_does_not_move_a_client_out_of_its_addresss_cap() {
    let s = Server::start(|c| {
        c.trusted_proxies = vec!["127.0.0.2".into()];
        c.max_connections_per_ip = 2;
    })
    .await;
    // Two connections from 127.0.0.1, each claiming another address.
    let _a = open(&s, "127.0.0.1", &[("x-forwarded-for", "198.51.100.1")])
        .await
        .unwrap();
    let _b = open(&s, "127.0.0.1", &[("x-forwarded-for", "198.51.100.2")])
        .await
        .unwrap();
    // 127.0.0.1 holds both: a third through the trusted proxy for it is
    // over the cap (had the claims been believed, it would hold none).
    let refused = open(&s, "127.0.0.2", &[("x-forwarded-for", "127.0.0.1")])
        .await
        .err();
    assert_eq!(refused, Some((429, "rate_limited".into())));
    let _c = open(&s, "127.0.0.2", &[("x-forwarded-for", "198.51.100.3")])
        .await
        .unwrap();
}

/// `GET /api/stats` without API keys (loopback callers only) as the client
/// at `xff` behind the peer 127.0.0.1: its status.
async fn stats_status(s: &Server, xff: &str) -> u16 {
    reqwest::Client::new()
        .get(s.http("/api/stats"))
        .header("x-forwarded-for", xff)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_reload_changes_which_proxies_are_trusted() {
    let (s, reload) = Server::reloadable(|_| {}).await;
    // Untrusted: the header is ignored, the caller is on loopback.
    assert_eq!(stats_status(&s, "198.51.100.7").await, 200);
    let mut next = reload.borrow().clone();
    next.trusted_proxies = vec!["127.0.0.0/8".into()];
    reload.send(next.clone()).unwrap();
    // Trusted now: the caller is 198.51.100.7, not a loopback caller.
    common::wait_until(|| async { (stats_status(&s, "198.51.100.7").await == 403).then_some(()) })
        .await;
    assert_eq!(stats_status(&s, "127.0.0.1").await, 200);
    next.trusted_proxies.clear();
    reload.send(next).unwrap();
    common::wait_until(|| async { (stats_status(&s, "198.51.100.7").await == 200).then_some(()) })
        .await;
}

#[tokio::test]
async fn garbage_headers_fall_back_to_the_peer_and_the_connection_works() {
    let b = backend().await;
    let s = b
        .server(|c| {
            c.hooks.connect = true;
            c.trusted_proxies = vec!["127.0.0.1".into()];
        })
        .await;
    for headers in [
        vec![("x-forwarded-for", "not an address")],
        vec![("x-forwarded-for", "198.51.100.1, 300.0.0.1")],
        vec![("forwarded", "for=\"198.51.100.1")],
        vec![("forwarded", "for=198.51.100.1;for=198.51.100.2")],
        // Two headers naming different clients: one is the client's own.
        vec![
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
        ],
    ] {
        let mut ws = open(&s, "127.0.0.1", &headers).await.unwrap();
        assert_eq!(last_remote(&b), "127.0.0.1", "{headers:?}");
        // The connection works: a join is answered.
        let join = json!({"type": "join", "room": "lobby", "id": 1});
        ws.send(tungstenite::Message::text(join.to_string()))
            .await
            .unwrap();
        let reply = loop {
            let v = common::recv_json(&mut ws).await;
            if v["type"] != "presence" {
                break v;
            }
        };
        assert_eq!(reply["type"], "joined", "{reply}");
    }
    // A well-formed header still counts after the bad ones.
    let _ok = open(&s, "127.0.0.1", &[("x-forwarded-for", "198.51.100.9")])
        .await
        .unwrap();
    assert_eq!(last_remote(&b), "198.51.100.9");
}

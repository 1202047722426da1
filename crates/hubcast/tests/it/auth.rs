//! Connection tokens over real sockets: each kind of bad token is a 401
//! with a JSON body before the upgrade; valid ones of each algorithm get in
//! with their claims; `rooms` patterns and `admin` decide what a connection
//! may use; expiry closes with 4001.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Client, Server};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-0123456789abcdef";

fn now() -> u64 {
    hubcast::unix_ms() as u64 / 1000
}

fn hs256(claims: Value) -> String {
    common::hs256(SECRET, &claims)
}

fn b64(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Expects the handshake to fail with 401 and a JSON `unauthorized` body.
pub(crate) async fn refused(s: &Server, token: Option<&str>, why: &str) -> String {
    let url = match token {
        Some(t) => format!("{}?token={t}", s.ws_url()),
        None => s.ws_url(),
    };
    match Client::connect_request(url).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401, "{why}");
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{why}: {body}");
            body["error"]["message"].as_str().unwrap().to_string()
        }
        other => panic!("{why}: expected 401, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn valid_tokens_in_header_or_query_set_user_and_name() {
    let s = Server::start(|c| c.jwt_secret = Some(SECRET.into())).await;
    let t = hs256(json!({"sub":"alice","name":"Alice A.","exp":now() + 600}));
    let c = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
    assert_eq!(c.welcome["user"], "alice");
    assert_eq!(c.welcome["name"], "Alice A.");
    let mut req = s.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {t}").parse().unwrap());
    let mut ws = Client::connect_request(req).await.unwrap();
    use futures_util::StreamExt;
    let first = ws.next().await.unwrap().unwrap();
    let w: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(w["user"], "alice");
    // Direction controls in the name claim are dropped.
    let t = hs256(json!({"sub":"bob","name":"B\u{202E}ob\u{2069}","exp":now() + 600}));
    let c = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
    assert_eq!(c.welcome["name"], "Bob");
    s.stop().await;
}

#[tokio::test]
async fn every_bad_token_is_a_401_before_the_upgrade() {
    let s = Server::start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.anonymous = Some(false);
    })
    .await;
    let exp = now() + 600;
    let m = refused(&s, None, "no token").await;
    assert!(m.contains("required"), "{m}");
    refused(&s, Some("not.a.jwt"), "garbage").await;
    let wrong_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub":"a","exp":exp}),
        &EncodingKey::from_secret(b"another-secret-0123456789"),
    )
    .unwrap();
    let m = refused(&s, Some(&wrong_key), "wrong key").await;
    assert!(m.contains("signature"), "{m}");
    let m = refused(
        &s,
        Some(&hs256(json!({"sub":"a","exp":now() - 5}))),
        "expired",
    )
    .await;
    assert!(m.contains("expired"), "{m}");
    let m = refused(&s, Some(&hs256(json!({"sub":"a"}))), "no exp").await;
    assert!(m.contains("exp"), "{m}");
    let m = refused(&s, Some(&hs256(json!({"exp":exp}))), "no sub").await;
    assert!(m.contains("sub"), "{m}");
    refused(&s, Some(&hs256(json!({"sub":"","exp":exp}))), "empty sub").await;
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(&json!({"sub":"a","exp":exp}))
    );
    refused(&s, Some(&none), "alg none").await;
    let odd = format!(
        "{}.{}.c2ln",
        b64(&json!({"alg":"XX999","typ":"JWT"})),
        b64(&json!({"sub":"a","exp":exp}))
    );
    refused(&s, Some(&odd), "unknown alg").await;
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &json!({"sub":"a","exp":exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    refused(&s, Some(&hs512), "another algorithm, same secret").await;
    // The good one still gets in.
    Client::connect(&format!(
        "{}?token={}",
        s.ws_url(),
        hs256(json!({"sub":"a","exp":exp}))
    ))
    .await;
    s.stop().await;
}

#[tokio::test]
async fn rooms_patterns_personal_rooms_and_admin() {
    let s = Server::start(|c| c.jwt_secret = Some(SECRET.into())).await;
    let exp = now() + 600;
    let t = hs256(json!({"sub":"ann","exp":exp,"rooms":["chat.*","team.**"]}));
    let mut ann = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
    ann.join("chat.general").await;
    ann.join("team.a.b").await;
    for frame in [
        json!({"type":"join","room":"lobby"}),
        json!({"type":"join","room":"chat.a.b"}),
        json!({"type":"publish","room":"secret","event":"e","data":1}),
        json!({"type":"history","room":"secret"}),
        json!({"type":"presence","room":"secret"}),
        json!({"type":"join","room":"@bob"}),
    ] {
        let e = ann.call(frame.clone()).await;
        assert_eq!(e["code"], "forbidden", "{frame}: {e}");
    }
    // Its own personal room is always its own; send goes anywhere.
    ann.join("@ann").await;
    let ack = ann
        .call(json!({"type":"send","to":"bob","event":"dm","data":1}))
        .await;
    assert_eq!(ack["type"], "ack");
    // An admin may use any room, personal ones included.
    let admin = hs256(json!({"sub":"root","exp":exp,"admin":true,"rooms":["nothing"]}));
    let mut root = Client::connect(&format!("{}?token={admin}", s.ws_url())).await;
    root.join("@ann").await;
    root.join("lobby").await;
    let h = root.call(json!({"type":"history","room":"@bob"})).await;
    assert_eq!(h["type"], "history");
    assert_eq!(h["messages"][0]["eventType"], "dm");
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_token_expiring_while_connected_closes_with_4001() {
    let s = Server::start(|c| c.jwt_secret = Some(SECRET.into())).await;
    let t = hs256(json!({"sub":"eve","exp":now() + 20}));
    let mut c = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
    c.join("lobby").await;
    let t0 = tokio::time::Instant::now();
    let (code, reason, _) = c.until_close().await;
    assert_eq!(code, Some(4001), "{reason}");
    let after = t0.elapsed();
    assert!(
        after >= Duration::from_secs(18) && after <= Duration::from_secs(21),
        "{after:?}"
    );
    s.stop().await;
}

/// Makes a key pair with openssl; returns (private PEM, public key path).
pub(crate) fn keypair(dir: &Path, kind: &str) -> (Vec<u8>, PathBuf) {
    let private = dir.join(format!("{kind}.pem"));
    let public = dir.join(format!("{kind}.pub.pem"));
    let args: &[&str] = match kind {
        "rsa" => &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        _ => &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
    };
    let ok = Command::new("openssl")
        .args(args)
        .arg("-out")
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkey -pubout");
    (std::fs::read(&private).unwrap(), public)
}

#[tokio::test]
async fn rs256_and_es256_tokens_with_a_public_key() {
    let dir = std::env::temp_dir().join(format!("hubcast-keys-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for (kind, alg) in [("rsa", Algorithm::RS256), ("ec", Algorithm::ES256)] {
        let (private, public) = keypair(&dir, kind);
        let s = Server::start(|c| c.jwt_public_key = Some(public.clone())).await;
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let t = jsonwebtoken::encode(
            &Header::new(alg),
            &json!({"sub":"kim","exp":now() + 60}),
            &key,
        )
        .unwrap();
        let c = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
        assert_eq!(c.welcome["user"], "kim", "{kind}");
        // An HS256 token signed with the public key's bytes: refused.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub":"kim","exp":now() + 60}),
            &EncodingKey::from_secret(&std::fs::read(&public).unwrap()),
        )
        .unwrap();
        refused(&s, Some(&forged), "HS256 with the public key as secret").await;
        s.stop().await;
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn refuses_to_listen_exposed_without_auth() {
    let out = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without authentication"), "{err}");
    assert!(
        err.contains("jwt_secret") && err.contains("--anonymous"),
        "says how to configure auth: {err}"
    );
}

#[test]
fn token_command_prints_a_token_the_server_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args([
            "token",
            "--sub",
            "ada",
            "--name",
            "Ada",
            "--rooms",
            "chat.*,team.**",
            "--admin",
        ])
        .env("HUBCAST_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "ada");
    assert_eq!(data.claims["name"], "Ada");
    assert_eq!(data.claims["rooms"], json!(["chat.*", "team.**"]));
    assert_eq!(data.claims["admin"], true);
}

#[tokio::test]
async fn tokens_and_api_keys_never_reach_the_logs() {
    const API_KEY: &str = "api-key-that-must-not-be-logged";
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcast"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--api-key",
            API_KEY,
        ])
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let port = common::listening_port(&mut child).await;
    common::wait_for(port, "/healthz").await;
    let good = hs256(json!({"sub":"logan","exp":now() + 60}));
    let c = Client::connect(&format!("ws://127.0.0.1:{port}/ws?token={good}")).await;
    let bad = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ";
    let _ = Client::connect_request(format!("ws://127.0.0.1:{port}/ws?token={bad}")).await;
    c.close().await;
    let http = reqwest::Client::new();
    for key in [API_KEY, "wrong-api-key-also-not-logged"] {
        let _ = http
            .post(format!("http://127.0.0.1:{port}/api/publish"))
            .bearer_auth(key)
            .json(&json!({"room":"r","event":"e","data":1}))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    common::send_term(&child);
    let (_, out) = common::wait_stderr(child).await;
    assert!(out.contains("handshake refused"), "{out}");
    assert!(
        !out.contains(&good) && !out.contains(bad),
        "a token in the logs:\n{out}"
    );
    assert!(!out.contains(SECRET), "the secret in the logs");
    assert!(
        !out.contains(API_KEY) && !out.contains("wrong-api-key"),
        "an API key in the logs:\n{out}"
    );
}

/// A token whose `exp` is the largest u64 connects (its expiry counts as
/// "never") instead of panicking the handshake; one whose `nbf` is in the
/// future past the leeway is refused, within it accepted.
#[tokio::test]
async fn far_exp_connects_and_future_nbf_is_refused() {
    let s = Server::start(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.anonymous = Some(false);
    })
    .await;
    let t = hs256(json!({"sub":"far","exp":u64::MAX}));
    let mut c = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
    assert_eq!(c.welcome["user"], "far");
    c.join("lobby").await;
    let exp = now() + 600;
    let m = refused(
        &s,
        Some(&hs256(json!({"sub":"a","exp":exp,"nbf":now() + 3600}))),
        "nbf an hour ahead",
    )
    .await;
    assert!(m.contains("not valid yet"), "{m}");
    let t = hs256(json!({"sub":"skew","exp":exp,"nbf":now() + 5}));
    let c2 = Client::connect(&format!("{}?token={t}", s.ws_url())).await;
    assert_eq!(c2.welcome["user"], "skew");
    s.stop().await;
}

/// The status line a raw HTTP/1.1 request with the given `Host` gets.
async fn status_with_host(s: &Server, path: &str, host: &str, extra: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a status line");
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    head.lines().next().unwrap_or_default().to_string()
}

/// Loopback trust (the API without keys, anonymous connections by default
/// on a loopback listener) holds only when the request names a loopback
/// host: a page whose DNS name was rebound to 127.0.0.1 sends its own name
/// and gets 403, on the API, the WebSocket upgrade and SSE alike. Chosen
/// anonymity (`anonymous = true`) does not depend on the Host.
#[tokio::test]
async fn loopback_trust_needs_a_loopback_host() {
    const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let s = Server::default().await;
    let history = "/api/rooms/@alice/history";
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
    ] {
        let origin = format!("Origin: http://{host}\r\n");
        let api = status_with_host(&s, history, host, "").await;
        assert!(api.contains(" 403"), "{host}: {api}");
        let ws = status_with_host(&s, "/ws", host, &format!("{UPGRADE}{origin}")).await;
        assert!(ws.contains(" 403"), "{host}: {ws}");
        let sse = status_with_host(&s, "/sse?rooms=lobby", host, &origin).await;
        assert!(sse.contains(" 403"), "{host}: {sse}");
    }
    for host in ["127.0.0.1", "localhost:1234", "[::1]:1234", "app.localhost"] {
        let api = status_with_host(&s, history, host, "").await;
        assert!(api.contains(" 200"), "{host}: {api}");
        let ws = status_with_host(&s, "/ws", host, UPGRADE).await;
        assert!(ws.contains(" 101"), "{host}: {ws}");
    }
    s.stop().await;
    let chosen = Server::start(|c| c.anonymous = Some(true)).await;
    let ws = status_with_host(&chosen, "/ws", "evil.example", UPGRADE).await;
    assert!(ws.contains(" 101"), "{ws}");
    chosen.stop().await;
}

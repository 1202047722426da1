//! Backend hooks (PROTOCOL.md section 9) against a real HTTP backend each
//! test starts (axum on 127.0.0.1:0): every hook's allow, refuse, timeout,
//! 500 and garbage answer; the signature every request carries, checked by
//! the backend with its own HMAC code; the in-flight cap; the metrics.
#![allow(clippy::unwrap_used)]

mod connect;
mod rooms;
mod rpc;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use hubcast::config::RoomTable;
use hubcast::rules::{Joiners, Publishers};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::Server;

pub(crate) const SECRET: &str = "hook-secret-0123456789";

/// What the backend answers a request with.
pub(crate) enum Answer {
    /// 200 with this JSON.
    Json(Value),
    /// This status, with an empty JSON object.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
    /// Never answers (the server's `timeout_ms` ends the wait).
    Hang,
}

/// A failing answer and the reason the client's message names.
pub(crate) type Case = (fn() -> Answer, &'static str);

type Decide = dyn Fn(&Value) -> Answer + Send + Sync;

/// One request as the backend got it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub body: Value,
    pub raw: Bytes,
    pub headers: HeaderMap,
}

#[derive(Clone)]
struct Shared {
    decide: Arc<Decide>,
    seen: Arc<Mutex<Vec<Seen>>>,
    bad_signatures: Arc<Mutex<usize>>,
}

/// The application's backend: checks `Hubcast-Signature` on every request
/// (a bad one is counted and answered 401), records it, answers as `decide`
/// says.
pub(crate) struct Backend {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub(crate) async fn start(
        decide: impl Fn(&Value) -> Answer + Send + Sync + 'static,
    ) -> Backend {
        let shared = Shared {
            decide: Arc::new(decide),
            seen: Arc::default(),
            bad_signatures: Arc::default(),
        };
        let app = Router::new()
            .route("/hooks", post(hook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Backend { url, shared, task }
    }

    /// The requests so far, oldest first.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests of one hook.
    pub(crate) fn seen_of(&self, hook: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.body["hook"] == hook)
            .collect()
    }

    /// Every request so far carried a valid signature.
    pub(crate) fn assert_all_signed(&self) {
        assert_eq!(*self.shared.bad_signatures.lock().unwrap(), 0);
        assert!(!self.seen().is_empty(), "the backend was asked");
    }

    /// A server asking this backend, with `[hooks]` set and `f` applied.
    pub(crate) async fn server(&self, f: impl FnOnce(&mut hubcast::config::Config)) -> Server {
        let url = self.url.clone();
        Server::start(move |c| {
            c.hooks.url = Some(url);
            c.hooks.secret = Some(SECRET.into());
            c.hooks.timeout_ms = 300;
            f(c);
        })
        .await
    }
}

/// The receiver's check with this backend's [`SECRET`].
pub(crate) fn verify(header: &str, body: &[u8]) -> bool {
    verify_with(SECRET, header, body)
}

/// A receiver's check (hooks' and webhooks' alike), written here from the
/// contract (not the server's code): `t=<s>,v1=<hex HMAC-SHA256(secret,
/// t + "." + body)>`, t within five minutes.
pub(crate) fn verify_with(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut parts = header.split(',');
    let (Some(t), Some(v1)) = (
        parts.next().and_then(|p| p.strip_prefix("t=")),
        parts.next().and_then(|p| p.strip_prefix("v1=")),
    ) else {
        return false;
    };
    let Ok(sent) = t.parse::<i64>() else {
        return false;
    };
    if (hubcast::unix_ms() / 1000 - sent).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

async fn hook(State(s): State<Shared>, headers: HeaderMap, raw: Bytes) -> Response {
    let signed = headers
        .get("hubcast-signature")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| verify(h, &raw));
    if !signed {
        *s.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    s.seen.lock().unwrap().push(Seen {
        body: body.clone(),
        raw: raw.clone(),
        headers: headers.clone(),
    });
    match (s.decide)(&body) {
        Answer::Json(v) => axum::Json(v).into_response(),
        Answer::Status(code) => {
            (StatusCode::from_u16(code).unwrap(), axum::Json(json!({}))).into_response()
        }
        Answer::Garbage => (StatusCode::OK, "<html>not json</html>").into_response(),
        Answer::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}

#[tokio::test]
async fn a_tampered_body_fails_the_receivers_check() {
    let backend = Backend::start(|_| Answer::Json(json!({"allow": true}))).await;
    let s = backend
        .server(|c| {
            c.rooms = vec![table("h.*", Joiners::Hook, Publishers::Members)];
        })
        .await;
    let mut c = s.client().await;
    c.join("h.a").await;
    backend.assert_all_signed();
    let seen = &backend.seen_of("join")[0];
    let header = seen.headers["hubcast-signature"].to_str().unwrap();
    assert!(verify(header, &seen.raw));
    let mut tampered = seen.raw.to_vec();
    let at = tampered.iter().position(|b| *b == b'h').unwrap();
    tampered[at] = b'H';
    assert!(!verify(header, &tampered), "a changed byte fails the check");
    // The server's own helper agrees with the receiver's.
    let now = hubcast::unix_ms() as u64 / 1000;
    assert!(hubcast::hooks::sign::verify(
        SECRET.as_bytes(),
        header,
        &seen.raw,
        now,
        300
    ));
    assert!(!hubcast::hooks::sign::verify(
        SECRET.as_bytes(),
        header,
        &tampered,
        now,
        300
    ));
}

/// A room table whose `join` and `publish` follow the rule given.
pub(crate) fn table(pattern: &str, join: Joiners, publish: Publishers) -> RoomTable {
    RoomTable {
        pattern: pattern.into(),
        publish,
        join,
        history_size: None,
        history_ttl: None,
        presence: true,
    }
}

#[tokio::test]
async fn bodies_have_the_fields_the_openapi_document_gives_them() {
    let backend = Backend::start(|b| match b["hook"].as_str() {
        Some("connect") => Answer::Json(json!({"user": "u1"})),
        Some("rpc") => Answer::Json(json!({"data": 1})),
        _ => Answer::Json(json!({"allow": true})),
    })
    .await;
    let s = backend
        .server(|c| {
            c.hooks.connect = true;
            c.hooks.rpc = true;
            c.rooms = vec![table("h.*", Joiners::Hook, Publishers::Hook)];
        })
        .await;
    let mut c = s.client().await;
    c.join("h.a").await;
    c.publish("h.a", json!(1)).await;
    c.call(json!({"type":"rpc","method":"m","data":1})).await;
    let doc: Value = reqwest::get(s.http("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = doc["webhooks"]["hook"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["oneOf"]
        .as_array()
        .unwrap();
    for hook in ["connect", "join", "publish", "rpc"] {
        let schema = schemas.iter().find(|s| s["title"] == hook).unwrap();
        let documented: std::collections::BTreeSet<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let seen = &backend.seen_of(hook)[0].body;
        let sent: std::collections::BTreeSet<&str> = seen
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(sent, documented, "{hook}: {seen}");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(required.iter().all(|k| sent.contains(k)), "{hook}");
    }
}

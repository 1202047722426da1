//! Webhooks (PROTOCOL.md section 10) against real HTTP receivers each test
//! starts (axum on 127.0.0.1:0): the signature every batch carries,
//! checked by the receiver's own HMAC code; retries while the receiver
//! answers 503, and the drop after `webhook_retry_for`; the offline delay;
//! each webhook's filters; the body's fields.
#![allow(clippy::unwrap_used)]

mod cluster;
mod delivery;
mod filters;
mod offline;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use hubcast::config::{Config, WebhookTable};
use serde_json::Value;

use crate::common::{Client, Engine, Server, wait_until};

pub(crate) const SECRET: &str = "webhook-secret-0123456789";
pub(crate) const JWT: &str = "jwt-secret-0123456789abcdef";

/// One request as the receiver got it.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub body: Value,
    pub raw: Bytes,
    pub signature: String,
    /// What the receiver answered.
    pub status: u16,
    /// When it came.
    pub arrived: std::time::Instant,
}

#[derive(Clone, Default)]
struct Shared {
    /// Statuses to answer before answering 200, first first.
    script: Arc<Mutex<VecDeque<u16>>>,
    /// Answer this to everything once the script is done (200 if none).
    always: Arc<Mutex<Option<u16>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    bad_signatures: Arc<Mutex<usize>>,
}

/// A webhook receiver: checks `Hubcast-Signature` on every request (a bad
/// one is counted and answered 401), records it, answers as scripted.
pub(crate) struct Receiver {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let shared = Shared::default();
        let app = Router::new()
            .route("/events", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, shared, task }
    }

    /// Answers these statuses first, then 200.
    pub(crate) fn answer_first(&self, statuses: &[u16]) {
        self.shared.script.lock().unwrap().extend(statuses);
    }

    /// Answers `status` to everything from now on (`None`: 200).
    pub(crate) fn answer_always(&self, status: Option<u16>) {
        *self.shared.always.lock().unwrap() = status;
    }

    /// A `[[webhooks]]` table sending here, with every event and room.
    pub(crate) fn table(&self) -> WebhookTable {
        WebhookTable {
            url: self.url.clone(),
            secret: SECRET.into(),
            events: hubcast::config::EVENT_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            rooms: "**".into(),
        }
    }

    /// Every request so far, oldest first.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The events of the requests answered 2xx, in the order received.
    pub(crate) fn delivered(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until an event delivered matches `f`; returns the events
    /// delivered up to and including it.
    pub(crate) async fn until(&self, f: impl Fn(&Value) -> bool) -> Vec<Value> {
        wait_until(|| {
            let events = self.delivered();
            let at = events.iter().position(&f);
            async move { at.map(|at| events[..=at].to_vec()) }
        })
        .await
    }

    /// Waits for the event of `ty` about `who` (its room or user).
    pub(crate) async fn until_event(&self, ty: &str, who: &str) -> Vec<Value> {
        self.until(|e| is(e, ty, who)).await
    }

    /// Every request so far carried a valid signature.
    pub(crate) fn assert_all_signed(&self) {
        assert_eq!(*self.shared.bad_signatures.lock().unwrap(), 0);
        assert!(!self.requests().is_empty(), "the receiver was called");
    }
}

/// Whether `e` is of type `ty` about `who` (its room or its user).
pub(crate) fn is(e: &Value, ty: &str, who: &str) -> bool {
    e["type"] == ty && (e["room"] == who || e["user"] == who)
}

/// How many of `events` are of type `ty` about `who`.
pub(crate) fn count(events: &[Value], ty: &str, who: &str) -> usize {
    events.iter().filter(|e| is(e, ty, who)).count()
}

/// The receiver's check with the webhooks' [`SECRET`] (the hooks tests'
/// check, from the contract).
pub(crate) fn verify(header: &str, body: &[u8]) -> bool {
    crate::hooks::verify_with(SECRET, header, body)
}

async fn receive(
    State(s): State<Shared>,
    headers: HeaderMap,
    raw: Bytes,
) -> axum::response::Response {
    let signature = headers
        .get("hubcast-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !verify(&signature, &raw) {
        *s.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let status = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or(*s.always.lock().unwrap())
        .unwrap_or(200);
    s.requests.lock().unwrap().push(Request {
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
        signature,
        status,
        arrived: std::time::Instant::now(),
    });
    StatusCode::from_u16(status).unwrap().into_response()
}

/// A server on `engine` with `tables` as its webhooks, token users
/// (`JWT`), and `f`.
pub(crate) async fn server(
    engine: Engine,
    tables: Vec<WebhookTable>,
    f: impl FnOnce(&mut Config),
) -> Server {
    Server::start_on(engine, move |c| {
        c.webhooks = tables;
        c.jwt_secret = Some(JWT.into());
        c.anonymous = Some(true);
        f(c);
    })
    .await
}

/// A fresh user id of this test.
pub(crate) fn user(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Connects as `user`.
pub(crate) async fn connect(s: &Server, user: &str) -> Client {
    let exp = hubcast::unix_ms() as u64 / 1000 + 600;
    let token = crate::common::hs256(JWT, &serde_json::json!({"sub": user, "exp": exp}));
    Client::connect(&format!("{}?token={token}", s.ws_url())).await
}

/// Waits until the server has seen `user`'s last connection close.
pub(crate) async fn until_offline(s: &Server, user: &str) {
    wait_until(|| async { (s.user_status(user).await["status"] == "offline").then_some(()) }).await;
}

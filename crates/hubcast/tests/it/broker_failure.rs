//! A broker that cannot serve (e.g. Redis down) gives clients `unavailable`
//! errors, never a silent drop, and the connection stays usable.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use hubcast::broker::memory::MemoryBroker;
use hubcast::broker::*;
use hubcast::config::Config;
use hubcast::protocol::Status;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// What a client is told while the engine is down.
const UNAVAILABLE: &str = "the message store is unavailable";

/// The memory engine, with a switch that makes every call fail (also
/// used by `closing` for the 1011 close).
pub(crate) struct Flaky {
    inner: Arc<MemoryBroker>,
    pub(crate) down: AtomicBool,
}

impl Flaky {
    pub(crate) fn new(down: bool) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: MemoryBroker::new(100, Duration::from_secs(60)),
            down: AtomicBool::new(down),
        })
    }

    fn check(&self) -> Result<(), BrokerError> {
        if self.down.load(Ordering::SeqCst) {
            Err(BrokerError::unavailable("engine down (test)"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Broker for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn set_handler(&self, h: Weak<dyn BrokerHandler>) {
        self.inner.set_handler(h)
    }
    async fn publish(&self, req: PublishRequest) -> Result<PublishResult, BrokerError> {
        self.check()?;
        self.inner.publish(req).await
    }
    async fn subscribe(&self, room: &Arc<str>) -> Result<(), BrokerError> {
        self.check()?;
        self.inner.subscribe(room).await
    }
    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError> {
        self.inner.unsubscribe(room).await
    }
    async fn recover(
        &self,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<Recovery, BrokerError> {
        self.check()?;
        self.inner.recover(room, since).await
    }
    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        self.check()?;
        self.inner.history(room, since, limit).await
    }
    async fn ready(&self) -> Result<(), Unavailability> {
        if self.down.load(Ordering::SeqCst) {
            Err(Unavailability::Down)
        } else {
            Ok(())
        }
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

#[async_trait]
impl PresenceManager for Flaky {
    async fn join(&self, room: &str, c: &ClientInfo) -> Result<(), BrokerError> {
        self.check()?;
        self.inner.join(room, c).await
    }
    async fn leave(&self, room: &str, c: &ClientInfo) -> Result<(), BrokerError> {
        self.inner.leave(room, c).await
    }
    async fn list(&self, room: &str, limit: usize) -> Result<PresencePage, BrokerError> {
        self.check()?;
        self.inner.list(room, limit).await
    }
    async fn connect(&self, c: &ClientInfo) -> Result<(), BrokerError> {
        self.check()?;
        self.inner.connect(c).await
    }
    async fn disconnect(&self, c: &ClientInfo) -> Result<(), BrokerError> {
        self.inner.disconnect(c).await
    }
    async fn set_status(&self, user: &str, s: Status) -> Result<(), BrokerError> {
        self.check()?;
        self.inner.set_status(user, s).await
    }
    async fn user_status(&self, user: &str) -> Result<UserStatus, BrokerError> {
        self.check()?;
        self.inner.user_status(user).await
    }
}

#[async_trait]
impl UserControls for Flaky {
    async fn command(&self, cmd: UserCommand) -> Result<(), BrokerError> {
        self.check()?;
        self.inner.command(cmd).await
    }
    async fn follow(&self, sink: Weak<dyn ControlSink>) -> Result<(), BrokerError> {
        self.inner.follow(sink).await
    }
    async fn blocked(&self) -> Result<Vec<(Arc<str>, Option<u64>)>, BrokerError> {
        self.check()?;
        self.inner.blocked().await
    }
}

#[tokio::test]
async fn broker_down_means_unavailable_errors_and_not_ready() {
    let flaky = Flaky::new(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(hubcast::run_with_broker(
        Config::default(),
        listener,
        shutdown.clone(),
        flaky.clone(),
    ));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    assert_eq!(common::recv_json(&mut ws).await["type"], "welcome");

    flaky.down.store(true, Ordering::SeqCst);
    let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(
        (&body["status"], &body["reason"]),
        (&json!("unready"), &json!("unreachable")),
        "{body}"
    );
    for frame in [
        json!({"type":"publish","room":"r","event":"e","data":1,"id":1}),
        json!({"type":"join","room":"r","id":2}),
        json!({"type":"history","room":"r","id":3}),
        json!({"type":"presence","room":"r","id":4}),
        json!({"type":"status","status":"busy","id":5}),
    ] {
        ws.send(Message::text(frame.to_string())).await.unwrap();
        let e = common::recv_json(&mut ws).await;
        assert_eq!(e["type"], "error", "{frame} → {e}");
        assert_eq!(e["code"], "unavailable", "{frame} → {e}");
        // The engine's own error text ("engine down (test)") stays in
        // the log.
        assert_eq!(e["message"], UNAVAILABLE, "{frame} → {e}");
        assert_eq!(e["id"], frame["id"]);
    }
    // The HTTP API answers 503 with Retry-After, never a 500 or a drop.
    let http = reqwest::Client::new();
    for req in [
        http.post(format!("http://{addr}/api/publish"))
            .json(&json!({"room":"r","event":"e","data":1})),
        http.post(format!("http://{addr}/api/send"))
            .json(&json!({"to":"u","event":"e","data":1})),
        http.get(format!("http://{addr}/api/rooms/r/presence")),
        http.get(format!("http://{addr}/api/rooms/r/history")),
        http.get(format!("http://{addr}/api/users/u/status")),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 503, "{}", r.url());
        assert_eq!(r.headers()["retry-after"], "1");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
        assert_eq!(body["error"]["message"], UNAVAILABLE, "{body}");
    }
    // A connection that cannot be registered is closed with 1011.
    let (mut late, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut close = None;
    while let Some(Ok(m)) = late.next().await {
        if let Message::Close(f) = m {
            close = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close, Some(1011));
    // A failed join leaves nothing behind: the room can be joined later.
    flaky.down.store(false, Ordering::SeqCst);
    ws.send(Message::text(
        json!({"type":"join","room":"r","id":6}).to_string(),
    ))
    .await
    .unwrap();
    let j = common::recv_json(&mut ws).await;
    assert_eq!(j["type"], "joined", "{j}");
    ws.send(Message::text(
        json!({"type":"publish","room":"r","event":"e","data":1,"id":7,"echo":true}).to_string(),
    ))
    .await
    .unwrap();
    let mut kinds = Vec::new();
    for _ in 0..3 {
        kinds.push(
            common::recv_json(&mut ws).await["type"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(kinds, ["presence", "message", "ack"]);
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[async_trait]
impl hubcast::broker::WebhookLog for Flaky {
    async fn enable_webhooks(
        &self,
        groups: &[String],
        delay: std::time::Duration,
    ) -> Result<(), BrokerError> {
        self.inner.enable_webhooks(groups, delay).await
    }
    async fn promote(&self) -> Result<(), BrokerError> {
        self.inner.promote().await
    }
    async fn lead(&self, group: &str, ttl: std::time::Duration) -> Result<bool, BrokerError> {
        self.inner.lead(group, ttl).await
    }
    async fn read(
        &self,
        group: &str,
        max: usize,
    ) -> Result<Vec<hubcast::broker::LoggedEvent>, BrokerError> {
        self.inner.read(group, max).await
    }
    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BrokerError> {
        self.inner.ack(group, ids).await
    }
}

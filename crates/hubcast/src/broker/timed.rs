//! An engine wrapper that times every operation of the engine it wraps, on
//! both its [`Broker`] and its [`PresenceManager`] side
//! (`hubcast_broker_operation_seconds{op,result}`), so every engine, present
//! and future, is measured the same way without instrumenting each.

use std::sync::{Arc, Weak};
use std::time::Instant;

use async_trait::async_trait;

use super::{
    Broker, BrokerError, BrokerHandler, ClientInfo, Engine, HistoryPage, PresenceManager,
    PresencePage, PublishRequest, PublishResult, Recovery, Unavailability, UserStatus,
    controls::{ControlSink, UserCommand, UserControls},
    webhooks::{LoggedEvent, WebhookLog},
};
use crate::metrics::BROKER_LATENCY;
use crate::protocol::Status;

/// Times the wrapped engine's operations.
pub(crate) struct Timed {
    inner: Arc<dyn Engine>,
}

impl Timed {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn Engine>) -> Arc<Self> {
        Arc::new(Self { inner })
    }
}

fn record<T>(op: &'static str, start: Instant, r: &Result<T, BrokerError>) {
    let result = match r {
        Ok(_) => "ok",
        Err(BrokerError::Unavailable { .. }) => "unavailable",
        Err(BrokerError::Timeout { .. }) => "timeout",
        Err(BrokerError::Internal(_)) => "internal",
    };
    let elapsed = start.elapsed();
    metrics::histogram!(BROKER_LATENCY, "op" => op, "result" => result)
        .record(elapsed.as_secs_f64());
    // In the caller's span: a request's trace id comes along.
    tracing::debug!(
        op,
        result,
        elapsed_us = elapsed.as_micros() as u64,
        "broker operation"
    );
}

macro_rules! timed {
    ($op:literal, $call:expr) => {{
        let start = Instant::now();
        let r = $call.await;
        record($op, start, &r);
        r
    }};
}

#[async_trait]
impl Broker for Timed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        self.inner.set_handler(handler);
    }
    async fn publish(&self, req: PublishRequest) -> Result<PublishResult, BrokerError> {
        timed!("publish", self.inner.publish(req))
    }
    async fn subscribe(&self, room: &Arc<str>) -> Result<(), BrokerError> {
        timed!("subscribe", self.inner.subscribe(room))
    }
    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError> {
        timed!("unsubscribe", self.inner.unsubscribe(room))
    }
    async fn recover(
        &self,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<Recovery, BrokerError> {
        timed!("recover", self.inner.recover(room, since))
    }
    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        timed!("history", self.inner.history(room, since, limit))
    }
    async fn ready(&self) -> Result<(), Unavailability> {
        self.inner.ready().await
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}

/// The operation labels are those of the single trait this one was split
/// from (`presence_join`, `presence_leave`, `presence`), so dashboards keep
/// working.
#[async_trait]
impl PresenceManager for Timed {
    async fn join(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        timed!("presence_join", self.inner.join(room, client))
    }
    async fn leave(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        timed!("presence_leave", self.inner.leave(room, client))
    }
    async fn list(&self, room: &str, limit: usize) -> Result<PresencePage, BrokerError> {
        timed!("presence", self.inner.list(room, limit))
    }
    async fn connect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        timed!("connect", self.inner.connect(client))
    }
    async fn disconnect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        timed!("disconnect", self.inner.disconnect(client))
    }
    async fn set_status(&self, user: &str, status: Status) -> Result<(), BrokerError> {
        timed!("set_status", self.inner.set_status(user, status))
    }
    async fn user_status(&self, user: &str) -> Result<UserStatus, BrokerError> {
        timed!("user_status", self.inner.user_status(user))
    }
}

#[async_trait]
impl UserControls for Timed {
    async fn command(&self, cmd: UserCommand) -> Result<(), BrokerError> {
        let start = Instant::now();
        let r = self.inner.command(cmd).await;
        record("user_command", start, &r);
        r
    }

    async fn follow(&self, sink: Weak<dyn ControlSink>) -> Result<(), BrokerError> {
        self.inner.follow(sink).await
    }

    async fn blocked(&self) -> Result<Vec<(Arc<str>, Option<u64>)>, BrokerError> {
        let start = Instant::now();
        let r = self.inner.blocked().await;
        record("blocked_users", start, &r);
        r
    }
}

#[async_trait]
impl WebhookLog for Timed {
    async fn enable_webhooks(
        &self,
        groups: &[String],
        delay: std::time::Duration,
    ) -> Result<(), BrokerError> {
        self.inner.enable_webhooks(groups, delay).await
    }
    async fn promote(&self) -> Result<(), BrokerError> {
        timed!("webhook_promote", self.inner.promote())
    }
    async fn lead(&self, group: &str, ttl: std::time::Duration) -> Result<bool, BrokerError> {
        timed!("webhook_lead", self.inner.lead(group, ttl))
    }
    async fn read(&self, group: &str, max: usize) -> Result<Vec<LoggedEvent>, BrokerError> {
        timed!("webhook_read", self.inner.read(group, max))
    }
    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BrokerError> {
        timed!("webhook_ack", self.inner.ack(group, ids))
    }
}

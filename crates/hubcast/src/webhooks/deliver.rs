//! One webhook's delivery loop: while this node holds the webhook's lease,
//! read the oldest unacknowledged entries (at most [`MAX_BATCH`], what
//! came within [`POLL`]), send the ones the webhook wants as one signed
//! batch, and acknowledge them once a 2xx came within [`ANSWER_WITHIN`];
//! otherwise retry the same batch (same ids) with backoff until
//! `webhook_retry_for` has passed, then drop it with a log line and a
//! count. One batch at a time, oldest first: each room's events arrive in
//! the order they happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Target;
use crate::broker::{LoggedEvent, WebhookLog};
use crate::hooks::sign;
use crate::metrics::{WEBHOOK_DELIVERED, WEBHOOK_DROPPED, WEBHOOK_FAILED, WEBHOOK_LATENCY};

/// Most events in one request (PROTOCOL.md section 10).
const MAX_BATCH: usize = 100;
/// How long events wait to be batched (PROTOCOL.md section 10).
const POLL: Duration = Duration::from_millis(50);
/// Delivered means a 2xx within this (PROTOCOL.md section 10).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// First retry delay, doubling up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The delivering node's lease on a webhook; renewed at a third of it.
const LEASE: Duration = Duration::from_secs(10);

/// What a delivery loop works with.
pub(super) struct Delivery {
    pub(super) target: Arc<Target>,
    pub(super) log: Arc<dyn WebhookLog>,
    pub(super) http: reqwest::Client,
    pub(super) retry_for: Duration,
    pub(super) stop: CancellationToken,
}

/// How a batch ended.
enum Outcome {
    /// A 2xx came: acknowledge.
    Delivered,
    /// `webhook_retry_for` passed: acknowledge (dropped).
    Dropped,
    /// The server stops or the lease was lost: leave the batch for the
    /// next reader.
    Abandoned,
}

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    time: i64,
    events: Vec<crate::broker::webhooks::EventBody<'a>>,
}

/// Runs until `stop` fires.
pub(super) async fn run(d: Delivery) {
    let mut renewed: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = d.stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        if !d.hold_lease(&mut renewed).await {
            continue;
        }
        let batch = match d.log.read(&d.target.group, MAX_BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(webhook = %d.target.label, error = %e, "webhooks: reading the log failed");
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let ids: Vec<String> = batch.iter().map(|e| e.id.clone()).collect();
        let wanted: Vec<&LoggedEvent> = batch.iter().filter(|e| d.target.wants(&e.event)).collect();
        if !wanted.is_empty() {
            match d.send(&wanted, &mut renewed).await {
                Outcome::Delivered | Outcome::Dropped => {}
                Outcome::Abandoned => continue,
            }
        }
        // The ones this webhook does not want go with the batch.
        if let Err(e) = d.log.ack(&d.target.group, &ids).await {
            tracing::warn!(webhook = %d.target.label, error = %e, "webhooks: acknowledging failed; the batch may come again");
        }
    }
}

impl Delivery {
    /// Takes or renews the lease when a third of it has passed; false when
    /// another node holds it (or the engine cannot say).
    async fn hold_lease(&self, renewed: &mut Option<Instant>) -> bool {
        if renewed.is_some_and(|at| at.elapsed() < LEASE / 3) {
            return true;
        }
        match self.log.lead(&self.target.group, LEASE).await {
            Ok(true) => {
                *renewed = Some(Instant::now());
                true
            }
            Ok(false) => {
                *renewed = None;
                false
            }
            Err(e) => {
                tracing::warn!(webhook = %self.target.label, error = %e, "webhooks: lease check failed");
                *renewed = None;
                false
            }
        }
    }

    /// Sends the batch until delivered, dropped or abandoned.
    async fn send(&self, events: &[&LoggedEvent], renewed: &mut Option<Instant>) -> Outcome {
        let id = uuid::Uuid::now_v7().to_string();
        let body = Body {
            id: &id,
            time: crate::unix_ms(),
            events: events.iter().map(|e| e.body()).collect(),
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            // Our own structs always serialize; should one not, the batch
            // cannot be sent at all.
            return Outcome::Dropped;
        };
        let started = Instant::now();
        let mut backoff = BACKOFF_FIRST;
        let label = self.target.label.clone();
        loop {
            match self.post(&body).await {
                Ok(()) => {
                    metrics::counter!(WEBHOOK_DELIVERED, "webhook" => label.clone())
                        .increment(events.len() as u64);
                    return Outcome::Delivered;
                }
                Err(reason) => {
                    metrics::counter!(WEBHOOK_FAILED, "webhook" => label.clone(), "reason" => reason)
                        .increment(1);
                }
            }
            // Jitter: up to a quarter more, so receivers coming back see
            // the nodes' retries spread.
            let wait = backoff + backoff.mul_f64(jitter() * 0.25);
            if started.elapsed() + wait > self.retry_for {
                metrics::counter!(WEBHOOK_DROPPED, "webhook" => label.clone())
                    .increment(events.len() as u64);
                tracing::error!(
                    webhook = %label,
                    batch = %id,
                    events = events.len(),
                    first = %events[0].id,
                    "webhooks: batch dropped after webhook_retry_for"
                );
                return Outcome::Dropped;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Outcome::Abandoned,
                _ = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if !self.hold_lease(renewed).await {
                return Outcome::Abandoned;
            }
        }
    }

    /// One signed `POST`; the failure's reason when not a 2xx within
    /// [`ANSWER_WITHIN`].
    async fn post(&self, body: &[u8]) -> Result<(), &'static str> {
        let t = (crate::unix_ms() / 1000).max(0) as u64;
        let request = self
            .http
            .post(&self.target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::HEADER, sign::signature(&self.target.secret, t, body))
            .body(body.to_vec());
        let started = Instant::now();
        let answer = tokio::time::timeout(ANSWER_WITHIN, async {
            let resp = request.send().await.map_err(|e| {
                tracing::warn!(webhook = %self.target.label, error = %e, "webhook request failed");
                "transport"
            })?;
            let status = resp.status();
            // Read the answer (ignored) so the connection goes back to the
            // pool.
            let _ = resp.bytes().await;
            if status.is_success() {
                Ok(())
            } else {
                tracing::warn!(webhook = %self.target.label, status = status.as_u16(), "webhook answered non-2xx");
                Err("status")
            }
        })
        .await
        .unwrap_or(Err("timeout"));
        metrics::histogram!(WEBHOOK_LATENCY, "webhook" => self.target.label.clone())
            .record(started.elapsed().as_secs_f64());
        answer
    }
}

/// A random fraction in [0, 1) (the random bits of a UUIDv4: no other
/// source of randomness is needed for this).
fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 11) as f64 / (1u64 << 53) as f64
}

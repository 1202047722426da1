//! Prometheus metrics (`GET /metrics`).
//!
//! One process-wide recorder (the `metrics` facade is global), rendered by
//! the exporter's handle on each scrape; gauges that describe the hub's
//! current state (rooms, members) are set at scrape time from the hub
//! itself, so they cannot drift. Histograms get explicit buckets, so they
//! render as Prometheus histograms, not summaries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open connections (gauge), by `transport` (`ws`, `sse`, `poll`).
pub(crate) const CONNECTIONS: &str = "hubcast_connections";
/// Connections opened (counter), by `transport`.
pub(crate) const CONNECTIONS_OPENED: &str = "hubcast_connections_opened_total";
/// Connections closed (counter), by `transport` and `reason`.
pub(crate) const CONNECTIONS_CLOSED: &str = "hubcast_connections_closed_total";
/// Rooms with local members on this node (gauge).
pub(crate) const ROOMS: &str = "hubcast_rooms";
/// Local room memberships on this node, personal rooms included (gauge).
pub(crate) const ROOM_MEMBERS: &str = "hubcast_room_members";
/// Messages accepted for publishing (counter), by `entry` (`ws`, `http`).
pub(crate) const PUBLISHED: &str = "hubcast_messages_published_total";
/// Messages queued to a local subscriber (counter).
pub(crate) const DELIVERIES: &str = "hubcast_deliveries_total";
/// Connections closed with 4000 (slow consumer), whatever decided it: a full
/// queue, a join buffer that overflowed, a room stream that broke (counter).
pub(crate) const SLOW_CONSUMERS: &str = "hubcast_slow_consumer_closes_total";
/// WebSocket payload bytes received (counter).
pub(crate) const BYTES_IN: &str = "hubcast_received_bytes_total";
/// WebSocket payload bytes sent (counter).
pub(crate) const BYTES_OUT: &str = "hubcast_sent_bytes_total";
/// Client frames answered with an error (counter), by `code`.
pub(crate) const FRAMES_REJECTED: &str = "hubcast_frames_rejected_total";
/// From the publish's arrival to the message being queued to a local
/// subscriber (histogram, seconds; one sample per message and node).
pub(crate) const DELIVERY_LATENCY: &str = "hubcast_publish_delivery_seconds";
/// Broker operations (histogram, seconds), by `op` and `result`.
pub(crate) const BROKER_LATENCY: &str = "hubcast_broker_operation_seconds";
/// Backend hook requests (counter), by `hook` (`connect`, `join`,
/// `publish`, `rpc`).
pub(crate) const HOOK_REQUESTS: &str = "hubcast_hook_requests_total";
/// Hook requests that did not get a readable answer (counter), by `hook`
/// and `reason` (`timeout`, `status`, `unreadable`, `transport`, `busy`).
pub(crate) const HOOK_FAILURES: &str = "hubcast_hook_failures_total";
/// Hook requests from start to answer or failure (histogram, seconds), by
/// `hook`.
pub(crate) const HOOK_LATENCY: &str = "hubcast_hook_duration_seconds";
/// Webhook events delivered (counter), by `webhook` (its table's number).
pub(crate) const WEBHOOK_DELIVERED: &str = "hubcast_webhook_events_delivered_total";
/// Webhook requests that failed (counter), by `webhook` and `reason`
/// (`status`, `timeout`, `transport`); the batch is retried.
pub(crate) const WEBHOOK_FAILED: &str = "hubcast_webhook_requests_failed_total";
/// Webhook events dropped after `webhook_retry_for` (counter), by `webhook`.
pub(crate) const WEBHOOK_DROPPED: &str = "hubcast_webhook_events_dropped_total";
/// Webhook requests from send to answer or failure (histogram, seconds),
/// by `webhook`.
pub(crate) const WEBHOOK_LATENCY: &str = "hubcast_webhook_request_duration_seconds";
/// Forwarding headers from a trusted proxy that could not be used, the
/// proxy's address taken instead (counter): malformed, or `Forwarded` and
/// `X-Forwarded-For` naming different clients.
pub(crate) const FORWARDED_MALFORMED: &str = "hubcast_forwarded_malformed_total";
/// Frames a connection's writer found waiting at once (histogram).
pub(crate) const QUEUE_DEPTH: &str = "hubcast_outbound_queue_depth";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once per process) and returns its handle; `None`
/// when another recorder was installed first (an embedding program's).
pub(crate) fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0,
            ];
            let depth = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(QUEUE_DEPTH.into()), &depth))
                .map(PrometheusBuilder::build_recorder);
            let recorder = match recorder {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics disabled: cannot build the recorder");
                    return None;
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("metrics disabled: another recorder is installed");
                return None;
            }
            describe();
            // The handle's upkeep (histogram buckets draining) happens on
            // render; scrapes are frequent enough.
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open connections, by transport");
    describe_counter!(CONNECTIONS_OPENED, "Connections opened, by transport");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections closed, by transport and reason"
    );
    describe_gauge!(ROOMS, "Rooms with local members");
    describe_gauge!(ROOM_MEMBERS, "Local room memberships");
    describe_counter!(
        PUBLISHED,
        "Messages accepted for publishing, by entry point"
    );
    describe_counter!(DELIVERIES, "Messages queued to local subscribers");
    describe_counter!(
        SLOW_CONSUMERS,
        "Connections closed with 4000 (slow consumer): a full queue, an overflowed join buffer or a broken room stream"
    );
    describe_counter!(BYTES_IN, Unit::Bytes, "WebSocket payload bytes received");
    describe_counter!(BYTES_OUT, Unit::Bytes, "WebSocket payload bytes sent");
    describe_counter!(
        FORWARDED_MALFORMED,
        "Forwarding headers from a trusted proxy ignored (malformed or conflicting); the proxy's address used"
    );
    describe_counter!(
        FRAMES_REJECTED,
        "Client frames answered with an error, by code"
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "From a publish's arrival to its delivery to a local subscriber"
    );
    describe_histogram!(
        BROKER_LATENCY,
        Unit::Seconds,
        "Broker operations, by op and result"
    );
    describe_counter!(HOOK_REQUESTS, "Backend hook requests, by hook");
    describe_counter!(
        HOOK_FAILURES,
        "Backend hook requests without a readable answer, by hook and reason"
    );
    describe_histogram!(
        HOOK_LATENCY,
        Unit::Seconds,
        "Backend hook requests, start to answer or failure, by hook"
    );
    describe_counter!(WEBHOOK_DELIVERED, "Webhook events delivered, by webhook");
    describe_counter!(
        WEBHOOK_FAILED,
        "Webhook requests that failed (and are retried), by webhook and reason"
    );
    describe_counter!(
        WEBHOOK_DROPPED,
        "Webhook events dropped after webhook_retry_for, by webhook"
    );
    describe_histogram!(
        WEBHOOK_LATENCY,
        Unit::Seconds,
        "Webhook requests, send to answer or failure, by webhook"
    );
    describe_histogram!(
        QUEUE_DEPTH,
        "Frames a connection's writer found waiting at once"
    );
}

/// The close reason label for a close code.
pub(crate) fn close_reason(code: Option<u16>) -> &'static str {
    match code {
        Some(1000) | Some(1005) => "normal",
        Some(1001) => "going_away",
        Some(1002) => "protocol_error",
        Some(1007) => "invalid_data",
        Some(1008) => "policy",
        Some(1009) => "too_big",
        Some(1011) => "internal",
        Some(4000) => "slow_consumer",
        Some(4001) => "token_expired",
        Some(4002) => "heartbeat_timeout",
        Some(4003) => "flooding",
        Some(_) => "other",
        None => "network",
    }
}

/// The publish time (`"timestamp":` ms) of an envelope. The first
/// `,"timestamp":` is the envelope's own: inside JSON strings a quote is
/// always escaped.
pub(crate) fn envelope_time_ms(envelope: &[u8]) -> Option<i64> {
    let ms = hubcast_client::raw::number_after(envelope, br#","timestamp":"#)?;
    i64::try_from(ms).ok()
}

/// Records a delivery latency sample for an envelope published at its
/// `timestamp` (clocks of different nodes may disagree: negative values
/// count as 0).
pub(crate) fn record_delivery_latency(envelope: &[u8]) {
    if let Some(t) = envelope_time_ms(envelope) {
        let ms = (crate::unix_ms() - t).max(0) as u64;
        handles()
            .delivery_latency
            .record(Duration::from_millis(ms).as_secs_f64());
    }
}

/// Handles of the hot-path metrics, looked up once (a `counter!` call
/// hashes its key on every use).
pub(crate) struct Handles {
    pub deliveries: metrics::Counter,
    pub slow_consumers: metrics::Counter,
    pub bytes_in: metrics::Counter,
    pub bytes_out: metrics::Counter,
    pub delivery_latency: metrics::Histogram,
    pub queue_depth: metrics::Histogram,
    pub published_ws: metrics::Counter,
    pub published_http: metrics::Counter,
}

/// The hot-path handles (installing the recorder first, so they are bound
/// to it).
pub(crate) fn handles() -> &'static Handles {
    static H: OnceLock<Handles> = OnceLock::new();
    H.get_or_init(|| {
        let _ = install();
        Handles {
            deliveries: metrics::counter!(DELIVERIES),
            slow_consumers: metrics::counter!(SLOW_CONSUMERS),
            bytes_in: metrics::counter!(BYTES_IN),
            bytes_out: metrics::counter!(BYTES_OUT),
            delivery_latency: metrics::histogram!(DELIVERY_LATENCY),
            queue_depth: metrics::histogram!(QUEUE_DEPTH),
            published_ws: metrics::counter!(PUBLISHED, "entry" => "ws"),
            published_http: metrics::counter!(PUBLISHED, "entry" => "http"),
        }
    })
}

/// How a client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A WebSocket.
    Ws,
    /// A Server-Sent Events stream.
    Sse,
    /// A long poll waiting.
    Poll,
}

impl Transport {
    /// The `transport` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

/// Where a publish came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A WebSocket `publish` or `send` frame.
    Ws,
    /// `POST /api/publish` or `/api/send`.
    Http,
}

/// Open connections per transport on this server (for `/api/stats`; the
/// Prometheus gauge is process-wide and cannot be read back).
#[derive(Debug, Default)]
pub(crate) struct OpenCounts {
    ws: AtomicU64,
    sse: AtomicU64,
    poll: AtomicU64,
}

impl OpenCounts {
    /// Connections of `transport` open now.
    pub(crate) fn get(&self, transport: Transport) -> u64 {
        self.slot(transport).load(Ordering::Relaxed)
    }

    fn slot(&self, transport: Transport) -> &AtomicU64 {
        match transport {
            Transport::Ws => &self.ws,
            Transport::Sse => &self.sse,
            Transport::Poll => &self.poll,
        }
    }
}

/// Counts one open connection of a transport while it lives: in the
/// server's [`OpenCounts`] and in the Prometheus metrics.
pub(crate) struct OpenConnection {
    transport: Transport,
    counts: Arc<OpenCounts>,
    /// Close reason label, set before the drop.
    pub reason: &'static str,
}

impl OpenConnection {
    /// Counts a connection opened now.
    pub(crate) fn new(transport: Transport, counts: &Arc<OpenCounts>) -> Self {
        let _ = handles();
        let label = transport.as_str();
        counts.slot(transport).fetch_add(1, Ordering::Relaxed);
        metrics::counter!(CONNECTIONS_OPENED, "transport" => label).increment(1);
        metrics::gauge!(CONNECTIONS, "transport" => label).increment(1.0);
        Self {
            transport,
            counts: counts.clone(),
            reason: "normal",
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let label = self.transport.as_str();
        self.counts
            .slot(self.transport)
            .fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(CONNECTIONS, "transport" => label).decrement(1.0);
        metrics::counter!(CONNECTIONS_CLOSED, "transport" => label, "reason" => self.reason)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_read_from_the_envelope_not_from_strings() {
        let env = br#"{"type":"message","room":"r","offset":1,"epoch":"e","msgId":"\",\"timestamp\":5","timestamp":1700000000123,"eventType":"e","source":"s","data":{"timestamp":9}}"#;
        assert_eq!(envelope_time_ms(env), Some(1_700_000_000_123));
        assert_eq!(envelope_time_ms(br#"{"type":"message"}"#), None);
    }

    #[test]
    fn reasons() {
        assert_eq!(close_reason(Some(4000)), "slow_consumer");
        assert_eq!(close_reason(None), "network");
    }
}

//! Backend hooks (PROTOCOL.md section 9): the server asks the application's
//! backend before a connect, a join or a publish, and passes `rpc` frames
//! to it.
//!
//! [`Hooks`] owns the `[hooks]` settings, the pooled HTTP client and the
//! cap on requests in flight, so that a config reload can replace the
//! whole of it at once. Each call is one signed `POST` ([`sign`]) with the
//! caller's `traceparent`; it never allows on failure: a timeout, a
//! non-2xx answer, an unreadable one or a full cap is a [`HookError`],
//! which the caller turns into `unavailable` (a connect: 503).
//!
//! - [`sign`]: `Hubcast-Signature`, made and checked.
//! - `answers`: each hook's body and the answers it reads.

mod answers;
pub mod sign;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::config::HooksTable;
use crate::protocol::ErrorCode;
use crate::trace::TraceId;
pub(crate) use answers::{
    Caller, ConnectAnswer, ConnectBody, JoinBody, PublishBody, RpcAnswer, RpcBody, Verdict,
};

/// Largest answer read from the backend: room for the largest `data` a
/// publish may carry, twice over (escaping), and the rest of the answer.
const MAX_ANSWER_EXTRA: usize = 64 * 1024;

/// Which hook a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// A handshake without a JWT.
    Connect,
    /// A join of a `join = "hook"` room.
    Join,
    /// A client's publish into a `publish = "hook"` room.
    Publish,
    /// An `rpc` frame.
    Rpc,
}

impl Hook {
    /// The body's `hook` and the metrics' label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Join => "join",
            Hook::Publish => "publish",
            Hook::Rpc => "rpc",
        }
    }
}

/// Why the backend's word could not be had: the action is not allowed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
    /// No answer within `timeout_ms`.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// An answer other than 2xx.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// A 2xx answer that is not what the hook answers.
    #[error("unreadable answer: {0}")]
    Unreadable(String),
    /// The request could not be sent (refused, reset).
    #[error("unreachable: {0}")]
    Transport(String),
    /// `max_in_flight` requests already under way.
    #[error("too many hook requests under way (hooks.max_in_flight)")]
    Busy,
}

impl HookError {
    /// The metrics' `reason` label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            HookError::Timeout(_) => "timeout",
            HookError::Status(_) => "status",
            HookError::Unreadable(_) => "unreadable",
            HookError::Transport(_) => "transport",
            HookError::Busy => "busy",
        }
    }

    /// What the client reads: the reason, never the backend's address or
    /// its error text (those go to the log).
    pub(crate) fn client_message(&self, hook: Hook) -> String {
        format!(
            "the application's backend did not answer the {} hook ({})",
            hook.as_str(),
            self.reason()
        )
    }
}

/// An answer that parsed but says what the hook cannot mean (a bad user
/// id, an unknown error code, oversized data): failed as an unreadable
/// one, counted and logged like the others.
pub(crate) fn bad_answer(hook: Hook, why: impl Into<String>) -> HookError {
    let e = HookError::Unreadable(why.into());
    metrics::counter!(crate::metrics::HOOK_FAILURES, "hook" => hook.as_str(), "reason" => e.reason())
        .increment(1);
    tracing::warn!(hook = hook.as_str(), error = %e, "hook failed");
    e
}

/// The hook client: settings, pooled connections, the in-flight cap.
pub(crate) struct Hooks {
    settings: HooksTable,
    url: String,
    secret: Box<[u8]>,
    timeout: Duration,
    http: reqwest::Client,
    in_flight: Arc<Semaphore>,
    /// Largest answer read.
    max_answer: usize,
    /// Largest replacement `data` a publish hook may answer.
    pub(crate) max_data: usize,
}

impl Hooks {
    /// The client of `[hooks]`; `None` without a `url` (validated
    /// settings: a `url` comes with a `secret`).
    pub(crate) fn new(settings: &HooksTable, max_message_bytes: usize) -> Option<Hooks> {
        let url = settings.url.clone()?;
        let secret = settings.secret.clone().unwrap_or_default();
        let http = http_client();
        Some(Hooks {
            url,
            secret: secret.into_bytes().into_boxed_slice(),
            timeout: Duration::from_millis(settings.timeout_ms),
            http,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            max_answer: 2 * max_message_bytes + MAX_ANSWER_EXTRA,
            max_data: max_message_bytes,
            settings: settings.clone(),
        })
    }

    /// The settings this client was made from.
    pub(crate) fn settings(&self) -> &HooksTable {
        &self.settings
    }

    /// The join hook's word on `user` joining `room` on connection `conn`:
    /// allowed, `rejected` with the backend's message, or `unavailable`
    /// when it could not be asked. WebSocket and SSE joins alike.
    pub(crate) async fn join(
        &self,
        conn: &str,
        user: &str,
        room: &str,
        trace: TraceId,
    ) -> Result<(), (ErrorCode, String)> {
        let caller = Caller {
            conn,
            user: Some(user),
        };
        let verdict: Verdict = self
            .call(Hook::Join, caller, &JoinBody { room }, trace)
            .await
            .map_err(|e| (ErrorCode::Unavailable, e.client_message(Hook::Join)))?;
        if verdict.allow {
            Ok(())
        } else {
            Err((ErrorCode::Rejected, verdict.refusal()))
        }
    }

    /// One hook request: the answer read as `A`, or why not. Counted by
    /// hook, with failures by reason and the latency of every answer.
    pub(crate) async fn call<A: DeserializeOwned>(
        &self,
        hook: Hook,
        caller: Caller<'_>,
        body: &impl Serialize,
        trace: TraceId,
    ) -> Result<A, HookError> {
        let name = hook.as_str();
        metrics::counter!(crate::metrics::HOOK_REQUESTS, "hook" => name).increment(1);
        let started = Instant::now();
        let result = self
            .exchange(hook, caller, body, trace)
            .await
            .and_then(|bytes| {
                serde_json::from_slice::<A>(&bytes)
                    .map_err(|e| HookError::Unreadable(e.to_string()))
            });
        metrics::histogram!(crate::metrics::HOOK_LATENCY, "hook" => name)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            metrics::counter!(crate::metrics::HOOK_FAILURES, "hook" => name, "reason" => e.reason())
                .increment(1);
            tracing::warn!(hook = name, error = %e, trace_id = %trace, "hook failed");
        }
        result
    }

    /// Sends the signed body and reads the 2xx answer, all within
    /// `timeout_ms`, holding a place under `max_in_flight`.
    async fn exchange(
        &self,
        hook: Hook,
        caller: Caller<'_>,
        body: &impl Serialize,
        trace: TraceId,
    ) -> Result<BytesMut, HookError> {
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err(HookError::Busy);
        };
        let body = serde_json::to_vec(&answers::Envelope::new(hook, caller, body))
            .map_err(|e| HookError::Unreadable(e.to_string()))?;
        let t = (crate::unix_ms() / 1000).max(0) as u64;
        let signature = sign::signature(&self.secret, t, &body);
        let request = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::HEADER, signature)
            .header("traceparent", traceparent(trace))
            .body(body);
        let exchange = async {
            let mut resp = request
                .send()
                .await
                .map_err(|e| HookError::Transport(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(HookError::Status(resp.status().as_u16()));
            }
            let mut read = BytesMut::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| HookError::Transport(e.to_string()))?
            {
                if read.len() + chunk.len() > self.max_answer {
                    return Err(HookError::Unreadable(format!(
                        "longer than {} bytes",
                        self.max_answer
                    )));
                }
                read.extend_from_slice(&chunk);
            }
            Ok(read)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(HookError::Timeout(self.settings.timeout_ms)))
    }
}

/// The pooled HTTP client of hooks and webhooks alike.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "hooks: default HTTP client instead of the tuned one");
            reqwest::Client::new()
        })
}

/// A W3C `traceparent` continuing the connection's trace (a new one when it
/// has none), with a span id of this request's own.
fn traceparent(trace: TraceId) -> String {
    let trace = match trace.to_string() {
        t if t.is_empty() => crate::trace::new_trace_id(),
        t => t,
    };
    let span = uuid::Uuid::new_v4().as_u64_pair().0.max(1);
    format!("00-{trace}-{span:016x}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_carries_the_trace_id_and_parses_back() {
        let id = crate::trace::new_trace_id();
        let header = traceparent(TraceId::parse(&id));
        assert_eq!(crate::trace::parse_traceparent(&header), Some(id));
        let fresh = traceparent(TraceId::default());
        assert!(crate::trace::parse_traceparent(&fresh).is_some(), "{fresh}");
    }
}

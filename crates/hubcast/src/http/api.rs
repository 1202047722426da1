//! The server API for backends (PROTOCOL.md section 5): publish and send,
//! presence, history and user status reads. Every call needs
//! `Authorization: Bearer <api key>`; with no keys configured, the API
//! answers loopback callers only. Errors are section 6's JSON bodies.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use super::error::HttpError;
use super::forwarded::ClientAddr;
use crate::App;
use crate::broker::BrokerError;
use crate::protocol::{self, ApiPublish, ErrorCode, Member};
use crate::publish::Publish;
use crate::trace::RequestTrace;

/// Whether `presented` is one of `keys`, comparing in constant time (every
/// key is compared, whatever matches).
fn key_matches(keys: &[String], presented: &str) -> bool {
    keys.iter().fold(false, |found, k| {
        found | bool::from(k.as_bytes().ct_eq(presented.as_bytes()))
    })
}

/// The API key check (or, with no keys configured, the loopback check).
pub(crate) async fn require_key(
    State(app): State<Arc<App>>,
    Extension(remote): Extension<ClientAddr>,
    req: Request,
    next: Next,
) -> Response {
    // Held across the handler's await: a full Arc, not a guard.
    let live = app.live.load_full();
    let keys = &live.config.api_keys;
    if keys.is_empty() {
        // Loopback trust needs a loopback Host too: a DNS-rebound page's
        // request comes from 127.0.0.1 but names its own host.
        if !remote.ip.is_loopback() || !super::origin::host_is_loopback(req.headers()) {
            return HttpError::new(
                ErrorCode::Forbidden,
                "the API answers loopback callers (with a loopback Host) only until api_keys are configured",
            )
            .into_response();
        }
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        None => HttpError::new(
            ErrorCode::Unauthorized,
            "missing API key: send Authorization: Bearer <key>",
        )
        .into_response(),
        Some(k) if key_matches(keys, k) => next.run(req).await,
        Some(_) => HttpError::new(ErrorCode::Unauthorized, "invalid API key").into_response(),
    }
}

/// Every HTTP route's broker failure (the API, SSE, long polls). The
/// caller reads a fixed sentence ([`BrokerError::client_message`]): the
/// engine's own error text can name internal addresses and settings. The
/// log keeps it, for the operator.
impl From<BrokerError> for HttpError {
    fn from(e: BrokerError) -> Self {
        let message = e.client_message();
        match e {
            BrokerError::Unavailable { .. } => {
                tracing::warn!(error = %e, "broker unavailable");
                HttpError::new(ErrorCode::Unavailable, message).retry_after(1)
            }
            BrokerError::Timeout { ref msg_id, .. } => {
                tracing::warn!(error = %e, "broker timed out");
                HttpError::new(ErrorCode::Timeout, message).with_msg_id(msg_id.clone())
            }
            BrokerError::Internal(_) => {
                tracing::error!(error = %e, "broker error on the API");
                HttpError::new(ErrorCode::Internal, message)
            }
        }
    }
}

/// Reads a JSON request body of at most `max_message_bytes`: 400 for a
/// wrong content type, 413 past the limit.
pub(super) async fn json_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, HttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            format!(
                "Content-Type must be application/json{}",
                if ct.is_empty() {
                    String::new()
                } else {
                    format!(", not {:?}", ct.chars().take(64).collect::<String>())
                }
            ),
        ));
    }
    let limit = app.live().config.max_message_bytes;
    let too_large = || {
        HttpError::new(
            ErrorCode::TooLarge,
            format!("request body larger than max_message_bytes ({limit} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // The only error besides the limit is a broken request stream.
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            too_large()
        } else {
            HttpError::new(ErrorCode::BadRequest, "could not read the request body")
        }
    })
}

#[derive(Serialize)]
struct PublishReply<'a> {
    #[serde(rename = "msgId")]
    msg_id: &'a str,
    room: &'a str,
    offset: u64,
    epoch: &'a str,
    duplicate: bool,
}

/// `POST /api/publish` (`SEND` false) and `POST /api/send`: reads, checks
/// and publishes the body.
pub(crate) async fn publish<const SEND: bool>(
    State(app): State<Arc<App>>,
    trace: Option<Extension<RequestTrace>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let body = json_body(&app, &headers, body).await?;
    let req = protocol::parse_api_publish(&body, SEND).map_err(bad_frame)?;
    do_publish(&app, req, trace.map(|t| t.0)).await
}

fn bad_frame(e: protocol::FrameError) -> HttpError {
    HttpError::new(e.code, e.message)
}

/// Publishes through the broker exactly as a WebSocket publish does (same
/// envelope, offsets and msgId deduplication).
/// A caller's `traceparent` travels in the envelope (`traceId`).
async fn do_publish(
    app: &App,
    req: ApiPublish<'_>,
    trace: Option<RequestTrace>,
) -> Result<Response, HttpError> {
    let mut request = Publish {
        room: &req.room,
        event: &req.message.event,
        data: req.message.data.get(),
        source: req.source.as_deref().unwrap_or("api"),
        msg_id: req.message.msg_id.as_deref(),
        trace_id: trace
            .as_ref()
            .filter(|t| t.propagated)
            .map(|t| t.id.as_str()),
        skip: None,
    }
    .request();
    app.mark_for_webhooks(&mut request);
    let msg_id = request.msg_id.clone();
    let result = app.broker.publish(request).await?;
    tracing::debug!(
        room = %req.room,
        msg_id = %msg_id,
        offset = result.offset,
        duplicate = result.duplicate,
        "message published"
    );
    if !result.duplicate {
        app.count_published(crate::metrics::Entry::Http);
    }
    Ok(Json(PublishReply {
        msg_id: &msg_id,
        room: &req.room,
        offset: result.offset,
        epoch: &result.epoch,
        duplicate: result.duplicate,
    })
    .into_response())
}

fn valid_room(room: &str) -> Result<(), HttpError> {
    protocol::check_room(room).map_err(|m| HttpError::new(ErrorCode::BadRequest, m))
}

#[derive(Serialize)]
struct PresenceReply<'a> {
    room: &'a str,
    members: &'a [Member],
    /// Extension: users present in all.
    total: usize,
}

pub(crate) async fn presence(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
) -> Result<Response, HttpError> {
    valid_room(&room)?;
    if !app.live().rules.for_room(&room).presence {
        return Err(HttpError::new(
            ErrorCode::Forbidden,
            format!("{room} keeps no presence (room rule)"),
        ));
    }
    let page = app.presence_page(&room).await?;
    Ok(Json(PresenceReply {
        room: &room,
        members: &page.members,
        total: page.total,
    })
    .into_response())
}

#[derive(Serialize)]
struct HistoryReply<'a> {
    room: &'a str,
    epoch: &'a str,
    messages: Vec<&'a RawValue>,
    complete: bool,
}

/// A `since` query value.
pub(super) fn query_since(v: &str) -> Result<u64, HttpError> {
    v.parse::<u64>().map_err(|_| {
        HttpError::new(
            ErrorCode::BadRequest,
            "query `since` must be a non-negative integer",
        )
    })
}

/// A `limit` query value (1 to 1000, like the `history` frame's).
pub(super) fn query_limit(v: &str) -> Result<usize, HttpError> {
    query_limit_up_to(v, protocol::MAX_HISTORY_LIMIT)
}

/// A `limit` query value from 1 to `max`.
fn query_limit_up_to(v: &str, max: usize) -> Result<usize, HttpError> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            HttpError::new(
                ErrorCode::BadRequest,
                format!("query `limit` must be an integer from 1 to {max}"),
            )
        })
}

/// `since` and `limit` of a history query, checked like the frame's.
fn history_query(q: &[(String, String)]) -> Result<(Option<u64>, usize), HttpError> {
    let mut since = None;
    let mut limit = protocol::DEFAULT_HISTORY_LIMIT;
    for (k, v) in q {
        match k.as_str() {
            "since" => since = Some(query_since(v)?),
            "limit" => limit = query_limit(v)?,
            _ => {}
        }
    }
    Ok((since, limit))
}

pub(crate) async fn history(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    valid_room(&room)?;
    let (since, limit) = history_query(&q)?;
    let page = app.broker.history(&room, since, limit).await?;
    Ok(Json(HistoryReply {
        room: &room,
        epoch: &page.epoch,
        messages: page.raw_messages(),
        complete: page.complete,
    })
    .into_response())
}

#[derive(Serialize)]
struct StatusReply<'a> {
    user: &'a str,
    status: protocol::Status,
    connections: u32,
    #[serde(rename = "lastSeen")]
    last_seen: Option<i64>,
}

pub(crate) async fn user_status(
    State(app): State<Arc<App>>,
    Path(user): Path<String>,
) -> Result<Response, HttpError> {
    protocol::check_user(&user).map_err(|m| HttpError::new(ErrorCode::BadRequest, m))?;
    // A user never seen (or forgotten after history_ttl) is simply offline
    // with no last-seen time (PROTOCOL.md section 8): a backend asking about
    // a user who has not connected yet must not have to special-case a 404.
    let st = app.presence.user_status(&user).await?;
    Ok(Json(StatusReply {
        user: &user,
        status: st.status,
        connections: st.connections,
        last_seen: st.last_seen,
    })
    .into_response())
}

/// `GET /api/stats`: a JSON summary for dashboards (this node).
pub(crate) async fn stats(State(app): State<Arc<App>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let (published_rate, delivered_rate) = app.rates();
    use crate::metrics::Transport;
    let ws = app.open.get(Transport::Ws);
    let sse = app.open.get(Transport::Sse);
    let poll = app.open.get(Transport::Poll);
    Json(serde_json::json!({
        "node": app.config.node_id,
        "broker": app.broker.name(),
        "uptimeSeconds": app.started.elapsed().as_secs(),
        "connections": {"total": ws + sse + poll, "ws": ws, "sse": sse, "poll": poll},
        "rooms": app.hub.rooms(),
        "members": app.hub.memberships(),
        "messages": {
            "published": app.published.load(Relaxed),
            "delivered": app.hub.delivered(),
        },
        "rates": {
            "publishedPerSecond": (published_rate * 10.0).round() / 10.0,
            "deliveredPerSecond": (delivered_rate * 10.0).round() / 10.0,
        },
    }))
    .into_response()
}

/// A `limit` query: 1 to `max`, `default` when absent.
fn limit_query(q: &[(String, String)], default: usize, max: usize) -> Result<usize, HttpError> {
    match q.iter().find(|(k, _)| k == "limit") {
        None => Ok(default),
        Some((_, v)) => query_limit_up_to(v, max),
    }
}

/// `GET /api/rooms`: this node's rooms with local members (personal rooms
/// left out), most members first.
pub(crate) async fn rooms(
    State(app): State<Arc<App>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let limit = limit_query(&q, 100, 1000)?;
    let (rooms, total) = app.hub.room_list(limit);
    let rooms: Vec<_> = rooms
        .iter()
        .map(|(room, members)| serde_json::json!({"room": &**room, "members": members}))
        .collect();
    Ok(Json(serde_json::json!({
        "node": app.config.node_id,
        "total": total,
        "rooms": rooms,
    }))
    .into_response())
}

/// `GET /api/events`: this node's recent errors and notable closes,
/// newest first; `after` returns only events with a larger `seq`.
pub(crate) async fn events(
    State(app): State<Arc<App>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let limit = limit_query(&q, 50, crate::recent::CAPACITY)?;
    let after = match q.iter().find(|(k, _)| k == "after") {
        None => 0,
        Some((_, v)) => v.parse::<u64>().map_err(|_| {
            HttpError::new(
                ErrorCode::BadRequest,
                "after must be a non-negative integer",
            )
        })?,
    };
    Ok(Json(serde_json::json!({
        "node": app.config.node_id,
        "events": app.recent.list(after, limit),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        let keys = vec![
            "0123456789abcdef".to_string(),
            "fedcba9876543210".to_string(),
        ];
        assert!(key_matches(&keys, "0123456789abcdef"));
        assert!(key_matches(&keys, "fedcba9876543210"));
        assert!(!key_matches(&keys, "0123456789abcde"));
        assert!(!key_matches(&keys, "0123456789abcdefg"));
        assert!(!key_matches(&keys, ""));
        assert!(!key_matches(&[], "0123456789abcdef"));
    }
}

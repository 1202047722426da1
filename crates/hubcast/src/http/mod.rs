//! HTTP routes: `/ws` (the WebSocket upgrade), `/api/*` (the server API),
//! `/healthz`, `/readyz`.
//! Every error reply is JSON (PROTOCOL.md section 6).

pub(crate) mod api;
pub(crate) mod connect_hook;
pub(crate) mod error;
pub(crate) mod forwarded;
pub(crate) mod handshake;
pub(crate) mod limits;
pub(crate) mod linger;
pub(crate) mod origin;
pub(crate) mod poll;
pub(crate) mod serve;
pub(crate) mod sse;
pub(crate) mod subscribe;
pub(crate) mod tap;
pub(crate) mod tls;
pub(crate) mod users;
pub(crate) mod web;
pub(crate) mod ws;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::App;
use crate::protocol::ErrorCode;
use error::HttpError;

/// Every route the server answers, as (method, path). The router is built
/// from this list, and a test checks it against the OpenAPI document, so
/// neither can drift from the other.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/ws"),
    ("GET", "/sse"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/publish"),
    ("POST", "/api/send"),
    ("GET", "/api/rooms/{room}/presence"),
    ("GET", "/api/rooms/{room}/history"),
    ("GET", "/api/users/{user}/status"),
    ("GET", "/api/poll"),
    ("GET", "/api/stats"),
    ("GET", "/api/rooms"),
    ("GET", "/api/events"),
    ("POST", "/api/disconnect"),
    ("PUT", "/api/users/{user}/block"),
    ("DELETE", "/api/users/{user}/block"),
    ("POST", "/api/tokens/revoke"),
    ("POST", "/api/users/{user}/tokens/revoke"),
    ("POST", "/api/subscribe"),
    ("POST", "/api/unsubscribe"),
    ("GET", "/api/users/blocked"),
];

/// The OpenAPI document of [`ROUTES`].
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// The handler of one entry of [`ROUTES`], and whether it is behind the API
/// key check.
fn handler(method: &str, path: &str) -> Option<(axum::routing::MethodRouter<Arc<App>>, bool)> {
    use axum::routing::post;
    Some(match (method, path) {
        ("GET", "/ws") => (get(ws::upgrade), false),
        ("GET", "/sse") => (get(sse::sse), false),
        ("GET", "/healthz") => (get(healthz), false),
        ("GET", "/readyz") => (get(readyz), false),
        ("GET", "/metrics") => (get(metrics), false),
        ("GET", "/api/openapi.json") => (get(openapi), false),
        ("POST", "/api/publish") => (post(api::publish::<false>), true),
        ("POST", "/api/send") => (post(api::publish::<true>), true),
        ("GET", "/api/rooms/{room}/presence") => (get(api::presence), true),
        ("GET", "/api/rooms/{room}/history") => (get(api::history), true),
        ("GET", "/api/users/{user}/status") => (get(api::user_status), true),
        ("GET", "/api/poll") => (get(poll::poll), true),
        ("GET", "/api/stats") => (get(api::stats), true),
        ("GET", "/api/rooms") => (get(api::rooms), true),
        ("GET", "/api/events") => (get(api::events), true),
        ("POST", "/api/disconnect") => (post(users::disconnect), true),
        ("PUT", "/api/users/{user}/block") => (axum::routing::put(users::block), true),
        ("DELETE", "/api/users/{user}/block") => (axum::routing::delete(users::unblock), true),
        ("POST", "/api/tokens/revoke") => (post(users::revoke_jti), true),
        ("POST", "/api/users/{user}/tokens/revoke") => (post(users::revoke_user_tokens), true),
        ("POST", "/api/subscribe") => (post(subscribe::subscribe::<true>), true),
        ("POST", "/api/unsubscribe") => (post(subscribe::subscribe::<false>), true),
        ("GET", "/api/users/blocked") => (get(users::blocked), true),
        _ => return None,
    })
}

/// All routes, with `app` as state.
pub(crate) fn router(app: Arc<App>) -> Router {
    let mut open = Router::new();
    let mut keyed = Router::new();
    for (method, path) in ROUTES {
        // A ROUTES entry without a handler is caught by a unit test.
        let Some((h, needs_key)) = handler(method, path) else {
            continue;
        };
        if needs_key {
            keyed = keyed.route(path, h);
        } else {
            open = open.route(path, h);
        }
    }
    open.merge(keyed.route_layer(axum::middleware::from_fn_with_state(
        app.clone(),
        api::require_key,
    )))
    .merge(web::routes(app.config.web))
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(axum::middleware::from_fn(crate::trace::trace_requests))
    .with_state(app)
}

/// The OpenAPI document.
async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// Alive: the process serves HTTP.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready: not shutting down, and the broker can serve, writes included.
/// Not ready is 503 with section 6's error body plus what a probe or an
/// operator reads: `status`, `reason` (`shutting_down`, or the engine's:
/// `unreachable`, `out_of_memory`, `read_only`), `node` and `broker`.
async fn readyz(State(app): State<Arc<App>>) -> axum::response::Response {
    let (reason, message) = if app.draining.is_cancelled() {
        ("shutting_down", "server shutting down")
    } else {
        match app.broker.ready().await {
            Ok(()) => {
                return Json(json!({
                    "status": "ready",
                    "node": app.config.node_id,
                    "broker": app.broker.name(),
                }))
                .into_response();
            }
            Err(why) => (why.reason(), why.message()),
        }
    };
    let mut resp = (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": {"code": ErrorCode::Unavailable.as_str(), "message": message},
            "status": "unready",
            "reason": reason,
            "node": app.config.node_id,
            "broker": app.broker.name(),
        })),
    )
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(1u64),
    );
    resp
}

/// Prometheus text format.
async fn metrics(State(app): State<Arc<App>>) -> Result<impl IntoResponse, HttpError> {
    let Some(handle) = &app.metrics else {
        return Err(HttpError::new(
            ErrorCode::NotFound,
            "metrics are disabled: another metrics recorder is installed in this process",
        ));
    };
    // State gauges come from the hub itself at scrape time.
    metrics::gauge!(crate::metrics::ROOMS).set(app.hub.rooms() as f64);
    metrics::gauge!(crate::metrics::ROOM_MEMBERS).set(app.hub.memberships() as f64);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    ))
}

async fn not_found() -> HttpError {
    HttpError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(ErrorCode::BadRequest, "method not allowed on this route")
        .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler() {
        for (m, p) in ROUTES {
            assert!(handler(m, p).is_some(), "{m} {p}");
        }
    }
}

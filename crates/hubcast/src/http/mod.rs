//! HTTP routes: `/ws` (the WebSocket upgrade), `/api/*` (the server API),
//! `/healthz`, `/readyz`.
//! Every error reply is JSON (PROTOCOL.md section 6).

pub mod api;
pub mod error;
pub mod limits;
pub mod origin;
pub mod poll;
pub mod sse;
pub mod tls;
pub mod ws;

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

/// All routes, with `app` as state.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/sse", get(sse::sse))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::routes(app.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// Alive: the process serves HTTP.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready: not shutting down, and the broker can serve.
async fn readyz(State(app): State<Arc<App>>) -> Result<impl IntoResponse, HttpError> {
    if app.shutdown.is_cancelled() {
        return Err(HttpError::new(ErrorCode::Unavailable, "server shutting down").retry_after(1));
    }
    if !app.broker.ready().await {
        return Err(HttpError::new(
            ErrorCode::Unavailable,
            format!("broker {} unreachable", app.broker.name()),
        )
        .retry_after(1));
    }
    Ok(Json(
        json!({"status": "ready", "node": app.config.node_id, "broker": app.broker.name()}),
    ))
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

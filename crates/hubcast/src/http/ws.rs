//! `GET /ws`: checks the handshake (PROTOCOL.md section 1), answers 101 and
//! hands the upgraded stream to [`crate::conn::serve`].
//!
//! The upgrade is done here, and the framing by [`crate::conn::frame`]; a
//! refused handshake is always an HTTP error with a JSON body.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::FutureExt as _;
use futures_util::future::OptionFuture;
use hyper_util::rt::TokioIo;

use super::error::HttpError;
use super::forwarded::ClientAddr;
use super::handshake::{admit, authenticate, check_origin, check_user_cap};
use crate::App;
use crate::conn::frame::Reader;
use crate::conn::{self, Conn};
use crate::outbound::Outbound;
use crate::protocol::{self, ErrorCode};

/// RFC 6455 key suffix for `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether a comma-separated header contains `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `Sec-WebSocket-Accept` for a client key.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.digest().bytes())
}

/// The upgrade handler.
pub(crate) async fn upgrade(
    State(app): State<Arc<App>>,
    Extension(remote): Extension<ClientAddr>,
    mut req: Request,
) -> Result<Response, HttpError> {
    let slot = admit(&app, remote)?;
    // RFC 6455 4.1: the opening handshake is HTTP/1.1 or later; an HTTP/1.0
    // peer cannot keep the connection open after the response.
    if req.version() < axum::http::Version::HTTP_11 {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            "a WebSocket upgrade needs HTTP/1.1",
        ));
    }
    let headers = req.headers();
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            "GET /ws expects a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        ));
    }
    // RFC 6455 4.2.1-2: a handshake without a version is malformed (400);
    // one with a version the server does not speak gets 426 and the one it
    // does.
    let Some(version) = headers.get(header::SEC_WEBSOCKET_VERSION) else {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            "a WebSocket upgrade needs Sec-WebSocket-Version: 13",
        ));
    };
    if version.as_bytes() != b"13" {
        let mut resp = HttpError::new(
            ErrorCode::BadRequest,
            "unsupported WebSocket version; use 13",
        )
        .with_status(StatusCode::UPGRADE_REQUIRED)
        .into_response();
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Ok(resp);
    }
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(k) if BASE64.decode(k.as_bytes()).is_ok_and(|d| d.len() == 16) => {
            k.as_bytes().to_vec()
        }
        _ => {
            return Err(HttpError::new(
                ErrorCode::BadRequest,
                "missing or invalid Sec-WebSocket-Key",
            ));
        }
    };
    check_origin(&app, headers, remote)?;
    let subprotocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol::SUBPROTOCOL);
    let query: Query<HashMap<String, String>> = Query::try_from_uri(req.uri())
        .map_err(|e| HttpError::new(ErrorCode::BadRequest, format!("bad query string: {e}")))?;
    let name = match query.get("name") {
        Some(n) => {
            let n = n.trim();
            if n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) {
                return Err(HttpError::new(
                    ErrorCode::BadRequest,
                    "name must be 1 to 64 characters without control characters",
                ));
            }
            if n.chars().any(protocol::is_bidi_control) {
                return Err(HttpError::new(
                    ErrorCode::BadRequest,
                    "name must not contain bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069)",
                ));
            }
            Some(n.to_string())
        }
        None => None,
    };

    let conn_id = format!("c-{}", uuid::Uuid::now_v7());
    // The connection's log lines (and its hook requests) carry the upgrade
    // request's trace id.
    let trace_id = req
        .extensions()
        .get::<crate::trace::RequestTrace>()
        .map(|t| crate::trace::TraceId::parse(&t.id))
        .unwrap_or_default();
    let caller = authenticate(
        &app,
        req.headers(),
        &query,
        remote,
        &conn_id,
        name,
        trace_id,
    )
    .await?;
    check_user_cap(&app, &caller).await?;
    let subs = caller.subs;
    let user: Arc<str> = Arc::from(caller.user);
    // Usually the display name is the user id: one string for both.
    let name = if caller.display == *user {
        user.clone()
    } else {
        Arc::from(caller.display)
    };
    let conn = Arc::new(Conn {
        key: app.next_conn.fetch_add(1, Ordering::Relaxed),
        id: Arc::from(conn_id.as_str()),
        name,
        user,
        grants: caller.grants,
        expires: caller.expires,
        anonymous: caller.anonymous,
        out: Outbound::new(app.config.queue_size),
        trace_id,
        read_gate: Default::default(),
        commands: Default::default(),
    });

    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_app = app.clone();
    // No span for the connection's life (it would hold memory in the log
    // registry for every idle connection); `Conn::span` is entered while
    // the connection does something. What only the upgrade needs (the
    // remote address, the wait for the upgrade) lives in the first state
    // of `then`, which the connection's future replaces: an `async` block
    // would keep all it captured in the task for the connection's life.
    let task = on_upgrade.then(move |upgraded| {
        let served = match upgraded {
            Ok(upgraded) => {
                let max = task_app.live().config.max_message_bytes;
                // hyper-util's server wraps every connection in a private
                // type (HTTP version detection), so the upgraded stream
                // cannot be taken back as a TcpStream: tokio's split it is
                // (a lock taken per read or write call, not per frame).
                let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                let reader = Reader::new(r, max);
                tracing::info!(conn = %conn.id, user = %conn.user, remote = %remote, trace_id = %conn.trace_id, "connection opened");
                // The slot holds the connection's place in the limits until
                // it ends.
                Some(conn::serve(task_app, reader, w, conn, subs, slot))
            }
            Err(e) => {
                tracing::debug!(remote = %remote, error = %e, "upgrade failed");
                None
            }
        };
        OptionFuture::from(served)
    });
    app.tasks.spawn(task);

    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key(&key))
            .map_err(|_| HttpError::new(ErrorCode::Internal, "bad accept key"))?,
    );
    if subprotocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol::SUBPROTOCOL),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}

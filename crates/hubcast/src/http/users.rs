//! The user controls of the server API (PROTOCOL.md section 8):
//! disconnect, block and unblock, token revocation. Each call sends one
//! command through the engine, which brings it to every node
//! (`crate::controls` applies it there).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::api::json_body;
use super::error::HttpError;
use super::handshake::MAX_TOKEN_LIFE_SECS;
use crate::App;
use crate::broker::UserCommand;
use crate::protocol::{self, ErrorCode};

pub(super) fn bad(message: impl Into<String>) -> HttpError {
    HttpError::new(ErrorCode::BadRequest, message)
}

/// The body as a JSON object.
async fn object(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, HttpError> {
    let bytes = json_body(app, headers, body).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("malformed JSON: {e}"))),
    }
}

/// A handler's body, a JSON object ([`json_body`]'s content type and size
/// checks first).
pub(crate) struct JsonObject(pub(crate) Map<String, Value>);

impl FromRequest<Arc<App>> for JsonObject {
    type Rejection = HttpError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, HttpError> {
        let (parts, body) = req.into_parts();
        object(app, &parts.headers, body).await.map(JsonObject)
    }
}

/// A handler's `{user}` path segment, checked as a user id.
pub(crate) struct UserPath(pub(crate) Arc<str>);

impl FromRequestParts<Arc<App>> for UserPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, HttpError> {
        let Path(user) = Path::<String>::from_request_parts(parts, app)
            .await
            .map_err(|e| bad(e.body_text()))?;
        checked_user(&user).map(UserPath)
    }
}

/// The body's `user`, checked.
pub(super) fn user_field(m: &Map<String, Value>) -> Result<Arc<str>, HttpError> {
    match m.get("user") {
        None => Err(bad("`user` is required")),
        Some(Value::String(u)) => checked_user(u),
        Some(_) => Err(bad("`user` must be a string")),
    }
}

fn checked_user(user: &str) -> Result<Arc<str>, HttpError> {
    protocol::check_user(user).map_err(|m| bad(format!("`user`: {m}")))?;
    Ok(Arc::from(user))
}

/// The latest Unix time (seconds) a body may name: year 2286, the last
/// 10-digit one, so that milliseconds passed by mistake (13 digits) are
/// refused. A fixed bound, so the OpenAPI document can state it.
const MAX_UNIX_SECS: u64 = 9_999_999_999;

/// A JSON number that is a whole non-negative number: `5` or `5.0` (JSON
/// Schema's `integer` admits both), exact as a float.
fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(f))
            .map(|f| f as u64)
    })
}

/// An optional positive whole number of seconds from `field`, at most
/// `max`.
fn seconds(m: &Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, HttpError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match whole(v) {
            Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(bad(format!(
                "`{field}` must be a whole number of seconds from 1 to {max}"
            ))),
        },
    }
}

fn now_secs() -> u64 {
    (crate::unix_ms() / 1000).max(0) as u64
}

/// `POST /api/disconnect`: `{"user", "reason"?}`; every connection of the
/// user closes with 4005. `connections` is how many the user had open on
/// every node just before.
pub(crate) async fn disconnect(
    State(app): State<Arc<App>>,
    JsonObject(m): JsonObject,
) -> Result<Response, HttpError> {
    let user = user_field(&m)?;
    match m.get("reason") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => return Err(bad("`reason` must be a string")),
    }
    if let Some(Value::String(reason)) = m.get("reason") {
        // The close frame carries a fixed reason; the caller's is logged.
        tracing::info!(user = %user, reason = %reason.chars().take(200).collect::<String>(), "disconnect requested");
    }
    let connections =
        to_every_connection(&app, &user, UserCommand::Disconnect { user: user.clone() }).await?;
    Ok(Json(json!({"user": &*user, "connections": connections})).into_response())
}

/// Sends `cmd` to every connection of `user` on every node (each applies
/// it in its own task). Returns how many connections the user had open
/// just before, as `GET /api/users/{user}/status` counts them: the routes
/// that act on a user's connections answer with it.
pub(super) async fn to_every_connection(
    app: &App,
    user: &str,
    cmd: UserCommand,
) -> Result<u32, HttpError> {
    let connections = app.presence.user_status(user).await?.connections;
    app.user_controls.command(cmd).await?;
    Ok(connections)
}

/// `PUT /api/users/{user}/block`: an optional body `{"ttl"}` (seconds).
pub(crate) async fn block(
    State(app): State<Arc<App>>,
    UserPath(user): UserPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    // The body is optional: none (or an empty one) blocks until unblocked.
    let empty = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (headers.get(header::CONTENT_TYPE).is_none()
            && headers.get(header::CONTENT_LENGTH).is_none());
    let ttl = if empty {
        None
    } else {
        seconds(
            &object(&app, &headers, body).await?,
            "ttl",
            MAX_TOKEN_LIFE_SECS,
        )?
    };
    let until = ttl.map(|t| crate::unix_ms().max(0) as u64 + t * 1000);
    app.user_controls
        .command(UserCommand::Block {
            user: user.clone(),
            until,
        })
        .await?;
    Ok(Json(json!({"user": &*user, "blocked": true})).into_response())
}

/// `DELETE /api/users/{user}/block`.
pub(crate) async fn unblock(
    State(app): State<Arc<App>>,
    UserPath(user): UserPath,
) -> Result<Response, HttpError> {
    app.user_controls
        .command(UserCommand::Unblock { user: user.clone() })
        .await?;
    Ok(Json(json!({"user": &*user, "blocked": false})).into_response())
}

/// `POST /api/tokens/revoke`: `{"jti", "until"?}`. Without `until` the
/// revocation lasts as long as a token can (`MAX_TOKEN_LIFE_SECS`): the
/// server does not know when the token named expires. An `until` already
/// past is a revocation already over: accepted, and nothing is done (it
/// must not close the connections that used the token).
pub(crate) async fn revoke_jti(
    State(app): State<Arc<App>>,
    JsonObject(m): JsonObject,
) -> Result<Response, HttpError> {
    let jti: Arc<str> = match m.get("jti") {
        None => return Err(bad("`jti` is required")),
        Some(Value::String(j)) if !j.is_empty() && j.chars().count() <= 256 => {
            Arc::from(j.as_str())
        }
        Some(_) => return Err(bad("`jti` must be a string of 1 to 256 characters")),
    };
    let now = now_secs();
    let until = match m.get("until") {
        None | Some(Value::Null) => now + MAX_TOKEN_LIFE_SECS,
        Some(v) => match whole(v) {
            Some(u) if u <= MAX_UNIX_SECS => u,
            _ => {
                return Err(bad(format!(
                    "`until` must be a Unix time in seconds, at most {MAX_UNIX_SECS}"
                )));
            }
        },
    };
    if until <= now {
        return Ok(Json(json!({"jti": &*jti, "until": until})).into_response());
    }
    app.user_controls
        .command(UserCommand::RevokeJti {
            jti: jti.clone(),
            until: until * 1000,
        })
        .await?;
    Ok(Json(json!({"jti": &*jti, "until": until})).into_response())
}

/// `POST /api/users/{user}/tokens/revoke`: `{"issuedBefore"}` (Unix s).
/// The revocation lasts until every token issued before it has expired.
pub(crate) async fn revoke_user_tokens(
    State(app): State<Arc<App>>,
    UserPath(user): UserPath,
    JsonObject(m): JsonObject,
) -> Result<Response, HttpError> {
    let before = match m.get("issuedBefore") {
        None => return Err(bad("`issuedBefore` is required")),
        Some(v) => whole(v).filter(|b| *b <= MAX_UNIX_SECS).ok_or_else(|| {
            bad(format!(
                "`issuedBefore` must be a Unix time in seconds, at most {MAX_UNIX_SECS}"
            ))
        })?,
    };
    app.user_controls
        .command(UserCommand::RevokeIssuedBefore {
            user: user.clone(),
            before,
            until: (before + MAX_TOKEN_LIFE_SECS) * 1000,
        })
        .await?;
    Ok(Json(json!({"user": &*user, "issuedBefore": before})).into_response())
}

/// `GET /api/users/blocked` (an extension, docs/protocol.md): every user
/// blocked now, cluster-wide (the engine's list, not this node's copy), by
/// user id: `{"users":[{"user","until"}]}`, `until` in Unix seconds
/// (rounded up) or `null` for a block without `ttl`.
pub(crate) async fn blocked(State(app): State<Arc<App>>) -> Result<Response, HttpError> {
    let mut users = app.user_controls.blocked().await?;
    users.sort_unstable();
    let users: Vec<Value> = users
        .iter()
        .map(|(user, until)| json!({"user": &**user, "until": until.map(|ms| ms.div_ceil(1000))}))
        .collect();
    Ok(Json(json!({"users": users})).into_response())
}

//! The checks every long-lived connection's handshake makes, WebSocket
//! and SSE alike: shutdown and connection limits, the browser origin, and
//! the caller's credentials.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, header};

use super::error::HttpError;
use super::forwarded::ClientAddr;
use super::limits::{ConnLimits, ConnSlot};
use super::origin;
use crate::App;
use crate::auth::AuthError;
use crate::protocol::ErrorCode;

/// The longest a token can keep a connection open (its `exp` may be any
/// u64; beyond this it counts as "never").
pub(crate) const MAX_TOKEN_LIFE_SECS: u64 = 100 * 365 * 24 * 3600;

/// The first check of every long-lived connection (WebSocket, SSE): not
/// shutting down (503), then the handshake rate and the connection limits
/// (503/429); the returned slot holds the connection's place.
pub(crate) fn admit(app: &Arc<App>, remote: ClientAddr) -> Result<ConnSlot, HttpError> {
    place(app, remote, "handshake", ConnLimits::admit)
}

/// A long poll's place under the connection caps: it holds a connection
/// open like WebSocket and SSE do, so it counts as one while it waits (the
/// handshake rate does not apply: a poller asks again after every answer).
pub(crate) fn hold_poll(app: &Arc<App>, remote: ClientAddr) -> Result<ConnSlot, HttpError> {
    place(app, remote, "long poll", ConnLimits::hold)
}

/// Not while shutting down (503), then `take` a place from the limits.
fn place(
    app: &Arc<App>,
    remote: ClientAddr,
    what: &'static str,
    take: fn(&Arc<ConnLimits>, IpAddr) -> Result<ConnSlot, HttpError>,
) -> Result<ConnSlot, HttpError> {
    if app.shutdown.is_cancelled() {
        return Err(HttpError::new(ErrorCode::Unavailable, "server shutting down").retry_after(1));
    }
    take(&app.limits, remote.ip).inspect_err(|e| {
        tracing::info!(remote = %remote, reason = %e.message, "{what} refused: limit");
    })
}

/// A browser origin outside `allowed_origins` is refused (403).
pub(crate) fn check_origin(
    app: &App,
    headers: &HeaderMap,
    remote: ClientAddr,
) -> Result<(), HttpError> {
    if let Some(o) = headers.get(header::ORIGIN) {
        let o = o.to_str().unwrap_or("null");
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !origin::allowed(o, host, &app.live().config.allowed_origins) {
            tracing::info!(origin = o, remote = %remote, "handshake refused: origin not allowed");
            return Err(HttpError::new(
                ErrorCode::Forbidden,
                format!("origin {o} is not allowed (see allowed_origins)"),
            ));
        }
    }
    Ok(())
}

/// Who is connecting, from a token or anonymously.
pub(crate) struct Caller {
    /// User id (`sub`, or `anon-<conn id>`).
    pub user: String,
    /// Display name.
    pub display: String,
    /// What the token allows.
    pub grants: crate::auth::Grants,
    /// When the token expires.
    pub expires: Option<tokio::time::Instant>,
    /// No token: a user id of its own for this one connection.
    pub anonymous: bool,
    /// The token's `subs`: rooms joined at connect.
    pub subs: Vec<String>,
}

/// Checks the credentials of a handshake (WebSocket or SSE): the
/// `Authorization: Bearer` header first, then `?token=`; 401 when refused.
/// With `[hooks] connect = true`, a handshake without a token this server
/// verifies (none sent, or no token keys configured) asks the connect hook
/// instead (`super::connect_hook`).
pub(crate) async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    remote: ClientAddr,
    conn_id: &str,
    name: Option<String>,
    trace: crate::trace::TraceId,
) -> Result<Caller, HttpError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let token = bearer.or_else(|| query.get("token").map(String::as_str));
    // The keys in force when the handshake began, for every try.
    let auth = app.live().auth.clone();
    if let Some(hooks) = app.hooks().filter(|h| h.settings().connect)
        && (token.is_none() || !auth.takes_tokens())
    {
        let hook = super::connect_hook::Handshake {
            headers,
            query,
            remote,
            conn_id,
            trace,
        };
        let id = hook.ask(&hooks).await?;
        return admitted(app, id, remote);
    }
    let mut identity = auth.authenticate(token);
    // A `kid` the JWKS cache does not hold: the provider may have rotated
    // its keys. Fetch (rate-limited, bounded wait) and try once more.
    if matches!(identity, Err(AuthError::UnknownKey(_)))
        && let Some(jwks) = &auth.jwks
    {
        jwks.refetch().await;
        identity = auth.authenticate(token);
    }
    let identity = identity.map_err(|e| {
        tracing::info!(remote = %remote, reason = %e, "handshake refused: bad credentials");
        HttpError::new(ErrorCode::Unauthorized, e.to_string())
    })?;
    Ok(match identity {
        Some(id) => admitted(app, id, remote)?,
        None => {
            if auth.loopback_trust && !super::origin::host_is_loopback(headers) {
                tracing::info!(remote = %remote, "handshake refused: anonymous needs a loopback Host");
                return Err(HttpError::new(
                    ErrorCode::Forbidden,
                    "anonymous connections are trusted on loopback only when the Host is a loopback name (localhost, 127.0.0.1, [::1]); configure tokens or anonymous = true",
                ));
            }
            let user = format!("anon-{conn_id}");
            let display = name.unwrap_or_else(|| user.clone());
            Caller {
                user,
                display,
                grants: crate::auth::Grants::default(),
                expires: None,
                anonymous: true,
                subs: Vec::new(),
            }
        }
    })
}

/// The caller an identity (a token's, or the connect hook's) makes, if
/// no block or revocation stands in its way.
fn admitted(app: &App, id: crate::auth::Identity, remote: ClientAddr) -> Result<Caller, HttpError> {
    // A node-local lookup: the controls are kept current by the engine,
    // not asked for on every handshake.
    app.controls
        .admits(&id.user, &id.token)
        .map_err(|refusal| {
            tracing::info!(remote = %remote, user = %id.user, reason = refusal.message(), "handshake refused");
            refusal.into_http()
        })?;
    // Capped, so that a far `exp` (up to u64::MAX) cannot overflow the
    // clock; a century is "never" for a connection.
    let remaining = id
        .exp
        .saturating_sub(crate::unix_ms() as u64 / 1000)
        .min(MAX_TOKEN_LIFE_SECS);
    let display = id.name.clone().unwrap_or_else(|| id.user.clone());
    Ok(Caller {
        user: id.user,
        display,
        grants: crate::auth::Grants {
            admin: id.admin,
            rooms: id.rooms,
            token: id.token,
        },
        expires: Some(tokio::time::Instant::now() + std::time::Duration::from_secs(remaining)),
        anonymous: false,
        subs: id.subs,
    })
}

/// `max_connections_per_user` (PROTOCOL.md section 8): the user's open
/// WebSocket connections over every node, as the engine's presence counts
/// them (a dead node's are dropped when its presence lease runs out), must
/// stay under the cap: 429 `too_many_connections` otherwise. One engine
/// read per handshake, and only with a cap; handshakes racing each other
/// may each see room for one more.
pub(crate) async fn check_user_cap(app: &App, caller: &Caller) -> Result<(), HttpError> {
    let cap = app.live().config.max_connections_per_user;
    if cap == 0 || caller.anonymous {
        return Ok(());
    }
    let open = app.presence.user_status(&caller.user).await?.connections;
    if open >= cap {
        tracing::info!(user = %caller.user, open, "handshake refused: max_connections_per_user");
        return Err(HttpError::new(
            ErrorCode::TooManyConnections,
            format!("this user has {open} connections open (max_connections_per_user = {cap})"),
        ));
    }
    Ok(())
}

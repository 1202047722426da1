//! The connect hook (PROTOCOL.md section 9): a handshake without a JWT
//! asks the application's backend, which sees the cookie and headers and
//! answers with a user and claims, or a refusal. The answer is read into
//! the claims a JWT carries (`auth::identity`), so that its `rooms`,
//! `subs`, `admin` and `expiresAt` grant exactly what a token's would.

use std::collections::{BTreeMap, HashMap};

use axum::http::{HeaderMap, header};

use super::error::HttpError;
use super::handshake::MAX_TOKEN_LIFE_SECS;
use crate::auth::{Claims, Identity};
use crate::hooks::{ConnectAnswer, ConnectBody, Hook, Hooks, bad_answer};
use crate::protocol::ErrorCode;

/// The headers the backend sees, as the body names them.
const SHOWN: [(&str, header::HeaderName); 4] = [
    ("cookie", header::COOKIE),
    ("authorization", header::AUTHORIZATION),
    ("origin", header::ORIGIN),
    ("user-agent", header::USER_AGENT),
];

/// What the backend is shown of a handshake.
pub(crate) struct Handshake<'a> {
    pub headers: &'a HeaderMap,
    pub query: &'a HashMap<String, String>,
    pub remote: crate::http::forwarded::ClientAddr,
    pub conn_id: &'a str,
    pub trace: crate::trace::TraceId,
}

impl Handshake<'_> {
    /// The backend's identity for this handshake; its refusal as 401/403
    /// with its message; 503 when it could not be asked or its answer
    /// cannot be read (never a connection on failure).
    pub(crate) async fn ask(&self, hooks: &Hooks) -> Result<Identity, HttpError> {
        let headers: BTreeMap<&'static str, &str> = SHOWN
            .iter()
            .filter_map(|(key, name)| {
                let value = self.headers.get(name)?.to_str().ok()?;
                Some((*key, value))
            })
            .collect();
        let body = ConnectBody {
            remote: self.remote.ip.to_string(),
            headers,
            query: self.query,
        };
        let caller = crate::hooks::Caller {
            conn: self.conn_id,
            user: None,
        };
        let unavailable = |e: crate::hooks::HookError| {
            HttpError::new(ErrorCode::Unavailable, e.client_message(Hook::Connect)).retry_after(1)
        };
        let answer: ConnectAnswer = hooks
            .call(Hook::Connect, caller, &body, self.trace)
            .await
            .map_err(unavailable)?;
        if let Some(e) = answer.error {
            let code = match e.code.as_str() {
                "unauthorized" => ErrorCode::Unauthorized,
                "forbidden" => ErrorCode::Forbidden,
                other => {
                    return Err(unavailable(bad_answer(
                        Hook::Connect,
                        format!("error code {other:?}: must be unauthorized or forbidden"),
                    )));
                }
            };
            tracing::info!(remote = %self.remote, reason = %e.message, "handshake refused by the connect hook");
            let message: String = e.message.chars().take(1024).collect();
            return Err(HttpError::new(code, message));
        }
        let Some(user) = answer.user else {
            return Err(unavailable(bad_answer(
                Hook::Connect,
                "neither `user` nor `error`",
            )));
        };
        let now = (crate::unix_ms() / 1000).max(0) as u64;
        let exp = match answer.expires_at {
            // As a JWT whose `exp` has passed.
            Some(t) if t <= now => {
                return Err(HttpError::new(
                    ErrorCode::Unauthorized,
                    "the connect hook's expiresAt has passed",
                ));
            }
            Some(t) => t,
            None => now + MAX_TOKEN_LIFE_SECS,
        };
        let claims = Claims {
            sub: user,
            exp,
            nbf: None,
            name: answer.name,
            rooms: answer.rooms,
            admin: answer.admin,
            jti: None,
            iat: None,
            subs: answer.subs,
        };
        crate::auth::identity(claims)
            .map_err(|e| unavailable(bad_answer(Hook::Connect, e.to_string())))
    }
}

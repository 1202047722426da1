//! HTTP errors as PROTOCOL.md section 6 writes them:
//! `{"error":{"code":"…","message":"…"}}` with the matching status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::protocol::ErrorCode;

/// An HTTP error reply.
#[derive(Debug)]
pub(crate) struct HttpError {
    /// Status line.
    pub status: StatusCode,
    /// `error.code`.
    pub code: ErrorCode,
    /// `error.message`.
    pub message: String,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
    /// `error.msgId`: the message of a publish or send that timed out.
    pub msg_id: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: ErrorCode,
    message: &'a str,
    #[serde(rename = "msgId", skip_serializing_if = "Option::is_none")]
    msg_id: Option<&'a str>,
}

impl HttpError {
    /// An error with the status that goes with `code`.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = match code {
            ErrorCode::BadRequest | ErrorCode::UnknownType => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::NotJoined | ErrorCode::Rejected => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited | ErrorCode::TooManyRooms | ErrorCode::TooManyConnections => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            msg_id: None,
        }
    }

    /// Names the message a failed publish or send was about.
    pub(crate) fn with_msg_id(mut self, msg_id: impl Into<String>) -> Self {
        self.msg_id = Some(msg_id.into());
        self
    }

    /// Overrides the status (e.g. 426 for a wrong WebSocket version).
    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds `Retry-After`.
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(Body {
                error: Inner {
                    code: self.code,
                    message: &self.message,
                    msg_id: self.msg_id.as_deref(),
                },
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_is_a_504_naming_the_msg_id() {
        let resp = HttpError::new(ErrorCode::Timeout, "redis: timed out")
            .with_msg_id("m-1")
            .into_response();
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        let body = axum::body::to_bytes(resp.into_body(), 1024)
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"error":{"code":"timeout","message":"redis: timed out","msgId":"m-1"}})
        );
        let resp = HttpError::new(ErrorCode::Unavailable, "down").into_response();
        let body = axum::body::to_bytes(resp.into_body(), 1024)
            .await
            .unwrap_or_default();
        assert!(!String::from_utf8_lossy(&body).contains("msgId"));
    }
}

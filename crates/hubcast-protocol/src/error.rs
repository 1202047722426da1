//! `error.code` values (PROTOCOL.md section 3).

use serde::Serialize;

/// `error.code` values (PROTOCOL.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, missing or invalid field, binary frame.
    BadRequest,
    /// A `type` the server does not know.
    UnknownType,
    /// No or bad credentials.
    Unauthorized,
    /// Credentials do not allow this.
    Forbidden,
    /// `leave` of a room the connection has not joined.
    NotJoined,
    /// More rooms than `max_rooms_per_conn`.
    TooManyRooms,
    /// HTTP only (429): the user has `max_connections_per_user` open.
    TooManyConnections,
    /// Too many frames.
    RateLimited,
    /// A body or frame over the size limit.
    TooLarge,
    /// The broker cannot serve the request now; for a publish or send,
    /// the message was not published.
    Unavailable,
    /// A publish or send whose outcome is unknown: the engine did not
    /// answer in time. The error carries the message's `msgId`, and a retry
    /// with it is acked once (as a duplicate if the first attempt went
    /// through). HTTP 504.
    Timeout,
    /// A bug; details are in the server log.
    Internal,
    /// HTTP only: no such route or resource.
    NotFound,
    /// Version 1.1: a backend hook refused (join, publish), with its message.
    Rejected,
}

impl ErrorCode {
    /// The wire name of the code.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Rejected => "rejected",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for c in [
            ErrorCode::BadRequest,
            ErrorCode::UnknownType,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotJoined,
            ErrorCode::TooManyRooms,
            ErrorCode::TooManyConnections,
            ErrorCode::RateLimited,
            ErrorCode::TooLarge,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
            ErrorCode::Internal,
            ErrorCode::NotFound,
            ErrorCode::Rejected,
        ] {
            let json = serde_json::to_string(&c).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }
}

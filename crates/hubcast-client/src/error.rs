//! What can go wrong, for every call of the client.

use hubcast_protocol::ErrorCode;

/// What can go wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The URL cannot be used.
    #[error("bad URL: {0}")]
    Url(String),
    /// The WebSocket handshake failed (HTTP error, refused connection).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// Reading or writing the socket failed.
    #[error("connection error: {0}")]
    Io(String),
    /// No reply in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The connection closed.
    #[error("connection closed ({code}): {reason}")]
    Closed {
        /// The close code (1006: the socket went away).
        code: u16,
        /// Why.
        reason: String,
    },
    /// The server answered with an `error` frame.
    #[error("{code}: {message}")]
    Server {
        /// Its `code` (`forbidden`, `bad_request`, ...).
        code: String,
        /// Its `message`.
        message: String,
    },
    /// Not connected now (for requests that are not queued).
    #[error("not connected")]
    Disconnected,
    /// The bounded queue of publishes waiting for a connection is full.
    #[error("{0} publishes already wait for a connection")]
    QueueFull(usize),
    /// [`Client::close`](crate::Client::close) was called, or the server
    /// refused for good (1008).
    #[error("the client is closed")]
    ClientClosed,
}

impl Error {
    /// Whether the server refused for a passing reason (`unavailable`,
    /// `timeout`, `rate_limited`: it could not serve the request now), so
    /// the same request may be sent again later. The client itself does
    /// so for a rejoin and a publish; a caller whose first `join` was
    /// refused so may retry it with backoff ([`crate::backoff`]).
    pub fn is_passing(&self) -> bool {
        matches!(self, Error::Server { code, .. }
            if code == ErrorCode::Unavailable.as_str()
                || code == ErrorCode::RateLimited.as_str()
                || code == ErrorCode::Timeout.as_str())
    }
}

//! Settings: of the client ([`Options`]) and of one publish ([`Publish`]).

use std::sync::Arc;
use std::time::Duration;

/// A token callback, asked on every connect.
pub type TokenFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Settings.
#[derive(Clone)]
pub struct Options {
    /// A JWT (sent as `Authorization: Bearer`).
    pub token: Option<String>,
    /// Asked for a token on every connect (wins over `token`).
    pub token_fn: Option<TokenFn>,
    /// Display name of an anonymous connection (`?name=`).
    pub name: Option<String>,
    /// First backoff cap; doubles per failed attempt up to `max_delay`.
    pub min_delay: Duration,
    /// Largest backoff cap.
    pub max_delay: Duration,
    /// A connection up this long resets the backoff.
    pub stable_after: Duration,
    /// TCP connect + handshake + `welcome`.
    pub connect_timeout: Duration,
    /// Application-level ping period.
    pub ping_interval: Duration,
    /// No frame at all this long after a ping: the connection is dead.
    pub ping_timeout: Duration,
    /// Default publish/send timeout.
    pub publish_timeout: Duration,
    /// Timeout of other requests.
    pub request_timeout: Duration,
    /// Base delay before retrying an `unavailable`/`timeout`/`rate_limited`
    /// publish (with the same msgId).
    pub retry_delay: Duration,
    /// How long an out-of-order message waits for the gap before it.
    pub gap_timeout: Duration,
    /// Publishes that may wait while disconnected.
    pub max_queue: usize,
    /// Message ids remembered per room for deduplication.
    pub dedupe_window: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: None,
            token_fn: None,
            name: None,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            stable_after: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(15),
            retry_delay: Duration::from_secs(1),
            gap_timeout: Duration::from_secs(3),
            max_queue: 100,
            dedupe_window: 2000,
        }
    }
}

impl Options {
    /// Defaults, anonymous with a display name.
    pub fn named(name: &str) -> Self {
        Self {
            name: Some(name.to_string()),
            ..Self::default()
        }
    }

    /// Defaults, with a token.
    pub fn with_token(token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_fn", &self.token_fn.is_some())
            .field("name", &self.name)
            .field("max_queue", &self.max_queue)
            .finish_non_exhaustive()
    }
}

/// Options of one publish.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// Your own id (retries with it are not delivered twice).
    pub msg_id: Option<String>,
    /// Deliver to this connection too.
    pub echo: bool,
    /// Instead of [`Options::publish_timeout`].
    pub timeout: Option<Duration>,
}

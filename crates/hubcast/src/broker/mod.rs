//! The broker: where offsets, history, idempotency and presence live.
//!
//! [`Broker`] is the seam between connection handling (the same on every
//! node) and the engine that makes rooms consistent: the in-memory engine for
//! one node ([`memory::MemoryBroker`]), the Redis and NATS engines for many. The
//! trait carries no transport types: a publication is an offset, an epoch and
//! the already encoded envelope bytes.
//!
//! Contract every engine keeps:
//! - `publish` assigns the room's next offset atomically, once per `msgId`
//!   when the publisher supplied one (`idempotent`), stores the message in the
//!   room's bounded history, and hands it to the node's [`BrokerHandler`] on
//!   every node subscribed to the room.
//! - The handler sees each room's publications in offset order, with no gap
//!   and no duplicate, as long as the node is subscribed ([`Broker::subscribe`]
//!   completes before the node reads the room's position).
//! - Presence changes ([`PresenceManager`]) are reported to the same
//!   handler as events for the room.
//!
//! `tests/it/broker_contract/` runs one set of cases for this contract
//! against every engine; a new engine implements both traits and adds its
//! name there.

pub mod controls;
pub(crate) mod lease;
pub(crate) mod list_reads;
pub mod memory;
pub mod nats;
pub mod redis;
pub(crate) mod timed;
pub mod webhooks;

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use bytes::Bytes;

use crate::protocol::{EnvelopeParts, Member, PresenceAction, Status};
pub use controls::{ControlSink, UserCommand, UserControls};
pub use webhooks::{EventType, LoggedEvent, WebhookEvent, WebhookLog};

/// A connection's node-local key: cheap to compare on the fan-out path.
pub type ConnKey = u64;

/// A message to publish into a room.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Target room.
    pub room: Arc<str>,
    /// The message id: the publisher's, or a fresh UUIDv7.
    pub msg_id: String,
    /// Whether `msg_id` came from the publisher and must be deduplicated.
    /// An engine whose `publish` can time out also remembers the others
    /// (without checking them): the client is told to retry with the
    /// server's msgId too.
    pub idempotent: bool,
    /// Envelope fields known before the offset is assigned, pre-encoded.
    pub parts: EnvelopeParts,
    /// A local connection not to deliver to (the publisher, when `echo` is
    /// false).
    pub skip: Option<ConnKey>,
    /// Some webhook wants this room's `message.published`: the engine
    /// records it in its webhook log in the same step as the message
    /// (never for a duplicate), so an acknowledged publish has its event.
    pub webhook: bool,
}

/// What `publish` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResult {
    /// The message's offset (the original one for a duplicate).
    pub offset: u64,
    /// The room's epoch.
    pub epoch: Arc<str>,
    /// The `msgId` was already published in this room within the window.
    pub duplicate: bool,
}

/// A message as stored and delivered.
#[derive(Debug)]
pub struct Publication {
    /// Position in the room's stream.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: Arc<str>,
    /// A local connection that must not receive it (echo off).
    pub skip: Option<ConnKey>,
    /// The encoded `message` envelope, shared by every recipient.
    pub envelope: Bytes,
}

/// A room's current position plus, when asked, what a client missed.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Latest offset in the room (0 when empty).
    pub top: u64,
    /// The room's epoch.
    pub epoch: Arc<str>,
    /// Whether every message after `since` could be returned.
    pub recovered: bool,
    /// Messages after `since`, oldest first (empty when not recovered).
    pub publications: Vec<Arc<Publication>>,
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The room's epoch.
    pub epoch: Arc<str>,
    /// Messages, oldest first.
    pub publications: Vec<Arc<Publication>>,
    /// False when messages older than the first returned one (and after
    /// `since`) were trimmed away.
    pub complete: bool,
}

impl HistoryPage {
    /// The messages' envelopes as raw JSON, for the replies that embed them
    /// (the `history` frame and `GET /api/rooms/{room}/history`).
    pub(crate) fn raw_messages(&self) -> Vec<&serde_json::value::RawValue> {
        self.publications
            .iter()
            .map(|p| crate::protocol::as_raw(&p.envelope))
            .collect()
    }
}

/// Who a connection is, for presence and status.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Globally unique connection id.
    pub conn_id: Arc<str>,
    /// User id.
    pub user: Arc<str>,
    /// Display name.
    pub name: Arc<str>,
    /// The user exists only for this connection (anonymous): an engine need
    /// not remember its offline status once the connection is gone.
    pub ephemeral: bool,
}

/// A room's members, as far as a reply may list them.
#[derive(Debug, Clone, Default)]
pub struct PresencePage {
    /// The first members by user id (at most the limit asked for).
    pub members: Vec<Member>,
    /// Users present in all.
    pub total: usize,
}

/// A presence change in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// join, leave or status.
    pub action: PresenceAction,
    /// The user concerned.
    pub user: Arc<str>,
    /// Their display name.
    pub name: Arc<str>,
    /// Their status after the change.
    pub status: Status,
}

/// A user's status across all their connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStatus {
    /// online, away, busy, or offline when no connection is open.
    pub status: Status,
    /// Open connections.
    pub connections: u32,
    /// Unix ms of the last disconnect, when offline.
    pub last_seen: Option<i64>,
}

/// Why an engine cannot serve, in the words a client is told: a stable
/// sentence per cause, never the engine's own error text, which may name
/// internal addresses or configuration and changes with the engine's
/// version. The raw error stays in [`BrokerError`] for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// Unreachable, or failing for a reason a client cannot act on.
    Down,
    /// The store refuses writes because it is out of memory (Redis `OOM`
    /// under `maxmemory-policy noeviction`).
    OutOfMemory,
    /// The store refuses writes for another reason: a read-only replica
    /// (`READONLY`), or persistence failing (`MISCONF`).
    ReadOnly,
}

impl Unavailability {
    /// What a client is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::Down => "the message store is unavailable",
            Self::OutOfMemory => "the message store is out of memory",
            Self::ReadOnly => "the message store refuses writes",
        }
    }

    /// A short name for `/readyz` and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Down => "unreachable",
            Self::OutOfMemory => "out_of_memory",
            Self::ReadOnly => "read_only",
        }
    }
}

/// What a client is told of a `publish` whose outcome is unknown
/// ([`BrokerError::Timeout`]).
pub const TIMEOUT_MESSAGE: &str = "the message store did not answer in time; \
the message may have been published: retry with its msgId";

/// A broker failure. Its `Display` is the raw error, for the log;
/// [`BrokerError::client_message`] is what a client may read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The engine cannot serve now (e.g. Redis down): retry later. From
    /// `publish`, a promise that the message was not published.
    #[error("broker unavailable ({}): {detail}", why.reason())]
    Unavailable {
        /// Why, as a client is told.
        why: Unavailability,
        /// The engine's own error, for the log.
        detail: String,
    },
    /// `publish` only: the command may have reached the engine, but its
    /// answer did not come (a timeout, a connection lost after sending), so
    /// whether the message was published is unknown. A retry with `msg_id`
    /// is safe: the engine remembers every published msgId for the
    /// idempotency window, so the message is stored once.
    #[error("broker timed out: {detail}")]
    Timeout {
        /// The message's id, the one a retry must carry.
        msg_id: String,
        /// What went wrong, for the log.
        detail: String,
    },
    /// A bug or a broken invariant.
    #[error("broker error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// The engine is down or unreachable; `detail` is for the log.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable {
            why: Unavailability::Down,
            detail: detail.into(),
        }
    }

    /// What a client (WebSocket error frame, HTTP error body) is told: a
    /// stable sentence per kind of failure, never the engine's error text.
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Unavailable { why, .. } => why.message(),
            Self::Timeout { .. } => TIMEOUT_MESSAGE,
            Self::Internal(_) => "internal error",
        }
    }
}

/// Where an engine delivers what happens in rooms this node subscribed to.
/// Called without awaiting; implementations must not block.
pub trait BrokerHandler: Send + Sync + 'static {
    /// A new message, in offset order per room.
    fn on_publication(&self, room: &str, publication: &Arc<Publication>);
    /// A presence change.
    fn on_presence(&self, room: &str, event: &PresenceEvent);
    /// The engine lost messages of this room it cannot fetch again (a gap it
    /// could not fill): every local subscriber must be told, since none of
    /// them may silently miss a message.
    fn on_reset(&self, room: &str);
}

/// The message stream of an engine: offsets, history, recovery and
/// delivery to this node. See the module documentation for its contract.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Short engine name for logs (`memory`, `redis`).
    fn name(&self) -> &'static str;

    /// Sets where publications and presence events go (the engine's
    /// [`PresenceManager`] side reports to the same handler). Called once,
    /// before any other method.
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>);

    /// Publishes a message (see the contract above). Fails with
    /// [`BrokerError::Unavailable`] only when the message was certainly
    /// not published, with [`BrokerError::Timeout`] when that is unknown.
    async fn publish(&self, req: PublishRequest) -> Result<PublishResult, BrokerError>;

    /// Starts delivering the room's publications to this node's handler.
    /// Called when the node's first member joins the room. The name is the
    /// hub's own string: an engine that keeps it shares it (a node holds
    /// one subscription per connection, for its personal room).
    async fn subscribe(&self, room: &Arc<str>) -> Result<(), BrokerError>;

    /// Stops delivering the room to this node. Called after its last member
    /// left.
    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError>;

    /// The room's position and, with `since`, the messages after it when the
    /// epoch matches (`epoch: None` means "the current one") and history still
    /// holds all of them.
    async fn recover(
        &self,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<Recovery, BrokerError>;

    /// Up to `limit` messages after `since`, oldest first; without `since`
    /// the latest `limit` messages.
    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError>;

    /// Whether the engine can serve requests now, writes included (a store
    /// that answers reads but refuses writes cannot take a publish), and
    /// why not.
    async fn ready(&self) -> Result<(), Unavailability>;

    /// Stops the engine's background tasks.
    async fn close(&self);
}

/// Who is where: room presence and user status. Kept apart from [`Broker`]
/// (as centrifuge keeps its `PresenceManager`) because it is a different
/// concern with its own storage; an engine usually implements both, and
/// reports presence changes to the handler given to [`Broker::set_handler`].
#[async_trait]
pub trait PresenceManager: Send + Sync + 'static {
    /// Adds a connection to a room's presence; reports a `join` event when it
    /// is the user's first connection there.
    async fn join(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError>;

    /// Removes a connection from a room's presence; reports a `leave` event
    /// when it was the user's last connection there.
    async fn leave(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError>;

    /// The room's members, one entry per user: the first `limit` by user
    /// id, and how many there are in all.
    async fn list(&self, room: &str, limit: usize) -> Result<PresencePage, BrokerError>;

    /// Registers an open connection for its user's status.
    async fn connect(&self, client: &ClientInfo) -> Result<(), BrokerError>;

    /// Unregisters a closed connection.
    async fn disconnect(&self, client: &ClientInfo) -> Result<(), BrokerError>;

    /// Sets a user's status and reports a `status` event in each room the
    /// user is present in.
    async fn set_status(&self, user: &str, status: Status) -> Result<(), BrokerError>;

    /// A user's status.
    async fn user_status(&self, user: &str) -> Result<UserStatus, BrokerError>;
}

/// One engine object serving both sides; what the server is started with.
/// The server then holds each side as its own `Arc<dyn ...>`.
pub trait Engine: Broker + PresenceManager + UserControls + WebhookLog {}

impl<T: Broker + PresenceManager + UserControls + WebhookLog> Engine for T {}

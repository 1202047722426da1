//! The NATS JetStream engine: many hubcast nodes sharing one NATS (server or
//! cluster) act as one server.
//!
//! Per prefix (names in `keys`):
//!
//! | what | NATS object | holds |
//! |---|---|---|
//! | history | stream `<P>_ROOMS`, subject `<p>.room.<room>` | one message per publication: payload the envelope's tail, headers `Hubcast-Offset`, `Hubcast-Epoch`, `Hubcast-Node`, `Hubcast-Key`, `Nats-Msg-Id` |
//! | live delivery | core subject `<p>.live.<room>` | stored publications (with their stream sequence) and presence events, announced after the fact |
//! | epochs | bucket `<P>_state`, key `e.<room>` | the epoch the room's next run of offsets starts with, and whether a message used it |
//! | presence | bucket `<P>_state`, key `p.<room>` | connection id → user, name, node |
//! | user status | bucket `<P>_state`, key `u.<user>` | status, name, connections (id → node), rooms, last seen |
//! | controls | bucket `<P>_state`, keys `c.*`; core subject `<p>.controls` | kept blocks and revocations; every command |
//! | leases | bucket `<P>_nodes`, key `n.<node>` | alive while renewed (the bucket's max age is the lease) |
//! | webhooks | stream `<P>_WEBHOOKS`, bucket `<P>_webhooks` | events, each webhook's cursor and lease, pending delayed events (see `webhooks`) |
//!
//! Offsets (`stream`): the room's latest message carries its offset and
//! epoch; a publish reads it and writes the next one with
//! `Nats-Expected-Last-Subject-Sequence`, so of two nodes racing for one
//! offset JetStream stores one and the other reads again and retries. The
//! design, epochs included, is in docs/design.md.
//!
//! Delivery (`live`): a publisher announces each stored message on the
//! room's core subject; a node subscribed to the room delivers in offset
//! order and reads anything it missed (an offset jump, a reconnect) from the
//! stream before anything newer, or reports the room reset.
//!
//! Layout: `keys` (names and the token encoding), `kv` (buckets and
//! compare-and-set), `stream` (publish,
//! reading history, epochs), `live` (the node's room subscriptions and
//! in-order delivery), `presence` (presence, user status, leases and the
//! reaper), `controls` (user controls), `webhooks` (the webhook log). This file holds the shared state,
//! connecting, and implements [`Broker`].

mod controls;
mod epoch;
mod keys;
mod kv;
mod live;
mod nodes;
mod presence;
mod pull;
mod room_writes;
mod stream;
mod tops;
mod webhooks;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{
    Broker, BrokerError, BrokerHandler, HistoryPage, PublishRequest, PublishResult, Recovery,
    Unavailability,
};
use crate::rules::Rules;

use self::keys::Names;
use self::live::Live;

/// Timeout of one request to NATS (a JetStream API call, a publish's ack).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How an engine reaches NATS and what it keeps there.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server URLs (`nats://host:port`, `tls://…`), comma-separated.
    pub url: String,
    /// Prefix of every subject, stream and bucket.
    pub prefix: String,
    /// This node's name (presence entries and leases carry it).
    pub node: String,
    /// What each room keeps.
    pub rules: Arc<Rules>,
    /// How long a dead node's presence lingers.
    pub lease: Duration,
    /// Keep the stream of history in memory instead of on disk (lost when
    /// NATS restarts: the rooms then start new epochs).
    pub memory_storage: bool,
    /// User name and password.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Token authentication.
    pub token: Option<String>,
    /// A `.creds` file (JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// An nkey seed (`SU…`).
    pub nkey: Option<String>,
    /// CA certificates (PEM) to trust for TLS; setting it requires TLS.
    pub tls_ca_file: Option<PathBuf>,
}

/// State shared by the engine and its tasks.
struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    node: Arc<str>,
    rules: Arc<Rules>,
    /// Room epochs, presence, user status, kept controls.
    state: jetstream::kv::Store,
    /// Node leases.
    nodes: jetstream::kv::Store,
    handler: OnceLock<Weak<dyn BrokerHandler>>,
    /// How long an offline user's status is remembered.
    ttl: Duration,
    lease: Duration,
    /// The stream's storage (`nats_storage`).
    storage: jetstream::stream::StorageType,
    /// The stream exists as this engine configured it (cleared when a
    /// publish finds it gone, so the next creates it again).
    stream_ok: AtomicBool,
    /// One turn at a time per room for this node's publishes, taken in the
    /// order they come (tokio's mutex is fair). Concurrent publishes to a
    /// room race for its next offset and the loser retries after the
    /// winner, so without turns one connection's pipelined publishes could
    /// get offsets out of their order. An entry lives while a publish to
    /// its room holds or waits for it.
    turns: std::sync::Mutex<std::collections::HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    /// Where this node's last publish left each room (`tops`).
    tops: tops::Tops,
    /// This node's presence changes waiting per room (`room_writes`).
    room_writes: room_writes::RoomWrites,
    /// The engine's tasks (the room writers among them), waited for by
    /// `close`.
    tasks: TaskTracker,
    /// What this node registered (`nodes`: written again after its lease
    /// ran out).
    registry: std::sync::Mutex<crate::broker::lease::Registry>,
    /// The revision of this node's last lease write (0: none yet).
    lease_revision: std::sync::atomic::AtomicU64,
    /// The webhook log, once webhooks are on (`webhooks`): without, no
    /// transition costs anything more.
    webhooks: OnceLock<webhooks::Log>,
}

/// The NATS JetStream engine.
pub struct NatsBroker {
    shared: Arc<Shared>,
    live: Live,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// A NATS failure: the engine cannot serve now.
fn down(what: impl std::fmt::Display) -> BrokerError {
    BrokerError::unavailable(format!("nats: {what}"))
}

impl Shared {
    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler.get().and_then(Weak::upgrade)
    }

    /// Writes out what the client buffered, within [`REQUEST_TIMEOUT`]:
    /// the client's own flush has no deadline, and one that never returns
    /// would hold its caller (a subscribe, `close`) for good.
    async fn flush(&self, what: &str) -> Result<(), BrokerError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(down(format!("{what}: {e}"))),
            Err(_) => Err(down(format!("{what}: flush timed out"))),
        }
    }

    /// Fails fast while the connection is down: the client would queue the
    /// request and only time out.
    fn connected(&self) -> Result<(), BrokerError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            other => Err(down(format!("not connected ({other})"))),
        }
    }
}

impl NatsBroker {
    /// Connects, creates the stream and buckets when missing (or updates
    /// their limits), and starts the lease and reaper tasks.
    pub async fn connect(settings: NatsSettings) -> Result<Arc<Self>, BrokerError> {
        let (reconnects_tx, reconnects_rx) = tokio::sync::watch::channel(0u64);
        let options = options(&settings).await?.event_callback(move |event| {
            let tx = reconnects_tx.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("nats connected");
                        tx.send_modify(|n| *n += 1);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("nats connection lost; reconnecting");
                    }
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        });
        let urls: Vec<&str> = settings
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let addrs: Vec<async_nats::ServerAddr> = urls
            .iter()
            .map(|u| u.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| down(format!("bad url: {e}")))?;
        let client = options
            .connect(addrs)
            .await
            .map_err(|e| down(format!("connect: {e}")))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        let names = Names::new(&settings.prefix);
        let largest = settings.rules.largest();
        let ttl = settings.rules.global().history.ttl;
        let state = retry(|| kv::bucket(&js, names.state_bucket(), Duration::ZERO)).await?;
        let nodes = retry(|| kv::bucket(&js, names.nodes_bucket(), settings.lease)).await?;
        let shared = Arc::new(Shared {
            client,
            js,
            names,
            node: Arc::from(settings.node.as_str()),
            rules: settings.rules.clone(),
            state,
            nodes,
            handler: OnceLock::new(),
            ttl,
            lease: settings.lease,
            storage: if settings.memory_storage {
                jetstream::stream::StorageType::Memory
            } else {
                jetstream::stream::StorageType::File
            },
            stream_ok: AtomicBool::new(false),
            turns: std::sync::Mutex::default(),
            tops: tops::Tops::new(reconnects_rx.clone()),
            room_writes: room_writes::RoomWrites::default(),
            tasks: TaskTracker::new(),
            registry: std::sync::Mutex::default(),
            lease_revision: std::sync::atomic::AtomicU64::new(0),
            webhooks: OnceLock::new(),
        });
        retry(|| shared.ensure_stream(largest)).await?;
        retry(|| shared.renew_lease()).await?;
        let cancel = CancellationToken::new();
        let tasks = shared.tasks.clone();
        let live = Live::new(shared.clone(), reconnects_rx, &tasks, cancel.clone());
        tasks.spawn(nodes::lease_task(shared.clone(), cancel.clone()));
        Ok(Arc::new(NatsBroker {
            shared,
            live,
            cancel,
            tasks,
        }))
    }
}

/// Runs a start-up step again after a failure, twice at most: a JetStream
/// busy creating other streams may let one request time out.
async fn retry<T, F, Fut>(mut step: F) -> Result<T, BrokerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BrokerError>>,
{
    let mut attempt = 0;
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 2 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "nats set-up step failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The client's options from the settings: credentials and TLS.
async fn options(s: &NatsSettings) -> Result<async_nats::ConnectOptions, BrokerError> {
    let mut o = match &s.creds_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| down(format!("creds file {}: {e}", path.display())))?,
        None => async_nats::ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&s.user, &s.password) {
        o = o.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &s.token {
        o = o.token(token.clone());
    }
    if let Some(seed) = &s.nkey {
        o = o.nkey(seed.clone());
    }
    if let Some(ca) = &s.tls_ca_file {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    Ok(o.name(format!("hubcast {}", s.node))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connection_timeout(REQUEST_TIMEOUT)
        // Keep trying for ever: the node stays up through an outage.
        .max_reconnects(None)
        .retain_servers_order())
}

#[async_trait]
impl Broker for NatsBroker {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        let _ = self.shared.handler.set(handler);
    }

    async fn publish(&self, req: PublishRequest) -> Result<PublishResult, BrokerError> {
        self.shared.publish(req).await
    }

    async fn subscribe(&self, room: &Arc<str>) -> Result<(), BrokerError> {
        self.live.subscribe(room).await
    }

    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError> {
        self.live.unsubscribe(room);
        Ok(())
    }

    async fn recover(
        &self,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<Recovery, BrokerError> {
        self.shared.recover(room, since).await
    }

    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        self.shared.history(room, since, limit).await
    }

    async fn ready(&self) -> Result<(), Unavailability> {
        let s = &self.shared;
        if s.connected().is_err() {
            return Err(Unavailability::Down);
        }
        // A JetStream request, not only the connection: JetStream can be
        // unavailable on a server that is up (no quorum in a cluster).
        let probe = async {
            match s.js.get_stream(s.names.stream()).await {
                Ok(_) => Ok(()),
                // Gone (a NATS restart with memory storage, or deleted):
                // created again here too, or a node without rooms or
                // publishes would stay unready for ever.
                Err(e)
                    if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                {
                    s.stream_ok.store(false, Ordering::SeqCst);
                    s.ensure_stream(s.rules.largest()).await
                }
                Err(e) => Err(down(e)),
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "nats readiness probe failed");
                Err(Unavailability::Down)
            }
            Err(_) => {
                tracing::warn!("nats readiness probe timed out");
                Err(Unavailability::Down)
            }
        }
    }

    async fn close(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        // Give the lease back: this node's entries are gone with its
        // connections (the hub left every room before closing).
        let _ = self
            .shared
            .nodes
            .purge(keys::node_key(&self.shared.node))
            .await;
        let _ = self.shared.flush("close").await;
        self.shared.stream_ok.store(false, Ordering::SeqCst);
    }
}

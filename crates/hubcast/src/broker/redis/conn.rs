//! Connecting to Redis: one server or a cluster, and the node's pub/sub side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisFuture, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerError;
use crate::rules::Rules;

use super::keys::Keys;
use super::link::Link;
use super::nodes::lease_task;
use super::pubsub::pubsub_task;
use super::scripts::Scripts;
use super::{COMMAND_TIMEOUT, MAX_BACKOFF, RedisBroker, Shared, down, unavailable};
use crate::broker::lease::Registry;

/// The command connection: one Redis server, or a Redis Cluster (commands
/// routed by key slot).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where and how a node uses Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db`; for a cluster, comma-separated seed nodes.
    pub url: String,
    /// `url` names Redis Cluster nodes.
    pub cluster: bool,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// This node's id (presence entries, leases).
    pub node: String,
    /// What each room keeps: its rule's history size and ttl (which is
    /// also its msgIds' window). The global `history_ttl` (`rules.global()`)
    /// is also how long an offline user's status is remembered.
    pub rules: Arc<Rules>,
    /// How long a dead node's presence lingers.
    pub lease: Duration,
}

impl RedisBroker {
    /// Connects to Redis (fails when it cannot) and starts the node's
    /// pub/sub and lease tasks.
    pub async fn connect(settings: RedisSettings) -> Result<Arc<Self>, BrokerError> {
        let (conn, pubsub, publish_cmd) = if settings.cluster {
            let seeds: Vec<&str> = settings.url.split(',').map(str::trim).collect();
            let builder = || {
                ClusterClient::builder(seeds.clone())
                    .connection_timeout(COMMAND_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .retries(2)
                    .max_retry_wait(MAX_BACKOFF.as_millis() as u64)
            };
            let client = builder()
                .build()
                .map_err(|e| down(format!("bad redis_url: {e}")))?;
            let conn = client.get_async_connection().await.map_err(unavailable)?;
            // Sharded subscriptions need RESP3: the messages arrive as pushes.
            let (tx, rx) = mpsc::unbounded_channel();
            let sub_client = builder()
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .build()
                .map_err(|e| down(format!("bad redis_url: {e}")))?;
            let sub = sub_client
                .get_async_connection()
                .await
                .map_err(unavailable)?;
            (
                Conn::Cluster(conn),
                Link::Cluster {
                    conn: sub,
                    pushes: rx,
                },
                "spublish",
            )
        } else {
            let client = redis::Client::open(settings.url.as_str())
                .map_err(|e| down(format!("bad redis_url: {e}")))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(MAX_BACKOFF);
            let conn = ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map_err(unavailable)?;
            (
                Conn::Single(conn),
                Link::Plain { client, conn: None },
                "publish",
            )
        };
        let shared = Arc::new(Shared {
            conn,
            publish_cmd,
            keys: Keys {
                prefix: Arc::from(settings.prefix.as_str()),
            },
            node: Arc::from(settings.node.as_str()),
            scripts: Scripts::load(),
            handler: OnceLock::new(),
            ttl: settings.rules.global().history.ttl,
            rules: settings.rules,
            pubsub_up: AtomicBool::new(false),
            lease: settings.lease,
            registry: std::sync::Mutex::new(Registry::default()),
            leased: AtomicBool::new(false),
            webhook_delay_ms: std::sync::atomic::AtomicI64::new(-1),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(pubsub_task(shared.clone(), pubsub, rx, cancel.clone()));
        // Take the lease before serving anyone, then keep it and reap the
        // nodes whose lease ran out.
        shared.renew_lease().await?;
        tasks.spawn(lease_task(shared.clone(), cancel.clone()));
        tasks.close();
        // Start ready: wait for the pub/sub connection too.
        let t0 = tokio::time::Instant::now();
        while !shared.pubsub_up.load(Ordering::SeqCst) {
            if t0.elapsed() > COMMAND_TIMEOUT {
                cancel.cancel();
                tasks.wait().await;
                return Err(down("cannot open the pub/sub connection"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Arc::new(Self {
            shared,
            cmd: tx,
            cancel,
            tasks,
        }))
    }
}

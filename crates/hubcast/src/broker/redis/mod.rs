//! The Redis engine: many hubcast nodes sharing one Redis act as one server.
//!
//! Per room (every key carries the room as a hash tag, `{room}`, so a room's
//! keys and channel share a cluster slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{room}:m` | hash | `e` epoch, `o` latest offset |
//! | `P:{room}:s` | stream | history; entry id `offset-0`, fields `t` (ms), `d` (payload: the envelope's tail, see `codec`), `n`/`k` (publishing node and connection) |
//! | `P:{room}:i:<msgId>` | string | `epoch:offset` of a msgId (the publisher's or the server's: see `publish`), for `history_ttl` |
//! | `P:{room}:c` | channel | new messages and presence events |
//! | `P:{room}:p` | hash | connection id → user, name, node |
//! | `P:{room}:pu` | hash | user → connections in the room |
//! | `P:u:<user>` | hash | `c` connections, `s` status, `n` name, `l` last seen |
//! | `P:ur:<user>` | set | rooms the user is present in |
//! | `P:ready:<node>` | string | the node's last readiness probe write (Unix ms), for 10 s |
//! | `P:wh:s`, `P:wh:z`, `P:wh:t`, `P:wh:l:<group>` | | webhook events, pending ones, leases (see `webhooks`) |
//!
//! One Lua script per publish does the idempotency check, assigns the next
//! offset, appends to the stream (bounded to the room's `history_size`) and publishes
//! to the room's channel, atomically. A missing meta hash means Redis lost
//! the room: the script starts a new epoch.
//!
//! Each node holds one pub/sub connection, owned by a task that subscribes a
//! room's channel while the node has local members in it. Pub/sub loses what
//! is published while that connection is down, so the task remembers the
//! last offset it delivered per room: an offset jump, or a reconnect, makes it
//! read the missing range from the stream before delivering anything newer.
//! A range the stream no longer holds is reported to the hub (`on_reset`),
//! which closes the room's local subscribers with 4000 so they recover.
//!
//! Redis Cluster (`redis_cluster`): every script touches one room's keys
//! only, and they share a slot through the `{room}` hash tag, so each runs
//! on the master holding the room. Messages go out with sharded pub/sub
//! (`SPUBLISH` from the script, `SSUBSCRIBE` by the node), so a message
//! travels only to the shard that owns the room instead of to every node of
//! the cluster. The cluster client keeps one connection per master and
//! resubscribes by itself after a reconnect or a slot move; each
//! resubscription confirmation makes the node read the room's stream, so
//! what was published meanwhile is still delivered, in order. Keys that are
//! not a room's (users, nodes) are only ever touched one at a time.
//!
//! Layout: `keys` (names), `scripts` (the Lua in `lua/`), `conn` (one
//! server or a cluster; startup), `stream` (reading a room's stream),
//! `pubsub` (the node's subscriptions: one loop for both kinds of Redis),
//! `link` (what differs between plain and sharded pub/sub), `rooms` (the
//! subscribed rooms' bookkeeping), `codec` (channel messages and payloads),
//! `catchup` (in-order delivery and gap filling), `presence` (presence and
//! user status), `nodes` (leases and the reaper), `webhooks` (the webhook
//! event stream and delivery leases). This file holds the
//! shared state and implements [`Broker`].

mod catchup;
// Crate-visible for the `pubsub_codec` fuzz target (`crate::fuzzing`).
pub(crate) mod codec;
mod conn;
mod controls;
mod errors;
mod keys;
mod link;
mod nodes;
mod presence;
mod pubsub;
mod rooms;
mod scripts;
mod stream;
mod webhooks;

pub use self::conn::RedisSettings;
use self::errors::{down, publish_error, unavailable, why};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{
    Broker, BrokerError, BrokerHandler, ConnKey, HistoryPage, Publication, PublishRequest,
    PublishResult, Recovery, Unavailability,
};
use crate::protocol::json_string;
use crate::rules::Rules;

use self::conn::Conn;
use self::keys::Keys;
use self::pubsub::SubCmd;
use self::scripts::Scripts;
use self::stream::{parse_entries, position, since_arg};
use crate::broker::lease::Registry;

/// How long the meta hash (epoch, offset) outlives the last activity in a
/// room. Past it, the room starts a new epoch.
const META_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Timeout for one Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a join waits for the pub/sub task's answer before failing.
/// The task answers every join in the turn that takes it, each of its
/// Redis commands bounded by [`COMMAND_TIMEOUT`], so a join behind a wave
/// of others waits its turn rather than failing (a failed registration
/// closes the client's connection, and its reconnect makes the wave
/// bigger); this bound is for a task that no longer answers at all.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(30);

/// How long the readiness probe's key outlives the probe.
const READY_PROBE_TTL: Duration = Duration::from_secs(10);

/// How long a room stays subscribed after its last local member left.
const UNSUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// Longest pause between pub/sub reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// State shared by the broker and its pub/sub task.
struct Shared {
    conn: Conn,
    /// `publish`, or `spublish` on a cluster (sharded pub/sub).
    publish_cmd: &'static str,
    keys: Keys,
    node: Arc<str>,
    scripts: Scripts,
    handler: OnceLock<Weak<dyn BrokerHandler>>,
    /// What each room keeps (its rule's history size and ttl), looked up
    /// on every publish, recover and history.
    rules: Arc<Rules>,
    /// How long an offline user's status is remembered: the global
    /// `history_ttl`.
    ttl: Duration,
    /// The pub/sub connection is up.
    pubsub_up: AtomicBool,
    /// How long this node's presence entries outlive its last lease renewal.
    lease: Duration,
    /// What this node registered in Redis, to register again when Redis
    /// loses it.
    registry: std::sync::Mutex<Registry>,
    /// The lease was taken once: a renewal that finds it missing means
    /// Redis lost this node's entries (or another node reaped them).
    leased: AtomicBool,
    /// `webhook_offline_delay` in ms once webhooks are on (`webhooks`);
    /// -1 while off: the presence scripts then record nothing.
    webhook_delay_ms: std::sync::atomic::AtomicI64,
}

/// The Redis engine.
pub struct RedisBroker {
    shared: Arc<Shared>,
    cmd: mpsc::UnboundedSender<SubCmd>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// A call of `script` on `keys`, arguments to follow.
fn with_keys<const N: usize>(
    script: &redis::Script,
    keys: [String; N],
) -> redis::ScriptInvocation<'_> {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(k);
    }
    inv
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

impl Shared {
    /// Runs a script on its own handle of the shared connection.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BrokerError> {
        let mut conn = self.conn.clone();
        script.invoke_async(&mut conn).await.map_err(unavailable)
    }

    /// RECOVER or HISTORY on a room, up to their own arguments: its meta
    /// hash and stream, the epoch for a new meta hash, the meta TTL.
    fn meta_script<'a>(
        &self,
        script: &'a redis::Script,
        room: &str,
    ) -> redis::ScriptInvocation<'a> {
        let mut inv = with_keys(
            script,
            [self.keys.room(room, "m"), self.keys.room(room, "s")],
        );
        inv.arg(new_epoch()).arg(META_TTL.as_secs());
        inv
    }

    pub(super) fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler.get().and_then(Weak::upgrade)
    }

    /// A publication from what the script sent or stored; its envelope is
    /// built here, once per publication on each node.
    pub(super) fn publication(
        &self,
        room_json: &str,
        offset: u64,
        epoch: &Arc<str>,
        node: &str,
        key: &str,
        payload: &[u8],
    ) -> Arc<Publication> {
        let skip = if node == &*self.node {
            key.parse::<ConnKey>().ok()
        } else {
            None
        };
        Arc::new(Publication {
            offset,
            epoch: epoch.clone(),
            skip,
            envelope: codec::envelope(room_json, offset, epoch, payload),
        })
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        let _ = self.shared.handler.set(handler);
    }

    async fn publish(&self, req: PublishRequest) -> Result<PublishResult, BrokerError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let room = &*req.room;
        // Every msgId is remembered (the script checks only the
        // publisher's): a publish that times out is answered with its
        // msgId, the server's own too, and the retry with it must find the
        // first attempt if that went through.
        let cluster = matches!(s.conn, Conn::Cluster(_));
        // The cluster client sends a command again by itself after a
        // timeout or a broken connection: checking the server's msgId too
        // keeps that resend from publishing twice. Such an id is fresh, so
        // only the resend can find it, and for the publisher that is still
        // the first publication.
        let check = req.idempotent || cluster;
        let keep = s.rules.history(room);
        let mut script = s.scripts.publish.prepare_invoke();
        script
            .key(s.keys.room(room, "m"))
            .key(s.keys.room(room, "s"))
            .key(s.keys.channel(room))
            .key(s.keys.idem(room, &req.msg_id))
            // The payload is opaque to the script (see `codec`).
            .arg(req.parts.tail())
            .arg(keep.size)
            .arg(keep.ttl.as_secs().max(1))
            .arg(META_TTL.as_secs())
            .arg(new_epoch())
            .arg(&*s.node)
            .arg(req.skip.map(|k| k.to_string()).unwrap_or_default())
            .arg(crate::unix_ms())
            .arg(if check { "1" } else { "0" })
            .arg(s.publish_cmd);
        if req.webhook
            && s.webhook_delay_ms
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 0
        {
            // `message.published` in the same script (see `webhooks`).
            script.key(s.keys.webhook_stream()).arg(room);
        }
        let (offset, epoch, dup): (u64, String, u8) = script
            .invoke_async(&mut conn)
            .await
            .map_err(|e| publish_error(&e, &req.msg_id, cluster))?;
        Ok(PublishResult {
            offset,
            epoch: Arc::from(epoch),
            duplicate: dup == 1 && req.idempotent,
        })
    }

    async fn subscribe(&self, room: &Arc<str>) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(SubCmd::Subscribe(room.clone(), tx))
            .map_err(|_| BrokerError::Internal("pub/sub task stopped".into()))?;
        match tokio::time::timeout(SUBSCRIBE_WAIT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(BrokerError::Internal("pub/sub task stopped".into())),
            Err(_) => Err(down("subscribe timed out")),
        }
    }

    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError> {
        self.cmd
            .send(SubCmd::Unsubscribe(Arc::from(room)))
            .map_err(|_| BrokerError::Internal("pub/sub task stopped".into()))
    }

    async fn recover(
        &self,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<Recovery, BrokerError> {
        let s = &self.shared;
        let room_json = json_string(room);
        let since_arg = since_arg(since.map(|(o, _)| o));
        let (epoch, top, entries) = s.recover_raw(room, since_arg).await?;
        let mut rec = Recovery {
            top,
            epoch: epoch.clone(),
            recovered: false,
            publications: Vec::new(),
        };
        if let Some((since, want)) = since {
            let same_epoch = want.is_none_or(|e| *e == *epoch);
            if same_epoch && since <= top {
                let held = s.held(room, top);
                let mut expect = since + 1;
                let mut pubs = Vec::new();
                let mut whole = true;
                for e in entries {
                    if e.offset != expect || !held.holds(&e) {
                        whole = false;
                        break;
                    }
                    pubs.push(
                        s.publication(&room_json, e.offset, &epoch, &e.node, &e.key, &e.payload),
                    );
                    expect += 1;
                }
                if whole && expect == top + 1 {
                    rec.recovered = true;
                    rec.publications = pubs;
                }
            }
        }
        Ok(rec)
    }

    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let s = &self.shared;
        let room_json = json_string(room);
        let v: Value = s
            .invoke(
                s.meta_script(&s.scripts.history, room)
                    .arg(since_arg(since))
                    .arg(limit),
            )
            .await?;
        let (epoch, top, parts) = position(v, "history")?;
        let mut entries = parts.get(2).map(parse_entries).unwrap_or_default();
        let first = parts.get(3).map(parse_entries).unwrap_or_default();
        let held = s.held(room, top);
        if since.is_none() {
            entries.reverse();
        }
        entries.retain(|e| held.holds(e));
        let oldest_held = first
            .first()
            .filter(|e| held.holds(e))
            .map_or(top + 1, |e| e.offset)
            .min(entries.first().map_or(u64::MAX, |e| e.offset));
        let complete = match since {
            Some(since) => since >= top || entries.first().is_some_and(|e| e.offset == since + 1),
            None => top == 0 || oldest_held <= 1,
        };
        let publications = entries
            .into_iter()
            .map(|e| s.publication(&room_json, e.offset, &epoch, &e.node, &e.key, &e.payload))
            .collect();
        Ok(HistoryPage {
            epoch,
            publications,
            complete,
        })
    }

    async fn ready(&self) -> Result<(), Unavailability> {
        if !self.shared.pubsub_up.load(Ordering::SeqCst) {
            return Err(Unavailability::Down);
        }
        // A write, not a PING: a Redis out of memory (noeviction), a
        // read-only replica or one whose persistence fails answers PING
        // and every read, yet refuses each publish. A small key of this
        // node's with a short expiry is such a write and leaves nothing
        // behind; its value (when it was written) helps whoever reads it.
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let mut set = redis::cmd("SET");
        set.arg(s.keys.ready_probe(&s.node))
            .arg(crate::unix_ms())
            .arg("PX")
            .arg(READY_PROBE_TTL.as_millis() as u64);
        let probe = set.query_async::<()>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let why = why(&e);
                tracing::warn!(error = %e, reason = why.reason(), "readiness probe write failed");
                Err(why)
            }
            Err(_) => {
                tracing::warn!("readiness probe write timed out");
                Err(Unavailability::Down)
            }
        }
    }

    async fn close(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
        // Connections cleaned up after themselves, but a leave that failed
        // (or did not finish before the shutdown window closed) left its
        // entry: remove what is left, then give the lease back. Should
        // that fail, the lease stays and expires, and another node reaps.
        let s = &self.shared;
        if let Err(e) = s.remove_node(&s.node).await {
            tracing::warn!(error = %e, "cannot remove this node's entries; its lease will expire");
        }
    }
}

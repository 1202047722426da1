//! The Redis engine: many hubcast nodes sharing one Redis act as one server.
//!
//! Per room (every key carries the room as a hash tag, `{room}`, so a room's
//! keys and channel share a cluster slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{room}:m` | hash | `e` epoch, `o` latest offset |
//! | `P:{room}:s` | stream | history; entry id `offset-0`, fields `t` (ms), `d` (envelope), `n`/`k` (publishing node and connection) |
//! | `P:{room}:i:<msgId>` | string | `epoch:offset` of a client msgId, for `history_ttl` |
//! | `P:{room}:c` | channel | new messages and presence events |
//! | `P:{room}:p` | hash | connection id → user, name, node |
//! | `P:{room}:pu` | hash | user → connections in the room |
//! | `P:u:<user>` | hash | `c` connections, `s` status, `n` name, `l` last seen |
//! | `P:ur:<user>` | set | rooms the user is present in |
//!
//! One Lua script per publish does the idempotency check, assigns the next
//! offset, appends to the stream (bounded to `history_size`) and publishes
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, PushInfo, PushKind, RedisFuture, Script, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    Broker, BrokerError, BrokerHandler, ClientInfo, ConnKey, HistoryPage, PresenceEvent,
    PresenceManager, PresencePage, Publication, PublishRequest, PublishResult, Recovery,
    UserStatus,
};
use crate::protocol::{Member, PresenceAction, Status};

/// How long the meta hash (epoch, offset) outlives the last activity in a
/// room. Past it, the room starts a new epoch.
const META_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Timeout for one Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a room stays subscribed after its last local member left.
const UNSUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// Longest pause between pub/sub reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
if ARGV[10] == '1' then
  local prev = redis.call('GET', KEYS[4])
  if prev then
    local sep = string.find(prev, ':', 1, true)
    if sep and string.sub(prev, 1, sep - 1) == epoch then
      return {tonumber(string.sub(prev, sep + 1)), epoch, 1}
    end
  end
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local env = ARGV[1] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[2]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 't', ARGV[9], 'd', env, 'n', ARGV[7], 'k', ARGV[8])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if ARGV[10] == '1' then
  redis.call('SET', KEYS[4], epoch .. ':' .. offset, 'EX', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call(ARGV[11], KEYS[3], offset .. '\n' .. epoch .. '\n' .. ARGV[7] .. '\n' .. ARGV[8] .. '\n' .. env)
return {offset, epoch, 0}
"#;

/// The start of RECOVER and HISTORY: creates the meta hash with a new epoch
/// (ARGV[1]) when Redis lost it, refreshes its TTL (ARGV[2]), and reads the
/// epoch, the top and `since` (ARGV[3], -1 for none).
macro_rules! meta_prelude {
    () => {
        r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
local since = tonumber(ARGV[3])
"#
    };
}

/// Ensures the meta hash, then returns the epoch, the top and the entries
/// after `since` (ARGV[3], -1 for none).
const RECOVER: &str = concat!(
    meta_prelude!(),
    r#"
local entries = {}
if since >= 0 and since < top then
  entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')
end
return {epoch, top, entries}
"#
);

/// Like RECOVER, for `history`: entries after `since` (or the latest ones)
/// up to ARGV[4], and the oldest entry held.
const HISTORY: &str = concat!(
    meta_prelude!(),
    r#"
local entries
if since >= 0 then
  entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', ARGV[4])
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[4])
end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
return {epoch, top, entries, first}
"#
);

/// Adds a connection to a room's presence; the user's first connection
/// publishes a join event. Returns the user's connection count there.
const PRESENCE_JOIN: &str = r#"
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\31' .. ARGV[3] .. '\31' .. ARGV[4])
if added == 1 then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  if n == 1 then
    redis.call(ARGV[6], KEYS[3], 'p\njoin\n' .. ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. ARGV[5])
  end
  return n
end
return -1
"#;

/// Removes a connection from a room's presence; the user's last connection
/// publishes a leave event. Returns the user's remaining connections there.
const PRESENCE_LEAVE: &str = r#"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  if n <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call(ARGV[5], KEYS[3], 'p\nleave\n' .. ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
  end
  return n
end
return -1
"#;

const CONNECT: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], 'c', 1)
if n == 1 then
  redis.call('HSET', KEYS[1], 's', 'online', 'n', ARGV[1])
  redis.call('HDEL', KEYS[1], 'l')
end
redis.call('PERSIST', KEYS[1])
return n
"#;

const DISCONNECT: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], 'c', -1)
if n <= 0 then
  if ARGV[3] == '1' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], 'c', 0, 's', 'offline', 'l', ARGV[1])
    redis.call('EXPIRE', KEYS[1], ARGV[2])
  end
end
return n
"#;

/// The scripts, loaded once.
struct Scripts {
    publish: Script,
    recover: Script,
    history: Script,
    presence_join: Script,
    presence_leave: Script,
    connect: Script,
    disconnect: Script,
}

/// Key names for one deployment prefix.
#[derive(Clone)]
struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    fn room(&self, room: &str, suffix: &str) -> String {
        format!("{}:{{{}}}:{}", self.prefix, room, suffix)
    }
    fn channel(&self, room: &str) -> String {
        self.room(room, "c")
    }
    fn idem(&self, room: &str, msg_id: &str) -> String {
        format!("{}:{{{}}}:i:{}", self.prefix, room, msg_id)
    }
    fn user(&self, user: &str) -> String {
        format!("{}:u:{}", self.prefix, user)
    }
    fn user_rooms(&self, user: &str) -> String {
        format!("{}:ur:{}", self.prefix, user)
    }
    /// Sorted set: node id → lease expiry (Unix ms).
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    /// Hash: a node's connections (connection id → user).
    fn node_conns(&self, node: &str) -> String {
        format!("{}:nc:{}", self.prefix, node)
    }
    /// Set: rooms a node has presence entries in.
    fn node_rooms(&self, node: &str) -> String {
        format!("{}:np:{}", self.prefix, node)
    }
    /// A node's reaping claim.
    fn reap_lock(&self, node: &str) -> String {
        format!("{}:reap:{}", self.prefix, node)
    }
    /// The room of a channel name, when it is one of ours.
    fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(&*self.prefix)?
            .strip_prefix(":{")?
            .strip_suffix("}:c")
    }
}

/// What the pub/sub task is asked to do.
enum SubCmd {
    Subscribe(Arc<str>, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(Arc<str>),
}

/// The command connection: one Redis server, or a Redis Cluster (commands
/// routed by key slot).
#[derive(Clone)]
enum Conn {
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

/// State shared by the broker and its pub/sub task.
struct Shared {
    conn: Conn,
    /// `publish`, or `spublish` on a cluster (sharded pub/sub).
    publish_cmd: &'static str,
    keys: Keys,
    node: Arc<str>,
    scripts: Scripts,
    handler: OnceLock<Weak<dyn BrokerHandler>>,
    history_size: usize,
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
}

/// This node's connections and presence entries, as registered in Redis.
#[derive(Default)]
struct Registry {
    conns: HashMap<Arc<str>, ClientInfo>,
    /// Room → connection ids present there.
    presence: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl Registry {
    fn has_conn(&self, conn_id: &str) -> bool {
        self.conns.contains_key(conn_id)
    }
    fn has_presence(&self, room: &str, conn_id: &str) -> bool {
        self.presence.get(room).is_some_and(|c| c.contains(conn_id))
    }
}

/// The Redis engine.
pub struct RedisBroker {
    shared: Arc<Shared>,
    cmd: mpsc::UnboundedSender<SubCmd>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// One stream entry: (offset, time ms, envelope, node, connection key).
struct Entry {
    offset: u64,
    time: i64,
    envelope: Bytes,
    node: String,
    key: String,
}

/// Splits a RECOVER or HISTORY reply into the epoch, the latest offset and
/// the remaining parts (entry lists).
fn position(reply: Value, script: &str) -> Result<(Arc<str>, u64, Vec<Value>), BrokerError> {
    let Value::Array(parts) = reply else {
        return Err(BrokerError::Internal(format!(
            "{script} script: unexpected reply"
        )));
    };
    let epoch: String = parts
        .first()
        .cloned()
        .and_then(|v| redis::from_redis_value(v).ok())
        .ok_or_else(|| BrokerError::Internal(format!("{script} script: no epoch")))?;
    let top: u64 = parts
        .get(1)
        .cloned()
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or(0);
    Ok((Arc::from(epoch), top, parts))
}

/// An offset as the scripts take it: -1 for none (Lua numbers are signed).
fn since_arg(since: Option<u64>) -> i64 {
    since.map_or(-1, |o| o.min(i64::MAX as u64) as i64)
}

fn parse_entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id: String = redis::from_redis_value(pair.first()?.clone()).ok()?;
            let offset = id.split('-').next()?.parse().ok()?;
            let fields: Vec<Vec<u8>> = redis::from_redis_value(pair.get(1)?.clone()).ok()?;
            let mut e = Entry {
                offset,
                time: 0,
                envelope: Bytes::new(),
                node: String::new(),
                key: String::new(),
            };
            for kv in fields.chunks(2) {
                let [k, v] = kv else { continue };
                match k.as_slice() {
                    b"t" => e.time = std::str::from_utf8(v).ok()?.parse().ok()?,
                    b"d" => e.envelope = Bytes::copy_from_slice(v),
                    b"n" => e.node = String::from_utf8_lossy(v).into_owned(),
                    b"k" => e.key = String::from_utf8_lossy(v).into_owned(),
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

impl Shared {
    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler.get().and_then(Weak::upgrade)
    }

    fn publication(
        &self,
        offset: u64,
        epoch: &Arc<str>,
        node: &str,
        key: &str,
        envelope: Bytes,
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
            envelope,
        })
    }

    /// Removes one connection from a room's presence (the script sends the
    /// leave event for the user's last one) and forgets the room for the
    /// user when it was their last connection there.
    async fn leave_presence(
        &self,
        room: &str,
        conn_id: &str,
        user: &str,
        name: &str,
        status: Status,
    ) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .presence_leave
            .key(self.keys.room(room, "p"))
            .key(self.keys.room(room, "pu"))
            .key(self.keys.channel(room))
            .arg(conn_id)
            .arg(user)
            .arg(name)
            .arg(status.as_str())
            .arg(self.publish_cmd)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if n == 0 {
            let _: () = conn
                .srem(self.keys.user_rooms(user), room)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Extends this node's lease. Returns true when the lease had been
    /// taken before but Redis no longer had it: Redis lost this node's
    /// entries (a restart without persistence, a flush) or another node
    /// reaped them after a long partition.
    async fn renew_lease(&self) -> Result<bool, BrokerError> {
        let mut conn = self.conn.clone();
        let until = crate::unix_ms() + self.lease.as_millis() as i64;
        let added: i64 = conn
            .zadd(self.keys.nodes(), &*self.node, until)
            .await
            .map_err(unavailable)?;
        let before = self.leased.swap(true, Ordering::SeqCst);
        Ok(added == 1 && before)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        crate::lock(&self.registry)
    }

    /// Registers this node's connections and presence entries again, after
    /// Redis lost them: user status counts, the node's connection list, and
    /// presence (with join events, since the other nodes saw them vanish
    /// or never knew). An entry removed locally meanwhile is removed from
    /// Redis again, so a connection closing during this leaves no ghost.
    async fn register_again(&self) -> Result<(), BrokerError> {
        let (conns, presence): (Vec<ClientInfo>, Vec<(Arc<str>, ClientInfo)>) = {
            let reg = self.registry();
            let conns = reg.conns.values().cloned().collect();
            let presence = reg
                .presence
                .iter()
                .flat_map(|(room, ids)| {
                    ids.iter()
                        .filter_map(|id| reg.conns.get(id))
                        .map(|c| (room.clone(), c.clone()))
                })
                .collect();
            (conns, presence)
        };
        tracing::warn!(
            connections = conns.len(),
            presence = presence.len(),
            "redis lost this node's entries: registering them again"
        );
        for c in &conns {
            self.register_conn(c).await?;
            if !self.registry().has_conn(&c.conn_id) {
                self.unregister_conn(c).await?;
            }
        }
        for (room, c) in &presence {
            let (status, _) = self.user_status_name(&c.user).await;
            self.join_presence(room, c, status).await?;
            if !self.registry().has_presence(room, &c.conn_id) {
                self.leave_presence(room, &c.conn_id, &c.user, &c.name, status)
                    .await?;
            }
        }
        Ok(())
    }

    /// Counts a connection for its user's status and in this node's list.
    async fn register_conn(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .connect
            .key(self.keys.user(&client.user))
            .arg(&*client.name)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let _: () = conn
            .hset(
                self.keys.node_conns(&self.node),
                &*client.conn_id,
                &*client.user,
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Undoes [`Shared::register_conn`].
    async fn unregister_conn(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .disconnect
            .key(self.keys.user(&client.user))
            .arg(crate::unix_ms())
            .arg(self.ttl.as_secs().max(1))
            // An anonymous user ends with its connection: no offline record.
            .arg(if client.ephemeral { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let _: () = conn
            .hdel(self.keys.node_conns(&self.node), &*client.conn_id)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// A user's status and display name (online and the user id when
    /// unknown).
    async fn user_status_name(&self, user: &str) -> (Status, String) {
        let mut conn = self.conn.clone();
        let r: Result<(Option<String>, Option<String>), _> =
            conn.hmget(self.keys.user(user), &["s", "n"]).await;
        match r {
            Ok((s, n)) => (
                parse_status(s.as_deref()),
                n.unwrap_or_else(|| user.to_string()),
            ),
            Err(_) => (Status::Online, user.to_string()),
        }
    }

    /// Adds one connection to a room's presence (the script sends the join
    /// event for the user's first connection there).
    async fn join_presence(
        &self,
        room: &str,
        client: &ClientInfo,
        status: Status,
    ) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .presence_join
            .key(self.keys.room(room, "p"))
            .key(self.keys.room(room, "pu"))
            .key(self.keys.channel(room))
            .arg(&*client.conn_id)
            .arg(&*client.user)
            .arg(&*client.name)
            .arg(&*self.node)
            .arg(status.as_str())
            .arg(self.publish_cmd)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if n >= 1 {
            // Two slots on a cluster: two commands, sent together.
            let mut other = conn.clone();
            let user_rooms = self.keys.user_rooms(&client.user);
            let node_rooms = self.keys.node_rooms(&self.node);
            let (a, b): (redis::RedisResult<()>, redis::RedisResult<()>) =
                tokio::join!(conn.sadd(&user_rooms, room), other.sadd(&node_rooms, room));
            a.and(b).map_err(unavailable)?;
        }
        Ok(())
    }

    /// Removes what nodes with an expired lease left behind: their presence
    /// entries (sending the leave events) and their connections' status.
    async fn reap_dead_nodes(&self) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let dead: Vec<String> = conn
            .zrangebyscore(self.keys.nodes(), "-inf", crate::unix_ms())
            .await
            .map_err(unavailable)?;
        for node in dead.into_iter().filter(|n| *n != *self.node) {
            // One node reaps; the others skip.
            let claimed: bool = redis::cmd("SET")
                .arg(self.keys.reap_lock(&node))
                .arg(&*self.node)
                .arg("NX")
                .arg("EX")
                .arg(self.lease.as_secs().max(1))
                .query_async::<Option<String>>(&mut conn)
                .await
                .map_err(unavailable)?
                .is_some();
            if !claimed {
                continue;
            }
            tracing::warn!(node = %node, "node lease expired: removing its presence");
            let rooms: Vec<String> = conn
                .smembers(self.keys.node_rooms(&node))
                .await
                .map_err(unavailable)?;
            for room in rooms {
                let entries: HashMap<String, String> = conn
                    .hgetall(self.keys.room(&room, "p"))
                    .await
                    .map_err(unavailable)?;
                for (conn_id, value) in entries {
                    let mut it = value.split('\u{1f}');
                    let (Some(user), Some(name), Some(owner)) = (it.next(), it.next(), it.next())
                    else {
                        continue;
                    };
                    if owner != node {
                        continue;
                    }
                    self.leave_presence(&room, &conn_id, user, name, Status::Offline)
                        .await?;
                }
            }
            let conns: HashMap<String, String> = conn
                .hgetall(self.keys.node_conns(&node))
                .await
                .map_err(unavailable)?;
            for user in conns.values() {
                let _: i64 = self
                    .scripts
                    .disconnect
                    .key(self.keys.user(user))
                    .arg(crate::unix_ms())
                    .arg(self.ttl.as_secs().max(1))
                    // Whether it was anonymous is not recorded per node
                    // connection: keep the offline record (it expires).
                    .arg("0")
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
            }
            // Separate commands: the keys are in different cluster slots.
            let _: () = conn
                .del(self.keys.node_rooms(&node))
                .await
                .map_err(unavailable)?;
            let _: () = conn
                .del(self.keys.node_conns(&node))
                .await
                .map_err(unavailable)?;
            let _: () = conn
                .zrem(self.keys.nodes(), &node)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Oldest time a message may have to still count as history.
    fn cutoff_ms(&self) -> i64 {
        crate::unix_ms() - self.ttl.as_millis() as i64
    }

    async fn recover_raw(
        &self,
        room: &str,
        since: i64,
    ) -> Result<(Arc<str>, u64, Vec<Entry>), BrokerError> {
        let mut conn = self.conn.clone();
        let v: Value = self
            .scripts
            .recover
            .key(self.keys.room(room, "m"))
            .key(self.keys.room(room, "s"))
            .arg(new_epoch())
            .arg(META_TTL.as_secs())
            .arg(since)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let (epoch, top, parts) = position(v, "recover")?;
        let entries = parts.get(2).map(parse_entries).unwrap_or_default();
        Ok((epoch, top, entries))
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
    /// Messages kept per room.
    pub history_size: usize,
    /// How long messages and msgIds are kept.
    pub ttl: Duration,
    /// How long a dead node's presence lingers.
    pub lease: Duration,
}

/// The node's pub/sub side, before its task starts.
enum PubSubSource {
    /// A dedicated pub/sub connection, reopened by the task when it drops.
    Single(redis::Client),
    /// A cluster connection (one connection per master, resubscribed by the
    /// client) and the pushes it receives.
    Cluster(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>),
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
                .map_err(|e| unavailable(format!("bad redis_url: {e}")))?;
            let conn = client.get_async_connection().await.map_err(unavailable)?;
            // Sharded subscriptions need RESP3: the messages arrive as pushes.
            let (tx, rx) = mpsc::unbounded_channel();
            let sub_client = builder()
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .build()
                .map_err(|e| unavailable(format!("bad redis_url: {e}")))?;
            let sub = sub_client
                .get_async_connection()
                .await
                .map_err(unavailable)?;
            (
                Conn::Cluster(conn),
                PubSubSource::Cluster(sub, rx),
                "spublish",
            )
        } else {
            let client = redis::Client::open(settings.url.as_str())
                .map_err(|e| unavailable(format!("bad redis_url: {e}")))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(MAX_BACKOFF);
            let conn = ConnectionManager::new_with_config(client.clone(), config)
                .await
                .map_err(unavailable)?;
            (Conn::Single(conn), PubSubSource::Single(client), "publish")
        };
        let shared = Arc::new(Shared {
            conn,
            publish_cmd,
            keys: Keys {
                prefix: Arc::from(settings.prefix.as_str()),
            },
            node: Arc::from(settings.node.as_str()),
            scripts: Scripts {
                publish: Script::new(PUBLISH),
                recover: Script::new(RECOVER),
                history: Script::new(HISTORY),
                presence_join: Script::new(PRESENCE_JOIN),
                presence_leave: Script::new(PRESENCE_LEAVE),
                connect: Script::new(CONNECT),
                disconnect: Script::new(DISCONNECT),
            },
            handler: OnceLock::new(),
            history_size: settings.history_size,
            ttl: settings.ttl,
            pubsub_up: AtomicBool::new(false),
            lease: settings.lease,
            registry: std::sync::Mutex::new(Registry::default()),
            leased: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        match pubsub {
            PubSubSource::Single(client) => {
                tasks.spawn(pubsub_task(shared.clone(), client, rx, cancel.clone()));
            }
            PubSubSource::Cluster(sub, pushes) => {
                tasks.spawn(cluster_pubsub_task(
                    shared.clone(),
                    sub,
                    pushes,
                    rx,
                    cancel.clone(),
                ));
            }
        }
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
                return Err(unavailable("cannot open the pub/sub connection"));
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

fn parse_status(s: Option<&str>) -> Status {
    match s {
        Some("away") => Status::Away,
        Some("busy") => Status::Busy,
        Some("offline") => Status::Offline,
        _ => Status::Online,
    }
}

/// Per subscribed room: the last offset delivered to the hub.
struct RoomPos {
    epoch: Arc<str>,
    last: u64,
}

/// Owns the node's pub/sub connection: subscribes and unsubscribes rooms on
/// request, delivers messages in order, fills gaps from the streams, and
/// reconnects (resubscribing and catching up) when the connection drops.
async fn pubsub_task(
    shared: Arc<Shared>,
    client: redis::Client,
    mut rx: mpsc::UnboundedReceiver<SubCmd>,
    cancel: CancellationToken,
) {
    let mut rooms: HashMap<Arc<str>, RoomSub> = HashMap::new();
    let mut backoff = Duration::from_millis(50);
    // Set when the connection is given up for a failed stream read: wait
    // before reconnecting.
    let mut pause = false;
    'connect: loop {
        shared.pubsub_up.store(false, Ordering::SeqCst);
        if std::mem::take(&mut pause) {
            if !wait_serving(backoff, &mut rx, &mut rooms, &cancel).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let pubsub = tokio::select! {
            _ = cancel.cancelled() => return,
            p = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()) => p,
        };
        let pubsub = match pubsub {
            Ok(Ok(p)) => p,
            other => {
                let err = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timeout".to_string(),
                };
                tracing::warn!(error = %err, "redis pub/sub connection failed; retrying");
                pause = true;
                continue 'connect;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Rooms left while disconnected are not resubscribed.
        rooms.retain(|_, r| r.refs > 0);
        for room in rooms.keys() {
            if let Err(e) = sink.subscribe(shared.keys.channel(room)).await {
                tracing::warn!(error = %e, "redis resubscribe failed");
                continue 'connect;
            }
        }
        // Whatever was published while we were away comes from the streams.
        let names: Vec<Arc<str>> = rooms.keys().cloned().collect();
        for room in names {
            if let Some(r) = rooms.get_mut(&room)
                && let Err(e) = catch_up(&shared, &room, &mut r.pos, None).await
            {
                tracing::warn!(room = %room, error = %e, "cannot read missed messages from redis; reconnecting");
                pause = true;
                continue 'connect;
            }
        }
        shared.pubsub_up.store(true, Ordering::SeqCst);
        backoff = Duration::from_millis(50);
        if !rooms.is_empty() {
            tracing::info!(
                rooms = rooms.len(),
                "redis pub/sub connected; rooms resubscribed"
            );
        }
        let mut sweep = tokio::time::interval(UNSUBSCRIBE_DELAY / 4);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sweep.tick() => {
                    // Unsubscribe rooms left long enough ago (a room that is
                    // left and joined again in between keeps its subscription).
                    for room in idle_rooms(&rooms) {
                        rooms.remove(&room);
                        if sink.unsubscribe(shared.keys.channel(&room)).await.is_err() {
                            continue 'connect;
                        }
                    }
                }
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(SubCmd::Subscribe(room, reply)) => {
                        if let Some(r) = rooms.get_mut(&room) {
                            r.refs += 1;
                            r.idle_since = None;
                            let _ = reply.send(Ok(()));
                            continue;
                        }
                        if let Err(e) = sink.subscribe(shared.keys.channel(&room)).await {
                            let _ = reply.send(Err(unavailable(e)));
                            continue 'connect;
                        }
                        // Read the position only now: anything published from
                        // here on arrives over pub/sub.
                        match shared.recover_raw(&room, -1).await {
                            Ok((epoch, top, _)) => {
                                rooms.insert(room, RoomSub { refs: 1, pos: RoomPos { epoch, last: top }, idle_since: None });
                                let _ = reply.send(Ok(()));
                            }
                            Err(e) => {
                                let _ = sink.unsubscribe(shared.keys.channel(&room)).await;
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    Some(SubCmd::Unsubscribe(room)) => release(&mut rooms, &room),
                },
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        tracing::warn!("redis pub/sub connection lost; reconnecting");
                        continue 'connect;
                    };
                    let Some(room) = shared.keys.room_of(msg.get_channel_name()) else { continue };
                    let Some(r) = rooms.get_mut(room) else { continue };
                    if let Err(e) = on_message(&shared, room, &mut r.pos, msg.get_payload_bytes()).await {
                        // Nothing newer is delivered before the gap is
                        // filled: start over, reading the streams again.
                        tracing::warn!(room, error = %e, "cannot read missed messages from redis; reconnecting");
                        pause = true;
                        continue 'connect;
                    }
                }
            }
        }
    }
}

/// Waits `pause` while the pub/sub connection is down, answering
/// subscription requests meanwhile: rooms already subscribed gain a
/// reference, new ones are refused (`unavailable`). False when the task
/// must stop.
async fn wait_serving(
    pause: Duration,
    rx: &mut mpsc::UnboundedReceiver<SubCmd>,
    rooms: &mut HashMap<Arc<str>, RoomSub>,
    cancel: &CancellationToken,
) -> bool {
    let deadline = tokio::time::sleep(pause);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = &mut deadline => return true,
            cmd = rx.recv() => match cmd {
                None => return false,
                Some(SubCmd::Subscribe(room, reply)) => {
                    if let Some(r) = rooms.get_mut(&room).filter(|r| r.refs > 0) {
                        r.refs += 1;
                        let _ = reply.send(Ok(()));
                    } else {
                        let _ = reply.send(Err(unavailable("pub/sub connection down")));
                    }
                }
                Some(SubCmd::Unsubscribe(room)) => release(rooms, &room),
            },
        }
    }
}

/// The cluster's pub/sub: sharded subscriptions on the cluster connection,
/// the same room bookkeeping as [`pubsub_task`], and a catch-up from the
/// stream whenever a room's subscription is confirmed again.
///
/// The cluster client resubscribes a reconnected master by itself, but it
/// does not say which master a disconnection was, and in testing it did not
/// always restore every subscription. So after any disconnection every room
/// counts as unconfirmed, and the task subscribes them again itself until
/// Redis confirms each one (a repeated `SSUBSCRIBE` is harmless: Redis only
/// confirms it once more).
async fn cluster_pubsub_task(
    shared: Arc<Shared>,
    sub: ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    mut rx: mpsc::UnboundedReceiver<SubCmd>,
    cancel: CancellationToken,
) {
    let mut rooms: HashMap<Arc<str>, RoomSub> = HashMap::new();
    // Rooms whose subscription Redis has not confirmed since the last
    // disconnection, and when to subscribe them again.
    let mut unconfirmed: HashSet<Arc<str>> = HashSet::new();
    let mut resubscribe_at: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(100);
    shared.pubsub_up.store(true, Ordering::SeqCst);
    let mut sweep = tokio::time::interval(UNSUBSCRIBE_DELAY / 4);
    loop {
        let resubscribe = async {
            match resubscribe_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sweep.tick() => {
                for room in idle_rooms(&rooms) {
                    rooms.remove(&room);
                    unconfirmed.remove(&room);
                    if let Err(e) = sub.clone().sunsubscribe(shared.keys.channel(&room)).await {
                        tracing::warn!(room = %room, error = %e, "redis sunsubscribe failed");
                    }
                }
            }
            _ = resubscribe => {
                unconfirmed.retain(|r| rooms.contains_key(r));
                let results = futures_util::future::join_all(unconfirmed.iter().map(|room| {
                    let mut conn = sub.clone();
                    let channel = shared.keys.channel(room);
                    async move { conn.ssubscribe(channel).await }
                }))
                .await;
                if results.iter().any(|r| r.is_err()) {
                    tracing::warn!("redis cluster resubscribe failed; retrying");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    resubscribe_at = Some(tokio::time::Instant::now() + backoff);
                } else {
                    // Confirmations arrive as pushes and clear `unconfirmed`.
                    backoff = Duration::from_millis(100);
                    resubscribe_at = None;
                }
            }
            cmd = rx.recv() => match cmd {
                None => return,
                Some(SubCmd::Subscribe(room, reply)) => {
                    if let Some(r) = rooms.get_mut(&room) {
                        r.refs += 1;
                        r.idle_since = None;
                        let _ = reply.send(Ok(()));
                        continue;
                    }
                    if let Err(e) = sub.clone().ssubscribe(shared.keys.channel(&room)).await {
                        let _ = reply.send(Err(unavailable(e)));
                        continue;
                    }
                    // Read the position only now: anything published from
                    // here on arrives over pub/sub.
                    match shared.recover_raw(&room, -1).await {
                        Ok((epoch, top, _)) => {
                            rooms.insert(room, RoomSub { refs: 1, pos: RoomPos { epoch, last: top }, idle_since: None });
                            let _ = reply.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = sub.clone().sunsubscribe(shared.keys.channel(&room)).await;
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Some(SubCmd::Unsubscribe(room)) => release(&mut rooms, &room),
            },
            push = pushes.recv() => {
                let Some(push) = push else { return };
                let channel = push.data.first().and_then(|v| match v {
                    Value::BulkString(b) => std::str::from_utf8(b).ok(),
                    _ => None,
                });
                let room = channel.and_then(|c| shared.keys.room_of(c));
                match push.kind {
                    PushKind::SMessage => {
                        let (Some(room), Some(Value::BulkString(payload))) = (room, push.data.get(1))
                        else { continue };
                        let Some(r) = rooms.get_mut(room) else { continue };
                        if let Err(e) = on_message(&shared, room, &mut r.pos, payload).await {
                            // Not delivered: the resubscription's catch-up
                            // reads it from the stream, in order.
                            tracing::warn!(room, error = %e, "cannot read missed messages from redis; retrying");
                            unconfirmed.insert(Arc::from(room));
                            resubscribe_at.get_or_insert(tokio::time::Instant::now() + backoff);
                        }
                    }
                    PushKind::SSubscribe => {
                        // A (re)subscription: whatever was published while
                        // the shard's connection was down is in the stream.
                        let Some(room) = room else { continue };
                        unconfirmed.remove(room);
                        let Some(r) = rooms.get_mut(room) else { continue };
                        if let Err(e) = catch_up(&shared, room, &mut r.pos, None).await {
                            tracing::warn!(room, error = %e, "cannot read missed messages from redis; retrying");
                            unconfirmed.insert(Arc::from(room));
                            resubscribe_at.get_or_insert(tokio::time::Instant::now() + backoff);
                        }
                    }
                    PushKind::Disconnection => {
                        tracing::warn!("a redis cluster pub/sub connection dropped; resubscribing");
                        unconfirmed.extend(rooms.keys().cloned());
                        if resubscribe_at.is_none() {
                            // Give the client a moment to reconnect first.
                            resubscribe_at = Some(tokio::time::Instant::now() + backoff);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Renews this node's lease every third of it and reaps dead nodes.
async fn lease_task(shared: Arc<Shared>, cancel: CancellationToken) {
    let period = (shared.lease / 3).max(Duration::from_millis(200));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match shared.renew_lease().await {
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the node lease");
                continue;
            }
            Ok(true) => {
                if let Err(e) = shared.register_again().await {
                    tracing::warn!(error = %e, "cannot register this node's entries again");
                    // Drop the lease again so the next tick retries.
                    let _: Result<i64, _> = shared
                        .conn
                        .clone()
                        .zrem(shared.keys.nodes(), &*shared.node)
                        .await;
                }
            }
            Ok(false) => {}
        }
        if let Err(e) = shared.reap_dead_nodes().await {
            tracing::warn!(error = %e, "cannot reap dead nodes");
        }
    }
}

/// A room the node is subscribed to.
struct RoomSub {
    /// Subscribe calls not yet matched by an unsubscribe.
    refs: usize,
    /// What was delivered last.
    pos: RoomPos,
    /// When `refs` dropped to 0; the channel is unsubscribed after
    /// [`UNSUBSCRIBE_DELAY`].
    idle_since: Option<tokio::time::Instant>,
}

/// Rooms left long enough ago to unsubscribe (a room that is left and
/// joined again in between keeps its subscription).
fn idle_rooms(rooms: &HashMap<Arc<str>, RoomSub>) -> Vec<Arc<str>> {
    rooms
        .iter()
        .filter(|(_, r)| {
            r.refs == 0
                && r.idle_since
                    .is_some_and(|t| t.elapsed() >= UNSUBSCRIBE_DELAY)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Drops one subscription reference to a room; the channel itself is
/// unsubscribed a little later, if nobody joins again meanwhile.
fn release(rooms: &mut HashMap<Arc<str>, RoomSub>, room: &str) {
    if let Some(r) = rooms.get_mut(room) {
        r.refs = r.refs.saturating_sub(1);
        if r.refs == 0 {
            r.idle_since = Some(tokio::time::Instant::now());
        }
    }
}

/// Delivers the stream's entries after `pos.last` (up to `upto`, exclusive,
/// when given). Reports a reset when the stream no longer holds them. An
/// error means Redis could not be read: nothing was skipped, and the caller
/// must not deliver anything newer before trying again.
async fn catch_up(
    shared: &Shared,
    room: &str,
    pos: &mut RoomPos,
    upto: Option<u64>,
) -> Result<(), BrokerError> {
    let mut read = shared.recover_raw(room, pos.last as i64).await;
    if let Ok((epoch, _, _)) = &read
        && *epoch != pos.epoch
    {
        // Redis lost the room and it restarted with a new epoch: that is how
        // the protocol tells clients history is gone. Follow the new stream
        // from its start.
        tracing::info!(room, old = %pos.epoch, new = %epoch, "room restarted with a new epoch");
        pos.epoch = epoch.clone();
        pos.last = 0;
        read = shared.recover_raw(room, 0).await;
    }
    let (epoch, top, entries) = read?;
    let Some(handler) = shared.handler() else {
        return Ok(());
    };
    if epoch != pos.epoch {
        // Restarted again between the two reads: start over later.
        pos.epoch = epoch;
        pos.last = top;
        handler.on_reset(room);
        return Ok(());
    }
    let end = upto.map_or(top, |u| u.saturating_sub(1).min(top));
    // Deliver the unbroken run that follows what was delivered last.
    for e in entries {
        if e.offset > end || e.offset != pos.last + 1 {
            break;
        }
        handler.on_publication(
            room,
            &shared.publication(e.offset, &epoch, &e.node, &e.key, e.envelope),
        );
        pos.last = e.offset;
    }
    if pos.last < end {
        tracing::warn!(
            room,
            from = pos.last + 1,
            to = end,
            "messages missing from the stream"
        );
        handler.on_reset(room);
        pos.last = end;
    }
    Ok(())
}

/// Delivers one pub/sub payload, after filling the gap before it from the
/// stream. An error (the stream could not be read) delivers nothing.
async fn on_message(
    shared: &Shared,
    room: &str,
    pos: &mut RoomPos,
    payload: &[u8],
) -> Result<(), BrokerError> {
    let Some(handler) = shared.handler() else {
        return Ok(());
    };
    if let Some(rest) = payload.strip_prefix(b"p\n") {
        let text = String::from_utf8_lossy(rest);
        let mut it = text.split('\n');
        let (Some(action), Some(user), Some(name), Some(status)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Ok(());
        };
        let action = match action {
            "join" => PresenceAction::Join,
            "leave" => PresenceAction::Leave,
            _ => PresenceAction::Status,
        };
        handler.on_presence(
            room,
            &PresenceEvent {
                action,
                user: Arc::from(user),
                name: Arc::from(name),
                status: parse_status(Some(status)),
            },
        );
        return Ok(());
    }
    // offset \n epoch \n node \n key \n envelope
    let mut parts = payload.splitn(5, |b| *b == b'\n');
    let (Some(off), Some(epoch), Some(node), Some(key), Some(env)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Ok(());
    };
    let Some(offset) = std::str::from_utf8(off)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let epoch = String::from_utf8_lossy(epoch);
    if *epoch != *pos.epoch {
        // A new epoch: Redis lost the room's history. Clients see the new
        // epoch in the envelopes; follow the new stream from its start.
        tracing::info!(room, old = %pos.epoch, new = %epoch, "room restarted with a new epoch");
        pos.epoch = Arc::from(&*epoch);
        pos.last = 0;
    }
    if offset <= pos.last {
        return Ok(());
    }
    if offset > pos.last + 1 {
        catch_up(shared, room, pos, Some(offset)).await?;
    }
    let node = String::from_utf8_lossy(node);
    let key = String::from_utf8_lossy(key);
    let epoch = pos.epoch.clone();
    handler.on_publication(
        room,
        &shared.publication(offset, &epoch, &node, &key, Bytes::copy_from_slice(env)),
    );
    pos.last = offset;
    Ok(())
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
        let (offset, epoch, dup): (u64, String, u8) = s
            .scripts
            .publish
            .key(s.keys.room(room, "m"))
            .key(s.keys.room(room, "s"))
            .key(s.keys.channel(room))
            .key(if req.idempotent {
                s.keys.idem(room, &req.msg_id)
            } else {
                s.keys.room(room, "m")
            })
            .arg(req.parts.head())
            .arg(req.parts.tail())
            .arg(s.history_size)
            .arg(s.ttl.as_secs().max(1))
            .arg(META_TTL.as_secs())
            .arg(new_epoch())
            .arg(&*s.node)
            .arg(req.skip.map(|k| k.to_string()).unwrap_or_default())
            .arg(crate::unix_ms())
            .arg(if req.idempotent { "1" } else { "0" })
            .arg(s.publish_cmd)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(PublishResult {
            offset,
            epoch: Arc::from(epoch),
            duplicate: dup == 1,
        })
    }

    async fn subscribe(&self, room: &Arc<str>) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(SubCmd::Subscribe(room.clone(), tx))
            .map_err(|_| BrokerError::Internal("pub/sub task stopped".into()))?;
        match tokio::time::timeout(COMMAND_TIMEOUT * 2, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(BrokerError::Internal("pub/sub task stopped".into())),
            Err(_) => Err(unavailable("subscribe timed out")),
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
                let cutoff = s.cutoff_ms();
                let mut expect = since + 1;
                let mut pubs = Vec::new();
                let mut whole = true;
                for e in entries {
                    if e.offset != expect || e.time < cutoff {
                        whole = false;
                        break;
                    }
                    pubs.push(s.publication(e.offset, &epoch, &e.node, &e.key, e.envelope));
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
        let mut conn = s.conn.clone();
        let v: Value = s
            .scripts
            .history
            .key(s.keys.room(room, "m"))
            .key(s.keys.room(room, "s"))
            .arg(new_epoch())
            .arg(META_TTL.as_secs())
            .arg(since_arg(since))
            .arg(limit)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let (epoch, top, parts) = position(v, "history")?;
        let mut entries = parts.get(2).map(parse_entries).unwrap_or_default();
        let first = parts.get(3).map(parse_entries).unwrap_or_default();
        let cutoff = s.cutoff_ms();
        if since.is_none() {
            entries.reverse();
        }
        entries.retain(|e| e.time >= cutoff);
        let oldest_held = first
            .first()
            .filter(|e| e.time >= cutoff)
            .map_or(top + 1, |e| e.offset)
            .min(entries.first().map_or(u64::MAX, |e| e.offset));
        let complete = match since {
            Some(since) => since >= top || entries.first().is_some_and(|e| e.offset == since + 1),
            None => top == 0 || oldest_held <= 1,
        };
        let publications = entries
            .into_iter()
            .map(|e| s.publication(e.offset, &epoch, &e.node, &e.key, e.envelope))
            .collect();
        Ok(HistoryPage {
            epoch,
            publications,
            complete,
        })
    }

    async fn ready(&self) -> bool {
        if !self.shared.pubsub_up.load(Ordering::SeqCst) {
            return false;
        }
        let mut conn = self.shared.conn.clone();
        matches!(
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                redis::cmd("PING").query_async::<String>(&mut conn)
            )
            .await,
            Ok(Ok(_))
        )
    }

    async fn close(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
        // Connections cleaned up after themselves; give the lease back.
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let _: Result<(), _> = conn.zrem(s.keys.nodes(), &*s.node).await;
        let _: Result<(), _> = conn.del(s.keys.node_conns(&s.node)).await;
        let _: Result<(), _> = conn.del(s.keys.node_rooms(&s.node)).await;
    }
}

#[async_trait]
impl PresenceManager for RedisBroker {
    async fn join(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        let s = &self.shared;
        let (status, _) = s.user_status_name(&client.user).await;
        s.join_presence(room, client, status).await?;
        s.registry()
            .presence
            .entry(Arc::from(room))
            .or_default()
            .insert(client.conn_id.clone());
        Ok(())
    }

    async fn leave(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        let s = &self.shared;
        // Forget it first: a re-registration running meanwhile then undoes
        // its own entry (see `Shared::register_again`).
        {
            let mut reg = s.registry();
            if let Some(ids) = reg.presence.get_mut(room) {
                ids.remove(&client.conn_id);
                if ids.is_empty() {
                    reg.presence.remove(room);
                }
            }
        }
        let (status, _) = s.user_status_name(&client.user).await;
        s.leave_presence(room, &client.conn_id, &client.user, &client.name, status)
            .await
    }

    async fn list(&self, room: &str, limit: usize) -> Result<PresencePage, BrokerError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let all: HashMap<String, String> = conn
            .hgetall(s.keys.room(room, "p"))
            .await
            .map_err(unavailable)?;
        let mut by_user: HashMap<String, (String, u32)> = HashMap::new();
        for v in all.values() {
            let mut it = v.split('\u{1f}');
            let (Some(user), Some(name)) = (it.next(), it.next()) else {
                continue;
            };
            let e = by_user
                .entry(user.to_string())
                .or_insert_with(|| (name.to_string(), 0));
            e.1 += 1;
        }
        let total = by_user.len();
        let mut listed: Vec<(String, (String, u32))> = by_user.into_iter().collect();
        if listed.len() > limit {
            listed.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
            listed.truncate(limit);
        }
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        // Statuses of the listed users only, asked all at once (the user
        // keys may live on different cluster masters: no pipeline).
        let statuses = futures_util::future::try_join_all(listed.iter().map(|(user, _)| {
            let mut conn = s.conn.clone();
            let key = s.keys.user(user);
            async move { conn.hget::<_, _, Option<String>>(key, "s").await }
        }))
        .await
        .map_err(unavailable)?;
        let members = listed
            .into_iter()
            .zip(statuses)
            .map(|((user, (name, connections)), status)| Member {
                user,
                name,
                // Present means connected, whatever a stale status says.
                status: match parse_status(status.as_deref()) {
                    Status::Offline => Status::Online,
                    other => other,
                },
                connections,
            })
            .collect();
        Ok(PresencePage { members, total })
    }

    async fn connect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let s = &self.shared;
        s.register_conn(client).await?;
        s.registry()
            .conns
            .insert(client.conn_id.clone(), client.clone());
        Ok(())
    }

    async fn disconnect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let s = &self.shared;
        s.registry().conns.remove(&client.conn_id);
        s.unregister_conn(client).await
    }

    async fn set_status(&self, user: &str, status: Status) -> Result<(), BrokerError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let key = s.keys.user(user);
        let (prev, name): (Option<String>, Option<String>) =
            conn.hmget(&key, &["s", "n"]).await.map_err(unavailable)?;
        if parse_status(prev.as_deref()) == status {
            return Ok(());
        }
        let _: () = conn
            .hset(&key, "s", status.as_str())
            .await
            .map_err(unavailable)?;
        let rooms: Vec<String> = conn
            .smembers(s.keys.user_rooms(user))
            .await
            .map_err(unavailable)?;
        let name = name.unwrap_or_else(|| user.to_string());
        for room in rooms {
            let payload = format!("p\nstatus\n{user}\n{name}\n{}", status.as_str());
            let _: i64 = redis::cmd(s.publish_cmd)
                .arg(s.keys.channel(&room))
                .arg(payload)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn user_status(&self, user: &str) -> Result<UserStatus, BrokerError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let (c, st, l): (Option<i64>, Option<String>, Option<i64>) = conn
            .hmget(s.keys.user(user), &["c", "s", "l"])
            .await
            .map_err(unavailable)?;
        let connections = c.unwrap_or(0).max(0) as u32;
        Ok(if connections > 0 {
            UserStatus {
                status: parse_status(st.as_deref()),
                connections,
                last_seen: None,
            }
        } else {
            UserStatus {
                status: Status::Offline,
                connections: 0,
                last_seen: l,
            }
        })
    }
}

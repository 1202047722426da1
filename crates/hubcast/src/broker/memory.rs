//! The in-memory engine: one node, everything in this process.
//!
//! Each room has a log (epoch, latest offset, bounded history, idempotency
//! window) behind its own mutex; publishing assigns the offset and hands the
//! publication to the handler while holding that mutex, which is what keeps
//! delivery in offset order. The locks are `std` mutexes: nothing awaits
//! while holding one, and the handler only queues frames.
//!
//! A room's log is created on first use with a fresh random epoch and is
//! dropped when it has no subscribers, no history and no idempotency entries
//! left: a later use starts a new epoch, so clients know their offsets are
//! void.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    Broker, BrokerError, BrokerHandler, ClientInfo, HistoryPage, PresenceEvent, PresenceManager,
    PresencePage, Publication, PublishRequest, PublishResult, Recovery, UserStatus,
};
use crate::lock;
use crate::protocol::{Member, PresenceAction, Status};
use crate::small::{SmallSet, shared_key};

/// Room log shards: enough that unrelated rooms rarely share a lock.
const SHARDS: usize = 64;
/// Most client `msgId`s remembered per room; past it the oldest are
/// forgotten early (bounds memory under a flood of unique ids).
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// Most offline users whose status (`offline`, last seen) is remembered;
/// past it the longest offline are forgotten before their time (bounds
/// memory when many distinct users come and go).
pub const MAX_OFFLINE_USERS: usize = 100_000;
/// Most dropped room logs whose position (epoch, latest offset) is
/// remembered, so the room's next log continues it; past it the oldest are
/// forgotten and every log created afterwards gets a new epoch.
pub const MAX_TOMBSTONES: usize = 100_000;

/// One shard of room logs.
type LogShard = Mutex<HashMap<Arc<str>, Room>>;

/// A room the engine knows of.
enum Room {
    /// Subscribed, and no message since its last log (if any) was dropped
    /// with nothing to remember: its log would be empty, at offset 0, with
    /// the epoch `seed` gives, so only the count is kept until a message
    /// comes. Every connection's personal room is one of these until
    /// somebody sends to it (a log cost each about 250 bytes).
    Quiet { subscribed: u32, seed: u64 },
    /// A room with a log.
    Log(Arc<Mutex<RoomLog>>),
}

/// The in-memory broker.
pub struct MemoryBroker {
    /// Room logs by name, sharded by hash.
    shards: Box<[LogShard]>,
    /// Hashes room names to shards.
    hasher: RandomState,
    /// Where dropped logs stood.
    tombs: Mutex<Tombs>,
    /// Presence and user status.
    presence: Mutex<PresenceState>,
    /// Where publications and presence events go.
    handler: OnceLock<Weak<dyn BrokerHandler>>,
    /// Messages kept per room.
    history_size: usize,
    /// How long messages and msgIds are kept.
    ttl: Duration,
    /// Stops the sweeper.
    cancel: CancellationToken,
    /// Owns the sweeper task.
    tasks: TaskTracker,
}

/// One room's stream.
struct RoomLog {
    /// Changes when the log is recreated; offsets restart with it.
    epoch: Arc<str>,
    /// Latest offset assigned (0: none yet).
    top: u64,
    /// Retained messages, oldest first, with their arrival time.
    history: VecDeque<(Instant, Arc<Publication>)>,
    /// Client msgIds seen within the window, with their offset.
    ids: HashMap<Box<str>, u64>,
    /// The same ids in arrival order, for expiry.
    id_order: VecDeque<(Instant, Box<str>)>,
    /// Nodes subscribed (here: 0 or 1); a subscribed log is never dropped.
    subscribed: usize,
    /// Removed from its shard: whoever still holds it takes the room's log
    /// anew (see [`MemoryBroker::with_log`]).
    dropped: bool,
}

/// Where dropped room logs stood, so that dropping an idle log (to keep
/// memory bounded) does not change its room's epoch: a client that comes
/// back with `since` and the old epoch still recovers when nothing it
/// missed is gone.
///
/// A log that never had a message is not remembered: its room's next log
/// gets the same epoch anyway, a hash of the room and `seed`. A log with
/// messages is (its epoch and latest offset; its next log continues the
/// offsets with an empty history), up to [`MAX_TOMBSTONES`]; forgetting one
/// changes `seed`, so that room's next log cannot reuse an epoch whose
/// offsets it would repeat.
struct Tombs {
    seed: u64,
    by_room: HashMap<Arc<str>, (u64, Arc<str>, u64)>,
    /// (room, entry number) oldest first; stale when the room's entry has
    /// another number.
    order: VecDeque<(Arc<str>, u64)>,
    next: u64,
}

impl Tombs {
    fn new() -> Self {
        Self {
            seed: rand_seed(),
            by_room: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    fn remember(&mut self, room: Arc<str>, epoch: Arc<str>, top: u64) {
        self.next += 1;
        self.by_room.insert(room.clone(), (self.next, epoch, top));
        self.order.push_back((room, self.next));
        while self.by_room.len() > MAX_TOMBSTONES {
            let Some((room, n)) = self.order.pop_front() else {
                break;
            };
            if self.by_room.get(&room).is_some_and(|e| e.0 == n) {
                self.by_room.remove(&room);
                self.seed = rand_seed();
            }
        }
        // Stale entries (rooms whose log came back) must not pile up.
        if self.order.len() > 2 * MAX_TOMBSTONES {
            let by_room = &self.by_room;
            self.order
                .retain(|(room, n)| by_room.get(room).is_some_and(|e| e.0 == *n));
        }
    }
}

fn rand_seed() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

impl RoomLog {
    fn new(epoch: Arc<str>, top: u64) -> Self {
        Self {
            epoch,
            top,
            history: VecDeque::new(),
            ids: HashMap::new(),
            id_order: VecDeque::new(),
            subscribed: 0,
            dropped: false,
        }
    }

    /// Drops what is past its time or over the bounds.
    fn trim(&mut self, now: Instant, ttl: Duration, size: usize) {
        while self.history.len() > size {
            self.history.pop_front();
        }
        while self.history.front().is_some_and(|(at, _)| *at + ttl <= now) {
            self.history.pop_front();
        }
        while let Some((at, _)) = self.id_order.front() {
            if *at + ttl > now && self.id_order.len() <= MAX_IDEMPOTENCY_KEYS {
                break;
            }
            if let Some((_, id)) = self.id_order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }

    /// Oldest offset still held (top + 1 when nothing is).
    fn oldest(&self) -> u64 {
        self.history.front().map_or(self.top + 1, |(_, p)| p.offset)
    }

    fn is_idle(&self) -> bool {
        self.subscribed == 0 && self.history.is_empty() && self.ids.is_empty()
    }

    /// Trims, then marks the log dropped if nothing is left in it; true
    /// when the caller (holding the shard's lock) must remove it.
    fn drop_if_idle(&mut self, now: Instant, ttl: Duration, size: usize) -> bool {
        self.trim(now, ttl, size);
        self.dropped = self.is_idle();
        self.dropped
    }
}

fn now_ms() -> i64 {
    crate::unix_ms()
}

#[derive(Default)]
struct PresenceState {
    /// room → user → the user's presence in it.
    rooms: HashMap<Arc<str>, HashMap<Arc<str>, RoomMember>>,
    /// user → status and connections.
    /// Boxed: the table holds a pointer per user, so its slack (a hash
    /// table is 44-88% full) costs 8 bytes a slot, not a whole record.
    users: HashMap<Arc<str>, Box<UserState>>,
    /// Users as they went offline, oldest first (entries of users who came
    /// back are skipped when popped): expiry and the cap on offline users.
    offline: VecDeque<(Instant, Arc<str>)>,
}

impl PresenceState {
    /// Forgets `user` if it is still offline since `since`.
    fn forget(&mut self, since: Instant, user: &Arc<str>) {
        if self
            .users
            .get(user)
            .is_some_and(|u| u.connections == 0 && u.offline_since == Some(since))
        {
            self.users.remove(user);
        }
    }
}

struct RoomMember {
    name: Arc<str>,
    /// The user's connections in the room.
    conns: SmallSet<Arc<str>>,
}

struct UserState {
    status: Status,
    connections: u32,
    /// Rooms the user is present in (for status events); the names are
    /// those of `PresenceState::rooms`.
    rooms: SmallSet<Arc<str>>,
    /// Unix ms of the last disconnect.
    last_seen: Option<i64>,
    /// When the user went offline, for forgetting them later.
    offline_since: Option<Instant>,
}

impl UserState {
    /// A user seen for the first time: online, no connection yet.
    fn new() -> Self {
        Self {
            status: Status::Online,
            connections: 0,
            rooms: SmallSet::default(),
            last_seen: None,
            offline_since: None,
        }
    }
}

impl MemoryBroker {
    /// A broker keeping `history_size` messages per room for `ttl`; starts a
    /// sweeper task that stops on [`Broker::close`].
    pub fn new(history_size: usize, ttl: Duration) -> Arc<Self> {
        let broker = Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            tombs: Mutex::new(Tombs::new()),
            presence: Mutex::new(PresenceState::default()),
            handler: OnceLock::new(),
            history_size,
            ttl,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let weak = Arc::downgrade(&broker);
        let cancel = broker.cancel.clone();
        let period = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        broker.tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(b) = weak.upgrade() else { return };
                b.sweep();
            }
        });
        broker.tasks.close();
        broker
    }

    fn shard(&self, room: &str) -> &LogShard {
        let i = self.hasher.hash_one(room) as usize % SHARDS;
        &self.shards[i]
    }

    /// Runs `f` on the room's log (created if missing) under its lock. A
    /// log found dropped (the sweep or the last unsubscribe removed it
    /// between the lookup and the lock) is looked up again, so nothing is
    /// ever written to a log the room no longer has.
    fn with_log<R>(&self, room: &str, f: impl FnOnce(&mut RoomLog) -> R) -> R {
        loop {
            let log = self.log(room);
            let mut log = lock(&log);
            if !log.dropped {
                return f(&mut log);
            }
        }
    }

    /// Runs `f` on the room's log, or on what its log would be when it has
    /// none (a quiet or unknown room: empty, at its remembered offset or at
    /// 0), without creating one: reading a room's position must not cost
    /// memory.
    fn read_log<R>(&self, room: &str, f: impl FnOnce(&mut RoomLog) -> R) -> R {
        loop {
            let log = {
                let shard = lock(self.shard(room));
                match shard.get(room) {
                    Some(Room::Log(log)) => log.clone(),
                    Some(Room::Quiet { seed, .. }) => {
                        return f(&mut RoomLog::new(self.fresh_epoch(*seed, room), 0));
                    }
                    None => {
                        let (epoch, top) = self.next_log_start(&lock(&self.tombs), room);
                        return f(&mut RoomLog::new(epoch, top));
                    }
                }
            };
            let mut log = lock(&log);
            if !log.dropped {
                return f(&mut log);
            }
        }
    }

    /// Where the room's next log starts (epoch, latest offset): where its
    /// last one stood if that is remembered, else afresh at 0.
    fn next_log_start(&self, tombs: &Tombs, room: &str) -> (Arc<str>, u64) {
        match tombs.by_room.get(room) {
            Some((_, epoch, top)) => (epoch.clone(), *top),
            None => (self.fresh_epoch(tombs.seed, room), 0),
        }
    }

    /// The epoch of a room's log that starts afresh (no tombstone).
    fn fresh_epoch(&self, seed: u64, room: &str) -> Arc<str> {
        let h = self.hasher.hash_one((seed, room));
        Arc::from(format!("{:08x}", h >> 32))
    }

    /// `publish` on the room's locked log.
    fn publish_locked(
        &self,
        log: &mut RoomLog,
        req: PublishRequest,
        handler: Option<Arc<dyn BrokerHandler>>,
        now: Instant,
    ) -> Result<PublishResult, BrokerError> {
        log.trim(now, self.ttl, self.history_size);
        if req.idempotent
            && let Some(&offset) = log.ids.get(req.msg_id.as_str())
        {
            return Ok(PublishResult {
                offset,
                epoch: log.epoch.clone(),
                duplicate: true,
            });
        }
        log.top += 1;
        let offset = log.top;
        let publication = Arc::new(Publication {
            offset,
            epoch: log.epoch.clone(),
            skip: req.skip,
            envelope: req.parts.encode(offset, &log.epoch),
        });
        if self.history_size > 0 {
            log.history.push_back((now, publication.clone()));
            if log.history.len() > self.history_size {
                log.history.pop_front();
            }
        }
        if req.idempotent {
            let id: Box<str> = req.msg_id.into_boxed_str();
            log.ids.insert(id.clone(), offset);
            log.id_order.push_back((now, id));
            if log.id_order.len() > MAX_IDEMPOTENCY_KEYS {
                log.trim(now, self.ttl, self.history_size);
            }
        }
        let epoch = log.epoch.clone();
        // Delivered under the room's lock: this is what keeps every
        // subscriber's stream in offset order.
        if let Some(h) = handler {
            h.on_publication(&req.room, &publication);
        }
        Ok(PublishResult {
            offset,
            epoch,
            duplicate: false,
        })
    }

    /// `recover` on the room's locked log.
    fn recover_locked(&self, log: &mut RoomLog, since: Option<(u64, Option<&str>)>) -> Recovery {
        log.trim(Instant::now(), self.ttl, self.history_size);
        let mut rec = Recovery {
            top: log.top,
            epoch: log.epoch.clone(),
            recovered: false,
            publications: Vec::new(),
        };
        if let Some((since, epoch)) = since {
            let same_epoch = epoch.is_none_or(|e| *e == *log.epoch);
            if same_epoch && since <= log.top && log.oldest() <= since + 1 {
                rec.recovered = true;
                rec.publications = log
                    .history
                    .iter()
                    .filter(|(_, p)| p.offset > since)
                    .map(|(_, p)| p.clone())
                    .collect();
            }
        }
        rec
    }

    /// `history` on the room's locked log.
    fn history_locked(&self, log: &mut RoomLog, since: Option<u64>, limit: usize) -> HistoryPage {
        log.trim(Instant::now(), self.ttl, self.history_size);
        let oldest = log.oldest();
        let (publications, complete) = match since {
            Some(since) => (
                log.history
                    .iter()
                    .filter(|(_, p)| p.offset > since)
                    .take(limit)
                    .map(|(_, p)| p.clone())
                    .collect(),
                oldest <= since.saturating_add(1),
            ),
            None => {
                let skip = log.history.len().saturating_sub(limit);
                (
                    log.history
                        .iter()
                        .skip(skip)
                        .map(|(_, p)| p.clone())
                        .collect(),
                    oldest <= 1,
                )
            }
        };
        HistoryPage {
            epoch: log.epoch.clone(),
            publications,
            complete,
        }
    }

    /// The room's log, created if missing.
    fn log(&self, room: &str) -> Arc<Mutex<RoomLog>> {
        let mut shard = lock(self.shard(room));
        match shard.get_mut(room) {
            Some(Room::Log(log)) => return log.clone(),
            Some(entry @ Room::Quiet { .. }) => {
                let Room::Quiet { subscribed, seed } = *entry else {
                    unreachable!("matched Quiet above")
                };
                let mut log = RoomLog::new(self.fresh_epoch(seed, room), 0);
                log.subscribed = subscribed as usize;
                let log = Arc::new(Mutex::new(log));
                *entry = Room::Log(log.clone());
                return log;
            }
            None => {}
        }
        let (epoch, top) = {
            let mut t = lock(&self.tombs);
            let start = self.next_log_start(&t, room);
            // The log continues from here: its tombstone is spent.
            t.by_room.remove(room);
            start
        };
        let log = Arc::new(Mutex::new(RoomLog::new(epoch, top)));
        shard.insert(Arc::from(room), Room::Log(log.clone()));
        log
    }

    /// Called with the shard's lock held when `log` of `room` is dropped.
    fn remember(&self, room: &Arc<str>, log: &RoomLog) {
        if log.top > 0 {
            lock(&self.tombs).remember(room.clone(), log.epoch.clone(), log.top);
        }
    }

    /// Expires history, msgIds, idle logs and long-offline users.
    fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|room, log| {
                let Room::Log(log) = log else {
                    // Quiet rooms are subscribed: they stay.
                    return true;
                };
                let mut log = lock(log);
                let drop = log.drop_if_idle(now, self.ttl, self.history_size);
                if drop {
                    self.remember(room, &log);
                }
                !drop
            });
        }
        let mut p = lock(&self.presence);
        while let Some((since, _)) = p.offline.front()
            && *since + self.ttl <= now
        {
            if let Some((since, user)) = p.offline.pop_front() {
                p.forget(since, &user);
            }
        }
    }

    fn emit(&self, room: &str, event: PresenceEvent) {
        if let Some(h) = self.handler.get().and_then(Weak::upgrade) {
            h.on_presence(room, &event);
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        let _ = self.handler.set(handler);
    }

    async fn publish(&self, req: PublishRequest) -> Result<PublishResult, BrokerError> {
        let handler = self.handler.get().and_then(Weak::upgrade);
        let now = Instant::now();
        let room = req.room.clone();
        self.with_log(&room, |log| self.publish_locked(log, req, handler, now))
    }

    async fn subscribe(&self, room: &Arc<str>) -> Result<(), BrokerError> {
        {
            let mut shard = lock(self.shard(room));
            match shard.get_mut(room) {
                // A log in its shard is never a dropped one.
                Some(Room::Log(log)) => lock(log).subscribed += 1,
                Some(Room::Quiet { subscribed, .. }) => *subscribed += 1,
                None => {
                    let t = lock(&self.tombs);
                    if t.by_room.contains_key(room) {
                        // Its log continues the remembered offsets.
                        drop(t);
                        drop(shard);
                        self.with_log(room, |log| log.subscribed += 1);
                    } else {
                        let seed = t.seed;
                        drop(t);
                        shard.insert(
                            room.clone(),
                            Room::Quiet {
                                subscribed: 1,
                                seed,
                            },
                        );
                    }
                }
            }
        }
        Ok(())
    }

    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError> {
        // Under the shard's lock, so the log can go at once when it is idle
        // (an anonymous connection's personal room, say) instead of waiting
        // for the sweep.
        let mut shard = lock(self.shard(room));
        if let Some(Room::Quiet { subscribed, .. }) = shard.get_mut(room) {
            *subscribed = subscribed.saturating_sub(1);
            if *subscribed == 0 {
                shard.remove(room);
            }
            return Ok(());
        }
        if let Some((name, Room::Log(log))) = shard.get_key_value(room) {
            let idle = {
                let mut log = lock(log);
                log.subscribed = log.subscribed.saturating_sub(1);
                let idle = log.drop_if_idle(Instant::now(), self.ttl, self.history_size);
                if idle {
                    self.remember(name, &log);
                }
                idle
            };
            if idle {
                shard.remove(room);
            }
        }
        Ok(())
    }

    async fn recover(
        &self,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<Recovery, BrokerError> {
        Ok(self.read_log(room, |log| self.recover_locked(log, since)))
    }

    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        Ok(self.read_log(room, |log| self.history_locked(log, since, limit)))
    }
    async fn ready(&self) -> bool {
        true
    }

    async fn close(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

#[async_trait]
impl PresenceManager for MemoryBroker {
    async fn join(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        // The room's name is allocated once, for its first member.
        let name = shared_key(&p.rooms, room);
        let members = p.rooms.entry(name.clone()).or_default();
        let first = match members.entry(client.user.clone()) {
            Entry::Occupied(mut e) => {
                let m = e.get_mut();
                m.name = client.name.clone();
                m.conns.insert(client.conn_id.clone()) && m.conns.len() == 1
            }
            Entry::Vacant(e) => {
                e.insert(RoomMember {
                    name: client.name.clone(),
                    conns: SmallSet::from(client.conn_id.clone()),
                });
                true
            }
        };
        let user = p
            .users
            .entry(client.user.clone())
            .or_insert_with(|| Box::new(UserState::new()));
        user.rooms.insert(name);
        let status = user.status;
        if first {
            // Emitted under the presence lock so events keep their order.
            self.emit(
                room,
                PresenceEvent {
                    action: PresenceAction::Join,
                    user: client.user.clone(),
                    name: client.name.clone(),
                    status,
                },
            );
        }
        Ok(())
    }

    async fn leave(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        let Some(members) = p.rooms.get_mut(room) else {
            return Ok(());
        };
        let Some(member) = members.get_mut(&client.user) else {
            return Ok(());
        };
        if !member.conns.remove(&client.conn_id) || !member.conns.is_empty() {
            return Ok(());
        }
        let name = member.name.clone();
        members.remove(&client.user);
        if members.is_empty() {
            p.rooms.remove(room);
        }
        let status = match p.users.get_mut(&client.user) {
            Some(u) => {
                u.rooms.remove(room);
                u.status
            }
            None => Status::Online,
        };
        self.emit(
            room,
            PresenceEvent {
                action: PresenceAction::Leave,
                user: client.user.clone(),
                name,
                status,
            },
        );
        Ok(())
    }

    async fn list(&self, room: &str, limit: usize) -> Result<PresencePage, BrokerError> {
        let p = lock(&self.presence);
        let Some(members) = p.rooms.get(room) else {
            return Ok(PresencePage::default());
        };
        let total = members.len();
        // The first `limit` user ids, without building every member.
        let mut users: Vec<&Arc<str>> = members.keys().collect();
        if users.len() > limit {
            users.select_nth_unstable(limit);
            users.truncate(limit);
        }
        let mut list: Vec<Member> = users
            .into_iter()
            .filter_map(|user| {
                let m = members.get(user)?;
                Some(Member {
                    user: user.to_string(),
                    name: m.name.to_string(),
                    status: p.users.get(user).map_or(Status::Online, |u| u.status),
                    connections: m.conns.len() as u32,
                })
            })
            .collect();
        list.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(PresencePage {
            members: list,
            total,
        })
    }

    async fn connect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        let user = p
            .users
            .entry(client.user.clone())
            .or_insert_with(|| Box::new(UserState::new()));
        if user.connections == 0 {
            user.status = Status::Online;
        }
        user.connections += 1;
        user.offline_since = None;
        Ok(())
    }

    async fn disconnect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        let now = Instant::now();
        let Some(user) = p.users.get_mut(&client.user) else {
            return Ok(());
        };
        user.connections = user.connections.saturating_sub(1);
        if user.connections > 0 {
            return Ok(());
        }
        if client.ephemeral && user.rooms.is_empty() {
            // Nobody can connect as this user again: nothing to remember.
            p.users.remove(&client.user);
            return Ok(());
        }
        user.status = Status::Offline;
        user.last_seen = Some(now_ms());
        user.offline_since = Some(now);
        p.offline.push_back((now, client.user.clone()));
        while p.offline.len() > MAX_OFFLINE_USERS {
            if let Some((since, user)) = p.offline.pop_front() {
                p.forget(since, &user);
            }
        }
        Ok(())
    }

    async fn set_status(&self, user: &str, status: Status) -> Result<(), BrokerError> {
        let mut p = lock(&self.presence);
        let Some(state) = p.users.get_mut(user) else {
            return Ok(());
        };
        if state.status == status {
            return Ok(());
        }
        state.status = status;
        let rooms: Vec<Arc<str>> = state.rooms.iter().cloned().collect();
        let user: Arc<str> = Arc::from(user);
        for room in rooms {
            let name = p
                .rooms
                .get(&room)
                .and_then(|m| m.get(&user))
                .map_or_else(|| user.clone(), |m| m.name.clone());
            self.emit(
                &room,
                PresenceEvent {
                    action: PresenceAction::Status,
                    user: user.clone(),
                    name,
                    status,
                },
            );
        }
        Ok(())
    }

    async fn user_status(&self, user: &str) -> Result<UserStatus, BrokerError> {
        let p = lock(&self.presence);
        Ok(match p.users.get(user) {
            Some(u) if u.connections > 0 => UserStatus {
                status: u.status,
                connections: u.connections,
                last_seen: None,
            },
            Some(u) => UserStatus {
                status: Status::Offline,
                connections: 0,
                last_seen: u.last_seen,
            },
            None => UserStatus {
                status: Status::Offline,
                connections: 0,
                last_seen: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EnvelopeParts;

    fn req(room: &str, msg_id: &str, idempotent: bool) -> PublishRequest {
        PublishRequest {
            room: Arc::from(room),
            msg_id: msg_id.into(),
            idempotent,
            parts: EnvelopeParts::new(room, msg_id, 1, "e", "u", "1"),
            skip: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_history_idempotency_and_expiry() {
        let b = MemoryBroker::new(3, Duration::from_secs(10));
        let r1 = b.publish(req("r", "a", true)).await.unwrap();
        let r2 = b.publish(req("r", "b", false)).await.unwrap();
        assert_eq!((r1.offset, r2.offset), (1, 2));
        let dup = b.publish(req("r", "a", true)).await.unwrap();
        assert!(dup.duplicate);
        assert_eq!(dup.offset, 1);
        for i in 0..3 {
            b.publish(req("r", &format!("x{i}"), false)).await.unwrap();
        }
        // history_size 3: offsets 3..=5 remain.
        let page = b.history("r", None, 100).await.unwrap();
        let offs: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offs, vec![3, 4, 5]);
        assert!(!page.complete);
        let rec = b.recover("r", Some((2, Some(&*r1.epoch)))).await.unwrap();
        assert!(rec.recovered);
        assert_eq!(rec.publications.len(), 3);
        let rec = b.recover("r", Some((1, None))).await.unwrap();
        assert!(!rec.recovered, "offset 2 was trimmed");
        let rec = b.recover("r", Some((5, Some("other")))).await.unwrap();
        assert!(!rec.recovered, "epoch mismatch");
        tokio::time::advance(Duration::from_secs(11)).await;
        let page = b.history("r", Some(0), 100).await.unwrap();
        assert!(page.publications.is_empty());
        let again = b.publish(req("r", "a", true)).await.unwrap();
        assert!(!again.duplicate, "msgId window expired");
        b.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscribed_room_without_messages_holds_no_log() {
        let b = MemoryBroker::new(10, Duration::from_secs(1));
        let quiet = |b: &MemoryBroker| {
            matches!(
                lock(b.shard("p")).get("p"),
                Some(Room::Quiet { subscribed: _, .. })
            )
        };
        // Reading an unknown room's position creates nothing.
        let e0 = b.recover("p", None).await.unwrap().epoch;
        b.history("p", None, 10).await.unwrap();
        assert!(lock(b.shard("p")).get("p").is_none());
        b.subscribe(&"p".into()).await.unwrap();
        b.subscribe(&"p".into()).await.unwrap();
        assert!(quiet(&b), "two subscriptions, still no log");
        let rec = b.recover("p", Some((0, Some(&*e0)))).await.unwrap();
        assert_eq!((rec.top, rec.recovered), (0, true));
        assert_eq!(rec.epoch, e0, "the epoch is the one its log will have");
        // The sweep keeps it; the first message makes the log, in that
        // epoch, keeping both subscriptions.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(quiet(&b));
        let r = b.publish(req("p", "a", false)).await.unwrap();
        assert_eq!((r.epoch.clone(), r.offset), (e0.clone(), 1));
        assert!(matches!(lock(b.shard("p")).get("p"), Some(Room::Log(_))));
        b.unsubscribe("p").await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            lock(b.shard("p")).get("p").is_some(),
            "one subscription left: kept though its message expired"
        );
        b.unsubscribe("p").await.unwrap();
        assert!(lock(b.shard("p")).get("p").is_none());
        // It had a message: a new subscription continues its offsets (a
        // log from the tombstone, not a quiet room at 0).
        b.subscribe(&"p".into()).await.unwrap();
        assert!(matches!(lock(b.shard("p")).get("p"), Some(Room::Log(_))));
        assert_eq!(b.recover("p", None).await.unwrap().top, 1);

        // A quiet room's last unsubscribe forgets it.
        b.subscribe(&"q".into()).await.unwrap();
        b.unsubscribe("q").await.unwrap();
        b.unsubscribe("q").await.unwrap();
        assert!(lock(b.shard("q")).get("q").is_none());
        b.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_idle_log_keeps_its_epoch_and_offsets() {
        let b = MemoryBroker::new(10, Duration::from_secs(1));
        // Never published: dropped at the last unsubscribe, and the room's
        // next log has the same epoch, so a client at offset 0 recovers.
        b.subscribe(&"quiet".into()).await.unwrap();
        let e0 = b.recover("quiet", None).await.unwrap().epoch;
        b.unsubscribe("quiet").await.unwrap();
        assert!(lock(b.shard("quiet")).get("quiet").is_none(), "dropped");
        let r = b.publish(req("quiet", "a", false)).await.unwrap();
        assert_eq!((r.epoch.clone(), r.offset), (e0.clone(), 1));
        let rec = b.recover("quiet", Some((0, Some(&*e0)))).await.unwrap();
        assert!(rec.recovered);
        assert_eq!(rec.publications.len(), 1);

        // With messages: once they expired the log goes, and the next one
        // continues its offsets in the same epoch.
        let e1 = b.publish(req("r", "a", false)).await.unwrap().epoch;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(lock(b.shard("r")).get("r").is_none(), "swept");
        let rec = b.recover("r", Some((1, Some(&*e1)))).await.unwrap();
        assert!(rec.recovered, "nothing after offset 1 was missed");
        let rec = b.recover("r", Some((0, Some(&*e1)))).await.unwrap();
        assert!(!rec.recovered, "offset 1 expired");
        let r = b.publish(req("r", "b", false)).await.unwrap();
        assert_eq!((r.epoch.clone(), r.offset), (e1.clone(), 2));
        b.close().await;
    }

    #[test]
    fn forgetting_a_tombstone_changes_fresh_epochs() {
        let mut t = Tombs::new();
        let seed = t.seed;
        for i in 0..MAX_TOMBSTONES {
            t.remember(Arc::from(format!("r{i}").as_str()), Arc::from("e"), 3);
        }
        // A room remembered twice is one entry.
        t.remember(Arc::from("r1"), Arc::from("e"), 4);
        assert_eq!(t.seed, seed);
        assert_eq!(t.by_room.len(), MAX_TOMBSTONES);
        t.remember(Arc::from("one-more"), Arc::from("e"), 1);
        assert_eq!(t.by_room.len(), MAX_TOMBSTONES);
        assert!(!t.by_room.contains_key("r0"), "the oldest went");
        assert_ne!(t.seed, seed, "so r0's next log cannot reuse its epoch");
        assert_eq!(t.by_room["r1"].2, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn offline_users_are_remembered_for_a_while_and_within_a_cap() {
        let b = MemoryBroker::new(10, Duration::from_secs(60));
        let client = |u: usize| ClientInfo {
            conn_id: Arc::from(format!("c{u}").as_str()),
            user: Arc::from(format!("u{u}").as_str()),
            name: Arc::from("n"),
            ephemeral: false,
        };
        // One more distinct user than the cap comes and goes; the first to
        // leave is forgotten at once, the rest keep their last-seen time.
        for u in 0..=MAX_OFFLINE_USERS {
            b.connect(&client(u)).await.unwrap();
            b.disconnect(&client(u)).await.unwrap();
        }
        assert_eq!(b.user_status("u0").await.unwrap().last_seen, None);
        assert!(b.user_status("u1").await.unwrap().last_seen.is_some());
        assert_eq!(lock(&b.presence).users.len(), MAX_OFFLINE_USERS);
        // A user who came back is not forgotten by its old entry.
        b.connect(&client(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        b.sweep();
        assert_eq!(b.user_status("u1").await.unwrap().connections, 1);
        assert_eq!(b.user_status("u2").await.unwrap().last_seen, None);
        {
            let p = lock(&b.presence);
            assert_eq!(p.users.len(), 1);
            assert!(p.offline.is_empty());
        }
        b.close().await;
    }
}

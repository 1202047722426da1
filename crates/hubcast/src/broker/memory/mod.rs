//! The in-memory engine: one node, everything in this process.
//!
//! Each room has a log (epoch, latest offset, bounded history, idempotency
//! window) behind its own mutex; publishing assigns the offset and hands the
//! publication to the handler while holding that mutex, which is what keeps
//! delivery in offset order. The locks are `std` mutexes: nothing awaits
//! while holding one, and the handler only queues frames.
//!
//! A room's log is dropped when it has no subscribers, no history and no
//! idempotency entries left; its next log continues it (the same epoch, or
//! where a tombstone says the dropped log stood: see `log::Tombs`), so a
//! client that returns with `since` still recovers.
//!
//! Layout: `log` holds a room's stream (history, idempotency window, the
//! positions of dropped logs); `presence` holds room presence and user
//! status; this file shards the logs and implements [`Broker`].

mod log;
mod presence;
#[cfg(test)]
mod tests;
mod webhooks;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::log::{RoomLog, Tombs};
use self::presence::PresenceState;
use super::{
    Broker, BrokerError, BrokerHandler, ControlSink, HistoryPage, PresenceEvent, PublishRequest,
    PublishResult, Recovery, Unavailability, UserCommand, UserControls,
};
use crate::lock;
use crate::rules::{History, Rules};

/// Room log shards: enough that unrelated rooms rarely share a lock.
const SHARDS: usize = 64;
/// Most client `msgId`s remembered per room; past it the oldest are
/// forgotten early (bounds memory under a flood of unique ids).
pub(crate) const MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// Most offline users whose status (`offline`, last seen) is remembered;
/// past it the longest offline are forgotten before their time (bounds
/// memory when many distinct users come and go).
pub(crate) const MAX_OFFLINE_USERS: usize = 100_000;
/// Most dropped room logs whose position (epoch, latest offset) is
/// remembered, so the room's next log continues it; past it the oldest are
/// forgotten and every log created afterwards gets a new epoch.
pub(crate) const MAX_TOMBSTONES: usize = 100_000;

/// One shard of room logs.
type LogShard = Mutex<HashMap<Arc<str>, Room>>;

/// A room the engine knows of.
enum Room {
    /// Subscribed, and no message since its last log (if any) was dropped
    /// with nothing to remember: its log would be empty, at offset 0, with
    /// the epoch `seed` gives, so only the count is kept until a message
    /// comes. Every connection's personal room is one of these until
    /// somebody sends to it, so it holds no log.
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
    /// Webhook events (taken after `presence` when both are held).
    events: Mutex<webhooks::EventLog>,
    /// Webhooks are on: without, presence changes never touch `events`.
    webhooks_on: std::sync::atomic::AtomicBool,
    /// Where publications and presence events go.
    handler: OnceLock<Weak<dyn BrokerHandler>>,
    /// Where user controls go: one node, so only here.
    controls: OnceLock<Weak<dyn ControlSink>>,
    /// Blocked user → end of the block (Unix ms; `None`: until
    /// unblocked), for `GET /api/users/blocked`; expired entries go when
    /// the next command or listing comes.
    blocks: Mutex<HashMap<Arc<str>, Option<u64>>>,
    /// What each room keeps (its rule's history size and ttl).
    rules: Arc<Rules>,
    /// How long an offline user's status is remembered: the global
    /// `history_ttl`.
    ttl: Duration,
    /// Stops the sweeper.
    cancel: CancellationToken,
    /// Owns the sweeper task.
    tasks: TaskTracker,
}

impl MemoryBroker {
    /// A broker keeping `history_size` messages per room for `ttl`; starts a
    /// sweeper task that stops on [`Broker::close`].
    pub fn new(history_size: usize, ttl: Duration) -> Arc<Self> {
        Self::with_rules(Arc::new(Rules::uniform(History {
            size: history_size,
            ttl,
        })))
    }

    /// A broker keeping what each room's rule says (`[[rooms]]`, else the
    /// global settings); starts a sweeper task that stops on
    /// [`Broker::close`].
    pub fn with_rules(rules: Arc<Rules>) -> Arc<Self> {
        let ttl = rules.global().history.ttl;
        // Often enough for the room that expires soonest.
        let period =
            (rules.shortest_ttl() / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let broker = Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            tombs: Mutex::new(Tombs::new()),
            presence: Mutex::new(PresenceState::default()),
            events: Mutex::default(),
            webhooks_on: std::sync::atomic::AtomicBool::new(false),
            handler: OnceLock::new(),
            controls: OnceLock::new(),
            blocks: Mutex::new(HashMap::new()),
            rules,
            ttl,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let weak = Arc::downgrade(&broker);
        let cancel = broker.cancel.clone();
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
                        let epoch = self.fresh_epoch(*seed, room);
                        return f(&mut RoomLog::new(epoch, 0, self.rules.history(room)));
                    }
                    None => {
                        let (epoch, top) = self.next_log_start(&lock(&self.tombs), room);
                        return f(&mut RoomLog::new(epoch, top, self.rules.history(room)));
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

    /// The room's log, created if missing.
    fn log(&self, room: &str) -> Arc<Mutex<RoomLog>> {
        let mut shard = lock(self.shard(room));
        match shard.get_mut(room) {
            Some(Room::Log(log)) => return log.clone(),
            Some(entry @ Room::Quiet { .. }) => {
                let Room::Quiet { subscribed, seed } = *entry else {
                    unreachable!("matched Quiet above")
                };
                let mut log =
                    RoomLog::new(self.fresh_epoch(seed, room), 0, self.rules.history(room));
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
        let log = RoomLog::new(epoch, top, self.rules.history(room));
        let log = Arc::new(Mutex::new(log));
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
                let drop = log.drop_if_idle(now);
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
                let idle = log.drop_if_idle(Instant::now());
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
    async fn ready(&self) -> Result<(), Unavailability> {
        Ok(())
    }

    async fn close(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

// One node: a command is applied here and now, and nothing outlives the
// process, so there is nothing to load; only the blocks are kept, to be
// listed.
#[async_trait]
impl UserControls for MemoryBroker {
    async fn command(&self, cmd: UserCommand) -> Result<(), BrokerError> {
        match &cmd {
            UserCommand::Block { user, until } => {
                let mut blocks = lock(&self.blocks);
                expire(&mut blocks);
                blocks.insert(user.clone(), *until);
            }
            UserCommand::Unblock { user } => {
                lock(&self.blocks).remove(user);
            }
            _ => {}
        }
        if let Some(sink) = self.controls.get().and_then(Weak::upgrade) {
            sink.apply(&cmd);
        }
        Ok(())
    }

    async fn follow(&self, sink: Weak<dyn ControlSink>) -> Result<(), BrokerError> {
        let _ = self.controls.set(sink);
        Ok(())
    }

    async fn blocked(&self) -> Result<Vec<(Arc<str>, Option<u64>)>, BrokerError> {
        let mut blocks = lock(&self.blocks);
        expire(&mut blocks);
        Ok(blocks.iter().map(|(u, t)| (u.clone(), *t)).collect())
    }
}

/// Drops the blocks that have ended, so the table holds only what is in
/// force (its size is the operator's blocks, not every one ever made).
fn expire(blocks: &mut HashMap<Arc<str>, Option<u64>>) {
    let now = crate::unix_ms().max(0) as u64;
    blocks.retain(|_, until| until.is_none_or(|u| u > now));
}

//! The node-local side of rooms: which local connections are in which room,
//! and fan-out of what the broker delivers to them.
//!
//! Rooms are sharded by name, each shard behind a `std` mutex that is never
//! held across an `.await`. Fan-out pushes the shared envelope bytes into each
//! subscriber's bounded queue; it never writes to a socket, so a slow client
//! cannot hold anyone up.
//!
//! - `join`: the one way into a room, without a gap or a duplicate
//!   ([`Hub::join`]).
//! - `registry`: the table of open connections, which a shutdown walks
//!   ([`Hub::open_conns`], one at a time), and user controls ([`Hub::close_where`]).
//! - `commands`: server-side subscribe and unsubscribe, queued for each
//!   connection's own task ([`Hub::command_where`]).
//! - `presence`: the pace of a room's presence events (one frame each
//!   while the room is quiet, one frame per flush when it is busy).

mod commands;
mod join;
mod presence;
mod registry;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, BrokerHandler, ConnKey, PresenceEvent, Publication};
use crate::lock;
use crate::outbound::{Outbound, Pushed};
use crate::protocol::{self, out};
use crate::small::SmallMap;

pub(crate) use commands::{Commands, RoomCommand};
pub(crate) use join::Join;
use registry::Connections;

const SHARDS: usize = 64;

/// A local connection as the hub sees it.
pub(crate) trait Subscriber: Send + Sync + 'static {
    /// Node-local key.
    fn key(&self) -> ConnKey;
    /// The connection's outbound queue.
    fn outbound(&self) -> &Outbound;
    /// Its user and token, for the user controls to match; `None` for
    /// what they do not reach (a test's stand-in).
    fn holder(&self) -> Option<(&str, &crate::auth::TokenId)> {
        None
    }
    /// Queues a server-side subscribe or unsubscribe for the connection's
    /// task and wakes it; false when the connection takes none (a long
    /// poll, a test's stand-in).
    fn command(&self, _cmd: RoomCommand) -> bool {
        false
    }
}

/// One shard of rooms.
///
/// Rooms are boxed: a node has a room per connection (its personal room),
/// and a hash table's slack (it is 44-88% full) then costs 8 bytes a slot
/// rather than a whole room.
type RoomShard = Mutex<HashMap<Arc<str>, Box<LocalRoom>>>;

/// Node-local room membership and fan-out.
pub(crate) struct Hub {
    shards: Box<[RoomShard]>,
    hasher: RandomState,
    broker: Arc<dyn Broker>,
    /// Largest number of frames buffered for a joining connection.
    buffer_cap: usize,
    /// Messages queued to local subscribers since start.
    delivered: std::sync::atomic::AtomicU64,
    /// Open connections, for shutdown.
    conns: Connections,
    /// Owns what the hub cannot await where it starts it (the broker
    /// unsubscribe of a join dropped half-way, a room's presence flush,
    /// which ends within a second); shutdown waits for it.
    tasks: TaskTracker,
    /// This hub, for the tasks it starts.
    me: std::sync::Weak<Hub>,
}

/// The local members of one room.
struct LocalRoom {
    subs: SmallMap<ConnKey, Sub>,
    /// Whether the node's broker subscription for this room is in place.
    subscribed: BrokerSub,
    /// The pace of its presence events, from the first one on (boxed: most
    /// rooms, personal ones, never have any).
    pace: Option<Box<presence::Pace>>,
}

/// A room's broker subscription, as its local members see it.
enum BrokerSub {
    /// Resolved once the subscription is in place; every joiner waits on it
    /// before reading the room's position.
    Pending(Arc<OnceCell<()>>),
    /// In place: nothing to wait for, and nothing allocated (every
    /// connection's personal room is a room here).
    Done,
}

impl BrokerSub {
    fn new() -> Self {
        Self::Pending(Arc::new(OnceCell::new()))
    }

    fn initialized(&self) -> bool {
        match self {
            Self::Pending(cell) => cell.initialized(),
            Self::Done => true,
        }
    }
}

struct Sub {
    conn: Arc<dyn Subscriber>,
    /// Joined with `join` (false: only the automatic personal-room one).
    explicit: bool,
    /// Buffering while a join is in progress.
    /// Boxed: a live subscription (most are) is 16 bytes smaller, in every
    /// room's table; a join pays one more allocation.
    #[allow(clippy::box_collection)]
    buffer: Option<Box<Vec<Pending>>>,
    /// Offsets `first..=last` of `epoch` were delivered (or belong to the
    /// time before the subscription); `first > last` when none yet.
    epoch: Arc<str>,
    first: u64,
    last: u64,
}

enum Pending {
    Publication(Arc<Publication>),
    Frame(Bytes),
}

/// What `Hub::leave` found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LeaveResult {
    /// The connection was subscribed.
    pub was_member: bool,
    /// It was explicitly joined.
    pub was_explicit: bool,
}

impl Hub {
    /// A hub fanning out what `broker` delivers. `buffer_cap` bounds what is
    /// buffered for a joining connection (the queue size is a good value);
    /// `tasks` owns the few tasks the hub starts.
    pub(crate) fn new(broker: Arc<dyn Broker>, buffer_cap: usize, tasks: TaskTracker) -> Arc<Self> {
        let hub = Arc::new_cyclic(|me| Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            broker: broker.clone(),
            buffer_cap,
            delivered: std::sync::atomic::AtomicU64::new(0),
            conns: Connections::new(),
            tasks,
            me: me.clone(),
        });
        let weak: std::sync::Weak<dyn BrokerHandler> = Arc::downgrade(&hub) as _;
        broker.set_handler(weak);
        hub
    }

    /// The broker behind this hub.
    #[cfg(test)]
    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    fn shard(&self, room: &str) -> &RoomShard {
        &self.shards[self.hasher.hash_one(room) as usize % SHARDS]
    }

    /// Removes `conn` from `room` (an explicit leave with `explicit_only`
    /// keeps the automatic personal-room subscription). Unsubscribes the node
    /// at the broker when its last local member left.
    pub(crate) async fn leave(
        &self,
        conn: &dyn Subscriber,
        room: &str,
        explicit_only: bool,
    ) -> LeaveResult {
        let (result, last) = {
            let mut shard = lock(self.shard(room));
            let Some(local) = shard.get_mut(room) else {
                return LeaveResult {
                    was_member: false,
                    was_explicit: false,
                };
            };
            let Some(sub) = local.subs.get_mut(&conn.key()) else {
                return LeaveResult {
                    was_member: false,
                    was_explicit: false,
                };
            };
            let was_explicit = sub.explicit;
            if explicit_only && protocol::is_personal(room) {
                // The personal room stays subscribed; only the flag goes.
                sub.explicit = false;
                return LeaveResult {
                    was_member: true,
                    was_explicit,
                };
            }
            local.subs.remove(&conn.key());
            let last = if local.subs.is_empty() {
                let subscribed = local.subscribed.initialized();
                shard.remove(room);
                subscribed
            } else {
                false
            };
            (
                LeaveResult {
                    was_member: true,
                    was_explicit,
                },
                last,
            )
        };
        if last {
            self.unsubscribe(room).await;
        }
        result
    }

    /// Unsubscribes the node at the broker (its last local member left).
    async fn unsubscribe(&self, room: &str) {
        if let Err(e) = self.broker.unsubscribe(room).await {
            tracing::warn!(room, error = %e, "broker unsubscribe failed");
        }
    }

    /// Adds an open connection to the table a shutdown walks.
    pub(crate) fn register(&self, conn: Arc<dyn Subscriber>) {
        self.conns.insert(conn);
    }

    /// Takes a connection out of that table once it has ended.
    pub(crate) fn unregister(&self, conn: &dyn Subscriber) {
        self.conns.remove(conn);
    }

    /// Every registered connection now, for a shutdown that closes them
    /// one at a time (`crate::drain`).
    pub(crate) fn open_conns(&self) -> Vec<Arc<dyn Subscriber>> {
        self.conns.snapshot()
    }

    /// Decides the close of every registered connection `pick` chooses;
    /// how many it chose.
    pub(crate) fn close_where(
        &self,
        code: u16,
        reason: &'static str,
        pick: impl Fn(&dyn Subscriber) -> bool,
    ) -> usize {
        let mut n = 0;
        self.conns.for_each(|conn| {
            if pick(conn) {
                conn.outbound().close(code, reason);
                n += 1;
            }
        });
        n
    }

    /// Queues `cmd` for every registered connection `pick` chooses; how
    /// many took it.
    pub(crate) fn command_where(
        &self,
        cmd: &RoomCommand,
        pick: impl Fn(&dyn Subscriber) -> bool,
    ) -> usize {
        let mut n = 0;
        self.conns.for_each(|conn| {
            if pick(conn) && conn.command(cmd.clone()) {
                n += 1;
            }
        });
        n
    }

    /// Local members of a room.
    #[cfg(test)]
    pub(crate) fn local_members(&self, room: &str) -> usize {
        lock(self.shard(room)).get(room).map_or(0, |r| r.subs.len())
    }

    /// Rooms with local members.
    pub(crate) fn rooms(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Rooms with local members, personal rooms left out: the `limit`
    /// with the most members (name order among equals), and how many such
    /// rooms there are. One pass over every room: for dashboards, not for
    /// a hot path.
    pub(crate) fn room_list(&self, limit: usize) -> (Vec<(Arc<str>, usize)>, usize) {
        let mut all: Vec<(Arc<str>, usize)> = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            all.extend(
                shard
                    .iter()
                    .filter(|(name, _)| !crate::protocol::is_personal(name))
                    .map(|(name, r)| (name.clone(), r.subs.len())),
            );
        }
        let total = all.len();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        (all, total)
    }

    /// Messages queued to local subscribers since start.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Local room memberships (personal rooms and taps included).
    pub(crate) fn memberships(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).values().map(|r| r.subs.len()).sum::<usize>())
            .sum()
    }
}

/// Delivers one publication to a live subscription, keeping its delivered
/// range and skipping what it already had; returns 1 when it was queued
/// (an overflow is counted where the close is decided, in `outbound`).
fn deliver(key: ConnKey, sub: &mut Sub, p: &Arc<Publication>) -> u64 {
    // Hot path (once per delivery): the epochs are usually the same `Arc`,
    // and the connection's key is the map's, not behind the trait object.
    if Arc::ptr_eq(&sub.epoch, &p.epoch) || *sub.epoch == *p.epoch {
        if p.offset <= sub.last {
            return 0;
        }
    } else {
        sub.epoch = p.epoch.clone();
        sub.first = p.offset;
    }
    sub.last = p.offset;
    if p.skip != Some(key) {
        return u64::from(sub.conn.outbound().push(p.envelope.clone()) == Pushed::Queued);
    }
    0
}

impl BrokerHandler for Hub {
    fn on_publication(&self, room: &str, publication: &Arc<Publication>) {
        let mut shard = lock(self.shard(room));
        let Some(local) = shard.get_mut(room) else {
            return;
        };
        let mut delivered = 0;
        for (key, sub) in local.subs.iter_mut() {
            match &mut sub.buffer {
                Some(buffer) => {
                    if buffer.len() >= self.buffer_cap {
                        buffer.clear();
                        sub.conn.outbound().close(
                            protocol::close::SLOW_CONSUMER,
                            "slow consumer: too many messages while joining",
                        );
                    } else {
                        buffer.push(Pending::Publication(publication.clone()));
                    }
                }
                None => delivered += deliver(*key, sub, publication),
            }
        }
        drop(shard);
        let m = crate::metrics::handles();
        m.deliveries.increment(delivered);
        self.delivered
            .fetch_add(delivered, std::sync::atomic::Ordering::Relaxed);
        if delivered > 0 {
            crate::metrics::record_delivery_latency(&publication.envelope);
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let trace_id = protocol::envelope_trace_id(&publication.envelope);
            tracing::debug!(
                trace_id,
                room,
                offset = publication.offset,
                delivered,
                "message delivered"
            );
        }
    }

    fn on_reset(&self, room: &str) {
        let shard = lock(self.shard(room));
        let Some(local) = shard.get(room) else { return };
        tracing::warn!(
            room,
            subscribers = local.subs.len(),
            "room stream broken: closing its subscribers"
        );
        for sub in local.subs.values() {
            sub.conn.outbound().close(
                protocol::close::SLOW_CONSUMER,
                "messages lost between nodes: reconnect and recover",
            );
        }
    }

    fn on_presence(&self, room: &str, event: &PresenceEvent) {
        let frame = protocol::encode(&out::PresenceEvent {
            ty: "presence",
            room,
            action: event.action,
            user: &event.user,
            name: &event.name,
            status: event.status,
        });
        let mut shard = lock(self.shard(room));
        let Some(local) = shard.get_mut(room) else {
            return;
        };
        let now = tokio::time::Instant::now();
        let cost = local.presence_members();
        let offer = local
            .pace
            .get_or_insert_with(|| Box::new(presence::Pace::new(now)))
            .offer(event, cost, now);
        match offer {
            presence::Offer::Send => local.fan_presence(room, &frame),
            presence::Offer::Hold(None) => {}
            presence::Offer::Hold(Some(at)) => {
                drop(shard);
                self.schedule_presence_flush(Arc::from(room), at);
            }
        }
    }
}

impl Hub {
    /// Flushes the presence events `room` holds at `at`.
    fn schedule_presence_flush(&self, room: Arc<str>, at: tokio::time::Instant) {
        let me = self.me.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(hub) = me.upgrade() {
                hub.flush_presence(&room);
            }
        });
    }

    /// Sends the one frame for the presence events `room` held.
    fn flush_presence(&self, room: &str) {
        let mut shard = lock(self.shard(room));
        let Some(local) = shard.get_mut(room) else {
            return;
        };
        let cost = local.presence_members();
        let now = tokio::time::Instant::now();
        if let Some(frame) = local.pace.as_mut().and_then(|p| p.flush(room, cost, now)) {
            local.fan_presence(room, &frame);
        }
    }
}

impl LocalRoom {
    /// The local members that get presence events (the explicit ones).
    fn presence_members(&self) -> usize {
        self.subs.values().filter(|s| s.explicit).count()
    }

    /// Queues a presence frame to every explicit member (buffered for one
    /// still joining).
    fn fan_presence(&mut self, room: &str, frame: &Bytes) {
        for sub in self.subs.values_mut() {
            if !sub.explicit {
                continue;
            }
            match &mut sub.buffer {
                Some(buffer) => buffer.push(Pending::Frame(frame.clone())),
                None => {
                    if sub.conn.outbound().push(frame.clone()) == Pushed::Overflow {
                        tracing::debug!(room, "slow consumer on presence event");
                    }
                }
            }
        }
    }
}

//! The node-local side of rooms: which local connections are in which room,
//! and fan-out of what the broker delivers to them.
//!
//! Rooms are sharded by name, each shard behind a `std` mutex that is never
//! held across an `.await`. Fan-out pushes the shared envelope bytes into each
//! subscriber's bounded queue; it never writes to a socket, so a slow client
//! cannot hold anyone up.
//!
//! Joining is where the no-gap, no-duplicate promise is kept. A joining
//! connection is first added in *buffering* mode, so every publication from
//! then on is kept for it; only then does the hub ask the broker for the
//! room's position and the missed messages. It queues `joined`, the missed
//! messages, then the buffered ones that are newer than anything already sent,
//! and switches the subscription to live, all under the shard lock. Each
//! subscription also remembers which offsets it delivered, so joining a room
//! the connection is already in (its personal room, say) never repeats one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::broker::{
    Broker, BrokerError, BrokerHandler, ConnKey, PresenceEvent, Publication, Recovery,
};
use crate::lock;
use crate::outbound::{Outbound, Pushed};
use crate::protocol::{self, out};
use crate::small::{SmallMap, shared_key};

const SHARDS: usize = 64;

/// A local connection as the hub sees it.
pub trait Subscriber: Send + Sync + 'static {
    /// Node-local key.
    fn key(&self) -> ConnKey;
    /// The connection's outbound queue.
    fn outbound(&self) -> &Outbound;
}

/// One shard of rooms.
///
/// Rooms are boxed: a node has a room per connection (its personal room),
/// and a hash table's slack (it is 44-88% full) then costs 8 bytes a slot
/// rather than a whole room.
type RoomShard = Mutex<HashMap<Arc<str>, Box<LocalRoom>>>;

/// Node-local room membership and fan-out.
pub struct Hub {
    shards: Box<[RoomShard]>,
    hasher: RandomState,
    broker: Arc<dyn Broker>,
    /// Largest number of frames buffered for a joining connection.
    buffer_cap: usize,
    /// Messages queued to local subscribers since start.
    delivered: std::sync::atomic::AtomicU64,
}

/// The local members of one room.
struct LocalRoom {
    subs: SmallMap<ConnKey, Sub>,
    /// Whether the node's broker subscription for this room is in place.
    subscribed: BrokerSub,
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

/// What `Hub::begin_join` found.
pub struct JoinStart {
    /// The connection was already subscribed (its personal room, a repeated
    /// join).
    pub existed: bool,
    /// The node must make sure it is subscribed at the broker (none: it is).
    subscribed: Option<Arc<OnceCell<()>>>,
    /// The room's name as the hub holds it (a connection's list of rooms
    /// shares it rather than allocating its own).
    pub room: Arc<str>,
}

/// What `Hub::leave` found.
#[derive(Debug, PartialEq, Eq)]
pub struct LeaveResult {
    /// The connection was subscribed.
    pub was_member: bool,
    /// It was explicitly joined.
    pub was_explicit: bool,
}

impl Hub {
    /// A hub fanning out what `broker` delivers. `buffer_cap` bounds what is
    /// buffered for a joining connection (the queue size is a good value).
    pub fn new(broker: Arc<dyn Broker>, buffer_cap: usize) -> Arc<Self> {
        let hub = Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            broker: broker.clone(),
            buffer_cap,
            delivered: std::sync::atomic::AtomicU64::new(0),
        });
        let weak: std::sync::Weak<dyn BrokerHandler> = Arc::downgrade(&hub) as _;
        broker.set_handler(weak);
        hub
    }

    /// The broker behind this hub.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    fn shard(&self, room: &str) -> &RoomShard {
        &self.shards[self.hasher.hash_one(room) as usize % SHARDS]
    }

    /// Step 1 of a join: adds the subscription in buffering mode (or switches
    /// an existing one to it), so nothing published from now on is missed.
    /// Follow with [`Hub::recover`], then [`Hub::finish_join`] or, on error,
    /// [`Hub::abort_join`].
    pub fn begin_join(&self, conn: &Arc<dyn Subscriber>, room: &str, explicit: bool) -> JoinStart {
        self.buffering(conn, room, explicit)
    }

    /// Step 2 of a join: makes sure this node is subscribed at the broker,
    /// then reads the room's position and what was missed since `since`.
    pub async fn recover(
        &self,
        start: &JoinStart,
        room: &str,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<Recovery, BrokerError> {
        if let Some(cell) = &start.subscribed {
            cell.get_or_try_init(|| self.broker.subscribe(&start.room))
                .await?;
        }
        self.broker.recover(room, since).await
    }

    /// Adds (or switches) the subscription to buffering mode.
    fn buffering(&self, conn: &Arc<dyn Subscriber>, room: &str, explicit: bool) -> JoinStart {
        let mut shard = lock(self.shard(room));
        // The name is allocated only for a new room.
        let name = shared_key(&shard, room);
        let local = shard.entry(name.clone()).or_insert_with(|| {
            Box::new(LocalRoom {
                subs: SmallMap::default(),
                subscribed: BrokerSub::new(),
            })
        });
        let subscribed = match &local.subscribed {
            BrokerSub::Pending(cell) => Some(cell.clone()),
            BrokerSub::Done => None,
        };
        let existed = match local.subs.get_mut(&conn.key()) {
            Some(sub) => {
                sub.explicit |= explicit;
                if sub.buffer.is_none() {
                    sub.buffer = Some(Box::default());
                }
                true
            }
            None => {
                local.subs.insert(
                    conn.key(),
                    Sub {
                        conn: conn.clone(),
                        explicit,
                        buffer: Some(Box::default()),
                        epoch: Arc::from(""),
                        first: 1,
                        last: 0,
                    },
                );
                false
            }
        };
        JoinStart {
            existed,
            subscribed,
            room: name,
        }
    }

    /// Step 3 of a join: queues the reply, the recovered messages not
    /// delivered yet and the buffered ones, then switches to live delivery.
    pub fn finish_join(
        &self,
        conn: &Arc<dyn Subscriber>,
        room: &str,
        since: Option<u64>,
        rec: &Recovery,
        reply: Option<Bytes>,
    ) {
        let mut shard = lock(self.shard(room));
        let Some(local) = shard.get_mut(room) else {
            return;
        };
        if local.subscribed.initialized() {
            // The joiners that waited on the cell hold their own handle.
            local.subscribed = BrokerSub::Done;
        }
        let Some(sub) = local.subs.get_mut(&conn.key()) else {
            return;
        };
        let Some(buffer) = sub.buffer.take() else {
            return;
        };
        let key = conn.key();
        let mut frames: Vec<Bytes> = Vec::with_capacity(1 + rec.publications.len() + buffer.len());
        frames.extend(reply);
        // A subscription that was live in this epoch continues from what it
        // delivered; a new one starts after the room's current top.
        let continuing = *sub.epoch == *rec.epoch;
        let (mut first, mut sent) = if continuing {
            (sub.first, sub.last)
        } else {
            (rec.top + 1, rec.top)
        };
        if rec.recovered {
            for p in &rec.publications {
                let had = continuing && p.offset >= sub.first && p.offset <= sub.last;
                if !had && p.skip != Some(key) {
                    frames.push(p.envelope.clone());
                }
                sent = sent.max(p.offset);
            }
            if let Some(since) = since {
                first = first.min(since + 1);
            }
        }
        let mut epoch = rec.epoch.clone();
        for item in *buffer {
            match item {
                Pending::Frame(f) => frames.push(f),
                Pending::Publication(p) => {
                    if *p.epoch != *epoch {
                        // The room's history was lost meanwhile: a new stream.
                        epoch = p.epoch.clone();
                        first = p.offset;
                    } else if p.offset <= sent {
                        continue;
                    }
                    sent = p.offset;
                    if p.skip != Some(key) {
                        frames.push(p.envelope.clone());
                    }
                }
            }
        }
        sub.epoch = epoch;
        sub.first = first;
        sub.last = sent;
        conn.outbound().push_all(frames);
    }

    /// Undoes [`Hub::begin_join`] after a failure: a new subscription is
    /// removed, an existing one goes back to live with what it buffered.
    pub async fn abort_join(&self, conn: &Arc<dyn Subscriber>, room: &str, start: &JoinStart) {
        let unsubscribe = {
            let mut shard = lock(self.shard(room));
            let Some(local) = shard.get_mut(room) else {
                return;
            };
            if start.existed {
                if let Some(sub) = local.subs.get_mut(&conn.key()) {
                    // Give back what was buffered, in order, then go live again.
                    for item in sub.buffer.take().map(|b| *b).unwrap_or_default() {
                        match item {
                            Pending::Frame(f) => {
                                conn.outbound().push(f);
                            }
                            Pending::Publication(p) => {
                                deliver(conn.key(), sub, &p);
                            }
                        }
                    }
                }
                false
            } else {
                local.subs.remove(&conn.key());
                if local.subs.is_empty() {
                    let subscribed = local.subscribed.initialized();
                    shard.remove(room);
                    subscribed
                } else {
                    false
                }
            }
        };
        if unsubscribe && let Err(e) = self.broker.unsubscribe(room).await {
            tracing::warn!(room, error = %e, "broker unsubscribe failed");
        }
    }

    /// Removes `conn` from `room` (an explicit leave with `explicit_only`
    /// keeps the automatic personal-room subscription). Unsubscribes the node
    /// at the broker when its last local member left.
    pub async fn leave(
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
        if last && let Err(e) = self.broker.unsubscribe(room).await {
            tracing::warn!(room, error = %e, "broker unsubscribe failed");
        }
        result
    }

    /// Decides the close of every local subscriber (each connection is in
    /// its personal room at least): how a shutdown reaches the
    /// connections, rather than each one waiting on the shutdown token.
    pub fn close_all(&self, code: u16, reason: &'static str) {
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for local in shard.values() {
                for sub in local.subs.values() {
                    sub.conn.outbound().close(code, reason);
                }
            }
        }
    }

    /// Local members of a room (for tests and stats).
    pub fn local_members(&self, room: &str) -> usize {
        lock(self.shard(room)).get(room).map_or(0, |r| r.subs.len())
    }

    /// Rooms with local members.
    pub fn rooms(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Rooms with local members, personal rooms left out: the `limit`
    /// with the most members (name order among equals), and how many such
    /// rooms there are. One pass over every room: for dashboards, not for
    /// a hot path.
    pub fn room_list(&self, limit: usize) -> (Vec<(Arc<str>, usize)>, usize) {
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
    pub fn delivered(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Local room memberships (personal rooms and taps included).
    pub fn memberships(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).values().map(|r| r.subs.len()).sum::<usize>())
            .sum()
    }
}

/// Delivers one publication to a live subscription, keeping its delivered
/// range and skipping what it already had.
/// Queues a publication to a live subscriber; returns (delivered,
/// overflowed) for the metrics.
fn deliver(key: ConnKey, sub: &mut Sub, p: &Arc<Publication>) -> (u64, u64) {
    // Hot path (once per delivery): the epochs are usually the same `Arc`,
    // and the connection's key is the map's, not behind the trait object.
    if Arc::ptr_eq(&sub.epoch, &p.epoch) || *sub.epoch == *p.epoch {
        if p.offset <= sub.last {
            return (0, 0);
        }
    } else {
        sub.epoch = p.epoch.clone();
        sub.first = p.offset;
    }
    sub.last = p.offset;
    if p.skip != Some(key) {
        return match sub.conn.outbound().push(p.envelope.clone()) {
            Pushed::Queued => (1, 0),
            Pushed::Overflow => (0, 1),
            Pushed::Closing => (0, 0),
        };
    }
    (0, 0)
}

impl BrokerHandler for Hub {
    fn on_publication(&self, room: &str, publication: &Arc<Publication>) {
        let mut shard = lock(self.shard(room));
        let Some(local) = shard.get_mut(room) else {
            return;
        };
        let (mut delivered, mut overflowed) = (0, 0);
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
                None => {
                    let (d, o) = deliver(*key, sub, publication);
                    delivered += d;
                    overflowed += o;
                }
            }
        }
        drop(shard);
        let m = crate::metrics::handles();
        m.deliveries.increment(delivered);
        self.delivered
            .fetch_add(delivered, std::sync::atomic::Ordering::Relaxed);
        if overflowed > 0 {
            m.slow_consumers.increment(overflowed);
        }
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
        for sub in local.subs.values_mut() {
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

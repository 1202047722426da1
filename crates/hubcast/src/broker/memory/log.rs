//! A room's stream in the memory engine: epoch, latest offset, bounded
//! history and idempotency window, and where dropped logs stood.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

use super::{MAX_IDEMPOTENCY_KEYS, MAX_TOMBSTONES, MemoryBroker};
use crate::broker::{
    BrokerError, BrokerHandler, HistoryPage, Publication, PublishRequest, PublishResult, Recovery,
};
use crate::rules::History;

/// One room's stream.
pub(super) struct RoomLog {
    /// Changes when the log is recreated; offsets restart with it.
    pub(super) epoch: Arc<str>,
    /// Latest offset assigned (0: none yet).
    pub(super) top: u64,
    /// Retained messages, oldest first, with their arrival time.
    pub(super) history: VecDeque<(Instant, Arc<Publication>)>,
    /// Client msgIds seen within the window, with their offset.
    pub(super) ids: HashMap<Box<str>, u64>,
    /// The same ids in arrival order, for expiry.
    pub(super) id_order: VecDeque<(Instant, Box<str>)>,
    /// Nodes subscribed (here: 0 or 1); a subscribed log is never dropped.
    pub(super) subscribed: usize,
    /// Removed from its shard: whoever still holds it takes the room's log
    /// anew (see [`MemoryBroker::with_log`]).
    pub(super) dropped: bool,
    /// What the room's rule keeps (history size and ttl), looked up once
    /// when the log is made: rules do not change while the server runs.
    pub(super) keep: History,
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
pub(super) struct Tombs {
    pub(super) seed: u64,
    pub(super) by_room: HashMap<Arc<str>, (u64, Arc<str>, u64)>,
    /// (room, entry number) oldest first; stale when the room's entry has
    /// another number.
    pub(super) order: VecDeque<(Arc<str>, u64)>,
    pub(super) next: u64,
}

impl Tombs {
    pub(super) fn new() -> Self {
        Self {
            seed: rand_seed(),
            by_room: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }

    pub(super) fn remember(&mut self, room: Arc<str>, epoch: Arc<str>, top: u64) {
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

pub(super) fn rand_seed() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

impl RoomLog {
    pub(super) fn new(epoch: Arc<str>, top: u64, keep: History) -> Self {
        Self {
            epoch,
            top,
            history: VecDeque::new(),
            ids: HashMap::new(),
            id_order: VecDeque::new(),
            subscribed: 0,
            dropped: false,
            keep,
        }
    }

    /// Drops what is past its time or over the bounds.
    pub(super) fn trim(&mut self, now: Instant) {
        let History { size, ttl } = self.keep;
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
    pub(super) fn oldest(&self) -> u64 {
        self.history.front().map_or(self.top + 1, |(_, p)| p.offset)
    }

    pub(super) fn is_idle(&self) -> bool {
        self.subscribed == 0 && self.history.is_empty() && self.ids.is_empty()
    }

    /// Trims, then marks the log dropped if nothing is left in it; true
    /// when the caller (holding the shard's lock) must remove it.
    pub(super) fn drop_if_idle(&mut self, now: Instant) -> bool {
        self.trim(now);
        self.dropped = self.is_idle();
        self.dropped
    }
}

impl MemoryBroker {
    /// `publish` on the room's locked log.
    pub(super) fn publish_locked(
        &self,
        log: &mut RoomLog,
        req: PublishRequest,
        handler: Option<Arc<dyn BrokerHandler>>,
        now: Instant,
    ) -> Result<PublishResult, BrokerError> {
        log.trim(now);
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
        // With a size of 0 nothing is kept, but the msgId below still is:
        // deduplication does not depend on history.
        if log.keep.size > 0 {
            log.history.push_back((now, publication.clone()));
            if log.history.len() > log.keep.size {
                log.history.pop_front();
            }
        }
        if req.idempotent {
            let id: Box<str> = req.msg_id.into_boxed_str();
            log.ids.insert(id.clone(), offset);
            log.id_order.push_back((now, id));
            if log.id_order.len() > MAX_IDEMPOTENCY_KEYS {
                log.trim(now);
            }
        }
        let epoch = log.epoch.clone();
        if req.webhook
            && let Some(mut events) = self.event_log()
        {
            // Under the room's lock (the event log's is taken after it,
            // never before): the event is there when the publish is.
            events.published(&req.room, publication.envelope.clone(), req.parts.timestamp);
        }
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
    pub(super) fn recover_locked(
        &self,
        log: &mut RoomLog,
        since: Option<(u64, Option<&str>)>,
    ) -> Recovery {
        log.trim(Instant::now());
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
    pub(super) fn history_locked(
        &self,
        log: &mut RoomLog,
        since: Option<u64>,
        limit: usize,
    ) -> HistoryPage {
        log.trim(Instant::now());
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
}

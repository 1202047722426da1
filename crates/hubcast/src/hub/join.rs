//! Joining a room without a gap or a duplicate.
//!
//! A joining connection is first added in *buffering* mode, so every
//! publication from then on is kept for it; only then does the hub ask the
//! broker for the room's position and the missed messages. It queues the
//! reply, the missed messages, then the buffered ones that are newer than
//! anything already sent, and switches the subscription to live, all under
//! the shard lock. Each subscription also remembers which offsets it
//! delivered, so joining a room the connection is already in (its personal
//! room, say) never repeats one.
//!
//! [`Hub::join`] is the only way in: it runs the whole sequence, and its
//! [`Joining`] guard undoes a join that fails or whose future is dropped
//! half-way, so no subscription stays buffering forever.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::{BrokerSub, Hub, LocalRoom, Pending, Sub, Subscriber, deliver};
use crate::broker::{BrokerError, Recovery};
use crate::lock;
use crate::small::{SmallMap, shared_key};

/// What a connection asks for when it joins a room.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Join<'a> {
    /// The room.
    pub room: &'a str,
    /// Joined with a `join` frame or `/sse` (false: the automatic personal
    /// room, a long poll): only such members get presence events.
    pub explicit: bool,
    /// Recover what came after this offset (of this epoch, when given).
    pub since: Option<(u64, Option<&'a str>)>,
}

/// A completed join.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The room's name as the hub holds it (a connection's list of rooms
    /// shares it rather than allocating its own).
    pub room: Arc<str>,
    /// The room's position and what was recovered.
    pub recovery: Recovery,
}

/// What the first step of a join found.
struct JoinStart {
    /// The connection was already subscribed (its personal room, a repeated
    /// join).
    existed: bool,
    /// The node must make sure it is subscribed at the broker (none: it is).
    subscribed: Option<Arc<OnceCell<()>>>,
    /// The room's name as the hub holds it.
    room: Arc<str>,
}

/// A join between its first and last step. Dropped unfinished, it takes
/// the subscription back out (or back to live), so a caller cannot leave
/// one buffering.
struct Joining<'a> {
    hub: &'a Hub,
    conn: &'a Arc<dyn Subscriber>,
    start: JoinStart,
    /// Still to be undone if dropped.
    armed: bool,
}

impl Joining<'_> {
    /// Queues the reply and what the joiner missed; the join is done.
    fn finish(mut self, since: Option<u64>, rec: &Recovery, reply: Option<Bytes>) -> Arc<str> {
        self.armed = false;
        self.hub
            .finish_join(self.conn, &self.start.room, since, rec, reply);
        self.start.room.clone()
    }

    /// Undoes the join after a failure, unsubscribing the node at the
    /// broker if the room has no local member left.
    async fn abort(mut self) {
        self.armed = false;
        let room = self.start.room.clone();
        if self.hub.undo_join(self.conn, &room, self.start.existed) {
            self.hub.unsubscribe(&room).await;
        }
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let room = self.start.room.clone();
        if self.hub.undo_join(self.conn, &room, self.start.existed) {
            // A drop cannot wait: the hub's tracker owns the unsubscribe.
            let broker = self.hub.broker.clone();
            self.hub.tasks.spawn(async move {
                if let Err(e) = broker.unsubscribe(&room).await {
                    tracing::warn!(room = %room, error = %e, "broker unsubscribe failed");
                }
            });
        }
    }
}

impl Hub {
    /// Joins `conn` to a room without a gap or a duplicate: subscribes it
    /// in buffering mode, makes sure the node is subscribed at the broker,
    /// reads the room's position and what was missed since `join.since`,
    /// runs `prepare` (presence, say), then queues `reply(recovery,
    /// prepared)`, the missed messages and the buffered ones, and goes
    /// live. On an error (or when the returned future is dropped) no reply
    /// is queued and the subscription is undone: a new one is removed, an
    /// existing one goes back to live with what it buffered.
    pub(crate) async fn join<T>(
        &self,
        conn: &Arc<dyn Subscriber>,
        join: Join<'_>,
        prepare: impl Future<Output = Result<T, BrokerError>>,
        reply: impl FnOnce(&Recovery, T) -> Option<Bytes>,
    ) -> Result<Joined, BrokerError> {
        let joining = Joining {
            hub: self,
            conn,
            start: self.buffering(conn, join.room, join.explicit),
            armed: true,
        };
        let prepared = async {
            let rec = self.recover(&joining.start, join.since).await?;
            let prepared = prepare.await?;
            Ok::<_, BrokerError>((rec, prepared))
        }
        .await;
        match prepared {
            Ok((recovery, prepared)) => {
                let frame = reply(&recovery, prepared);
                let room = joining.finish(join.since.map(|(s, _)| s), &recovery, frame);
                Ok(Joined { room, recovery })
            }
            Err(e) => {
                joining.abort().await;
                Err(e)
            }
        }
    }

    /// Makes sure this node is subscribed at the broker, then reads the
    /// room's position and what was missed since `since`.
    async fn recover(
        &self,
        start: &JoinStart,
        since: Option<(u64, Option<&str>)>,
    ) -> Result<Recovery, BrokerError> {
        if let Some(cell) = &start.subscribed {
            cell.get_or_try_init(|| self.broker.subscribe(&start.room))
                .await?;
        }
        self.broker.recover(&start.room, since).await
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
                pace: None,
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

    /// The last step of a join: queues the reply, the recovered messages not
    /// delivered yet and the buffered ones, then switches to live delivery.
    fn finish_join(
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

    /// Undoes [`Hub::buffering`]: a new subscription is removed, an
    /// existing one goes back to live with what it buffered. True when the
    /// room has no local member left and the node should unsubscribe at
    /// the broker.
    fn undo_join(&self, conn: &Arc<dyn Subscriber>, room: &str, existed: bool) -> bool {
        let mut shard = lock(self.shard(room));
        let Some(local) = shard.get_mut(room) else {
            return false;
        };
        if existed {
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
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::broker::ConnKey;
    use crate::broker::memory::MemoryBroker;
    use crate::outbound::Outbound;

    struct Member {
        key: ConnKey,
        out: Outbound,
    }

    impl Subscriber for Member {
        fn key(&self) -> ConnKey {
            self.key
        }
        fn outbound(&self) -> &Outbound {
            &self.out
        }
    }

    fn member(key: ConnKey) -> Arc<dyn Subscriber> {
        Arc::new(Member {
            key,
            out: Outbound::new(16),
        })
    }

    fn hub() -> Arc<Hub> {
        let broker = MemoryBroker::new(100, Duration::from_secs(60));
        Hub::new(broker, 16, TaskTracker::new())
    }

    /// A join to "r" whose broker call never answers, dropped after 20 ms.
    async fn drop_stuck_join(hub: &Hub, m: &Arc<dyn Subscriber>) {
        let stuck = hub.join(
            m,
            at("r"),
            std::future::pending::<Result<(), BrokerError>>(),
            |_, ()| None,
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(20), stuck)
                .await
                .is_err()
        );
    }

    fn at(room: &str) -> Join<'_> {
        Join {
            room,
            explicit: true,
            since: None,
        }
    }

    #[tokio::test]
    async fn a_join_queues_its_reply_and_goes_live() {
        let hub = hub();
        let m = member(1);
        let joined = hub
            .join(&m, at("r"), std::future::ready(Ok(())), |_, ()| {
                Some(Bytes::from_static(b"joined"))
            })
            .await
            .unwrap();
        assert_eq!(&*joined.room, "r");
        assert_eq!(hub.local_members("r"), 1);
        assert_eq!(m.outbound().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_join_is_undone_and_queues_nothing() {
        let hub = hub();
        let m = member(1);
        let failed = hub
            .join(
                &m,
                at("r"),
                std::future::ready(Err::<(), _>(BrokerError::unavailable("down"))),
                |_, ()| Some(Bytes::from_static(b"joined")),
            )
            .await;
        assert!(failed.is_err());
        assert_eq!(hub.local_members("r"), 0);
        assert_eq!(hub.rooms(), 0);
        assert!(m.outbound().is_empty());
    }

    #[tokio::test]
    async fn a_join_dropped_half_way_is_undone() {
        let hub = hub();
        let m = member(1);
        drop_stuck_join(&hub, &m).await;
        assert_eq!(hub.local_members("r"), 0, "no subscription left buffering");
        assert_eq!(hub.rooms(), 0);
        // An existing subscription goes back to live instead.
        hub.join(&m, at("r"), std::future::ready(Ok(())), |_, ()| None)
            .await
            .unwrap();
        drop_stuck_join(&hub, &m).await;
        assert_eq!(hub.local_members("r"), 1);
        let message = crate::publish::Publish {
            room: "r",
            event: "e",
            data: "1",
            source: "u",
            msg_id: None,
            trace_id: None,
            skip: None,
        };
        hub.broker().publish(message.request()).await.unwrap();
        assert_eq!(m.outbound().len(), 1, "delivered live again");
        hub.tasks.close();
        hub.tasks.wait().await;
    }
}

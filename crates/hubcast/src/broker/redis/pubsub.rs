//! The node's pub/sub side: one task, one loop, for one server's pub/sub
//! and a cluster's sharded pub/sub alike (what differs is behind [`Link`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Msg;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerError;

use super::link::{Event, Link};
use super::rooms::Rooms;
use super::{MAX_BACKOFF, Shared, UNSUBSCRIBE_DELAY, down};

/// What the pub/sub task is asked to do.
pub(super) enum SubCmd {
    Subscribe(Arc<str>, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(Arc<str>),
}

/// The most commands one turn of the task takes from its queue.
const COMMANDS_PER_TURN: usize = 4096;

/// The first pause before subscribing lost rooms again; it doubles after
/// each failed attempt, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Owns the node's pub/sub link: subscribes and unsubscribes rooms on
/// request, delivers messages in order, fills gaps from the streams, and
/// restores lost subscriptions.
///
/// Pub/sub drops what is published while a subscription is down, so:
/// - when the link reports a loss, every room counts as unconfirmed (the
///   cluster client does not say which master dropped, and may not restore
///   every subscription by itself); a closed plain connection is opened
///   again, and each unconfirmed room is subscribed again, then read from its
///   stream past what was delivered last (`Rooms::catch_up`);
/// - a subscription Redis confirms by itself (the cluster client
///   resubscribing) is caught up the same way;
/// - a message after a gap is delivered only after the gap is read from the
///   stream (`Rooms::deliver`); a range the stream no longer holds is
///   reported to the hub with `on_reset`;
/// - a stream that cannot be read delivers nothing newer, and its room is
///   subscribed and read again after a pause.
pub(super) async fn pubsub_task(
    shared: Arc<Shared>,
    mut link: Link,
    mut rx: mpsc::UnboundedReceiver<SubCmd>,
    cancel: CancellationToken,
) {
    let mut task = Task {
        shared,
        rooms: Rooms::default(),
        unconfirmed: HashSet::new(),
        // The first round opens the link.
        retry_at: Some(Instant::now()),
        backoff: FIRST_BACKOFF,
    };
    let mut sweep = tokio::time::interval(UNSUBSCRIBE_DELAY / 4);
    loop {
        if let Some(at) = task.retry_at
            && at <= Instant::now()
        {
            // Due rounds run here, not from a timer: a timer fires on the
            // next millisecond tick at best, and a dropped plain connection
            // must be back before the bounded streams trim what it missed.
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = task.restore(&mut link) => {}
            }
        }
        let retry_at = task.retry_at;
        let retry = async move {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let open = link.is_open();
        tokio::select! {
            _ = cancel.cancelled() => return,
            // The round itself runs at the top of the loop.
            () = retry => {}
            _ = sweep.tick() => task.sweep(&mut link).await,
            cmd = rx.recv() => match cmd {
                None => return,
                Some(first) => task.commands(&mut link, first, &mut rx).await,
            },
            event = link.next(), if open => match event {
                None => return,
                Some(Event::Message(msg)) => task.deliver(&msg).await,
                Some(Event::Subscribed(channel)) => task.confirmed(&channel).await,
                Some(Event::Lost) => {
                    tracing::warn!("redis pub/sub connection lost; resubscribing");
                    task.lost(&mut link);
                }
            },
        }
    }
}

/// The pub/sub task's state beside its link.
struct Task {
    shared: Arc<Shared>,
    rooms: Rooms,
    /// Rooms whose subscription may be gone: to be subscribed again and
    /// caught up from their streams.
    unconfirmed: HashSet<Arc<str>>,
    /// When to restore the unconfirmed rooms (and open a closed link).
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Task {
    /// One turn: `first` and every command queued behind it. Leaves are
    /// counted as they come; the joins are then subscribed all at once
    /// (`Rooms::subscribe_many`), so that a wave of reconnecting clients
    /// costs a few round trips per turn, not two per room, and no join
    /// waits behind the others' round trips. A join whose caller stopped
    /// waiting is not subscribed (nobody would release it).
    async fn commands(
        &mut self,
        link: &mut Link,
        first: SubCmd,
        rx: &mut mpsc::UnboundedReceiver<SubCmd>,
    ) {
        type Reply = oneshot::Sender<Result<(), BrokerError>>;
        let mut joins: Vec<(Arc<str>, Reply)> = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(cmd) = next.take() {
            match cmd {
                SubCmd::Subscribe(room, reply) if !reply.is_closed() => joins.push((room, reply)),
                SubCmd::Subscribe(..) => {}
                SubCmd::Unsubscribe(room) => self.rooms.release(&room),
            }
            taken += 1;
            if taken < COMMANDS_PER_TURN {
                next = rx.try_recv().ok();
            }
        }
        if joins.is_empty() {
            return;
        }
        // Each room once, with the references it gains.
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        let mut rooms: Vec<(Arc<str>, usize)> = Vec::new();
        for (room, _) in &joins {
            let i = *index.entry(room.clone()).or_insert_with(|| {
                rooms.push((room.clone(), 0));
                rooms.len() - 1
            });
            rooms[i].1 += 1;
        }
        let results = if link.is_open() {
            match self.rooms.subscribe_many(&self.shared, link, &rooms).await {
                Ok(results) => results,
                Err(e) => {
                    self.lost(link);
                    vec![Err(e); rooms.len()]
                }
            }
        } else {
            // Only a room already followed can be joined while the link is
            // closed: nothing could confirm a new one.
            rooms
                .iter()
                .map(|(room, refs)| {
                    if self.rooms.add_live_refs(room, *refs) {
                        Ok(())
                    } else {
                        Err(down("pub/sub connection down"))
                    }
                })
                .collect()
        };
        for (room, reply) in joins {
            let r = index
                .get(&room)
                .and_then(|i| results.get(*i))
                .cloned()
                .unwrap_or_else(|| Err(BrokerError::Internal("join not answered".into())));
            let _ = reply.send(r);
        }
    }

    /// Unsubscribes the rooms left long enough ago (a room left and joined
    /// again in between keeps its subscription), all in one go.
    async fn sweep(&mut self, link: &mut Link) {
        let idle = self.rooms.take_idle();
        for room in &idle {
            self.unconfirmed.remove(room);
        }
        if idle.is_empty() || !link.is_open() {
            // A closed connection took its subscriptions with it.
            return;
        }
        let channels = idle.iter().map(|r| self.shared.keys.channel(r)).collect();
        if let Err(e) = link.unsubscribe_all(channels).await {
            tracing::warn!(rooms = idle.len(), error = %e, "redis unsubscribe failed; resubscribing");
            self.lost(link);
        }
    }

    async fn deliver(&mut self, msg: &Msg) {
        let Some(room) = self.shared.keys.room_of(msg.get_channel_name()) else {
            return;
        };
        if let Err(e) = self
            .rooms
            .deliver(&self.shared, room, msg.get_payload_bytes())
            .await
        {
            // Nothing newer is delivered before the gap is filled; the
            // room's next round reads the stream, in order.
            tracing::warn!(room, error = %e, "cannot read missed messages from redis; retrying");
            self.retry_room(Arc::from(room));
        }
    }

    /// Redis confirmed a subscription: whatever was published while it was
    /// down is in the stream.
    async fn confirmed(&mut self, channel: &str) {
        let Some(room) = self.shared.keys.room_of(channel) else {
            return;
        };
        let room: Arc<str> = Arc::from(room);
        self.unconfirmed.remove(&room);
        self.catch_up(room).await;
    }

    async fn catch_up(&mut self, room: Arc<str>) {
        if let Err(e) = self.rooms.catch_up(&self.shared, &room).await {
            tracing::warn!(room = %room, error = %e, "cannot read missed messages from redis; retrying");
            self.retry_room(room);
        }
    }

    /// Subscriptions may be gone (the link said so, or a command on it
    /// failed): a plain connection is closed, and every room is restored
    /// after a pause. A closed link is opened again at once, since the task
    /// itself opens it; a cluster's client is given a moment to reconnect
    /// first.
    fn lost(&mut self, link: &mut Link) {
        link.close();
        let open = link.is_open();
        self.shared.pubsub_up.store(open, Ordering::SeqCst);
        self.unconfirmed.extend(self.rooms.names());
        self.retry_within(if open { self.backoff } else { Duration::ZERO });
    }

    /// `room` is subscribed and read again after a pause.
    fn retry_room(&mut self, room: Arc<str>) {
        self.unconfirmed.insert(room);
        self.retry_within(self.backoff);
    }

    /// The next round comes `pause` from now at the latest.
    fn retry_within(&mut self, pause: Duration) {
        let at = Instant::now() + pause;
        self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
    }

    /// Opens a closed link, subscribes the unconfirmed rooms again and
    /// catches them up. A failure is tried again after a longer pause.
    async fn restore(&mut self, link: &mut Link) {
        self.retry_at = None;
        let reopened = !link.is_open();
        if reopened {
            // Rooms left while the link was closed are not subscribed again.
            self.rooms.retain_live();
            if let Err(e) = link.open().await {
                tracing::warn!(error = %e, "redis pub/sub connection failed; retrying");
                return self.failed(link);
            }
        }
        self.unconfirmed.retain(|r| self.rooms.contains(r));
        let rooms: Vec<Arc<str>> = self.unconfirmed.iter().cloned().collect();
        let channels = rooms.iter().map(|r| self.shared.keys.channel(r)).collect();
        if let Err(e) = link.subscribe_all(channels).await {
            tracing::warn!(error = %e, "redis resubscribe failed; retrying");
            return self.failed(link);
        }
        // Subscribed again: what was published meanwhile is in the streams.
        for room in rooms {
            self.unconfirmed.remove(&room);
            self.catch_up(room).await;
        }
        self.shared.pubsub_up.store(true, Ordering::SeqCst);
        if self.retry_at.is_none() {
            self.backoff = FIRST_BACKOFF;
        }
        if reopened && !self.rooms.is_empty() {
            tracing::info!(
                rooms = self.rooms.len(),
                "redis pub/sub connected; rooms resubscribed"
            );
        }
    }

    /// A round failed: everything is tried again, after a longer pause.
    fn failed(&mut self, link: &mut Link) {
        self.lost(link);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.retry_at = Some(Instant::now() + self.backoff);
    }
}

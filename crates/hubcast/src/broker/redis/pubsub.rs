//! The node's pub/sub side: one task, one loop, for one server's pub/sub
//! and a cluster's sharded pub/sub alike (what differs is behind [`Link`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Msg;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerError;

use super::link::{Event, Link};
use super::rooms::{Rooms, SubscribeError};
use super::{MAX_BACKOFF, Shared, UNSUBSCRIBE_DELAY, down};

/// What the pub/sub task is asked to do.
pub(super) enum SubCmd {
    Subscribe(Arc<str>, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(Arc<str>),
}

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
                Some(SubCmd::Subscribe(room, reply)) => {
                    let r = task.subscribe(&mut link, room).await;
                    let _ = reply.send(r);
                }
                Some(SubCmd::Unsubscribe(room)) => task.rooms.release(&room),
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
    /// One more local reference to `room`. While the link is closed only a
    /// room already followed can be joined: nothing could confirm a new one.
    async fn subscribe(&mut self, link: &mut Link, room: Arc<str>) -> Result<(), BrokerError> {
        if !link.is_open() {
            return if self.rooms.add_live_ref(&room) {
                Ok(())
            } else {
                Err(down("pub/sub connection down"))
            };
        }
        match self.rooms.subscribe(&self.shared, link, room).await {
            Err(SubscribeError::Link(e)) => {
                self.lost(link);
                Err(e)
            }
            r => r.map_err(SubscribeError::into_inner),
        }
    }

    /// Unsubscribes the rooms left long enough ago (a room left and joined
    /// again in between keeps its subscription).
    async fn sweep(&mut self, link: &mut Link) {
        for room in self.rooms.take_idle() {
            self.unconfirmed.remove(&room);
            if !link.is_open() {
                // A closed connection took its subscriptions with it.
                continue;
            }
            if let Err(e) = link.unsubscribe(self.shared.keys.channel(&room)).await {
                tracing::warn!(room = %room, error = %e, "redis unsubscribe failed; resubscribing");
                self.lost(link);
            }
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
        if let Err(e) = link.resubscribe(channels).await {
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

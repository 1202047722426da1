//! The node's room subscriptions: one core NATS subscription and one task
//! per room the node has members in, delivering in offset order.
//!
//! Core NATS drops what is published while the connection is down or the
//! subscription is slow, and a publisher may die between storing a message
//! and announcing it. So each room's task remembers the stream sequence,
//! offset and epoch it delivered last; an announcement past the next offset,
//! one of another epoch, or a reconnect makes it read the room from the
//! stream after that sequence and deliver what it finds, in order, before
//! anything newer. What the stream no longer holds (trimmed, purged, a new
//! epoch) is reported with `on_reset`, and the task continues from the
//! room's latest message. A read that fails is tried again after a pause;
//! nothing newer is delivered meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{HeaderMap, Subscriber};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::redis::codec::{self, ChannelMessage};
use crate::broker::{BrokerError, PresenceEvent};
use crate::lock;
use crate::protocol::{PresenceAction, json_string};

use super::stream::Stored;
use super::{Shared, down};

/// The header of an announcement holding the message's stream sequence.
const SEQ: &str = "Hubcast-Seq";

/// Longest pause between attempts to read a room's missed messages.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A subscribed room.
struct RoomEntry {
    refs: usize,
    /// Stops the room's task.
    cancel: CancellationToken,
    /// True once the subscription is in place and the position read.
    ready: watch::Receiver<Option<bool>>,
}

/// The node's subscribed rooms.
pub(super) struct Live {
    shared: Arc<Shared>,
    rooms: Arc<Mutex<HashMap<Arc<str>, RoomEntry>>>,
    reconnects: watch::Receiver<u64>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// What a room's task delivered last.
#[derive(Debug, Clone)]
struct Pos {
    seq: u64,
    offset: u64,
    epoch: Arc<str>,
}

impl Live {
    pub(super) fn new(
        shared: Arc<Shared>,
        reconnects: watch::Receiver<u64>,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> Live {
        Live {
            shared,
            rooms: Arc::default(),
            reconnects,
            tasks: tasks.clone(),
            cancel,
        }
    }

    pub(super) async fn subscribe(&self, room: &Arc<str>) -> Result<(), BrokerError> {
        let setup = {
            let mut rooms = lock(&self.rooms);
            match rooms.get_mut(room) {
                Some(r) => {
                    r.refs += 1;
                    Err(r.ready.clone())
                }
                None => Ok(self.insert(&mut rooms, room)),
            }
        };
        let (tx, token) = match setup {
            Ok(new) => new,
            Err(mut ready) => {
                // Another caller is setting the room up: done when it is.
                return match ready.wait_for(Option::is_some).await {
                    Ok(ok) if *ok == Some(true) => Ok(()),
                    _ => Err(down(format!("subscribe to {room} failed"))),
                };
            }
        };
        match self.start(room, token.clone()).await {
            Ok(()) => {
                let _ = tx.send(Some(true));
                Ok(())
            }
            Err(e) => {
                let _ = tx.send(Some(false));
                let mut rooms = lock(&self.rooms);
                if rooms.get(room).is_some_and(|r| r.cancel == token) {
                    rooms.remove(room);
                }
                token.cancel();
                Err(e)
            }
        }
    }

    /// A new entry for `room`, not ready yet.
    fn insert(
        &self,
        rooms: &mut HashMap<Arc<str>, RoomEntry>,
        room: &Arc<str>,
    ) -> (watch::Sender<Option<bool>>, CancellationToken) {
        {
            let (tx, rx) = watch::channel(None);
            let token = self.cancel.child_token();
            rooms.insert(
                room.clone(),
                RoomEntry {
                    refs: 1,
                    cancel: token.clone(),
                    ready: rx,
                },
            );
            (tx, token)
        }
    }

    /// Subscribes the room's subject, then reads its position: whatever is
    /// stored after that position is announced to the subscription.
    async fn start(&self, room: &Arc<str>, token: CancellationToken) -> Result<(), BrokerError> {
        let s = &self.shared;
        s.connected()?;
        let sub = s
            .client
            .subscribe(s.names.live_subject(room))
            .await
            .map_err(|e| down(format!("subscribe: {e}")))?;
        s.flush("subscribe").await?;
        let pos = position(s, room).await?;
        let task = RoomTask {
            shared: s.clone(),
            room: room.clone(),
            room_json: json_string(room),
            pos,
            behind: false,
            backoff: Duration::from_millis(100),
        };
        let mut reconnects = self.reconnects.clone();
        reconnects.mark_unchanged();
        self.tasks.spawn(task.run(sub, token, reconnects));
        Ok(())
    }

    /// Changes on every (re)connection to NATS.
    pub(super) fn reconnects(&self) -> watch::Receiver<u64> {
        let mut r = self.reconnects.clone();
        r.mark_unchanged();
        r
    }

    pub(super) fn unsubscribe(&self, room: &str) {
        let mut rooms = lock(&self.rooms);
        if let Some(r) = rooms.get_mut(room) {
            r.refs = r.refs.saturating_sub(1);
            if r.refs == 0 {
                r.cancel.cancel();
                rooms.remove(room);
            }
        }
    }
}

/// The room's latest message as a position (an empty room: sequence 0,
/// offset 0, the epoch its first message will carry).
async fn position(s: &Shared, room: &str) -> Result<Pos, BrokerError> {
    let (offset, epoch, last) = s.position(room).await?;
    Ok(Pos {
        seq: last.map_or(0, |l| l.seq),
        offset,
        epoch,
    })
}

struct RoomTask {
    shared: Arc<Shared>,
    room: Arc<str>,
    room_json: String,
    pos: Pos,
    /// Messages were missed and not read yet: nothing newer is delivered.
    behind: bool,
    backoff: Duration,
}

impl RoomTask {
    async fn run(
        mut self,
        mut sub: Subscriber,
        cancel: CancellationToken,
        mut reconnects: watch::Receiver<u64>,
    ) {
        loop {
            let retry = async {
                if self.behind {
                    tokio::time::sleep(self.backoff).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = reconnects.changed() => {
                    if r.is_err() {
                        break;
                    }
                    // Announcements may have been lost while disconnected.
                    self.catch_up().await;
                }
                () = retry => self.catch_up().await,
                msg = sub.next() => match msg {
                    None => break,
                    Some(m) => self.on_message(m.headers.as_ref(), &m.payload).await,
                },
            }
        }
        let _ = sub.unsubscribe().await;
    }

    async fn on_message(&mut self, headers: Option<&HeaderMap>, payload: &[u8]) {
        let Some(msg) = codec::decode(payload) else {
            return;
        };
        match msg {
            ChannelMessage::Presence(event) => {
                if let Some(h) = self.shared.handler() {
                    h.on_presence(&self.room, &event);
                }
            }
            ChannelMessage::Publication {
                offset,
                epoch,
                node,
                key,
                payload,
            } => {
                if self.behind {
                    return;
                }
                let seq = headers
                    .and_then(|h| h.get(SEQ))
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0);
                let next = *epoch == *self.pos.epoch && offset == self.pos.offset + 1;
                if next && seq > 0 {
                    let s = Stored {
                        seq,
                        offset,
                        epoch: self.pos.epoch.clone(),
                        node: node.into_owned(),
                        key: key.into_owned(),
                        payload: bytes::Bytes::copy_from_slice(payload),
                        time_ms: 0,
                    };
                    self.deliver(&s);
                } else if *epoch == *self.pos.epoch && offset <= self.pos.offset {
                    // Already delivered (read from the stream first).
                } else {
                    self.catch_up().await;
                }
            }
        }
    }

    fn deliver(&mut self, s: &Stored) {
        if let Some(h) = self.shared.handler() {
            h.on_publication(&self.room, &self.shared.publication(&self.room_json, s));
        }
        self.pos = Pos {
            seq: s.seq,
            offset: s.offset,
            epoch: s.epoch.clone(),
        };
    }

    /// Reads what the stream holds after the position and delivers it in
    /// order; a break in the offsets is a reset. Boxed: a room's task
    /// lives as long as the room has local members (every connection's
    /// personal room), and the reads' state, kept inline, made each task's
    /// future about 8 KiB while it waits for the next message; a catch-up
    /// is rare enough to pay an allocation.
    fn catch_up(&mut self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.catch_up_now())
    }

    async fn catch_up_now(&mut self) {
        match self.try_catch_up().await {
            Ok(()) => {
                self.behind = false;
                self.backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(room = %self.room, error = %e, "cannot read missed messages from nats; retrying");
                if self.behind {
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
                self.behind = true;
            }
        }
    }

    async fn try_catch_up(&mut self) -> Result<(), BrokerError> {
        let s = self.shared.clone();
        let Some(last) = s.last(&self.room).await? else {
            if self.pos.offset > 0 {
                // Everything is gone: history was lost.
                self.reset().await?;
            }
            return Ok(());
        };
        if last.epoch == self.pos.epoch && last.offset <= self.pos.offset {
            return Ok(());
        }
        let from = if last.seq > self.pos.seq {
            self.pos.seq + 1
        } else {
            // The stream was recreated (sequences start again).
            0
        };
        for m in s.read(&self.room, from).await? {
            let fresh_run = self.pos.offset == 0 && m.offset == 1;
            if m.epoch == self.pos.epoch || fresh_run {
                if m.epoch == self.pos.epoch && m.offset <= self.pos.offset {
                    continue;
                }
                if m.offset == self.pos.offset + 1 {
                    self.deliver(&m);
                    continue;
                }
            }
            // Trimmed past what was delivered, or a new epoch.
            return self.reset().await;
        }
        if last.epoch != self.pos.epoch || last.offset > self.pos.offset {
            return self.reset().await;
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), BrokerError> {
        tracing::warn!(room = %self.room, "messages of this room are gone from nats; resetting its subscribers");
        let pos = position(&self.shared, &self.room).await?;
        if let Some(h) = self.shared.handler() {
            h.on_reset(&self.room);
        }
        self.pos = pos;
        Ok(())
    }
}

impl Shared {
    /// Announces a stored message to the nodes subscribed to its room.
    /// Best effort: a node that misses it reads it from the stream when the
    /// next one comes or its connection returns.
    pub(super) async fn announce(&self, room: &str, s: &Stored) {
        let mut h = HeaderMap::new();
        h.insert(SEQ, s.seq.to_string().as_str());
        let mut body = format!("{}\n{}\n{}\n{}\n", s.offset, s.epoch, s.node, s.key).into_bytes();
        body.extend_from_slice(&s.payload);
        if let Err(e) = self
            .client
            .publish_with_headers(self.names.live_subject(room), h, body.into())
            .await
        {
            tracing::warn!(room, error = %e, "cannot announce a message on nats");
        }
    }

    /// Sends a presence event to the nodes subscribed to the room.
    pub(super) async fn announce_presence(&self, room: &str, e: &PresenceEvent) {
        let body = match e.action {
            PresenceAction::Status => codec::encode_status(&e.user, &e.name, e.status),
            PresenceAction::Join | PresenceAction::Leave => format!(
                "p\n{}\n{}\n{}\n{}",
                if e.action == PresenceAction::Join {
                    "join"
                } else {
                    "leave"
                },
                e.user,
                e.name,
                e.status.as_str()
            ),
        };
        if let Err(e) = self
            .client
            .publish(self.names.live_subject(room), body.into())
            .await
        {
            tracing::warn!(room, error = %e, "cannot send a presence event on nats");
        }
    }
}

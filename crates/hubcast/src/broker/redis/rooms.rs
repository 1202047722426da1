//! The rooms a node is subscribed to, with what was delivered last in each:
//! the pub/sub task's bookkeeping, the same whichever link (plain or
//! cluster) carries the rooms.

use std::collections::HashMap;
use std::sync::Arc;

use crate::broker::BrokerError;

use super::catchup::{RoomPos, catch_up, on_message};
use super::link::Link;
use super::{Shared, UNSUBSCRIBE_DELAY, unavailable};

/// Why a room could not be subscribed.
pub(super) enum SubscribeError {
    /// The link failed (its subscriptions are then restored).
    Link(BrokerError),
    /// The room's position could not be read; its channel was unsubscribed
    /// again.
    Room(BrokerError),
}

impl SubscribeError {
    pub(super) fn into_inner(self) -> BrokerError {
        match self {
            SubscribeError::Link(e) | SubscribeError::Room(e) => e,
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

/// The node's subscribed rooms, owned by its pub/sub task.
#[derive(Default)]
pub(super) struct Rooms {
    map: HashMap<Arc<str>, RoomSub>,
}

impl Rooms {
    /// One more reference to a room already subscribed (even one left and
    /// waiting to be unsubscribed); false when it is not.
    fn add_ref(&mut self, room: &str) -> bool {
        let Some(r) = self.map.get_mut(room) else {
            return false;
        };
        r.refs += 1;
        r.idle_since = None;
        true
    }

    /// One more reference to a room that still has one; false otherwise
    /// (while the connection is down a room cannot be subscribed anew).
    pub(super) fn add_live_ref(&mut self, room: &str) -> bool {
        match self.map.get_mut(room).filter(|r| r.refs > 0) {
            Some(r) => {
                r.refs += 1;
                true
            }
            None => false,
        }
    }

    /// One more local reference to `room`: only a room not followed yet
    /// costs a round trip, its channel subscribed first and its position
    /// read only then, so anything published from there on arrives over
    /// pub/sub.
    pub(super) async fn subscribe(
        &mut self,
        shared: &Shared,
        link: &mut Link,
        room: Arc<str>,
    ) -> Result<(), SubscribeError> {
        if self.add_ref(&room) {
            return Ok(());
        }
        let channel = shared.keys.channel(&room);
        if let Err(e) = link.subscribe(channel.clone()).await {
            return Err(SubscribeError::Link(unavailable(e)));
        }
        match shared.recover_raw(&room, -1).await {
            Ok((epoch, top, _)) => {
                let pos = RoomPos::new(&room, epoch, top);
                self.map.insert(
                    room,
                    RoomSub {
                        refs: 1,
                        pos,
                        idle_since: None,
                    },
                );
                Ok(())
            }
            Err(e) => {
                let _ = link.unsubscribe(channel).await;
                Err(SubscribeError::Room(e))
            }
        }
    }

    /// Drops one reference to a room; the channel itself is unsubscribed a
    /// little later, if nobody joins again meanwhile.
    pub(super) fn release(&mut self, room: &str) {
        if let Some(r) = self.map.get_mut(room) {
            r.refs = r.refs.saturating_sub(1);
            if r.refs == 0 {
                r.idle_since = Some(tokio::time::Instant::now());
            }
        }
    }

    /// Forgets the rooms left long enough ago and returns them, for their
    /// channels to be unsubscribed (a room left and joined again in between
    /// keeps its subscription).
    pub(super) fn take_idle(&mut self) -> Vec<Arc<str>> {
        let idle: Vec<Arc<str>> = self
            .map
            .iter()
            .filter(|(_, r)| {
                r.refs == 0
                    && r.idle_since
                        .is_some_and(|t| t.elapsed() >= UNSUBSCRIBE_DELAY)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for room in &idle {
            self.map.remove(room);
        }
        idle
    }

    /// Forgets the rooms nobody references any more (not worth subscribing
    /// on a new connection).
    pub(super) fn retain_live(&mut self) {
        self.map.retain(|_, r| r.refs > 0);
    }

    pub(super) fn contains(&self, room: &str) -> bool {
        self.map.contains_key(room)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(super) fn names(&self) -> Vec<Arc<str>> {
        self.map.keys().cloned().collect()
    }

    /// Delivers a channel message of `room` (nothing when the room is not
    /// followed). An error: the gap before it could not be filled, nothing
    /// was delivered.
    pub(super) async fn deliver(
        &mut self,
        shared: &Shared,
        room: &str,
        message: &[u8],
    ) -> Result<(), BrokerError> {
        match self.map.get_mut(room) {
            Some(r) => on_message(shared, room, &mut r.pos, message).await,
            None => Ok(()),
        }
    }

    /// Delivers what the room's stream holds past what was delivered last
    /// (nothing when the room is not followed).
    pub(super) async fn catch_up(
        &mut self,
        shared: &Shared,
        room: &str,
    ) -> Result<(), BrokerError> {
        match self.map.get_mut(room) {
            Some(r) => catch_up(shared, room, &mut r.pos, None).await,
            None => Ok(()),
        }
    }
}

//! The rooms a node is subscribed to, with what was delivered last in each:
//! the bookkeeping both pub/sub tasks share (plain and cluster), so a room
//! is started, referenced, released, unsubscribed and delivered to the same
//! way whichever connection carries it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::broker::BrokerError;

use super::catchup::{RoomPos, catch_up, on_message};
use super::{Shared, UNSUBSCRIBE_DELAY};

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
    pub(super) fn add_ref(&mut self, room: &str) -> bool {
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

    /// Starts following a room whose channel was just subscribed: its
    /// position is read only now, so anything published from here on
    /// arrives over pub/sub.
    pub(super) async fn start(
        &mut self,
        shared: &Shared,
        room: Arc<str>,
    ) -> Result<(), BrokerError> {
        let (epoch, top, _) = shared.recover_raw(&room, -1).await?;
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

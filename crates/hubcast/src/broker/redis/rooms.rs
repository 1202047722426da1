//! The rooms a node is subscribed to, with what was delivered last in each:
//! the pub/sub task's bookkeeping, the same whichever link (plain or
//! cluster) carries the rooms.

use std::collections::HashMap;
use std::sync::Arc;

use crate::broker::BrokerError;

use super::catchup::{RoomPos, catch_up, on_message};
use super::link::Link;
use super::{Shared, UNSUBSCRIBE_DELAY, unavailable};

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
    /// `refs` more references to a room that still has one; false
    /// otherwise (while the connection is down a room cannot be subscribed
    /// anew).
    pub(super) fn add_live_refs(&mut self, room: &str, refs: usize) -> bool {
        match self.map.get_mut(room).filter(|r| r.refs > 0) {
            Some(r) => {
                r.refs += refs;
                true
            }
            None => false,
        }
    }

    /// `refs` more local references to each of `rooms`, for the joins
    /// that came in one turn of the pub/sub task; the result of each, in
    /// order. A room already followed costs nothing. The others' channels
    /// are subscribed first, in one command (one per channel on a cluster),
    /// and their positions read only then, all at once, so anything
    /// published from there on arrives over pub/sub, and a wave of joins
    /// costs two round trips rather than two per room. An `Err`: the link
    /// failed (its subscriptions are then restored), and none was added.
    pub(super) async fn subscribe_many(
        &mut self,
        shared: &Shared,
        link: &mut Link,
        rooms: &[(Arc<str>, usize)],
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        let mut results: Vec<Result<(), BrokerError>> = vec![Ok(()); rooms.len()];
        let mut new: Vec<usize> = Vec::new();
        for (i, (room, refs)) in rooms.iter().enumerate() {
            match self.map.get_mut(room) {
                Some(r) => {
                    r.refs += refs;
                    r.idle_since = None;
                }
                None => new.push(i),
            }
        }
        if new.is_empty() {
            return Ok(results);
        }
        let channels: Vec<String> = new
            .iter()
            .map(|i| shared.keys.channel(&rooms[*i].0))
            .collect();
        link.subscribe_all(channels).await.map_err(unavailable)?;
        let reads = new.iter().map(|i| shared.recover_raw(&rooms[*i].0, -1));
        let positions = futures_util::future::join_all(reads).await;
        let mut unread: Vec<String> = Vec::new();
        for (i, read) in new.into_iter().zip(positions) {
            let (room, refs) = &rooms[i];
            match read {
                Ok((epoch, top, _)) => {
                    let pos = RoomPos::new(room, epoch, top);
                    self.map.insert(
                        room.clone(),
                        RoomSub {
                            refs: *refs,
                            pos,
                            idle_since: None,
                        },
                    );
                }
                Err(e) => {
                    unread.push(shared.keys.channel(room));
                    results[i] = Err(e);
                }
            }
        }
        if !unread.is_empty() {
            // Not followed, so not subscribed either; a failure here leaves
            // only a channel whose messages nobody takes.
            let _ = link.unsubscribe_all(unread).await;
        }
        Ok(results)
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

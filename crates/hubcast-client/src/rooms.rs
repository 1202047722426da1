//! One room's delivery state: messages are delivered once (by msgId, over
//! a bounded window) and in offset order within an epoch; a gap is waited
//! for up to `gap_timeout`; messages that come while a rejoin with `since`
//! is in flight wait for its replay. A message the client cannot decode
//! keeps its place in that order ([`Incoming::Unreadable`]).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use hubcast_protocol::client::Request;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;
use crate::events::{Envelope, Event, Joined, Position, Unreadable};

/// A `message` frame of a room, decoded or not: either takes its offset.
pub(crate) enum Incoming {
    /// Decoded.
    Message(Envelope),
    /// Only its position could be read.
    Unreadable {
        position: Position,
        /// Why the rest could not.
        error: String,
        /// The frame.
        text: String,
    },
}

impl Incoming {
    pub(crate) fn room(&self) -> &str {
        match self {
            Incoming::Message(e) => &e.room,
            Incoming::Unreadable { position, .. } => &position.room,
        }
    }

    fn offset(&self) -> u64 {
        match self {
            Incoming::Message(e) => e.offset,
            Incoming::Unreadable { position, .. } => position.offset,
        }
    }

    fn epoch(&self) -> &str {
        match self {
            Incoming::Message(e) => &e.epoch,
            Incoming::Unreadable { position, .. } => &position.epoch,
        }
    }

    fn msg_id(&self) -> &str {
        match self {
            Incoming::Message(e) => &e.msg_id,
            Incoming::Unreadable { position, .. } => &position.msg_id,
        }
    }

    fn into_event(self) -> Event {
        match self {
            Incoming::Message(e) => Event::Message(e),
            Incoming::Unreadable {
                position,
                error,
                text,
            } => Event::Unreadable(Unreadable {
                position: Some(position),
                error,
                text,
            }),
        }
    }
}

/// One room's delivery state.
#[derive(Default)]
pub(crate) struct RoomState {
    /// The last offset delivered (or the room's position at a first join):
    /// the `since` of the next rejoin.
    pub(crate) offset: Option<u64>,
    /// The epoch of `offset`; a message of another epoch starts over.
    pub(crate) epoch: Option<String>,
    /// Join replies awaited by callers.
    pub(crate) waiters: Vec<oneshot::Sender<Result<Joined, Error>>>,
    /// Messages that came while a rejoin with `since` was in flight.
    pub(crate) stash: Option<Vec<Incoming>>,
    /// A rejoin was refused for a passing reason: when to send it again.
    pub(crate) rejoin_at: Option<Instant>,
    /// Messages past a gap, by offset.
    held: BTreeMap<u64, Incoming>,
    /// When the first message past the current gap came.
    gap_since: Option<Instant>,
    /// msgIds delivered, so a message is not delivered twice.
    seen: HashSet<String>,
    /// `seen` oldest first, to forget beyond the dedupe window.
    seen_order: VecDeque<String>,
}

impl RoomState {
    /// The `join` frame for this room: with `since` and `epoch` when a
    /// position is known, and then live messages are stashed until the
    /// replay has come.
    pub(crate) fn join_frame(&mut self, room: &str, id: u64) -> String {
        let since = self.offset;
        if since.is_some() {
            self.stash = Some(Vec::new());
        }
        let frame: Request<'_> = Request::Join {
            id: Some(id),
            room,
            since,
            epoch: since.and(self.epoch.as_deref()),
        };
        frame.to_text()
    }

    /// When the gap being waited for is given up on.
    pub(crate) fn gap_deadline(&self, gap_timeout: Duration) -> Option<Instant> {
        self.gap_since.map(|t| t + gap_timeout)
    }

    pub(crate) fn on_joined(&mut self, j: &Joined, out: &mut Vec<Event>, cap: usize, now: Instant) {
        let stash = self.stash.take().unwrap_or_default();
        if j.recovered == Some(false) {
            self.epoch = Some(j.epoch.clone());
            self.offset = Some(j.offset);
            self.held.clear();
            self.gap_since = None;
            out.push(Event::Unrecovered {
                room: j.room.clone(),
                epoch: j.epoch.clone(),
                offset: j.offset,
            });
        } else if j.recovered.is_none() {
            // A first join: the room's position now (a personal room is
            // subscribed from the start, so messages may have come before).
            self.epoch = Some(j.epoch.clone());
            self.offset = Some(self.offset.unwrap_or(0).max(j.offset));
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Ok(j.clone()));
        }
        for env in stash {
            self.accept(env, out, cap, now);
        }
    }

    pub(crate) fn accept(&mut self, env: Incoming, out: &mut Vec<Event>, cap: usize, now: Instant) {
        if let Some(stash) = &mut self.stash {
            stash.push(env);
            return;
        }
        if self.seen.contains(env.msg_id()) {
            return;
        }
        let offset = env.offset();
        if self.epoch.as_deref().is_some_and(|e| e != env.epoch()) {
            // The room's history was lost: start over from this message.
            out.push(Event::Unrecovered {
                room: env.room().to_owned(),
                epoch: env.epoch().to_owned(),
                offset: offset.saturating_sub(1),
            });
            self.held.clear();
            self.gap_since = None;
            self.offset = Some(offset.saturating_sub(1));
        }
        self.epoch = Some(env.epoch().to_owned());
        let top = *self.offset.get_or_insert(offset.saturating_sub(1));
        if offset <= top {
            return;
        }
        if offset == top + 1 {
            self.deliver(env, out, cap);
            while let Some(next) = self.held.first_key_value().map(|(k, _)| *k) {
                let top = self.offset.unwrap_or(0);
                if next > top + 1 {
                    break;
                }
                if let Some(e) = self.held.remove(&next)
                    && next == top + 1
                {
                    self.deliver(e, out, cap);
                }
            }
            if self.held.is_empty() {
                self.gap_since = None;
            }
            return;
        }
        self.held.insert(offset, env);
        self.gap_since.get_or_insert(now);
    }

    /// Gives up waiting for a gap: delivers what is held, in order.
    pub(crate) fn flush_gap(&mut self, out: &mut Vec<Event>, cap: usize) {
        self.gap_since = None;
        for (_, e) in std::mem::take(&mut self.held) {
            if e.offset() > self.offset.unwrap_or(0) {
                self.deliver(e, out, cap);
            }
        }
    }

    fn deliver(&mut self, env: Incoming, out: &mut Vec<Event>, cap: usize) {
        self.offset = Some(env.offset());
        self.seen.insert(env.msg_id().to_owned());
        self.seen_order.push_back(env.msg_id().to_owned());
        while self.seen_order.len() > cap {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        out.push(env.into_event());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// A room under test and what it delivered, at one instant, with at
    /// most 10 messages buffered.
    struct Room {
        state: RoomState,
        out: Vec<Event>,
        now: Instant,
    }

    /// A room joined at `offset` in `epoch`.
    fn at(offset: u64, epoch: &str) -> Room {
        Room {
            state: RoomState {
                offset: Some(offset),
                epoch: Some(epoch.into()),
                ..RoomState::default()
            },
            out: Vec::new(),
            now: Instant::now(),
        }
    }

    impl Room {
        fn accept(&mut self, offset: u64, epoch: &str, id: &str) {
            self.state
                .accept(env(offset, epoch, id), &mut self.out, 10, self.now);
        }

        /// Offsets of the messages delivered so far.
        fn offsets(&self) -> Vec<u64> {
            self.out
                .iter()
                .filter_map(|e| match e {
                    Event::Message(m) => Some(m.offset),
                    _ => None,
                })
                .collect()
        }
    }

    fn env(offset: u64, epoch: &str, id: &str) -> Incoming {
        Incoming::Message(Envelope {
            room: "r".into(),
            offset,
            epoch: epoch.into(),
            msg_id: id.into(),
            timestamp: 0,
            event_type: "e".into(),
            source: "u".into(),
            data: Value::Null,
        })
    }

    fn unreadable(offset: u64, id: &str) -> Incoming {
        Incoming::Unreadable {
            position: Position {
                room: "r".into(),
                offset,
                epoch: "e".into(),
                msg_id: id.into(),
            },
            error: "number out of range".into(),
            text: "{...}".into(),
        }
    }

    #[test]
    fn delivers_in_order_once_and_waits_for_gaps() {
        let mut r = at(0, "e");
        r.accept(1, "e", "a");
        r.accept(1, "e", "a");
        r.accept(3, "e", "c");
        assert_eq!(r.offsets(), [1]);
        assert!(r.state.gap_since.is_some());
        r.accept(2, "e", "b");
        assert_eq!(r.offsets(), [1, 2, 3]);
        assert!(r.state.gap_since.is_none());
        // A gap that never fills is given up on, in order.
        r.accept(6, "e", "f");
        r.accept(5, "e", "e");
        r.state.flush_gap(&mut r.out, 10);
        assert_eq!(r.offsets(), [1, 2, 3, 5, 6]);
        // Same msgId again at another offset: not delivered twice.
        r.accept(7, "e", "e");
        assert_eq!(r.offsets(), [1, 2, 3, 5, 6]);
    }

    #[test]
    fn an_unreadable_message_takes_its_place_and_holds_nothing_up() {
        let mut r = at(0, "e");
        r.accept(1, "e", "a");
        r.state.accept(unreadable(2, "b"), &mut r.out, 10, r.now);
        r.accept(3, "e", "c");
        assert_eq!(r.offsets(), [1, 3]);
        assert!(r.state.gap_since.is_none(), "no gap waited for");
        assert_eq!(r.state.offset, Some(3));
        match &r.out[1] {
            Event::Unreadable(u) => {
                assert_eq!(u.position.as_ref().map(|p| p.offset), Some(2));
                assert_eq!(u.error, "number out of range");
            }
            other => panic!("{other:?}"),
        }
        // Once, like any message; and in order when it filled a gap.
        r.state.accept(unreadable(2, "b"), &mut r.out, 10, r.now);
        r.accept(5, "e", "e");
        r.state.accept(unreadable(4, "d"), &mut r.out, 10, r.now);
        let kinds: Vec<_> = r
            .out
            .iter()
            .map(|e| matches!(e, Event::Message(_)))
            .collect();
        assert_eq!(kinds, [true, false, true, false, true]);
    }

    #[test]
    fn a_new_epoch_is_reported_and_followed() {
        let mut r = at(5, "old");
        r.accept(1, "new", "x");
        assert!(matches!(&r.out[0], Event::Unrecovered { epoch, .. } if epoch == "new"));
        assert_eq!(r.offsets(), [1]);
    }

    #[test]
    fn a_rejoin_stashes_live_messages_until_the_replay() {
        let mut r = at(5, "e");
        let f: Value = serde_json::from_str(&r.state.join_frame("r", 1)).unwrap();
        assert_eq!(f["since"], 5);
        // Live message 8 comes before `joined`; the replay (6, 7) after.
        r.accept(8, "e", "h");
        assert!(r.out.is_empty());
        let joined = Joined {
            room: "r".into(),
            offset: 8,
            epoch: "e".into(),
            recovered: Some(true),
            members: Value::Null,
        };
        r.state.on_joined(&joined, &mut r.out, 10, r.now);
        r.accept(6, "e", "f");
        r.accept(7, "e", "g");
        assert_eq!(r.offsets(), [6, 7, 8]);
    }
}

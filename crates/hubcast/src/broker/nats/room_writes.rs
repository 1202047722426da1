//! [`RoomWrites`]: this node's changes of a room's presence, written
//! together.
//!
//! A room's presence is one key changed by compare-and-set. Each join
//! rewriting it on its own, a wave of joins into one room retried each
//! other out (measured in docs/benchmarks.md, "a join wave into one room
//! on NATS"). Here a node's changes to a room queue, and one writer per
//! room applies every change queued so far in a single compare-and-set,
//! then their follow-ups, then the next lot: other nodes are the only
//! writers left to race.
//!
//! Invariants: at most one writer per room and node; a change is applied
//! in the order it was queued, and answered after its write and its
//! follow-ups; the follow-ups of one user (its record, its presence
//! event) and of the room (`room.occupied` / `room.vacated`) keep the
//! order of the changes, so the events replayed give the member list.
//! The writer is a task of the engine's, so a caller that gives up does
//! not take the changes queued behind its own with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::broker::{BrokerError, EventType, PresenceEvent};
use crate::protocol::PresenceAction;

use super::kv::modify;
use super::presence::{PresenceEntry, RoomPresence, encode, parse};
use super::webhooks::Pending;
use super::{Shared, down, keys};

/// One change of a room's presence.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// Connection `conn` joins as `entry`.
    Join { conn: String, entry: PresenceEntry },
    /// Connection `conn` leaves (nothing when it is not there).
    Leave { conn: String },
}

/// What applying a change did to the room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Effect {
    /// The room had nobody before it.
    pub occupied: bool,
    /// It made its user a member (`Join`), or took the user's last
    /// connection out (`Leave`): (action, user, name).
    pub member: Option<(PresenceAction, String, String)>,
    /// The room has nobody after it.
    pub vacated: bool,
    /// It changed the room's presence.
    pub changed: bool,
}

/// Applies `change` to `p`.
pub(super) fn apply(p: &mut RoomPresence, change: &Change) -> Effect {
    match change {
        Change::Join { conn, entry } => {
            let joined = !p.values().any(|o| o.u == entry.u);
            let occupied = p.is_empty();
            p.insert(conn.clone(), entry.clone());
            Effect {
                occupied,
                member: joined.then(|| (PresenceAction::Join, entry.u.clone(), entry.n.clone())),
                changed: true,
                ..Effect::default()
            }
        }
        Change::Leave { conn } => {
            let Some(e) = p.remove(conn) else {
                return Effect::default();
            };
            let last = !p.values().any(|o| o.u == e.u);
            Effect {
                member: last.then_some((PresenceAction::Leave, e.u, e.n)),
                vacated: p.is_empty(),
                changed: true,
                ..Effect::default()
            }
        }
    }
}

type Waiter = (Change, oneshot::Sender<Result<(), BrokerError>>);

/// The changes waiting per room. A room is in the map while its writer
/// runs; its list is what the writer takes next.
#[derive(Default)]
pub(super) struct RoomWrites {
    rooms: Mutex<HashMap<Arc<str>, Vec<Waiter>>>,
}

impl Shared {
    /// Queues `change` of `room`'s presence and waits for it to be written
    /// and followed up.
    pub(super) async fn change_presence(
        self: &Arc<Self>,
        room: &str,
        change: Change,
    ) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut rooms = crate::lock(&self.room_writes.rooms);
            match rooms.get_mut(room) {
                Some(waiting) => {
                    waiting.push((change, tx));
                    None
                }
                None => {
                    let room: Arc<str> = Arc::from(room);
                    rooms.insert(room.clone(), vec![(change, tx)]);
                    Some(room)
                }
            }
        };
        if let Some(room) = start {
            let writer = Writer {
                shared: self.clone(),
                room,
                finished: false,
            };
            self.tasks.spawn(writer.run());
        }
        rx.await
            .map_err(|_| down("presence writer stopped before the change was written"))?
    }
}

/// A room's writer. Dropped (finished, or its task cancelled or panicking)
/// it takes the room out of the map, so the next change starts a writer
/// and the changes still queued are answered with an error, not left
/// waiting.
struct Writer {
    shared: Arc<Shared>,
    room: Arc<str>,
    /// The room was taken out when its list was found empty; the map may
    /// hold the next writer's entry by now.
    finished: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            crate::lock(&self.shared.room_writes.rooms).remove(&self.room);
        }
    }
}

impl Writer {
    async fn run(mut self) {
        loop {
            let batch = {
                let mut rooms = crate::lock(&self.shared.room_writes.rooms);
                match rooms.get_mut(&self.room) {
                    Some(waiting) if !waiting.is_empty() => std::mem::take(waiting),
                    // Out under the lock that found nothing queued: a
                    // change queued after it starts the next writer.
                    _ => {
                        rooms.remove(&self.room);
                        self.finished = true;
                        return;
                    }
                }
            };
            let (changes, answers): (Vec<Change>, Vec<_>) = batch.into_iter().unzip();
            let results = self.write(&changes).await;
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
        }
    }

    /// Writes `changes` in one compare-and-set and follows them up; each
    /// change's result, in order.
    async fn write(&self, changes: &[Change]) -> Vec<Result<(), BrokerError>> {
        let s = &*self.shared;
        let room = &*self.room;
        let written = modify(&s.state, &keys::presence_key(room), |v| {
            let mut p: RoomPresence = parse(v);
            let effects: Vec<Effect> = changes.iter().map(|c| apply(&mut p, c)).collect();
            let write = effects.iter().any(|e| e.changed).then(|| encode(&p));
            (write, effects)
        })
        .await;
        let effects = match written {
            Ok(effects) => effects,
            Err(e) => return changes.iter().map(|_| Err(e.clone())).collect(),
        };
        // Webhooks' room and member events, in the order of the changes
        // (decided by the compare-and-set above).
        for e in &effects {
            if e.occupied {
                s.wh_back(Pending::Room(room)).await;
            }
            if let Some((action, user, _)) = &e.member {
                let kind = match action {
                    PresenceAction::Leave => EventType::MemberLeft,
                    _ => EventType::MemberJoined,
                };
                s.wh_member(kind, room, user).await;
            }
            if e.vacated {
                s.wh_gone(Pending::Room(room)).await;
            }
        }
        // Each user's record and presence event, in order per user; users
        // apart from each other.
        let mut per_user: BTreeMap<&str, Vec<(usize, PresenceAction, &str)>> = BTreeMap::new();
        for (i, e) in effects.iter().enumerate() {
            if let Some((action, user, name)) = &e.member {
                per_user.entry(user).or_default().push((i, *action, name));
            }
        }
        let mut results: Vec<Result<(), BrokerError>> = changes.iter().map(|_| Ok(())).collect();
        let followed =
            futures_util::future::join_all(per_user.into_iter().map(|(user, steps)| async move {
                let mut failed = Vec::new();
                for (i, action, name) in steps {
                    let add = action == PresenceAction::Join;
                    match s.user_room(user, room, add).await {
                        Ok(status) => {
                            let event = PresenceEvent {
                                action,
                                user: Arc::from(user),
                                name: Arc::from(name),
                                status,
                            };
                            s.announce_presence(room, &event).await;
                        }
                        Err(e) => failed.push((i, e)),
                    }
                }
                failed
            }))
            .await;
        for (i, e) in followed.into_iter().flatten() {
            results[i] = Err(e);
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(conn: &str, user: &str) -> Change {
        Change::Join {
            conn: conn.into(),
            entry: PresenceEntry {
                u: user.into(),
                n: format!("{user} name"),
                d: "node".into(),
            },
        }
    }

    fn leave(conn: &str) -> Change {
        Change::Leave { conn: conn.into() }
    }

    fn who(action: PresenceAction, user: &str) -> Option<(PresenceAction, String, String)> {
        Some((action, user.into(), format!("{user} name")))
    }

    #[test]
    fn changes_in_one_write_decide_their_events_in_order() {
        let mut p = RoomPresence::new();
        let effects: Vec<Effect> = [
            join("a1", "ann"),
            join("a2", "ann"),
            join("b1", "bob"),
            leave("a1"),
            leave("a1"),
            leave("a2"),
            leave("b1"),
            join("a3", "ann"),
        ]
        .iter()
        .map(|c| apply(&mut p, c))
        .collect();
        let changed = |e: Effect| Effect { changed: true, ..e };
        assert_eq!(
            effects,
            vec![
                changed(Effect {
                    occupied: true,
                    member: who(PresenceAction::Join, "ann"),
                    ..Effect::default()
                }),
                changed(Effect::default()),
                changed(Effect {
                    member: who(PresenceAction::Join, "bob"),
                    ..Effect::default()
                }),
                changed(Effect::default()),
                Effect::default(),
                changed(Effect {
                    member: who(PresenceAction::Leave, "ann"),
                    ..Effect::default()
                }),
                changed(Effect {
                    member: who(PresenceAction::Leave, "bob"),
                    vacated: true,
                    ..Effect::default()
                }),
                changed(Effect {
                    occupied: true,
                    member: who(PresenceAction::Join, "ann"),
                    ..Effect::default()
                }),
            ]
        );
        assert_eq!(p.keys().collect::<Vec<_>>(), ["a3"]);
    }
}

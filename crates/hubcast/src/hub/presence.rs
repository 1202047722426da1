//! Pacing of a room's presence events. Every event is a frame to every
//! explicit member of the room on this node, so a join storm in a big room
//! would send members x joins frames (1,500 joins: 1.15 M frames, and
//! honest members closed as slow consumers). Per room and node the
//! presence fan-out is held to [`RATE`] frames a second, with a burst of
//! [`BURST`] frames (or of one event, however big the room). Within it each
//! event goes out as its own `presence` frame, as in protocol 1.1; past it,
//! events wait for the room's next flush, which sends one frame for all of
//! them: `action: "batch"` with the events in order, or, past
//! [`BATCH_MAX`] of them, `action: "sync"` with their count (the member
//! list changed: fetch it). See docs/protocol.md, "Presence pacing".

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::broker::PresenceEvent;
use crate::protocol::{self, out};

/// Presence frames a second a room may fan out on one node.
pub(super) const RATE: f64 = 20_000.0;
/// Frames a room may fan out at once (one event always may).
pub(super) const BURST: f64 = 2_000.0;
/// Shortest time between two flushes of a room.
const MIN_GAP: Duration = Duration::from_millis(100);
/// Longest: a room of more than `RATE * MAX_GAP` members gets a flush a
/// second regardless (its events must not wait longer).
const MAX_GAP: Duration = Duration::from_secs(1);
/// Most events a `batch` frame lists; more make a `sync` frame.
pub(super) const BATCH_MAX: usize = 64;

/// A room's presence budget and the events held for its next flush.
#[derive(Debug)]
pub(super) struct Pace {
    /// Frames the room may still fan out now (negative after a flush that
    /// overdrew it).
    tokens: f64,
    /// When `tokens` was last refilled.
    at: Instant,
    /// The first [`BATCH_MAX`] held events, in order.
    held: Vec<PresenceEvent>,
    /// Events held in all.
    held_count: usize,
    /// A flush is scheduled.
    scheduled: bool,
}

/// What to do with an event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// Fan it out now, as its own frame.
    Send,
    /// Held for the next flush; `Some(at)` when that flush must be
    /// scheduled (at `at`).
    Hold(Option<Instant>),
}

impl Pace {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            // Capped at the first refill, when the room's size is known.
            tokens: f64::INFINITY,
            at: now,
            held: Vec::new(),
            held_count: 0,
            scheduled: false,
        }
    }

    fn refill(&mut self, cost: usize, now: Instant) {
        let cap = BURST.max(cost as f64);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * RATE).min(cap);
        self.at = now;
    }

    /// An event that would cost `cost` frames (the room's explicit local
    /// members): sent now while the budget allows and nothing is held
    /// (events keep their order), else held.
    pub(super) fn offer(&mut self, event: &PresenceEvent, cost: usize, now: Instant) -> Offer {
        self.refill(cost, now);
        if self.held_count == 0 && self.tokens >= cost as f64 {
            self.tokens -= cost as f64;
            return Offer::Send;
        }
        if self.held.len() < BATCH_MAX {
            self.held.push(event.clone());
        }
        self.held_count += 1;
        if self.scheduled {
            return Offer::Hold(None);
        }
        self.scheduled = true;
        let deficit = (cost as f64 - self.tokens).max(0.0);
        let gap = Duration::from_secs_f64(deficit / RATE).clamp(MIN_GAP, MAX_GAP);
        Offer::Hold(Some(now + gap))
    }

    /// The scheduled flush: the one frame for the held events, its cost
    /// taken from the budget; `None` when nothing is held.
    pub(super) fn flush(&mut self, room: &str, cost: usize, now: Instant) -> Option<Bytes> {
        self.scheduled = false;
        if self.held_count == 0 {
            return None;
        }
        self.refill(cost, now);
        self.tokens -= cost as f64;
        let frame = if self.held_count <= BATCH_MAX {
            let events: Vec<out::PresenceChange<'_>> = self
                .held
                .iter()
                .map(|e| out::PresenceChange {
                    action: e.action,
                    user: &e.user,
                    name: &e.name,
                    status: e.status,
                })
                .collect();
            protocol::encode(&out::PresenceBatch {
                ty: "presence",
                room,
                action: "batch",
                events: &events,
            })
        } else {
            protocol::encode(&out::PresenceSync {
                ty: "presence",
                room,
                action: "sync",
                changes: self.held_count,
            })
        };
        self.held.clear();
        self.held_count = 0;
        Some(frame)
    }

    /// Nothing is held and the budget is full: the room may drop its pace.
    #[cfg(test)]
    pub(super) fn idle(&self) -> bool {
        self.held_count == 0 && !self.scheduled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PresenceAction, Status};
    use std::sync::Arc;

    fn event(user: &str) -> PresenceEvent {
        PresenceEvent {
            action: PresenceAction::Join,
            user: Arc::from(user),
            name: Arc::from(user),
            status: Status::Online,
        }
    }

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_room_sends_each_event_and_a_busy_one_batches_them() {
        let mut p = Pace::new(Instant::now());
        // 10 members: 200 events fit the burst, one frame each.
        for i in 0..200 {
            assert_eq!(
                p.offer(&event(&format!("u{i}")), 10, Instant::now()),
                Offer::Send
            );
        }
        // The next one is held and schedules the flush; the one after it
        // waits for that same flush.
        let Offer::Hold(Some(at)) = p.offer(&event("a"), 10, Instant::now()) else {
            panic!("held, with a flush to schedule");
        };
        assert_eq!(at, Instant::now() + MIN_GAP);
        assert_eq!(p.offer(&event("b"), 10, Instant::now()), Offer::Hold(None));
        tokio::time::advance(MIN_GAP).await;
        let f = json(&p.flush("r", 10, Instant::now()).unwrap());
        assert_eq!(f["type"], "presence");
        assert_eq!(f["room"], "r");
        assert_eq!(f["action"], "batch");
        let users: Vec<_> = f["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["user"].clone())
            .collect();
        assert_eq!(users, vec!["a", "b"]);
        assert_eq!(f["events"][0]["action"], "join");
        assert_eq!(f["events"][0]["status"], "online");
        assert!(p.idle());
        // Quiet again a second later: one frame per event.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(p.offer(&event("c"), 10, Instant::now()), Offer::Send);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_batch_size_a_sync_frame_counts_the_changes() {
        let mut p = Pace::new(Instant::now());
        assert_eq!(p.offer(&event("first"), 2_000, Instant::now()), Offer::Send);
        for i in 0..100 {
            let _ = p.offer(&event(&format!("u{i}")), 2_000, Instant::now());
        }
        tokio::time::advance(MIN_GAP).await;
        let f = json(&p.flush("r", 2_000, Instant::now()).unwrap());
        assert_eq!(f["action"], "sync");
        assert_eq!(f["changes"], 100);
        assert!(f.get("events").is_none());
        assert_eq!(p.flush("r", 2_000, Instant::now()), None, "nothing held");
    }

    #[tokio::test(start_paused = true)]
    async fn a_big_room_sends_a_lone_event_at_once_and_paces_the_rest() {
        let mut p = Pace::new(Instant::now());
        // 50,000 members: one event goes out as it is, however big.
        assert_eq!(p.offer(&event("a"), 50_000, Instant::now()), Offer::Send);
        // The next waits at most MAX_GAP.
        let Offer::Hold(Some(at)) = p.offer(&event("b"), 50_000, Instant::now()) else {
            panic!("held");
        };
        assert_eq!(at, Instant::now() + MAX_GAP);
    }

    /// Over a storm, the frames fanned out stay within the budget:
    /// `BURST + RATE * elapsed` (plus one event's cost), whatever the
    /// number of events.
    #[tokio::test(start_paused = true)]
    async fn a_storm_fans_out_within_the_rate() {
        let start = Instant::now();
        let mut p = Pace::new(start);
        let mut frames = 0usize;
        let mut due: Option<Instant> = None;
        // 1,500 joins, one a millisecond, each member costing one frame.
        for members in 1..=1_500usize {
            tokio::time::advance(Duration::from_millis(1)).await;
            let now = Instant::now();
            if due.is_some_and(|d| d <= now) {
                due = None;
                if p.flush("r", members, now).is_some() {
                    frames += members;
                }
            }
            match p.offer(&event(&format!("u{members}")), members, now) {
                Offer::Send => frames += members,
                Offer::Hold(Some(at)) => due = Some(at),
                Offer::Hold(None) => {}
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (frames as f64) <= BURST + RATE * elapsed + 1_500.0,
            "{frames} frames in {elapsed} s"
        );
        // Unpaced, it would have been 1,500 * 1,501 / 2.
        assert!(frames < 1_500 * 1_501 / 2 / 10, "{frames}");
    }
}

//! The memory engine's webhook log (`crate::broker::webhooks`): the same
//! semantics as the Redis engine's stream, on one node. Transitions are
//! recorded under the presence lock (the lock order is presence, then this
//! log), so the log holds them in the order presence changed;
//! `message.published` under the room's log lock (room, then this log), so
//! an acknowledged publish has its event.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::MemoryBroker;
use crate::broker::BrokerError;
use crate::broker::webhooks::{EventType, LoggedEvent, WebhookEvent, WebhookLog};
use crate::lock;

/// Most entries kept for the slowest webhook: past it the oldest go,
/// counted as dropped (a receiver down for long on a busy server).
const MAX_ENTRIES: usize = 100_000;

/// What a pending (delayed) event waits on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Pending {
    /// `room.vacated` of this room.
    Room(Arc<str>),
    /// `user.offline` of this user.
    User(Arc<str>),
}

#[derive(Default)]
pub(super) struct EventLog {
    /// Webhooks are configured: transitions are recorded.
    enabled: bool,
    /// `webhook_offline_delay`.
    delay: Duration,
    /// Entries, oldest first; the first one's sequence is `first`.
    entries: VecDeque<LoggedEvent>,
    first: u64,
    /// Group → sequence of its first entry not acknowledged.
    groups: HashMap<String, u64>,
    /// Delayed events: due time, order of arrival, the event.
    pending: HashMap<Pending, (Instant, u64, WebhookEvent)>,
    next_pending: u64,
}

impl MemoryBroker {
    /// The event log, when webhooks are on (presence changes cost nothing
    /// more without).
    pub(super) fn event_log(&self) -> Option<std::sync::MutexGuard<'_, EventLog>> {
        self.webhooks_on
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| lock(&self.events))
    }
}

impl EventLog {
    fn push(&mut self, event: WebhookEvent) {
        self.entries.push_back(LoggedEvent {
            id: uuid::Uuid::now_v7().to_string(),
            event,
        });
        if self.entries.len() > MAX_ENTRIES {
            self.entries.pop_front();
            self.first += 1;
            metrics::counter!(crate::metrics::WEBHOOK_DROPPED, "webhook" => "all").increment(1);
        }
    }

    /// A room got its first member: `room.occupied`, unless its
    /// `room.vacated` is still pending (then neither is sent).
    pub(super) fn occupied(&mut self, room: &str) {
        if self.enabled && !self.cancel(Pending::Room(room.into())) {
            self.push(WebhookEvent::room(
                EventType::RoomOccupied,
                room,
                crate::unix_ms(),
            ));
        }
    }

    /// A room lost its last member: `room.vacated` after the delay.
    pub(super) fn vacated(&mut self, room: &str) {
        if self.enabled {
            let e = WebhookEvent::room(EventType::RoomVacated, room, crate::unix_ms());
            self.delay(Pending::Room(room.into()), e);
        }
    }

    /// `member.joined` / `member.left`.
    pub(super) fn member(&mut self, kind: EventType, room: &str, user: &str) {
        if self.enabled {
            self.push(WebhookEvent::member(kind, room, user, crate::unix_ms()));
        }
    }

    /// A user's first connection: `user.online`, unless their
    /// `user.offline` is still pending.
    pub(super) fn online(&mut self, user: &str) {
        if self.enabled && !self.cancel(Pending::User(user.into())) {
            self.push(WebhookEvent::user(
                EventType::UserOnline,
                user,
                crate::unix_ms(),
            ));
        }
    }

    /// A user's last connection closed: `user.offline` after the delay.
    pub(super) fn offline(&mut self, user: &str) {
        if self.enabled {
            let e = WebhookEvent::user(EventType::UserOffline, user, crate::unix_ms());
            self.delay(Pending::User(user.into()), e);
        }
    }

    /// `message.published`, with the envelope clients got.
    pub(super) fn published(&mut self, room: &str, envelope: bytes::Bytes, time: i64) {
        if self.enabled {
            self.push(WebhookEvent {
                message: Some(envelope),
                ..WebhookEvent::room(EventType::MessagePublished, room, time)
            });
        }
    }

    fn delay(&mut self, key: Pending, event: WebhookEvent) {
        let n = self.next_pending;
        self.next_pending += 1;
        self.pending
            .insert(key, (Instant::now() + self.delay, n, event));
    }

    /// Removes `key`'s pending event; true when it was still within its
    /// delay (the return cancels it). One already due is logged first:
    /// it happened, whether or not the promoter got to it yet.
    fn cancel(&mut self, key: Pending) -> bool {
        match self.pending.remove(&key) {
            None => false,
            Some((due, _, event)) if due <= Instant::now() => {
                self.push(event);
                false
            }
            Some(_) => true,
        }
    }

    /// Logs the pending events that are due, in the order they were
    /// noticed.
    fn promote(&mut self) {
        let now = Instant::now();
        let mut due: Vec<(u64, Pending)> = self
            .pending
            .iter()
            .filter(|(_, (at, _, _))| *at <= now)
            .map(|(k, (_, n, _))| (*n, k.clone()))
            .collect();
        due.sort_by_key(|(n, _)| *n);
        for (_, key) in due {
            if let Some((_, _, event)) = self.pending.remove(&key) {
                self.push(event);
            }
        }
    }

    /// Drops the entries every group acknowledged.
    fn trim(&mut self) {
        let Some(low) = self.groups.values().min().copied() else {
            return;
        };
        while self.first < low && self.entries.pop_front().is_some() {
            self.first += 1;
        }
    }
}

#[async_trait]
impl WebhookLog for MemoryBroker {
    async fn enable_webhooks(&self, groups: &[String], delay: Duration) -> Result<(), BrokerError> {
        let mut log = lock(&self.events);
        log.enabled = !groups.is_empty();
        self.webhooks_on
            .store(log.enabled, std::sync::atomic::Ordering::SeqCst);
        log.delay = delay;
        let start = log.first + log.entries.len() as u64;
        // A webhook removed by a reload holds nothing back any more.
        log.groups.retain(|g, _| groups.contains(g));
        for g in groups {
            log.groups.entry(g.clone()).or_insert(start);
        }
        log.trim();
        if !log.enabled {
            log.pending.clear();
        }
        Ok(())
    }

    async fn promote(&self) -> Result<(), BrokerError> {
        lock(&self.events).promote();
        Ok(())
    }

    async fn lead(&self, _group: &str, _ttl: Duration) -> Result<bool, BrokerError> {
        Ok(true)
    }

    async fn read(&self, group: &str, max: usize) -> Result<Vec<LoggedEvent>, BrokerError> {
        let log = lock(&self.events);
        let Some(&next) = log.groups.get(group) else {
            return Err(BrokerError::Internal(format!(
                "unknown webhook group {group}"
            )));
        };
        let skip = next.saturating_sub(log.first) as usize;
        Ok(log.entries.iter().skip(skip).take(max).cloned().collect())
    }

    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BrokerError> {
        let mut log = lock(&self.events);
        let Some(&next) = log.groups.get(group) else {
            return Ok(());
        };
        let Some(last) = ids.last() else {
            return Ok(());
        };
        // Batches are read and acknowledged oldest first, whole (every id
        // read): the last one is where the group now stands.
        let skip = next.saturating_sub(log.first) as usize;
        let found = log
            .entries
            .iter()
            .skip(skip)
            .position(|e| &e.id == last)
            .map(|at| next.max(log.first) + at as u64 + 1);
        if let Some(to) = found {
            log.groups.insert(group.to_string(), to);
            log.trim();
        }
        Ok(())
    }
}

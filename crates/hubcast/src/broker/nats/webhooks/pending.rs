//! Pending webhook events (`room.vacated`, `user.offline`): written when
//! the last one leaves, cancelled by a return within the delay, promoted
//! into the log once due (see the parent module for the keys and the
//! deduplicated promotion).

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::super::kv::list_keys;
use super::{Log, Shared, down, keys};
use crate::broker::{BrokerError, EventType, WebhookEvent};

/// A pending event's key value.
#[derive(Serialize, Deserialize)]
struct Due {
    /// When it is due, Unix ms.
    due: i64,
    /// When the last one left (the event's time), Unix ms.
    ts: i64,
}

/// What a pending event waits on.
#[derive(Clone, Copy)]
pub(in crate::broker::nats) enum Pending<'a> {
    /// `room.vacated` of this room.
    Room(&'a str),
    /// `user.offline` of this user.
    User(&'a str),
}

impl Pending<'_> {
    pub(super) fn key(self) -> String {
        match self {
            Pending::Room(r) => format!("z.r.{}", keys::encode(r)),
            Pending::User(u) => format!("z.u.{}", keys::encode(u)),
        }
    }

    fn event(self, ts: i64) -> WebhookEvent {
        match self {
            Pending::Room(r) => WebhookEvent::room(EventType::RoomVacated, r, ts),
            Pending::User(u) => WebhookEvent::user(EventType::UserOffline, u, ts),
        }
    }
}

/// The pending event a key names, for the promoter.
pub(super) fn pending_of(key: &str) -> Option<(bool, String)> {
    let (room, token) = match key.strip_prefix("z.r.") {
        Some(t) => (true, t),
        None => (false, key.strip_prefix("z.u.")?),
    };
    Some((room, keys::decode(token)?))
}

impl Shared {
    /// A room got its first member (`Pending::Room`) or a user their first
    /// connection (`Pending::User`): `room.occupied` / `user.online`,
    /// unless the pending `room.vacated` / `user.offline` is still within
    /// its delay (then neither is sent).
    pub(in crate::broker::nats) async fn wh_back(&self, who: Pending<'_>) {
        let Some(log) = self.wh() else { return };
        match self.wh_cancel(log, who).await {
            Ok(true) => {}
            Ok(false) => {
                let now = crate::unix_ms();
                let event = match who {
                    Pending::Room(r) => WebhookEvent::room(EventType::RoomOccupied, r, now),
                    Pending::User(u) => WebhookEvent::user(EventType::UserOnline, u, now),
                };
                self.wh_event(event).await;
            }
            Err(e) => tracing::warn!(error = %e, "webhooks: return not recorded"),
        }
    }

    /// Removes `who`'s pending event; true when it was still within its
    /// delay. One already due is recorded first: it happened.
    async fn wh_cancel(&self, log: &Log, who: Pending<'_>) -> Result<bool, BrokerError> {
        let key = who.key();
        for _ in 0..10 {
            let entry = log
                .bucket
                .entry(&key)
                .await
                .map_err(|e| down(format!("read {key}: {e}")))?;
            let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                return Ok(false);
            };
            let Ok(due) = serde_json::from_slice::<Due>(&entry.value) else {
                let _ = log.bucket.delete(&key).await;
                return Ok(false);
            };
            if due.due <= crate::unix_ms() {
                self.wh_promote_one(log, &key, entry.revision, who.event(due.ts))
                    .await?;
                return Ok(false);
            }
            match log
                .bucket
                .delete_expect_revision(&key, Some(entry.revision))
                .await
            {
                Ok(()) => return Ok(true),
                // Promoted or replaced meanwhile: look again.
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(down(format!("delete {key}: {e}"))),
            }
        }
        Err(down(format!("{key}: too many concurrent writers")))
    }

    /// A room's last member left (`Pending::Room`) or a user's last
    /// connection closed (`Pending::User`): `room.vacated` /
    /// `user.offline` after the delay.
    pub(in crate::broker::nats) async fn wh_gone(&self, who: Pending<'_>) {
        let Some(log) = self.wh() else { return };
        let now = crate::unix_ms();
        let delay = log.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
        let value = serde_json::to_vec(&Due {
            due: now + delay,
            ts: now,
        })
        .unwrap_or_default();
        if let Err(e) = log.bucket.put(who.key(), Bytes::from(value)).await {
            tracing::warn!(error = %e, "webhooks: delayed event not recorded");
        }
    }

    /// Appends a pending event (deduplicated on its key and revision), then
    /// deletes the key at that revision.
    async fn wh_promote_one(
        &self,
        log: &Log,
        key: &str,
        revision: u64,
        event: WebhookEvent,
    ) -> Result<(), BrokerError> {
        self.wh_append(log, &event, Some(&format!("{key}:{revision}")))
            .await?;
        match log.bucket.delete_expect_revision(key, Some(revision)).await {
            Ok(()) => Ok(()),
            // Another node promoted it: the append above was deduplicated.
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(down(format!("delete {key}: {e}"))),
        }
    }

    /// Moves the pending events due now into the log, in the order they
    /// were noticed.
    pub(super) async fn wh_promote_due(&self, log: &Log) -> Result<(), BrokerError> {
        let names = list_keys(&log.bucket, "webhook keys", |k| {
            k.starts_with("z.").then_some(k)
        })
        .await?;
        let now = crate::unix_ms();
        let mut due = Vec::new();
        for k in names {
            let Some(entry) = log
                .bucket
                .entry(&k)
                .await
                .map_err(|e| down(format!("read {k}: {e}")))?
                .filter(|e| e.operation == kv::Operation::Put)
            else {
                continue;
            };
            match serde_json::from_slice::<Due>(&entry.value) {
                Ok(d) if d.due <= now => due.push((d.due, entry.revision, d.ts, k)),
                Ok(_) => {}
                Err(_) => {
                    let _ = log.bucket.delete(&k).await;
                }
            }
        }
        // In the order they were noticed.
        due.sort();
        for (_, revision, ts, key) in due {
            let Some((room, who)) = pending_of(&key) else {
                continue;
            };
            let event = if room {
                Pending::Room(&who).event(ts)
            } else {
                Pending::User(&who).event(ts)
            };
            self.wh_promote_one(log, &key, revision, event).await?;
        }
        Ok(())
    }
}

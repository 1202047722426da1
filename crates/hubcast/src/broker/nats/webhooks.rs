//! The NATS engine's webhook log (`crate::broker::webhooks`).
//!
//! | what | NATS object | holds |
//! |---|---|---|
//! | events | stream `<P>_WEBHOOKS`, subject `<p>.webhooks` | one message per event (JSON: `t` type, `ts` time, `r` room, `u` user, `m` envelope); at most 100,000, the oldest go |
//! | cursors | bucket `<P>_webhooks`, key `c.<group>` | the stream sequence a webhook has acknowledged up to |
//! | leases | same bucket, key `l.<group>` | the node delivering that webhook and until when (ms) |
//! | pending | same bucket, keys `z.r.<room>`, `z.u.<user>` | a delayed `room.vacated` / `user.offline`: due and noticed (ms) |
//!
//! Transitions are decided where presence is, by the compare-and-set that
//! changes the room's presence key or the user's record (only one writer
//! wins it, whichever node), and the winner appends the event right after.
//! So each event is decided once for the cluster; a node that dies between
//! its compare-and-set and the append (one round trip) loses that event
//! (docs/design.md, "Webhooks"). The reaper removes a dead node's entries
//! through the same code, so its members' events follow its lease.
//!
//! Each webhook is a durable cursor in the bucket rather than a JetStream
//! consumer: reading from the cursor gives the same entries, oldest first,
//! until they are acknowledged, whichever node reads, so the node taking
//! over a webhook's lease starts with what the dead one had read and not
//! delivered, in order (a consumer would redeliver those only after its
//! ack wait, behind newer ones).
//!
//! A pending event is promoted by appending it with `Nats-Msg-Id`
//! `<key>:<revision>`, then deleting the key at that revision: two nodes
//! promoting it at once, or a node dying between the two steps and
//! another promoting it again, store it once.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{kv, stream};
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod pending;

use super::kv::modify;
use super::{NatsBroker, Shared, down, keys};

pub(super) use self::pending::Pending;
#[cfg(test)]
use self::pending::pending_of;
use crate::broker::{BrokerError, EventType, LoggedEvent, WebhookEvent, WebhookLog};

/// Most events kept: past it the oldest go (a receiver down for long on a
/// busy server), as on the other engines.
const MAX_EVENTS: i64 = 100_000;
/// How long a promoted event's `Nats-Msg-Id` is remembered.
const DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// The log, once webhooks are on.
pub(super) struct Log {
    bucket: kv::Store,
    stream: String,
    subject: String,
    /// `webhook_offline_delay` in ms.
    delay_ms: std::sync::atomic::AtomicI64,
    /// Some webhook is in force (a reload may remove the last one).
    on: std::sync::atomic::AtomicBool,
}

/// An event as the stream stores it.
#[derive(Serialize, Deserialize)]
struct Wire {
    t: String,
    ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<Box<RawValue>>,
}

fn cursor_key(group: &str) -> String {
    format!("c.{}", keys::encode(group))
}

fn lease_key(group: &str) -> String {
    format!("l.{}", keys::encode(group))
}

fn wire(event: &WebhookEvent) -> Vec<u8> {
    let w = Wire {
        t: event.kind.as_str().into(),
        ts: event.time,
        r: event.room.as_deref().map(Into::into),
        u: event.user.as_deref().map(Into::into),
        m: event
            .message
            .as_ref()
            .and_then(|m| serde_json::from_slice(m).ok()),
    };
    serde_json::to_vec(&w).unwrap_or_default()
}

fn unwire(payload: &[u8]) -> Option<WebhookEvent> {
    let w: Wire = serde_json::from_slice(payload).ok()?;
    Some(WebhookEvent {
        kind: EventType::parse(&w.t)?,
        time: w.ts,
        room: w.r.map(Into::into),
        user: w.u.map(Into::into),
        message: w.m.map(|m| Bytes::from(m.get().to_owned())),
    })
}

/// An event's id: its stream sequence (what acknowledging needs) and its
/// stored time, so that a stream recreated under the same prefix does not
/// reuse ids receivers have seen.
fn event_id(seq: u64, time_ms: i64) -> String {
    format!("{seq}-{time_ms}")
}

fn seq_of(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

impl Shared {
    fn wh(&self) -> Option<&Log> {
        self.webhooks
            .get()
            .filter(|l| l.on.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Appends `event` (with `Nats-Msg-Id` `dedupe`, if any) and waits for
    /// its ack.
    async fn wh_append(
        &self,
        log: &Log,
        event: &WebhookEvent,
        dedupe: Option<&str>,
    ) -> Result<(), BrokerError> {
        let mut h = HeaderMap::new();
        if let Some(id) = dedupe {
            h.insert("Nats-Msg-Id", id);
        }
        self.js
            .publish_with_headers(log.subject.clone(), h, Bytes::from(wire(event)))
            .await
            .map_err(|e| down(format!("webhook event: {e}")))?
            .await
            .map_err(|e| down(format!("webhook event: {e}")))?;
        Ok(())
    }

    /// Records `event` when webhooks are on. The transition it tells of has
    /// happened: a failure is logged, never the presence change's.
    pub(super) async fn wh_event(&self, event: WebhookEvent) {
        let Some(log) = self.wh() else { return };
        if let Err(e) = self.wh_append(log, &event, None).await {
            tracing::warn!(kind = event.kind.as_str(), error = %e, "webhooks: event not recorded");
        }
    }

    /// `member.joined` / `member.left`.
    pub(super) async fn wh_member(&self, kind: EventType, room: &str, user: &str) {
        if self.wh().is_some() {
            self.wh_event(WebhookEvent::member(kind, room, user, crate::unix_ms()))
                .await;
        }
    }

    /// `message.published` for a message just stored, with the envelope
    /// clients got.
    pub(super) async fn wh_published(&self, room: &str, envelope: Bytes, time: i64) {
        if self.wh().is_some() {
            self.wh_event(WebhookEvent {
                message: Some(envelope),
                ..WebhookEvent::room(EventType::MessagePublished, room, time)
            })
            .await;
        }
    }

    async fn wh_stream(&self, log: &Log) -> Result<stream::Stream, BrokerError> {
        let config = stream::Config {
            name: log.stream.clone(),
            subjects: vec![log.subject.clone()],
            max_messages: MAX_EVENTS,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: DEDUPE_WINDOW,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| down(format!("webhook stream: {e}")))
    }
}

#[async_trait]
impl WebhookLog for NatsBroker {
    async fn enable_webhooks(&self, groups: &[String], delay: Duration) -> Result<(), BrokerError> {
        let s = &self.shared;
        if groups.is_empty() {
            // The last webhook was removed (a reload): record nothing.
            if let Some(log) = s.webhooks.get() {
                log.on.store(false, std::sync::atomic::Ordering::SeqCst);
            }
            return Ok(());
        }
        let log = match s.webhooks.get() {
            Some(log) => log,
            None => {
                let bucket =
                    super::kv::bucket(&s.js, s.names.webhook_bucket(), Duration::ZERO).await?;
                let _ = s.webhooks.set(Log {
                    bucket,
                    stream: s.names.webhook_stream(),
                    subject: s.names.webhook_subject(),
                    delay_ms: std::sync::atomic::AtomicI64::new(0),
                    on: std::sync::atomic::AtomicBool::new(false),
                });
                s.webhooks
                    .get()
                    .ok_or_else(|| BrokerError::Internal("webhook log not set".into()))?
            }
        };
        log.delay_ms.store(
            delay.as_millis() as i64,
            std::sync::atomic::Ordering::SeqCst,
        );
        log.on.store(true, std::sync::atomic::Ordering::SeqCst);
        let last = s.wh_stream(log).await?.cached_info().state.last_sequence;
        // A new webhook starts with the events from now on; a known one
        // keeps its place.
        for g in groups {
            match log
                .bucket
                .create(cursor_key(g), Bytes::from(last.to_string()))
                .await
            {
                Ok(_) => {}
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(down(format!("webhook cursor {g}: {e}"))),
            }
        }
        Ok(())
    }

    async fn promote(&self) -> Result<(), BrokerError> {
        let s = &self.shared;
        let Some(log) = s.wh() else { return Ok(()) };
        s.wh_promote_due(log).await
    }

    async fn lead(&self, group: &str, ttl: Duration) -> Result<bool, BrokerError> {
        let s = &self.shared;
        let Some(log) = s.wh() else { return Ok(false) };
        let now = crate::unix_ms();
        let node: &str = &s.node;
        modify(&log.bucket, &lease_key(group), |v| {
            let holder = v
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.split_once('\n'))
                .and_then(|(n, until)| Some((n, until.parse::<i64>().ok()?)));
            match holder {
                Some((n, until)) if n != node && until > now => (None, false),
                _ => (
                    Some(format!("{node}\n{}", now + ttl.as_millis() as i64).into_bytes()),
                    true,
                ),
            }
        })
        .await
    }

    async fn read(&self, group: &str, max: usize) -> Result<Vec<LoggedEvent>, BrokerError> {
        let s = &self.shared;
        let Some(log) = s.wh() else {
            return Ok(Vec::new());
        };
        let cursor: u64 = log
            .bucket
            .get(cursor_key(group))
            .await
            .map_err(|e| down(format!("webhook cursor {group}: {e}")))?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .ok_or_else(|| BrokerError::Internal(format!("unknown webhook group {group}")))?;
        // Not created here: a stream deleted under a running node (a test
        // cleaning up) stays deleted.
        let stream =
            s.js.get_stream(&log.stream)
                .await
                .map_err(|e| down(format!("webhook stream: {e}")))?;
        let state = stream.cached_info().state.clone();
        if state.last_sequence <= cursor {
            return Ok(Vec::new());
        }
        let from = (cursor + 1).max(state.first_sequence);
        if from > cursor + 1 {
            let lost = from - cursor - 1;
            tracing::error!(
                webhook = group,
                lost,
                "webhooks: events trimmed before delivery"
            );
            metrics::counter!(crate::metrics::WEBHOOK_DROPPED, "webhook" => "all").increment(lost);
        }
        let to = state.last_sequence.min(from + max as u64 - 1);
        let mut out = Vec::new();
        let mut unreadable = None;
        for seq in from..=to {
            let m = match stream.get_raw_message(seq).await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => return Err(down(format!("webhook event {seq}: {e}"))),
            };
            let Some(event) = unwire(&m.payload) else {
                // Not an event this build knows: acknowledged unread.
                tracing::warn!(seq, "webhooks: unreadable event skipped");
                unreadable = Some(seq);
                continue;
            };
            let time_ms = (m.time.unix_timestamp_nanos() / 1_000_000) as i64;
            out.push(LoggedEvent {
                id: event_id(seq, time_ms),
                event,
            });
        }
        if out.is_empty()
            && let Some(seq) = unreadable
        {
            self.ack(group, &[event_id(seq, 0)]).await?;
        }
        Ok(out)
    }

    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BrokerError> {
        let s = &self.shared;
        let (Some(log), Some(to)) = (s.wh(), ids.last().and_then(|id| seq_of(id))) else {
            return Ok(());
        };
        modify(&log.bucket, &cursor_key(group), |v| {
            let at: u64 = v
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(0);
            if at >= to {
                (None, ())
            } else {
                (Some(to.to_string().into_bytes()), ())
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_keys_name_their_pending_event() {
        let e = WebhookEvent {
            message: Some(Bytes::from_static(br#"{"type":"message","data":[1]}"#)),
            ..WebhookEvent::room(EventType::MessagePublished, "a.b", 7)
        };
        assert_eq!(unwire(&wire(&e)), Some(e));
        let u = WebhookEvent::user(EventType::UserOffline, "u 1", 9);
        assert_eq!(unwire(&wire(&u)), Some(u));
        assert_eq!(unwire(b"{}"), None);
        assert_eq!(
            pending_of(&Pending::Room("a.b").key()),
            Some((true, "a.b".into()))
        );
        assert_eq!(
            pending_of(&Pending::User("@x").key()),
            Some((false, "@x".into()))
        );
        assert_eq!(seq_of(&event_id(42, 1_700_000_000_000)), Some(42));
    }
}

//! The Redis engine's webhook log (`crate::broker::webhooks`).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:wh:s` | stream | events: `t` type, `ts` time (ms), `r` room, `u` user; `message.published`: `o` offset, `e` epoch, `d` payload (the envelope is built from them when read); `MAXLEN ~ 100000` |
//! | `P:wh:z` | sorted set | pending `room.vacated` (`r\n<room>`) / `user.offline` (`u\n<user>`) → due (ms) |
//! | `P:wh:t` | hash | pending member → when the last one left (ms) |
//! | `P:wh:l:<group>` | string | the node delivering that webhook (`SET NX PX` lease) |
//!
//! The presence scripts (join, leave, connect, disconnect) start with
//! `lua/webhooks.lua` and, given the three webhook keys, record the
//! transitions they decide in the same script: once for the cluster,
//! atomically with the presence change. The node-lease reaper removes a
//! dead node's entries through the same scripts, so its members' events
//! follow. Each webhook is a consumer group read by one fixed consumer
//! name, so a node that takes over the lease reads the dead leader's
//! pending entries first (`XREADGROUP … 0`), then new ones (`>`).
//! `message.published` is appended by `lua/publish.lua` itself when the
//! publish request says a webhook wants it: the event exists once the
//! publish is acknowledged.
//!
//! Redis Cluster: the stream is one key in one slot while the presence
//! scripts run on a room's or a user's slot, so one script cannot do both;
//! webhooks are refused there for now.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};

use super::{RedisBroker, Shared, unavailable};
use crate::broker::BrokerError;
use crate::broker::webhooks::{EventType, LoggedEvent, WebhookEvent, WebhookLog};

/// The one consumer of every group (see the module documentation).
const CONSUMER: &str = "delivery";

impl Shared {
    fn webhook_keys(&self) -> [String; 3] {
        [
            self.keys.webhook_stream(),
            self.keys.webhook_pending(),
            self.keys.webhook_pending_time(),
        ]
    }

    /// Appends the webhook keys and arguments (delay, now, `who`: the
    /// room or user) to a presence script when webhooks are on.
    pub(super) fn webhook_args(&self, script: &mut redis::ScriptInvocation<'_>, who: &str) {
        let delay = self.webhook_delay_ms.load(Ordering::Relaxed);
        if delay < 0 {
            return;
        }
        for k in self.webhook_keys() {
            script.key(k);
        }
        script.arg(delay).arg(crate::unix_ms()).arg(who);
    }

    /// The disconnect script for `user` (`ephemeral`: forget the user).
    pub(super) fn disconnect_script(
        &self,
        user: &str,
        ephemeral: bool,
    ) -> redis::ScriptInvocation<'_> {
        let mut script = self.scripts.disconnect.prepare_invoke();
        script
            .key(self.keys.user(user))
            .arg(crate::unix_ms())
            .arg(self.ttl.as_secs().max(1))
            .arg(if ephemeral { "1" } else { "0" });
        self.webhook_args(&mut script, user);
        script
    }
}

fn field(map: &std::collections::HashMap<String, redis::Value>, key: &str) -> Option<Vec<u8>> {
    match map.get(key)? {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn text(map: &std::collections::HashMap<String, redis::Value>, key: &str) -> Option<String> {
    field(map, key).and_then(|b| String::from_utf8(b).ok())
}

/// A `message.published` entry's envelope: built from the room, offset,
/// epoch and payload `publish.lua` recorded (`m`, a whole envelope, from a
/// node that appended it itself, still reads).
fn message(map: &std::collections::HashMap<String, redis::Value>) -> Option<bytes::Bytes> {
    if let Some(m) = field(map, "m") {
        return Some(bytes::Bytes::from(m));
    }
    let room = text(map, "r")?;
    let offset = text(map, "o")?.parse::<u64>().ok()?;
    let epoch = text(map, "e")?;
    let payload = field(map, "d")?;
    Some(super::codec::envelope(
        &crate::protocol::json_string(&room),
        offset,
        &epoch,
        &payload,
    ))
}

#[async_trait]
impl WebhookLog for RedisBroker {
    async fn enable_webhooks(&self, groups: &[String], delay: Duration) -> Result<(), BrokerError> {
        let s = &self.shared;
        if groups.is_empty() {
            // The last webhook was removed (a reload): record nothing.
            s.webhook_delay_ms.store(-1, Ordering::SeqCst);
            return Ok(());
        }
        if s.publish_cmd == "spublish" {
            return Err(BrokerError::Internal(
                "[[webhooks]] are not supported with redis_cluster in this build (the event \
                 stream cannot share a slot with every room); use one Redis server"
                    .into(),
            ));
        }
        let mut conn = s.conn.clone();
        for g in groups {
            let r: redis::RedisResult<()> = conn
                .xgroup_create_mkstream(s.keys.webhook_stream(), g, "$")
                .await;
            match r {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        s.webhook_delay_ms
            .store(delay.as_millis() as i64, Ordering::SeqCst);
        Ok(())
    }

    async fn promote(&self) -> Result<(), BrokerError> {
        let s = &self.shared;
        if s.webhook_delay_ms.load(Ordering::Relaxed) < 0 {
            return Ok(());
        }
        let mut script = s.scripts.webhook_promote.prepare_invoke();
        for k in s.webhook_keys() {
            script.key(k);
        }
        script.arg(crate::unix_ms());
        let _: i64 = s.invoke(&script).await?;
        Ok(())
    }

    async fn lead(&self, group: &str, ttl: Duration) -> Result<bool, BrokerError> {
        let s = &self.shared;
        let mut script = s.scripts.webhook_lease.prepare_invoke();
        script
            .key(s.keys.webhook_lease(group))
            .arg(&*s.node)
            .arg(ttl.as_millis() as u64);
        let held: i64 = s.invoke(&script).await?;
        Ok(held == 1)
    }

    async fn read(&self, group: &str, max: usize) -> Result<Vec<LoggedEvent>, BrokerError> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let opts = StreamReadOptions::default()
            .group(group, CONSUMER)
            .count(max);
        let stream = s.keys.webhook_stream();
        // Entries read before and not acknowledged (a retry, or a dead
        // leader's) first; then new ones.
        let mut reply: StreamReadReply = conn
            .xread_options(&[&stream], &["0"], &opts)
            .await
            .map_err(unavailable)?;
        if reply.keys.iter().all(|k| k.ids.is_empty()) {
            reply = conn
                .xread_options(&[&stream], &[">"], &opts)
                .await
                .map_err(unavailable)?;
        }
        let mut out = Vec::new();
        for id in reply.keys.into_iter().flat_map(|k| k.ids) {
            let kind = text(&id.map, "t").and_then(|t| EventType::parse(&t));
            let (Some(kind), Some(time)) = (
                kind,
                text(&id.map, "ts").and_then(|t| t.parse::<i64>().ok()),
            ) else {
                // Not an event this build knows: acknowledged unread.
                tracing::warn!(id = %id.id, "webhooks: unreadable stream entry skipped");
                let _: redis::RedisResult<i64> = conn.xack(&stream, group, &[&id.id]).await;
                continue;
            };
            out.push(LoggedEvent {
                event: WebhookEvent {
                    kind,
                    time,
                    room: text(&id.map, "r").map(Into::into),
                    user: text(&id.map, "u").map(Into::into),
                    message: message(&id.map),
                },
                id: id.id,
            });
        }
        Ok(out)
    }

    async fn ack(&self, group: &str, ids: &[String]) -> Result<(), BrokerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let s = &self.shared;
        let _: i64 = s
            .conn
            .clone()
            .xack(s.keys.webhook_stream(), group, ids)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

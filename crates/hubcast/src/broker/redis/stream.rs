//! A room's stream in Redis as the engine reads it: entries, the
//! RECOVER and HISTORY replies.

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;

use crate::broker::BrokerError;

use super::Shared;

/// One stream entry: (offset, time ms, payload, node, connection key).
pub(super) struct Entry {
    pub(super) offset: u64,
    pub(super) time: i64,
    /// The opaque payload (see `codec`).
    pub(super) payload: Bytes,
    pub(super) node: String,
    pub(super) key: String,
}

/// Splits a RECOVER or HISTORY reply into the epoch, the latest offset and
/// the remaining parts (entry lists).
pub(super) fn position(
    reply: Value,
    script: &str,
) -> Result<(Arc<str>, u64, Vec<Value>), BrokerError> {
    let Value::Array(parts) = reply else {
        return Err(BrokerError::Internal(format!(
            "{script} script: unexpected reply"
        )));
    };
    let epoch: String = parts
        .first()
        .cloned()
        .and_then(|v| redis::from_redis_value(v).ok())
        .ok_or_else(|| BrokerError::Internal(format!("{script} script: no epoch")))?;
    let top: u64 = parts
        .get(1)
        .cloned()
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or(0);
    Ok((Arc::from(epoch), top, parts))
}

/// The entries of a room's stream that still count as history: those of
/// its `history_ttl` and its last `history_size` offsets.
pub(super) struct Held {
    /// Oldest arrival time, Unix ms.
    since_ms: i64,
    /// Oldest offset.
    from: u64,
}

impl Held {
    /// Whether `entry` is still history.
    pub(super) fn holds(&self, entry: &Entry) -> bool {
        entry.time >= self.since_ms && entry.offset >= self.from
    }
}

/// An offset as the scripts take it: -1 for none (Lua numbers are signed).
pub(super) fn since_arg(since: Option<u64>) -> i64 {
    since.map_or(-1, |o| o.min(i64::MAX as u64) as i64)
}

pub(super) fn parse_entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let id: String = redis::from_redis_value(pair.first()?.clone()).ok()?;
            let offset = id.split('-').next()?.parse().ok()?;
            let fields: Vec<Vec<u8>> = redis::from_redis_value(pair.get(1)?.clone()).ok()?;
            let mut e = Entry {
                offset,
                time: 0,
                payload: Bytes::new(),
                node: String::new(),
                key: String::new(),
            };
            for kv in fields.chunks(2) {
                let [k, v] = kv else { continue };
                match k.as_slice() {
                    b"t" => e.time = std::str::from_utf8(v).ok()?.parse().ok()?,
                    b"d" => e.payload = Bytes::copy_from_slice(v),
                    b"n" => e.node = String::from_utf8_lossy(v).into_owned(),
                    b"k" => e.key = String::from_utf8_lossy(v).into_owned(),
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

impl Shared {
    /// What of `room`'s stream still counts as history when `top` is its
    /// latest offset, by the room's rule.
    pub(super) fn held(&self, room: &str, top: u64) -> Held {
        let keep = self.rules.history(room);
        Held {
            since_ms: crate::unix_ms() - keep.ttl.as_millis() as i64,
            // The stream is trimmed to `history_size` entries as it is
            // written; this only matters for one written under a larger
            // size (the rule changed since), which must not serve more than
            // the rule keeps.
            from: (top + 1).saturating_sub(keep.size as u64),
        }
    }

    pub(super) async fn recover_raw(
        &self,
        room: &str,
        since: i64,
    ) -> Result<(Arc<str>, u64, Vec<Entry>), BrokerError> {
        let v: Value = self
            .invoke(self.meta_script(&self.scripts.recover, room).arg(since))
            .await?;
        let (epoch, top, parts) = position(v, "recover")?;
        let entries = parts.get(2).map(parse_entries).unwrap_or_default();
        Ok((epoch, top, entries))
    }
}

//! Key-value helpers: creating a bucket that nats-server 2.9 accepts,
//! listing a bucket's keys, and compare-and-set changes of one key.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::broker::BrokerError;

use super::down;

/// Attempts of one change racing other writers of the key.
const MAX_ATTEMPTS: usize = 50;

/// A key-value bucket, created when missing (`max_age` zero: entries
/// never expire). Its stream is created here as the client's
/// `create_key_value` would: that one first reads the account's info,
/// which async-nats 0.50 cannot parse from nats-server 2.9.
pub(super) async fn bucket(
    js: &jetstream::Context,
    name: String,
    max_age: Duration,
) -> Result<kv::Store, BrokerError> {
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| down(format!("bucket {name}: {e}")))?;
    js.get_key_value(&name)
        .await
        .map_err(|e| down(format!("bucket {name}: {e}")))
}

/// What `pick` keeps of the bucket's keys, read to the end (an ordered
/// consumer: one pass); `what` names the listing in an error.
pub(super) async fn list_keys<T>(
    store: &kv::Store,
    what: &str,
    mut pick: impl FnMut(String) -> Option<T>,
) -> Result<Vec<T>, BrokerError> {
    let mut names = store
        .keys()
        .await
        .map_err(|e| down(format!("{what}: {e}")))?;
    let mut out = Vec::new();
    while let Some(k) = names.next().await {
        out.extend(pick(k.map_err(|e| down(format!("{what}: {e}")))?));
    }
    Ok(out)
}

/// Reads `key`'s value (`None` when missing or deleted), applies `f`, and
/// writes what it returns (`None`: leave it) only if nobody wrote the key
/// meanwhile; retried until it holds. Returns what `f` returned last.
pub(super) async fn modify<T>(
    store: &kv::Store,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, BrokerError> {
    for _ in 0..MAX_ATTEMPTS {
        let entry = store
            .entry(key)
            .await
            .map_err(|e| down(format!("read {key}: {e}")))?;
        let (value, revision) = match &entry {
            Some(e) if e.operation == kv::Operation::Put && !e.value.is_empty() => {
                (Some(&e.value[..]), e.revision)
            }
            Some(e) => (None, e.revision),
            None => (None, 0),
        };
        let (write, out) = f(value);
        let Some(write) = write else {
            return Ok(out);
        };
        match store.update(key, Bytes::from(write), revision).await {
            Ok(_) => return Ok(out),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(down(format!("write {key}: {e}"))),
        }
    }
    Err(down(format!("write {key}: too many concurrent writers")))
}

//! Node leases on NATS: each node keeps `n.<node>` in the nodes bucket,
//! whose entries expire after the lease, renewing it every third of it;
//! every node also scans the presence and user keys at that pace and
//! removes the entries of nodes whose lease is gone, sending the leave
//! events: a SIGKILLed node's members leave within about a lease and a
//! third. A node whose own lease ran out (stopped, or cut off from NATS,
//! for longer than a lease) was reaped, or may be: it registers its
//! connections and presence again (`register_again`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerError;
use crate::broker::lease::{NodeEntries, Rounds};

use super::kv::list_keys;
use super::presence::{RoomPresence, parse};
use super::{Shared, down, keys};

impl Shared {
    /// Renews this node's lease. Returns true when the lease had run out
    /// since the last renewal: the renewal states the revision it last
    /// wrote, which an expired (or deleted) entry no longer has, so a
    /// renewal that lands late cannot hide the gap; the lease is then
    /// written anew.
    pub(super) async fn renew_lease(&self) -> Result<bool, BrokerError> {
        let key = keys::node_key(&self.node);
        let value = || Bytes::from(crate::unix_ms().to_string());
        let last = self.lease_revision.load(Ordering::SeqCst);
        if last != 0 {
            match self.nodes.update(&key, value(), last).await {
                Ok(revision) => {
                    self.lease_revision.store(revision, Ordering::SeqCst);
                    return Ok(false);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(down(format!("lease: {e}"))),
            }
        }
        let revision = self
            .nodes
            .put(&key, value())
            .await
            .map_err(|e| down(format!("lease: {e}")))?;
        self.lease_revision.store(revision, Ordering::SeqCst);
        Ok(last != 0)
    }

    /// Whether `node`'s lease is alive (this node's always is).
    async fn alive(&self, node: &str) -> Result<bool, BrokerError> {
        if node == &*self.node {
            return Ok(true);
        }
        let e = self
            .nodes
            .entry(keys::node_key(node))
            .await
            .map_err(|e| down(format!("lease of {node}: {e}")))?;
        Ok(e.is_some_and(|e| e.operation == kv::Operation::Put))
    }

    /// Removes the presence entries and connections of nodes whose lease
    /// expired, sending the leave events.
    async fn reap(self: &Arc<Self>) -> Result<(), BrokerError> {
        let names = list_keys(&self.state, "keys", |k| {
            (k.starts_with("p.") || k.starts_with("u.")).then_some(k)
        })
        .await?;
        let mut presence = Vec::new();
        let mut users = Vec::new();
        for k in names {
            if let Some(room) = k.strip_prefix("p.") {
                presence.push((keys::decode(room), k.clone()));
            } else if let Some(user) = k.strip_prefix("u.") {
                users.push(keys::decode(user));
            }
        }
        let mut alive: BTreeMap<String, bool> = BTreeMap::new();
        for (room, key) in presence {
            let Some(room) = room else { continue };
            let Some(v) = self
                .state
                .get(&key)
                .await
                .map_err(|e| down(format!("{key}: {e}")))?
            else {
                continue;
            };
            let p: RoomPresence = parse(Some(&v));
            let nodes: HashSet<&String> = p.values().map(|e| &e.d).collect();
            for node in nodes {
                if !alive.contains_key(node) {
                    alive.insert(node.clone(), self.alive(node).await?);
                }
            }
            let dead: Vec<&String> = p
                .iter()
                .filter(|(_, e)| alive.get(&e.d) == Some(&false))
                .map(|(conn, _)| conn)
                .collect();
            if !dead.is_empty() {
                tracing::warn!(room = %room, connections = dead.len(), "node lease expired: removing its presence");
            }
            // Queued together, the room's dead connections leave in one
            // write (`room_writes`).
            futures_util::future::try_join_all(
                dead.into_iter()
                    .map(|conn| self.remove_presence(&room, conn)),
            )
            .await?;
        }
        for user in users.into_iter().flatten() {
            let Some(rec) = self.user_record(&user).await? else {
                continue;
            };
            for (conn, node) in &rec.c {
                if !alive.contains_key(node) {
                    alive.insert(node.clone(), self.alive(node).await?);
                }
                if alive.get(node) == Some(&false) {
                    self.remove_conn(&user, conn, false).await?;
                }
            }
        }
        Ok(())
    }
}

/// Renews this node's lease every third of it and reaps dead nodes. After
/// the lease ran out, the node registers again at once and once more a
/// round later: a reaper that found the lease gone just before it was
/// renewed finishes within a round (its step is stopped past one), and
/// would otherwise remove what was just registered.
pub(super) async fn lease_task(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut rounds = Rounds::new(shared.lease, cancel);
    let mut register = 0u8;
    while rounds.next().await {
        if shared.connected().is_err() {
            continue;
        }
        match rounds.step("renew", shared.renew_lease()).await {
            Some(Ok(true)) => register = 2,
            Some(Ok(false)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot renew the node lease");
                continue;
            }
            None => continue,
        }
        if register > 0 {
            match rounds.step("register", shared.register_again()).await {
                Some(Ok(())) => register -= 1,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot register this node's entries again");
                }
                None => {}
            }
        }
        if let Some(Err(e)) = rounds.step("reap", shared.reap()).await {
            tracing::warn!(error = %e, "cannot reap dead nodes");
        }
    }
}

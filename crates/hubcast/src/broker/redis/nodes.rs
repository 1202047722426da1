//! Node leases: each node renews its lease in Redis, registers its entries
//! again when Redis lost them, and reaps what dead nodes left behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerError;
use crate::broker::lease::{NodeEntries, Rounds};
use crate::protocol::Status;

use super::{Shared, unavailable};

/// How long a reaped node's mark lives: longer than any partition a node
/// comes back from with its connections still open.
const REAPED_MARK_SECS: u64 = 24 * 3600;

impl Shared {
    /// Extends this node's lease. Returns true when the lease had been
    /// taken before but Redis no longer had it: Redis lost this node's
    /// entries (a restart without persistence, a flush) or another node
    /// reaped them after a long partition.
    ///
    /// The lease coming back is not enough to tell: a renewal held in a
    /// partition can land after another node reaped this one, and put the
    /// lease back with the entries gone. So the reaper also leaves a mark,
    /// which only this node removes, once it has registered again; a late
    /// command cannot bring back what the mark says was lost.
    pub(super) async fn renew_lease(&self) -> Result<bool, BrokerError> {
        let mut conn = self.conn.clone();
        let until = crate::unix_ms() + self.lease.as_millis() as i64;
        let added: i64 = conn
            .zadd(self.keys.nodes(), &*self.node, until)
            .await
            .map_err(unavailable)?;
        let reaped: bool = conn
            .exists(self.keys.reaped(&self.node))
            .await
            .map_err(unavailable)?;
        let before = self.leased.swap(true, Ordering::SeqCst);
        Ok((added == 1 && before) || reaped)
    }

    /// Registers this node's entries again ([`NodeEntries::register_again`])
    /// after Redis lost them, then answers a reaper's mark.
    pub(super) async fn register_again_answered(&self) -> Result<(), BrokerError> {
        NodeEntries::register_again(self).await?;
        let _: () = self
            .conn
            .clone()
            .del(self.keys.reaped(&self.node))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Removes what nodes with an expired lease left behind: their presence
    /// entries (sending the leave events) and their connections' status.
    pub(super) async fn reap_dead_nodes(&self) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let dead: Vec<String> = conn
            .zrangebyscore(self.keys.nodes(), "-inf", crate::unix_ms())
            .await
            .map_err(unavailable)?;
        for node in dead.into_iter().filter(|n| *n != *self.node) {
            // One node reaps; the others skip.
            let claimed: bool = redis::cmd("SET")
                .arg(self.keys.reap_lock(&node))
                .arg(&*self.node)
                .arg("NX")
                .arg("EX")
                .arg(self.lease.as_secs().max(1))
                .query_async::<Option<String>>(&mut conn)
                .await
                .map_err(unavailable)?
                .is_some();
            if !claimed {
                continue;
            }
            tracing::warn!(node = %node, "node lease expired: removing its presence");
            self.remove_node(&node).await?;
            // The mark `renew_lease` looks for, should the node still be
            // alive behind a partition; a dead node's mark expires.
            let _: () = conn
                .set_ex(self.keys.reaped(&node), &*self.node, REAPED_MARK_SECS)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Removes what `node` left in Redis: its presence entries (sending the
    /// leave events), its connections' status, its lists and its lease. A
    /// dead node's, by the reaper; this node's own at shutdown, for the
    /// connections whose own leave did not get through (after its lease is
    /// given back, no reaper would ever remove them).
    pub(super) async fn remove_node(&self, node: &str) -> Result<(), BrokerError> {
        let mut conn = self.conn.clone();
        let rooms: Vec<String> = conn
            .smembers(self.keys.node_rooms(node))
            .await
            .map_err(unavailable)?;
        for room in rooms {
            let entries: HashMap<String, String> = conn
                .hgetall(self.keys.room(&room, "p"))
                .await
                .map_err(unavailable)?;
            for (conn_id, value) in entries {
                let mut it = value.split('\u{1f}');
                let (Some(user), Some(name), Some(owner)) = (it.next(), it.next(), it.next())
                else {
                    continue;
                };
                if owner != node {
                    continue;
                }
                self.leave_presence(&room, &conn_id, user, name, Status::Offline)
                    .await?;
            }
        }
        let conns: HashMap<String, String> = conn
            .hgetall(self.keys.node_conns(node))
            .await
            .map_err(unavailable)?;
        for user in conns.values() {
            // Whether it was anonymous is not recorded per node
            // connection: keep the offline record (it expires).
            let _: i64 = self
                .disconnect_script(user, false)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        // Separate commands: the keys are in different cluster slots.
        let _: () = conn
            .del(self.keys.node_rooms(node))
            .await
            .map_err(unavailable)?;
        let _: () = conn
            .del(self.keys.node_conns(node))
            .await
            .map_err(unavailable)?;
        let _: () = conn
            .zrem(self.keys.nodes(), node)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// Renews this node's lease every third of it and reaps dead nodes.
pub(super) async fn lease_task(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut rounds = Rounds::new(shared.lease, cancel);
    while rounds.next().await {
        match rounds.step("renew", shared.renew_lease()).await {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot renew the node lease");
                continue;
            }
            Some(Ok(true)) => {
                let registered = rounds
                    .step("register", shared.register_again_answered())
                    .await;
                if !matches!(registered, Some(Ok(_))) {
                    if let Some(Err(e)) = registered {
                        tracing::warn!(error = %e, "cannot register this node's entries again");
                    }
                    // Drop the lease again so the next tick retries.
                    let _: Result<i64, _> = shared
                        .conn
                        .clone()
                        .zrem(shared.keys.nodes(), &*shared.node)
                        .await;
                }
            }
            Some(Ok(false)) => {}
        }
        if let Some(Err(e)) = rounds.step("reap", shared.reap_dead_nodes()).await {
            tracing::warn!(error = %e, "cannot reap dead nodes");
        }
    }
}

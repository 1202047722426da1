//! The pace of a node's lease in the engines with many nodes (Redis,
//! NATS): a round every third of the lease (renew this node's lease, then
//! reap what the nodes whose lease ran out left behind) until shutdown;
//! the [`Registry`] of what the node registered, and [`NodeEntries`], the
//! one sequence both engines register, remove and re-register entries in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{BrokerError, ClientInfo};

/// This node's connections and presence entries, as it registered them in
/// its engine. An entry is added once its write succeeded and removed
/// before its removal is written, so a registration running meanwhile
/// (`register_again`) can tell an entry that went away and undo its own.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) conns: HashMap<Arc<str>, ClientInfo>,
    /// Room → connection ids present there.
    presence: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl Registry {
    pub(crate) fn has_conn(&self, conn_id: &str) -> bool {
        self.conns.contains_key(conn_id)
    }

    pub(crate) fn has_presence(&self, room: &str, conn_id: &str) -> bool {
        self.presence.get(room).is_some_and(|c| c.contains(conn_id))
    }

    /// Connection `conn_id` is present in `room`.
    pub(crate) fn joined(&mut self, room: &str, conn_id: &Arc<str>) {
        self.presence
            .entry(Arc::from(room))
            .or_default()
            .insert(conn_id.clone());
    }

    /// Connection `conn_id` is no longer present in `room`.
    pub(crate) fn left(&mut self, room: &str, conn_id: &str) {
        if let Some(ids) = self.presence.get_mut(room) {
            ids.remove(conn_id);
            if ids.is_empty() {
                self.presence.remove(room);
            }
        }
    }

    /// Everything registered: the connections, and (room, connection) for
    /// each presence entry of a registered connection.
    pub(crate) fn entries(&self) -> (Vec<ClientInfo>, Vec<(Arc<str>, ClientInfo)>) {
        let conns = self.conns.values().cloned().collect();
        let presence = self
            .presence
            .iter()
            .flat_map(|(room, ids)| {
                ids.iter()
                    .filter_map(|id| self.conns.get(id))
                    .map(|c| (room.clone(), c.clone()))
            })
            .collect();
        (conns, presence)
    }
}

/// One node's entries in an engine with many nodes: the engine writes
/// and erases them; the order around the [`Registry`] is kept here, once.
/// An entry is recorded after its write succeeded and forgotten before its
/// erasure, so that [`NodeEntries::register_again`], running meanwhile,
/// can tell an entry that went away and erase its own write again: a
/// connection closing during a re-registration leaves no ghost.
#[async_trait]
pub(crate) trait NodeEntries: Send + Sync {
    /// The engine's name, for the logs.
    const ENGINE: &'static str;

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry>;

    /// Fails at once where the engine knows it is cut off.
    fn reachable(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Counts a connection for its user's status and in the node's list.
    async fn put_conn(&self, client: &ClientInfo) -> Result<(), BrokerError>;

    /// Undoes [`NodeEntries::put_conn`].
    async fn erase_conn(&self, client: &ClientInfo) -> Result<(), BrokerError>;

    /// Adds a connection to a room's presence (the join event for the
    /// user's first there).
    async fn put_presence(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError>;

    /// Undoes [`NodeEntries::put_presence`] (the leave event for the
    /// user's last connection there).
    async fn erase_presence(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError>;

    async fn connect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        self.reachable()?;
        self.put_conn(client).await?;
        self.registry()
            .conns
            .insert(client.conn_id.clone(), client.clone());
        Ok(())
    }

    async fn disconnect(&self, client: &ClientInfo) -> Result<(), BrokerError> {
        self.reachable()?;
        self.registry().conns.remove(&client.conn_id);
        self.erase_conn(client).await
    }

    async fn join(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        self.reachable()?;
        self.put_presence(room, client).await?;
        self.registry().joined(room, &client.conn_id);
        Ok(())
    }

    async fn leave(&self, room: &str, client: &ClientInfo) -> Result<(), BrokerError> {
        self.reachable()?;
        self.registry().left(room, &client.conn_id);
        self.erase_presence(room, client).await
    }

    /// Writes every recorded entry again, after the engine lost them (the
    /// node's lease ran out and others reaped it, or the store lost its
    /// data): connections first, then presence, with join events, since
    /// the other nodes saw the members go or never knew them. Each room's
    /// entries are written together (concurrently).
    async fn register_again(&self) -> Result<(), BrokerError> {
        let (conns, presence) = self.registry().entries();
        tracing::warn!(
            engine = Self::ENGINE,
            connections = conns.len(),
            presence = presence.len(),
            "this node's entries were lost (its lease ran out, or the store lost them): \
             registering them again"
        );
        for c in &conns {
            self.put_conn(c).await?;
            if !self.registry().has_conn(&c.conn_id) {
                self.erase_conn(c).await?;
            }
        }
        futures_util::future::try_join_all(presence.iter().map(|(room, c)| async move {
            self.put_presence(room, c).await?;
            if !self.registry().has_presence(room, &c.conn_id) {
                self.erase_presence(room, c).await?;
            }
            Ok::<_, BrokerError>(())
        }))
        .await?;
        Ok(())
    }
}

/// The rounds of a lease task: `while rounds.next().await { ... }`.
pub(crate) struct Rounds {
    tick: Interval,
    cancel: CancellationToken,
    period: Duration,
}

impl Rounds {
    /// A round every third of `lease`, so that two rounds can fail before
    /// the lease runs out; at most every 200 ms, whatever the lease.
    pub(crate) fn new(lease: Duration, cancel: CancellationToken) -> Rounds {
        let period = (lease / 3).max(Duration::from_millis(200));
        let mut tick = tokio::time::interval(period);
        // A round late behind a slow engine delays the next; none is run
        // twice to catch up.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Rounds {
            tick,
            cancel,
            period,
        }
    }

    /// Waits for the next round: false once the engine is closing.
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = self.tick.tick() => true,
        }
    }

    /// Runs one step of a round (`what` names it in the log): `None` when
    /// the engine closes meanwhile, or when the step takes longer than a
    /// round. A read that stalls must neither keep the next renewal from
    /// coming (the lease would run out under a live node) nor keep the
    /// engine from closing; every step is safe to stop half-way and is
    /// done again next round.
    pub(crate) async fn step<T>(&self, what: &str, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            _ = self.cancel.cancelled() => None,
            r = tokio::time::timeout(self.period, work) => match r {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(
                        step = what,
                        period_ms = self.period.as_millis() as u64,
                        "a lease round's step took longer than a round: stopped, done again next round"
                    );
                    None
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_that_stalls_is_stopped_after_a_round_and_on_close() {
        let cancel = CancellationToken::new();
        let rounds = Rounds::new(Duration::from_secs(30), cancel.clone());
        assert_eq!(rounds.step("quick", async { 7 }).await, Some(7));
        let start = tokio::time::Instant::now();
        let stalled = rounds.step("stalled", std::future::pending::<()>()).await;
        assert_eq!((stalled, start.elapsed()), (None, Duration::from_secs(10)));
        let closing = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        };
        let start = tokio::time::Instant::now();
        let (stopped, ()) = tokio::join!(
            rounds.step("stalled", std::future::pending::<()>()),
            closing
        );
        assert_eq!((stopped, start.elapsed()), (None, Duration::from_secs(1)));
    }
}

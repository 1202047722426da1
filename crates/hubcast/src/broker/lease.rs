//! The pace of a node's lease in the engines with many nodes (Redis,
//! NATS): a round every third of the lease (renew this node's lease, then
//! reap what the nodes whose lease ran out left behind) until shutdown.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The rounds of a lease task: `while rounds.next().await { ... }`.
pub(crate) struct Rounds {
    tick: Interval,
    cancel: CancellationToken,
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
        Rounds { tick, cancel }
    }

    /// Waits for the next round: false once the engine is closing.
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = self.tick.tick() => true,
        }
    }
}

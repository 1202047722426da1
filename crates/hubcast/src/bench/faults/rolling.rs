//! The rolling schedule: each node in turn is stopped as a deploy stops it
//! (SIGTERM: `/readyz` answers 503, `drain_delay` passes, the connections
//! are closed with 1001 spread over `shutdown_timeout`, the process exits
//! 0), started again, and is back in the balancer's rotation before the
//! next node goes. Its clients reconnect through the balancer to the nodes
//! still in rotation, and recover what was published meanwhile.

use std::time::Duration;

use tokio::time::Instant;

use super::balancer::Balancer;
use super::schedule::{Cluster, Injected, Kind};

/// The nodes' drain settings (`serve --drain-delay --shutdown-timeout`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drain {
    pub delay_s: u64,
    pub shutdown_timeout_s: u64,
}

impl Drain {
    /// The `serve` arguments that set them.
    pub(crate) fn args(self) -> Vec<String> {
        vec![
            "--drain-delay".into(),
            self.delay_s.to_string(),
            "--shutdown-timeout".into(),
            self.shutdown_timeout_s.to_string(),
        ]
    }

    /// How long a node may take to exit after SIGTERM: the drain delay,
    /// the closes' window, the server's two waits of up to
    /// `shutdown_timeout` each (for its HTTP connections, then for its
    /// tasks; `server.rs`), and room for the process to finish.
    fn exit_within(self) -> Duration {
        Duration::from_secs(self.delay_s + 3 * self.shutdown_timeout_s + 10)
    }
}

impl Cluster {
    /// Restarts node `k` as a rolling deploy does, and waits until it is
    /// ready and back in the balancer's rotation.
    pub(crate) async fn roll(
        &mut self,
        k: usize,
        balancer: &Balancer,
        drain: Drain,
    ) -> anyhow::Result<Injected> {
        let at_s = self.since();
        eprintln!("[{at_s:7.1}s] rolling_restart node {k}");
        let (status, took) = self.nodes[k].terminate(drain.exit_within()).await?;
        self.note_pids();
        // The balancer must have taken it out of rotation by itself, from
        // its readiness, while it drained.
        let left_rotation = !balancer.is_up(k);
        self.nodes[k].start_again().await?;
        self.note_pids();
        let started = Instant::now();
        while !balancer.is_up(k) {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "node {k} ready but not back in the balancer's rotation within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let back_ms = started.elapsed().as_millis();
        for n in &mut self.nodes {
            n.wait_ready(Duration::from_secs(30)).await?;
        }
        let detail = format!(
            "SIGTERM: exited ({status}) after {:.1} s{}, started again, in rotation {back_ms} ms after it was ready",
            took.as_secs_f64(),
            if left_rotation {
                ""
            } else {
                " (still in the balancer's rotation)"
            },
        );
        let healed_s = self.since();
        eprintln!("[{healed_s:7.1}s]   back: {detail}");
        Ok(Injected {
            kind: Kind::Restart,
            node: Some(k),
            at_s,
            healed_s,
            detail,
            readiness: None,
            clean_exit: Some(status.success()),
        })
    }
}

//! Shutdown for rolling deploys (PROTOCOL.md section 11). On the signal
//! (`App::draining`), `/readyz` answers 503 at once and everything else
//! serves on for `drain_delay`, so that a load balancer stops sending new
//! clients first; then new handshakes get 503 (`App::shutdown`) and the
//! open connections are closed with 1001 one after another over most of
//! `shutdown_timeout`, so that the other nodes see a steady stream of
//! reconnects rather than a spike; then the accept loop and the background
//! tasks stop (`App::stop`). Each close is the connection's own: its
//! writer (or SSE stream, or long poll) ends it, through the lingering
//! close of `http::linger`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::App;
use crate::protocol::close;

/// The share of `shutdown_timeout` the closes are spread over; the rest
/// is for the last ones to finish their closing handshake.
const SPREAD_SHARE: f64 = 0.8;

/// The slowest pace closes are spread at (closes per second): fewer
/// connections than the window holds at this pace close at this pace, so
/// a node with a handful of connections stops at once, and no other node
/// ever sees more than what the window's spread gives it.
const SLOWEST_RATE: f64 = 100.0;

/// Waits for `signal`, then drains and closes as the module says; returns
/// once every close is decided and `App::stop` fired (or at once when the
/// server stopped otherwise).
pub(crate) async fn run(app: Arc<App>, signal: CancellationToken) {
    tokio::select! {
        _ = signal.cancelled() => {}
        _ = app.stop.cancelled() => return,
    }
    let delay = Duration::from_secs(app.config.drain_delay);
    if !delay.is_zero() {
        tracing::info!(
            drain_delay_s = app.config.drain_delay,
            "draining: /readyz answers 503, connections close after drain_delay"
        );
        sleep(delay).await;
    }
    app.shutdown.cancel();
    let conns = app.hub.open_conns();
    let window = Duration::from_secs(app.config.shutdown_timeout).mul_f64(SPREAD_SHARE);
    let gap = gap(conns.len(), window);
    tracing::info!(
        connections = conns.len(),
        over_ms = (gap * conns.len() as u32).as_millis() as u64,
        "closing connections with 1001"
    );
    let start = Instant::now();
    for (i, conn) in conns.iter().enumerate() {
        sleep_until(start + gap * i as u32).await;
        conn.outbound()
            .close(close::GOING_AWAY, "server shutting down");
    }
    app.stop.cancel();
}

/// The time between two closes: `n` closes fill `window`, at most one
/// per `1 / SLOWEST_RATE` seconds.
fn gap(n: usize, window: Duration) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let spread = window.as_secs_f64() / n as f64;
    Duration::from_secs_f64(spread.min(1.0 / SLOWEST_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_closes_fill_the_window_and_few_go_at_the_slowest_pace() {
        let window = Duration::from_secs(4);
        assert_eq!(gap(1000, window), Duration::from_millis(4));
        assert_eq!(gap(1000, window) * 1000, window);
        assert_eq!(gap(3, window), Duration::from_millis(10));
        assert_eq!(gap(0, window), Duration::ZERO);
    }
}

//! The rolling schedule's load balancer: a TCP proxy in front of the nodes
//! that sends each new connection to the next node, round-robin, among
//! those whose `/readyz` answered 200 at the last check, as HAProxy's
//! health check does (`deploy/haproxy.cfg`, here with a shorter interval).
//! A connection stays with its node until either side closes it; the
//! balancer never moves one. It records when each connection was accepted
//! and by which node, for the reconnect rate each node saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bench::net::get;
use crate::lock::lock;

use super::Owned;

/// How often each node's `/readyz` is asked; one 503 (or silence) takes
/// the node out of rotation, one 200 puts it back. The nodes' drain delay
/// must be longer, so that no client is sent to a draining node.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(250);

/// What the balancer shares with its tasks.
struct State {
    backends: Vec<Backend>,
    /// Round-robin position.
    next: AtomicUsize,
    /// Every connection handed to a node: when, and which node.
    accepted: Mutex<Vec<(Instant, usize)>>,
}

struct Backend {
    addr: SocketAddr,
    /// Its last check answered 200.
    up: AtomicBool,
}

/// The balancer; its tasks (and the connections through it) stop when it
/// is dropped.
pub(crate) struct Balancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<State>,
    owned: Owned,
}

impl Balancer {
    /// Listens on `127.0.0.1:0` in front of `nodes`, all taken as up until
    /// their first check says otherwise (the caller started them ready).
    pub(crate) async fn start(nodes: &[SocketAddr]) -> anyhow::Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            backends: nodes
                .iter()
                .map(|a| Backend {
                    addr: *a,
                    up: AtomicBool::new(true),
                })
                .collect(),
            next: AtomicUsize::new(0),
            accepted: Mutex::new(Vec::new()),
        });
        let b = Balancer {
            addr,
            state,
            owned: Owned::default(),
        };
        let (cancel, tasks) = (&b.owned.cancel, &b.owned.tasks);
        tasks.spawn(check(b.state.clone(), cancel.clone()));
        tasks.spawn(accept(
            listener,
            b.state.clone(),
            cancel.clone(),
            tasks.clone(),
        ));
        Ok(b)
    }

    /// The clients' URL.
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Whether node `k` is in rotation now.
    pub(crate) fn is_up(&self, k: usize) -> bool {
        self.state
            .backends
            .get(k)
            .is_some_and(|b| b.up.load(Ordering::SeqCst))
    }

    /// The most connections any one node was handed within `window` (a
    /// sliding window), counting those accepted at or after `from`; per
    /// node.
    pub(crate) fn peak(&self, from: Instant, window: Duration) -> Vec<u64> {
        let accepted = lock(&self.state.accepted).clone();
        (0..self.state.backends.len())
            .map(|k| {
                let times: Vec<Instant> = accepted
                    .iter()
                    .filter(|(t, n)| *n == k && *t >= from)
                    .map(|(t, _)| *t)
                    .collect();
                peak_within(&times, window)
            })
            .collect()
    }
}

/// The most of `times` (in order) within any `window`.
fn peak_within(times: &[Instant], window: Duration) -> u64 {
    let mut peak = 0;
    let mut lo = 0;
    for (hi, t) in times.iter().enumerate() {
        while *t - times[lo] >= window {
            lo += 1;
        }
        peak = peak.max(hi - lo + 1);
    }
    peak as u64
}

/// The health checks: every node at once, every [`CHECK_EVERY`].
async fn check(state: Arc<State>, cancel: CancellationToken) {
    loop {
        let checks = state.backends.iter().map(|b| async move {
            // A node that does not answer within the interval is down.
            let ok = matches!(get(b.addr, "/readyz", CHECK_EVERY).await, Some((200, _)));
            b.up.store(ok, Ordering::SeqCst);
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = futures_util::future::join_all(checks) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

/// Accepts clients and hands each to the next node in rotation; with none
/// up, the connection is closed at once (the client tries again).
async fn accept(
    listener: TcpListener,
    state: Arc<State>,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((inbound, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(k) = pick(&state) else {
            continue;
        };
        let (s, stop) = (state.clone(), cancel.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = forward(inbound, &s, k) => {}
            }
        });
    }
}

/// The next node in rotation that is up.
fn pick(state: &State) -> Option<usize> {
    let n = state.backends.len();
    let start = state.next.fetch_add(1, Ordering::SeqCst);
    (0..n)
        .map(|i| (start + i) % n)
        .find(|k| state.backends[*k].up.load(Ordering::SeqCst))
}

/// One connection, to node `k`, both ways until either side ends it.
async fn forward(mut inbound: TcpStream, state: &State, k: usize) {
    let Ok(mut outbound) = TcpStream::connect(state.backends[k].addr).await else {
        // Down since its last check: the client sees a closed connection.
        return;
    };
    lock(&state.accepted).push((Instant::now(), k));
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_most_within_any_window() {
        let t0 = Instant::now();
        let ms = |v: &[u64]| -> Vec<Instant> {
            v.iter().map(|m| t0 + Duration::from_millis(*m)).collect()
        };
        let w = Duration::from_secs(1);
        assert_eq!(peak_within(&[], w), 0);
        assert_eq!(peak_within(&ms(&[0, 500, 999, 1000, 1001]), w), 4);
        assert_eq!(peak_within(&ms(&[0, 1000, 2000, 3000]), w), 1);
    }
}

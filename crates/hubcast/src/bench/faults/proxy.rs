//! A userspace TCP proxy between a node and Redis, or between clients and
//! a node: the place where network faults are injected. `tc netem` is not
//! available on every kernel (the CI machine's lacks `sch_netem`), so the
//! link's delay and blackhole are made here, in the byte stream.
//!
//! - delay: every chunk is held until `delay` after it was read (a delay
//!   line: latency without a throughput cap);
//! - blackhole: nothing is forwarded either way, on open and new
//!   connections alike (a partition: the peer sees silence, not a reset);
//!   healing lets what was held flow again.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Owned;

/// What the link does now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Link {
    /// Forward nothing.
    pub blackhole: bool,
    /// Added to every chunk's way through.
    pub delay: Duration,
}

/// Chunks in flight per direction before the reader waits.
const IN_FLIGHT: usize = 256;

/// A proxy listening on a loopback port; its tasks stop when it is dropped.
pub(crate) struct Proxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    link: watch::Sender<Link>,
    owned: Owned,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to `target`.
    pub(crate) async fn start(target: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (link, _) = watch::channel(Link::default());
        let proxy = Proxy {
            addr,
            link,
            owned: Owned::default(),
        };
        let accept = Accept {
            target,
            link: proxy.link.clone(),
            cancel: proxy.owned.cancel.clone(),
            tasks: proxy.owned.tasks.clone(),
        };
        proxy.owned.tasks.spawn(accept.run(listener));
        Ok(proxy)
    }

    /// Sets the link's behaviour for open and new connections.
    pub(crate) fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

/// The accept loop's share of the proxy.
struct Accept {
    target: SocketAddr,
    link: watch::Sender<Link>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Accept {
    async fn run(self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.cancel.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((inbound, _)) = accepted else {
                // Out of descriptors or the like: try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let stop = self.cancel.clone();
            let target = self.target;
            let link = self.link.subscribe();
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = forward(inbound, target, link) => {}
                }
            });
        }
    }
}

/// One connection: to the target, then both directions until both end.
async fn forward(inbound: TcpStream, target: SocketAddr, link: watch::Receiver<Link>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ir, iw) = inbound.into_split();
    let (or, ow) = outbound.into_split();
    tokio::join!(pump(ir, ow, link.clone()), pump(or, iw, link));
}

/// One direction: read chunks as they come, write each once the link lets
/// it through; at the end of the input, shut the output's write side.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut link: watch::Receiver<Link>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if tx.send((Instant::now(), chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((read_at, chunk)) = rx.recv().await {
            loop {
                let now = *link.borrow_and_update();
                if now.blackhole {
                    if link.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let due = read_at + now.delay;
                if Instant::now() >= due {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    changed = link.changed() => if changed.is_err() { return },
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

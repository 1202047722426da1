//! Connection admission: a global cap on real-time connections (503),
//! connections per IP address (429) and handshakes per IP per second (429),
//! each with `Retry-After`. A granted [`ConnSlot`] lives as long as the
//! connection.
//!
//! `max_connections_per_ip` is checked twice: on every TCP connection from
//! its accept until its socket is gone ([`TcpSlot`], so that sockets that
//! never finish a request, or linger while closing, count too), and on the
//! real-time connections an address holds ([`ConnSlot`], which also counts
//! the streams an HTTP/2 connection carries). Behind a trusted proxy the
//! address is the client's (`super::forwarded`): a trusted proxy's own
//! sockets take no [`TcpSlot`], since every client behind it would share
//! it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::HttpError;
use crate::config::Config;
use crate::protocol::ErrorCode;

/// Counts and limits of WebSocket connections. The limits change on a
/// reload ([`ConnLimits::set`]); connections already in keep their place.
pub(crate) struct ConnLimits {
    /// Open connections in all and per address, and their caps.
    counts: Mutex<Counts>,
    /// Handshake rate per address; None when off.
    handshakes: ArcSwapOption<DefaultKeyedRateLimiter<IpAddr>>,
    /// `handshakes_per_ip_per_sec` that `handshakes` was made for.
    handshake_rate: AtomicU32,
    /// Handshakes seen, to forget idle addresses now and then.
    seen: AtomicU64,
}

#[derive(Default)]
struct Counts {
    /// `max_connections`.
    max_total: u32,
    /// `max_connections_per_ip`.
    max_per_ip: u32,
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
    /// Open TCP connections per address.
    tcp_per_ip: HashMap<IpAddr, u32>,
}

/// One accepted TCP connection; gives its place back when dropped.
pub(crate) struct TcpSlot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl std::fmt::Debug for TcpSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSlot").field("ip", &self.ip).finish()
    }
}

/// One admitted connection; gives its place back when dropped.
pub(crate) struct ConnSlot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    /// Limits from the settings.
    pub(crate) fn new(cfg: &Config) -> Arc<Self> {
        let limits = Arc::new(Self {
            counts: Mutex::new(Counts::default()),
            handshakes: ArcSwapOption::empty(),
            handshake_rate: AtomicU32::new(0),
            seen: AtomicU64::new(0),
        });
        limits.set(cfg);
        limits
    }

    /// Takes the caps and the handshake rate from `cfg`; a rate that
    /// changed starts with full buckets.
    pub(crate) fn set(&self, cfg: &Config) {
        {
            let mut c = self.lock();
            c.max_total = cfg.max_connections;
            c.max_per_ip = cfg.max_connections_per_ip;
        }
        let rate = cfg.handshakes_per_ip_per_sec;
        if self.handshake_rate.swap(rate, Ordering::Relaxed) != rate {
            self.handshakes.store(NonZeroU32::new(rate).map(|rate| {
                let burst = NonZeroU32::new(rate.get().saturating_mul(2)).unwrap_or(rate);
                Arc::new(RateLimiter::keyed(
                    Quota::per_second(rate).allow_burst(burst),
                ))
            }));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        crate::lock(&self.counts)
    }

    /// Admits a handshake from `ip`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, HttpError> {
        if let Some(rl) = &*self.handshakes.load() {
            if self.seen.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
                rl.retain_recent();
            }
            if rl.check_key(&ip).is_err() {
                return Err(HttpError::new(
                    ErrorCode::RateLimited,
                    "too many connection attempts from this address; retry later",
                )
                .retry_after(1));
            }
        }
        self.hold(ip)
    }

    /// A place for an accepted TCP connection from `ip`, or `None` when
    /// the address holds `max_connections_per_ip` sockets already.
    pub(crate) fn accept(self: &Arc<Self>, ip: IpAddr) -> Option<TcpSlot> {
        let mut c = self.lock();
        let max_per_ip = c.max_per_ip;
        let n = c.tcp_per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return None;
        }
        *n += 1;
        Some(TcpSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// A place under the connection caps (`max_connections`,
    /// `max_connections_per_ip`) for a request that stays open without a
    /// handshake (a long poll), or why not.
    pub(crate) fn hold(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, HttpError> {
        let mut c = self.lock();
        if c.total >= c.max_total {
            return Err(
                HttpError::new(ErrorCode::Unavailable, "server at its connection limit")
                    .retry_after(5),
            );
        }
        let max_per_ip = c.max_per_ip;
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return Err(HttpError::new(
                ErrorCode::RateLimited,
                "too many connections from this address",
            )
            .retry_after(5));
        }
        *n += 1;
        c.total += 1;
        Ok(ConnSlot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.limits.lock();
        c.total = c.total.saturating_sub(1);
        release(&mut c.per_ip, self.ip);
    }
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        release(&mut self.limits.lock().tcp_per_ip, self.ip);
    }
}

/// One place less for `ip`; an address with none left is forgotten.
fn release(counts: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(n) = counts.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&ip);
        }
    }
}

//! hubcast: a real-time messaging server.
//!
//! Browsers and services connect over WebSocket, join rooms, and receive what
//! is published there within milliseconds. The wire protocol is
//! `PROTOCOL.md` (version 1); this crate is the server.
//!
//! # Layout
//!
//! - [`config`]: every setting, its default, validation naming the key.
//! - [`protocol`]: frame types, parsing with per-field errors, error and
//!   close codes, the encode-once message envelope.
//! - [`broker`]: the [`broker::Broker`] trait (offsets, history, recovery,
//!   idempotency, presence) and its in-memory engine. Redis and NATS engines
//!   plug in behind the same trait.
//! - [`hub`]: node-local room membership and fan-out of broker deliveries
//!   into connection queues; the join protocol that makes recovery gap- and
//!   duplicate-free.
//! - [`conn`]: one WebSocket connection: its bounded outbound queue, the
//!   reader/writer loops (heartbeats, batching, close codes), and the
//!   per-connection protocol session.
//! - [`http`]: routes (`/ws` upgrade, health), origin checks, JSON errors.
//! - [`bench`]: `hubcast bench`, the load tool (scenarios over real sockets).
//! - [`run`]: wires it together and serves until the shutdown token fires.
//!
//! A message's life: `conn::session` parses a `publish`, the broker assigns
//! the offset and encodes the envelope once, the hub pushes the same bytes
//! into every local subscriber's queue, and each connection's writer sends
//! its whole queue in one batch.

pub mod auth;
pub mod bench;
pub mod broker;
pub mod config;
pub mod conn;
pub mod http;
pub mod hub;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otel;
pub mod protocol;
pub mod recent;
mod small;
pub mod trace;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use broker::memory::MemoryBroker;
use broker::redis::{RedisBroker, RedisSettings};
use broker::{Broker, Engine, PresenceManager};
use config::{BrokerKind, Config};
use hub::Hub;

/// Shared server state.
pub struct App {
    /// The validated settings.
    pub config: Config,
    /// Node-local rooms and fan-out.
    pub hub: Arc<Hub>,
    /// The engine behind the hub.
    pub broker: Arc<dyn Broker>,
    /// The same engine's presence and user status.
    pub presence: Arc<dyn PresenceManager>,
    /// Fires on SIGTERM/SIGINT (or when a test says so).
    pub shutdown: CancellationToken,
    /// Owns every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Next node-local connection key.
    pub next_conn: AtomicU64,
    /// Connections open now, by transport.
    pub open: Arc<metrics::OpenCounts>,
    /// Token verification and the anonymous switch.
    pub auth: auth::Auth,
    /// Connection caps and handshake rates.
    pub limits: Arc<http::limits::ConnLimits>,
    /// Renders `/metrics` (none when another recorder was installed).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// When the server started.
    pub started: std::time::Instant,
    /// Messages accepted for publishing on this node since start.
    pub published: AtomicU64,
    /// (time, published, delivered) once a second, for `/api/stats` rates.
    pub samples: std::sync::Mutex<std::collections::VecDeque<(std::time::Instant, u64, u64)>>,
    /// Recent errors and notable closes, for the dashboard.
    pub recent: Arc<recent::Recent>,
}

impl App {
    /// A room's presence as every reply lists it: nobody for a personal
    /// room, else the first `max_presence_members` and the total.
    pub async fn presence_page(
        &self,
        room: &str,
    ) -> Result<broker::PresencePage, broker::BrokerError> {
        if protocol::is_personal(room) {
            return Ok(broker::PresencePage::default());
        }
        self.presence
            .list(room, self.config.max_presence_members)
            .await
    }

    /// Counts a message accepted for publishing (a duplicate is not one)
    /// for `/metrics` and `/api/stats`.
    pub fn count_published(&self, entry: metrics::Entry) {
        let m = metrics::handles();
        match entry {
            metrics::Entry::Ws => m.published_ws.increment(1),
            metrics::Entry::Http => m.published_http.increment(1),
        }
        self.published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records one rate sample (published, delivered) now.
    fn sample(&self) {
        let now = std::time::Instant::now();
        let row = (
            now,
            self.published.load(std::sync::atomic::Ordering::Relaxed),
            self.hub.delivered(),
        );
        let mut s = lock(&self.samples);
        s.push_back(row);
        while s.len() > 11 {
            s.pop_front();
        }
    }

    /// Messages published and delivered per second over the last samples
    /// (up to 10 s).
    pub fn rates(&self) -> (f64, f64) {
        let s = lock(&self.samples);
        match (s.front(), s.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                (
                    b.1.saturating_sub(a.1) as f64 / dt,
                    b.2.saturating_sub(a.2) as f64 / dt,
                )
            }
            _ => (0.0, 0.0),
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it:
/// no code here panics while holding one, and what each guards stays
/// consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
/// Current Unix time in milliseconds.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Serves on `listener` until `shutdown` fires, then closes every WebSocket
/// with 1001 and waits (up to `shutdown_timeout`) for connections to end.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let broker = connect_broker(&config).await?;
    run_with_broker(config, listener, shutdown, broker).await
}

/// The engine the config names, connected.
pub async fn connect_broker(config: &Config) -> anyhow::Result<Arc<dyn Engine>> {
    Ok(match config.broker {
        BrokerKind::Memory => MemoryBroker::new(config.history_size, config.history_ttl()),
        BrokerKind::Redis => RedisBroker::connect(RedisSettings {
            url: config.redis_url.clone(),
            cluster: config.redis_cluster,
            prefix: config.redis_prefix.clone(),
            node: config.node_id.clone(),
            history_size: config.history_size,
            ttl: config.history_ttl(),
            lease: Duration::from_secs(config.presence_lease),
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot use Redis at {} (redis_url): {e}", config.redis_url)
        })?,
    })
}

/// [`run`] with a given engine (tests use it to inject failures; the Redis
/// engine comes in the same way).
pub async fn run_with_broker(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    broker: Arc<dyn Engine>,
) -> anyhow::Result<()> {
    let auth = auth::Auth::from_config(&config)?;
    let metrics = crate::metrics::install();
    // Every engine's operations are timed the same way.
    let timed = broker::timed::Timed::new(broker);
    let (broker, presence): (Arc<dyn Broker>, Arc<dyn PresenceManager>) = (timed.clone(), timed);
    let limits = http::limits::ConnLimits::new(&config);
    let hub = Hub::new(broker.clone(), config.queue_size);
    let grace = Duration::from_secs(config.shutdown_timeout);
    let app = Arc::new(App {
        config,
        hub,
        broker: broker.clone(),
        presence,
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
        next_conn: AtomicU64::new(1),
        open: Arc::default(),
        auth,
        limits,
        metrics,
        started: std::time::Instant::now(),
        published: AtomicU64::new(0),
        samples: std::sync::Mutex::new(std::collections::VecDeque::new()),
        recent: Arc::default(),
    });
    {
        // Once a second: a rate sample for /api/stats (the last 10 s are
        // kept); every fifth second, the metrics upkeep (histograms keep raw
        // samples until it folds them into buckets, scraped or not).
        let app = app.clone();
        let stop = shutdown.clone();
        app.clone().tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                app.sample();
                n += 1;
                if n.is_multiple_of(5)
                    && let Some(handle) = &app.metrics
                {
                    handle.run_upkeep();
                }
            }
        });
    }
    {
        // Shutdown closes every connection with 1001 (their writers send
        // it, then wait briefly for the client's reply).
        let app = app.clone();
        let stop = shutdown.clone();
        app.clone().tasks.spawn(async move {
            stop.cancelled().await;
            app.hub
                .close_all(protocol::close::GOING_AWAY, "server shutting down");
        });
    }
    let router = http::router(app.clone());
    // The TLS accept loop stops on shutdown like every other task.
    let accept_tasks = TaskTracker::new();
    let result = match (&app.config.tls_cert, &app.config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = http::tls::load(cert, key)?;
            let listener =
                http::tls::TlsListener::start(listener, tls, &accept_tasks, shutdown.clone())?;
            // (tap_io: axum gives the remote address to handlers only for
            // its own listener types.)
            let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
            serve_until_shutdown(listener, router, &shutdown, grace).await
        }
        _ => {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                // Frames are small and latency matters: no Nagle delay.
                let _ = tcp.set_nodelay(true);
            });
            serve_until_shutdown(listener, router, &shutdown, grace).await
        }
    };
    accept_tasks.close();
    accept_tasks.wait().await;
    app.tasks.close();
    if tokio::time::timeout(grace, app.tasks.wait()).await.is_err() {
        tracing::warn!(
            open = app.tasks.len(),
            "shutdown timeout: some connections did not close in time"
        );
    }
    broker.close().await;
    result.map_err(Into::into)
}

/// Serves `router` on `listener` until `shutdown` fires; HTTP requests then
/// drain on their own, within `grace`. WebSockets are closed by their
/// writers when the token fires.
async fn serve_until_shutdown<L>(
    listener: L,
    router: axum::Router,
    shutdown: &CancellationToken,
    grace: Duration,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Unpin,
    for<'a> SocketAddr: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        r = std::future::IntoFuture::into_future(served) => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown timeout: HTTP requests still running");
            Ok(())
        }
    }
}

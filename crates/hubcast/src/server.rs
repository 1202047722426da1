//! Wiring: builds the [`App`] from a config, serves HTTP (plain or TLS)
//! until the shutdown token fires, then closes every connection and waits
//! for their tasks.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::App;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::{RedisBroker, RedisSettings};
use crate::broker::{self, Broker, Engine, PresenceManager};
use crate::config::{BrokerKind, Config};
use crate::hub::Hub;
use crate::rules::Rules;
use crate::{auth, http, protocol};

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
pub(crate) async fn connect_broker(config: &Config) -> anyhow::Result<Arc<dyn Engine>> {
    let rules = Arc::new(Rules::from_config(config)?);
    Ok(match config.broker {
        BrokerKind::Memory => MemoryBroker::with_rules(rules),
        BrokerKind::Redis => RedisBroker::connect(RedisSettings {
            url: config.redis_url.clone(),
            cluster: config.redis_cluster,
            prefix: config.redis_prefix.clone(),
            node: config.node_id.clone(),
            rules,
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
    let rules = Arc::new(Rules::from_config(&config)?);
    let metrics = crate::metrics::install();
    // Every engine's operations are timed the same way.
    let timed = broker::timed::Timed::new(broker);
    let (broker, presence, user_controls): (
        Arc<dyn Broker>,
        Arc<dyn PresenceManager>,
        Arc<dyn broker::UserControls>,
    ) = (timed.clone(), timed.clone(), timed);
    let limits = http::limits::ConnLimits::new(&config);
    let tasks = TaskTracker::new();
    let hub = Hub::new(broker.clone(), config.queue_size, tasks.clone());
    let grace = Duration::from_secs(config.shutdown_timeout);
    let controls = crate::controls::Controls::new(hub.clone());
    // Before serving: a node started after a block or a revocation
    // refuses from its first handshake.
    let sink: std::sync::Weak<dyn broker::ControlSink> = Arc::downgrade(&controls) as _;
    user_controls.follow(sink).await?;
    let hooks = crate::hooks::Hooks::new(&config.hooks, config.max_message_bytes);
    let app = Arc::new(App {
        hooks,
        config,
        rules,
        hub,
        broker: broker.clone(),
        presence,
        user_controls,
        controls,
        shutdown: shutdown.clone(),
        tasks,
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
    app.tasks.spawn(sample_rates(app.clone()));
    app.tasks.spawn(close_on_shutdown(app.clone()));
    // The JWKS fetches (at start, then for unknown `kid`s) end at shutdown.
    if let Some(jwks) = &app.auth.jwks {
        app.tasks.spawn(jwks.clone().run(app.shutdown.clone()));
    }
    let router = http::router(app.clone());
    let tls = match (&app.config.tls_cert, &app.config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(tokio_rustls::TlsAcceptor::from(http::tls::load(cert, key)?))
        }
        _ => None,
    };
    // HTTP connections (WebSockets leave them at the upgrade, for tasks of
    // their own on `app.tasks`).
    let conns = TaskTracker::new();
    http::serve::serve(&app, listener, router, tls, &conns).await;
    conns.close();
    if tokio::time::timeout(grace, conns.wait()).await.is_err() {
        tracing::warn!("shutdown timeout: HTTP requests still running");
    }
    app.tasks.close();
    if tokio::time::timeout(grace, app.tasks.wait()).await.is_err() {
        tracing::warn!(
            open = app.tasks.len(),
            "shutdown timeout: some connections did not close in time"
        );
    }
    broker.close().await;
    Ok(())
}

/// Once a second until shutdown: a rate sample for `/api/stats` (the last
/// 10 s are kept); every fifth second, the metrics upkeep (histograms keep
/// raw samples until it folds them into buckets, scraped or not).
async fn sample_rates(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
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
}

/// On shutdown, closes every connection with 1001 (their writers send it,
/// then wait briefly for the client's reply).
async fn close_on_shutdown(app: Arc<App>) {
    app.shutdown.cancelled().await;
    app.hub
        .close_all(protocol::close::GOING_AWAY, "server shutting down");
}

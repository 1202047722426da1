//! Wiring: builds the [`App`] from a config, serves HTTP (plain or TLS)
//! until the shutdown token fires and `crate::drain` has closed every
//! connection, then waits for their tasks. Reloaded configs, when the
//! caller sends them, are applied by `crate::reload`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::App;
use crate::broker::memory::MemoryBroker;
use crate::broker::nats::{NatsBroker, NatsSettings};
use crate::broker::redis::{RedisBroker, RedisSettings};
use crate::broker::{self, Broker, Engine, PresenceManager};
use crate::config::{BrokerKind, Config};
use crate::http;
use crate::hub::Hub;
use crate::reload::Live;
use crate::rules::Rules;

/// Serves on `listener` until `shutdown` fires, then drains: `/readyz`
/// answers 503, and after `drain_delay` every connection is closed with
/// 1001, the closes spread over `shutdown_timeout`; returns once they
/// ended (or the timeout passed).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let broker = connect_broker(&config).await?;
    serve_app(config, listener, shutdown, broker, None).await
}

/// [`run`], applying each config `reloads` sees (a SIGHUP's): the
/// reloadable keys change, the others keep their value with a warning.
/// The configs must have passed [`crate::config::check_all`].
pub async fn run_reloadable(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    reloads: tokio::sync::watch::Receiver<Config>,
) -> anyhow::Result<()> {
    let broker = connect_broker(&config).await?;
    serve_app(config, listener, shutdown, broker, Some(reloads)).await
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
        BrokerKind::Nats => NatsBroker::connect(NatsSettings {
            url: config.nats_url.clone(),
            prefix: config.nats_prefix.clone(),
            node: config.node_id.clone(),
            rules,
            lease: Duration::from_secs(config.presence_lease),
            memory_storage: config.nats_storage == crate::config::NatsStorage::Memory,
            user: config.nats_user.clone(),
            password: config.nats_password.clone(),
            token: config.nats_token.clone(),
            creds_file: config.nats_creds_file.clone(),
            nkey: config.nats_nkey.clone(),
            tls_ca_file: config.nats_tls_ca_file.clone(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot use NATS at {} (nats_url): {e}", config.nats_url))?,
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
    serve_app(config, listener, shutdown, broker, None).await
}

async fn serve_app(
    config: Config,
    listener: TcpListener,
    signal: CancellationToken,
    broker: Arc<dyn Engine>,
    reloads: Option<tokio::sync::watch::Receiver<Config>>,
) -> anyhow::Result<()> {
    let live = Live::new(config.clone())?;
    let metrics = crate::metrics::install();
    // Every engine's operations are timed the same way.
    let timed = broker::timed::Timed::new(broker);
    let webhook_log: Arc<dyn broker::WebhookLog> = timed.clone();
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
    let webhooks = crate::webhooks::Webhooks::new(webhook_log);
    let app = Arc::new(App {
        webhooks,
        config,
        live: ArcSwap::from_pointee(live),
        hub,
        broker: broker.clone(),
        presence,
        lists: Arc::default(),
        user_controls,
        controls,
        draining: signal.clone(),
        shutdown: CancellationToken::new(),
        stop: CancellationToken::new(),
        tasks,
        next_conn: AtomicU64::new(1),
        open: Arc::default(),
        limits,
        metrics,
        started: std::time::Instant::now(),
        published: AtomicU64::new(0),
        samples: std::sync::Mutex::new(std::collections::VecDeque::new()),
        recent: Arc::default(),
    });
    // Before serving: the engine records transitions from the first
    // connection on.
    app.webhooks
        .apply(&app.config, &app.tasks, &app.stop)
        .await?;
    app.tasks.spawn(sample_rates(app.clone()));
    app.tasks.spawn(crate::drain::run(app.clone(), signal));
    // The JWKS fetches (at start, then for unknown `kid`s) end at stop or
    // when a reload replaces the keys.
    app.live().start(&app);
    if let Some(reloads) = reloads {
        app.tasks.spawn(apply_reloads(app.clone(), reloads));
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
            _ = app.stop.cancelled() => return,
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

/// Applies each reloaded config until the server stops.
async fn apply_reloads(app: Arc<App>, mut reloads: tokio::sync::watch::Receiver<Config>) {
    loop {
        tokio::select! {
            _ = app.stop.cancelled() => return,
            r = reloads.changed() => if r.is_err() { return },
        }
        let config = reloads.borrow_and_update().clone();
        let changed = crate::reload::apply(&app, config);
        if changed.iter().any(|k| k.starts_with("webhook")) {
            let config = app.live().config.clone();
            match app.webhooks.apply(&config, &app.tasks, &app.stop).await {
                Ok(()) => tracing::info!("webhooks reloaded"),
                // The engine did not answer: the webhooks that ran go on.
                Err(e) => tracing::error!(error = %e, "webhooks not reloaded"),
            }
        }
    }
}

//! The `hubcast` command: `hubcast serve` runs the server (SIGHUP reloads
//! its settings, SIGTERM drains it), `hubcast config` checks and writes
//! settings files, `hubcast bench` loads a server, `hubcast token` mints a
//! test token.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use hubcast::config::{Config, LogFormat, ServeArgs};

/// hubcast: a real-time messaging server (rooms, presence, recovery, over WebSocket).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. With no settings: in-memory broker on 127.0.0.1:8080.
    Serve(Box<ServeArgs>),
    /// Print an HS256 connection token, for tests and demos.
    Token(TokenArgs),
    /// Load scenarios against hubcast nodes (fan-out, idle, churn, flood, poll-vs-ws).
    Bench(hubcast::bench::BenchArgs),
    /// Check a settings file and the HUBCAST_* environment, or write a file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the file and the HUBCAST_* variables: exit 0, or 2 naming every bad key.
    Check {
        /// TOML file with settings.
        #[arg(long, env = "HUBCAST_CONFIG", value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Print a TOML file with every key, its default and what it does.
    Init,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// User id (`sub`).
    #[arg(long)]
    sub: String,
    /// The server's jwt_secret.
    #[arg(long, env = "HUBCAST_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// Display name (`name`).
    #[arg(long)]
    name: Option<String>,
    /// Room patterns the user may use (`rooms`, comma-separated; `*` one segment, `**` the rest).
    #[arg(long, value_delimiter = ',')]
    rooms: Option<Vec<String>>,
    /// May use any room and see any presence (`admin`).
    #[arg(long)]
    admin: bool,
    /// Seconds until the token expires.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

/// What has to be flushed when the server stops (the OTLP exporter), and
/// the log filter a reload changes.
struct Logging {
    #[cfg(feature = "otlp")]
    otlp: Option<hubcast::otel::Otlp>,
    filter: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
}

impl Logging {
    fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(o) = self.otlp {
            o.shutdown();
        }
    }
}

fn init_logging(config: &Config) -> anyhow::Result<Logging> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    type Base = tracing_subscriber::layer::Layered<
        tracing_subscriber::reload::Layer<EnvFilter, tracing_subscriber::Registry>,
        tracing_subscriber::Registry,
    >;

    // RUST_LOG overrides log_level at start, e.g. RUST_LOG=hubcast=debug;
    // a reload that changes log_level applies it.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    #[allow(unused_mut)]
    let mut layers: Vec<Box<dyn Layer<Base> + Send + Sync>> = vec![match config.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    }];
    #[allow(unused_mut)]
    let mut logging = Logging {
        #[cfg(feature = "otlp")]
        otlp: None,
        filter: handle,
    };
    #[cfg(feature = "otlp")]
    if let Some(url) = &config.otlp_endpoint {
        let (layer, otlp) = hubcast::otel::layer(url, &config.node_id)?;
        layers.push(layer.boxed());
        logging.otlp = Some(otlp);
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .init();
    Ok(logging)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => token(args),
        Command::Bench(args) => hubcast::bench::main(args),
        Command::Config(ConfigCommand::Init) => {
            print!("{}", hubcast::config::init_file());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { config }) => {
            match hubcast::config::check_file_and_env(config.as_deref()) {
                Ok(_) => {
                    println!("hubcast: settings ok");
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    for p in &problems {
                        eprintln!("hubcast: {p}");
                    }
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn token(args: TokenArgs) -> ExitCode {
    let exp = hubcast::unix_ms() as u64 / 1000 + args.ttl;
    let mut claims = serde_json::json!({"sub": args.sub, "exp": exp});
    if let Some(name) = args.name {
        claims["name"] = name.into();
    }
    if let Some(rooms) = args.rooms {
        claims["rooms"] = rooms.into();
    }
    if args.admin {
        claims["admin"] = true.into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(args.secret.as_bytes());
    match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hubcast: cannot sign the token: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hubcast: {e}");
            return ExitCode::from(2);
        }
    };
    let logging = match init_logging(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hubcast: cannot start trace export (otlp_endpoint): {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hubcast: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = logging.filter.clone();
    let code = runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("hubcast: cannot listen on {} (listen): {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener
            .local_addr()
            .map_or_else(|_| config.listen.to_string(), |a| a.to_string());
        let (http, ws) = if config.tls_cert.is_some() {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        tracing::info!(
            listen = %addr,
            node = %config.node_id,
            broker = ?config.broker,
            "hubcast listening on {http}://{addr} (WebSocket: {ws}://{addr}/ws)"
        );
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received: draining");
            signals.cancel();
        });
        let (reloads, reloaded) = tokio::sync::watch::channel(config.clone());
        // Listening for SIGHUP before the first request, so that none
        // kills the process; the task ends with the runtime, after `run`.
        #[cfg(unix)]
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        #[cfg(not(unix))]
        let hangups = ();
        tokio::spawn(reload_on_hangup(
            hangups,
            args,
            config.clone(),
            reloads,
            filter,
        ));
        match hubcast::run_reloadable(config, listener, shutdown, reloaded).await {
            Ok(()) => {
                tracing::info!("hubcast stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    });
    logging.shutdown();
    code
}

/// On every SIGHUP: reads the file again under the flags and variables the
/// server started with (a running process's environment does not change),
/// and hands a config that passed every check to the server; a bad one
/// changes nothing, and each problem is logged.
async fn reload_on_hangup(
    #[cfg(unix)] hangups: std::io::Result<tokio::signal::unix::Signal>,
    #[cfg(not(unix))] hangups: (),
    args: ServeArgs,
    mut running: Config,
    reloads: tokio::sync::watch::Sender<Config>,
    filter: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = hangups else {
            tracing::warn!("cannot listen for SIGHUP: reloads are off");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!(file = ?args.config, "SIGHUP: reloading settings");
            let mut config = match hubcast::config::check_all(args.config.as_deref(), &args) {
                Ok(c) => c,
                Err(problems) => {
                    for p in &problems {
                        tracing::error!(error = %p, "reload refused, nothing changed");
                    }
                    continue;
                }
            };
            if config.node_id.is_empty() {
                config.node_id = running.node_id.clone();
            }
            if config.log_level != running.log_level {
                match filter.reload(EnvFilter::new(&config.log_level)) {
                    Ok(()) => tracing::info!(log_level = %config.log_level, "log level changed"),
                    Err(e) => tracing::warn!(error = %e, "cannot change the log level"),
                }
            }
            running = config.clone();
            if reloads.send(config).is_err() {
                return;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (hangups, args, running, reloads, filter);
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

//! The `hubcast` command: `hubcast serve` runs the server, `hubcast bench`
//! loads it, `hubcast token` mints a test token.

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

/// What has to be flushed when the server stops (the OTLP exporter).
#[derive(Default)]
struct Logging {
    #[cfg(feature = "otlp")]
    otlp: Option<hubcast::otel::Otlp>,
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
    type Base = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;

    // RUST_LOG overrides the default level, e.g. RUST_LOG=hubcast=debug.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    #[allow(unused_mut)]
    let mut layers: Vec<Box<dyn Layer<Base> + Send + Sync>> = vec![match config.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    }];
    #[allow(unused_mut)]
    let mut logging = Logging::default();
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
            tracing::info!("shutdown signal received: closing connections");
            signals.cancel();
        });
        match hubcast::run(config, listener, shutdown).await {
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

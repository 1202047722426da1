//! Every setting, its default, and validation that names the key.
//!
//! Settings are layered, later layers winning: built-in defaults, the TOML
//! file given with `--config`, `HUBCAST_*` environment variables, then
//! command-line flags. Clap reads a flag and its variable together (a flag
//! beats its variable), so the layers are: defaults < file < (env, flags).
//! TOML keys are the flag names with underscores (`max_message_bytes`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The server's settings after all layers are merged and validated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP and WebSocket listener binds.
    pub listen: SocketAddr,
    /// Seconds between WebSocket pings; a connection silent for
    /// `2 * heartbeat + 5` seconds is closed with 4002.
    pub heartbeat: u64,
    /// Largest incoming frame in bytes; larger frames close with 1009.
    pub max_message_bytes: usize,
    /// Messages kept per room for recovery and `history`.
    pub history_size: usize,
    /// Seconds a message stays in a room's history (and its `msgId` in the
    /// idempotency window).
    pub history_ttl: u64,
    /// Outbound frames queued per connection before it is closed as a slow
    /// consumer (4000).
    pub queue_size: usize,
    /// Milliseconds a connection's writer waits after the first frame of a
    /// quiet spell, so that frames queued meanwhile share its write; 0
    /// writes at once. Trades latency (every frame, replies included, may
    /// wait this long) for CPU in busy rooms: one send per delivery is most
    /// of a server's CPU when each connection gets a message now and then.
    pub write_delay_ms: u64,
    /// Rooms one connection may join (its personal room not counted).
    pub max_rooms_per_conn: usize,
    /// Browser origins allowed besides the request's own host. Exact origins
    /// (`https://app.example.com`), host patterns (`*.example.com`, any
    /// scheme) or `*`. Empty: the request's own host and loopback origins.
    pub allowed_origins: Vec<String>,
    /// This node's name in `welcome` and logs. Empty: a random `n-xxxxxxxx`.
    pub node_id: String,
    /// `text` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// Seconds shutdown waits for connections to close before exiting anyway.
    pub shutdown_timeout: u64,
    /// Frames per second one connection may send (token bucket refill);
    /// 0 turns the limit off. Excess frames get `rate_limited`.
    pub rate_limit_per_conn: u32,
    /// Frames a connection may send in a burst. A connection refused more
    /// than this many times within 10 seconds is closed with 4003.
    pub rate_limit_burst: u32,
    /// The engine: `memory` (one node) or `redis` (many nodes).
    pub broker: BrokerKind,
    /// Redis server for `broker = "redis"`; with `redis_cluster`, a
    /// comma-separated list of seed nodes.
    pub redis_url: String,
    /// `redis_url` names a Redis Cluster: rooms spread over its masters by
    /// hash tag, with sharded pub/sub (Redis 7).
    pub redis_cluster: bool,
    /// Serve the chat page at `/` and the admin dashboard at `/admin` (the
    /// client library at `/client/` is always served).
    pub web: bool,
    /// Prefix of every Redis key and channel hubcast uses.
    pub redis_prefix: String,
    /// Seconds a node's presence entries outlive it when it dies without
    /// cleaning up (Redis engine): other nodes then remove them and send
    /// the leave events.
    pub presence_lease: u64,
    /// Shared secret for HS256 connection tokens.
    pub jwt_secret: Option<String>,
    /// File holding the HS256 secret (instead of `jwt_secret`).
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public key for RS256 or ES256 connection tokens.
    pub jwt_public_key: Option<PathBuf>,
    /// Whether connections without a token are allowed. Unset: only when
    /// listening on loopback.
    pub anonymous: Option<bool>,
    /// Keys for `/api/*` (`Authorization: Bearer <key>`). Empty: the API
    /// answers loopback callers only.
    pub api_keys: Vec<String>,
    /// Members listed in one presence reply (`joined`, `presence`, the
    /// API); `total` tells how many there are in all.
    pub max_presence_members: usize,
    /// PEM certificate chain: serve wss:// and https:// directly.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// OTLP/HTTP endpoint for trace export (`http://collector:4318/v1/traces`);
    /// needs a hubcast built with the `otlp` feature. None: no export.
    pub otlp_endpoint: Option<String>,
    /// WebSocket connections the node accepts in all; past it, 503.
    pub max_connections: u32,
    /// WebSocket connections from one IP address; past it, 429.
    pub max_connections_per_ip: u32,
    /// WebSocket handshakes one IP address may make per second (bursts of
    /// twice that); past it, 429 with `Retry-After`. 0 turns it off.
    pub handshakes_per_ip_per_sec: u32,
}

/// Which engine serves rooms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// In this process: one node.
    Memory,
    /// Redis: many nodes sharing one Redis.
    Redis,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            heartbeat: 25,
            max_message_bytes: 65536,
            history_size: 1000,
            history_ttl: 600,
            queue_size: 1024,
            write_delay_ms: 0,
            max_rooms_per_conn: 100,
            allowed_origins: Vec::new(),
            node_id: String::new(),
            log_format: LogFormat::Text,
            shutdown_timeout: 5,
            rate_limit_per_conn: 1000,
            rate_limit_burst: 2000,
            broker: BrokerKind::Memory,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_cluster: false,
            web: true,
            redis_prefix: "hubcast".into(),
            presence_lease: 30,
            jwt_secret: None,
            jwt_secret_file: None,
            jwt_public_key: None,
            anonymous: None,
            api_keys: Vec::new(),
            max_presence_members: 1000,
            tls_cert: None,
            tls_key: None,
            otlp_endpoint: None,
            max_connections: 100_000,
            max_connections_per_ip: 2_000,
            handshakes_per_ip_per_sec: 500,
        }
    }
}

/// `hubcast serve` flags. Every field is optional so that an absent flag
/// (and absent variable) leaves the file's or the default value in place.
/// The defaults in the help texts are checked against [`Config::default`]
/// by a unit test.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct ServeArgs {
    /// TOML file with settings (keys are the flag names with underscores).
    #[arg(long, env = "HUBCAST_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "HUBCAST_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Seconds between WebSocket pings; silence for 2*heartbeat+5 s closes with 4002 [default: 25]
    #[arg(long, env = "HUBCAST_HEARTBEAT", value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<u64>,
    /// Largest incoming frame in bytes; larger ones close with 1009 [default: 65536]
    #[arg(long, env = "HUBCAST_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// Messages kept per room for recovery and history [default: 1000]
    #[arg(long, env = "HUBCAST_HISTORY_SIZE", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_size: Option<usize>,
    /// Seconds a message stays in history and its msgId in the idempotency window [default: 600]
    #[arg(long, env = "HUBCAST_HISTORY_TTL", value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_ttl: Option<u64>,
    /// Outbound frames queued per connection before a slow-consumer close (4000) [default: 1024]
    #[arg(long, env = "HUBCAST_QUEUE_SIZE", value_name = "FRAMES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<usize>,
    /// Milliseconds a writer waits after a quiet spell so later frames share its write (CPU for latency), 0 = off [default: 0]
    #[arg(long, env = "HUBCAST_WRITE_DELAY_MS", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_delay_ms: Option<u64>,
    /// Rooms one connection may join, its personal room not counted [default: 100]
    #[arg(long, env = "HUBCAST_MAX_ROOMS_PER_CONN", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rooms_per_conn: Option<usize>,
    /// Browser origins allowed besides the request's own host: exact origins, *.example.com patterns or * (comma-separated) [default: loopback origins]
    #[arg(
        long,
        env = "HUBCAST_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    /// This node's name in welcome frames and logs [default: random n-xxxxxxxx]
    #[arg(long, env = "HUBCAST_NODE_ID", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Log format [default: text]
    #[arg(long, env = "HUBCAST_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Seconds shutdown waits for connections to close [default: 5]
    #[arg(long, env = "HUBCAST_SHUTDOWN_TIMEOUT", value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<u64>,
    /// Frames per second one connection may send, 0 = unlimited; excess frames get rate_limited [default: 1000]
    #[arg(long, env = "HUBCAST_RATE_LIMIT_PER_CONN", value_name = "FRAMES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_conn: Option<u32>,
    /// Frames one connection may send in a burst; refused more often than this in 10 s closes with 4003 [default: 2000]
    #[arg(long, env = "HUBCAST_RATE_LIMIT_BURST", value_name = "FRAMES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
    /// Engine: memory (one node) or redis (many nodes sharing one Redis) [default: memory]
    #[arg(long, env = "HUBCAST_BROKER", value_name = "ENGINE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerKind>,
    /// Redis server for --broker redis [default: redis://127.0.0.1:6379/0]
    #[arg(long, env = "HUBCAST_REDIS_URL", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// --redis-url names Redis Cluster seed nodes (comma-separated): sharded pub/sub, Redis 7 [default: false]
    #[arg(long, env = "HUBCAST_REDIS_CLUSTER", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cluster: Option<bool>,
    /// Serve the chat page at / and the admin dashboard at /admin [default: true]
    #[arg(long, env = "HUBCAST_WEB", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web: Option<bool>,
    /// Prefix of every Redis key and channel [default: hubcast]
    #[arg(long, env = "HUBCAST_REDIS_PREFIX", value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_prefix: Option<String>,
    /// Seconds a dead node's presence lingers before other nodes remove it (Redis engine) [default: 30]
    #[arg(long, env = "HUBCAST_PRESENCE_LEASE", value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_lease: Option<u64>,
    /// Shared secret for HS256 connection tokens (at least 16 bytes)
    #[arg(
        long,
        env = "HUBCAST_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
    /// File holding the HS256 secret
    #[arg(long, env = "HUBCAST_JWT_SECRET_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public key for RS256 or ES256 connection tokens
    #[arg(long, env = "HUBCAST_JWT_PUBLIC_KEY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key: Option<PathBuf>,
    /// Allow connections without a token [default: only when listening on loopback]
    #[arg(long, env = "HUBCAST_ANONYMOUS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<bool>,
    /// Key for /api/* calls (Authorization: Bearer KEY); repeat the flag or comma-separate for several [default: none, API open to loopback callers only]
    #[arg(
        long = "api-key",
        env = "HUBCAST_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<Vec<String>>,
    /// Members listed in one presence reply; the reply's total counts them all [default: 1000]
    #[arg(long, env = "HUBCAST_MAX_PRESENCE_MEMBERS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_presence_members: Option<usize>,
    /// PEM certificate chain: serve wss:// and https:// directly (with --tls-key)
    #[arg(long, env = "HUBCAST_TLS_CERT", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "HUBCAST_TLS_KEY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Export traces over OTLP/HTTP to this URL, e.g. http://127.0.0.1:4318/v1/traces (build with --features otlp)
    #[arg(long, env = "HUBCAST_OTLP_ENDPOINT", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// WebSocket connections accepted in all; past it, 503 [default: 100000]
    #[arg(long, env = "HUBCAST_MAX_CONNECTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// WebSocket connections from one IP address; past it, 429 [default: 2000]
    #[arg(long, env = "HUBCAST_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<u32>,
    /// WebSocket handshakes per second from one IP address, 0 = unlimited; past it, 429 [default: 500]
    #[arg(long, env = "HUBCAST_HANDSHAKES_PER_IP_PER_SEC", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshakes_per_ip_per_sec: Option<u32>,
}

/// A setting that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or a value could not be read as the key's type.
    #[error("config: {0}")]
    Parse(String),
    /// A value was read but is out of range.
    #[error("config: {key}: {message}")]
    Invalid {
        /// The TOML key (flag name with underscores).
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Config {
    /// Merges defaults, the optional TOML file and the flags/variables, then
    /// validates the result.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &args.config {
            if !path.exists() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(Serialized::defaults(args));
        let mut cfg: Config = fig.extract().map_err(|e| {
            // figment prefixes keys with the profile ("default."); users never
            // see profiles, so drop it.
            ConfigError::Parse(e.to_string().replace("default.", ""))
        })?;
        cfg.validate()?;
        if cfg.node_id.is_empty() {
            cfg.node_id = format!("n-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        }
        Ok(cfg)
    }

    /// Range checks, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        }
        if !(1..=3600).contains(&self.heartbeat) {
            return bad("heartbeat", "must be between 1 and 3600 seconds");
        }
        if !(256..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            return bad(
                "max_message_bytes",
                "must be between 256 and 67108864 bytes",
            );
        }
        if self.history_size > 1_000_000 {
            return bad("history_size", "must be at most 1000000 messages");
        }
        if !(1..=7 * 24 * 3600).contains(&self.history_ttl) {
            return bad("history_ttl", "must be between 1 second and 7 days");
        }
        if !(16..=1_000_000).contains(&self.queue_size) {
            return bad("queue_size", "must be between 16 and 1000000 frames");
        }
        if self.write_delay_ms > 1000 {
            return bad("write_delay_ms", "must be at most 1000 milliseconds");
        }
        if !(1..=100_000).contains(&self.max_rooms_per_conn) {
            return bad("max_rooms_per_conn", "must be between 1 and 100000");
        }
        for origin in &self.allowed_origins {
            if let Err(message) = crate::http::origin::check_pattern(origin) {
                return bad("allowed_origins", format!("{origin:?}: {message}"));
            }
        }
        if self.node_id.len() > 64 || self.node_id.chars().any(|c| c.is_control() || c == ' ') {
            return bad(
                "node_id",
                "must be at most 64 characters, without spaces or control characters",
            );
        }
        if !(1..=600).contains(&self.shutdown_timeout) {
            return bad("shutdown_timeout", "must be between 1 and 600 seconds");
        }
        let urls: Vec<&str> = self.redis_url.split(',').map(str::trim).collect();
        if self.redis_cluster {
            if !urls
                .iter()
                .all(|u| u.starts_with("redis://") || u.starts_with("rediss://"))
            {
                return bad(
                    "redis_url",
                    "with redis_cluster, must be comma-separated redis:// (or rediss://) URLs of cluster nodes",
                );
            }
        } else if urls.len() != 1
            || !(self.redis_url.starts_with("redis://")
                || self.redis_url.starts_with("rediss://")
                || self.redis_url.starts_with("redis+unix://")
                || self.redis_url.starts_with("unix://"))
        {
            return bad(
                "redis_url",
                "must be one redis:// (or rediss://, unix://) URL; several are for redis_cluster",
            );
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.len() > 64
            || !self
                .redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return bad(
                "redis_prefix",
                "must be 1 to 64 characters of A-Z a-z 0-9 _ - . :",
            );
        }
        for key in &self.api_keys {
            if key.len() < 16 || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(
                    "api_keys",
                    "each key must be 16 to 256 printable ASCII characters without spaces",
                );
            }
        }
        if !(1..=100_000).contains(&self.max_presence_members) {
            return bad("max_presence_members", "must be between 1 and 100000");
        }
        if let Some(url) = &self.otlp_endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return bad(
                    "otlp_endpoint",
                    "must be an http:// or https:// URL, e.g. http://127.0.0.1:4318/v1/traces",
                );
            }
            if !cfg!(feature = "otlp") {
                return bad(
                    "otlp_endpoint",
                    "this hubcast was built without OpenTelemetry export; \
                     build it with `cargo build --release --features otlp`, or unset otlp_endpoint",
                );
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return bad("tls_key", "tls_cert needs tls_key too"),
            (None, Some(_)) => return bad("tls_cert", "tls_key needs tls_cert too"),
            _ => {}
        }
        let has_key = self.jwt_secret.is_some()
            || self.jwt_secret_file.is_some()
            || self.jwt_public_key.is_some();
        if !self.listen.ip().is_loopback() && !has_key && self.anonymous != Some(true) {
            return bad(
                "anonymous",
                format!(
                    "refusing to listen on {} without authentication: set jwt_secret \
                     (--jwt-secret or HUBCAST_JWT_SECRET), jwt_secret_file or jwt_public_key \
                     to require tokens, or anonymous = true (--anonymous) to let anyone in",
                    self.listen
                ),
            );
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if self.max_connections_per_ip == 0 {
            return bad("max_connections_per_ip", "must be at least 1");
        }
        if !(1..=3600).contains(&self.presence_lease) {
            return bad("presence_lease", "must be between 1 and 3600 seconds");
        }
        if self.rate_limit_per_conn > 0 && self.rate_limit_burst == 0 {
            return bad(
                "rate_limit_burst",
                "must be at least 1 when rate_limit_per_conn is set",
            );
        }
        Ok(())
    }

    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat)
    }

    /// How long a writer waits to coalesce frames (`write_delay_ms`).
    pub fn write_delay(&self) -> Duration {
        Duration::from_millis(self.write_delay_ms)
    }

    /// Silence after which a connection is closed with 4002.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(2 * self.heartbeat + 5)
    }

    /// How long history and idempotency entries live.
    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(argv: &[&str]) -> ServeArgs {
        let mut v = vec!["hubcast"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v).expect("flags parse").serve
    }

    #[test]
    fn defaults_need_nothing() {
        let cfg = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.heartbeat, 25);
        assert!(cfg.node_id.starts_with("n-"));
    }

    #[test]
    fn otlp_endpoint_is_checked() {
        let mut c = Config {
            otlp_endpoint: Some("127.0.0.1:4318".into()),
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("otlp_endpoint") && e.contains("http://"), "{e}");
        c.otlp_endpoint = Some("http://127.0.0.1:4318/v1/traces".into());
        if cfg!(feature = "otlp") {
            assert!(c.validate().is_ok());
        } else {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("--features otlp"), "{e}");
        }
    }

    #[test]
    fn help_documents_each_default() {
        let help = Cli::command().render_long_help().to_string();
        let d = Config::default();
        for (flag, default) in [
            ("--listen", d.listen.to_string()),
            ("--heartbeat", d.heartbeat.to_string()),
            ("--max-message-bytes", d.max_message_bytes.to_string()),
            ("--history-size", d.history_size.to_string()),
            ("--history-ttl", d.history_ttl.to_string()),
            ("--queue-size", d.queue_size.to_string()),
            ("--write-delay-ms", d.write_delay_ms.to_string()),
            ("--max-rooms-per-conn", d.max_rooms_per_conn.to_string()),
            ("--log-format", "text".to_string()),
            ("--shutdown-timeout", d.shutdown_timeout.to_string()),
            ("--rate-limit-per-conn", d.rate_limit_per_conn.to_string()),
            ("--rate-limit-burst", d.rate_limit_burst.to_string()),
            ("--broker", "memory".to_string()),
            ("--redis-url", d.redis_url.clone()),
            ("--redis-prefix", d.redis_prefix.clone()),
            ("--redis-cluster", d.redis_cluster.to_string()),
            ("--web", d.web.to_string()),
            ("--max-presence-members", d.max_presence_members.to_string()),
            ("--presence-lease", d.presence_lease.to_string()),
            ("--max-connections", d.max_connections.to_string()),
            (
                "--max-connections-per-ip",
                d.max_connections_per_ip.to_string(),
            ),
            (
                "--handshakes-per-ip-per-sec",
                d.handshakes_per_ip_per_sec.to_string(),
            ),
        ] {
            let at = help
                .find(flag)
                .unwrap_or_else(|| panic!("{flag} not in help"));
            let next = help[at..].find("\n  -").map_or(help.len(), |n| at + n);
            assert!(
                help[at..next].contains(&format!("[default: {default}]")),
                "{flag} help does not say [default: {default}]: {}",
                &help[at..next]
            );
        }
        assert!(help.contains("HUBCAST_LISTEN"));
    }

    /// Every setting set to a value other than its default, as
    /// [`every_flag_reaches_its_field`] and [`every_key_reaches_its_field`]
    /// give it (`otlp_endpoint` aside: without the `otlp` feature it fails
    /// validation; `otlp_endpoint_is_checked` covers it).
    fn all_changed() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 2], 9000)),
            heartbeat: 7,
            max_message_bytes: 4096,
            history_size: 10,
            history_ttl: 60,
            queue_size: 32,
            write_delay_ms: 5,
            max_rooms_per_conn: 3,
            allowed_origins: vec!["https://a.example".into(), "*.b.example".into()],
            node_id: "n1".into(),
            log_format: LogFormat::Json,
            shutdown_timeout: 9,
            rate_limit_per_conn: 50,
            rate_limit_burst: 60,
            broker: BrokerKind::Redis,
            redis_url: "redis://h:1,redis://h:2".into(),
            redis_cluster: true,
            web: false,
            redis_prefix: "pfx".into(),
            presence_lease: 11,
            jwt_secret: Some("0123456789abcdef0123".into()),
            jwt_secret_file: Some("/s".into()),
            jwt_public_key: Some("/k".into()),
            anonymous: Some(true),
            api_keys: vec![
                "aaaaaaaaaaaaaaaa".into(),
                "bbbbbbbbbbbbbbbb".into(),
                "cccccccccccccccc".into(),
            ],
            max_presence_members: 12,
            tls_cert: Some("/c".into()),
            tls_key: Some("/k2".into()),
            otlp_endpoint: None,
            max_connections: 13,
            max_connections_per_ip: 14,
            handshakes_per_ip_per_sec: 15,
        }
    }

    #[test]
    fn every_flag_reaches_its_field() {
        let cfg = Config::load(&args(&[
            "--listen=127.0.0.2:9000",
            "--heartbeat=7",
            "--max-message-bytes=4096",
            "--history-size=10",
            "--history-ttl=60",
            "--queue-size=32",
            "--write-delay-ms=5",
            "--max-rooms-per-conn=3",
            "--allowed-origins=https://a.example,*.b.example",
            "--node-id=n1",
            "--log-format=json",
            "--shutdown-timeout=9",
            "--rate-limit-per-conn=50",
            "--rate-limit-burst=60",
            "--broker=redis",
            "--redis-url=redis://h:1,redis://h:2",
            "--redis-cluster",
            "--web=false",
            "--redis-prefix=pfx",
            "--presence-lease=11",
            "--jwt-secret=0123456789abcdef0123",
            "--jwt-secret-file=/s",
            "--jwt-public-key=/k",
            "--anonymous",
            "--api-key=aaaaaaaaaaaaaaaa",
            "--api-key=bbbbbbbbbbbbbbbb,cccccccccccccccc",
            "--max-presence-members=12",
            "--tls-cert=/c",
            "--tls-key=/k2",
            "--max-connections=13",
            "--max-connections-per-ip=14",
            "--handshakes-per-ip-per-sec=15",
        ]))
        .unwrap();
        assert_eq!(cfg, all_changed());
        // A bool flag takes an explicit value too.
        let cfg = Config::load(&args(&["--web", "true", "--anonymous=false"])).unwrap();
        assert!(cfg.web);
        assert_eq!(cfg.anonymous, Some(false));
        let err = Config::load(&args(&["--otlp-endpoint", "x"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("otlp_endpoint"), "{err}");
    }

    #[test]
    fn every_key_reaches_its_field() {
        let dir = std::env::temp_dir().join(format!("hubcast-cfg-all-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("all.toml");
        std::fs::write(
            &file,
            r#"
listen = "127.0.0.2:9000"
heartbeat = 7
max_message_bytes = 4096
history_size = 10
history_ttl = 60
queue_size = 32
write_delay_ms = 5
max_rooms_per_conn = 3
allowed_origins = ["https://a.example", "*.b.example"]
node_id = "n1"
log_format = "json"
shutdown_timeout = 9
rate_limit_per_conn = 50
rate_limit_burst = 60
broker = "redis"
redis_url = "redis://h:1,redis://h:2"
redis_cluster = true
web = false
redis_prefix = "pfx"
presence_lease = 11
jwt_secret = "0123456789abcdef0123"
jwt_secret_file = "/s"
jwt_public_key = "/k"
anonymous = true
api_keys = ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"]
max_presence_members = 12
tls_cert = "/c"
tls_key = "/k2"
max_connections = 13
max_connections_per_ip = 14
handshakes_per_ip_per_sec = 15
"#,
        )
        .unwrap();
        let cfg = Config::load(&args(&["--config", file.to_str().unwrap()])).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(cfg, all_changed());
    }

    #[test]
    fn file_then_flags_win() {
        let dir = std::env::temp_dir().join(format!("hubcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(
            &file,
            "heartbeat = 7\nmax_message_bytes = 4096\nallowed_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        let cfg = Config::load(&args(&[
            "--config",
            file.to_str().unwrap(),
            "--heartbeat",
            "9",
        ]))
        .unwrap();
        assert_eq!(cfg.heartbeat, 9, "flag beats file");
        assert_eq!(cfg.max_message_bytes, 4096, "file beats default");
        assert_eq!(cfg.allowed_origins, vec!["https://a.example".to_string()]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_values_name_the_key() {
        let dir = std::env::temp_dir().join(format!("hubcast-cfg-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("b.toml");
        std::fs::write(&file, "heartbeat = \"soon\"\n").unwrap();
        let err = Config::load(&args(&["--config", file.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat"), "{err}");
        std::fs::write(&file, "hearbeat = 3\n").unwrap();
        let err = Config::load(&args(&["--config", file.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hearbeat"), "unknown key named: {err}");
        let err = Config::load(&args(&["--queue-size", "1"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue_size"), "{err}");
        let err = Config::load(&args(&["--write-delay-ms", "5000"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("write_delay_ms") && err.contains("1000"),
            "{err}"
        );
        assert_eq!(
            Config::load(&args(&["--write-delay-ms", "20"]))
                .unwrap()
                .write_delay(),
            Duration::from_millis(20)
        );
        let err = Config::load(&args(&["--allowed-origins", "ftp://x/y"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed_origins"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

//! The settings table: each setting declared once, with its type, default,
//! `--help` line and check (the row format is described on
//! `declare_settings!` in declare.rs). Its TOML key is the field name, its
//! flag the key with dashes, its variable `HUBCAST_` plus the key in
//! capitals. A new setting is a new row here and in README.md's table.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::declare::{Verdict, at_least, declare_settings, within};
use super::{BrokerKind, HooksTable, LogFormat, NatsStorage, RoomTable, WebhookTable};

declare_settings! {
    /// Address the HTTP and WebSocket listener binds.
    listen: SocketAddr {
        default: SocketAddr::from(([127, 0, 0, 1], 8080)),
        value: "ADDR",
        help: "Address to listen on",
    }
    /// Seconds between WebSocket pings; a connection silent for
    /// `2 * heartbeat + 5` seconds is closed with 4002.
    heartbeat: u64 {
        default: 25,
        value: "SECONDS",
        help: "Seconds between WebSocket pings; silence for 2*heartbeat+5 s closes with 4002",
        check: within(1..=3600, "must be between 1 and 3600 seconds"),
    }
    /// Largest incoming frame in bytes; larger frames close with 1009.
    max_message_bytes: usize {
        default: 65536,
        value: "BYTES",
        help: "Largest incoming frame in bytes; larger ones close with 1009",
        check: within(256..=64 * 1024 * 1024, "must be between 256 and 67108864 bytes"),
    }
    /// Messages kept per room for recovery and `history`.
    history_size: usize {
        default: 1000,
        value: "N",
        help: "Messages kept per room for recovery and history",
        check: within(0..=1_000_000, "must be at most 1000000 messages"),
    }
    /// Seconds a message stays in a room's history (and its `msgId` in the
    /// idempotency window).
    history_ttl: u64 {
        default: 600,
        value: "SECONDS",
        help: "Seconds a message stays in history and its msgId in the idempotency window",
        check: within(1..=7 * 24 * 3600, "must be between 1 second and 7 days"),
    }
    /// Outbound frames queued per connection before it is closed as a slow
    /// consumer (4000).
    queue_size: usize {
        default: 1024,
        value: "FRAMES",
        help: "Outbound frames queued per connection before a slow-consumer close (4000)",
        check: within(16..=1_000_000, "must be between 16 and 1000000 frames"),
    }
    /// Milliseconds a connection's writer waits after the first frame of a
    /// quiet spell, so that frames queued meanwhile share its write; 0
    /// writes at once. Trades latency (every frame, replies included, may
    /// wait this long) for CPU in busy rooms: one send per delivery is most
    /// of a server's CPU when each connection gets a message now and then.
    write_delay_ms: u64 {
        default: 0,
        value: "MS",
        help: "Milliseconds a writer waits after a quiet spell so later frames share its write (CPU for latency), 0 = off",
        check: within(0..=1000, "must be at most 1000 milliseconds"),
    }
    /// Rooms one connection may join (its personal room not counted).
    max_rooms_per_conn: usize {
        default: 100,
        value: "N",
        help: "Rooms one connection may join, its personal room not counted",
        check: within(1..=100_000, "must be between 1 and 100000"),
    }
    /// Browser origins allowed besides the request's own host. Exact origins
    /// (`https://app.example.com`), host patterns (`*.example.com`, any
    /// scheme) or `*`. Empty: the request's own host and loopback origins.
    allowed_origins: Vec<String> {
        default: Vec::new(),
        value: "ORIGINS",
        help: "Browser origins allowed besides the request's own host: exact origins, *.example.com patterns or * (comma-separated)",
        shown: "loopback origins",
        check: |origins, _| each(origins, |origin| {
            crate::http::origin::check_pattern(origin)
                .map_err(|message| format!("{origin:?}: {message}"))
        }),
    }
    /// Proxies (CIDR blocks or addresses) whose `Forwarded` or
    /// `X-Forwarded-For` header names the client: per-address limits, the
    /// API's loopback check and the logs then use the client's address.
    /// Empty: no proxy is trusted, every peer is the client (loopback
    /// included).
    trusted_proxies: Vec<String> {
        default: Vec::new(),
        value: "CIDRS",
        help: "Proxies whose Forwarded / X-Forwarded-For names the client: CIDR blocks or addresses (comma-separated)",
        shown: "none",
        check: |entries, _| each(entries, crate::http::forwarded::check_entry),
    }
    /// This node's name in `welcome` and logs. Empty: a random `n-xxxxxxxx`.
    node_id: String {
        default: String::new(),
        value: "NAME",
        help: "This node's name in welcome frames and logs",
        shown: "random n-xxxxxxxx",
        check: |id, _| {
            if id.len() > 64 || id.chars().any(|c| c.is_control() || c == ' ') {
                return Err(
                    "must be at most 64 characters, without spaces or control characters".into(),
                );
            }
            Ok(())
        },
    }
    /// `text` for people, `json` for log pipelines.
    log_format: LogFormat {
        default: LogFormat::Text,
        value: "FORMAT",
        help: "Log format",
    }
    /// Which log lines are written: a level (`info`) or `tracing` filter
    /// directives (`info,hubcast::conn=debug`); reloaded on SIGHUP.
    /// `RUST_LOG`, when set, wins at start.
    log_level: String {
        default: "info".into(),
        value: "FILTER",
        help: "Log level or filter directives (info, debug, info,hubcast::conn=debug); reloaded on SIGHUP",
        check: |level, _| tracing_subscriber::EnvFilter::try_new(level)
            .map(drop)
            .map_err(|e| format!("{level:?}: {e}; e.g. info or info,hubcast=debug")),
    }
    /// Seconds over which shutdown closes connections with 1001 (spread,
    /// not all at once) and waits for them before exiting anyway.
    shutdown_timeout: u64 {
        default: 5,
        value: "SECONDS",
        help: "Seconds over which shutdown spreads its 1001 closes and waits for connections",
        check: within(1..=600, "must be between 1 and 600 seconds"),
    }
    /// Seconds between SIGTERM and the first close: `/readyz` answers 503
    /// at once, everything else serves on, so that a load balancer stops
    /// sending new clients before any is closed.
    drain_delay: u64 {
        default: 0,
        value: "SECONDS",
        help: "Seconds after SIGTERM with /readyz at 503 before connections are closed (match the readiness probe period)",
        check: within(0..=3600, "must be at most 3600 seconds"),
    }
    /// Seconds a client has to send a request's headers after connecting
    /// (and to start the next request on a kept-alive connection); past
    /// it the socket is closed, so that sockets that send nothing hold
    /// nothing.
    header_timeout: u64 {
        default: 10,
        value: "SECONDS",
        help: "Seconds a client has to send its request headers (also the idle limit between kept-alive requests)",
        check: within(1..=600, "must be between 1 and 600 seconds"),
    }
    /// Frames per second one connection may send (token bucket refill);
    /// 0 turns the limit off. Excess frames get `rate_limited`.
    rate_limit_per_conn: u32 {
        default: 1000,
        value: "FRAMES",
        help: "Frames per second one connection may send, 0 = unlimited; excess frames get rate_limited",
    }
    /// Frames a connection may send in a burst. A connection refused more
    /// than this many times within 10 seconds is closed with 4003.
    rate_limit_burst: u32 {
        default: 2000,
        value: "FRAMES",
        help: "Frames one connection may send in a burst; refused more often than this in 10 s closes with 4003",
        check: |burst, c| {
            if c.rate_limit_per_conn > 0 && *burst == 0 {
                return Err("must be at least 1 when rate_limit_per_conn is set".into());
            }
            Ok(())
        },
    }
    /// Joins one connection may make per second (token bucket refill, in
    /// bursts of `max_rooms_per_conn`, so that a client joins all its rooms
    /// at once); 0 turns the limit off. A join or a leave is a presence
    /// event to every member of the room, so one client churning in a big
    /// room costs all of them; leaves are not counted (each follows a
    /// counted join). Excess joins get `rate_limited`; the connection stays.
    join_rate_per_conn: u32 {
        default: 10,
        value: "JOINS",
        help: "Joins per second one connection may make, in bursts of max_rooms_per_conn, 0 = unlimited; excess joins get rate_limited",
    }
    /// The engine: `memory` (one node), `redis` or `nats` (many nodes).
    broker: BrokerKind {
        default: BrokerKind::Memory,
        value: "ENGINE",
        help: "Engine: memory (one node), redis or nats (many nodes sharing one Redis or NATS JetStream)",
    }
    /// Redis server for `broker = "redis"`; with `redis_cluster`, a
    /// comma-separated list of seed nodes.
    redis_url: String {
        default: "redis://127.0.0.1:6379/0".into(),
        value: "URL",
        help: "Redis server for --broker redis",
        check: |url, c| redis_url(url, c.redis_cluster),
    }
    /// `redis_url` names a Redis Cluster: rooms spread over its masters by
    /// hash tag, with sharded pub/sub (Redis 7).
    redis_cluster: bool {
        default: false,
        value: "BOOL",
        help: "--redis-url names Redis Cluster seed nodes (comma-separated): sharded pub/sub, Redis 7",
    }
    /// Serve the chat page at `/` and the admin dashboard at `/admin` (the
    /// client library at `/client/` is always served).
    web: bool {
        default: true,
        value: "BOOL",
        help: "Serve the chat page at / and the admin dashboard at /admin",
    }
    /// Prefix of every Redis key and channel hubcast uses.
    redis_prefix: String {
        default: "hubcast".into(),
        value: "PREFIX",
        help: "Prefix of every Redis key and channel",
        check: |prefix, _| {
            if prefix.is_empty()
                || prefix.len() > 64
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
            {
                return Err("must be 1 to 64 characters of A-Z a-z 0-9 _ - . :".into());
            }
            Ok(())
        },
    }
    /// NATS servers for `broker = "nats"`: comma-separated `nats://` (or
    /// `tls://`) URLs of one server or of a cluster's servers.
    nats_url: String {
        default: "nats://127.0.0.1:4222".into(),
        value: "URLS",
        help: "NATS servers (with JetStream) for --broker nats, comma-separated",
        check: |url, _| nats_url(url),
    }
    /// Prefix of every NATS subject, stream and bucket hubcast uses.
    nats_prefix: String {
        default: "hubcast".into(),
        value: "PREFIX",
        help: "Prefix of every NATS subject, stream and key-value bucket",
        check: |prefix, _| {
            if prefix.is_empty()
                || prefix.len() > 32
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            {
                return Err("must be 1 to 32 characters of A-Z a-z 0-9 _ -".into());
            }
            Ok(())
        },
    }
    /// Where the NATS stream of rooms' history lives: `file` survives a
    /// NATS restart; with `memory` a restart loses every room's history
    /// and the rooms start new epochs (clients are told). Fixed when the
    /// stream is created: a node refuses a stream stored otherwise.
    nats_storage: NatsStorage {
        default: NatsStorage::File,
        value: "STORAGE",
        help: "Storage of the NATS stream of history: file (survives a NATS restart) or memory (lost then: new epochs)",
    }
    /// User name for NATS (with `nats_password`).
    nats_user: Option<String> {
        default: None,
        value: "USER",
        help: "User name for NATS (with --nats-password)",
        check: |user, c| match (user, &c.nats_password) {
            (Some(_), None) | (None, Some(_)) => {
                Err("nats_user and nats_password go together".into())
            }
            _ => Ok(()),
        },
    }
    /// Password for NATS (with `nats_user`).
    nats_password: Option<String> {
        default: None,
        value: "PASSWORD",
        help: "Password for NATS (with --nats-user)",
        secret: true,
    }
    /// Token for NATS token authentication.
    nats_token: Option<String> {
        default: None,
        value: "TOKEN",
        help: "Token for NATS token authentication",
        secret: true,
    }
    /// A NATS credentials file (`.creds`: user JWT and nkey seed).
    nats_creds_file: Option<PathBuf> {
        default: None,
        value: "FILE",
        help: "NATS credentials file (.creds: user JWT and nkey seed)",
    }
    /// An nkey seed (`SU…`) for NATS nkey authentication.
    nats_nkey: Option<String> {
        default: None,
        value: "SEED",
        help: "NATS nkey seed (SU...) for nkey authentication",
        secret: true,
    }
    /// PEM CA certificates to trust for NATS over TLS; setting it requires
    /// TLS.
    nats_tls_ca_file: Option<PathBuf> {
        default: None,
        value: "FILE",
        help: "PEM CA certificates trusted for NATS over TLS (requires TLS)",
    }
    /// Seconds a node's presence entries outlive it when it dies without
    /// cleaning up (Redis and NATS engines): other nodes then remove them
    /// and send the leave events.
    presence_lease: u64 {
        default: 30,
        value: "SECONDS",
        help: "Seconds a dead node's presence lingers before other nodes remove it (Redis and NATS engines)",
        check: within(1..=3600, "must be between 1 and 3600 seconds"),
    }
    /// Seconds a webhook batch is retried (backoff from 1 s doubling to
    /// 60 s, with jitter) before it is dropped, logged and counted.
    webhook_retry_for: u64 {
        default: 600,
        value: "SECONDS",
        help: "Seconds a webhook batch is retried (1 s doubling to 60 s) before it is dropped",
        check: within(1..=86400, "must be between 1 and 86400 seconds"),
    }
    /// Seconds a room must stay empty, or a user without a connection,
    /// before `room.vacated` / `user.offline` is sent; a return sooner
    /// sends neither, nor a second `room.occupied` / `user.online`.
    webhook_offline_delay: u64 {
        default: 5,
        value: "SECONDS",
        help: "Seconds a room stays empty / a user offline before room.vacated / user.offline webhooks",
        check: within(0..=3600, "must be between 0 and 3600 seconds"),
    }
    /// Shared secret for HS256 connection tokens.
    jwt_secret: Option<String> {
        default: None,
        value: "SECRET",
        help: "Shared secret for HS256 connection tokens (at least 16 bytes)",
        secret: true,
    }
    /// File holding the HS256 secret (instead of `jwt_secret`).
    jwt_secret_file: Option<PathBuf> {
        default: None,
        value: "FILE",
        help: "File holding the HS256 secret",
    }
    /// The HS256 secret before the last rotation, still accepted so that
    /// tokens signed with it stay valid while clients move to the new one.
    jwt_secret_previous: Option<String> {
        default: None,
        value: "SECRET",
        help: "Previous HS256 secret, still accepted while tokens move to jwt_secret (rotation)",
        secret: true,
    }
    /// PEM public key for RS256 or ES256 connection tokens.
    jwt_public_key: Option<PathBuf> {
        default: None,
        value: "FILE",
        help: "PEM public key for RS256 or ES256 connection tokens",
    }
    /// JWKS endpoint for RS256 or ES256 connection tokens, keys chosen by
    /// the token's `kid` (fetched at start and again for an unknown `kid`,
    /// at most once every 10 s).
    jwt_jwks_url: Option<String> {
        default: None,
        value: "URL",
        help: "JWKS endpoint (https:// or http://) for RS256 or ES256 connection tokens, keys chosen by kid",
        check: |url, _c| match url {
            Some(u) if !u.starts_with("http://") && !u.starts_with("https://") => {
                Err(format!("{u:?}: must be an https:// or http:// URL"))
            }
            _ => Ok(()),
        },
    }
    /// PEM file of CA certificates trusted for an https `jwt_jwks_url`,
    /// besides the system's (`SSL_CERT_FILE`, else Debian's
    /// /etc/ssl/certs/ca-certificates.crt): an identity provider behind a
    /// private CA.
    jwt_jwks_ca_file: Option<PathBuf> {
        default: None,
        value: "FILE",
        help: "PEM CA certificates trusted for an https jwt_jwks_url, besides the system's",
        check: |file, c| match (file, &c.jwt_jwks_url) {
            (Some(_), Some(u)) if u.starts_with("https://") => Ok(()),
            (Some(_), _) => Err("only with an https:// jwt_jwks_url".into()),
            _ => Ok(()),
        },
    }
    /// Whether connections without a token are allowed. Unset: only when
    /// listening on loopback.
    anonymous: Option<bool> {
        default: None,
        value: "BOOL",
        help: "Allow connections without a token",
        shown: "only when listening on loopback",
        check: |anonymous, c| {
            let has_key =
                c.jwt_secret.is_some() || c.jwt_secret_file.is_some() || c.jwt_public_key.is_some() || c.jwt_jwks_url.is_some();
            if !c.listen.ip().is_loopback() && !has_key && *anonymous != Some(true) {
                return Err(format!(
                    "refusing to listen on {} without authentication: set jwt_secret \
                     (--jwt-secret or HUBCAST_JWT_SECRET), jwt_secret_file or jwt_public_key \
                     to require tokens, or anonymous = true (--anonymous) to let anyone in",
                    c.listen
                ));
            }
            Ok(())
        },
    }
    /// Keys for `/api/*` (`Authorization: Bearer <key>`). Empty: the API
    /// answers loopback callers only.
    api_keys: Vec<String> {
        default: Vec::new(),
        flag: "api-key",
        value: "KEY",
        help: "Key for /api/* calls (Authorization: Bearer KEY); repeat the flag or comma-separate for several",
        shown: "none, API open to loopback callers only",
        secret: true,
        check: |keys, _| each(keys, |key| {
            if key.len() < 16 || key.len() > 256 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(
                    "each key must be 16 to 256 printable ASCII characters without spaces".into(),
                );
            }
            Ok(())
        }),
    }
    /// Members listed in one presence reply (`joined`, `presence`, the
    /// API); `total` tells how many there are in all.
    max_presence_members: usize {
        default: 1000,
        value: "N",
        help: "Members listed in one presence reply; the reply's total counts them all",
        check: within(1..=100_000, "must be between 1 and 100000"),
    }
    /// PEM certificate chain: serve wss:// and https:// directly.
    tls_cert: Option<PathBuf> {
        default: None,
        value: "FILE",
        help: "PEM certificate chain: serve wss:// and https:// directly (with --tls-key)",
        check: |cert, c| {
            if cert.is_none() && c.tls_key.is_some() {
                return Err("tls_key needs tls_cert too".into());
            }
            Ok(())
        },
    }
    /// PEM private key for `tls_cert`.
    tls_key: Option<PathBuf> {
        default: None,
        value: "FILE",
        help: "PEM private key for --tls-cert",
        check: |key, c| {
            if key.is_none() && c.tls_cert.is_some() {
                return Err("tls_cert needs tls_key too".into());
            }
            Ok(())
        },
    }
    /// OTLP/HTTP endpoint for trace export (`http://collector:4318/v1/traces`);
    /// needs a hubcast built with the `otlp` feature. None: no export.
    otlp_endpoint: Option<String> {
        default: None,
        value: "URL",
        help: "Export traces over OTLP/HTTP to this URL, e.g. http://127.0.0.1:4318/v1/traces (build with --features otlp)",
        check: |url, _| url.as_deref().map_or(Ok(()), otlp_endpoint),
    }
    /// WebSocket connections the node accepts in all; past it, 503.
    max_connections: u32 {
        default: 100_000,
        value: "N",
        help: "WebSocket connections accepted in all; past it, 503",
        check: at_least(1, "must be at least 1"),
    }
    /// Connections from one IP address, counted twice: TCP sockets from
    /// accept until they are gone, and real-time connections (WebSocket,
    /// SSE, long polls); past it, 429.
    max_connections_per_ip: u32 {
        default: 2_000,
        value: "N",
        help: "Connections from one IP address (TCP sockets from accept, and real-time connections); past it, 429",
        check: at_least(1, "must be at least 1"),
    }
    /// WebSocket connections one user may have open over every node (the
    /// engine's presence count); past it, 429 `too_many_connections`. 0:
    /// no cap.
    max_connections_per_user: u32 {
        default: 0,
        value: "N",
        help: "WebSocket connections one user may have open over every node, 0 = no cap; past it, 429",
    }
    /// WebSocket handshakes one IP address may make per second (bursts of
    /// twice that); past it, 429 with `Retry-After`. 0 turns it off.
    handshakes_per_ip_per_sec: u32 {
        default: 500,
        value: "N",
        help: "WebSocket handshakes per second from one IP address, 0 = unlimited; past it, 429",
    }
    file_only {
        /// `[[rooms]]` tables (PROTOCOL.md section 7): rules for the rooms
        /// their `match` pattern matches, the first match winning; other
        /// rooms follow the global settings.
        rooms: Vec<RoomTable> {
            default: Vec::new(),
            check: |_, config| crate::rules::Rules::from_config(config).map(drop),
        }
        /// `[hooks]` (PROTOCOL.md section 9): the application's backend,
        /// asked before a connect, join or publish, and for `rpc` frames.
        hooks: HooksTable {
            default: HooksTable::default(),
            check: super::hooks::check,
        }
        /// `[[webhooks]]` tables (PROTOCOL.md section 10): receivers told
        /// what happened (rooms occupied and vacated, members, users
        /// online and offline, messages), at least once.
        webhooks: Vec<WebhookTable> {
            default: Vec::new(),
            check: super::webhooks::check,
        }
    }
}

/// Checks each item of a list; the first bad one is the verdict.
fn each(items: &[String], check: impl Fn(&str) -> Verdict) -> Verdict {
    items.iter().try_for_each(|item| check(item))
}

/// One Redis URL, or with `redis_cluster` a comma-separated list of nodes.
fn nats_url(url: &str) -> Verdict {
    let ok = url.split(',').map(str::trim).all(|u| {
        ["nats://", "tls://"]
            .iter()
            .any(|scheme| u.len() > scheme.len() && u.starts_with(scheme))
    });
    if !ok {
        return Err("must be comma-separated nats:// (or tls://) URLs".into());
    }
    Ok(())
}

fn redis_url(url: &str, cluster: bool) -> Verdict {
    let urls: Vec<&str> = url.split(',').map(str::trim).collect();
    if cluster {
        if !urls
            .iter()
            .all(|u| u.starts_with("redis://") || u.starts_with("rediss://"))
        {
            return Err(
                "with redis_cluster, must be comma-separated redis:// (or rediss://) \
                 URLs of cluster nodes"
                    .into(),
            );
        }
    } else if urls.len() != 1
        || !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
    {
        return Err(
            "must be one redis:// (or rediss://, unix://) URL; several are for redis_cluster"
                .into(),
        );
    }
    Ok(())
}

/// An http(s) URL, and a build that can export to it.
fn otlp_endpoint(url: &str) -> Verdict {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(
            "must be an http:// or https:// URL, e.g. http://127.0.0.1:4318/v1/traces".into(),
        );
    }
    if !cfg!(feature = "otlp") {
        return Err("this hubcast was built without OpenTelemetry export; \
             build it with `cargo build --release --features otlp`, or unset otlp_endpoint"
            .into());
    }
    Ok(())
}

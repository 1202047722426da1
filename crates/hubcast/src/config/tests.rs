//! Loading and checking settings: layers, every flag and key, errors.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use clap::Parser;

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
fn jwt_jwks_url_is_checked() {
    let mut c = Config {
        jwt_jwks_url: Some("https://idp.example/jwks.json".into()),
        ..Config::default()
    };
    c.validate().unwrap();
    c.jwt_jwks_url = Some("ftp://idp.example/jwks.json".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("jwt_jwks_url") && e.contains("https://"), "{e}");
    c.jwt_jwks_url = Some("http://127.0.0.1:9/jwks.json".into());
    c.validate().unwrap();
    // A CA file is for an https endpoint only.
    c.jwt_jwks_ca_file = Some("/ca.pem".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("jwt_jwks_ca_file"), "{e}");
    c.jwt_jwks_ca_file = None;
    // One source of keys.
    c.jwt_secret = Some("0123456789abcdef0123".into());
    let e = crate::auth::Auth::from_config(&c)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("jwt_jwks_url"), "{e}");
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

/// Every setting set to a value other than its default, as
/// [`every_flag_reaches_its_field`] and [`every_key_reaches_its_field`]
/// give it (`otlp_endpoint` aside: without the `otlp` feature it fails
/// validation; `otlp_endpoint_is_checked` covers it). `rooms` has no flag:
/// only the file gives it.
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
        trusted_proxies: vec!["10.0.0.0/8".into(), "fd00::1".into()],
        node_id: "n1".into(),
        log_format: LogFormat::Json,
        log_level: "debug".into(),
        shutdown_timeout: 9,
        drain_delay: 4,
        header_timeout: 3,
        rate_limit_per_conn: 50,
        rate_limit_burst: 60,
        join_rate_per_conn: 16,
        broker: BrokerKind::Redis,
        redis_url: "redis://h:1,redis://h:2".into(),
        redis_cluster: true,
        web: false,
        redis_prefix: "pfx".into(),
        nats_url: "nats://n:1,tls://n:2".into(),
        nats_prefix: "npfx".into(),
        nats_storage: NatsStorage::Memory,
        nats_user: Some("nu".into()),
        nats_password: Some("np".into()),
        nats_token: Some("nt".into()),
        nats_creds_file: Some("/n.creds".into()),
        nats_nkey: Some("SUseed".into()),
        nats_tls_ca_file: Some("/nca".into()),
        presence_lease: 11,
        webhook_retry_for: 17,
        webhook_offline_delay: 18,
        jwt_secret: Some("0123456789abcdef0123".into()),
        jwt_secret_file: Some("/s".into()),
        jwt_secret_previous: Some("fedcba98765432100123".into()),
        jwt_public_key: Some("/k".into()),
        jwt_jwks_url: None,
        jwt_jwks_ca_file: None,
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
        max_connections_per_user: 16,
        handshakes_per_ip_per_sec: 15,
        rooms: vec![RoomTable {
            pattern: "news.**".into(),
            publish: crate::rules::Publishers::Server,
            join: crate::rules::Joiners::Open,
            history_size: Some(50),
            history_ttl: Some(3600),
            presence: false,
        }],
        hooks: HooksTable::default(),
        webhooks: Vec::new(),
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
        "--trusted-proxies=10.0.0.0/8,fd00::1",
        "--node-id=n1",
        "--log-format=json",
        "--log-level=debug",
        "--shutdown-timeout=9",
        "--drain-delay=4",
        "--header-timeout=3",
        "--rate-limit-per-conn=50",
        "--rate-limit-burst=60",
        "--join-rate-per-conn=16",
        "--broker=redis",
        "--redis-url=redis://h:1,redis://h:2",
        "--redis-cluster",
        "--web=false",
        "--redis-prefix=pfx",
        "--nats-url=nats://n:1,tls://n:2",
        "--nats-prefix=npfx",
        "--nats-storage=memory",
        "--nats-user=nu",
        "--nats-password=np",
        "--nats-token=nt",
        "--nats-creds-file=/n.creds",
        "--nats-nkey=SUseed",
        "--nats-tls-ca-file=/nca",
        "--presence-lease=11",
        "--webhook-retry-for=17",
        "--webhook-offline-delay=18",
        "--jwt-secret=0123456789abcdef0123",
        "--jwt-secret-file=/s",
        "--jwt-secret-previous=fedcba98765432100123",
        "--jwt-public-key=/k",
        "--anonymous",
        "--api-key=aaaaaaaaaaaaaaaa",
        "--api-key=bbbbbbbbbbbbbbbb,cccccccccccccccc",
        "--max-presence-members=12",
        "--tls-cert=/c",
        "--tls-key=/k2",
        "--max-connections=13",
        "--max-connections-per-ip=14",
        "--max-connections-per-user=16",
        "--handshakes-per-ip-per-sec=15",
    ]))
    .unwrap();
    assert_eq!(
        cfg,
        Config {
            rooms: Vec::new(),
            ..all_changed()
        }
    );
    // A bool flag takes an explicit value too.
    let cfg = Config::load(&args(&["--web", "true", "--anonymous=false"])).unwrap();
    assert!(cfg.web);
    assert_eq!(cfg.anonymous, Some(false));
    let err = Config::load(&args(&["--otlp-endpoint", "x"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("otlp_endpoint"), "{err}");
}

/// Writes `contents` to `name` in a scratch directory of this test's own
/// (`tag` keeps the tests apart when they run at once); returns both.
fn config_file(tag: &str, name: &str, contents: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("hubcast-cfg-{tag}{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, contents).unwrap();
    (dir, file)
}

#[test]
fn every_key_reaches_its_field() {
    let (dir, file) = config_file(
        "all-",
        "all.toml",
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
trusted_proxies = ["10.0.0.0/8", "fd00::1"]
node_id = "n1"
log_format = "json"
log_level = "debug"
shutdown_timeout = 9
drain_delay = 4
header_timeout = 3
rate_limit_per_conn = 50
rate_limit_burst = 60
join_rate_per_conn = 16
broker = "redis"
redis_url = "redis://h:1,redis://h:2"
redis_cluster = true
web = false
redis_prefix = "pfx"
nats_url = "nats://n:1,tls://n:2"
nats_prefix = "npfx"
nats_storage = "memory"
nats_user = "nu"
nats_password = "np"
nats_token = "nt"
nats_creds_file = "/n.creds"
nats_nkey = "SUseed"
nats_tls_ca_file = "/nca"
presence_lease = 11
webhook_retry_for = 17
webhook_offline_delay = 18
jwt_secret = "0123456789abcdef0123"
jwt_secret_file = "/s"
jwt_secret_previous = "fedcba98765432100123"
jwt_public_key = "/k"
anonymous = true
api_keys = ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"]
max_presence_members = 12
tls_cert = "/c"
tls_key = "/k2"
max_connections = 13
max_connections_per_ip = 14
max_connections_per_user = 16
handshakes_per_ip_per_sec = 15

[[rooms]]
match = "news.**"
publish = "server"
join = "open"
history_size = 50
history_ttl = 3600
presence = false
"#,
    );
    let cfg = Config::load(&args(&["--config", file.to_str().unwrap()])).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(cfg, all_changed());
}

#[test]
fn file_then_flags_win() {
    let (dir, file) = config_file(
        "",
        "a.toml",
        "heartbeat = 7\nmax_message_bytes = 4096\nallowed_origins = [\"https://a.example\"]\n",
    );
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
    let (dir, file) = config_file("bad-", "b.toml", "heartbeat = \"soon\"\n");
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
    let err = Config::load(&args(&["--trusted-proxies", "10.0.0.0/8,10.1.2.3/16"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("trusted_proxies") && err.contains("10.1.2.3/16"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The error `Config::load` gives for a file holding `toml`.
fn load_error(tag: &str, toml: &str) -> String {
    let (dir, file) = config_file(tag, "rooms.toml", toml);
    let err = Config::load(&args(&["--config", file.to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).ok();
    err
}

#[test]
fn bad_rooms_tables_name_their_key() {
    let first = "[[rooms]]\nmatch = \"a.*\"\n\n";
    let err = load_error(
        "rooms-key-",
        &format!("{first}[[rooms]]\nmatch = \"b\"\nhistory = 5\n"),
    );
    assert!(
        err.contains("rooms[2].history") && err.contains("unknown key"),
        "{err}"
    );
    let err = load_error(
        "rooms-pat-",
        &format!("{first}[[rooms]]\nmatch = \"b.**.c\"\n"),
    );
    assert!(err.contains("rooms[2].match"), "{err}");
    let err = load_error(
        "rooms-pub-",
        &format!("{first}[[rooms]]\nmatch = \"b\"\npublish = \"anyone\"\n"),
    );
    assert!(
        err.contains("rooms[2].publish") && err.contains("anyone"),
        "{err}"
    );
    let err = load_error(
        "rooms-size-",
        "[[rooms]]\nmatch = \"b\"\nhistory_size = \"many\"\n",
    );
    assert!(err.contains("rooms[1].history_size"), "{err}");
    let err = load_error("rooms-missing-", "[[rooms]]\npublish = \"server\"\n");
    assert!(err.contains("rooms[1].match"), "{err}");
    let err = load_error(
        "rooms-hook-",
        &format!("{first}[[rooms]]\nmatch = \"b\"\npublish = \"hook\"\n"),
    );
    assert!(
        err.contains(
            "rooms[2].publish: publish = \"hook\" needs backend hooks: set url and secret in [hooks]"
        ),
        "{err}"
    );
    let err = load_error("rooms-join-", "[[rooms]]\nmatch = \"b\"\njoin = \"hook\"\n");
    assert!(
        err.contains("rooms[1].join: join = \"hook\" needs backend hooks"),
        "{err}"
    );
}

#[test]
fn check_all_names_every_bad_key_not_only_the_first() {
    let (dir, file) = config_file(
        "three-",
        "bad.toml",
        "heartbeat = \"soon\"\nno_such_key = 1\nmax_rooms_per_conn = 0\n\
         [[rooms]]\nmatch = \"a.**\"\npublish = \"nobody\"\n",
    );
    let problems = check_all(Some(&file), &ServeArgs::default()).unwrap_err();
    let _ = std::fs::remove_dir_all(dir);
    let keys: Vec<&str> = problems.iter().filter_map(ConfigError::key).collect();
    assert_eq!(
        keys,
        [
            "no_such_key",
            "heartbeat",
            "rooms[1].publish",
            "max_rooms_per_conn"
        ],
        "{problems:?}"
    );
    // A flag (or variable) over a bad file value does not hide the others.
    let (dir, file) = config_file("flag-", "ok.toml", "heartbeat = 0\nqueue_size = 1\n");
    let problems = check_all(Some(&file), &args(&["--heartbeat=5"])).unwrap_err();
    let _ = std::fs::remove_dir_all(dir);
    let keys: Vec<&str> = problems.iter().filter_map(ConfigError::key).collect();
    assert_eq!(keys, ["queue_size"], "{problems:?}");
}

#[test]
fn hooks_table_errors_name_the_key() {
    let url = "[hooks]\nurl = \"http://127.0.0.1:3000/h\"\n";
    for (name, text, says) in [
        (
            "hooks-nosecret-",
            url.to_string(),
            "hooks.secret: is required",
        ),
        (
            "hooks-short-",
            format!("{url}secret = \"short\"\n"),
            "hooks.secret: must be at least 16 characters",
        ),
        (
            "hooks-https-",
            "[hooks]\nurl = \"https://x\"\nsecret = \"0123456789abcdef\"\n".to_string(),
            "hooks.url",
        ),
        (
            "hooks-timeout-",
            format!("{url}secret = \"0123456789abcdef\"\ntimeout_ms = 0\n"),
            "hooks.timeout_ms: must be between 1 and 60000",
        ),
        (
            "hooks-cap-",
            format!("{url}secret = \"0123456789abcdef\"\nmax_in_flight = 0\n"),
            "hooks.max_in_flight",
        ),
        (
            "hooks-nourl-",
            "[hooks]\nrpc = true\n".to_string(),
            "hooks.rpc: rpc = true needs hooks.url",
        ),
        (
            "hooks-unknown-",
            format!("{url}secret = \"0123456789abcdef\"\ntimeuot_ms = 5\n"),
            "timeuot_ms",
        ),
    ] {
        let err = load_error(name, &text);
        assert!(err.contains(says), "{name}: {err}");
    }
    let ok = format!(
        "{url}secret = \"0123456789abcdef\"\nconnect = true\n\n[[rooms]]\nmatch = \"b\"\njoin = \"hook\"\n"
    );
    let (dir, file) = config_file("hooks-ok-", "hooks.toml", &ok);
    let cfg = Config::load(&args(&["--config", file.to_str().unwrap()]));
    std::fs::remove_dir_all(&dir).ok();
    let cfg = cfg.unwrap();
    assert!(cfg.hooks.connect);
    assert_eq!(cfg.hooks.timeout_ms, 1000);
}

#[test]
fn webhook_table_errors_name_the_key() {
    let head = "[[webhooks]]\nurl = \"http://127.0.0.1:3000/e\"\nsecret = \"0123456789abcdef\"\n";
    for (name, text, says) in [
        (
            "wh-nosecret-",
            "[[webhooks]]\nurl = \"http://127.0.0.1:3000/e\"\n".to_string(),
            "webhooks[1].secret: is required",
        ),
        (
            "wh-short-",
            "[[webhooks]]\nurl = \"http://x/e\"\nsecret = \"short\"\n".to_string(),
            "webhooks[1].secret: must be at least 16 characters",
        ),
        (
            "wh-url-",
            "[[webhooks]]\nurl = \"ftp://x\"\nsecret = \"0123456789abcdef\"\n".to_string(),
            "webhooks[1].url: \"ftp://x\": must be an http:// URL",
        ),
        (
            "wh-event-",
            format!(
                "{head}\n[[webhooks]]\nurl = \"http://x/e\"\nsecret = \"0123456789abcdef\"\nevents = [\"room.occupied\", \"user.gone\"]\n"
            ),
            "webhooks[2].events: \"user.gone\" is not an event",
        ),
        (
            "wh-noevent-",
            format!("{head}events = []\n"),
            "webhooks[1].events: must name at least one",
        ),
        (
            "wh-rooms-",
            format!("{head}rooms = \"a.**.b\"\n"),
            "webhooks[1].rooms",
        ),
        (
            "wh-unknown-",
            format!("{head}secert = \"x\"\n"),
            "webhooks[1].secert: unknown key",
        ),
        (
            "wh-delay-",
            format!("webhook_offline_delay = 7200\n{head}"),
            "webhook_offline_delay: must be between 0 and 3600",
        ),
    ] {
        let err = load_error(name, &text);
        assert!(err.contains(says), "{name}: {err}");
    }
    let (dir, file) = config_file("wh-ok-", "wh.toml", head);
    let cfg = Config::load(&args(&["--config", file.to_str().unwrap()]));
    std::fs::remove_dir_all(&dir).ok();
    let cfg = cfg.unwrap();
    assert_eq!(cfg.webhooks[0].events.len(), 7, "every event by default");
    assert_eq!(cfg.webhooks[0].rooms, "**");
    assert_eq!((cfg.webhook_retry_for, cfg.webhook_offline_delay), (600, 5));
}

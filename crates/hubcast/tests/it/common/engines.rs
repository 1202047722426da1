//! The engines the tests run on: the shared Redis and NATS (key
//! prefixes and subjects of each test's own, cleaned up), a private Redis a
//! test may kill, and `Engine` for the table-driven tests.

use super::*;

/// The engines every table-driven test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Memory,
    Redis,
    Nats,
}

/// NATS (JetStream on) for tests: `HUBCAST_TEST_NATS`, default the
/// machine's server.
pub(crate) fn nats_url() -> String {
    std::env::var("HUBCAST_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A NATS-engine config on the test NATS with prefix `prefix`.
pub(crate) fn nats_config(prefix: &str, node: &str) -> Config {
    Config {
        node_id: node.into(),
        broker: hubcast::config::BrokerKind::Nats,
        nats_url: nats_url(),
        nats_prefix: prefix.into(),
        ..Config::default()
    }
}

/// A fresh NATS prefix (stream and bucket names take no dots).
pub(crate) fn unique_nats_prefix() -> String {
    format!("hct_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Deletes the streams and buckets of a NATS prefix (rooms, state, nodes,
/// and the webhooks' when there are any). From a thread of its own: it
/// runs in `Drop`, maybe inside a runtime.
pub(crate) fn clean_nats(prefix: &str) {
    let prefix = prefix.to_string();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(client) = async_nats::connect(nats_url()).await else {
                return;
            };
            let js = async_nats::jetstream::new(client.clone());
            for name in [
                format!("{prefix}_ROOMS"),
                format!("KV_{prefix}_state"),
                format!("KV_{prefix}_nodes"),
                format!("{prefix}_WEBHOOKS"),
                format!("KV_{prefix}_webhooks"),
            ] {
                let _ = js.delete_stream(name).await;
            }
            let _ = client.flush().await;
        });
    })
    .join();
}

/// Redis for tests: `HUBCAST_TEST_REDIS_URL`, default the machine's server.
pub(crate) fn redis_url() -> String {
    std::env::var("HUBCAST_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A Unix socket path for a test's own Redis (tests that kill Redis, or
/// every pub/sub client of it, must not do it to the shared one).
pub(crate) fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "hubcast-redis-{}.sock",
        uuid::Uuid::new_v4().simple()
    ))
}

pub(crate) fn redis_socket_url(socket: &Path) -> String {
    format!("redis+unix://{}", socket.display())
}

/// A Redis server listening on `socket` only (`--port 0`: no TCP).
pub(crate) fn start_redis(socket: &Path) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--unixsocket",
            socket.to_str().unwrap(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    for _ in 0..100 {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A Redis-engine config on `url` with a fresh key prefix.
pub(crate) fn redis_config(url: String, node: &str) -> Config {
    Config {
        node_id: node.into(),
        broker: hubcast::config::BrokerKind::Redis,
        redis_url: url,
        redis_prefix: unique_prefix(),
        ..Config::default()
    }
}

/// A private Redis that is resumed, killed and removed however the test
/// ends: a panicking test must not leave a stopped redis-server behind.
pub(crate) struct OwnRedis {
    child: Child,
    socket: PathBuf,
}

impl OwnRedis {
    pub(crate) fn start() -> OwnRedis {
        let socket = socket_path();
        let child = start_redis(&socket);
        OwnRedis { child, socket }
    }

    pub(crate) fn url(&self) -> String {
        redis_socket_url(&self.socket)
    }

    fn signal(&self, sig: &str) {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// SIGSTOP: connections stay open, commands are accepted by the
    /// kernel, nothing is answered.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    pub(crate) fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// Kills it (if it runs) and starts it again, empty, on the same
    /// socket: Redis lost everything.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.child = start_redis(&self.socket);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        // A stopped process only dies of SIGKILL, but resume it anyway so
        // that nothing is left stopped if the kill fails.
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        self.kill();
        std::fs::remove_file(&self.socket).ok();
    }
}

/// Kills every pub/sub connection of the Redis server at `url` (`CLIENT
/// KILL TYPE pubsub`); returns how many there were.
pub(crate) async fn kill_pubsub(url: &str) -> i64 {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// A key prefix no other test uses.
pub(crate) fn unique_prefix() -> String {
    format!("hubcast-test-{}", uuid::Uuid::new_v4().simple())
}

/// Deletes every key under `prefix`.
pub(crate) fn clean_redis(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

//! Test harness: a real hubcast server on 127.0.0.1:0 and a real WebSocket
//! client (tokio-tungstenite), talking over real sockets.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
#![allow(dead_code)]

pub(crate) mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hubcast::config::Config;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for an expected frame before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

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

/// Deletes the stream and buckets of a NATS prefix. From a thread of its
/// own: it runs in `Drop`, maybe inside a runtime.
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

/// A TCP port free on 127.0.0.1 right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `http://127.0.0.1:{port}{path}` answers 200 (a `hubcast
/// serve` child coming up); panics after 10 s.
pub(crate) async fn wait_for(port: u16, path: &str) {
    for _ in 0..200 {
        if reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing answered 200 on 127.0.0.1:{port}{path}");
}

/// Sends SIGTERM to a child process.
pub(crate) fn send_term(child: &std::process::Child) {
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits for a child to exit; returns its status and what it wrote to
/// its (piped) stderr, all of it also when [`listening_port`] took the pipe.
pub(crate) async fn wait_stderr(
    mut child: std::process::Child,
) -> (std::process::ExitStatus, String) {
    let reader = child.stderr.is_none().then(|| {
        let mut readers = STDERR_READERS.lock().unwrap();
        let at = readers
            .iter()
            .rposition(|(pid, _)| *pid == child.id())
            .expect("the child's stderr is piped");
        readers.remove(at).1
    });
    tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let err = match reader {
            Some(reader) => reader.join().unwrap(),
            None => {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                err
            }
        };
        (status, err)
    })
    .await
    .unwrap()
}

/// The threads reading the stderr of children [`listening_port`] took,
/// by process id (the newest last: ids are reused).
static STDERR_READERS: std::sync::Mutex<Vec<(u32, std::thread::JoinHandle<String>)>> =
    std::sync::Mutex::new(Vec::new());

/// The port a `hubcast serve --listen 127.0.0.1:0` child bound, read from
/// its log line `hubcast listening on http://ADDR ...` (text or JSON) on
/// its piped stderr; a thread keeps reading the rest, which
/// [`wait_stderr`] returns whole. No port is picked before the child binds
/// it, so no other process can take it meanwhile.
pub(crate) async fn listening_port(child: &mut std::process::Child) -> u16 {
    let stderr = child.stderr.take().expect("the child's stderr is piped");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        let mut all = String::new();
        let mut stderr = std::io::BufReader::new(stderr);
        let mut line = Vec::new();
        while stderr.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let text = String::from_utf8_lossy(&line);
            if let Some(port) = logged_port(&text)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port);
            }
            all.push_str(&text);
            line.clear();
        }
        all
    });
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(port)) => {
            STDERR_READERS.lock().unwrap().push((child.id(), reader));
            port
        }
        // The child's stderr ended (it exited) before the line.
        Ok(Err(_)) => panic!(
            "the child logged no listening address:\n{}",
            reader.join().unwrap()
        ),
        Err(_) => panic!("the child logged no listening address within {WAIT:?}"),
    }
}

/// The port in a `hubcast listening on http://127.0.0.1:PORT (...)` line.
fn logged_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let rest = &rest[rest.find("://")? + 3..];
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '/')
        .collect();
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}

/// Runs the calling test again alone in a process of its own (this test
/// binary, `--exact test`), for a test that reads process-wide state such
/// as the metrics recorder, which every server of this process shares.
/// Returns `true` in the calling process once that run passed (the caller
/// then returns), `false` in the process of its own (the caller goes on
/// with its body). `test` is the test's path, e.g. `metrics::name`.
pub(crate) fn in_own_process(test: &str) -> bool {
    const VAR: &str = "HUBCAST_TEST_OWN_PROCESS";
    if std::env::var(VAR).is_ok_and(|t| t == test) {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1"])
        .env(VAR, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} in its own process:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
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

/// Runs a test body once per engine: `both_engines! { #[tokio::test] async
/// fn name(engine) { ... } }` makes `name::memory`, `name::redis` and
/// `name::nats`.
#[macro_export]
macro_rules! both_engines {
    ($(#[$attr:meta])* async fn $name:ident($engine:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($engine: $crate::common::Engine) $body
            $(#[$attr])*
            async fn memory() {
                body($crate::common::Engine::Memory).await
            }
            $(#[$attr])*
            async fn redis() {
                body($crate::common::Engine::Redis).await
            }
            $(#[$attr])*
            async fn nats() {
                body($crate::common::Engine::Nats).await
            }
        }
    };
}

/// A server running in this test's runtime.
pub(crate) struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// The Redis key prefix to clean up, for the Redis engine.
    redis_prefix: Option<String>,
    /// The NATS prefix to clean up, for the NATS engine.
    nats_prefix: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(prefix) = self.redis_prefix.take() {
            clean_redis(&prefix);
        }
        if let Some(prefix) = self.nats_prefix.take() {
            clean_nats(&prefix);
        }
    }
}

impl Server {
    /// Starts a memory-engine server with default settings changed by `f`.
    pub(crate) async fn start(f: impl FnOnce(&mut Config)) -> Server {
        Server::start_on(Engine::Memory, f).await
    }

    /// Starts a server on `engine` with default settings changed by `f`.
    pub(crate) async fn start_on(engine: Engine, f: impl FnOnce(&mut Config)) -> Server {
        let mut config = Config::default();
        config.node_id = "test-node".into();
        let redis_prefix = (engine == Engine::Redis).then(unique_prefix);
        if let Some(prefix) = &redis_prefix {
            config.broker = hubcast::config::BrokerKind::Redis;
            config.redis_url = redis_url();
            config.redis_prefix = prefix.clone();
        }
        let nats_prefix = (engine == Engine::Nats).then(unique_nats_prefix);
        if let Some(prefix) = &nats_prefix {
            config.broker = hubcast::config::BrokerKind::Nats;
            config.nats_url = nats_url();
            config.nats_prefix = prefix.clone();
        }
        f(&mut config);
        let mut server = Server::with_config(config, redis_prefix).await;
        server.nats_prefix = nats_prefix;
        server
    }

    /// A NATS-engine node on `prefix`, which is cleaned up when it is
    /// dropped when `owner`.
    pub(crate) async fn nats_node(prefix: &str, node: &str, owner: bool) -> Server {
        let mut server = Server::with_config(nats_config(prefix, node), None).await;
        if owner {
            server.nats_prefix = Some(prefix.to_string());
        }
        server
    }

    /// The NATS prefix of a NATS-engine server (for a second node).
    pub(crate) fn nats_prefix(&self) -> Option<String> {
        self.nats_prefix.clone()
    }

    /// Starts a server with exactly `config`; `redis_prefix` is cleaned up
    /// when it is dropped.
    pub(crate) async fn with_config(config: Config, redis_prefix: Option<String>) -> Server {
        config.validate().expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = Some(tokio::spawn(hubcast::run(
            config,
            listener,
            shutdown.clone(),
        )));
        Server {
            addr,
            shutdown,
            handle,
            redis_prefix,
            nats_prefix: None,
        }
    }

    /// Starts a memory-engine server (settings changed by `f`) that applies
    /// each config sent on the returned sender as a SIGHUP's reload would.
    pub(crate) async fn reloadable(
        f: impl FnOnce(&mut Config),
    ) -> (Server, tokio::sync::watch::Sender<Config>) {
        let mut config = Config::default();
        config.node_id = "test-node".into();
        f(&mut config);
        config.validate().expect("test config is valid");
        let (reload, reloads) = tokio::sync::watch::channel(config.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = Some(tokio::spawn(hubcast::run_reloadable(
            config,
            listener,
            shutdown.clone(),
            reloads,
        )));
        let server = Server {
            addr,
            shutdown,
            handle,
            redis_prefix: None,
            nats_prefix: None,
        };
        (server, reload)
    }

    pub(crate) async fn default() -> Server {
        Server::start(|_| {}).await
    }

    /// The Redis key prefix of a Redis-engine server (for a second node).
    pub(crate) fn redis_prefix(&self) -> Option<String> {
        self.redis_prefix.clone()
    }

    pub(crate) async fn on(engine: Engine) -> Server {
        Server::start_on(engine, |_| {}).await
    }

    /// `POST` of the JSON `body` to the API at `path`; returns the reply.
    pub(crate) async fn api_post(&self, path: &str, body: &Value) -> Value {
        reqwest::Client::new()
            .post(self.http(path))
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /api/publish` of `data` as event `e`; returns the reply.
    pub(crate) async fn api_publish(&self, room: &str, data: Value) -> Value {
        self.api_post(
            "/api/publish",
            &json!({"room":room,"event":"e","data":data}),
        )
        .await
    }

    /// A barrier for "`c` receives nothing more": publishes a marker into
    /// `room` (which `c` is in) with `POST /api/publish`, and asserts it is
    /// `c`'s very next frame. A frame that should not exist, sent for
    /// anything done before, would come first: one room's messages keep
    /// their order, and the marker is published after.
    pub(crate) async fn barrier(&self, c: &mut Client, room: &str) {
        let marker = json!(format!("barrier-{}", uuid::Uuid::new_v4().simple()));
        let ack = self.api_publish(room, marker.clone()).await;
        assert!(ack["offset"].is_u64(), "the marker is published: {ack}");
        c.expect_marker(room, &marker).await;
    }

    /// [`Server::barrier`] through `c`'s personal room (`POST /api/send`),
    /// for a client that is in no other room, or where a marker in the
    /// room would change the offsets the test checks next.
    pub(crate) async fn barrier_personal(&self, c: &mut Client) {
        let marker = json!(format!("barrier-{}", uuid::Uuid::new_v4().simple()));
        let ack = self
            .api_post(
                "/api/send",
                &json!({"to":c.user(),"event":"e","data":marker}),
            )
            .await;
        assert!(ack["offset"].is_u64(), "the marker is sent: {ack}");
        c.expect_marker(&format!("@{}", c.user()), &marker).await;
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub(crate) fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects a client (reads its `welcome`).
    pub(crate) async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// Connects with a display name.
    pub(crate) async fn named(&self, name: &str) -> Client {
        Client::connect(&format!("{}?name={name}", self.ws_url())).await
    }

    /// Fires shutdown and waits for `run` to return.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("server stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

/// A WebSocket client speaking the hubcast protocol.
pub(crate) struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
    next_id: u64,
}

impl Client {
    pub(crate) async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("handshake succeeds");
        let mut c = Client {
            ws,
            welcome: Value::Null,
            next_id: 1,
        };
        let welcome = c.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "first frame is welcome: {welcome}"
        );
        c.welcome = welcome;
        c
    }

    /// Connects with a custom request (headers), returning the raw stream.
    pub(crate) async fn connect_request(
        req: impl IntoClientRequest + Unpin,
    ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tungstenite::Error> {
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }

    /// Connects with a custom request (headers) and reads its `welcome`.
    pub(crate) async fn connect_with(
        req: impl IntoClientRequest + Unpin,
    ) -> Result<Client, tungstenite::Error> {
        let ws = Client::connect_request(req).await?;
        let mut c = Client {
            ws,
            welcome: Value::Null,
            next_id: 1,
        };
        c.welcome = c.expect("welcome").await;
        Ok(c)
    }

    pub(crate) fn user(&self) -> String {
        self.welcome["user"].as_str().unwrap().to_string()
    }

    pub(crate) async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub(crate) async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s.to_string())).await.unwrap();
    }

    /// Next text frame as JSON (pings and pongs skipped).
    pub(crate) async fn recv(&mut self) -> Value {
        recv_json(&mut self.ws).await
    }

    /// Next frame, which must be of type `ty`.
    pub(crate) async fn expect(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "expected a {ty} frame, got {v}");
        v
    }

    /// Sends `frame` with a fresh id and returns the reply carrying it;
    /// frames without that id arriving meanwhile are returned too.
    pub(crate) async fn request(&mut self, mut frame: Value) -> (Value, Vec<Value>) {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.send(frame).await;
        let mut others = Vec::new();
        loop {
            let v = self.recv().await;
            if v["id"] == json!(id) {
                return (v, others);
            }
            others.push(v);
        }
    }

    /// `request`, checking no other frame came first.
    pub(crate) async fn call(&mut self, frame: Value) -> Value {
        let (reply, others) = self.request(frame).await;
        assert!(
            others.is_empty(),
            "unexpected frames before the reply: {others:?}"
        );
        reply
    }

    /// Joins a room and consumes the presence event of its own arrival
    /// (sent for a user's first connection in a room), returning `joined`.
    pub(crate) async fn join(&mut self, room: &str) -> Value {
        let v = self.join_quiet(room).await;
        if !room.starts_with('@') {
            let ev = self.expect("presence").await;
            assert_eq!(ev["action"], "join", "{ev}");
            assert_eq!(ev["user"], self.user(), "{ev}");
        }
        v
    }

    /// Joins a room and returns `joined`, consuming nothing else.
    pub(crate) async fn join_quiet(&mut self, room: &str) -> Value {
        let v = self.call(json!({"type":"join","room":room})).await;
        assert_eq!(v["type"], "joined", "{v}");
        v
    }

    pub(crate) async fn publish(&mut self, room: &str, data: Value) -> Value {
        let v = self
            .call(json!({"type":"publish","room":room,"event":"test","data":data}))
            .await;
        assert_eq!(v["type"], "ack", "{v}");
        v
    }

    /// Reads messages of `room` until `count` arrived (other frames are
    /// skipped); returns them.
    pub(crate) async fn messages(&mut self, room: &str, count: usize) -> Vec<Value> {
        let mut got = Vec::new();
        while got.len() < count {
            let v = self.recv().await;
            if v["type"] == "message" && v["room"] == room {
                got.push(v);
            }
        }
        got
    }

    /// Asserts that the next text frame is the message `marker` in `room`
    /// (a barrier: nothing arrived before it).
    pub(crate) async fn expect_marker(&mut self, room: &str, marker: &Value) {
        let v = self.recv().await;
        assert!(
            v["type"] == "message" && v["room"] == room && v["data"] == *marker,
            "expected the marker {marker} in {room} as the next frame, got {v}"
        );
    }

    /// Reads until the server closes; returns the close code and reason and
    /// the text frames read before it.
    pub(crate) async fn until_close(&mut self) -> (Option<u16>, String, Vec<Value>) {
        let mut frames = Vec::new();
        let res = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).unwrap()),
                    Some(Ok(Message::Close(f))) => {
                        return close_parts(f);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return (None, String::new()),
                }
            }
        })
        .await
        .expect("server closes in time");
        (res.0, res.1, frames)
    }

    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The next text frame of any WebSocket stream (plain, TLS) as JSON, pings
/// and pongs skipped; panics on a close, a read error, or after [`WAIT`].
pub(crate) async fn recv_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(WAIT, next_json(ws)).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("connection closed while waiting for a frame"),
        Err(_) => panic!("no frame within {WAIT:?}"),
    }
}

/// The next text frame as JSON; None when the stream ended.
async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Option<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => {
                return Some(serde_json::from_str(&t).expect("server frames are JSON"));
            }
            Ok(Message::Close(f)) => panic!("unexpected close: {f:?}"),
            Ok(_) => continue,
            Err(e) => panic!("read error: {e}"),
        }
    }
}

fn close_parts(f: Option<CloseFrame>) -> (Option<u16>, String) {
    match f {
        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
        None => (None, String::new()),
    }
}

/// Recovery on another node: a client on `a` reads `seen` messages of
/// `room` and leaves, `missed` more are published, and a client joining on
/// `b` with that `since` and `epoch` gets exactly the missed ones. Returns
/// the publisher (on `a`) and that client.
pub(crate) async fn recover_on_another_node(
    a: &Server,
    b: &Server,
    room: &str,
    seen: u64,
    missed: u64,
) -> (Client, Client) {
    let mut p = a.client().await;
    let mut c = a.client().await;
    let j = c.join_quiet(room).await;
    let epoch = j["epoch"].clone();
    for i in 1..=seen {
        p.publish(room, json!(i)).await;
    }
    let got = c.messages(room, seen as usize).await;
    let last = got.last().unwrap()["offset"].as_u64().unwrap();
    c.close().await;
    for i in seen + 1..=seen + missed {
        p.publish(room, json!(i)).await;
    }
    let mut c2 = b.client().await;
    let (j, _) = c2
        .request(json!({"type":"join","room":room,"since":last,"epoch":epoch}))
        .await;
    assert_eq!(j["recovered"], true, "{room}: {j}");
    let got = c2.messages(room, missed as usize).await;
    assert_eq!(
        offsets(&got),
        (seen + 1..=seen + missed).collect::<Vec<u64>>(),
        "{room}"
    );
    (p, c2)
}

/// The offsets of `message` frames, in order.
pub(crate) fn offsets(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

/// The offsets of a reply's `messages` (history, poll), in order.
pub(crate) fn reply_offsets(reply: &Value) -> Vec<u64> {
    offsets(reply["messages"].as_array().unwrap())
}

/// Polls `f` every 20 ms until it gives `Some`, for up to 10 s.
pub(crate) async fn wait_until<T, Fut>(mut f: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy in front of a server, for tests of connection loss: `cut`
/// drops every open connection, `refuse` closes new ones at once,
/// `blackhole_down` drops what the server sends (its acks never arrive),
/// and `retarget` sends new connections to another server.
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    state: std::sync::Arc<ProxyState>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    target: std::sync::Mutex<Option<SocketAddr>>,
    refuse: std::sync::atomic::AtomicBool,
    blackhole_down: std::sync::atomic::AtomicBool,
    conns: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering::Relaxed;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(ProxyState::default());
        *state.target.lock().unwrap() = Some(target);
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                if st.refuse.load(Relaxed) {
                    drop(down);
                    continue;
                }
                let Some(target) = *st.target.lock().unwrap() else {
                    continue;
                };
                let st2 = st.clone();
                let task = tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let to_server = async {
                        let mut buf = vec![0u8; 16384];
                        while let Ok(n) = dr.read(&mut buf).await {
                            if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let to_client = async {
                        let mut buf = vec![0u8; 16384];
                        while let Ok(n) = ur.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if !st2.blackhole_down.load(Relaxed)
                                && dw.write_all(&buf[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                    };
                    tokio::select! { _ = to_server => {}, _ = to_client => {} }
                });
                st.conns.lock().unwrap().push(task);
            }
        });
        Proxy {
            addr,
            state,
            accept,
        }
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drops every open connection (both sockets close).
    pub(crate) fn cut(&self) {
        for t in self.state.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub(crate) fn refuse(&self, on: bool) {
        self.state
            .refuse
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn blackhole_down(&self, on: bool) {
        self.state
            .blackhole_down
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn retarget(&self, target: SocketAddr) {
        *self.state.target.lock().unwrap() = Some(target);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// An HS256 connection token signed with `secret`.
pub(crate) fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The value of the series `name` whose labels include `labels` (summed
/// over the series that match).
pub(crate) fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    let mut found = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, val)| l.split(',').any(|p| p == format!("{k}=\"{val}\"")))
        {
            sum += v.parse::<f64>().unwrap();
            found = true;
        }
    }
    assert!(found, "no series {name} {labels:?} in:\n{text}");
    sum
}

pub(crate) async fn scrape(s: &Server) -> String {
    let r = reqwest::get(s.http("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    r.text().await.unwrap()
}

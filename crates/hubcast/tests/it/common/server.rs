//! `Server`: a hubcast server in the test's runtime on 127.0.0.1:0, its
//! HTTP API, metrics and tokens, and recovery across two servers.

use super::*;

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

    /// What `GET /api/users/{user}/status` reports.
    pub(crate) async fn user_status(&self, user: &str) -> Value {
        reqwest::get(self.http(&format!("/api/users/{user}/status")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
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

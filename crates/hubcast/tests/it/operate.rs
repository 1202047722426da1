//! Operating a running server (PROTOCOL.md section 11), against the real
//! binary: `hubcast config check` and `init`, a SIGHUP reload (keys
//! swapped, a bad file refused, open connections kept), and the drain on
//! SIGTERM (`/readyz` first, then 1001 closes spread over the window).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;

use crate::common::{self, Client, WAIT};

fn hubcast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hubcast"))
}

/// A file of this test's own in a scratch directory.
fn scratch(tag: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hubcast-op-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hubcast.toml");
    std::fs::write(&file, contents).unwrap();
    file
}

fn token(secret: &str, sub: &str) -> String {
    let exp = hubcast::unix_ms() as u64 / 1000 + 600;
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A `hubcast serve` child whose log lines the test reads as they come.
struct Node {
    child: Child,
    port: u16,
    lines: mpsc::UnboundedReceiver<String>,
    log: Arc<Mutex<String>>,
}

impl Node {
    async fn start(file: &std::path::Path, flags: &[&str]) -> Node {
        let mut child = hubcast()
            .args(["serve", "--config"])
            .arg(file)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, mut lines) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(String::new()));
        let all = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                all.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let port = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.recv().await {
                if let Some(port) = port_in(&line) {
                    return port;
                }
            }
            panic!("the node exited before listening");
        })
        .await
        .expect("the node listens");
        common::wait_for(port, "/healthz").await;
        Node {
            child,
            port,
            lines,
            log,
        }
    }

    /// Waits for a log line containing `needle`; returns it.
    async fn wait_log(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no log line with {needle:?}:\n{}", self.log.lock().unwrap()),
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn ws(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("ws://127.0.0.1:{}/ws?token={t}", self.port),
            None => format!("ws://127.0.0.1:{}/ws", self.port),
        }
    }

    async fn get(&self, path: &str) -> u16 {
        reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `POST /api/publish` with `key`; the status.
    async fn publish(&self, key: &str, room: &str, data: Value) -> u16 {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/api/publish", self.port))
            .bearer_auth(key)
            .json(&json!({"room": room, "event": "e", "data": data}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits for the process to exit; its status and whole log.
    async fn exit(mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::task::spawn_blocking(move || self.child.wait().unwrap())
            .await
            .unwrap();
        // The reader thread ends with the pipe; give it the last lines.
        while self.lines.recv().await.is_some() {}
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

/// The port in a `hubcast listening on http://127.0.0.1:PORT ...` line.
fn port_in(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/' && *c != '"')
        .collect();
    addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

/// The handshake's refusal status, or `None` when it succeeded.
async fn refused(url: &str) -> Option<u16> {
    match Client::connect_request(url).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(r)) => Some(r.status().as_u16()),
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

#[test]
fn config_init_output_passes_config_check() {
    let init = hubcast().args(["config", "init"]).output().unwrap();
    assert!(init.status.success());
    let text = String::from_utf8(init.stdout).unwrap();
    for key in [
        "listen = ",
        "drain_delay = 0",
        "# jwt_secret = (unset",
        "log_level = \"info\"",
    ] {
        assert!(text.contains(key), "{key} in:\n{text}");
    }
    // Piped into `config check` as it is.
    let mut check = hubcast()
        .args(["config", "check", "--config", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_check_names_every_bad_key_in_the_file_and_the_environment() {
    let file = scratch(
        "check",
        "heartbeat = \"soon\"\nmax_rooms_per_conn = 0\nno_such_key = true\nnode_id = \"ok\"\n",
    );
    let out = hubcast()
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("HUBCAST_QUEUE_SIZE", "lots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for key in [
        "heartbeat:",
        "max_rooms_per_conn:",
        "no_such_key:",
        "queue_size: HUBCAST_QUEUE_SIZE",
    ] {
        assert!(err.contains(key), "{key} in:\n{err}");
    }
    assert_eq!(err.lines().count(), 4, "one line a bad key:\n{err}");
    // A good file and environment: 0.
    let good = scratch("check-ok", "heartbeat = 9\n");
    let out = hubcast()
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn sighup_swaps_api_keys_and_jwt_secrets_and_open_connections_stay() {
    let (old_key, new_key) = ("old-api-key-0123456789", "new-api-key-0123456789");
    let (s1, s2) = ("first-secret-0123456789", "second-secret-0123456789");
    let file = scratch(
        "reload",
        &format!("listen = \"127.0.0.1:0\"\napi_keys = [\"{old_key}\"]\njwt_secret = \"{s1}\"\n"),
    );
    let mut node = Node::start(&file, &[]).await;
    let mut c = Client::connect(&node.ws(Some(&token(s1, "alice")))).await;
    assert_eq!(c.welcome["heartbeat"], 25);
    c.join("r").await;
    assert_eq!(node.publish(old_key, "r", json!(1)).await, 200);
    assert_eq!(c.expect("message").await["data"], 1);
    assert_eq!(node.publish(new_key, "r", json!(0)).await, 401);
    assert_eq!(refused(&node.ws(Some(&token(s2, "bob")))).await, Some(401));
    let publish = json!({"type":"publish","room":"news.today","event":"e","data":0});
    assert_eq!(c.call(publish.clone()).await["type"], "ack");

    // New keys, the secret rotated (the old one still valid), and a key
    // that needs a restart.
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\napi_keys = [\"{new_key}\"]\njwt_secret = \"{s2}\"\n\
             jwt_secret_previous = \"{s1}\"\nheartbeat = 7\n\
             [[rooms]]\nmatch = \"news.**\"\npublish = \"server\"\n"
        ),
    )
    .unwrap();
    node.signal("-HUP");
    let warned = node.wait_log("need a restart").await;
    assert!(warned.contains("heartbeat"), "{warned}");
    let done = node.wait_log("settings reloaded").await;
    assert!(
        done.contains("api_keys") && done.contains("jwt_secret"),
        "{done}"
    );
    // The room rule holds for the open connection from then on.
    let refused_publish = c.call(publish).await;
    assert_eq!(refused_publish["code"], "forbidden", "{refused_publish}");

    assert_eq!(node.publish(old_key, "r", json!(0)).await, 401);
    assert_eq!(node.publish(new_key, "r", json!(2)).await, 200);
    // The connection opened before the reload is still open and receiving.
    assert_eq!(c.expect("message").await["data"], 2);
    let bob = Client::connect(&node.ws(Some(&token(s2, "bob")))).await;
    assert_eq!(
        bob.welcome["heartbeat"], 25,
        "restart keys keep their value"
    );
    let carol = Client::connect(&node.ws(Some(&token(s1, "carol")))).await;
    drop((bob, carol));

    // The previous secret retired: its tokens are refused from then on.
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:0\"\napi_keys = [\"{new_key}\"]\njwt_secret = \"{s2}\"\n"),
    )
    .unwrap();
    node.signal("-HUP");
    node.wait_log("settings reloaded").await;
    assert_eq!(
        refused(&node.ws(Some(&token(s1, "carol")))).await,
        Some(401)
    );
    assert_eq!(node.publish(new_key, "r", json!(3)).await, 200);
    assert_eq!(c.expect("message").await["data"], 3);

    node.signal("-TERM");
    let (code, _, _) = c.until_close().await;
    assert_eq!(code, Some(1001));
    let (status, log) = node.exit().await;
    assert!(status.success(), "{status:?}\n{log}");
}

/// `[hooks]` reloads: a SIGHUP that adds the table turns rpc on for the
/// open connection, one that changes the secret signs with the new one,
/// and one that removes it turns rpc off again.
#[tokio::test]
async fn sighup_adds_changes_and_removes_the_backend_hooks() {
    use crate::hooks::{Answer, Backend, SECRET};
    let backend = Backend::start(|_| Answer::Json(json!({"data": "from the backend"}))).await;
    let base = "listen = \"127.0.0.1:0\"\nanonymous = true\n";
    let file = scratch("reload-hooks", base);
    let mut node = Node::start(&file, &[]).await;
    let mut c = Client::connect(&node.ws(None)).await;
    let rpc = json!({"type":"rpc","method":"m","data":1});
    let off = c.call(rpc.clone()).await;
    assert_eq!(off["code"], "forbidden", "{off}");

    let hooks = |secret: &str| {
        format!(
            "{base}[hooks]\nurl = \"{}\"\nsecret = \"{secret}\"\nrpc = true\n",
            backend.url
        )
    };
    std::fs::write(&file, hooks(SECRET)).unwrap();
    node.signal("-HUP");
    let done = node.wait_log("settings reloaded").await;
    assert!(done.contains("hooks"), "{done}");
    let on = c.call(rpc.clone()).await;
    assert_eq!(on["data"], "from the backend", "{on}");
    backend.assert_all_signed();

    // Another secret: the backend's check (with the old one) fails.
    std::fs::write(&file, hooks("another-secret-0123456789")).unwrap();
    node.signal("-HUP");
    node.wait_log("settings reloaded").await;
    let refused = c.call(rpc.clone()).await;
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");

    std::fs::write(&file, base).unwrap();
    node.signal("-HUP");
    node.wait_log("settings reloaded").await;
    let off = c.call(rpc).await;
    assert_eq!(off["code"], "forbidden", "{off}");
    // The one request signed with the secret the backend holds; the other
    // failed its check, and none came after the removal.
    assert_eq!(backend.seen_of("rpc").len(), 1);
    node.signal("-TERM");
    let (status, log) = node.exit().await;
    assert!(status.success(), "{status:?}\n{log}");
}

/// `[[webhooks]]` reloads: a SIGHUP that adds a webhook starts it (with
/// the events from then on); one that adds another keeps the first one's
/// loop (its batch, mid-retry, goes on with the same body id); one that
/// removes the first stops it; a bad file changes nothing.
#[tokio::test]
async fn sighup_adds_keeps_and_removes_webhooks() {
    use crate::webhooks::{Receiver, SECRET, count};
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let base = "listen = \"127.0.0.1:0\"\nanonymous = true\n";
    let table = |r: &Receiver| {
        format!(
            "[[webhooks]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\nevents = [\"room.occupied\"]\n",
            r.url
        )
    };
    let file = scratch("reload-webhooks", base);
    let mut node = Node::start(&file, &[]).await;
    let mut c = Client::connect(&node.ws(None)).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let room = |n: u32| format!("wh{n}.{tag}");
    c.join(&room(0)).await; // no webhook yet: nobody hears of it

    // Added: `a` answers 503 twice first (1 s, then 2 s of backoff).
    a.answer_first(&[503, 503]);
    std::fs::write(&file, format!("{base}{}", table(&a))).unwrap();
    node.signal("-HUP");
    node.wait_log("webhooks reloaded").await;
    c.join(&room(1)).await;
    common::wait_until(|| async { (!a.requests().is_empty()).then_some(()) }).await;
    // Another one added while `a` retries.
    std::fs::write(&file, format!("{base}{}{}", table(&a), table(&b))).unwrap();
    node.signal("-HUP");
    node.wait_log("webhooks reloaded").await;
    c.join(&room(2)).await;
    let got = b.until_event("room.occupied", &room(2)).await;
    assert_eq!(count(&got, "room.occupied", &room(1)), 0, "{got:?}");
    let got = a.until_event("room.occupied", &room(2)).await;
    assert_eq!(count(&got, "room.occupied", &room(0)), 0, "{got:?}");
    assert_eq!(count(&got, "room.occupied", &room(1)), 1, "{got:?}");
    // `a` kept its loop: one batch, tried three times across the reload.
    let tries: Vec<(u16, Value)> = a
        .requests()
        .into_iter()
        .take(3)
        .map(|q| (q.status, q.body["id"].clone()))
        .collect();
    assert_eq!(
        tries.iter().map(|t| t.0).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    assert!(tries.iter().all(|t| t.1 == tries[0].1), "{tries:?}");

    // Removed: `a` hears of nothing more.
    std::fs::write(&file, format!("{base}{}", table(&b))).unwrap();
    node.signal("-HUP");
    node.wait_log("webhooks reloaded").await;
    c.join(&room(3)).await;
    b.until_event("room.occupied", &room(3)).await;
    // A bad file changes nothing: `b` goes on, `a` stays removed.
    std::fs::write(
        &file,
        format!(
            "{base}{}[[webhooks]]\nurl = \"{}\"\nsecret = \"short\"\n",
            table(&b),
            a.url
        ),
    )
    .unwrap();
    node.signal("-HUP");
    node.wait_log("reload refused").await;
    c.join(&room(4)).await;
    b.until_event("room.occupied", &room(4)).await;
    let heard = a.delivered();
    for n in [3, 4] {
        assert_eq!(count(&heard, "room.occupied", &room(n)), 0, "{heard:?}");
    }
    node.signal("-TERM");
    let (status, log) = node.exit().await;
    assert!(status.success(), "{status:?}\n{log}");
}

#[tokio::test]
async fn a_bad_file_on_sighup_changes_nothing_and_is_logged() {
    let key = "the-api-key-0123456789";
    let file = scratch(
        "bad-reload",
        &format!("listen = \"127.0.0.1:0\"\napi_keys = [\"{key}\"]\n"),
    );
    let mut node = Node::start(&file, &[]).await;
    let mut c = Client::connect(&node.ws(None)).await;
    c.join("r").await;
    // A short key, an unknown key: both named, neither applied (nor the
    // good `max_rooms_per_conn` beside them).
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\napi_keys = [\"short\"]\nmax_rooms_per_conn = 1\nbogus = 1\n",
    )
    .unwrap();
    node.signal("-HUP");
    let first = node.wait_log("reload refused").await;
    let second = node.wait_log("reload refused").await;
    let both = format!("{first}\n{second}");
    assert!(
        both.contains("api_keys") && both.contains("bogus"),
        "{both}"
    );
    assert_eq!(node.publish(key, "r", json!(1)).await, 200);
    assert_eq!(c.expect("message").await["data"], 1);
    // max_rooms_per_conn stayed 100: a second room is fine.
    c.join("r2").await;
    assert_eq!(node.get("/healthz").await, 200);
    node.signal("-TERM");
    let (status, log) = node.exit().await;
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!log.contains("settings reloaded"), "{log}");
}

#[tokio::test]
async fn sigterm_drains_readyz_first_then_closes_over_the_window_and_exits_0() {
    const CONNS: usize = 1000;
    const WINDOW_S: u64 = 5;
    let file = scratch(
        "drain",
        &format!(
            "listen = \"127.0.0.1:0\"\ndrain_delay = 2\nshutdown_timeout = {WINDOW_S}\n\
             handshakes_per_ip_per_sec = 0\nmax_connections_per_ip = 5000\n"
        ),
    );
    let node = Node::start(&file, &[]).await;
    let url = node.ws(None);
    let mut first = Client::connect(&url).await;
    first.join("r").await;
    // Each client's close, as the time it saw it.
    let (closes_tx, mut closes) = mpsc::unbounded_channel();
    for _ in 1..CONNS {
        let mut c = Client::connect(&url).await;
        let tx = closes_tx.clone();
        tokio::spawn(async move {
            let (code, _, _) = c.until_close().await;
            let _ = tx.send((Instant::now(), code));
        });
    }
    drop(closes_tx);
    assert_eq!(node.get("/readyz").await, 200);

    node.signal("-TERM");
    // Readiness goes first, while everything else still serves.
    let t0 = Instant::now();
    while node.get("/readyz").await != 503 {
        assert!(t0.elapsed() < Duration::from_secs(2), "/readyz still 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.get("/healthz").await, 200);
    let (reply, _) = first.request(json!({"type":"presence","room":"r"})).await;
    assert!(
        reply["members"].is_array(),
        "open connections still served: {reply}"
    );
    assert!(closes.try_recv().is_err(), "no close before drain_delay");

    let mut seen = Vec::new();
    while let Some(close) = tokio::time::timeout(Duration::from_secs(30), closes.recv())
        .await
        .expect("every connection closes")
    {
        if seen.is_empty() {
            // Closing: new handshakes get 503.
            assert_eq!(refused(&url).await, Some(503));
        }
        seen.push(close);
    }
    let (code, _, _) = first.until_close().await;
    assert_eq!(code, Some(1001));
    assert_eq!(seen.len(), CONNS - 1);
    assert!(seen.iter().all(|(_, code)| *code == Some(1001)));
    let times: Vec<Instant> = seen.iter().map(|(t, _)| *t).collect();
    let (Some(a), Some(b)) = (times.iter().min(), times.iter().max()) else {
        unreachable!()
    };
    let spread = *b - *a;
    assert!(
        spread >= Duration::from_secs(WINDOW_S).mul_f64(0.4),
        "closes spread over {spread:?} only"
    );
    let (status, log) = node.exit().await;
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("closing connections with 1001"), "{log}");
}

#[tokio::test]
async fn a_drain_ends_sse_streams_and_answers_waiting_long_polls() {
    use futures_util::StreamExt;
    let s = common::Server::start(|c| {
        c.drain_delay = 1;
        c.shutdown_timeout = 2;
    })
    .await;
    let sse = reqwest::get(s.http("/sse?rooms=a")).await.unwrap();
    assert_eq!(sse.status(), 200);
    let mut body = sse.bytes_stream();
    let poll = tokio::spawn(reqwest::get(s.http("/api/poll?room=b&since=0&timeout=30")));
    // The poll waits once its room has it as a member.
    let t0 = Instant::now();
    loop {
        let rooms: Value = reqwest::get(s.http("/api/rooms"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room"] == "b")
        {
            break;
        }
        assert!(t0.elapsed() < WAIT, "the long poll never waited: {rooms}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.shutdown.cancel();
    let ready = reqwest::get(s.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    // The stream ends (after its `joined` event) and the poll is answered
    // with nothing, rather than both waiting for the process to go.
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the SSE stream ended");
    let answer = tokio::time::timeout(WAIT, poll)
        .await
        .expect("the long poll is answered")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), 200);
    let v: Value = answer.json().await.unwrap();
    assert_eq!(v["messages"], json!([]), "{v}");
    s.stop().await;
}

//! Test harness: a real hubcast server on 127.0.0.1:0 and a real WebSocket
//! client (tokio-tungstenite), talking over real sockets.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
#![allow(dead_code)]

use std::net::SocketAddr;
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
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running in this test's runtime.
pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Starts a server with default settings changed by `f`.
    pub async fn start(f: impl FnOnce(&mut Config)) -> Server {
        let mut config = Config::default();
        config.node_id = "test-node".into();
        f(&mut config);
        config.validate().expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(hubcast::run(config, listener, shutdown.clone()));
        Server {
            addr,
            shutdown,
            handle,
        }
    }

    pub async fn default() -> Server {
        Server::start(|_| {}).await
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects a client (reads its `welcome`).
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// Connects with a display name.
    pub async fn named(&self, name: &str) -> Client {
        Client::connect(&format!("{}?name={name}", self.ws_url())).await
    }

    /// Fires shutdown and waits for `run` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
}

/// A WebSocket client speaking the hubcast protocol.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
    next_id: u64,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
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
    pub async fn connect_request(
        req: impl IntoClientRequest + Unpin,
    ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tungstenite::Error> {
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }

    pub fn user(&self) -> String {
        self.welcome["user"].as_str().unwrap().to_string()
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s.to_string())).await.unwrap();
    }

    /// Next text frame as JSON (pings and pongs skipped).
    pub async fn recv(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.next_frame()).await {
            Ok(Some(v)) => v,
            Ok(None) => panic!("connection closed while waiting for a frame"),
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }

    async fn next_frame(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("server frames are JSON"));
                }
                Ok(Message::Close(f)) => panic!("unexpected close: {f:?}"),
                Ok(_) => continue,
                Err(e) => panic!("read error: {e}"),
            }
        }
    }

    /// Next frame, which must be of type `ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "expected a {ty} frame, got {v}");
        v
    }

    /// Sends `frame` with a fresh id and returns the reply carrying it;
    /// frames without that id arriving meanwhile are returned too.
    pub async fn request(&mut self, mut frame: Value) -> (Value, Vec<Value>) {
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
    pub async fn call(&mut self, frame: Value) -> Value {
        let (reply, others) = self.request(frame).await;
        assert!(
            others.is_empty(),
            "unexpected frames before the reply: {others:?}"
        );
        reply
    }

    /// Joins a room and consumes the presence event of its own arrival
    /// (sent for a user's first connection in a room), returning `joined`.
    pub async fn join(&mut self, room: &str) -> Value {
        let v = self.join_quiet(room).await;
        if !room.starts_with('@') {
            let ev = self.expect("presence").await;
            assert_eq!(ev["action"], "join", "{ev}");
            assert_eq!(ev["user"], self.user(), "{ev}");
        }
        v
    }

    /// Joins a room and returns `joined`, consuming nothing else.
    pub async fn join_quiet(&mut self, room: &str) -> Value {
        let v = self.call(json!({"type":"join","room":room})).await;
        assert_eq!(v["type"], "joined", "{v}");
        v
    }

    pub async fn publish(&mut self, room: &str, data: Value) -> Value {
        let v = self
            .call(json!({"type":"publish","room":room,"event":"test","data":data}))
            .await;
        assert_eq!(v["type"], "ack", "{v}");
        v
    }

    /// Asserts that no text frame arrives within `d`.
    pub async fn silent_for(&mut self, d: Duration) {
        if let Ok(v) = tokio::time::timeout(d, self.next_frame()).await {
            panic!("expected silence, got {v:?}");
        }
    }

    /// Reads until the server closes; returns the close code and reason and
    /// the text frames read before it.
    pub async fn until_close(&mut self) -> (Option<u16>, String, Vec<Value>) {
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

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn close_parts(f: Option<CloseFrame>) -> (Option<u16>, String) {
    match f {
        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
        None => (None, String::new()),
    }
}

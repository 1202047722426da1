//! `Client`: a WebSocket client speaking the hubcast protocol, the
//! frames it reads, and waiting for a condition.

use super::*;

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

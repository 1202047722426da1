//! A Rust client for hubcast (protocol v1) with the browser client's
//! semantics:
//!
//! - reconnects by itself, with exponential backoff and full jitter
//!   (capped, reset after a stable connection); not after 1008, nor after
//!   4001 until [`Client::set_token`] (a [`Options::token_fn`] is asked
//!   again on every connect, so it reconnects at once);
//! - rejoins its rooms with `since`/`epoch`, so missed messages arrive once
//!   and in order; [`Event::Unrecovered`] when the server could not fill
//!   the gap (reload with `history`);
//! - delivers each message once (offset order within an epoch, and msgId);
//! - [`Client::publish`] resolves with the `ack`; a publish whose ack was
//!   lost is sent again with the same `msgId` after a reconnect (the server
//!   acks it as a duplicate; nobody receives it twice); publishes made while
//!   disconnected wait in a bounded queue; each has a timeout;
//! - an application-level `ping` finds a dead connection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hubcast_client::Error> {
//! use hubcast_client::{Client, Event, Options};
//! let (client, mut events) = Client::connect("ws://127.0.0.1:8080/ws", Options::named("ada"));
//! client.join("lobby").await?;
//! client.publish("lobby", "chat.message", serde_json::json!({"text": "hi"})).await?;
//! while let Some(ev) = events.recv().await {
//!     if let Event::Message(m) = ev {
//!         println!("{}: {}", m.source, m.data);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`raw`] is one bare connection, for load tools.

pub mod raw;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use raw::{Frame, Ws};

/// What can go wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The URL cannot be used.
    #[error("bad URL: {0}")]
    Url(String),
    /// The WebSocket handshake failed (HTTP error, refused connection).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// Reading or writing the socket failed.
    #[error("connection error: {0}")]
    Io(String),
    /// No reply in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The connection closed.
    #[error("connection closed ({code}): {reason}")]
    Closed {
        /// The close code (1006: the socket went away).
        code: u16,
        /// Why.
        reason: String,
    },
    /// The server answered with an `error` frame.
    #[error("{code}: {message}")]
    Server {
        /// Its `code` (`forbidden`, `bad_request`, ...).
        code: String,
        /// Its `message`.
        message: String,
    },
    /// Not connected now (for requests that are not queued).
    #[error("not connected")]
    Disconnected,
    /// The bounded queue of publishes waiting for a connection is full.
    #[error("{0} publishes already wait for a connection")]
    QueueFull(usize),
    /// [`Client::close`] was called, or the server refused for good (1008).
    #[error("the client is closed")]
    ClientClosed,
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    /// Its room (`@user` for a direct message to this user).
    pub room: String,
    /// Position in the room's stream.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
    /// Unique id (the publisher's, or a UUIDv7).
    #[serde(rename = "msgId")]
    pub msg_id: String,
    /// Server receive time, Unix milliseconds.
    pub timestamp: i64,
    /// The publisher's event name.
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// The publisher's user id (or the API caller's `source`).
    pub source: String,
    /// The payload.
    #[serde(default)]
    pub data: Value,
}

/// The server's `ack` of a publish or send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ack {
    /// The message's id.
    #[serde(rename = "msgId")]
    pub msg_id: String,
    /// Its room.
    pub room: String,
    /// Its offset.
    pub offset: u64,
    /// The epoch of `offset`.
    #[serde(default)]
    pub epoch: String,
    /// The msgId had been published already (not delivered again).
    pub duplicate: bool,
}

/// A `joined` reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Joined {
    /// The room.
    pub room: String,
    /// Its latest offset.
    pub offset: u64,
    /// Its epoch.
    pub epoch: String,
    /// Whether a join with `since` got everything after it.
    #[serde(default)]
    pub recovered: Option<bool>,
    /// Presence list.
    #[serde(default)]
    pub members: Value,
}

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// First connection attempt.
    Connecting,
    /// Connected (after `welcome`).
    Connected,
    /// Lost; trying again.
    Reconnecting,
    /// Closed: by [`Client::close`], a 1008, or a 4001 awaiting a new token.
    Closed,
}

/// What the client reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The state changed (`code`/`reason`: of the connection that ended).
    State {
        /// The new state.
        state: State,
        /// Close code of the connection that ended.
        code: Option<u16>,
        /// Why it ended.
        reason: String,
    },
    /// Connected as `user`.
    Welcome {
        /// Connection id.
        conn_id: String,
        /// User id.
        user: String,
    },
    /// A message of a joined room or a direct message; each once, in order.
    Message(Envelope),
    /// A presence event (`join`, `leave`, `status`).
    Presence(Value),
    /// Messages of `room` were missed and could not be replayed: reload.
    Unrecovered {
        /// The room.
        room: String,
        /// Its epoch now.
        epoch: String,
        /// Its latest offset now.
        offset: u64,
    },
    /// An `error` frame not tied to a request.
    Error {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
}

/// A token callback, asked on every connect.
pub type TokenFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Settings.
#[derive(Clone)]
pub struct Options {
    /// A JWT (sent as `Authorization: Bearer`).
    pub token: Option<String>,
    /// Asked for a token on every connect (wins over `token`).
    pub token_fn: Option<TokenFn>,
    /// Display name of an anonymous connection (`?name=`).
    pub name: Option<String>,
    /// First backoff cap; doubles per failed attempt up to `max_delay`.
    pub min_delay: Duration,
    /// Largest backoff cap.
    pub max_delay: Duration,
    /// A connection up this long resets the backoff.
    pub stable_after: Duration,
    /// TCP connect + handshake + `welcome`.
    pub connect_timeout: Duration,
    /// Application-level ping period.
    pub ping_interval: Duration,
    /// No frame at all this long after a ping: the connection is dead.
    pub ping_timeout: Duration,
    /// Default publish/send timeout.
    pub publish_timeout: Duration,
    /// Timeout of other requests.
    pub request_timeout: Duration,
    /// Base delay before retrying an `unavailable`/`rate_limited` publish.
    pub retry_delay: Duration,
    /// How long an out-of-order message waits for the gap before it.
    pub gap_timeout: Duration,
    /// Publishes that may wait while disconnected.
    pub max_queue: usize,
    /// Message ids remembered per room for deduplication.
    pub dedupe_window: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: None,
            token_fn: None,
            name: None,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            stable_after: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(15),
            retry_delay: Duration::from_secs(1),
            gap_timeout: Duration::from_secs(3),
            max_queue: 100,
            dedupe_window: 2000,
        }
    }
}

impl Options {
    /// Defaults, anonymous with a display name.
    pub fn named(name: &str) -> Self {
        Self {
            name: Some(name.to_string()),
            ..Self::default()
        }
    }

    /// Defaults, with a token.
    pub fn with_token(token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_fn", &self.token_fn.is_some())
            .field("name", &self.name)
            .field("max_queue", &self.max_queue)
            .finish_non_exhaustive()
    }
}

/// Options of one publish.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// Your own id (retries with it are not delivered twice).
    pub msg_id: Option<String>,
    /// Deliver to this connection too.
    pub echo: bool,
    /// Instead of [`Options::publish_timeout`].
    pub timeout: Option<Duration>,
}

enum Cmd {
    Join(
        String,
        Option<(u64, String)>,
        oneshot::Sender<Result<Joined, Error>>,
    ),
    Leave(String, oneshot::Sender<Result<(), Error>>),
    Publish(Value, Duration, oneshot::Sender<Result<Ack, Error>>),
    Request(Value, oneshot::Sender<Result<Value, Error>>),
    Status(String, oneshot::Sender<Result<(), Error>>),
    Token(String),
    Close(oneshot::Sender<()>),
}

/// A connection to hubcast that survives disconnects. Dropping it stops
/// its task (like [`Client::close`] without waiting).
#[derive(Debug)]
pub struct Client {
    cmds: mpsc::UnboundedSender<Cmd>,
    state: watch::Receiver<State>,
    user: watch::Receiver<Option<String>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Client {
    /// Starts connecting to `url` (`ws://host:port/ws`) in a task of the
    /// current tokio runtime; the events come on the returned receiver.
    pub fn connect(url: &str, opts: Options) -> (Client, mpsc::UnboundedReceiver<Event>) {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(State::Connecting);
        let (user_tx, user_rx) = watch::channel(None);
        let driver = Driver {
            url: url.to_string(),
            opts,
            cmds: cmd_rx,
            events: ev_tx,
            state: state_tx,
            user_tx,
            user: None,
            rooms: BTreeMap::new(),
            outbox: BTreeMap::new(),
            next_out: 0,
            waiting: HashMap::new(),
            next_id: 1,
            status: None,
            attempt: 0,
            token_expired: false,
            closed: false,
            out: Vec::new(),
            close_waiters: Vec::new(),
        };
        let task = tokio::spawn(driver.run());
        (
            Client {
                cmds: cmd_tx,
                state: state_rx,
                user: user_rx,
                task: Some(task),
            },
            ev_rx,
        )
    }

    /// The state now.
    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Waits until the state is `want` (or `timeout` passes).
    pub async fn wait_for(&self, want: State, within: Duration) -> Result<(), Error> {
        let mut rx = self.state.clone();
        timeout(within, rx.wait_for(|s| *s == want))
            .await
            .map_err(|_| Error::Timeout(format!("state {want:?}")))?
            .map(|_| ())
            .map_err(|_| Error::ClientClosed)
    }

    /// The user id of the current (or last) connection.
    pub fn user(&self) -> Option<String> {
        self.user.borrow().clone()
    }

    fn cmd<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        // A closed channel drops `tx`: the receiver then says ClientClosed.
        let _ = self.cmds.send(make(tx));
        rx
    }

    /// Joins a room (now, or once connected); kept across reconnects.
    pub async fn join(&self, room: &str) -> Result<Joined, Error> {
        let rx = self.cmd(|tx| Cmd::Join(room.to_string(), None, tx));
        rx.await.map_err(|_| Error::ClientClosed)?
    }

    /// Joins a room resuming from a stored position.
    pub async fn join_from(&self, room: &str, offset: u64, epoch: &str) -> Result<Joined, Error> {
        let rx = self.cmd(|tx| Cmd::Join(room.to_string(), Some((offset, epoch.to_string())), tx));
        rx.await.map_err(|_| Error::ClientClosed)?
    }

    /// Leaves a room.
    pub async fn leave(&self, room: &str) -> Result<(), Error> {
        let rx = self.cmd(|tx| Cmd::Leave(room.to_string(), tx));
        rx.await.map_err(|_| Error::ClientClosed)?
    }

    /// Publishes to a room; resolves with the ack.
    pub async fn publish(&self, room: &str, event: &str, data: Value) -> Result<Ack, Error> {
        self.publish_with(room, event, data, Publish::default())
            .await
    }

    /// Publishes with options.
    pub async fn publish_with(
        &self,
        room: &str,
        event: &str,
        data: Value,
        p: Publish,
    ) -> Result<Ack, Error> {
        let mut frame = json!({"type": "publish", "room": room, "event": event, "data": data});
        if p.echo {
            frame["echo"] = json!(true);
        }
        self.enqueue(frame, p).await
    }

    /// Sends a direct message to `user`; resolves with the ack.
    pub async fn send(&self, user: &str, event: &str, data: Value) -> Result<Ack, Error> {
        let frame = json!({"type": "send", "to": user, "event": event, "data": data});
        self.enqueue(frame, Publish::default()).await
    }

    async fn enqueue(&self, mut frame: Value, p: Publish) -> Result<Ack, Error> {
        frame["msgId"] = json!(p.msg_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()));
        let t = p.timeout.unwrap_or(Duration::ZERO);
        let rx = self.cmd(|tx| Cmd::Publish(frame, t, tx));
        rx.await.map_err(|_| Error::ClientClosed)?
    }

    /// Any other request (`presence`, `history`, `ping`) as a JSON frame
    /// (its `id` is set here); the reply frame.
    pub async fn request(&self, frame: Value) -> Result<Value, Error> {
        let rx = self.cmd(|tx| Cmd::Request(frame, tx));
        rx.await.map_err(|_| Error::ClientClosed)?
    }

    /// Sets this user's status (`online`, `away`, `busy`), kept across
    /// reconnects.
    pub async fn set_status(&self, status: &str) -> Result<(), Error> {
        let rx = self.cmd(|tx| Cmd::Status(status.to_string(), tx));
        rx.await.map_err(|_| Error::ClientClosed)?
    }

    /// A new token; reconnects if the old one expired.
    pub fn set_token(&self, token: &str) {
        let _ = self.cmds.send(Cmd::Token(token.to_string()));
    }

    /// Closes for good: pending publishes fail with [`Error::ClientClosed`].
    pub async fn close(mut self) {
        let rx = self.cmd(Cmd::Close);
        let _ = rx.await;
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// One room's delivery state.
#[derive(Default)]
struct RoomState {
    offset: Option<u64>,
    epoch: Option<String>,
    /// Join replies awaited by callers.
    waiters: Vec<oneshot::Sender<Result<Joined, Error>>>,
    /// Messages that came while a rejoin with `since` was in flight.
    stash: Option<Vec<Envelope>>,
    /// Messages past a gap, by offset.
    held: BTreeMap<u64, Envelope>,
    gap_since: Option<Instant>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

impl RoomState {
    fn join_frame(&mut self, room: &str, id: u64) -> Value {
        let mut f = json!({"type": "join", "room": room, "id": id});
        if let Some(o) = self.offset {
            f["since"] = json!(o);
            if let Some(e) = &self.epoch {
                f["epoch"] = json!(e);
            }
            self.stash = Some(Vec::new());
        }
        f
    }

    fn on_joined(&mut self, j: &Joined, out: &mut Vec<Event>, cap: usize, now: Instant) {
        let stash = self.stash.take().unwrap_or_default();
        if j.recovered == Some(false) {
            self.epoch = Some(j.epoch.clone());
            self.offset = Some(j.offset);
            self.held.clear();
            self.gap_since = None;
            out.push(Event::Unrecovered {
                room: j.room.clone(),
                epoch: j.epoch.clone(),
                offset: j.offset,
            });
        } else if j.recovered.is_none() {
            // A first join: the room's position now (a personal room is
            // subscribed from the start, so messages may have come before).
            self.epoch = Some(j.epoch.clone());
            self.offset = Some(self.offset.unwrap_or(0).max(j.offset));
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Ok(j.clone()));
        }
        for env in stash {
            self.accept(env, out, cap, now);
        }
    }

    fn accept(&mut self, env: Envelope, out: &mut Vec<Event>, cap: usize, now: Instant) {
        if let Some(stash) = &mut self.stash {
            stash.push(env);
            return;
        }
        if self.seen.contains(&env.msg_id) {
            return;
        }
        if self.epoch.as_ref().is_some_and(|e| *e != env.epoch) {
            // The room's history was lost: start over from this message.
            out.push(Event::Unrecovered {
                room: env.room.clone(),
                epoch: env.epoch.clone(),
                offset: env.offset.saturating_sub(1),
            });
            self.held.clear();
            self.gap_since = None;
            self.offset = Some(env.offset.saturating_sub(1));
        }
        self.epoch = Some(env.epoch.clone());
        let top = *self.offset.get_or_insert(env.offset.saturating_sub(1));
        if env.offset <= top {
            return;
        }
        if env.offset == top + 1 {
            self.deliver(env, out, cap);
            while let Some(next) = self.held.first_key_value().map(|(k, _)| *k) {
                let top = self.offset.unwrap_or(0);
                if next > top + 1 {
                    break;
                }
                if let Some(e) = self.held.remove(&next)
                    && next == top + 1
                {
                    self.deliver(e, out, cap);
                }
            }
            if self.held.is_empty() {
                self.gap_since = None;
            }
            return;
        }
        self.held.insert(env.offset, env);
        self.gap_since.get_or_insert(now);
    }

    /// Gives up waiting for a gap: delivers what is held, in order.
    fn flush_gap(&mut self, out: &mut Vec<Event>, cap: usize) {
        self.gap_since = None;
        for (_, e) in std::mem::take(&mut self.held) {
            if e.offset > self.offset.unwrap_or(0) {
                self.deliver(e, out, cap);
            }
        }
    }

    fn deliver(&mut self, env: Envelope, out: &mut Vec<Event>, cap: usize) {
        self.offset = Some(env.offset);
        self.seen.insert(env.msg_id.clone());
        self.seen_order.push_back(env.msg_id.clone());
        while self.seen_order.len() > cap {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        out.push(Event::Message(env));
    }
}

/// A publish or send waiting for its ack.
struct Out {
    frame: Value,
    reply: oneshot::Sender<Result<Ack, Error>>,
    deadline: Instant,
    /// Frame id of the copy on the current connection.
    sent: Option<u64>,
    retry_at: Option<Instant>,
}

enum Waiting {
    Join(String),
    Out(u64),
    Request(oneshot::Sender<Result<Value, Error>>, Instant),
    Ignore,
}

struct Driver {
    url: String,
    opts: Options,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<Event>,
    state: watch::Sender<State>,
    user_tx: watch::Sender<Option<String>>,
    user: Option<String>,
    rooms: BTreeMap<String, RoomState>,
    outbox: BTreeMap<u64, Out>,
    next_out: u64,
    waiting: HashMap<u64, Waiting>,
    next_id: u64,
    status: Option<String>,
    attempt: u32,
    token_expired: bool,
    closed: bool,
    /// Frames to write on the current connection.
    out: Vec<String>,
    close_waiters: Vec<oneshot::Sender<()>>,
}

/// How a connection ended.
struct End {
    code: Option<u16>,
    reason: String,
}

impl Driver {
    async fn run(mut self) {
        let mut first = true;
        while !self.closed {
            if self.token_expired {
                self.set_state(State::Closed, Some(4001), "token expired");
                self.idle(None).await;
                continue;
            }
            if !first {
                self.set_state(State::Reconnecting, None, "");
            }
            first = false;
            let end = match self.connect_once().await {
                Ok(ws) => self.session(ws).await,
                Err(e) => End {
                    code: None,
                    reason: e.to_string(),
                },
            };
            self.disconnected();
            if self.closed {
                break;
            }
            match end.code {
                Some(1008) => {
                    self.closed = true;
                    break;
                }
                Some(4001) if self.opts.token_fn.is_some() => {
                    self.attempt = 0;
                    continue;
                }
                Some(4001) => {
                    self.token_expired = true;
                    continue;
                }
                _ => {}
            }
            let cap = self
                .opts
                .min_delay
                .saturating_mul(1 << self.attempt.min(16))
                .min(self.opts.max_delay);
            let delay = cap.mul_f64(random_fraction());
            self.attempt += 1;
            self.set_state(State::Reconnecting, end.code, &end.reason);
            self.idle(Some(Instant::now() + delay)).await;
        }
        self.fail_all(Error::ClientClosed);
        self.set_state(State::Closed, None, "closed");
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn set_state(&mut self, s: State, code: Option<u16>, reason: &str) {
        let changed = *self.state.borrow() != s;
        self.state.send_replace(s);
        if changed || s == State::Reconnecting {
            let _ = self.events.send(Event::State {
                state: s,
                code,
                reason: reason.to_string(),
            });
        }
    }

    fn emit(&self, out: Vec<Event>) {
        for e in out {
            let _ = self.events.send(e);
        }
    }

    /// Disconnected: handles commands until `until` (or a new token).
    async fn idle(&mut self, until: Option<Instant>) {
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let until = until.unwrap_or(far);
        loop {
            let tick = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = tick => self.expire(),
                cmd = self.cmds.recv() => match cmd {
                    None => {
                        self.closed = true;
                        return;
                    }
                    Some(c) => {
                        let was_expired = self.token_expired;
                        self.command(c, false);
                        // Closed, or a new token after a 4001: go now.
                        if self.closed || (was_expired && !self.token_expired) {
                            return;
                        }
                    }
                },
            }
        }
    }

    async fn connect_once(&mut self) -> Result<Ws<TcpStream>, Error> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| Error::Url(format!("{}: {e}", self.url)))?;
        if uri.scheme_str() != Some("ws") {
            return Err(Error::Url(format!(
                "{}: only ws:// (put TLS in front separately)",
                self.url
            )));
        }
        let host = uri.host().ok_or_else(|| Error::Url("no host".into()))?;
        let host = host.trim_matches(|c| c == '[' || c == ']').to_string();
        let port = uri.port_u16().unwrap_or(80);
        let token = match &self.opts.token_fn {
            Some(f) => f(),
            None => self.opts.token.clone(),
        };
        let mut url = self.url.clone();
        if token.is_none()
            && let Some(name) = &self.opts.name
        {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}name={}", percent_encode(name));
        }
        let limit = self.opts.connect_timeout;
        let go = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| Error::Io(e.to_string()))?;
            tcp.set_nodelay(true)
                .map_err(|e| Error::Io(e.to_string()))?;
            raw::handshake(tcp, &url, token.as_deref()).await
        };
        timeout(limit, go)
            .await
            .map_err(|_| Error::Timeout("connect".into()))?
    }

    async fn session(&mut self, mut ws: Ws<TcpStream>) -> End {
        let welcome = match timeout(self.opts.connect_timeout, ws.await_type("welcome")).await {
            Ok(Ok(w)) => w,
            Ok(Err(Error::Closed { code, reason })) => {
                return End {
                    code: Some(code),
                    reason,
                };
            }
            Ok(Err(e)) => {
                return End {
                    code: None,
                    reason: e.to_string(),
                };
            }
            Err(_) => {
                return End {
                    code: None,
                    reason: "no welcome".into(),
                };
            }
        };
        let w: Value = serde_json::from_slice(&welcome).unwrap_or_default();
        let user = w["user"].as_str().unwrap_or_default().to_string();
        if self.user.as_ref().is_some_and(|u| *u != user) {
            self.rooms.retain(|name, _| !name.starts_with('@'));
        }
        self.user = Some(user.clone());
        self.user_tx.send_replace(Some(user.clone()));
        self.set_state(State::Connected, None, "");
        let _ = self.events.send(Event::Welcome {
            conn_id: w["connId"].as_str().unwrap_or_default().to_string(),
            user: user.clone(),
        });
        // The personal room is subscribed automatically; joining it tells
        // its position, and after a reconnect fills the gap.
        self.rooms.entry(format!("@{user}")).or_default();
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            self.send_join(&name);
        }
        if let Some(s) = self.status.clone() {
            let id = self.id(Waiting::Ignore);
            self.out
                .push(json!({"type": "status", "status": s, "id": id}).to_string());
        }
        let keys: Vec<u64> = self.outbox.keys().copied().collect();
        for k in keys {
            self.transmit(k);
        }
        let stable_at = Instant::now() + self.opts.stable_after;
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.opts.ping_interval,
            self.opts.ping_interval,
        );
        let mut ping_sent: Option<Instant> = None;
        let mut last_frame = Instant::now();
        loop {
            for f in std::mem::take(&mut self.out) {
                if let Err(e) = ws.send(f).await {
                    return End {
                        code: Some(1006),
                        reason: e.to_string(),
                    };
                }
            }
            if self.closed {
                ws.close().await;
                return End {
                    code: Some(1000),
                    reason: "client closed".into(),
                };
            }
            let tick = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                f = ws.next_frame() => match f {
                    Frame::Text(t) => {
                        last_frame = Instant::now();
                        ping_sent = None;
                        self.frame(&t);
                    }
                    Frame::Closed(code) => return End { code: Some(code), reason: "closed by the server".into() },
                },
                cmd = self.cmds.recv() => match cmd {
                    None => self.closed = true,
                    Some(c) => self.command(c, true),
                },
                _ = ping.tick() => {
                    if ping_sent.is_none() {
                        ping_sent = Some(Instant::now());
                    }
                    let id = self.id(Waiting::Ignore);
                    self.out.push(json!({"type": "ping", "id": id}).to_string());
                }
                _ = tick => {
                    let now = Instant::now();
                    if ping_sent.is_some_and(|s| last_frame < s && now - s >= self.opts.ping_timeout) {
                        return End { code: Some(1006), reason: "no reply to ping".into() };
                    }
                    if now >= stable_at {
                        self.attempt = 0;
                    }
                    self.expire();
                    self.retry_and_gaps(now);
                }
            }
        }
    }

    fn id(&mut self, w: Waiting) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.insert(id, w);
        id
    }

    fn send_join(&mut self, name: &str) {
        let id = self.id(Waiting::Join(name.to_string()));
        if let Some(r) = self.rooms.get_mut(name) {
            let f = r.join_frame(name, id);
            self.out.push(f.to_string());
        }
    }

    fn transmit(&mut self, key: u64) {
        let Some(o) = self.outbox.get(&key) else {
            return;
        };
        if o.sent.is_some() || o.retry_at.is_some() {
            return;
        }
        let mut f = o.frame.clone();
        let id = self.id(Waiting::Out(key));
        f["id"] = json!(id);
        self.out.push(f.to_string());
        if let Some(o) = self.outbox.get_mut(&key) {
            o.sent = Some(id);
        }
    }

    fn command(&mut self, c: Cmd, online: bool) {
        match c {
            Cmd::Join(room, from, tx) => {
                let r = self.rooms.entry(room.clone()).or_default();
                if let Some((o, e)) = from
                    && r.offset.is_none()
                {
                    r.offset = Some(o);
                    r.epoch = Some(e);
                }
                r.waiters.push(tx);
                if online {
                    self.send_join(&room);
                }
            }
            Cmd::Leave(room, tx) => {
                self.rooms.remove(&room);
                if online {
                    let id = self.id(Waiting::Ignore);
                    self.out
                        .push(json!({"type": "leave", "room": room, "id": id}).to_string());
                }
                let _ = tx.send(Ok(()));
            }
            Cmd::Publish(frame, t, tx) => {
                if !online && self.outbox.len() >= self.opts.max_queue {
                    let _ = tx.send(Err(Error::QueueFull(self.opts.max_queue)));
                    return;
                }
                let t = if t.is_zero() {
                    self.opts.publish_timeout
                } else {
                    t
                };
                let key = self.next_out;
                self.next_out += 1;
                self.outbox.insert(
                    key,
                    Out {
                        frame,
                        reply: tx,
                        deadline: Instant::now() + t,
                        sent: None,
                        retry_at: None,
                    },
                );
                if online {
                    self.transmit(key);
                }
            }
            Cmd::Request(mut frame, tx) => {
                if !online {
                    let _ = tx.send(Err(Error::Disconnected));
                    return;
                }
                let id = self.id(Waiting::Request(
                    tx,
                    Instant::now() + self.opts.request_timeout,
                ));
                frame["id"] = json!(id);
                self.out.push(frame.to_string());
            }
            Cmd::Status(s, tx) => {
                self.status = Some(s.clone());
                if online {
                    let id = self.id(Waiting::Ignore);
                    self.out
                        .push(json!({"type": "status", "status": s, "id": id}).to_string());
                }
                let _ = tx.send(Ok(()));
            }
            Cmd::Token(t) => {
                self.opts.token = Some(t);
                if self.token_expired {
                    self.token_expired = false;
                    self.attempt = 0;
                }
            }
            Cmd::Close(tx) => {
                self.closed = true;
                self.close_waiters.push(tx);
            }
        }
    }

    fn frame(&mut self, text: &[u8]) {
        let Ok(f) = serde_json::from_slice::<Value>(text) else {
            return;
        };
        let now = Instant::now();
        let cap = self.opts.dedupe_window;
        let mut out = Vec::new();
        match (f["type"].as_str(), f.get("id")) {
            (Some("message"), _) => {
                if let Ok(env) = serde_json::from_value::<Envelope>(f)
                    && let Some(r) = self.rooms.get_mut(&env.room)
                {
                    r.accept(env, &mut out, cap, now);
                }
            }
            (Some("presence"), None) => out.push(Event::Presence(f)),
            (Some("error"), None) => out.push(Event::Error {
                code: f["code"].as_str().unwrap_or_default().to_string(),
                message: f["message"].as_str().unwrap_or_default().to_string(),
            }),
            (_, Some(id)) => {
                if let Some(w) = id.as_u64().and_then(|id| self.waiting.remove(&id)) {
                    self.reply(w, f, &mut out, now);
                }
            }
            _ => {}
        }
        self.emit(out);
    }

    fn reply(&mut self, w: Waiting, f: Value, out: &mut Vec<Event>, now: Instant) {
        let err = (f["type"] == "error").then(|| Error::Server {
            code: f["code"].as_str().unwrap_or_default().to_string(),
            message: f["message"].as_str().unwrap_or_default().to_string(),
        });
        match w {
            Waiting::Join(room) => match err {
                Some(e) => {
                    if let Some(r) = self.rooms.remove(&room) {
                        for w in r.waiters {
                            let _ = w.send(Err(e.clone()));
                        }
                    }
                }
                None => {
                    if let (Ok(j), Some(r)) = (
                        serde_json::from_value::<Joined>(f),
                        self.rooms.get_mut(&room),
                    ) {
                        r.on_joined(&j, out, self.opts.dedupe_window, now);
                    }
                }
            },
            Waiting::Out(key) => {
                let retry = matches!(&err, Some(Error::Server { code, .. }) if code == "unavailable" || code == "rate_limited");
                if retry {
                    if let Some(o) = self.outbox.get_mut(&key) {
                        o.sent = None;
                        o.retry_at =
                            Some(now + self.opts.retry_delay.mul_f64(0.5 + random_fraction()));
                    }
                    return;
                }
                if let Some(o) = self.outbox.remove(&key) {
                    let r = match err {
                        Some(e) => Err(e),
                        None => serde_json::from_value::<Ack>(f)
                            .map_err(|e| Error::Io(format!("bad ack: {e}"))),
                    };
                    let _ = o.reply.send(r);
                }
            }
            Waiting::Request(tx, _) => {
                let _ = tx.send(match err {
                    Some(e) => Err(e),
                    None => Ok(f),
                });
            }
            Waiting::Ignore => {}
        }
    }

    /// Publishes and requests past their deadline fail.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .outbox
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            if let Some(o) = self.outbox.remove(&k) {
                if let Some(id) = o.sent {
                    self.waiting.remove(&id);
                }
                let msg_id = o.frame["msgId"].as_str().unwrap_or_default().to_string();
                let _ = o.reply.send(Err(Error::Timeout(format!(
                    "no ack for {msg_id}; retrying with the same msgId is safe"
                ))));
            }
        }
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| matches!(w, Waiting::Request(_, d) if *d <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in late {
            if let Some(Waiting::Request(tx, _)) = self.waiting.remove(&k) {
                let _ = tx.send(Err(Error::Timeout("no reply".into())));
            }
        }
    }

    fn retry_and_gaps(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .outbox
            .iter()
            .filter(|(_, o)| o.retry_at.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(o) = self.outbox.get_mut(&k) {
                o.retry_at = None;
            }
            self.transmit(k);
        }
        let mut out = Vec::new();
        let cap = self.opts.dedupe_window;
        for r in self.rooms.values_mut() {
            if r.gap_since
                .is_some_and(|t| now - t >= self.opts.gap_timeout)
            {
                r.flush_gap(&mut out, cap);
            }
        }
        self.emit(out);
    }

    /// After a connection ended: requests fail, publishes wait to be sent
    /// again, rooms will be rejoined.
    fn disconnected(&mut self) {
        self.out.clear();
        for (_, w) in self.waiting.drain() {
            if let Waiting::Request(tx, _) = w {
                let _ = tx.send(Err(Error::Disconnected));
            }
        }
        for o in self.outbox.values_mut() {
            o.sent = None;
        }
        for r in self.rooms.values_mut() {
            r.stash = None;
        }
    }

    fn fail_all(&mut self, e: Error) {
        for (_, o) in std::mem::take(&mut self.outbox) {
            let _ = o.reply.send(Err(e.clone()));
        }
        for (_, r) in std::mem::take(&mut self.rooms) {
            for w in r.waiters {
                let _ = w.send(Err(e.clone()));
            }
        }
        // Requests and commands still queued.
        while let Ok(c) = self.cmds.try_recv() {
            match c {
                Cmd::Close(tx) => self.close_waiters.push(tx),
                Cmd::Join(_, _, tx) => drop(tx.send(Err(e.clone()))),
                Cmd::Publish(_, _, tx) => drop(tx.send(Err(e.clone()))),
                _ => {}
            }
        }
    }
}

/// A uniformly distributed number in [0, 1), for jitter (std's randomly
/// keyed hasher; jitter needs spread, not secrecy).
fn random_fraction() -> f64 {
    let n = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (n >> 11) as f64 / (1u64 << 53) as f64
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(offset: u64, epoch: &str, id: &str) -> Envelope {
        Envelope {
            room: "r".into(),
            offset,
            epoch: epoch.into(),
            msg_id: id.into(),
            timestamp: 0,
            event_type: "e".into(),
            source: "u".into(),
            data: Value::Null,
        }
    }

    fn offsets(out: &[Event]) -> Vec<u64> {
        out.iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.offset),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn delivers_in_order_once_and_waits_for_gaps() {
        let now = Instant::now();
        let mut r = RoomState {
            offset: Some(0),
            epoch: Some("e".into()),
            ..RoomState::default()
        };
        let mut out = Vec::new();
        r.accept(env(1, "e", "a"), &mut out, 10, now);
        r.accept(env(1, "e", "a"), &mut out, 10, now);
        r.accept(env(3, "e", "c"), &mut out, 10, now);
        assert_eq!(offsets(&out), [1]);
        assert!(r.gap_since.is_some());
        r.accept(env(2, "e", "b"), &mut out, 10, now);
        assert_eq!(offsets(&out), [1, 2, 3]);
        assert!(r.gap_since.is_none());
        // A gap that never fills is given up on, in order.
        r.accept(env(6, "e", "f"), &mut out, 10, now);
        r.accept(env(5, "e", "e"), &mut out, 10, now);
        r.flush_gap(&mut out, 10);
        assert_eq!(offsets(&out), [1, 2, 3, 5, 6]);
        // Same msgId again at another offset: not delivered twice.
        r.accept(env(7, "e", "e"), &mut out, 10, now);
        assert_eq!(offsets(&out), [1, 2, 3, 5, 6]);
    }

    #[test]
    fn a_new_epoch_is_reported_and_followed() {
        let now = Instant::now();
        let mut r = RoomState {
            offset: Some(5),
            epoch: Some("old".into()),
            ..RoomState::default()
        };
        let mut out = Vec::new();
        r.accept(env(1, "new", "x"), &mut out, 10, now);
        assert!(matches!(&out[0], Event::Unrecovered { epoch, .. } if epoch == "new"));
        assert_eq!(offsets(&out), [1]);
    }

    #[test]
    fn a_rejoin_stashes_live_messages_until_the_replay() {
        let now = Instant::now();
        let mut r = RoomState {
            offset: Some(5),
            epoch: Some("e".into()),
            ..RoomState::default()
        };
        let f = r.join_frame("r", 1);
        assert_eq!(f["since"], 5);
        let mut out = Vec::new();
        // Live message 8 comes before `joined`; the replay (6, 7) after.
        r.accept(env(8, "e", "h"), &mut out, 10, now);
        assert!(out.is_empty());
        let joined = Joined {
            room: "r".into(),
            offset: 8,
            epoch: "e".into(),
            recovered: Some(true),
            members: Value::Null,
        };
        r.on_joined(&joined, &mut out, 10, now);
        r.accept(env(6, "e", "f"), &mut out, 10, now);
        r.accept(env(7, "e", "g"), &mut out, 10, now);
        assert_eq!(offsets(&out), [6, 7, 8]);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(percent_encode("Ada Lovelace&x"), "Ada%20Lovelace%26x");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }
}

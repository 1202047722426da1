//! One connection's protocol state: the rooms it joined, and what each
//! client frame does (PROTOCOL.md section 2). Frames are handled one at a
//! time, in arrival order; every reply goes through the connection's
//! outbound queue so it is ordered with the messages around it.

//!
//! - `rooms`: `join` and `leave`, and which rooms a token allows.
//! - `publish`: `publish` and `send`, whose broker calls run together while
//!   their replies leave in order.
//! - `subscribe`: server-side subscribes and unsubscribes.
//! - `hooks`: what the backend hooks decide (join, publish, rpc).

mod hooks;
mod publish;
mod rooms;
mod subscribe;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use serde_json::value::RawValue;

use super::Conn;
use super::limit::{FrameLimiter, JoinLimiter, Verdict};
use crate::App;
use crate::broker::{BrokerError, ClientInfo};
use crate::hub::{Join, Subscriber};
use crate::protocol::{self, ClientFrame, ErrorCode, FrameError, out};
use publish::ReplyFuture;

/// A connection's protocol state.
///
/// It lives in every connection's task while the connection is idle, so it
/// holds only what it must: the connection's identity, presence info and
/// personal room name are made from `conn` when needed, the joined rooms
/// share the hub's name strings, and the publishes under way have a queue
/// only while there are some.
pub(crate) struct Session {
    app: Arc<App>,
    conn: Arc<Conn>,
    /// Rooms joined with `join` (the personal room only if joined so); the
    /// names are the hub's own. At most `max_rooms_per_conn` (+1 for the
    /// personal room), so a list.
    rooms: Vec<Arc<str>>,
    /// Incoming frame rate limit.
    limiter: FrameLimiter,
    /// Join rate limit (presence events are paid by every member).
    joins: JoinLimiter,
    /// Publishes under way, oldest first: their broker calls run together
    /// (a remote engine pipelines them) and their replies go out in order.
    /// `None` when there are none (never empty when `Some`).
    pending: Option<Box<FuturesOrdered<ReplyFuture>>>,
}

/// A failed request: the `error` frame to send.
struct Reject {
    code: ErrorCode,
    message: String,
}

impl Reject {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The client reads a fixed sentence ([`BrokerError::client_message`]):
/// the engine's own error text can name internal addresses and settings.
/// The log keeps it, for the operator.
impl From<BrokerError> for Reject {
    fn from(e: BrokerError) -> Self {
        let code = match e {
            BrokerError::Unavailable { .. } => {
                tracing::warn!(error = %e, "broker unavailable");
                ErrorCode::Unavailable
            }
            // Only a publish times out, and its reply names the msgId
            // (`publish::timed_out`); elsewhere the code is enough.
            BrokerError::Timeout { .. } => {
                tracing::warn!(error = %e, "broker timed out");
                ErrorCode::Timeout
            }
            BrokerError::Internal(_) => {
                tracing::error!(error = %e, "broker error");
                ErrorCode::Internal
            }
        };
        Reject::new(code, e.client_message())
    }
}

impl Session {
    /// Registers the connection with the broker, subscribes it to its
    /// personal room, and joins the token's `subs` (after `welcome`, which
    /// the caller queued first).
    pub(crate) async fn open(
        app: Arc<App>,
        conn: Arc<Conn>,
        subs: Vec<String>,
    ) -> Result<Session, BrokerError> {
        let info = client_info(&conn);
        let personal = protocol::personal_room(&conn.user);
        let sub: Arc<dyn Subscriber> = conn.clone();
        app.presence.connect(&info).await?;
        let join = Join {
            room: &personal,
            explicit: false,
            since: None,
        };
        let joined = app
            .hub
            .join(&sub, join, std::future::ready(Ok(())), |_, ()| None)
            .await;
        if let Err(e) = joined {
            let _ = app.presence.disconnect(&info).await;
            return Err(e);
        }
        // The limits in force when the connection opened hold for it.
        let (limiter, joins) = {
            let c = &app.live().config;
            (
                FrameLimiter::new(c.rate_limit_per_conn, c.rate_limit_burst),
                JoinLimiter::new(c.join_rate_per_conn, c.max_rooms_per_conn),
            )
        };
        let mut session = Session {
            app,
            conn,
            rooms: Vec::new(),
            limiter,
            joins,
            pending: None,
        };
        session.join_subs(subs).await;
        Ok(session)
    }

    fn push(&self, frame: Bytes) {
        self.conn.out.push(frame);
    }

    fn push_error(&self, id: Option<&RawValue>, code: ErrorCode, message: &str) {
        self.push(self.rejected(id, code, message));
    }

    /// An error frame, counted by code and recorded for the dashboard.
    fn rejected(&self, id: Option<&RawValue>, code: ErrorCode, message: &str) -> Bytes {
        record_error(&self.app.recent, &self.conn, code, message);
        rejected(id, code, message)
    }

    /// Applies the frame rate limit; false when the frame is refused (the
    /// error is already queued, and a flooding client is being closed).
    fn admit(&mut self, id: Option<&RawValue>) -> bool {
        match self.limiter.check() {
            Verdict::Allow => true,
            Verdict::Refuse => {
                self.push_error(id, ErrorCode::RateLimited, "too many frames; slow down");
                false
            }
            Verdict::Flood => {
                self.push_error(id, ErrorCode::RateLimited, "too many frames; closing");
                self.conn
                    .out
                    .close(protocol::close::FLOODING, "rate limit exceeded repeatedly");
                false
            }
        }
    }

    /// A binary frame: answered with an error, otherwise ignored.
    pub(crate) fn on_binary(&mut self) {
        if !self.admit(None) {
            return;
        }
        self.push_error(
            None,
            ErrorCode::BadRequest,
            "binary frames are not supported; send JSON text frames",
        );
    }

    /// Handles one text frame.
    ///
    /// `publish` and `send` start their broker call and return at once (up to
    /// `MAX_PIPELINE` under way); any other frame first waits for those,
    /// so every reply leaves in the order the frames came.
    pub(crate) async fn on_text(&mut self, text: &[u8]) {
        let (id, frame) = match protocol::parse_client_frame(text) {
            Ok(parsed) => parsed,
            Err(FrameError { id, code, message }) => {
                if self.admit(id.as_deref()) {
                    let frame = self.rejected(id.as_deref(), code, &message);
                    self.reply_in_order(frame);
                }
                return;
            }
        };
        let id = id.as_deref();
        if !self.admit(id) {
            return;
        }
        let started = match frame {
            ClientFrame::Publish(p) => match self
                .check_room(&p.room, "publish to")
                .and_then(|()| self.check_publisher(&p.room))
            {
                Ok(false) => {
                    let m = &p.message;
                    let msg_id = m.msg_id.as_deref();
                    Ok(self.publish(id, &p.room, &m.event, m.data, msg_id, p.echo))
                }
                // The publish hook decides: asked in the frame's turn,
                // after the replies before it, with the msgId the message
                // will have.
                Ok(true) => {
                    self.drain().await;
                    let m = &p.message;
                    let msg_id = m
                        .msg_id
                        .as_deref()
                        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
                    self.ask_publish(&p.room, &m.event, m.data, &msg_id)
                        .await
                        .map(|replaced| {
                            let data = replaced.as_deref().unwrap_or(m.data);
                            self.publish(id, &p.room, &m.event, data, Some(&msg_id), p.echo)
                        })
                }
                Err(r) => Err(r),
            },
            ClientFrame::Send { to, message: m } => {
                let room = protocol::personal_room(&to);
                Ok(self.publish(id, &room, &m.event, m.data, m.msg_id.as_deref(), false))
            }
            other => {
                self.drain().await;
                if let Err(r) = self.dispatch(id, other).await {
                    self.push_error(id, r.code, &r.message);
                }
                return;
            }
        };
        match started {
            Ok(reply) => self.start(reply).await,
            Err(r) => {
                let frame = self.rejected(id, r.code, &r.message);
                self.reply_in_order(frame)
            }
        }
    }

    async fn dispatch(
        &mut self,
        id: Option<&RawValue>,
        frame: ClientFrame<'_>,
    ) -> Result<(), Reject> {
        match frame {
            ClientFrame::Join { room, since, epoch } => {
                let since = since.map(|s| (s, epoch.as_deref()));
                self.join(id, &room, since).await
            }
            ClientFrame::Leave { room } => self.leave(id, &room).await,
            ClientFrame::Publish(_) | ClientFrame::Send { .. } => {
                // Handled by `on_text` before dispatch.
                Err(Reject::new(ErrorCode::Internal, "publish dispatched twice"))
            }
            ClientFrame::Presence { room } => {
                self.check_room(&room, "see presence of")?;
                self.check_presence(&room)?;
                let page = self.app.presence_page(&room).await?;
                self.push(protocol::encode(&out::PresenceReply {
                    ty: "presence",
                    id,
                    room: &room,
                    members: &page.members,
                    total: page.total,
                }));
                Ok(())
            }
            ClientFrame::History { room, since, limit } => {
                self.check_room(&room, "read history of")?;
                let page = self.app.broker.history(&room, since, limit).await?;
                self.push(protocol::encode(&out::History {
                    ty: "history",
                    id,
                    room: &room,
                    epoch: &page.epoch,
                    messages: page.raw_messages(),
                    complete: page.complete,
                }));
                Ok(())
            }
            ClientFrame::Status { status } => {
                self.app
                    .presence
                    .set_status(&self.conn.user, status)
                    .await?;
                self.push(protocol::encode(&out::Ok { ty: "ok", id }));
                Ok(())
            }
            ClientFrame::Ping => {
                self.push(protocol::encode(&out::Pong {
                    ty: "pong",
                    id,
                    timestamp: crate::unix_ms(),
                }));
                Ok(())
            }
            ClientFrame::Rpc { method, data } => self.rpc(id, &method, data).await,
        }
    }

    /// Leaves every room (reporting presence), drops the personal-room
    /// subscription and unregisters the connection.
    pub(crate) async fn close(mut self) {
        // Publishes under way finish (their replies may not reach the
        // client any more; a retry with the same msgId is acked as a
        // duplicate).
        self.drain().await;
        let hub = &self.app.hub;
        let info = client_info(&self.conn);
        for room in &self.rooms {
            hub.leave(&*self.conn, room, false).await;
            if self.app.keeps_presence(room)
                && let Err(e) = self.app.presence.leave(room, &info).await
            {
                tracing::warn!(conn = %self.conn.id, room = %room, error = %e, "presence leave failed");
            }
        }
        let personal = protocol::personal_room(&self.conn.user);
        hub.leave(&*self.conn, &personal, false).await;
        if let Err(e) = self.app.presence.disconnect(&info).await {
            tracing::warn!(conn = %self.conn.id, error = %e, "broker disconnect failed");
        }
    }
}

/// Who the connection is, for the broker's presence and registry.
fn client_info(conn: &Conn) -> ClientInfo {
    ClientInfo {
        conn_id: conn.id.clone(),
        user: conn.user.clone(),
        name: conn.name.clone(),
        ephemeral: conn.anonymous,
    }
}

/// Records an error reply for the dashboard; rate-limit refusals are not
/// recorded one by one (a flooding client's 4003 close is).
fn record_error(recent: &crate::recent::Recent, conn: &Conn, code: ErrorCode, message: &str) {
    if code != ErrorCode::RateLimited {
        recent.error(code.as_str(), message, &conn.id, &conn.user);
    }
}

/// An error frame, counted by code.
fn rejected(id: Option<&RawValue>, code: ErrorCode, message: &str) -> Bytes {
    metrics::counter!(crate::metrics::FRAMES_REJECTED, "code" => code.as_str()).increment(1);
    protocol::error_frame(id, code, message)
}

/// The `timeout` error frame of a publish or send, naming its msgId,
/// counted like the others.
fn timed_out(id: Option<&RawValue>, msg_id: &str, message: &str) -> Bytes {
    let code = ErrorCode::Timeout;
    metrics::counter!(crate::metrics::FRAMES_REJECTED, "code" => code.as_str()).increment(1);
    protocol::timeout_frame(id, msg_id, message)
}

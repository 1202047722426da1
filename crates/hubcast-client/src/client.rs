//! [`Client`], the handle an application holds: each call is a command to
//! the connection driver's task ([`crate::driver`]), answered on a oneshot.

use std::time::Duration;

use hubcast_protocol::client::Request;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::driver::Driver;
use crate::error::Error;
use crate::events::{Ack, Event, Joined, State};
use crate::options::{Options, Publish};

/// A command from the handle to the driver.
pub(crate) enum Cmd {
    /// Join a room, resuming from `(offset, epoch)` when given.
    Join(
        String,
        Option<(u64, String)>,
        oneshot::Sender<Result<Joined, Error>>,
    ),
    Leave(String, oneshot::Sender<Result<(), Error>>),
    /// A publish or send; a zero timeout means [`Options::publish_timeout`].
    Publish(Outgoing, Duration, oneshot::Sender<Result<Ack, Error>>),
    Request(Value, oneshot::Sender<Result<Value, Error>>),
    Status(String, oneshot::Sender<Result<(), Error>>),
    Token(String),
    Close(oneshot::Sender<()>),
}

/// Where a publish goes.
pub(crate) enum Target {
    /// `publish` to a room.
    Room {
        /// The room.
        room: String,
        /// Deliver to this connection too.
        echo: bool,
    },
    /// `send` to a user.
    User(String),
}

/// A publish or send as the client keeps it until acked: its `msgId` is
/// fixed once, so every retry is the same message to the server.
pub(crate) struct Outgoing {
    pub(crate) target: Target,
    pub(crate) event: String,
    pub(crate) data: Value,
    pub(crate) msg_id: String,
}

impl Outgoing {
    /// The frame's text, with the request id of this attempt.
    pub(crate) fn frame(&self, id: u64) -> String {
        match &self.target {
            Target::Room { room, echo } => Request::Publish {
                id: Some(id),
                room,
                event: &self.event,
                data: &self.data,
                msg_id: Some(&self.msg_id),
                echo: *echo,
            },
            Target::User(to) => Request::Send {
                id: Some(id),
                to,
                event: &self.event,
                data: &self.data,
                msg_id: Some(&self.msg_id),
            },
        }
        .to_text()
    }
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
        let driver = Driver::new(url, opts, cmd_rx, ev_tx, state_tx, user_tx);
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
        let target = Target::Room {
            room: room.to_string(),
            echo: p.echo,
        };
        self.enqueue(target, event, data, p).await
    }

    /// Sends a direct message to `user`; resolves with the ack.
    pub async fn send(&self, user: &str, event: &str, data: Value) -> Result<Ack, Error> {
        self.enqueue(
            Target::User(user.to_string()),
            event,
            data,
            Publish::default(),
        )
        .await
    }

    async fn enqueue(
        &self,
        target: Target,
        event: &str,
        data: Value,
        p: Publish,
    ) -> Result<Ack, Error> {
        let out = Outgoing {
            target,
            event: event.to_string(),
            data,
            msg_id: p.msg_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        };
        let t = p.timeout.unwrap_or(Duration::ZERO);
        let rx = self.cmd(|tx| Cmd::Publish(out, t, tx));
        rx.await.map_err(|_| Error::ClientClosed)?
    }

    /// Any other request (`presence`, `history`, `ping`) as a JSON frame
    /// (its `id` is set here); the reply frame.
    pub async fn request(&self, frame: Value) -> Result<Value, Error> {
        let rx = self.cmd(|tx| Cmd::Request(frame, tx));
        rx.await.map_err(|_| Error::ClientClosed)?
    }

    /// Calls `method` of the application's backend through the server
    /// (`rpc`, PROTOCOL.md section 9); resolves with the backend's `data`.
    /// The backend's own error, or `unavailable` when the server could not
    /// ask it, is an [`Error::Server`] with that code and message.
    pub async fn rpc(&self, method: &str, data: Value) -> Result<Value, Error> {
        let frame = Request::Rpc {
            id: None,
            method,
            data: &data,
        };
        let frame = serde_json::to_value(&frame).map_err(|e| Error::Server {
            code: "bad_request".into(),
            message: e.to_string(),
        })?;
        let mut reply = self.request(frame).await?;
        if let Some(e) = reply.get("error") {
            let text = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            return Err(Error::Server {
                code: text("code"),
                message: text("message"),
            });
        }
        Ok(reply
            .get_mut("data")
            .map(Value::take)
            .unwrap_or(Value::Null))
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

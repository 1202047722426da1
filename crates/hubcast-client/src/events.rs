//! What the client reports: its connection [`State`] and each [`Event`],
//! in order. The server frames it hands over ([`Envelope`], [`Ack`],
//! [`Joined`]) are the protocol crate's typed reads of them.

use serde_json::Value;

pub use hubcast_protocol::server::read::{Ack, Envelope, Joined, Position};

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// First connection attempt.
    Connecting,
    /// Connected (after `welcome`).
    Connected,
    /// Lost; trying again.
    Reconnecting,
    /// Closed: by [`Client::close`](crate::Client::close), a 1008, a 4004
    /// (token revoked or user blocked: the event carries the code, and the
    /// client does not reconnect), or a 4001 awaiting a new token.
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
    /// A room the server joined this connection to by itself (a `joined`
    /// without `id`: the token's `subs`), now tracked like a room joined
    /// with [`Client::join`](crate::Client::join): its messages come as
    /// [`Event::Message`] and it is rejoined with recovery after a
    /// reconnect. Reported once, when it first appears.
    Joined(Joined),
    /// A room the server took this connection out of by itself (a `left`
    /// without `id`: `POST /api/unsubscribe`): no longer tracked, so not
    /// rejoined after a reconnect. Only for a tracked room with no `join`
    /// of ours in flight (a caller's or a rejoin: its reply, which the
    /// server sends after this, keeps the room).
    Left {
        /// The room.
        room: String,
    },
    /// A presence event (`join`, `leave`, `status`). A busy room's
    /// `batch` frame comes as one such event per change it lists; its
    /// `sync` frame (`action: "sync"`, `changes`: how many) as it is: the
    /// member list changed more than the server listed, so fetch it (a
    /// `presence` request) if you show it.
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
    /// A server frame this client could not decode, reported rather than
    /// dropped. A `message` whose position could still be read comes in
    /// its place in its room's order, so the messages after it are not held
    /// up waiting for it.
    Unreadable(Unreadable),
    /// An `error` frame not tied to a request.
    Error {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
}

/// A server frame the client could not decode (e.g. a message whose `data`
/// nests deeper than serde_json reads, or holds a number beyond f64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// For a `message` of a joined room: where it sits (its offset counts
    /// as processed, so a rejoin does not ask for it again).
    pub position: Option<Position>,
    /// Why it could not be decoded.
    pub error: String,
    /// The whole frame, for an application that reads it another way.
    pub text: String,
}

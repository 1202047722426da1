//! What the client reports: its connection [`State`] and each [`Event`],
//! in order. The server frames it hands over ([`Envelope`], [`Ack`],
//! [`Joined`]) are the protocol crate's typed reads of them.

use serde_json::Value;

pub use hubcast_protocol::server::read::{Ack, Envelope, Joined};

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// First connection attempt.
    Connecting,
    /// Connected (after `welcome`).
    Connected,
    /// Lost; trying again.
    Reconnecting,
    /// Closed: by [`Client::close`](crate::Client::close), a 1008, or a
    /// 4001 awaiting a new token.
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

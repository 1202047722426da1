//! Client frames (PROTOCOL.md section 2, "Client to server"): what the
//! server gets from a parse ([`ClientFrame`], borrowing the frame's text)
//! and what a client builds ([`Request`]).

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::error::ErrorCode;
use crate::presence::Status;

mod build;
mod parse;

pub use build::Request;
pub use parse::{ApiPublish, parse_api_publish, parse_client_frame};

/// A client frame's `id`, kept as the raw JSON it arrived as so the reply
/// echoes it exactly (number or string).
pub type FrameId = Box<RawValue>;

/// What a publish or a send carries, checked the same way whether it came
/// as a WebSocket frame or an HTTP API body.
#[derive(Debug)]
pub struct Message<'a> {
    /// Event type.
    pub event: Cow<'a, str>,
    /// Payload, any JSON, as received.
    pub data: &'a RawValue,
    /// Caller-chosen idempotency key.
    pub msg_id: Option<Cow<'a, str>>,
}

/// A parsed, checked `publish` frame.
#[derive(Debug)]
pub struct PublishFrame<'a> {
    /// Target room.
    pub room: Cow<'a, str>,
    /// What is published.
    pub message: Message<'a>,
    /// Deliver to the publishing connection too.
    pub echo: bool,
}

/// A parsed, checked client frame.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    /// `join`
    Join {
        /// Room to join.
        room: Cow<'a, str>,
        /// Last offset the client processed.
        since: Option<u64>,
        /// Epoch of `since`.
        epoch: Option<Cow<'a, str>>,
    },
    /// `leave`
    Leave {
        /// Room to leave.
        room: Cow<'a, str>,
    },
    /// `publish`
    Publish(PublishFrame<'a>),
    /// `send`
    Send {
        /// Recipient user id.
        to: Cow<'a, str>,
        /// What is sent.
        message: Message<'a>,
    },
    /// `presence`
    Presence {
        /// Room whose members are asked for.
        room: Cow<'a, str>,
    },
    /// `history`
    History {
        /// Room.
        room: Cow<'a, str>,
        /// Only messages after this offset.
        since: Option<u64>,
        /// At most this many (1..=1000).
        limit: usize,
    },
    /// `status`
    Status {
        /// New status (never `offline`).
        status: Status,
    },
    /// `ping`
    Ping,
    /// `rpc` (version 1.1): a call the application's backend answers.
    Rpc {
        /// The backend's method, `^[A-Za-z0-9_.:-]{1,64}$`.
        method: Cow<'a, str>,
        /// Arguments, any JSON, as received.
        data: &'a RawValue,
    },
}

/// A frame that could not be accepted: the reply is an `error` frame.
#[derive(Debug)]
pub struct FrameError {
    /// The failed frame's id, when it had a valid one.
    pub id: Option<FrameId>,
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl FrameError {
    fn bad(id: Option<FrameId>, message: impl Into<String>) -> Self {
        Self {
            id,
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }
}

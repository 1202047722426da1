//! hubcast's wire protocol, version 1 (PROTOCOL.md): the one definition the
//! server and the Rust client share, so the two cannot drift apart.
//!
//! # Layout
//!
//! - [`version`]: the protocol version, the subprotocol name, history limits.
//! - [`error`]: `error.code` values (section 3).
//! - [`close`]: WebSocket close codes (section 4), as named constants.
//! - [`presence`]: statuses, presence members and actions.
//! - [`json`]: what client JSON the server relays verbatim (`data`): depth,
//!   finite numbers, paired surrogate escapes.
//! - [`names`]: the rules for room names, event types, user ids and msgIds,
//!   and personal rooms (`@user`).
//! - [`client`]: client frames: the server's borrowing parser
//!   ([`parse_client_frame`]) and the typed frames a client builds
//!   ([`client::Request`]).
//! - [`server`]: server frames: encoding them once into [`bytes::Bytes`]
//!   ([`encode`], [`out`]) and the typed views a client decodes
//!   ([`server::read`]).
//!
//! The crate is transport-free (serde, serde_json and bytes only): the
//! server's message envelopes, which depend on how its brokers assign
//! offsets, stay in the server.

pub mod client;
pub mod close;
pub mod error;
pub mod json;
pub mod names;
pub mod presence;
mod raw;
pub mod server;
pub mod version;

pub use client::{
    ApiPublish, ClientFrame, FrameError, FrameId, Message, PublishFrame, parse_api_publish,
    parse_client_frame,
};
pub use error::ErrorCode;
pub use json::MAX_DATA_DEPTH;
pub use names::{
    check_event, check_method, check_msg_id, check_room, check_user, is_bidi_control, is_personal,
    personal_room,
};
pub use presence::{Member, PresenceAction, Status};
pub use server::{encode, error_frame, out, room_error_frame, timeout_frame};
pub use version::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, PROTOCOL_VERSION, SUBPROTOCOL};

//! The wire protocol (PROTOCOL.md), defined once in the `hubcast-protocol`
//! crate that the Rust client shares, re-exported here under the paths the
//! server has always used; plus the server's own message envelopes, written
//! by hand from pre-escaped parts so the broker encodes each once.

pub use hubcast_protocol::{
    ApiPublish, ClientFrame, DEFAULT_HISTORY_LIMIT, ErrorCode, FrameError, FrameId,
    MAX_HISTORY_LIMIT, Member, PROTOCOL_VERSION, PresenceAction, SUBPROTOCOL, Status, check_event,
    check_msg_id, check_room, check_user, close, encode, error_frame, is_personal, out,
    parse_api_publish, parse_client_frame, personal_room,
};

mod envelope;
pub use envelope::{EnvelopeParts, as_raw, envelope_trace_id, json_string};

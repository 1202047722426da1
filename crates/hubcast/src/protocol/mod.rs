//! The wire protocol (PROTOCOL.md), defined once in the `hubcast-protocol`
//! crate that the Rust client shares, re-exported here under the paths the
//! server has always used; plus the server's own message envelopes, written
//! by hand from pre-escaped parts so the broker encodes each once.

pub(crate) use hubcast_protocol::json::{MAX_DATA_DEPTH, check_value};
pub(crate) use hubcast_protocol::{
    ApiPublish, DEFAULT_HISTORY_LIMIT, ErrorCode, FrameError, MAX_HISTORY_LIMIT, Member, Message,
    PROTOCOL_VERSION, SUBPROTOCOL, check_method, check_user, close, encode, error_frame,
    is_bidi_control, is_personal, out, parse_api_publish, personal_room, room_error_frame,
    timeout_frame,
};
pub use hubcast_protocol::{ClientFrame, PresenceAction, Status, check_room, parse_client_frame};

mod envelope;
pub use envelope::EnvelopeParts;
pub(crate) use envelope::{as_raw, envelope_trace_id, json_string};

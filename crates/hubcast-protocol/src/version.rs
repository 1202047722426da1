//! The protocol version and the limits both sides must agree on.

/// Protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// WebSocket subprotocol a client may offer.
pub const SUBPROTOCOL: &str = "hubcast.v1";
/// Largest `limit` a `history` request may ask for.
pub const MAX_HISTORY_LIMIT: usize = 1000;
/// `limit` when a `history` request gives none.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

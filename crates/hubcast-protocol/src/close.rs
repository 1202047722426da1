//! WebSocket close codes (PROTOCOL.md section 4). A client decides from
//! these whether to reconnect, so both sides name them from here.

/// Normal close.
pub const NORMAL: u16 = 1000;
/// Server shutting down; reconnect (to another node).
pub const GOING_AWAY: u16 = 1001;
/// A broken WebSocket frame.
pub const PROTOCOL_ERROR: u16 = 1002;
/// No close code was given (RFC 6455: never sent, only reported).
pub const NO_STATUS: u16 = 1005;
/// The connection went away without a close frame (RFC 6455: never sent,
/// only reported).
pub const ABNORMAL: u16 = 1006;
/// A text message that is not UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// Policy violation.
pub const POLICY: u16 = 1008;
/// A frame larger than `max_message_bytes`.
pub const TOO_BIG: u16 = 1009;
/// Internal error.
pub const INTERNAL: u16 = 1011;
/// Slow consumer: the outbound queue overflowed.
pub const SLOW_CONSUMER: u16 = 4000;
/// Token expired.
pub const TOKEN_EXPIRED: u16 = 4001;
/// Nothing arrived for `2 * heartbeat + 5` seconds.
pub const HEARTBEAT_TIMEOUT: u16 = 4002;
/// Rate limit exceeded repeatedly.
pub const FLOODING: u16 = 4003;
/// Token revoked or user blocked: reconnecting with the same credentials
/// would be refused, so a client stops.
pub const REVOKED: u16 = 4004;
/// Disconnected by the server API: reconnecting is allowed.
pub const DISCONNECTED: u16 = 4005;

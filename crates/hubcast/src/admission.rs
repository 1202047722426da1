//! Who may join a room: the one check behind every way a client asks to
//! (a WebSocket `join`, a token's `subs` at connect on WebSocket and SSE,
//! an SSE stream's `rooms`), so that a new rule lands here and nowhere
//! else.
//!
//! The order is the contract's (PROTOCOL.md section 7): the name, then the
//! token's grants (a personal room is its owner's), then, for a room whose
//! rule says `join = "hook"`, the join hook. What a joining connection may
//! hold (`max_rooms_per_conn`, the join rate) is its own, checked by the
//! transport. A server-side subscribe (`POST /api/subscribe`) is the
//! server's own word: it checks the name only (`http::subscribe`) and asks
//! neither the token nor the hook.

use crate::App;
use crate::auth::Grants;
use crate::protocol::{self, ErrorCode};
use crate::rules::Joiners;
use crate::trace::TraceId;

/// A refused room: the code and the message the client is sent.
pub(crate) type Refusal = (ErrorCode, String);

/// The connection asking to join.
pub(crate) struct Joiner<'a> {
    /// Connection id, shown to the join hook.
    pub conn: &'a str,
    /// User id.
    pub user: &'a str,
    /// What its token (or anonymity) allows.
    pub grants: &'a Grants,
    /// The connection's trace, continued by the join hook's request.
    pub trace: TraceId,
}

/// Whether `who` may join `room`: its name, the token's grants, the join
/// hook where the room's rule says so.
pub(crate) async fn check_join(app: &App, who: &Joiner<'_>, room: &str) -> Result<(), Refusal> {
    protocol::check_room(room).map_err(|m| (ErrorCode::BadRequest, m.to_string()))?;
    check_grants(who.user, who.grants, room, "join")?;
    if app.live().rules.for_room(room).join != Joiners::Hook {
        return Ok(());
    }
    match app.hooks() {
        Some(hooks) => hooks.join(who.conn, who.user, room, who.trace).await,
        None => Err((
            ErrorCode::Forbidden,
            format!("cannot join {room}: the join hook decides and no [hooks] url is set"),
        )),
    }
}

/// Whether the token (or anonymity) lets `user` `what` (join, publish to,
/// read history of...) `room`: personal rooms are their owner's (and
/// admins'), others follow the `rooms` claim.
pub(crate) fn check_grants(
    user: &str,
    grants: &Grants,
    room: &str,
    what: &str,
) -> Result<(), Refusal> {
    if grants.allows(user, room) {
        return Ok(());
    }
    let why = if protocol::is_personal(room) {
        "personal rooms belong to their user"
    } else {
        "not in this token's rooms"
    };
    Err((ErrorCode::Forbidden, format!("cannot {what} {room}: {why}")))
}

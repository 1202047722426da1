//! Server-side subscribe and unsubscribe (`POST /api/subscribe`,
//! `/api/unsubscribe`), applied by the connection's own task between the
//! client's frames, so their `joined` / `left` keep their place among the
//! frames around them.

use super::{Reject, Session, record_error};
use crate::hub::RoomCommand;
use crate::protocol;

impl Session {
    /// Applies one command. A join is the server's decision: the token's
    /// rooms and the room's `join` rule are not asked, but
    /// `max_rooms_per_conn` holds, and a refused or failed join is an
    /// `error` frame without `id` naming the room. Joining a room already
    /// joined, or leaving one not joined, does nothing and sends nothing.
    pub(crate) async fn on_command(&mut self, cmd: RoomCommand) {
        // Publishes under way finish first, as before any other frame.
        self.drain().await;
        match cmd {
            RoomCommand::Join(room) => {
                if self.joined(&room) {
                    return;
                }
                if let Err(r) = self.join_room(None, &room, None).await {
                    self.refused("subscribe", &room, r);
                }
            }
            RoomCommand::Leave(room) => {
                if !self.joined(&room) {
                    return;
                }
                if let Err(r) = self.leave(None, &room).await {
                    self.refused("unsubscribe", &room, r);
                }
            }
        }
    }

    /// The `error` frame of a command that failed, naming its room.
    fn refused(&self, what: &str, room: &str, r: Reject) {
        let message = format!("server {what} {room:?}: {}", r.message);
        record_error(&self.app.recent, &self.conn, r.code, &message);
        metrics::counter!(crate::metrics::FRAMES_REJECTED, "code" => r.code.as_str()).increment(1);
        self.push(protocol::room_error_frame(room, r.code, &message));
    }
}

//! [`Tap`]: a hub member read by an HTTP handler rather than a socket's
//! writer (long polls, Server-Sent Events), and the guard that takes it
//! out of its rooms.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::App;
use crate::auth::TokenId;
use crate::broker::ConnKey;
use crate::hub::{Commands, RoomCommand, Subscriber};
use crate::outbound::Outbound;

/// A hub member that is not a WebSocket: its queue is read by an HTTP
/// handler (long polls, Server-Sent Events).
pub(crate) struct Tap {
    key: ConnKey,
    out: Outbound,
    /// The user and token of an SSE stream, which user controls close; a
    /// long poll is the API's, no user's.
    holder: Option<(Arc<str>, TokenId)>,
    /// An SSE stream's server-side subscribes, which the stream applies
    /// before it sends its next chunk.
    pub(crate) commands: Commands,
}

impl Tap {
    /// A new member with its own node-local key.
    pub(crate) fn new(app: &App) -> Arc<Tap> {
        Self::held(app, None)
    }

    /// A new member held by a user with a token.
    pub(crate) fn held(app: &App, holder: Option<(Arc<str>, TokenId)>) -> Arc<Tap> {
        Arc::new(Tap {
            key: app.next_conn.fetch_add(1, Ordering::Relaxed),
            out: Outbound::new(app.config.queue_size),
            holder,
            commands: Commands::default(),
        })
    }
}

impl Subscriber for Tap {
    fn key(&self) -> ConnKey {
        self.key
    }
    fn outbound(&self) -> &Outbound {
        &self.out
    }
    fn holder(&self) -> Option<(&str, &TokenId)> {
        self.holder.as_ref().map(|(u, t)| (&**u, t))
    }
    // A long poll (no holder) answers once and takes no command.
    fn command(&self, cmd: RoomCommand) -> bool {
        if self.holder.is_none() {
            return false;
        }
        self.commands.push(cmd);
        self.out.wake();
        true
    }
}

/// Leaves the tap's rooms when dropped (the handler finished, or the client
/// went away and its future was dropped).
pub(crate) struct TapGuard {
    pub app: Arc<App>,
    pub tap: Arc<Tap>,
    pub rooms: Vec<Arc<str>>,
}

impl Drop for TapGuard {
    fn drop(&mut self) {
        // Out of the table shutdown and user controls walk.
        self.app.hub.unregister(&*self.tap);
        let app = self.app.clone();
        let tap = self.tap.clone();
        let rooms = std::mem::take(&mut self.rooms);
        if rooms.is_empty() {
            return;
        }
        self.app.tasks.spawn(async move {
            for room in rooms {
                app.hub.leave(&*tap, &room, false).await;
            }
        });
    }
}

/// Whether a queued frame is a message envelope (the hub also queues
/// presence events for members).
pub(crate) fn is_message(frame: &[u8]) -> bool {
    frame.starts_with(br#"{"type":"message""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_frames() {
        assert!(is_message(br#"{"type":"message","room":"r"}"#));
        assert!(!is_message(br#"{"type":"presence","room":"r"}"#));
    }
}

//! [`Tops`]: where this node's last publish left each room, so that the
//! next publish to the room need not ask the stream first.
//!
//! A publish states the room's last stream sequence it expects
//! (`Nats-Expected-Last-Subject-Sequence`), so a position that is out of
//! date costs a refused publish and a read, never a wrong offset: the
//! server refuses a publish whose expected sequence is not the room's last
//! one, and the publish then reads the room and tries again. What the
//! check cannot see is a stream deleted and made anew, whose sequences
//! start again at 1; so a position is used only while the connection it
//! was learnt on lasts (a NATS restart is a reconnect) and for at most
//! [`FRESH`] after it was learnt, and a node that makes the stream anew
//! forgets them all. Asking the stream cost a JetStream request a publish:
//! measured in docs/benchmarks.md ("a publish without the read").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Longest a learnt position is used.
pub(super) const FRESH: Duration = Duration::from_secs(2);
/// Rooms remembered at once; past it the table starts again.
const MAX_ROOMS: usize = 10_000;

/// A room's position after this node's last publish there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Top {
    /// Stream sequence of the room's last message.
    pub seq: u64,
    /// Its offset.
    pub offset: u64,
    /// Its epoch.
    pub epoch: Arc<str>,
}

/// The positions, each with when and on which connection it was learnt.
pub(super) struct Tops {
    rooms: Mutex<HashMap<Arc<str>, (Top, Instant, u64)>>,
    /// Counts the client's connections (`Event::Connected`).
    connections: watch::Receiver<u64>,
}

impl Tops {
    pub(super) fn new(connections: watch::Receiver<u64>) -> Self {
        Self {
            rooms: Mutex::default(),
            connections,
        }
    }

    /// The room's position, if learnt on this connection within
    /// [`FRESH`]; taken out, since the publish that takes it moves it on.
    pub(super) fn take(&self, room: &str) -> Option<Top> {
        let (top, at, connection) = crate::lock(&self.rooms).remove(room)?;
        (connection == *self.connections.borrow() && at.elapsed() < FRESH).then_some(top)
    }

    /// Remembers where a publish left the room.
    pub(super) fn put(&self, room: &Arc<str>, top: Top) {
        let connection = *self.connections.borrow();
        let mut rooms = crate::lock(&self.rooms);
        if rooms.len() >= MAX_ROOMS {
            rooms.clear();
        }
        rooms.insert(room.clone(), (top, Instant::now(), connection));
    }

    /// Forgets every position (the stream was made anew).
    pub(super) fn clear(&self) {
        crate::lock(&self.rooms).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(seq: u64) -> Top {
        Top {
            seq,
            offset: seq * 10,
            epoch: Arc::from("e"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_position_is_taken_once_within_its_time_on_its_connection() {
        let (tx, rx) = watch::channel(1);
        let tops = Tops::new(rx);
        let room: Arc<str> = Arc::from("r");
        tops.put(&room, top(5));
        assert_eq!(tops.take("r"), Some(top(5)));
        assert_eq!(tops.take("r"), None, "taken out by the publish using it");
        assert_eq!(tops.take("other"), None);

        tops.put(&room, top(6));
        tokio::time::advance(FRESH).await;
        assert_eq!(tops.take("r"), None, "too old");

        tops.put(&room, top(7));
        tx.send_modify(|n| *n += 1);
        assert_eq!(tops.take("r"), None, "learnt on the connection before");
        tops.put(&room, top(8));
        assert_eq!(tops.take("r"), Some(top(8)), "learnt on this one");

        tops.put(&room, top(9));
        tops.clear();
        assert_eq!(tops.take("r"), None, "the stream was made anew");
    }

    #[tokio::test]
    async fn the_table_is_bounded() {
        let (_tx, rx) = watch::channel(0);
        let tops = Tops::new(rx);
        for i in 0..MAX_ROOMS + 5 {
            tops.put(&Arc::from(format!("r{i}")), top(1));
        }
        assert!(crate::lock(&tops.rooms).len() <= MAX_ROOMS);
    }
}

//! Server-side subscribe and unsubscribe (PROTOCOL.md section 8): a
//! command for a connection's own task, which applies it between the
//! frames it handles. A join made there goes through [`super::Hub::join`]
//! like a client's, so the `joined` frame and the messages around it keep
//! their order; a join made from outside the task could not promise that.

use std::sync::{Arc, Mutex};

use crate::lock;

/// What the server API asks a connection to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomCommand {
    /// Join the room (`joined` without `id`), unless already in it.
    Join(Arc<str>),
    /// Leave the room (`left` without `id`), if in it.
    Leave(Arc<str>),
}

/// Commands waiting for their connection's task, oldest first. Empty and
/// unallocated nearly always: it costs an idle connection 32 bytes.
#[derive(Debug, Default)]
pub(crate) struct Commands(Mutex<Vec<RoomCommand>>);

impl Commands {
    /// Adds a command; the caller then wakes the connection's task.
    pub(crate) fn push(&self, cmd: RoomCommand) {
        lock(&self.0).push(cmd);
    }

    /// Every waiting command, oldest first (none: an empty list, which
    /// does not allocate).
    pub(crate) fn take(&self) -> Vec<RoomCommand> {
        std::mem::take(&mut *lock(&self.0))
    }

    /// Whether a command waits.
    pub(crate) fn waiting(&self) -> bool {
        !lock(&self.0).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_come_out_in_order_once() {
        let c = Commands::default();
        assert!(!c.waiting());
        c.push(RoomCommand::Join("a".into()));
        c.push(RoomCommand::Leave("a".into()));
        assert!(c.waiting());
        assert_eq!(
            c.take(),
            vec![
                RoomCommand::Join("a".into()),
                RoomCommand::Leave("a".into())
            ]
        );
        assert!(!c.waiting());
        assert!(c.take().is_empty());
    }
}

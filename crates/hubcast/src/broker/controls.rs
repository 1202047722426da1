//! User controls (PROTOCOL.md section 8): disconnects, blocks, token
//! revocations and server-side subscribes, which every node must apply to its own connections and
//! handshakes. An engine carries them between nodes and, when it is shared
//! (Redis), keeps blocks and revocations so that a node started later
//! knows them; what a node does with them is `crate::controls`.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BrokerError;

/// One user control, as sent to every node. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum UserCommand {
    /// Close the user's connections with 4005.
    Disconnect { user: Arc<str> },
    /// Close the user's connections with 4004 and refuse their handshakes
    /// until `until` (`None`: until unblocked).
    Block { user: Arc<str>, until: Option<u64> },
    /// Lift a block.
    Unblock { user: Arc<str> },
    /// Refuse tokens with this `jti` until `until`; close connections that
    /// used one with 4004.
    RevokeJti { jti: Arc<str>, until: u64 },
    /// Refuse the user's tokens issued before `before` (Unix seconds), or
    /// without `iat`, until `until`; close connections that used one.
    RevokeIssuedBefore {
        user: Arc<str>,
        before: u64,
        until: u64,
    },
    /// Join the user's open connections to `room`.
    Subscribe { user: Arc<str>, room: Arc<str> },
    /// Take the user's open connections out of `room`.
    Unsubscribe { user: Arc<str>, room: Arc<str> },
}

impl UserCommand {
    /// Whether the command leaves state behind (blocks and revocations),
    /// which a node started later must load. A disconnect or a subscribe
    /// is about the connections open when it arrives.
    pub fn persists(&self) -> bool {
        !matches!(
            self,
            Self::Disconnect { .. } | Self::Subscribe { .. } | Self::Unsubscribe { .. }
        )
    }
}

/// Where an engine delivers user controls on this node.
pub trait ControlSink: Send + Sync + 'static {
    /// A command sent by any node (this one included), in the order the
    /// engine received them.
    fn apply(&self, cmd: &UserCommand);
    /// Replaces every block and revocation with `state` (commands that
    /// persist): at start, and after the engine may have missed commands.
    fn load(&self, state: Vec<UserCommand>);
}

/// The cluster-wide path of user controls.
#[async_trait]
pub trait UserControls: Send + Sync + 'static {
    /// Keeps the command (when it persists) and delivers it to every
    /// node's sink, this node's included, within a second.
    async fn command(&self, cmd: UserCommand) -> Result<(), BrokerError>;

    /// Loads the kept state into `sink`, then delivers every later command
    /// to it until the engine closes. Called once, at start. Weak: the
    /// sink reaches the hub, which holds the engine.
    async fn follow(&self, sink: Weak<dyn ControlSink>) -> Result<(), BrokerError>;

    /// Every user blocked now, cluster-wide, with when the block ends
    /// (Unix ms; `None`: until unblocked), in no order: the engine's kept
    /// state, not this node's copy, so it is the same on every node.
    async fn blocked(&self) -> Result<Vec<(Arc<str>, Option<u64>)>, BrokerError>;
}

//! Key and channel names: every key of a room carries the room as a hash
//! tag, `{room}`, so a room's keys and channel share a cluster slot.

use std::sync::Arc;

/// Key names for one deployment prefix.
#[derive(Clone)]
pub(super) struct Keys {
    pub(super) prefix: Arc<str>,
}

impl Keys {
    pub(super) fn room(&self, room: &str, suffix: &str) -> String {
        format!("{}:{{{}}}:{}", self.prefix, room, suffix)
    }
    pub(super) fn channel(&self, room: &str) -> String {
        self.room(room, "c")
    }
    pub(super) fn idem(&self, room: &str, msg_id: &str) -> String {
        format!("{}:{{{}}}:i:{}", self.prefix, room, msg_id)
    }
    pub(super) fn user(&self, user: &str) -> String {
        format!("{}:u:{}", self.prefix, user)
    }
    pub(super) fn user_rooms(&self, user: &str) -> String {
        format!("{}:ur:{}", self.prefix, user)
    }
    /// Sorted set: node id → lease expiry (Unix ms).
    pub(super) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    /// Hash: a node's connections (connection id → user).
    pub(super) fn node_conns(&self, node: &str) -> String {
        format!("{}:nc:{}", self.prefix, node)
    }
    /// Set: rooms a node has presence entries in.
    pub(super) fn node_rooms(&self, node: &str) -> String {
        format!("{}:np:{}", self.prefix, node)
    }
    /// String: what a node's readiness probe writes (see `ready`).
    pub(super) fn ready_probe(&self, node: &str) -> String {
        format!("{}:ready:{}", self.prefix, node)
    }
    /// String: set by the node that reaped `node`, kept until `node`
    /// registers its entries again (see `renew_lease`).
    pub(super) fn reaped(&self, node: &str) -> String {
        format!("{}:reaped:{}", self.prefix, node)
    }
    /// A node's reaping claim.
    pub(super) fn reap_lock(&self, node: &str) -> String {
        format!("{}:reap:{}", self.prefix, node)
    }
    /// Stream: webhook events, read by one consumer group per webhook.
    pub(super) fn webhook_stream(&self) -> String {
        format!("{}:wh:s", self.prefix)
    }
    /// Sorted set: pending (delayed) webhook events, `r\n<room>` or
    /// `u\n<user>` → due time (Unix ms).
    pub(super) fn webhook_pending(&self) -> String {
        format!("{}:wh:z", self.prefix)
    }
    /// Hash: a pending event's member → when it happened (Unix ms).
    pub(super) fn webhook_pending_time(&self) -> String {
        format!("{}:wh:t", self.prefix)
    }
    /// String: the node delivering a webhook (its lease).
    pub(super) fn webhook_lease(&self, group: &str) -> String {
        format!("{}:wh:l:{group}", self.prefix)
    }
    /// The room of a channel name, when it is one of ours.
    pub(super) fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(&*self.prefix)?
            .strip_prefix(":{")?
            .strip_suffix("}:c")
    }
}

//! In-order delivery of a room's publications: gap filling from the stream.

use std::sync::Arc;

use crate::broker::BrokerError;
use crate::protocol::json_string;

use super::Shared;
use super::codec::{self, ChannelMessage};

/// Per subscribed room: the last offset delivered to the hub.
pub(super) struct RoomPos {
    pub(super) epoch: Arc<str>,
    pub(super) last: u64,
    /// The room as a JSON string, for the envelopes (escaped once, not per
    /// message).
    pub(super) room_json: Box<str>,
}

impl RoomPos {
    pub(super) fn new(room: &str, epoch: Arc<str>, last: u64) -> Self {
        Self {
            epoch,
            last,
            room_json: json_string(room).into_boxed_str(),
        }
    }
}

/// Delivers the stream's entries after `pos.last` (up to `upto`, exclusive,
/// when given). Reports a reset when the stream no longer holds them. An
/// error means Redis could not be read: nothing was skipped, and the caller
/// must not deliver anything newer before trying again.
pub(super) async fn catch_up(
    shared: &Shared,
    room: &str,
    pos: &mut RoomPos,
    upto: Option<u64>,
) -> Result<(), BrokerError> {
    let mut read = shared.recover_raw(room, pos.last as i64).await;
    if let Ok((epoch, _, _)) = &read
        && *epoch != pos.epoch
    {
        // Redis lost the room and it restarted with a new epoch: that is how
        // the protocol tells clients history is gone. Follow the new stream
        // from its start.
        tracing::info!(room, old = %pos.epoch, new = %epoch, "room restarted with a new epoch");
        pos.epoch = epoch.clone();
        pos.last = 0;
        read = shared.recover_raw(room, 0).await;
    }
    let (epoch, top, entries) = read?;
    let Some(handler) = shared.handler() else {
        return Ok(());
    };
    if epoch != pos.epoch {
        // Restarted again between the two reads: start over later.
        pos.epoch = epoch;
        pos.last = top;
        handler.on_reset(room);
        return Ok(());
    }
    let end = upto.map_or(top, |u| u.saturating_sub(1).min(top));
    // Deliver the unbroken run that follows what was delivered last.
    for e in entries {
        if e.offset > end || e.offset != pos.last + 1 {
            break;
        }
        handler.on_publication(
            room,
            &shared.publication(
                &pos.room_json,
                e.offset,
                &epoch,
                &e.node,
                &e.key,
                &e.payload,
            ),
        );
        pos.last = e.offset;
    }
    if pos.last < end {
        tracing::warn!(
            room,
            from = pos.last + 1,
            to = end,
            "messages missing from the stream"
        );
        handler.on_reset(room);
        pos.last = end;
    }
    Ok(())
}

/// Delivers one channel message, after filling the gap before it from the
/// stream. An error (the stream could not be read) delivers nothing.
pub(super) async fn on_message(
    shared: &Shared,
    room: &str,
    pos: &mut RoomPos,
    message: &[u8],
) -> Result<(), BrokerError> {
    let Some(handler) = shared.handler() else {
        return Ok(());
    };
    let (offset, epoch, node, key, payload) = match codec::decode(message) {
        None => return Ok(()),
        Some(ChannelMessage::Presence(event)) => {
            handler.on_presence(room, &event);
            return Ok(());
        }
        Some(ChannelMessage::Publication {
            offset,
            epoch,
            node,
            key,
            payload,
        }) => (offset, epoch, node, key, payload),
    };
    if *epoch != *pos.epoch {
        // A new epoch: Redis lost the room's history. Clients see the new
        // epoch in the envelopes; follow the new stream from its start.
        tracing::info!(room, old = %pos.epoch, new = %epoch, "room restarted with a new epoch");
        pos.epoch = Arc::from(&*epoch);
        pos.last = 0;
    }
    if offset <= pos.last {
        return Ok(());
    }
    if offset > pos.last + 1 {
        catch_up(shared, room, pos, Some(offset)).await?;
    }
    let epoch = pos.epoch.clone();
    handler.on_publication(
        room,
        &shared.publication(&pos.room_json, offset, &epoch, &node, &key, payload),
    );
    pos.last = offset;
    Ok(())
}

//! In-order delivery of a room's publications: gap filling from the stream.

use std::sync::Arc;

use bytes::Bytes;

use crate::broker::{BrokerError, PresenceEvent};
use crate::protocol::PresenceAction;

use super::{Shared, parse_status};

/// Per subscribed room: the last offset delivered to the hub.
pub(super) struct RoomPos {
    pub(super) epoch: Arc<str>,
    pub(super) last: u64,
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
            &shared.publication(e.offset, &epoch, &e.node, &e.key, e.envelope),
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

/// Delivers one pub/sub payload, after filling the gap before it from the
/// stream. An error (the stream could not be read) delivers nothing.
pub(super) async fn on_message(
    shared: &Shared,
    room: &str,
    pos: &mut RoomPos,
    payload: &[u8],
) -> Result<(), BrokerError> {
    let Some(handler) = shared.handler() else {
        return Ok(());
    };
    if let Some(rest) = payload.strip_prefix(b"p\n") {
        let text = String::from_utf8_lossy(rest);
        let mut it = text.split('\n');
        let (Some(action), Some(user), Some(name), Some(status)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Ok(());
        };
        let action = match action {
            "join" => PresenceAction::Join,
            "leave" => PresenceAction::Leave,
            _ => PresenceAction::Status,
        };
        handler.on_presence(
            room,
            &PresenceEvent {
                action,
                user: Arc::from(user),
                name: Arc::from(name),
                status: parse_status(Some(status)),
            },
        );
        return Ok(());
    }
    // offset \n epoch \n node \n key \n envelope
    let mut parts = payload.splitn(5, |b| *b == b'\n');
    let (Some(off), Some(epoch), Some(node), Some(key), Some(env)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Ok(());
    };
    let Some(offset) = std::str::from_utf8(off)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let epoch = String::from_utf8_lossy(epoch);
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
    let node = String::from_utf8_lossy(node);
    let key = String::from_utf8_lossy(key);
    let epoch = pos.epoch.clone();
    handler.on_publication(
        room,
        &shared.publication(offset, &epoch, &node, &key, Bytes::copy_from_slice(env)),
    );
    pos.last = offset;
    Ok(())
}

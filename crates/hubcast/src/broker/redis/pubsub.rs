//! The node's pub/sub side.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerError;

use super::rooms::{Rooms, SubscribeError};
use super::{COMMAND_TIMEOUT, MAX_BACKOFF, Shared, UNSUBSCRIBE_DELAY, unavailable};

/// What the pub/sub task is asked to do.
pub(super) enum SubCmd {
    Subscribe(Arc<str>, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(Arc<str>),
}

/// Owns the node's pub/sub connection: subscribes and unsubscribes rooms on
/// request, delivers messages in order, fills gaps from the streams, and
/// reconnects (resubscribing and catching up) when the connection drops.
pub(super) async fn pubsub_task(
    shared: Arc<Shared>,
    client: redis::Client,
    mut rx: mpsc::UnboundedReceiver<SubCmd>,
    cancel: CancellationToken,
) {
    let mut rooms = Rooms::default();
    let mut backoff = Duration::from_millis(50);
    // Set when the connection is given up for a failed stream read: wait
    // before reconnecting.
    let mut pause = false;
    'connect: loop {
        shared.pubsub_up.store(false, Ordering::SeqCst);
        if std::mem::take(&mut pause) {
            if !wait_serving(backoff, &mut rx, &mut rooms, &cancel).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let pubsub = tokio::select! {
            _ = cancel.cancelled() => return,
            p = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()) => p,
        };
        let pubsub = match pubsub {
            Ok(Ok(p)) => p,
            other => {
                let err = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timeout".to_string(),
                };
                tracing::warn!(error = %err, "redis pub/sub connection failed; retrying");
                pause = true;
                continue 'connect;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Rooms left while disconnected are not resubscribed.
        rooms.retain_live();
        for room in rooms.names() {
            if let Err(e) = sink.subscribe(shared.keys.channel(&room)).await {
                tracing::warn!(error = %e, "redis resubscribe failed");
                continue 'connect;
            }
        }
        // Whatever was published while we were away comes from the streams.
        for room in rooms.names() {
            if let Err(e) = rooms.catch_up(&shared, &room).await {
                tracing::warn!(room = %room, error = %e, "cannot read missed messages from redis; reconnecting");
                pause = true;
                continue 'connect;
            }
        }
        shared.pubsub_up.store(true, Ordering::SeqCst);
        backoff = Duration::from_millis(50);
        if !rooms.is_empty() {
            tracing::info!(
                rooms = rooms.len(),
                "redis pub/sub connected; rooms resubscribed"
            );
        }
        let mut sweep = tokio::time::interval(UNSUBSCRIBE_DELAY / 4);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sweep.tick() => {
                    // Unsubscribe rooms left long enough ago (a room that is
                    // left and joined again in between keeps its subscription).
                    for room in rooms.take_idle() {
                        if sink.unsubscribe(shared.keys.channel(&room)).await.is_err() {
                            continue 'connect;
                        }
                    }
                }
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(SubCmd::Subscribe(room, reply)) => {
                        match rooms.subscribe(&shared, &mut sink, room).await {
                            Err(SubscribeError::Link(e)) => {
                                let _ = reply.send(Err(e));
                                continue 'connect;
                            }
                            r => {
                                let _ = reply.send(r.map_err(SubscribeError::into_inner));
                            }
                        }
                    }
                    Some(SubCmd::Unsubscribe(room)) => rooms.release(&room),
                },
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        tracing::warn!("redis pub/sub connection lost; reconnecting");
                        continue 'connect;
                    };
                    let Some(room) = shared.keys.room_of(msg.get_channel_name()) else { continue };
                    if let Err(e) = rooms.deliver(&shared, room, msg.get_payload_bytes()).await {
                        // Nothing newer is delivered before the gap is
                        // filled: start over, reading the streams again.
                        tracing::warn!(room, error = %e, "cannot read missed messages from redis; reconnecting");
                        pause = true;
                        continue 'connect;
                    }
                }
            }
        }
    }
}

/// Waits `pause` while the pub/sub connection is down, answering
/// subscription requests meanwhile: rooms already subscribed gain a
/// reference, new ones are refused (`unavailable`). False when the task
/// must stop.
pub(super) async fn wait_serving(
    pause: Duration,
    rx: &mut mpsc::UnboundedReceiver<SubCmd>,
    rooms: &mut Rooms,
    cancel: &CancellationToken,
) -> bool {
    let deadline = tokio::time::sleep(pause);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = &mut deadline => return true,
            cmd = rx.recv() => match cmd {
                None => return false,
                Some(SubCmd::Subscribe(room, reply)) => {
                    if rooms.add_live_ref(&room) {
                        let _ = reply.send(Ok(()));
                    } else {
                        let _ = reply.send(Err(unavailable("pub/sub connection down")));
                    }
                }
                Some(SubCmd::Unsubscribe(room)) => rooms.release(&room),
            },
        }
    }
}

/// The cluster's pub/sub: sharded subscriptions on the cluster connection,
/// the same room bookkeeping as [`pubsub_task`] ([`Rooms`]), and a catch-up from the
/// stream whenever a room's subscription is confirmed again.
///
/// The cluster client resubscribes a reconnected master by itself, but it
/// does not say which master dropped, and it may not restore every
/// subscription. So after any disconnection every room
/// counts as unconfirmed, and the task subscribes them again itself until
/// Redis confirms each one (a repeated `SSUBSCRIBE` is harmless: Redis only
/// confirms it once more).
pub(super) async fn cluster_pubsub_task(
    shared: Arc<Shared>,
    sub: ClusterConnection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    mut rx: mpsc::UnboundedReceiver<SubCmd>,
    cancel: CancellationToken,
) {
    let mut rooms = Rooms::default();
    // Rooms whose subscription Redis has not confirmed since the last
    // disconnection, and when to subscribe them again.
    let mut unconfirmed: HashSet<Arc<str>> = HashSet::new();
    let mut resubscribe_at: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(100);
    shared.pubsub_up.store(true, Ordering::SeqCst);
    let mut sweep = tokio::time::interval(UNSUBSCRIBE_DELAY / 4);
    loop {
        let resubscribe = async {
            match resubscribe_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sweep.tick() => {
                for room in rooms.take_idle() {
                    unconfirmed.remove(&room);
                    if let Err(e) = sub.clone().sunsubscribe(shared.keys.channel(&room)).await {
                        tracing::warn!(room = %room, error = %e, "redis sunsubscribe failed");
                    }
                }
            }
            _ = resubscribe => {
                unconfirmed.retain(|r| rooms.contains(r));
                let results = futures_util::future::join_all(unconfirmed.iter().map(|room| {
                    let mut conn = sub.clone();
                    let channel = shared.keys.channel(room);
                    async move { conn.ssubscribe(channel).await }
                }))
                .await;
                if results.iter().any(|r| r.is_err()) {
                    tracing::warn!("redis cluster resubscribe failed; retrying");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    resubscribe_at = Some(tokio::time::Instant::now() + backoff);
                } else {
                    // Confirmations arrive as pushes and clear `unconfirmed`.
                    backoff = Duration::from_millis(100);
                    resubscribe_at = None;
                }
            }
            cmd = rx.recv() => match cmd {
                None => return,
                Some(SubCmd::Subscribe(room, reply)) => {
                    let r = rooms.subscribe(&shared, &mut sub.clone(), room).await;
                    let _ = reply.send(r.map_err(SubscribeError::into_inner));
                }
                Some(SubCmd::Unsubscribe(room)) => rooms.release(&room),
            },
            push = pushes.recv() => {
                let Some(push) = push else { return };
                let channel = push.data.first().and_then(|v| match v {
                    Value::BulkString(b) => std::str::from_utf8(b).ok(),
                    _ => None,
                });
                let room = channel.and_then(|c| shared.keys.room_of(c));
                match push.kind {
                    PushKind::SMessage => {
                        let (Some(room), Some(Value::BulkString(payload))) = (room, push.data.get(1))
                        else { continue };
                        if let Err(e) = rooms.deliver(&shared, room, payload).await {
                            // Not delivered: the resubscription's catch-up
                            // reads it from the stream, in order.
                            tracing::warn!(room, error = %e, "cannot read missed messages from redis; retrying");
                            unconfirmed.insert(Arc::from(room));
                            resubscribe_at.get_or_insert(tokio::time::Instant::now() + backoff);
                        }
                    }
                    PushKind::SSubscribe => {
                        // A (re)subscription: whatever was published while
                        // the shard's connection was down is in the stream.
                        let Some(room) = room else { continue };
                        unconfirmed.remove(room);
                        if let Err(e) = rooms.catch_up(&shared, room).await {
                            tracing::warn!(room, error = %e, "cannot read missed messages from redis; retrying");
                            unconfirmed.insert(Arc::from(room));
                            resubscribe_at.get_or_insert(tokio::time::Instant::now() + backoff);
                        }
                    }
                    PushKind::Disconnection => {
                        tracing::warn!("a redis cluster pub/sub connection dropped; resubscribing");
                        unconfirmed.extend(rooms.names());
                        if resubscribe_at.is_none() {
                            // Give the client a moment to reconnect first.
                            resubscribe_at = Some(tokio::time::Instant::now() + backoff);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

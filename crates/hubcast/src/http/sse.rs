//! `GET /sse`: Server-Sent Events, for browsers behind proxies that break
//! WebSocket.
//!
//! `?rooms=a,b` joins rooms through the hub like a WebSocket connection
//! (buffered join, recovery with `since`); every message goes out as
//! `id: room:offset` and `data: <envelope>`, so a browser's `EventSource`
//! reconnects with `Last-Event-ID` and resumes that room without a gap or a
//! duplicate. Each room first gets a `joined` frame (as on WebSocket) that
//! says whether its recovery succeeded; it and every other non-message
//! frame are named events, so `onmessage` sees envelopes only. Comment lines keep proxies from
//! closing an idle stream. Credentials, origins and connection limits are
//! those of `/ws`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;

use super::error::HttpError;
use super::forwarded::ClientAddr;
use super::handshake::{admit, authenticate, check_origin};
use super::tap::{Tap, TapGuard, is_message};
use crate::App;
use crate::admission;
use crate::broker::{BrokerError, Recovery};
use crate::hub::{Join, RoomCommand, Subscriber};
use crate::protocol::{self, ErrorCode, out};

/// The parts of an envelope that make its event id.
#[derive(Deserialize)]
struct Position {
    room: String,
    offset: u64,
}

/// `room:offset` pairs (the room may itself contain `:`).
fn parse_positions(list: &str, what: &str) -> Result<HashMap<String, u64>, HttpError> {
    let mut out = HashMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (room, off) = item.rsplit_once(':').ok_or_else(|| {
            HttpError::new(
                ErrorCode::BadRequest,
                format!("{what}: {item:?} is not room:offset"),
            )
        })?;
        let off = off.parse::<u64>().map_err(|_| {
            HttpError::new(
                ErrorCode::BadRequest,
                format!("{what}: offset of {room:?} must be a non-negative integer"),
            )
        })?;
        out.insert(room.to_string(), off);
    }
    Ok(out)
}

/// The `type` of a frame the server encoded (`{"type":"joined",...}`): its
/// frames always start with the type, and types are plain ASCII words.
fn frame_type(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(br#"{"type":""#)?;
    let end = rest.iter().position(|&c| c == b'"')?;
    let ty = &rest[..end];
    ty.iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        .then_some(ty)
}

/// One SSE event carrying a frame. Messages are unnamed events with
/// `id: room:offset`, so an `EventSource`'s `onmessage` sees envelopes
/// only; every other frame (`joined`, `presence`, `error`) is a named event
/// (`event: joined`) that a client reads with `addEventListener`.
fn event(frame: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(frame.len() + 64);
    if is_message(frame) {
        if let Ok(p) = serde_json::from_slice::<Position>(frame) {
            b.put_slice(b"id: ");
            b.put_slice(p.room.as_bytes());
            b.put_slice(b":");
            b.put_slice(p.offset.to_string().as_bytes());
            b.put_slice(b"\n");
        }
    } else if let Some(ty) = frame_type(frame) {
        b.put_slice(b"event: ");
        b.put_slice(ty);
        b.put_slice(b"\n");
    }
    // Envelopes are single-line JSON: one data line.
    b.put_slice(b"data: ");
    b.put_slice(frame);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// The stream's state between chunks.
struct Stream {
    app: Arc<App>,
    tap: Arc<Tap>,
    /// Its rooms; leaves them when the stream is dropped.
    guard: TapGuard,
    /// Holds the connection's place in the limits.
    _slot: super::limits::ConnSlot,
    /// Counts the stream as an open `sse` connection.
    _counted: crate::metrics::OpenConnection,
    queue: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    expires: Option<tokio::time::Instant>,
}

impl Stream {
    /// The next chunk: queued frames as events, or a heartbeat comment;
    /// `None` ends the stream (shutdown, token expiry, slow consumer, a
    /// user control).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            for cmd in self.tap.commands.take() {
                self.command(cmd).await;
            }
            let closing = self.tap.outbound().take(&mut self.queue).close;
            if !self.queue.is_empty() {
                let mut chunk = BytesMut::new();
                for f in self.queue.drain(..) {
                    chunk.put(event(&f));
                }
                return Some(chunk.freeze());
            }
            // A shutdown closes the stream through its queue, spread with
            // the others (`crate::drain`); `stop` is the last word.
            if closing.is_some() || self.app.stop.is_cancelled() {
                // The client reconnects with Last-Event-ID and recovers.
                return None;
            }
            let expiry = async {
                match self.expires {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.tap.outbound().notified() => {}
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(b": ping\n\n")),
                _ = self.app.stop.cancelled() => return None,
                _ = expiry => return None,
            }
        }
    }
}

impl Stream {
    /// A server-side subscribe or unsubscribe (PROTOCOL.md section 8), as
    /// on WebSocket: the token's rooms are not asked, `max_rooms_per_conn`
    /// holds, a room already joined (or not joined, for a leave) is left
    /// as it is, and a refused or failed join is an `error` event naming
    /// the room.
    async fn command(&mut self, cmd: RoomCommand) {
        let out = self.tap.outbound();
        match cmd {
            RoomCommand::Join(room) => {
                if self.guard.rooms.contains(&room) {
                    return;
                }
                let max = self.app.live().config.max_rooms_per_conn;
                let refused = if self.guard.rooms.len() >= max {
                    Some((
                        ErrorCode::TooManyRooms,
                        format!("a stream may join at most {max} rooms"),
                    ))
                } else {
                    let sub: Arc<dyn Subscriber> = self.tap.clone();
                    match join(&self.app, &sub, &room, None).await {
                        Ok(name) => {
                            self.guard.rooms.push(name);
                            None
                        }
                        Err(e) => {
                            tracing::warn!(room = %room, error = %e, "server subscribe of an sse stream failed");
                            let code = match e {
                                BrokerError::Unavailable { .. } => ErrorCode::Unavailable,
                                BrokerError::Timeout { .. } => ErrorCode::Timeout,
                                BrokerError::Internal(_) => ErrorCode::Internal,
                            };
                            Some((code, e.client_message().to_string()))
                        }
                    }
                };
                if let Some((code, m)) = refused {
                    out.push(protocol::room_error_frame(
                        &room,
                        code,
                        &format!("server subscribe {room:?}: {m}"),
                    ));
                }
            }
            RoomCommand::Leave(room) => {
                let Some(i) = self.guard.rooms.iter().position(|r| *r == room) else {
                    return;
                };
                self.guard.rooms.swap_remove(i);
                self.app.hub.leave(&*self.tap, &room, false).await;
                out.push(protocol::encode(&out::Left {
                    ty: "left",
                    id: None,
                    room: &room,
                }));
            }
        }
    }
}

/// Joins an SSE stream's `sub` to `room` through the hub, its `joined`
/// event first (recovering after `from` when given).
async fn join(
    app: &App,
    sub: &Arc<dyn Subscriber>,
    room: &str,
    from: Option<u64>,
) -> Result<Arc<str>, BrokerError> {
    let join = Join {
        room,
        explicit: true,
        since: from.map(|s| (s, None)),
    };
    let reply = |rec: &Recovery, ()| {
        Some(protocol::encode(&out::Joined {
            ty: "joined",
            id: None,
            room,
            offset: rec.top,
            epoch: &rec.epoch,
            recovered: from.map(|_| rec.recovered),
            members: &[],
            total: 0,
        }))
    };
    let joined = app
        .hub
        .join(sub, join, std::future::ready(Ok(())), reply)
        .await?;
    Ok(joined.room)
}

/// `GET /sse?rooms=a,b[&since=a:3,b:5][&token=…]`.
pub(crate) async fn sse(
    State(app): State<Arc<App>>,
    Extension(remote): Extension<ClientAddr>,
    headers: HeaderMap,
    trace: Option<Extension<crate::trace::RequestTrace>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, HttpError> {
    let slot = admit(&app, remote)?;
    check_origin(&app, &headers, remote)?;
    let conn_id = format!("s-{}", uuid::Uuid::now_v7());
    let trace = trace.map_or_else(Default::default, |t| crate::trace::TraceId::parse(&t.id));
    let caller = authenticate(&app, &headers, &query, remote, &conn_id, None, trace).await?;
    let rooms: Vec<String> = query
        .get("rooms")
        .map(|r| {
            r.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if rooms.is_empty() && caller.subs.is_empty() {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            "query `rooms` is required: a comma-separated list of rooms",
        ));
    }
    if rooms.len() > app.live().config.max_rooms_per_conn {
        return Err(HttpError::new(
            ErrorCode::TooManyRooms,
            format!(
                "a stream may join at most {} rooms",
                app.live().config.max_rooms_per_conn
            ),
        ));
    }
    for room in &rooms {
        protocol::check_room(room).map_err(|m| HttpError::new(ErrorCode::BadRequest, m))?;
    }
    let mut since = match query.get("since") {
        Some(s) => parse_positions(s, "query `since`")?,
        None => HashMap::new(),
    };
    // Last-Event-ID (sent by EventSource on reconnect) wins for its room.
    if let Some(last) = headers.get("last-event-id") {
        let last = last.to_str().map_err(|_| {
            HttpError::new(ErrorCode::BadRequest, "Last-Event-ID must be room:offset")
        })?;
        since.extend(parse_positions(last, "Last-Event-ID")?);
    }
    // Each room as a WebSocket join is checked (`crate::admission`): a
    // refused room refuses the stream.
    let who = admission::Joiner {
        conn: &conn_id,
        user: &caller.user,
        grants: &caller.grants,
        trace,
    };
    for room in &rooms {
        admission::check_join(&app, &who, room)
            .await
            .map_err(|(code, message)| HttpError::new(code, message))?;
    }

    // Anonymous streams too: a disconnect may name an `anon-` user.
    let tap = Tap::held(
        &app,
        Some((Arc::from(caller.user.as_str()), caller.grants.token.clone())),
    );
    let sub: Arc<dyn Subscriber> = tap.clone();
    let mut guard = TapGuard {
        app: app.clone(),
        tap: tap.clone(),
        rooms: Vec::new(),
    };
    // In the table user controls walk: a block, a revocation or a
    // disconnect ends the stream, a subscribe reaches it.
    app.hub.register(sub.clone());
    // A block or revocation that walked the table between the handshake's
    // check and this registration is seen here (the guard unregisters).
    if !caller.anonymous {
        app.controls
            .admits(&caller.user, &caller.grants.token)
            .map_err(crate::controls::Refusal::into_http)?;
    }
    // The token's `subs` join too, after the named rooms, as on WebSocket:
    // each is checked like a room of `rooms`, but a refused one is an
    // `error` event naming it rather than a refused stream (the client did
    // not ask for it).
    let mut all = rooms;
    for room in caller.subs {
        if all.contains(&room) {
            continue;
        }
        let max = app.live().config.max_rooms_per_conn;
        let refused = if all.len() >= max {
            Err((
                ErrorCode::TooManyRooms,
                format!("a stream may join at most {max} rooms"),
            ))
        } else {
            admission::check_join(&app, &who, &room).await
        };
        match refused {
            Ok(()) => all.push(room),
            Err((code, m)) => {
                tap.outbound().push(protocol::room_error_frame(
                    &room,
                    code,
                    &format!("subs {room:?}: {m}"),
                ));
            }
        }
    }
    for room in &all {
        // On an error, `guard` leaves the rooms joined so far.
        let joined = join(&app, &sub, room, since.get(room).copied()).await?;
        guard.rooms.push(joined);
    }
    tracing::info!(conn = %conn_id, user = %caller.user, rooms = all.len(), "sse stream opened");

    let period = Duration::from_secs(app.config.heartbeat.max(1));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Stream {
        app: app.clone(),
        tap,
        guard,
        _slot: slot,
        _counted: crate::metrics::OpenConnection::new(crate::metrics::Transport::Sse, &app.open),
        queue: VecDeque::new(),
        heartbeat,
        expires: caller.expires,
    };
    // A first chunk at once (the reconnection delay), so clients and
    // proxies see the stream open.
    let first = Bytes::from_static(b"retry: 2000\n\n");
    let body = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(first) })
        .chain(futures_util::stream::unfold(state, |mut st| async move {
            st.next().await.map(|chunk| (Ok(chunk), st))
        }));
    let mut resp = Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx: do not buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_split_at_the_last_colon() {
        let p = parse_positions("a:3, ns:b:5", "x").unwrap();
        assert_eq!(p["a"], 3);
        assert_eq!(p["ns:b"], 5);
        assert!(parse_positions("a", "x").is_err());
        assert!(parse_positions("a:-1", "x").is_err());
    }

    #[test]
    fn message_events_carry_room_and_offset() {
        let e = event(br#"{"type":"message","room":"ns:r","offset":7,"epoch":"e","data":1}"#);
        assert_eq!(
            &e[..],
            &b"id: ns:r:7\ndata: {\"type\":\"message\",\"room\":\"ns:r\",\"offset\":7,\"epoch\":\"e\",\"data\":1}\n\n"[..]
        );
        let j = event(br#"{"type":"joined","room":"r"}"#);
        assert_eq!(
            &j[..],
            &b"event: joined\ndata: {\"type\":\"joined\",\"room\":\"r\"}\n\n"[..]
        );
        let p = event(br#"{"type":"presence","room":"r","action":"join"}"#);
        assert!(p.starts_with(b"event: presence\ndata: "));
        // Not a frame of ours: never a broken event line.
        assert!(event(br#"{"type":"a\nb"}"#).starts_with(b"data: "));
    }
}

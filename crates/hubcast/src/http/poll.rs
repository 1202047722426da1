//! `GET /api/poll`: long polling, for clients that cannot keep a WebSocket.
//!
//! A poll joins the room through the hub like a WebSocket connection does
//! (same buffered join, so nothing published during the join is missed),
//! answers at once with what came after `since`, or waits until something
//! does, or until `timeout`. The room stays subscribed at the broker only
//! while polls (or other members) are in it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::error::HttpError;
use super::forwarded::ClientAddr;
use super::tap::{Tap, TapGuard, is_message};
use crate::App;
use crate::hub::{Join, Subscriber};
use crate::protocol::{self, ErrorCode};

/// Longest `timeout` a poll may ask for, seconds (PROTOCOL.md section 5).
pub(crate) const MAX_TIMEOUT: u64 = 30;
/// `timeout` when none is given.
pub(crate) const DEFAULT_TIMEOUT: u64 = 25;

#[derive(Serialize)]
struct PollReply<'a> {
    room: &'a str,
    epoch: &'a str,
    messages: Vec<&'a RawValue>,
}

/// The query of a poll, checked.
struct PollQuery {
    room: String,
    since: Option<u64>,
    timeout: Duration,
    limit: usize,
}

fn parse_query(q: &[(String, String)]) -> Result<PollQuery, HttpError> {
    let bad = |m: String| HttpError::new(ErrorCode::BadRequest, m);
    let mut room = None;
    let mut since = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut limit = protocol::DEFAULT_HISTORY_LIMIT;
    for (k, v) in q {
        match k.as_str() {
            "room" => room = Some(v.clone()),
            "since" => since = Some(super::api::query_since(v)?),
            "timeout" => {
                timeout = v
                    .parse::<u64>()
                    .ok()
                    .filter(|t| *t <= MAX_TIMEOUT)
                    .ok_or_else(|| {
                        bad(format!(
                            "query `timeout` must be seconds from 0 to {MAX_TIMEOUT}"
                        ))
                    })?;
            }
            "limit" => limit = super::api::query_limit(v)?,
            _ => {}
        }
    }
    let room = room.ok_or_else(|| bad("query `room` is required".into()))?;
    protocol::check_room(&room).map_err(bad)?;
    Ok(PollQuery {
        room,
        since,
        timeout: Duration::from_secs(timeout),
        limit,
    })
}

/// `GET /api/poll?room=R&since=N&timeout=S[&limit=L]`.
pub(crate) async fn poll(
    State(app): State<Arc<App>>,
    Extension(remote): Extension<ClientAddr>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let q = parse_query(&q)?;
    let _slot = super::handshake::hold_poll(&app, remote)?;
    let tap = Tap::new(&app);
    let sub: Arc<dyn Subscriber> = tap.clone();
    // In the table a shutdown walks, so that its close answers the poll
    // in its turn (`crate::drain`); `TapGuard` takes it out.
    app.hub.register(sub.clone());
    let join = Join {
        room: &q.room,
        explicit: false,
        since: q.since.map(|s| (s, None)),
    };
    let joined = app
        .hub
        .join(&sub, join, std::future::ready(Ok(())), |_, ()| None)
        .await?;
    let (room, rec) = (joined.room, joined.recovery);
    let _counted = crate::metrics::OpenConnection::new(crate::metrics::Transport::Poll, &app.open);
    let _guard = TapGuard {
        app: app.clone(),
        tap: tap.clone(),
        rooms: vec![room.clone()],
    };
    let epoch = rec.epoch.clone();
    let reply = |frames: &[Bytes], epoch: &str| -> Response {
        Json(PollReply {
            room: &room,
            epoch,
            messages: frames.iter().map(protocol::as_raw).collect(),
        })
        .into_response()
    };

    // Messages after `since` the room no longer replays in full (trimmed,
    // another epoch, or `since` beyond the room's top after Redis lost it):
    // answer at once with what history still holds after it.
    if let Some(since) = q.since
        && !rec.recovered
        && since != rec.top
    {
        let from = if since > rec.top { 0 } else { since };
        let page = app.broker.history(&room, Some(from), q.limit).await?;
        if !page.publications.is_empty() {
            let frames: Vec<Bytes> = page
                .publications
                .iter()
                .map(|p| p.envelope.clone())
                .collect();
            return Ok(reply(&frames, &page.epoch));
        }
    }

    let deadline = tokio::time::Instant::now() + q.timeout;
    let mut queue = VecDeque::new();
    loop {
        let closing = tap.outbound().take(&mut queue).close;
        queue.retain(|f| is_message(f));
        if !queue.is_empty() || closing.is_some() {
            // A queue overflow (`closing`) keeps what was taken: the client
            // polls again from the last offset it got.
            let frames: Vec<Bytes> = queue.drain(..).take(q.limit).collect();
            return Ok(reply(&frames, &epoch));
        }
        tokio::select! {
            _ = tap.outbound().notified() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(reply(&[], &epoch)),
            _ = app.stop.cancelled() => return Ok(reply(&[], &epoch)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_checks() {
        assert!(parse_query(&q(&[("room", "a")])).is_ok());
        assert!(parse_query(&q(&[])).is_err());
        assert!(parse_query(&q(&[("room", "a b")])).is_err());
        assert!(parse_query(&q(&[("room", "a"), ("timeout", "31")])).is_err());
        assert!(parse_query(&q(&[("room", "a"), ("since", "-1")])).is_err());
        assert!(parse_query(&q(&[("room", "a"), ("limit", "0")])).is_err());
        let p = parse_query(&q(&[("room", "a"), ("since", "4"), ("timeout", "0")])).unwrap();
        assert_eq!((p.since, p.timeout), (Some(4), Duration::ZERO));
    }
}

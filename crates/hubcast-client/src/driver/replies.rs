//! The server's frames on a connection: messages (to their room's
//! delivery state), presence and error events, and replies to requests.

use hubcast_protocol::server::read::{ErrorReply, Head, Position};
use serde_json::Value;
use tokio::time::Instant;

use super::Driver;
use super::outbox::Waiting;
use crate::backoff::random_fraction;
use crate::error::Error;
use crate::events::{Ack, Envelope, Event, Joined, Unreadable};
use crate::rooms::Incoming;

/// The `error` frame in `text` as the client reports it.
fn server_error(text: &[u8]) -> Error {
    let e: ErrorReply = serde_json::from_slice(text).unwrap_or_default();
    Error::Server {
        code: e.code,
        message: e.message,
    }
}

/// The report of a frame that could not be decoded, not even its place.
fn unreadable(error: String, text: &[u8]) -> Event {
    Event::Unreadable(Unreadable {
        position: None,
        error,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

impl Driver {
    /// One text frame from the server. An event the client cannot decode
    /// is reported as [`Event::Unreadable`]: a message in its room's order
    /// when its position can be read, so that a message it cannot decode
    /// does not leave a gap that holds the next ones up.
    pub(super) fn frame(&mut self, text: &[u8]) {
        let Some(head) = Head::parse(text) else {
            self.emit(vec![unreadable("not a JSON object".into(), text)]);
            return;
        };
        let now = Instant::now();
        let cap = self.opts.dedupe_window;
        let mut out = Vec::new();
        match (head.ty(), head.has_id()) {
            (Some("message"), _) => {
                let incoming = match serde_json::from_slice::<Envelope>(text) {
                    Ok(env) => Some(Incoming::Message(env)),
                    Err(e) => match serde_json::from_slice::<Position>(text) {
                        Ok(position) => Some(Incoming::Unreadable {
                            position,
                            error: e.to_string(),
                            text: String::from_utf8_lossy(text).into_owned(),
                        }),
                        Err(_) => {
                            out.push(unreadable(e.to_string(), text));
                            None
                        }
                    },
                };
                if let Some(i) = incoming
                    && let Some(r) = self.rooms.get_mut(i.room())
                {
                    r.accept(i, &mut out, cap, now);
                }
            }
            (Some("joined"), false) => match serde_json::from_slice::<Joined>(text) {
                // A room the server joined for us (a token's `subs`). One
                // already tracked is being rejoined by our own `join`
                // (after a reconnect, with `since`), whose reply says what
                // was recovered: this one would only move its position.
                Ok(j) if !self.rooms.contains_key(&j.room) => {
                    out.push(Event::Joined(j.clone()));
                    self.rooms
                        .entry(j.room.clone())
                        .or_default()
                        .on_joined(&j, &mut out, cap, now);
                }
                Ok(_) => {}
                Err(e) => out.push(unreadable(e.to_string(), text)),
            },
            (Some("left"), false) => match serde_json::from_slice::<Value>(text) {
                // The server took us out of a room (`/api/unsubscribe`). A
                // room with a `join` of ours in flight stays: the server
                // handles that join after this leave, and its reply follows.
                Ok(v) => {
                    if let Some(room) = v["room"].as_str()
                        && self.rooms.contains_key(room)
                        && !self
                            .waiting
                            .values()
                            .any(|w| matches!(w, Waiting::Join(r) if r == room))
                    {
                        self.rooms.remove(room);
                        out.push(Event::Left {
                            room: room.to_string(),
                        });
                    }
                }
                Err(e) => out.push(unreadable(e.to_string(), text)),
            },
            (Some("presence"), false) => match serde_json::from_slice::<Value>(text) {
                Ok(v) => presence_events(v, &mut out),
                Err(e) => out.push(unreadable(e.to_string(), text)),
            },
            (Some("error"), false) => {
                if let Error::Server { code, message } = server_error(text) {
                    out.push(Event::Error { code, message });
                }
            }
            (ty, true) => {
                if let Some(w) = head.id_u64().and_then(|id| self.waiting.remove(&id)) {
                    let err = (ty == Some("error")).then(|| server_error(text));
                    self.reply(w, err, text, &mut out, now);
                }
            }
            _ => {}
        }
        self.emit(out);
    }

    /// The reply `text` to a request: `err` when it is an `error` frame.
    fn reply(
        &mut self,
        w: Waiting,
        err: Option<Error>,
        text: &[u8],
        out: &mut Vec<Event>,
        now: Instant,
    ) {
        match w {
            Waiting::Join(room) => match err {
                Some(e) => {
                    let retry = self.opts.retry_delay.mul_f64(0.5 + random_fraction());
                    match self.rooms.get_mut(&room) {
                        // A rejoin (no caller waits on it) refused for a
                        // passing reason: the room stays, and is joined
                        // again with the same `since` a little later, so
                        // what was published meanwhile is still recovered.
                        Some(r) if r.waiters.is_empty() && e.is_passing() => {
                            r.rejoin_at = Some(now + retry);
                            return;
                        }
                        _ => {}
                    }
                    if let Some(r) = self.rooms.remove(&room) {
                        for w in r.waiters {
                            let _ = w.send(Err(e.clone()));
                        }
                    }
                }
                None => {
                    if let (Ok(j), Some(r)) = (
                        serde_json::from_slice::<Joined>(text),
                        self.rooms.get_mut(&room),
                    ) {
                        r.on_joined(&j, out, self.opts.dedupe_window, now);
                    }
                }
            },
            Waiting::Out(key) => {
                // `timeout` too: the outcome is unknown, and the retry
                // carries the same msgId, so the server acks it once.
                if err.as_ref().is_some_and(Error::is_passing) {
                    self.retry_later(key, now);
                    return;
                }
                if let Some(o) = self.outbox.remove(&key) {
                    let r = match err {
                        Some(e) => Err(e),
                        None => serde_json::from_slice::<Ack>(text)
                            .map_err(|e| Error::Io(format!("bad ack: {e}"))),
                    };
                    let _ = o.reply.send(r);
                }
            }
            Waiting::Request(tx, _) => {
                let _ = tx.send(match err {
                    Some(e) => Err(e),
                    None => serde_json::from_slice::<Value>(text)
                        .map_err(|e| Error::Io(format!("bad reply: {e}"))),
                });
            }
            Waiting::Ignore => {}
        }
    }
}

/// A presence event frame as events: a busy room's `batch` (extension)
/// becomes one event per change, each shaped as a 1.1 `presence` event, so
/// an application sees the same events however the server paced them; any
/// other (`join`, `leave`, `status`, and `sync`) is passed on as it is.
fn presence_events(v: Value, out: &mut Vec<Event>) {
    if v["action"] != "batch" {
        out.push(Event::Presence(v));
        return;
    }
    let room = v["room"].clone();
    if let Value::Array(events) = &v["events"] {
        for e in events {
            let mut one = serde_json::Map::new();
            one.insert("type".into(), Value::from("presence"));
            one.insert("room".into(), room.clone());
            if let Value::Object(fields) = e {
                for (k, f) in fields {
                    one.insert(k.clone(), f.clone());
                }
            }
            out.push(Event::Presence(Value::Object(one)));
        }
    }
}

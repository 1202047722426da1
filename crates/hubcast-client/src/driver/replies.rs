//! The server's frames on a connection: messages (to their room's
//! delivery state), presence and error events, and replies to requests.

use hubcast_protocol::ErrorCode;
use hubcast_protocol::server::read::{ErrorReply, Head};
use serde_json::Value;
use tokio::time::Instant;

use super::Driver;
use super::outbox::Waiting;
use crate::error::Error;
use crate::events::{Ack, Envelope, Event, Joined};

/// The `error` frame in `text` as the client reports it.
fn server_error(text: &[u8]) -> Error {
    let e: ErrorReply = serde_json::from_slice(text).unwrap_or_default();
    Error::Server {
        code: e.code,
        message: e.message,
    }
}

impl Driver {
    /// One text frame from the server. A frame the client cannot read is
    /// dropped: the server's frames are JSON objects.
    pub(super) fn frame(&mut self, text: &[u8]) {
        let Some(head) = Head::parse(text) else {
            return;
        };
        let now = Instant::now();
        let cap = self.opts.dedupe_window;
        let mut out = Vec::new();
        match (head.ty(), head.has_id()) {
            (Some("message"), _) => {
                if let Ok(env) = serde_json::from_slice::<Envelope>(text)
                    && let Some(r) = self.rooms.get_mut(&env.room)
                {
                    r.accept(env, &mut out, cap, now);
                }
            }
            (Some("presence"), false) => {
                if let Ok(v) = serde_json::from_slice::<Value>(text) {
                    out.push(Event::Presence(v));
                }
            }
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
                let retry = matches!(&err, Some(Error::Server { code, .. })
                    if code == ErrorCode::Unavailable.as_str()
                        || code == ErrorCode::RateLimited.as_str()
                        || code == ErrorCode::Timeout.as_str());
                if retry {
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

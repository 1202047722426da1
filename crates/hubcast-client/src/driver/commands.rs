//! The handle's commands, online (sent now) or offline (kept until the
//! next connection, or refused when they cannot wait).

use hubcast_protocol::ErrorCode;
use hubcast_protocol::client::Request;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::Driver;
use super::outbox::{Out, Waiting};
use crate::client::Cmd;
use crate::error::Error;

impl Driver {
    pub(super) fn command(&mut self, c: Cmd, online: bool) {
        match c {
            Cmd::Join(room, from, tx) => {
                let r = self.rooms.entry(room.clone()).or_default();
                if let Some((o, e)) = from
                    && r.offset.is_none()
                {
                    r.offset = Some(o);
                    r.epoch = Some(e);
                }
                r.waiters.push(tx);
                if online {
                    self.send_join(&room);
                }
            }
            Cmd::Leave(room, tx) => {
                self.rooms.remove(&room);
                if online {
                    let id = self.id(Waiting::Ignore);
                    let frame: Request<'_> = Request::Leave {
                        id: Some(id),
                        room: &room,
                    };
                    self.out.push(frame.to_text());
                }
                let _ = tx.send(Ok(()));
            }
            Cmd::Publish(msg, t, tx) => {
                if !online && self.outbox.len() >= self.opts.max_queue {
                    let _ = tx.send(Err(Error::QueueFull(self.opts.max_queue)));
                    return;
                }
                let t = if t.is_zero() {
                    self.opts.publish_timeout
                } else {
                    t
                };
                let key = self.next_out;
                self.next_out += 1;
                self.outbox.insert(
                    key,
                    Out {
                        msg,
                        reply: tx,
                        deadline: Instant::now() + t,
                        sent: None,
                        retry_at: None,
                    },
                );
                if online {
                    self.transmit(key);
                }
            }
            Cmd::Request(mut frame, tx) => {
                if !online {
                    let _ = tx.send(Err(Error::Disconnected));
                    return;
                }
                if frame.is_null() {
                    frame = Value::Object(Map::new());
                }
                let Some(fields) = frame.as_object_mut() else {
                    // What the server would answer; the frame is not sent.
                    let _ = tx.send(Err(Error::Server {
                        code: ErrorCode::BadRequest.as_str().into(),
                        message: "a frame must be a JSON object".into(),
                    }));
                    return;
                };
                let id = self.id(Waiting::Request(
                    tx,
                    Instant::now() + self.opts.request_timeout,
                ));
                fields.insert("id".into(), Value::from(id));
                self.out.push(frame.to_string());
            }
            Cmd::Status(s, tx) => {
                if online {
                    self.send_status(&s);
                }
                self.status = Some(s);
                let _ = tx.send(Ok(()));
            }
            Cmd::Token(t) => {
                self.opts.token = Some(t);
                if self.token_expired {
                    self.token_expired = false;
                    self.attempt = 0;
                }
            }
            Cmd::Close(tx) => {
                self.closed = true;
                self.close_waiters.push(tx);
            }
        }
    }

    pub(super) fn send_join(&mut self, name: &str) {
        let id = self.id(Waiting::Join(name.to_string()));
        if let Some(r) = self.rooms.get_mut(name) {
            r.rejoin_at = None;
            let f = r.join_frame(name, id);
            self.out.push(f);
        }
    }

    pub(super) fn send_status(&mut self, status: &str) {
        let id = self.id(Waiting::Ignore);
        let frame: Request<'_> = Request::Status {
            id: Some(id),
            status,
        };
        self.out.push(frame.to_text());
    }
}

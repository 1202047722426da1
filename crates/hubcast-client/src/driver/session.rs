//! One connection, from `welcome` to its end: rejoin the rooms (with
//! `since`, so missed messages are replayed), set the status again, send
//! the waiting publishes, then serve frames, commands and deadlines.

use std::time::Duration;

use hubcast_protocol::client::Request;
use hubcast_protocol::server::read::Welcome;
use hubcast_protocol::{close, personal_room};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout};

use super::outbox::{Waiting, earliest};
use super::{Driver, End};
use crate::error::Error;
use crate::events::{Event, State};
use crate::raw::{Frame, Ws};

/// The shortest ping period: a zero `ping_interval` must not make the
/// driver wake in a loop.
const MIN_PING_PERIOD: Duration = Duration::from_millis(1);

impl Driver {
    /// Runs one connection until it ends (or the client is closed).
    pub(super) async fn session<S>(&mut self, mut ws: Ws<S>) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let welcome = match timeout(self.opts.connect_timeout, ws.await_type("welcome")).await {
            Ok(Ok(w)) => w,
            Ok(Err(Error::Closed { code, reason })) => {
                return End {
                    code: Some(code),
                    reason,
                };
            }
            Ok(Err(e)) => {
                return End {
                    code: None,
                    reason: e.to_string(),
                };
            }
            Err(_) => {
                return End {
                    code: None,
                    reason: "no welcome".into(),
                };
            }
        };
        let w: Welcome = serde_json::from_slice(&welcome).unwrap_or_default();
        let user = w.user;
        if self.user.as_ref().is_some_and(|u| *u != user) {
            self.rooms
                .retain(|name, _| !hubcast_protocol::is_personal(name));
        }
        self.user = Some(user.clone());
        self.user_tx.send_replace(Some(user.clone()));
        self.set_state(State::Connected, None, "");
        let _ = self.events.send(Event::Welcome {
            conn_id: w.conn_id,
            user: user.clone(),
        });
        // The personal room is subscribed automatically; joining it tells
        // its position, and after a reconnect fills the gap.
        self.rooms.entry(personal_room(&user)).or_default();
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            self.send_join(&name);
        }
        if let Some(s) = self.status.clone() {
            self.send_status(&s);
        }
        let keys: Vec<u64> = self.outbox.keys().copied().collect();
        for k in keys {
            self.transmit(k);
        }
        self.serve(ws).await
    }

    /// The connected loop. It sleeps until the earliest deadline: the next
    /// ping, the ping's timeout, the backoff reset, or one of the driver's
    /// own ([`Driver::online_deadline`]).
    async fn serve<S>(&mut self, mut ws: Ws<S>) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ping_period = self.opts.ping_interval.max(MIN_PING_PERIOD);
        let start = Instant::now();
        // Reached once: the connection counts as stable, the backoff resets.
        let mut stable_at = Some(start + self.opts.stable_after);
        let mut next_ping = start + ping_period;
        // When the oldest ping not yet followed by any frame was sent.
        let mut ping_sent: Option<Instant> = None;
        let timer = tokio::time::sleep_until(next_ping);
        tokio::pin!(timer);
        loop {
            for f in std::mem::take(&mut self.out) {
                if let Err(e) = ws.send(f).await {
                    return End {
                        code: Some(close::ABNORMAL),
                        reason: e.to_string(),
                    };
                }
            }
            if self.closed {
                ws.close().await;
                return End {
                    code: Some(close::NORMAL),
                    reason: "client closed".into(),
                };
            }
            let own = earliest(stable_at, ping_sent.map(|s| s + self.opts.ping_timeout));
            let wake =
                earliest(own, self.online_deadline()).map_or(next_ping, |d| d.min(next_ping));
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                f = ws.next_frame() => match f {
                    Frame::Text(t) => {
                        ping_sent = None;
                        self.frame(&t);
                    }
                    Frame::Closed(code) => {
                        return End {
                            code: Some(code),
                            reason: "closed by the server".into(),
                        };
                    }
                },
                cmd = self.cmds.recv() => match cmd {
                    None => self.closed = true,
                    Some(c) => self.command(c, true),
                },
                _ = &mut timer => {
                    let now = Instant::now();
                    if ping_sent.is_some_and(|s| now - s >= self.opts.ping_timeout) {
                        return End {
                            code: Some(close::ABNORMAL),
                            reason: "no reply to ping".into(),
                        };
                    }
                    if now >= next_ping {
                        ping_sent.get_or_insert(now);
                        let id = self.id(Waiting::Ignore);
                        let ping: Request<'_> = Request::Ping { id: Some(id) };
                        self.out.push(ping.to_text());
                        next_ping += ping_period;
                    }
                    if stable_at.is_some_and(|t| now >= t) {
                        self.attempt = 0;
                        stable_at = None;
                    }
                    self.expire();
                    self.retry_and_gaps(now);
                }
            }
        }
    }
}

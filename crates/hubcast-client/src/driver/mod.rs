//! The connection driver: one task per [`Client`](crate::Client) that owns
//! every piece of state, so nothing is shared or locked. It connects,
//! reconnects with backoff, and between connections serves commands
//! ([`Driver::run`], [`Driver::idle`]); [`session`] runs one connection;
//! [`commands`] handles the handle's requests, [`replies`] the server's
//! frames, [`outbox`] the publishes waiting for their ack.
//!
//! The driver sleeps until its next deadline (a publish or request timeout,
//! a retry, a gap, a ping, the end of a backoff), never on a periodic tick:
//! every deadline it sleeps until is one its wake-up handles, so it cannot
//! wake in a loop.

mod commands;
mod connect;
mod outbox;
mod replies;
mod session;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hubcast_protocol::close;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::backoff;
use crate::client::Cmd;
use crate::error::Error;
use crate::events::{Event, State};
use crate::options::Options;
use crate::rooms::RoomState;
use outbox::{Out, Waiting};

/// Far enough to mean "no deadline": idle without a backoff end waits for
/// a command.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// The task behind a [`Client`](crate::Client).
pub(crate) struct Driver {
    /// `ws://host:port/path`, as given to `Client::connect`.
    url: String,
    opts: Options,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<Event>,
    state: watch::Sender<State>,
    user_tx: watch::Sender<Option<String>>,
    /// The user of the last connection: another user's personal room is
    /// forgotten.
    user: Option<String>,
    /// Joined rooms, rejoined after every reconnect.
    rooms: BTreeMap<String, RoomState>,
    /// Publishes and sends until acked, failed or timed out, in call order
    /// (the order they are sent again after a reconnect).
    outbox: BTreeMap<u64, Out>,
    /// Key of the next `outbox` entry.
    next_out: u64,
    /// What the reply to each request id is for.
    waiting: HashMap<u64, Waiting>,
    /// The next request id (ids are never reused within a client).
    next_id: u64,
    /// The status set by the application, set again after a reconnect.
    status: Option<String>,
    /// Failed connection attempts since the last stable connection.
    attempt: u32,
    /// Closed with 4001 and no token callback: wait for `set_token`.
    token_expired: bool,
    /// `close` was called (or the server refused for good).
    closed: bool,
    /// Frames to write on the current connection.
    out: Vec<String>,
    /// `close` callers, told once the task is done.
    close_waiters: Vec<oneshot::Sender<()>>,
}

/// How a connection ended.
pub(crate) struct End {
    /// Its close code (1006: the socket went away; none: never connected).
    pub(crate) code: Option<u16>,
    pub(crate) reason: String,
}

impl Driver {
    pub(crate) fn new(
        url: &str,
        opts: Options,
        cmds: mpsc::UnboundedReceiver<Cmd>,
        events: mpsc::UnboundedSender<Event>,
        state: watch::Sender<State>,
        user_tx: watch::Sender<Option<String>>,
    ) -> Self {
        Driver {
            url: url.to_string(),
            opts,
            cmds,
            events,
            state,
            user_tx,
            user: None,
            rooms: BTreeMap::new(),
            outbox: BTreeMap::new(),
            next_out: 0,
            waiting: HashMap::new(),
            next_id: 1,
            status: None,
            attempt: 0,
            token_expired: false,
            closed: false,
            out: Vec::new(),
            close_waiters: Vec::new(),
        }
    }

    /// Connects until closed: reconnects after each lost connection with
    /// backoff (4005, disconnected by the server API, included), not after
    /// 1008 or 4004 (revoked), and after 4001 only with a new token.
    pub(crate) async fn run(mut self) {
        let mut first = true;
        while !self.closed {
            if self.token_expired {
                self.set_state(State::Closed, Some(close::TOKEN_EXPIRED), "token expired");
                self.idle(None).await;
                continue;
            }
            if !first {
                self.set_state(State::Reconnecting, None, "");
            }
            first = false;
            let end = match self.connect_once().await {
                Ok(ws) => self.session(ws).await,
                Err(e) => End {
                    code: None,
                    reason: e.to_string(),
                },
            };
            self.disconnected();
            if self.closed {
                break;
            }
            match end.code {
                Some(close::POLICY) => {
                    self.closed = true;
                    break;
                }
                // Revoked or blocked: the same credentials would be
                // refused, so the client stops, saying why.
                Some(close::REVOKED) => {
                    self.set_state(State::Closed, end.code, &end.reason);
                    self.closed = true;
                    break;
                }
                Some(close::TOKEN_EXPIRED) if self.opts.token_fn.is_some() => {
                    self.attempt = 0;
                    continue;
                }
                Some(close::TOKEN_EXPIRED) => {
                    self.token_expired = true;
                    continue;
                }
                _ => {}
            }
            let delay = backoff::delay(
                self.opts.min_delay,
                self.opts.max_delay,
                self.attempt,
                backoff::random_fraction(),
            );
            self.attempt += 1;
            self.set_state(State::Reconnecting, end.code, &end.reason);
            self.idle(Some(Instant::now() + delay)).await;
        }
        self.fail_all(Error::ClientClosed);
        self.set_state(State::Closed, None, "closed");
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn set_state(&mut self, s: State, code: Option<u16>, reason: &str) {
        let changed = *self.state.borrow() != s;
        self.state.send_replace(s);
        if changed || s == State::Reconnecting {
            let _ = self.events.send(Event::State {
                state: s,
                code,
                reason: reason.to_string(),
            });
        }
    }

    fn emit(&self, out: Vec<Event>) {
        for e in out {
            let _ = self.events.send(e);
        }
    }

    /// Disconnected: handles commands until `until` (or a new token), and
    /// fails publishes whose timeout passes meanwhile.
    async fn idle(&mut self, until: Option<Instant>) {
        let until = until.unwrap_or_else(|| Instant::now() + FAR);
        let timer = tokio::time::sleep_until(until);
        tokio::pin!(timer);
        loop {
            // Only expiries and `until`: retries and gaps wait for a
            // connection, so waking for them here would spin.
            let wake = self.expiry_deadline().map_or(until, |d| d.min(until));
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                _ = &mut timer => {
                    self.expire();
                    if Instant::now() >= until {
                        return;
                    }
                }
                cmd = self.cmds.recv() => match cmd {
                    None => {
                        self.closed = true;
                        return;
                    }
                    Some(c) => {
                        let was_expired = self.token_expired;
                        self.command(c, false);
                        // Closed, or a new token after a 4001: go now.
                        if self.closed || (was_expired && !self.token_expired) {
                            return;
                        }
                    }
                },
            }
        }
    }

    /// After a connection ended: requests fail, publishes wait to be sent
    /// again, rooms will be rejoined.
    fn disconnected(&mut self) {
        self.out.clear();
        for (_, w) in self.waiting.drain() {
            if let Waiting::Request(tx, _) = w {
                let _ = tx.send(Err(Error::Disconnected));
            }
        }
        for o in self.outbox.values_mut() {
            o.sent = None;
        }
        for r in self.rooms.values_mut() {
            r.stash = None;
        }
    }

    fn fail_all(&mut self, e: Error) {
        for (_, o) in std::mem::take(&mut self.outbox) {
            let _ = o.reply.send(Err(e.clone()));
        }
        for (_, r) in std::mem::take(&mut self.rooms) {
            for w in r.waiters {
                let _ = w.send(Err(e.clone()));
            }
        }
        // Requests and commands still queued.
        while let Ok(c) = self.cmds.try_recv() {
            match c {
                Cmd::Close(tx) => self.close_waiters.push(tx),
                Cmd::Join(_, _, tx) => drop(tx.send(Err(e.clone()))),
                Cmd::Publish(_, _, tx) => drop(tx.send(Err(e.clone()))),
                _ => {}
            }
        }
    }

    /// A new request id, and what its reply is for.
    fn id(&mut self, w: Waiting) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.insert(id, w);
        id
    }
}

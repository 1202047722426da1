//! A Rust client for hubcast (protocol v1) with the browser client's
//! semantics:
//!
//! - reconnects by itself, with exponential backoff and full jitter
//!   (capped, reset after a stable connection; also after
//!   [`close::DISCONNECTED`]); not after a policy close
//!   ([`close::POLICY`]) or a revocation ([`close::REVOKED`]: a token
//!   revoked or a user blocked), nor after an expired token
//!   ([`close::TOKEN_EXPIRED`]) until [`Client::set_token`] (a
//!   [`Options::token_fn`] is asked again on every connect, so it
//!   reconnects at once);
//! - rejoins its rooms with `since`/`epoch`, so missed messages arrive once
//!   and in order; [`Event::Unrecovered`] when the server could not fill
//!   the gap (reload with `history`); a rejoin the server refuses for a
//!   passing reason (`unavailable`, `timeout`, `rate_limited`) is sent
//!   again after [`Options::retry_delay`], the room kept;
//! - delivers each message once (offset order within an epoch, and msgId);
//!   a message it cannot decode is reported in its place
//!   ([`Event::Unreadable`]), never dropped silently;
//! - [`Client::publish`] resolves with the `ack`; a publish whose ack was
//!   lost is sent again with the same `msgId` after a reconnect (the server
//!   acks it as a duplicate; nobody receives it twice); publishes made while
//!   disconnected wait in a bounded queue; each has a timeout;
//! - an application-level `ping` finds a dead connection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hubcast_client::Error> {
//! use hubcast_client::{Client, Event, Options};
//! let (client, mut events) = Client::connect("ws://127.0.0.1:8080/ws", Options::named("ada"));
//! client.join("lobby").await?;
//! client.publish("lobby", "chat.message", serde_json::json!({"text": "hi"})).await?;
//! while let Some(ev) = events.recv().await {
//!     if let Event::Message(m) = ev {
//!         println!("{}: {}", m.source, m.data);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`raw`] is one bare connection, for load tools.
//!
//! # Layout
//!
//! - `client`: the [`Client`] handle; each call is a command to the driver.
//! - `options`: [`Options`] and [`Publish`].
//! - `events`: [`State`] and [`Event`], what the client reports.
//! - `error`: [`Error`].
//! - `rooms`: one room's delivery state (order, dedupe, gaps, replays).
//! - `driver`: the task that owns all state: reconnects with backoff
//!   ([`backoff`], public for callers that retry on their own), runs each connection, keeps the offline queue, retries
//!   and times out publishes, pings; it sleeps until its next deadline.
//! - [`raw`]: one WebSocket connection without bookkeeping.
//!
//! Frames are the [`protocol`] crate's types (the server's own definition):
//! the client builds typed frames and names close codes from there.

pub mod backoff;
mod client;
mod driver;
mod error;
mod events;
mod options;
pub mod raw;
mod rooms;

pub use client::Client;
pub use error::Error;
pub use events::{Ack, Envelope, Event, Joined, Position, State, Unreadable};
pub use hubcast_protocol as protocol;
pub use hubcast_protocol::close;
pub use options::{Options, Publish, TokenFn};

//! hubcast: a real-time messaging server.
//!
//! Browsers and services connect over WebSocket (or Server-Sent Events, or
//! long polling), join rooms, and receive what is published there within
//! milliseconds. The wire protocol is `PROTOCOL.md` (version 1); this crate
//! is the server.
//!
//! # Layout
//!
//! - `server`: wiring: builds the `App`, serves HTTP (plain or TLS)
//!   until the shutdown token fires, closes every connection and waits for
//!   their tasks (`run`, `run_with_broker`, `connect_broker`).
//! - `app`: `App`, the state every handler and connection task shares
//!   (config, hub, broker, presence, limits, counters, rate samples).
//! - [`config`]: every setting, its default, validation naming the key;
//!   `config check` (every bad key named) and `config init`.
//! - `reload`: what a SIGHUP changes: the settings in force (`Live`),
//!   swapped whole and read without a lock.
//! - `drain`: SIGTERM for rolling deploys: readiness first, `drain_delay`,
//!   then 1001 closes spread over `shutdown_timeout`.
//! - [`rules`]: room rules (`[[rooms]]`): a room's effective publish, join,
//!   history and presence rule, first match wins.
//! - [`protocol`]: the `hubcast-protocol` crate's frames, codes and name
//!   rules, re-exported, and the encode-once message envelope
//!   (`protocol::envelope`).
//! - `publish`: the one constructor of a broker publish request, for
//!   WebSocket frames and the HTTP API alike.
//! - [`broker`]: the [`broker::Broker`] trait (offsets, history, recovery,
//!   idempotency), the [`broker::PresenceManager`] trait (presence, user
//!   status) and their engines (memory, Redis, NATS JetStream), each a
//!   folder.
//! - `admission`: who may join a room (name, token grants, join hook),
//!   the one check every way in asks.
//! - `hub`: node-local room membership and fan-out of broker deliveries
//!   into connection queues; `hub::Hub::join`, the one gap- and
//!   duplicate-free way into a room; the table of open connections that a
//!   shutdown walks; the pace of a busy room's presence events.
//! - `outbound`: a connection's bounded outbound queue (frames, the pong
//!   due, the close decision), which the hub fills and a WebSocket writer,
//!   an SSE stream or a long poll drains; `pool` keeps per-thread spares of
//!   the queue and batch buffers.
//! - [`conn`]: one WebSocket connection after the upgrade: `reader` and
//!   `writer` (heartbeats, batching, close codes), [`conn::frame`] (RFC 6455
//!   framing), `conn::session` (what each client frame does) and
//!   `conn::limit` (the frame rate limit).
//! - [`http`]: routes (`/ws` upgrade, `/sse`, `/api/*` with long polling,
//!   health, metrics, static pages), the handshake checks WebSocket and SSE
//!   share, origin checks, connection limits, JSON errors, TLS.
//! - [`auth`]: tokens (`auth/mod.rs`) and what they grant (`auth/grants.rs`).
//! - [`hooks`]: backend hooks (connect, join, publish, rpc): the signed,
//!   pooled, capped requests to the application's backend.
//! - `metrics`, `trace`, `otel`: Prometheus metrics, trace ids, OTLP
//!   export (feature `otlp`).
//! - `recent`: recent errors and notable closes, for the dashboard.
//! - [`bench`](mod@bench): `hubcast bench`, the load tool (scenarios over real sockets).
//! - `small`, `lock`, `clock`: inline-first collections, the poison-recovering
//!   mutex lock, Unix milliseconds.
//!
//! A message's life: `conn::session` parses a `publish`, `publish` makes
//! the broker request, the broker assigns the offset and encodes the
//! envelope once, the hub pushes the same bytes into every local
//! subscriber's queue, and each connection's writer sends its whole queue
//! in one batch. `docs/architecture.md` draws it and says what each module
//! must not touch.

pub(crate) mod admission;
pub(crate) mod app;
pub mod auth;
pub mod bench;
pub mod broker;
mod clock;
pub mod config;
pub mod conn;
pub(crate) mod controls;
pub(crate) mod drain;
// The fuzz targets' entry points (fuzz/, replayed by tests/it/fuzz.rs):
// here because they reach crate-private parsers; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod http;
pub(crate) mod hub;
pub mod jwks;
mod lock;
pub(crate) mod metrics;
#[cfg(feature = "otlp")]
pub mod otel;
pub(crate) mod outbound;
mod pool;
pub mod protocol;
pub(crate) mod publish;
pub(crate) mod recent;
pub(crate) mod reload;
pub mod rules;
pub(crate) mod server;
mod small;
pub(crate) mod trace;
pub(crate) mod webhooks;

pub(crate) use app::App;
pub use clock::unix_ms;
pub(crate) use lock::lock;
pub use server::{run, run_reloadable, run_with_broker};

//! Test harness: a real hubcast server on 127.0.0.1:0 and a real WebSocket
//! client (tokio-tungstenite), talking over real sockets.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
#![allow(dead_code)]

mod client;
mod engines;
mod processes;
mod proxy;
pub(crate) mod raw;
mod server;

pub(crate) use client::*;
pub(crate) use engines::*;
pub(crate) use processes::*;
pub(crate) use proxy::*;
pub(crate) use server::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hubcast::config::Config;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for an expected frame before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Runs a test body once per engine: `both_engines! { #[tokio::test] async
/// fn name(engine) { ... } }` makes `name::memory`, `name::redis` and
/// `name::nats`.
#[macro_export]
macro_rules! both_engines {
    ($(#[$attr:meta])* async fn $name:ident($engine:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($engine: $crate::common::Engine) $body
            $(#[$attr])*
            async fn memory() {
                body($crate::common::Engine::Memory).await
            }
            $(#[$attr])*
            async fn redis() {
                body($crate::common::Engine::Redis).await
            }
            $(#[$attr])*
            async fn nats() {
                body($crate::common::Engine::Nats).await
            }
        }
    };
}

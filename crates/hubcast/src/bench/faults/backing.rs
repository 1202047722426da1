//! The engine the nodes share (`--broker`), a server of the run's own:
//! Redis or NATS JetStream. The faults that act on it (kill and restart
//! it; cut or slow one node's link to it) are the same for both; killing
//! every pub/sub connection at once is Redis's own.

use std::net::SocketAddr;
use std::path::Path;

use super::nats::Nats;
use super::redis::Redis;

/// Which engine the nodes run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Engine {
    /// Redis (`--broker redis`).
    Redis,
    /// NATS JetStream (`--broker nats`).
    Nats,
}

impl Engine {
    /// Its name in the log.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Redis => "Redis",
            Engine::Nats => "NATS",
        }
    }

    /// Its name in the report (`redis`, `nats`).
    pub(crate) fn key(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Nats => "nats",
        }
    }
}

/// The run's engine server.
pub(crate) enum Backing {
    Redis(Redis),
    Nats(Nats),
}

impl Backing {
    /// Starts `engine`'s server, its files in `dir`. `fsync_always`:
    /// Redis's append-only file fsynced on every write (a NATS store is
    /// written through on every write, which a SIGKILL cannot undo).
    pub(crate) async fn start(
        engine: Engine,
        dir: &Path,
        fsync_always: bool,
    ) -> anyhow::Result<Backing> {
        Ok(match engine {
            Engine::Redis => Backing::Redis(Redis::start(&dir.join("redis"), fsync_always).await?),
            Engine::Nats => Backing::Nats(Nats::start(&dir.join("nats")).await?),
        })
    }

    pub(crate) fn engine(&self) -> Engine {
        match self {
            Backing::Redis(_) => Engine::Redis,
            Backing::Nats(_) => Engine::Nats,
        }
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            Backing::Redis(r) => r.addr,
            Backing::Nats(n) => n.addr,
        }
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self) {
        match self {
            Backing::Redis(r) => r.kill(),
            Backing::Nats(n) => n.kill(),
        }
    }

    /// Starts it again (killed first) on its port and files, and waits
    /// until it answers.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        match self {
            Backing::Redis(r) => r.restart().await,
            Backing::Nats(n) => n.restart().await,
        }
    }

    /// `serve`'s arguments for a node reaching it at `link`, with its keys
    /// or stream under `prefix`.
    pub(crate) fn serve_args(&self, link: SocketAddr, prefix: &str) -> Vec<String> {
        let engine = self.engine().key();
        let url = match self {
            Backing::Redis(_) => format!("redis://{link}/"),
            Backing::Nats(_) => format!("nats://{link}"),
        };
        vec![
            "--broker".into(),
            engine.into(),
            format!("--{engine}-url"),
            url,
            format!("--{engine}-prefix"),
            prefix.into(),
        ]
    }

    /// `CLIENT KILL TYPE pubsub` (Redis only): how many were killed.
    pub(crate) async fn kill_pubsub(&self) -> anyhow::Result<i64> {
        match self {
            Backing::Redis(r) => r.kill_pubsub().await,
            Backing::Nats(_) => anyhow::bail!("killing every pub/sub connection is a Redis fault"),
        }
    }
}

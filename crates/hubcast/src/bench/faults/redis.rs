//! The run's private Redis: its own port and directory, the append-only
//! file on and fsynced on every write, so a SIGKILL loses nothing that was
//! acknowledged and a restart brings the rooms' streams and epochs back.
//! A schedule that never stops Redis (`rolling`) fsyncs once a second
//! instead: an fsync per write costs milliseconds on some disks, which
//! would measure the disk rather than the nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::bench::process::Process;

/// A `redis-server` this run started; killed when dropped.
pub(crate) struct Redis {
    pub addr: SocketAddr,
    dir: PathBuf,
    /// `appendfsync always` (else `everysec`).
    fsync_always: bool,
    child: Process,
}

impl Redis {
    /// Starts `redis-server` on a free loopback port, its files in `dir`.
    pub(crate) async fn start(dir: &Path, fsync_always: bool) -> anyhow::Result<Redis> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let addr = crate::bench::nodes::free_port()?;
        let mut redis = Redis {
            addr,
            dir: dir.to_path_buf(),
            fsync_always,
            child: Process::default(),
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// SIGKILL: no shutdown, no last save; what survives is what the
    /// append-only file holds.
    pub(crate) fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts it (again: killed first) on the same port and directory, and
    /// waits until it answers PING (with the append-only file loaded).
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        let log = self.dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                if self.fsync_always {
                    "always"
                } else {
                    "everysec"
                },
                "--save",
                "",
                "--protected-mode",
                "no",
                "--logfile",
            ])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let url = self.url();
        self.child
            .start_serving(&mut cmd, "redis-server", &log, || ping(url.clone()))
            .await
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// `CLIENT KILL TYPE pubsub`: every node loses its subscriptions'
    /// connection at once; how many were killed.
    pub(crate) async fn kill_pubsub(&self) -> anyhow::Result<i64> {
        let mut c = conn(&self.url()).await?;
        let n = tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async::<i64>(&mut c),
        )
        .await
        .context("CLIENT KILL: timeout")??;
        Ok(n)
    }
}

async fn conn(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connect to redis: timeout")??;
    Ok(conn)
}

/// Whether the Redis at `url` answers PING (with its append-only file
/// loaded).
async fn ping(url: String) -> bool {
    let Ok(mut c) = conn(&url).await else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("PING").query_async::<String>(&mut c)
        )
        .await,
        Ok(Ok(_))
    )
}

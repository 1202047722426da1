//! The nodes under test: `hubcast serve` children of this binary on the
//! run's engine (Redis or NATS), each reaching it through its own proxy (to
//! cut or slow that link) and reached by its clients through another (to
//! cut theirs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::backing::Backing;
use super::proxy::Proxy;
use crate::bench::net::get;
use crate::bench::nodes::free_port;
use crate::bench::process::Process;

/// One node.
pub(crate) struct Node {
    /// Its index in the run.
    pub k: usize,
    /// Where it listens (the clients' proxy forwards here).
    pub listen: SocketAddr,
    /// Its link to the engine's server.
    pub engine_link: Proxy,
    /// Its clients' link to it.
    pub client_link: Proxy,
    args: Vec<String>,
    log: PathBuf,
    child: Process,
}

impl Drop for Node {
    /// The process first, then its proxies.
    fn drop(&mut self) {
        self.child.kill();
    }
}

impl Node {
    /// Starts node `k` on `engine` (through a proxy), keys or stream
    /// under `prefix`, its log in `dir`, with `extra` arguments to `serve`.
    pub(crate) async fn start(
        k: usize,
        engine: &Backing,
        prefix: &str,
        lease: u64,
        dir: &std::path::Path,
        extra: &[String],
    ) -> anyhow::Result<Node> {
        let listen = free_port()?;
        let engine_link = Proxy::start(engine.addr()).await?;
        let client_link = Proxy::start(listen).await?;
        let args = [
            vec!["serve".to_string(), "--listen".into(), listen.to_string()],
            engine.serve_args(engine_link.addr, prefix),
            vec!["--presence-lease".into(), lease.to_string()],
            extra.to_vec(),
        ]
        .concat();
        let mut node = Node {
            k,
            listen,
            engine_link,
            client_link,
            args,
            log: dir.join(format!("node{k}.log")),
            child: Process::default(),
        };
        node.spawn()?;
        node.wait_ready(Duration::from_secs(20)).await?;
        Ok(node)
    }

    /// The clients' URL (through their proxy).
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.client_link.addr)
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("find the hubcast binary")?;
        // Appended to: a restarted node's log follows its predecessor's.
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        self.child
            .start(&mut cmd)
            .with_context(|| format!("start {}", exe.display()))
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) fn kill(&mut self) {
        self.child.kill();
    }

    /// Kills it and starts it again on the same port.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready(Duration::from_secs(20)).await
    }

    /// SIGTERM, as a rolling deploy stops a node, and waits (at most
    /// `within`) for it to exit: how it exited, and after how long. One
    /// that does not exit in time is killed, and that is an error.
    pub(crate) async fn terminate(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        self.signal("TERM")?;
        let start = tokio::time::Instant::now();
        while start.elapsed() < within {
            if let Some(status) = self.child.exited() {
                return Ok((status, start.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        bail!("node {} did not exit within {within:?} of SIGTERM", self.k)
    }

    /// Starts it again on the same port after it exited, and waits until
    /// it is ready.
    pub(crate) async fn start_again(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready(Duration::from_secs(20)).await
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`) with kill(1).
    pub(crate) fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("node {} is not running", self.k);
        };
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .context("run kill")?
            .success();
        if !ok {
            bail!("kill -{sig} {pid} failed");
        }
        Ok(())
    }

    /// `/readyz`: `Some(true)` ready, `Some(false)` answered not ready,
    /// `None` no answer within 5 s (longer than the node's own Redis
    /// timeout, so a cut link shows as an answer, not a silence).
    pub(crate) async fn ready(&self) -> Option<bool> {
        get(self.listen, "/readyz", Duration::from_secs(5))
            .await
            .map(|(s, _)| s == 200)
    }

    /// Waits until `/readyz` answers 200.
    pub(crate) async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < end {
            if let Some(status) = self.child.exited() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                // The end of its log: why it stopped.
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                bail!("node {} exited ({status}):\n{tail}", self.k);
            }
            if self.ready().await == Some(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("node {} was not ready within {within:?}", self.k)
    }
}

//! The run's private NATS server: JetStream on, its own port and store
//! directory, so a SIGKILL and a restart bring the rooms' stream and the
//! presence buckets back from the store (what a write handed to the
//! kernel, which a killed process cannot lose).

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::bench::process::Process;

/// A `nats-server -js` this run started; killed when dropped.
pub(crate) struct Nats {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Process,
}

impl Nats {
    /// Starts `nats-server -js` on a free loopback port, its store in `dir`.
    pub(crate) async fn start(dir: &Path) -> anyhow::Result<Nats> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let addr = crate::bench::nodes::free_port()?;
        let mut nats = Nats {
            addr,
            dir: dir.to_path_buf(),
            child: Process::default(),
        };
        nats.restart().await?;
        Ok(nats)
    }

    /// SIGKILL: what survives is what its store holds.
    pub(crate) fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts it (again: killed first) on the same port and store, and
    /// waits until it greets a client (`INFO`).
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        let log = self.dir.join("nats.log");
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .arg("-js")
            .arg("-sd")
            .arg(self.dir.join("store"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let addr = self.addr;
        self.child
            .start_serving(&mut cmd, "nats-server", &log, || greets(addr))
            .await
    }
}

/// Whether a client connecting to `addr` now is greeted with `INFO`.
async fn greets(addr: SocketAddr) -> bool {
    tokio::task::spawn_blocking(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut head = [0u8; 4];
        s.read_exact(&mut head).is_ok() && &head == b"INFO"
    })
    .await
    .unwrap_or(false)
}

//! A child process the bench started (a node, a Redis server): SIGKILLed
//! and reaped when dropped, so no run leaves one behind.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// One child process, or none (not started yet, or gone).
#[derive(Default)]
pub(crate) struct Process(Option<Child>);

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Process {
    /// Starts `cmd` in place of whatever ran before (killed first).
    pub(crate) fn start(&mut self, cmd: &mut Command) -> std::io::Result<()> {
        self.kill();
        self.0 = Some(cmd.spawn()?);
        Ok(())
    }

    /// Its process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// SIGKILL (a stopped process dies of it too), and waits for it to be
    /// gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How it exited, once it has (it is then no longer held); `None`
    /// while it runs or when none was started.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.0.as_mut()?.try_wait().ok()??;
        self.0 = None;
        Some(status)
    }

    /// Starts server `name` with `cmd` (as [`Process::start`]) and waits
    /// until `serving` says it answers: at most 10 s, polled every 50 ms.
    /// A server that exits first fails with its log (`log`).
    pub(crate) async fn start_serving<F: Future<Output = bool>>(
        &mut self,
        cmd: &mut Command,
        name: &str,
        log: &Path,
        serving: impl Fn() -> F,
    ) -> anyhow::Result<()> {
        self.start(cmd)
            .with_context(|| format!("start {name} (is it installed?)"))?;
        for _ in 0..200 {
            if serving().await {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                bail!("{name} exited ({status}):\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{name} did not answer in 10 s")
    }
}

//! A child process the bench started (a node, a Redis server): SIGKILLed
//! and reaped when dropped, so no run leaves one behind.

use std::process::{Child, Command, ExitStatus};

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
}

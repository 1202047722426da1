//! The tasks a part of the harness (a proxy, the balancer, the clients,
//! the memory sampler) owns: cancelled and closed when the part is
//! dropped, so that no task outlives a run that failed half-way.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Default)]
pub(super) struct Owned {
    pub(super) cancel: CancellationToken,
    pub(super) tasks: TaskTracker,
}

impl Owned {
    /// Stops the tasks and waits until they have.
    pub(super) async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tasks.close();
    }
}

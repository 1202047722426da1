//! The tasks a part of the harness (a proxy, the balancer, the clients,
//! the memory sampler) owns: cancelled and closed when the part is
//! dropped, so that no task outlives a run that failed half-way.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Default)]
pub(super) struct Owned {
    pub(super) cancel: CancellationToken,
    pub(super) tasks: TaskTracker,
}

impl Owned {
    /// Runs `work` as one of these tasks, until it ends or they stop.
    pub(super) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = work => {}
            }
        });
    }

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

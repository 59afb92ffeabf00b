//! Background tasks with a lifecycle: every task that loops for the life of the gateway
//! (provider refresh, the invalidation listener, the sweeper, the Sentinel watchers) is
//! spawned through one [`Tasks`], and stops when it is shut down or dropped.
//!
//! One mechanism for all of them: a cancellation token raced against the task's future, so a
//! task stops at its next await point (its connections are dropped, which closes them)
//! without every loop checking a flag of its own. [`Tasks::shutdown`] cancels and then waits
//! for the tasks to end, so "stopped" means ended, not asked to end.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The background tasks of one gateway.
#[derive(Default)]
pub struct Tasks {
    stop: CancellationToken,
    running: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `task` on the current Tokio runtime until it ends or the tasks are shut down.
    /// Must be called inside a runtime (like `tokio::spawn`).
    pub(crate) fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        let handle = tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = stop.cancelled() => tracing::debug!(task = name, "background task stopped"),
                _ = task => {}
            }
        });
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // Forget tasks that ended on their own, so the list stays as long as what runs.
        running.retain(|(_, h)| !h.is_finished());
        running.push((name, handle));
    }

    /// A set of its own (for what a reload may stop, such as a removed provider's refresh),
    /// whose tasks also stop when these are shut down.
    pub(crate) fn child(&self) -> Tasks {
        Tasks {
            stop: self.stop.child_token(),
            running: Mutex::default(),
        }
    }

    /// Tasks not ended yet, by name.
    pub fn running(&self) -> Vec<&'static str> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .iter()
            .filter(|(_, h)| !h.is_finished())
            .map(|(n, _)| *n)
            .collect()
    }

    /// Stop every task and wait (at most `patience`) until they have ended; a task still
    /// running then is aborted. Returns the names of the tasks that had to be aborted.
    pub async fn shutdown(&self, patience: Duration) -> Vec<&'static str> {
        self.stop.cancel();
        let handles = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = tokio::time::Instant::now() + patience;
        let mut aborted = Vec::new();
        for (name, mut h) in handles {
            if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
                h.abort();
                aborted.push(name);
            }
        }
        if !aborted.is_empty() {
            tracing::warn!(tasks = ?aborted, "background tasks did not stop in time; aborted");
        }
        aborted
    }
}

/// Dropping the owner stops the tasks too (they end at their next await point).
impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    async fn forever(ticks: Arc<AtomicUsize>) {
        loop {
            ticks.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_every_task() {
        let tasks = Tasks::new();
        let ticks = Arc::new(AtomicUsize::new(0));
        tasks.spawn("a", forever(ticks.clone()));
        tasks.spawn("b", forever(ticks.clone()));
        tasks.spawn("done", async {});
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(tasks.running(), ["a", "b"]);
        assert_eq!(
            tasks.shutdown(Duration::from_secs(1)).await,
            Vec::<&str>::new()
        );
        assert!(tasks.running().is_empty());
        let seen = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            seen,
            "nothing runs after shutdown"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_owner_stops_the_tasks() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let tasks = Tasks::new();
        tasks.spawn("a", forever(ticks.clone()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(tasks);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let seen = ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), seen);
        assert_eq!(
            Arc::strong_count(&ticks),
            1,
            "the task's future was dropped"
        );
    }
}

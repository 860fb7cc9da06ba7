//! A spawned task that is aborted when its owner is dropped.
//!
//! Key decision: a runner future may be dropped at any time (that is how a
//! caller stops it without draining). Detached helper tasks would then keep
//! running, and a poll task would keep its consumer group membership, so
//! every helper task is owned through this guard.

use tokio::task::JoinHandle;

/// Owns a spawned task and aborts it on drop.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

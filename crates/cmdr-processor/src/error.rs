//! The processing layer's typed errors.
//!
//! Key decision: a handler's own failure is *not* a [`ProcessorError`]; it is a
//! [`crate::HandlerError`] that the runtime retries and finally turns into a
//! rejection or a dead letter. A `ProcessorError` stops a runner: it means the
//! log itself failed, and the safe reaction is to stop and restart from the
//! committed offsets (nothing is lost, nothing is applied twice).

use cmdr_log::LogError;

/// What stops a processor runner.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The log failed while the runner read, appended or committed.
    #[error("log failure while {context}: {source}")]
    Log {
        /// What the runner was doing (with topic and partition where known).
        context: String,
        /// The log's error.
        #[source]
        source: LogError,
    },
    /// The configuration cannot work (for example no handler at all).
    #[error("invalid processor configuration: {0}")]
    Config(String),
    /// An internal task ended unexpectedly (a bug; the runner stops safely).
    #[error("internal task failed: {0}")]
    Internal(String),
    /// A webhook processor's registration changed (or was deleted) while its
    /// runner ran: the runner stopped before skipping a command the new
    /// registration may handle, and a runner with the new one takes over.
    #[error("the registration of webhook processor {0} changed")]
    Superseded(String),
    /// The processor began stopping while an input waited to be retried: the
    /// input stays uncommitted and is handled again after the restart. The
    /// engine expects it while it drains; it never ends a runner.
    #[error("stopped before the input was settled")]
    Interrupted,
}

impl ProcessorError {
    /// Wraps a log error with what was being done.
    pub fn log(context: impl Into<String>, source: LogError) -> Self {
        Self::Log {
            context: context.into(),
            source,
        }
    }
}

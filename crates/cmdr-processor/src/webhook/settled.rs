//! Knowing which commands already have an outcome, so that a webhook
//! processor taking over an action never calls its endpoint for a command
//! another processor settled before.
//!
//! Why: a new registration's consumer group starts at the beginning of the
//! commands topic (so commands sent before any processor existed are still
//! handled). When an action moves from processor `a` to processor `b`, every
//! command `a` already settled would otherwise be POSTed to `b` again and get
//! a second outcome. The runner asks a [`SettledCommands`] (in `cmdr serve`,
//! the index) before each call, after catching it up with the log once at
//! start, when the previous owner has already stopped.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use uuid::Uuid;

/// Answers whether a command has an outcome (see the module docs).
pub trait SettledCommands: Send + Sync + 'static {
    /// Resolves once every record appended to the log before the call is
    /// known, so that [`SettledCommands::is_settled`] sees every outcome
    /// written so far.
    ///
    /// # Errors
    /// A description, when that cannot be reached in reasonable time.
    fn catch_up(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Whether `command` has an outcome (accepted or rejected).
    ///
    /// # Errors
    /// A description, when the answer cannot be read.
    fn is_settled(&self, command: Uuid) -> BoxFuture<'_, Result<bool, String>>;
}

/// A shared [`SettledCommands`], as [`crate::WebhookConfig`] holds it.
#[derive(Clone)]
pub struct SettledCheck(pub Arc<dyn SettledCommands>);

impl fmt::Debug for SettledCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SettledCheck")
    }
}

//! The worked example domain: bank accounts. [`Accounts`] is the command
//! processor (decides), [`Balances`] the read model (answers queries); both
//! fold the same events through a [`Ledger`].
//!
//! ```no_run
//! # async fn demo(log: std::sync::Arc<dyn cmdr_log::Log>) -> Result<(), cmdr_processor::ProcessorError> {
//! use cmdr_processor::example::{self, Balances};
//! let balances = Balances::new(); // clone it into the HTTP handlers that answer queries
//! example::run(log, balances.clone(), async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod accounts;
pub mod balances;
pub mod ledger;

/// The command actions the example's processor handles.
pub const COMMAND_ACTIONS: [&str; 4] = [
    accounts::OPEN_ACCOUNT,
    accounts::DEPOSIT,
    accounts::WITHDRAW,
    accounts::TRANSFER,
];

pub use accounts::Accounts;
pub use balances::Balances;
pub use ledger::Ledger;

use std::future::Future;
use std::sync::Arc;

use cmdr_log::Log;
use tokio::sync::watch;

use crate::ProcessorError;

/// Runs the whole example until `shutdown`: the accounts command processor
/// (its ledger rebuilt from the log first) and the `balances` read model,
/// which callers keep a clone of to answer queries.
///
/// # Errors
/// [`ProcessorError`] when the log fails (both parts are stopped).
pub async fn run(
    log: Arc<dyn Log>,
    balances: Balances,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProcessorError> {
    let accounts = Accounts::load(log.as_ref()).await?;
    let processor = accounts.processor(log.clone()).build()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (log2, read_model_stop, processor_stop) = (log.clone(), stopped(), stopped());
    let read_model = async move { balances.run(log2, read_model_stop).await };
    let commands = processor.run(processor_stop);
    tokio::pin!(read_model, commands);
    let mut shutdown = std::pin::pin!(shutdown);
    // Whichever ends first (shutdown or a failure) stops the other; both drain.
    let (first, other_done) = tokio::select! {
        () = &mut shutdown => (Ok(()), None),
        r = &mut read_model => (r, Some(true)),
        r = &mut commands => (r, Some(false)),
    };
    let _ = stop_tx.send(true);
    let second = match other_done {
        None => {
            let (a, b) = tokio::join!(read_model, commands);
            a.and(b)
        }
        Some(true) => commands.await,
        Some(false) => read_model.await,
    };
    first.and(second)
}

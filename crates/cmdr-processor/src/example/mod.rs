//! The worked example domain: bank accounts. [`Accounts`] is the command
//! processor (decides), [`Balances`] the read model (answers queries); both
//! fold the same events through a [`Ledger`].
//!
//! ```no_run
//! # async fn demo(log: std::sync::Arc<dyn cmdr_log::Log>) -> Result<(), cmdr_processor::ProcessorError> {
//! use cmdr_processor::example::{Accounts, Balances};
//! let accounts = Accounts::load(log.as_ref()).await?;
//! let processor = accounts.processor(log.clone()).build()?;
//! let balances = Balances::new();
//! let (b, l) = (balances.clone(), log.clone());
//! tokio::spawn(async move { b.run(l, std::future::pending()).await });
//! processor.run(std::future::pending()).await
//! # }
//! ```

pub mod accounts;
pub mod balances;
pub mod ledger;

pub use accounts::Accounts;
pub use balances::Balances;
pub use ledger::Ledger;

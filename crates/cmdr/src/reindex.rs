//! `cmdr reindex`: delete the index and rebuild it from the log. Run it with
//! the server stopped.

use std::process::ExitCode;

use anyhow::{Context, Result};
use cmdr_index::Index;

use crate::config::{Settings, StorageArgs};
use crate::storage;

/// Rebuilds the index.
pub async fn run(args: StorageArgs) -> Result<ExitCode> {
    let settings = Settings::for_storage(&args)?;
    let log = storage::open_log(&settings).await?;
    let path = storage::index_path(&settings);
    Index::wipe(&path).with_context(|| format!("removing {}", path.display()))?;
    let index = Index::open(&path).with_context(|| format!("creating {}", path.display()))?;
    index
        .catch_up(log.clone())
        .await
        .context("indexing the log")?;
    let (commands, events) = index.counts()?;
    log.sync().await?;
    println!(
        "reindexed {commands} commands and {events} events into {}",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

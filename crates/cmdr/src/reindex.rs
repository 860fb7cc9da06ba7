//! `cmdr reindex`: empty the index and rebuild it from the log. Run it with
//! the server stopped: the index file is locked first, so a running server
//! is detected before the log is touched.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::config::{Settings, StorageArgs};
use crate::storage;

/// Rebuilds the index.
pub async fn run(args: StorageArgs) -> Result<ExitCode> {
    let Some(settings) = crate::serve::settings_or_report(Settings::for_storage(&args), &args)?
    else {
        return Ok(ExitCode::FAILURE);
    };
    // The log's recovery says on standard error what it cut, if anything.
    crate::serve::init_logging(settings.log_format);
    let log_dir = storage::log_dir(&settings);
    if !log_dir.is_dir() {
        anyhow::bail!(
            "no log to reindex in {} (is --data-dir right?)",
            settings.data_dir.display()
        );
    }
    let index = storage::open_index(&settings)?;
    let log = storage::open_log(&settings).await?;
    index.clear().context("emptying the index")?;
    index
        .catch_up(log.clone())
        .await
        .context("indexing the log")?;
    let (commands, events) = index.counts()?;
    log.sync().await?;
    println!(
        "reindexed {commands} commands and {events} events into {}",
        index.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

//! Opening the data directory: the embedded log in `<data>/log` (with the
//! `commands` and `events` topics created) and the index in `<data>/index.redb`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use cmdr_contract::{COMMANDS_TOPIC, EVENTS_TOPIC};
use cmdr_index::Index;
use cmdr_log::embedded::{EmbeddedLog, LogConfig};
use cmdr_log::Log;

use crate::config::Settings;

/// The log's folder inside the data directory.
pub fn log_dir(settings: &Settings) -> PathBuf {
    settings.data_dir.join("log")
}

/// The index file inside the data directory.
pub fn index_path(settings: &Settings) -> PathBuf {
    settings.data_dir.join("index.redb")
}

/// Opens (and locks) the index. Done before opening the log, so that a
/// second process on the same data directory stops here, before the log's
/// recovery could touch files a running server is writing.
pub fn open_index(settings: &Settings) -> Result<Index> {
    let path = index_path(settings);
    let index = Index::open(&path).map_err(|e| {
        let hint = if e.is_locked() {
            format!(
                " (is another cmdr using {}? one process at a time)",
                settings.data_dir.display()
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("opening the index{hint}: {e}")
    })?;
    index.set_idempotency_ttl(settings.idempotency_ttl);
    Ok(index)
}

/// Opens the embedded log and creates cmdr's topics if they are missing.
pub async fn open_log(settings: &Settings) -> Result<Arc<dyn Log>> {
    let dir = log_dir(settings);
    // No linger: an answered HTTP caller appends again only with its next
    // request, so waiting for it only delays the round (`cmdr bench http`,
    // 64 connections: ~45k/s without, ~40k/s with the 250 µs default).
    let config = LogConfig::new(&dir).max_linger(std::time::Duration::ZERO);
    let log = EmbeddedLog::open(config)
        .await
        .with_context(|| format!("opening the log in {}", dir.display()))?;
    for cut in log.truncations() {
        tracing::warn!(?cut, "the log cut a torn or corrupt tail on open");
    }
    let log: Arc<dyn Log> = Arc::new(log);
    for (topic, partitions, setting) in [
        (
            COMMANDS_TOPIC,
            settings.commands_partitions,
            "commands_partitions",
        ),
        (
            EVENTS_TOPIC,
            settings.events_partitions,
            "events_partitions",
        ),
    ] {
        let info = log
            .create_topic(topic, partitions.unwrap_or(1))
            .await
            .with_context(|| format!("creating the {topic} topic"))?;
        // A topic keeps the partitions it was created with: more would move
        // keys to other partitions, and their order with them. Said only
        // when a number was asked for: a restored multi-partition backup
        // served without its settings is no mistake.
        let Some(partitions) = partitions else {
            continue;
        };
        if info.partitions.len() != partitions as usize {
            tracing::warn!(
                topic,
                partitions = info.partitions.len(),
                configured = partitions,
                "the topic keeps the partitions it was created with; {setting} applies to a new data directory only"
            );
        }
    }
    Ok(log)
}

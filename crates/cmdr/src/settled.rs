//! The index as the webhook runners' [`SettledCommands`]: a command with an
//! indexed outcome is not sent to a processor again (see
//! `cmdr_processor::webhook::settled`).

use std::sync::Arc;
use std::time::Duration;

use cmdr_contract::{CommandStatus, COMMANDS_TOPIC, EVENTS_TOPIC};
use cmdr_index::Index;
use cmdr_log::Log;
use cmdr_processor::webhook::SettledCommands;
use futures::future::BoxFuture;
use uuid::Uuid;

/// How long a runner waits at start for the index to reach the log's end.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);

/// Outcomes as the index knows them.
pub struct IndexedOutcomes {
    /// The log the index follows (for its current end offsets).
    pub log: Arc<dyn Log>,
    /// The index.
    pub index: Index,
}

impl SettledCommands for IndexedOutcomes {
    fn catch_up(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            for topic in [COMMANDS_TOPIC, EVENTS_TOPIC] {
                let info = self.log.topic(topic).await.map_err(|e| e.to_string())?;
                for p in info.partitions {
                    let reached = self
                        .index
                        .wait_indexed(topic, p.partition, p.end_offset, CATCH_UP_WAIT)
                        .await;
                    if !reached {
                        return Err(format!(
                            "the index did not reach {topic}/{} offset {} within {CATCH_UP_WAIT:?}",
                            p.partition, p.end_offset
                        ));
                    }
                }
            }
            Ok(())
        })
    }

    fn is_settled(&self, command: Uuid) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            let view = self.index.command(command).map_err(|e| e.to_string())?;
            Ok(view.is_some_and(|v| v.status != CommandStatus::Pending))
        })
    }
}

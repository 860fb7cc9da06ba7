//! Following a topic from its start without a consumer group: what in-memory
//! read models and command-side state need, since they are rebuilt on every
//! start and so must not resume from a committed offset.

use std::future::Future;
use std::sync::Arc;

use cmdr_log::{Log, LogError, StoredRecord};
use tokio::task::JoinSet;

use crate::ProcessorError;

/// Records read per call while replaying or following.
pub const FOLLOW_BATCH: usize = 1024;

/// Applies every record of `topic` that exists now, partition by partition in
/// offset order, and returns each partition's next offset (to [`follow`] from).
///
/// # Errors
/// [`ProcessorError::Log`].
pub async fn replay(
    log: &dyn Log,
    topic: &str,
    mut apply: impl FnMut(StoredRecord),
) -> Result<Vec<u64>, ProcessorError> {
    let info = log
        .topic(topic)
        .await
        .map_err(|e| ProcessorError::log(format!("describing {topic}"), e))?;
    let mut positions = Vec::with_capacity(info.partitions.len());
    for p in info.partitions {
        let mut next = p.start_offset;
        while next < p.end_offset {
            let batch = read(log, topic, p.partition, next).await?;
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            batch.into_iter().for_each(&mut apply);
        }
        positions.push(next);
    }
    Ok(positions)
}

/// Applies every record appended to `topic` from `positions` (one next offset
/// per partition, as [`replay`] returns) on, as it arrives, until `shutdown`.
/// Records of one partition are applied in order; partitions concurrently.
///
/// # Errors
/// [`ProcessorError::Log`].
pub async fn follow(
    log: Arc<dyn Log>,
    topic: &str,
    positions: Vec<u64>,
    apply: Arc<dyn Fn(StoredRecord) + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProcessorError> {
    let mut tasks = JoinSet::new();
    for (partition, mut next) in positions.into_iter().enumerate() {
        let (log, apply, topic) = (log.clone(), apply.clone(), topic.to_string());
        let partition = partition as u32;
        tasks.spawn(async move {
            loop {
                log.wait_for(&topic, partition, next).await.map_err(|e| {
                    ProcessorError::log(format!("waiting on {topic}/{partition}"), e)
                })?;
                for record in read(log.as_ref(), &topic, partition, next).await? {
                    next = record.offset + 1;
                    apply(record);
                }
            }
        });
    }
    let result = tokio::select! {
        () = shutdown => Ok(()),
        Some(done) = tasks.join_next() => match done {
            Ok(r) => r,
            Err(e) => Err(ProcessorError::Internal(format!("follow task: {e}"))),
        },
    };
    tasks.abort_all();
    result
}

async fn read(
    log: &dyn Log,
    topic: &str,
    partition: u32,
    from: u64,
) -> Result<Vec<StoredRecord>, ProcessorError> {
    match log.read(topic, partition, from, FOLLOW_BATCH).await {
        Ok(batch) => Ok(batch),
        Err(LogError::OffsetOutOfRange { start, .. }) => {
            Box::pin(read(log, topic, partition, start)).await
        }
        Err(e) => Err(ProcessorError::log(
            format!("reading {topic}/{partition} at {from}"),
            e,
        )),
    }
}

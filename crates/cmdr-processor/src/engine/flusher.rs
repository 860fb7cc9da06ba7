//! One task per partition that makes released outputs durable together with
//! the consumer group offset, in order.
//!
//! Key decision: one flush at a time per partition (order), but batches queued
//! meanwhile are coalesced into the next `append_with_commit`, so the log's
//! group commit sees few, large appends under load.
//!
//! Each commit is fenced: it names the offset it continues from
//! ([`OffsetCommit::expected`]). If another member of the group took the
//! partition over in a rebalance and committed past that offset, the log
//! refuses the batch ([`cmdr_log::LogError::Fenced`]) and this runner stops
//! with that error, so a range is never committed, and its outputs appended,
//! twice. The SDK's runner then rejoins the group, from the committed offsets.

use std::sync::Arc;

use cmdr_log::{Log, OffsetCommit, Record};
use tokio::sync::mpsc;

use super::sequencer::{output_bytes, Released};
use crate::ProcessorError;

/// Released batches queued for one partition's flusher before the runner
/// waits for it (backpressure on handling and polling).
pub(crate) const FLUSH_QUEUE: usize = 4096;
/// Most output records coalesced into one append.
pub(crate) const MAX_FLUSH_RECORDS: usize = 8192;
/// Output bytes (about) past which no further release is coalesced into an
/// append: appends stay far from the log's batch limit.
pub(crate) const MAX_FLUSH_BYTES: usize = super::sequencer::MAX_RELEASE_BYTES;

/// Where a flusher writes and which group offset it commits.
pub(crate) struct FlushTarget {
    pub log: Arc<dyn Log>,
    pub group: String,
    pub input_topic: String,
    pub output_topic: String,
    pub partition: u32,
    /// Shared by the flushers of one group: offset-only commits of one group
    /// are made one at a time, because the embedded log rewrites the group's
    /// file on each and two concurrent rewrites of one file can fail.
    pub commit_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Runs until `rx` closes and is drained; stops at the first log failure.
pub(crate) async fn run(
    target: FlushTarget,
    mut rx: mpsc::Receiver<Released>,
) -> Result<(), ProcessorError> {
    // A release received but left for the next append (over the byte budget).
    let mut carried: Option<Released> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        let mut bytes = output_bytes(&first.records);
        let mut records: Vec<Record> = first.records;
        let from = first.from;
        let mut next_offset = first.next_offset;
        // The releases' shares of the flush budget, given back once appended.
        let mut permits = vec![first.permit];
        while records.len() < MAX_FLUSH_RECORDS {
            match rx.try_recv() {
                Ok(more) => {
                    let more_bytes = output_bytes(&more.records);
                    if bytes + more_bytes > MAX_FLUSH_BYTES {
                        carried = Some(more);
                        break;
                    }
                    bytes += more_bytes;
                    records.extend(more.records);
                    permits.push(more.permit);
                    next_offset = more.next_offset;
                }
                Err(_) => break,
            }
        }
        let commit = OffsetCommit {
            group: target.group.clone(),
            topic: target.input_topic.clone(),
            partition: target.partition,
            next_offset,
            expected: Some(from),
        };
        let result = if records.is_empty() {
            let _one_at_a_time = target.commit_lock.lock().await;
            target.log.commit(commit).await
        } else {
            target
                .log
                .append_with_commit(&target.output_topic, records, commit)
                .await
                .map(|_| ())
        };
        drop(permits);
        result.map_err(|e| {
            ProcessorError::log(
                format!(
                    "appending to {} and committing {}/{} at {next_offset} for group {}",
                    target.output_topic, target.input_topic, target.partition, target.group
                ),
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Releases over the byte budget together: the one left for the next
    /// append (carried) is neither lost nor reordered, and the commits end
    /// after the last input.
    #[tokio::test]
    async fn a_release_carried_past_the_byte_budget_follows_in_order() {
        let log = Arc::new(cmdr_log::memory::MemoryLog::new());
        log.create_topic("in", 1).await.unwrap();
        log.create_topic("out", 1).await.unwrap();
        let (tx, rx) = mpsc::channel(8);
        let half = MAX_FLUSH_BYTES / 2 + 1;
        for (i, from) in [0u64, 2, 3].into_iter().enumerate() {
            let released = Released {
                records: vec![Record::new("k", vec![b'a' + i as u8; half])],
                from,
                next_offset: from + if i == 0 { 2 } else { 1 },
                inputs: if i == 0 { 2 } else { 1 },
                ..Released::default()
            };
            tx.send(released).await.unwrap();
        }
        drop(tx);
        let target = FlushTarget {
            log: log.clone(),
            group: "g".into(),
            input_topic: "in".into(),
            output_topic: "out".into(),
            partition: 0,
            commit_lock: Arc::default(),
        };
        run(target, rx).await.unwrap();
        let out = log.read("out", 0, 0, 10).await.unwrap();
        let firsts: Vec<u8> = out.iter().map(|r| r.value[0]).collect();
        assert_eq!(firsts, b"abc");
        assert_eq!(log.committed("g", "in", 0).await.unwrap(), Some(4));
    }
}

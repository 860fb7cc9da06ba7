//! An in-memory [`Log`]: no files, no durability, every operation under one
//! mutex (so `append_with_commit` is trivially atomic). For tests and
//! benchmarks of code written against [`Log`] — processors, the index, the
//! gateway — where the embedded log's disk is not the subject. A consumer
//! group member gets all partitions.
//!
//! ```
//! # async fn demo() -> cmdr_log::Result<()> {
//! use cmdr_log::{memory::MemoryLog, Log, Record};
//! let log = MemoryLog::new();
//! log.create_topic("t", 1).await?;
//! log.append("t", vec![Record::new("k", "v")]).await?;
//! assert_eq!(log.read("t", 0, 0, 10).await?.len(), 1);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{
    partition_for_key, Appended, GroupConsumer, Log, LogError, OffsetCommit, PartitionInfo, Record,
    StartPosition, StoredRecord, TopicInfo,
};
use async_trait::async_trait;
use tokio::sync::watch;

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<Vec<StoredRecord>>>,
    groups: HashMap<(String, String, u32), u64>,
    round_robin: u32,
    /// Set by [`MemoryLog::fail`].
    failure: Option<String>,
}

/// The in-memory log; clones share it.
#[derive(Clone)]
pub struct MemoryLog {
    state: Arc<Mutex<State>>,
    /// Bumped on every append; waiters re-check on change.
    version: Arc<watch::Sender<u64>>,
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Breaks the log for good, as a write that cannot be undone breaks the
    /// embedded one: every later append fails with [`LogError::Closed`]
    /// and [`Log::failure`] says `why`. For tests of what sits on a log.
    pub fn fail(&self, why: &str) {
        self.lock().failure = Some(why.to_string());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn info(name: &str, parts: &[Vec<StoredRecord>]) -> TopicInfo {
        TopicInfo {
            name: name.into(),
            partitions: parts
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionInfo {
                    partition: i as u32,
                    start_offset: 0,
                    end_offset: p.len() as u64,
                })
                .collect(),
        }
    }

    fn do_append(
        &self,
        topic: &str,
        records: Vec<Record>,
        commit: Option<OffsetCommit>,
    ) -> crate::Result<Vec<Appended>> {
        let mut state = self.lock();
        let state = &mut *state;
        if let Some(why) = &state.failure {
            return Err(LogError::Closed(why.clone()));
        }
        if let Some(c) = &commit {
            let key = (c.group.clone(), c.topic.clone(), c.partition);
            if let (Some(expected), Some(&committed)) = (c.expected, state.groups.get(&key)) {
                if expected != committed {
                    return Err(crate::embedded::fenced(c, committed));
                }
            }
        }
        let parts = state
            .topics
            .get_mut(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.into()))?;
        let n = parts.len() as u32;
        let mut out = Vec::new();
        for r in records {
            let partition = match &r.key {
                Some(k) => partition_for_key(k, n),
                None => {
                    state.round_robin = state.round_robin.wrapping_add(1);
                    state.round_robin % n
                }
            };
            let p = &mut parts[partition as usize];
            let offset = p.len() as u64;
            let timestamp = r.timestamp.unwrap_or_else(crate::embedded::now_ms);
            p.push(StoredRecord {
                partition,
                offset,
                timestamp,
                key: r.key,
                headers: r.headers,
                value: r.value,
            });
            out.push(Appended {
                partition,
                offset,
                timestamp,
            });
        }
        if let Some(c) = commit {
            state
                .groups
                .insert((c.group, c.topic, c.partition), c.next_offset);
        }
        self.version.send_modify(|v| *v += 1);
        Ok(out)
    }

    fn read_now(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> crate::Result<Vec<StoredRecord>> {
        let state = self.lock();
        let parts = state
            .topics
            .get(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.into()))?;
        let p = parts
            .get(partition as usize)
            .ok_or_else(|| LogError::UnknownPartition {
                topic: topic.into(),
                partition,
            })?;
        Ok(p.iter().skip(from as usize).take(max).cloned().collect())
    }
}

#[async_trait]
impl Log for MemoryLog {
    fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    async fn create_topic(&self, topic: &str, partitions: u32) -> crate::Result<TopicInfo> {
        let mut state = self.lock();
        let parts = state
            .topics
            .entry(topic.into())
            .or_insert_with(|| vec![Vec::new(); partitions.max(1) as usize]);
        Ok(Self::info(topic, parts))
    }

    async fn topics(&self) -> crate::Result<Vec<TopicInfo>> {
        let state = self.lock();
        Ok(state.topics.iter().map(|(n, p)| Self::info(n, p)).collect())
    }

    async fn topic(&self, topic: &str) -> crate::Result<TopicInfo> {
        let state = self.lock();
        let parts = state
            .topics
            .get(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.into()))?;
        Ok(Self::info(topic, parts))
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> crate::Result<Vec<Appended>> {
        self.do_append(topic, records, None)
    }

    async fn append_with_commit(
        &self,
        topic: &str,
        records: Vec<Record>,
        commit: OffsetCommit,
    ) -> crate::Result<Vec<Appended>> {
        self.do_append(topic, records, Some(commit))
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> crate::Result<Vec<StoredRecord>> {
        self.read_now(topic, partition, from, max)
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> crate::Result<u64> {
        let all = self.read_now(topic, partition, 0, usize::MAX)?;
        Ok(all
            .iter()
            .find(|r| r.timestamp >= ts)
            .map(|r| r.offset)
            .unwrap_or(all.len() as u64))
    }

    async fn wait_for(&self, topic: &str, partition: u32, offset: u64) -> crate::Result<()> {
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            if !self.read_now(topic, partition, offset, 1)?.is_empty() {
                return Ok(());
            }
            rx.changed()
                .await
                .map_err(|_| LogError::Closed("dropped".into()))?;
        }
    }

    async fn commit(&self, c: OffsetCommit) -> crate::Result<()> {
        let mut state = self.lock();
        let key = (c.group.clone(), c.topic.clone(), c.partition);
        if let (Some(expected), Some(&committed)) = (c.expected, state.groups.get(&key)) {
            if expected != committed {
                return Err(crate::embedded::fenced(&c, committed));
            }
        }
        state.groups.insert(key, c.next_offset);
        Ok(())
    }

    async fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> crate::Result<Option<u64>> {
        Ok(self
            .lock()
            .groups
            .get(&(group.into(), topic.into(), partition))
            .copied())
    }

    async fn join_group(
        &self,
        group: &str,
        topic: &str,
        start: StartPosition,
    ) -> crate::Result<Box<dyn GroupConsumer>> {
        let info = self.topic(topic).await?;
        let mut positions = HashMap::new();
        for p in &info.partitions {
            let committed = self.committed(group, topic, p.partition).await?;
            let pos = committed.unwrap_or(match start {
                StartPosition::Earliest => 0,
                StartPosition::Latest => p.end_offset,
                StartPosition::Offset(o) => o,
                StartPosition::Timestamp(t) => {
                    self.offset_for_timestamp(topic, p.partition, t).await?
                }
            });
            positions.insert(p.partition, pos);
        }
        Ok(Box::new(MemoryConsumer {
            log: self.clone(),
            group: group.into(),
            topic: topic.into(),
            positions,
        }))
    }

    async fn sync(&self) -> crate::Result<()> {
        Ok(())
    }
}

struct MemoryConsumer {
    log: MemoryLog,
    group: String,
    topic: String,
    positions: HashMap<u32, u64>,
}

#[async_trait]
impl GroupConsumer for MemoryConsumer {
    async fn poll(&mut self, max: usize) -> crate::Result<Vec<StoredRecord>> {
        let mut rx = self.log.version.subscribe();
        loop {
            rx.borrow_and_update();
            let mut out = Vec::new();
            let mut parts: Vec<u32> = self.positions.keys().copied().collect();
            parts.sort_unstable();
            for p in parts {
                let pos = self.positions[&p];
                let batch = self.log.read_now(&self.topic, p, pos, max - out.len())?;
                if let Some(last) = batch.last() {
                    self.positions.insert(p, last.offset + 1);
                }
                out.extend(batch);
                if out.len() >= max {
                    break;
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            rx.changed()
                .await
                .map_err(|_| LogError::Closed("dropped".into()))?;
        }
    }

    fn assignment(&self) -> Vec<u32> {
        self.positions.keys().copied().collect()
    }

    async fn commit(&mut self, partition: u32, next_offset: u64) -> crate::Result<()> {
        self.log
            .commit(OffsetCommit {
                group: self.group.clone(),
                topic: self.topic.clone(),
                partition,
                next_offset,
                expected: None,
            })
            .await
    }

    fn seek(&mut self, partition: u32, offset: u64) {
        self.positions.insert(partition, offset);
    }

    fn group(&self) -> &str {
        &self.group
    }

    fn topic(&self) -> &str {
        &self.topic
    }
}

//! A minimal in-memory [`Log`] for index tests (append, read, wait_for only).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use cmdr_log::{
    partition_for_key, Appended, GroupConsumer, Log, LogError, OffsetCommit, PartitionInfo, Record,
    Result, StartPosition, StoredRecord, TopicInfo,
};
use tokio::sync::watch;

/// Topics in memory; `appended` ticks on every append to wake `wait_for`.
pub struct MemLog {
    topics: Mutex<HashMap<String, Vec<Vec<StoredRecord>>>>,
    appended: watch::Sender<u64>,
}

impl MemLog {
    pub fn new() -> Self {
        Self {
            topics: Mutex::default(),
            appended: watch::channel(0).0,
        }
    }

    fn end(&self, topic: &str, partition: u32) -> Result<u64> {
        let topics = self.topics.lock().unwrap();
        let t = topics
            .get(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.into()))?;
        let p = t
            .get(partition as usize)
            .ok_or_else(|| LogError::UnknownPartition {
                topic: topic.into(),
                partition,
            })?;
        Ok(p.len() as u64)
    }
}

#[async_trait]
impl Log for MemLog {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<TopicInfo> {
        self.topics
            .lock()
            .unwrap()
            .entry(topic.to_string())
            .or_insert_with(|| vec![Vec::new(); partitions as usize]);
        self.topic(topic).await
    }
    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        unimplemented!()
    }
    async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        let topics = self.topics.lock().unwrap();
        let t = topics
            .get(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.into()))?;
        Ok(TopicInfo {
            name: topic.into(),
            partitions: t
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionInfo {
                    partition: i as u32,
                    start_offset: 0,
                    end_offset: p.len() as u64,
                })
                .collect(),
        })
    }
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>> {
        let mut out = Vec::new();
        {
            let mut topics = self.topics.lock().unwrap();
            let t = topics
                .get_mut(topic)
                .ok_or_else(|| LogError::UnknownTopic(topic.into()))?;
            let n = t.len() as u32;
            for r in records {
                let partition = r.key.as_ref().map_or(0, |k| partition_for_key(k, n));
                let p = &mut t[partition as usize];
                let a = Appended {
                    partition,
                    offset: p.len() as u64,
                    timestamp: r.timestamp.unwrap_or(1),
                };
                p.push(StoredRecord {
                    partition,
                    offset: a.offset,
                    timestamp: a.timestamp,
                    key: r.key,
                    headers: r.headers,
                    value: r.value,
                });
                out.push(a);
            }
        }
        self.appended.send_modify(|g| *g += 1);
        Ok(out)
    }
    async fn append_with_commit(
        &self,
        _: &str,
        _: Vec<Record>,
        _: OffsetCommit,
    ) -> Result<Vec<Appended>> {
        unimplemented!()
    }
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.end(topic, partition)?;
        let topics = self.topics.lock().unwrap();
        let p = &topics[topic][partition as usize];
        Ok(p.iter().skip(from as usize).take(max).cloned().collect())
    }
    async fn offset_for_timestamp(&self, _: &str, _: u32, _: i64) -> Result<u64> {
        unimplemented!()
    }
    async fn wait_for(&self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let mut rx = self.appended.subscribe();
        loop {
            if self.end(topic, partition)? > offset {
                return Ok(());
            }
            rx.changed()
                .await
                .map_err(|_| LogError::Closed("dropped".into()))?;
        }
    }
    async fn commit(&self, _: OffsetCommit) -> Result<()> {
        unimplemented!()
    }
    async fn committed(&self, _: &str, _: &str, _: u32) -> Result<Option<u64>> {
        unimplemented!()
    }
    async fn join_group(
        &self,
        _: &str,
        _: &str,
        _: StartPosition,
    ) -> Result<Box<dyn GroupConsumer>> {
        unimplemented!()
    }
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
}

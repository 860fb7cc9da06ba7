//! Consumer groups inside one process: members of a group share a topic's
//! partitions (partition `p` goes to member `p mod n` in join order), and a
//! rebalance happens whenever a member joins or leaves (is dropped).
//!
//! After a rebalance a member keeps its position in partitions it still has
//! and starts new ones from the group's committed offsets, so records polled
//! but not committed by a member that lost a partition are delivered again
//! (at least once); processors that use
//! [`crate::Log::append_with_commit`] see each record's effects once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use futures::future::select_all;
use tokio::sync::watch;

use super::EmbeddedLog;
use crate::{GroupConsumer, Log, LogError, OffsetCommit, Result, StartPosition, StoredRecord};

/// Membership of one (group, topic).
#[derive(Debug)]
struct Membership {
    members: BTreeSet<u64>,
    /// Bumped on every join and leave; members watch it to rebalance.
    generation: watch::Sender<u64>,
}

/// Tracks the members of every group in this process.
#[derive(Debug, Default)]
pub(crate) struct Coordinator {
    next_member: Mutex<u64>,
    groups: Mutex<HashMap<(String, String), Membership>>,
}

impl Coordinator {
    fn join(&self, group: &str, topic: &str) -> (u64, watch::Receiver<u64>) {
        let id = {
            let mut n = self.next_member.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let m = groups
            .entry((group.to_string(), topic.to_string()))
            .or_insert_with(|| Membership {
                members: BTreeSet::new(),
                generation: watch::Sender::new(0),
            });
        m.members.insert(id);
        m.generation.send_modify(|g| *g += 1);
        (id, m.generation.subscribe())
    }

    fn leave(&self, group: &str, topic: &str, id: u64) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = groups.get_mut(&(group.to_string(), topic.to_string())) {
            m.members.remove(&id);
            m.generation.send_modify(|g| *g += 1);
        }
    }

    /// Partitions of `partitions` assigned to member `id`.
    fn assignment(&self, group: &str, topic: &str, id: u64, partitions: u32) -> Vec<u32> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let Some(m) = groups.get(&(group.to_string(), topic.to_string())) else {
            return Vec::new();
        };
        let n = m.members.len() as u32;
        let Some(index) = m.members.iter().position(|&x| x == id) else {
            return Vec::new();
        };
        (0..partitions).filter(|p| p % n == index as u32).collect()
    }
}

/// A member of a consumer group on the embedded log.
pub(crate) struct Member {
    log: EmbeddedLog,
    group: String,
    topic: String,
    id: u64,
    start: StartPosition,
    generation: watch::Receiver<u64>,
    seen_generation: Option<u64>,
    /// (partition, next offset to read, tail receiver).
    positions: Vec<(u32, u64, watch::Receiver<u64>)>,
    /// Which assigned partition a poll looks at first, for fairness.
    cursor: usize,
}

impl Member {
    pub async fn join(
        log: EmbeddedLog,
        group: &str,
        topic: &str,
        start: StartPosition,
    ) -> Result<Self> {
        log.topic(topic).await?;
        super::validate_name(group).map_err(|_| LogError::InvalidGroupName(group.to_string()))?;
        let (id, generation) = log.inner.coordinator.join(group, topic);
        let mut member = Self {
            log,
            group: group.into(),
            topic: topic.into(),
            id,
            start,
            generation,
            seen_generation: None,
            positions: Vec::new(),
            cursor: 0,
        };
        // Resolve start positions now, so that `Latest` means "from joining on".
        member.rebalance_if_needed().await?;
        Ok(member)
    }

    async fn rebalance_if_needed(&mut self) -> Result<()> {
        let current = *self.generation.borrow_and_update();
        if self.seen_generation == Some(current) {
            return Ok(());
        }
        self.seen_generation = Some(current);
        let topic = self.log.handle(&self.topic)?;
        let assigned = self.log.inner.coordinator.assignment(
            &self.group,
            &self.topic,
            self.id,
            topic.partitions.len() as u32,
        );
        let mut positions = Vec::with_capacity(assigned.len());
        for p in assigned {
            let part = &topic.partitions[p as usize];
            let kept = self
                .positions
                .iter()
                .find(|(q, _, _)| *q == p)
                .map(|(_, o, _)| *o);
            let next =
                match kept.or_else(|| self.log.inner.offsets.get(&self.group, &self.topic, p)) {
                    Some(o) => o,
                    None => match self.start {
                        StartPosition::Earliest => part.start_offset(),
                        StartPosition::Latest => part.end_offset(),
                        StartPosition::Offset(o) => o.max(part.start_offset()),
                        StartPosition::Timestamp(ts) => part.offset_for_timestamp(ts)?,
                    },
                };
            positions.push((p, next, part.subscribe()));
        }
        self.positions = positions;
        Ok(())
    }
}

#[async_trait]
impl GroupConsumer for Member {
    async fn poll(&mut self, max: usize) -> Result<Vec<StoredRecord>> {
        loop {
            self.rebalance_if_needed().await?;
            let topic = self.log.handle(&self.topic)?;
            let n = self.positions.len();
            let mut out = Vec::new();
            for k in 0..n {
                let i = (self.cursor + k) % n;
                let (p, next, rx) = &mut self.positions[i];
                rx.borrow_and_update();
                let got = topic.partitions[*p as usize].read(*next, max - out.len())?;
                if let Some(last) = got.last() {
                    *next = last.offset + 1;
                }
                out.extend(got);
                if out.len() >= max {
                    break;
                }
            }
            self.cursor = self.cursor.wrapping_add(1);
            if !out.is_empty() {
                return Ok(out);
            }
            // Nothing to read: wait for an append or a rebalance.
            let mut waits: Vec<
                std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>,
            > = Vec::with_capacity(n + 1);
            let gen = &mut self.generation;
            waits.push(Box::pin(async move { gen.changed().await.is_ok() }));
            for (_, _, rx) in self.positions.iter_mut() {
                waits.push(Box::pin(async move { rx.changed().await.is_ok() }));
            }
            let (alive, _, _) = select_all(waits).await;
            if !alive {
                return Err(LogError::Closed("log closed while waiting".into()));
            }
        }
    }

    fn assignment(&self) -> Vec<u32> {
        self.positions.iter().map(|(p, _, _)| *p).collect()
    }

    async fn commit(&mut self, partition: u32, next_offset: u64) -> Result<()> {
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
        if let Some(entry) = self.positions.iter_mut().find(|(p, _, _)| *p == partition) {
            entry.1 = offset;
        }
    }

    fn group(&self) -> &str {
        &self.group
    }

    fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.log
            .inner
            .coordinator
            .leave(&self.group, &self.topic, self.id);
    }
}

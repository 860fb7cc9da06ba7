//! The embedded log: topics of partitions, each partition a folder of
//! segment files, in a data directory. Durable (group-committed `fdatasync`),
//! crash-safe (tail validation and truncation on open) and fast.
//!
//! Layout of the data directory:
//!
//! ```text
//! <dir>/topics/<topic>/topic.json                  {"partitions": N, "format": 1}
//! <dir>/topics/<topic>/<partition>/<base>.log       records (see [`format`])
//! <dir>/topics/<topic>/<partition>/<base>.index     sparse offset index: (u32 rel offset, u32 position)*
//! <dir>/topics/<topic>/<partition>/<base>.timeindex time index: (i64 max timestamp, u32 rel offset)*
//! <dir>/groups/<group>.json                         committed consumer group offsets
//! ```

mod backup;
mod config;
pub mod format;

pub use config::{
    LogConfig, SyncMode, DEFAULT_MAX_LINGER, DEFAULT_MAX_RECORD_BYTES, DEFAULT_PREALLOCATE,
    DEFAULT_TAIL_CACHE, MAX_BATCH_BYTES, MAX_SEGMENT_BYTES,
};
mod consumer;
mod offsets;
mod partition;
mod recovery;
mod segment;
mod tail;
mod writer;

pub use recovery::Truncation;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex};

use crate::{
    Appended, GroupConsumer, Log, LogError, OffsetCommit, PartitionInfo, Record, Result,
    StartPosition, StoredRecord, TopicInfo,
};
pub(crate) use offsets::COMMIT_HEADER;
use offsets::{sync_dir, write_atomically, OffsetStore};
use partition::Partition;
use writer::{InFlight, Request, TopicWriter};

/// The embedded log. Cheap to clone; all clones share one data directory.
/// Writer threads stop (after a final sync) when the last clone is dropped.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    config: LogConfig,
    topics: RwLock<HashMap<String, Arc<TopicHandle>>>,
    /// Serialises topic creation.
    creating: AsyncMutex<()>,
    offsets: Arc<OffsetStore>,
    coordinator: consumer::Coordinator,
    truncations: Vec<Truncation>,
    /// Holds an exclusive `flock` on `<dir>/LOCK` while the log is open, so
    /// two processes never write one log. Every writer thread holds it too,
    /// until it has finished its last write and sync.
    lock: Arc<std::fs::File>,
}

/// An open topic: its partitions and its writer's queue.
struct TopicHandle {
    name: String,
    partitions: Vec<Arc<Partition>>,
    /// Bounded by [`LogConfig::queue_depth`]: `append` waits when it is full.
    tx: mpsc::Sender<Request>,
    /// Appends started and not yet answered, watched by the writer (group commit).
    in_flight: Arc<InFlight>,
    /// Why the writer refuses every append, once a failed write could not be undone.
    failed: Arc<OnceLock<String>>,
    /// What the writer has done (see [`crate::WriteStats`]).
    counters: Arc<writer::WriteCounters>,
}

/// `topic.json`: what a topic is.
#[derive(Serialize, Deserialize)]
struct TopicMeta {
    partitions: u32,
    format: u8,
}

/// Refuses a commit whose group or topic is not a valid name: the group
/// names a file, and recovery reads back only commit headers with valid
/// names (an acknowledged commit must survive a restart).
fn validate_commit(c: &OffsetCommit) -> Result<()> {
    validate_name(&c.group).map_err(|_| LogError::InvalidGroupName(c.group.clone()))?;
    validate_name(&c.topic).map_err(|_| LogError::InvalidTopicName(c.topic.clone()))
}

/// The [`LogError::Fenced`] refusing commit `c` of a group at `committed`.
pub(crate) fn fenced(c: &OffsetCommit, committed: u64) -> LogError {
    LogError::Fenced {
        group: c.group.clone(),
        topic: c.topic.clone(),
        partition: c.partition,
        expected: c.expected.unwrap_or(committed),
        committed,
    }
}

/// A commit reserved in the offset store ([`OffsetStore::reserve`]); settled
/// when dropped. It travels with its append to the writer, which drops it
/// only once the commit is recorded or has failed, so a caller that gives up
/// waiting (a cancelled future) cannot end the reservation while its batch
/// may still land.
pub(crate) struct Reserved {
    offsets: Arc<OffsetStore>,
    /// The reserved commit.
    pub commit: OffsetCommit,
    /// Its sequence number (see `offsets`).
    pub seq: u64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.offsets.settle(&self.commit);
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Topic and group names: 1 to 200 of letters, digits, `.`, `_`, `-`.
pub(crate) fn validate_name(name: &str) -> std::result::Result<(), ()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

/// Further tries, 20 ms apart, to lock a locked log directory.
const LOCK_RETRIES: u32 = 50;

/// Takes an exclusive `flock` on `<dir>/LOCK` (released when the returned
/// file and its clones are closed, also when the process dies), trying
/// for about a second.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
    // A log of this process dropped just now holds the lock until its
    // writer threads have finished their last sync: a moment, worth a wait.
    for attempt in 0..=LOCK_RETRIES {
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(LogError::io(format!("locking {}", path.display()), err));
        }
        if attempt < LOCK_RETRIES {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Err(LogError::Locked(dir.to_path_buf()))
}

impl EmbeddedLog {
    /// Opens the log in `config.dir` (creating it), recovering every topic:
    /// torn or corrupt tails are cut and reported by [`EmbeddedLog::truncations`].
    ///
    /// # Errors
    /// [`LogError::Io`] when the directory cannot be used, [`LogError::Corrupt`]
    /// for unreadable metadata, or for a damaged record in an active segment
    /// that records of two later rounds follow (acknowledged records, which
    /// are never cut; the error says how to go on).
    pub async fn open(config: LogConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(|e| LogError::Closed(format!("open task failed: {e}")))?
    }

    fn open_blocking(config: LogConfig) -> Result<Self> {
        let topics_dir = config.dir.join("topics");
        std::fs::create_dir_all(&topics_dir)
            .map_err(|e| LogError::io(format!("creating {}", topics_dir.display()), e))?;
        let lock = Arc::new(lock_dir(&config.dir)?);
        let offsets = Arc::new(OffsetStore::open(config.dir.join("groups"))?);
        // The entries of `topics/` and `groups/` themselves, durable.
        sync_dir(&config.dir)?;
        let mut topics = HashMap::new();
        let mut truncations = Vec::new();
        let entries = std::fs::read_dir(&topics_dir)
            .map_err(|e| LogError::io(format!("listing {}", topics_dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| LogError::io(format!("listing {}", topics_dir.display()), e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let meta_path = entry.path().join("topic.json");
            let Ok(raw) = std::fs::read(&meta_path) else {
                // A topic whose creation never finished (no metadata): ignore it.
                continue;
            };
            let meta: TopicMeta = serde_json::from_slice(&raw).map_err(|e| LogError::Corrupt {
                path: meta_path.clone(),
                position: 0,
                offset: None,
                reason: format!("invalid topic metadata: {e}"),
            })?;
            if meta.format > format::FORMAT_VERSION {
                // Recovery would take its records for a torn tail and cut them.
                return Err(LogError::Corrupt {
                    path: meta_path,
                    position: 0,
                    offset: None,
                    reason: format!(
                        "topic {name:?} is in log format {}, newer than this cmdr's {}: run the newer cmdr",
                        meta.format,
                        format::FORMAT_VERSION
                    ),
                });
            }
            if meta.partitions == 0 {
                return Err(LogError::Corrupt {
                    path: meta_path,
                    position: 0,
                    offset: None,
                    reason: "invalid topic metadata: a topic has at least one partition".into(),
                });
            }
            let (handle, cut) = Self::open_topic(
                &config,
                &offsets,
                &lock,
                &entry.path(),
                &name,
                meta.partitions,
            )?;
            truncations.extend(cut);
            topics.insert(name, handle);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                topics: RwLock::new(topics),
                creating: AsyncMutex::new(()),
                offsets,
                coordinator: consumer::Coordinator::default(),
                truncations,
                lock,
            }),
        })
    }

    fn open_topic(
        config: &LogConfig,
        offsets: &Arc<OffsetStore>,
        lock: &Arc<std::fs::File>,
        dir: &Path,
        name: &str,
        partitions: u32,
    ) -> Result<(Arc<TopicHandle>, Vec<Truncation>)> {
        let rec = recovery::recover_topic(dir, name, partitions, config, offsets)?;
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let in_flight = Arc::new(InFlight::default());
        let failed = Arc::new(OnceLock::new());
        let counters = Arc::new(writer::WriteCounters::default());
        let writer = TopicWriter::new(
            &rec.partitions,
            rec.next_round,
            config.clone(),
            offsets.clone(),
            in_flight.clone(),
            failed.clone(),
            counters.clone(),
        );
        if let SyncMode::Interval(every) = config.sync {
            writer::spawn_ticker(tx.downgrade(), every);
        }
        let lock = Arc::clone(lock);
        std::thread::Builder::new()
            .name(format!("cmdr-log-{name}"))
            .spawn(move || {
                writer.run(rx);
                // Only now may another process open the log.
                drop(lock);
            })
            .map_err(|e| LogError::io(format!("starting the writer of topic {name}"), e))?;
        Ok((
            Arc::new(TopicHandle {
                name: name.into(),
                partitions: rec.partitions,
                tx,
                in_flight,
                failed,
                counters,
            }),
            rec.truncations,
        ))
    }

    /// What recovery cut from partition tails when this log was opened
    /// (empty after a clean stop).
    pub fn truncations(&self) -> &[Truncation] {
        &self.inner.truncations
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Every open topic.
    fn handles(&self) -> Vec<Arc<TopicHandle>> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn handle(&self, topic: &str) -> Result<Arc<TopicHandle>> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.handle(topic)?
            .partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| LogError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    async fn submit(
        &self,
        topic: &str,
        records: Vec<Record>,
        commit: Option<OffsetCommit>,
    ) -> Result<Vec<Appended>> {
        let handle = self.handle(topic)?;
        if records.is_empty() && commit.is_none() {
            return Ok(Vec::new());
        }
        let max = self.inner.config.max_record_bytes;
        // The last record of an append with a commit also carries the commit
        // header (see the writer): count it, so every record written can be
        // read back.
        let commit_header = commit.as_ref().map_or(0, |c| {
            2 + offsets::COMMIT_HEADER.len() + 4 + offsets::CommitHeader::encode(c, u64::MAX).len()
        });
        let last = records.len().saturating_sub(1);
        let mut batch = 0usize;
        for (i, r) in records.iter().enumerate() {
            let (extra_len, extra_count) = if i == last && commit.is_some() {
                (commit_header, 1)
            } else {
                (0, 0)
            };
            let size = format::encoded_len(r.key.as_deref(), &r.headers, &r.value) + extra_len;
            if let Some(h) = r.headers.iter().find(|h| h.name == offsets::COMMIT_HEADER) {
                // Recovery would take it for a commit of the log's own.
                return Err(LogError::ReservedHeader(h.name.to_string()));
            }
            let too_long_field = r.headers.iter().any(|h| h.name.len() > u16::MAX as usize)
                || r.headers.len() + extra_count > u16::MAX as usize;
            if size > max || too_long_field {
                return Err(LogError::RecordTooLarge { size, max });
            }
            batch = batch.saturating_add(size);
            if batch > MAX_BATCH_BYTES {
                return Err(LogError::BatchTooLarge {
                    size: batch,
                    max: MAX_BATCH_BYTES,
                });
            }
        }
        let commit = match commit {
            Some(c) => {
                validate_commit(&c)?;
                let seq = self.inner.offsets.reserve(&c)?;
                Some(Reserved {
                    offsets: Arc::clone(&self.inner.offsets),
                    commit: c,
                    seq,
                })
            }
            None => None,
        };
        let (reply, rx) = oneshot::channel();
        let _counted = handle.in_flight.begin();
        handle
            .tx
            .send(Request::Append {
                records,
                commit,
                reply,
            })
            .await
            .map_err(|_| LogError::Closed(format!("writer of topic {topic} stopped")))?;
        handle.in_flight.notify();
        let answer = rx
            .await
            .map_err(|_| LogError::Closed(format!("writer of topic {topic} stopped")))?;
        // Freed here, on the thread that most likely allocated them.
        drop(answer.records);
        answer.result
    }

    fn info(handle: &TopicHandle) -> TopicInfo {
        TopicInfo {
            name: handle.name.clone(),
            partitions: handle
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.id,
                    start_offset: p.start_offset(),
                    end_offset: p.end_offset(),
                })
                .collect(),
        }
    }
}

#[async_trait]
impl Log for EmbeddedLog {
    fn max_record_bytes(&self) -> Option<usize> {
        Some(self.inner.config.max_record_bytes)
    }

    async fn backup(&self) -> Result<Option<crate::backup::Backup>> {
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.backup_files().map(Some))
            .await
            .map_err(|e| LogError::Closed(format!("backup task failed: {e}")))?
    }

    fn write_stats(&self, topic: &str) -> Option<crate::WriteStats> {
        Some(self.handle(topic).ok()?.counters.snapshot())
    }

    fn failure(&self) -> Option<String> {
        let topics = self.inner.topics.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&String> = topics.keys().collect();
        names.sort();
        names.into_iter().find_map(|name| {
            let h = &topics[name];
            if let Some(why) = h.failed.get() {
                Some(format!("topic {name}: {why}"))
            } else if h.tx.is_closed() {
                Some(format!("topic {name}: its writer has stopped"))
            } else {
                None
            }
        })
    }

    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<TopicInfo> {
        if let Ok(h) = self.handle(topic) {
            return Ok(Self::info(&h));
        }
        validate_name(topic).map_err(|_| LogError::InvalidTopicName(topic.to_string()))?;
        let _guard = self.inner.creating.lock().await;
        if let Ok(h) = self.handle(topic) {
            return Ok(Self::info(&h));
        }
        let partitions = partitions.max(1);
        let this = self.clone();
        let name = topic.to_string();
        let handle = tokio::task::spawn_blocking(move || -> Result<Arc<TopicHandle>> {
            let topics_dir = this.inner.config.dir.join("topics");
            let dir = topics_dir.join(&name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
            for p in 0..partitions {
                let pdir = dir.join(p.to_string());
                std::fs::create_dir_all(&pdir)
                    .map_err(|e| LogError::io(format!("creating {}", pdir.display()), e))?;
            }
            let (handle, _) = Self::open_topic(
                &this.inner.config,
                &this.inner.offsets,
                &this.inner.lock,
                &dir,
                &name,
                partitions,
            )?;
            for p in 0..partitions {
                sync_dir(&dir.join(p.to_string()))?;
            }
            sync_dir(&dir)?;
            sync_dir(&topics_dir)?;
            // The metadata file is written last: a topic without it was never created.
            let meta = serde_json::to_vec(&TopicMeta {
                partitions,
                format: format::FORMAT_VERSION,
            })
            .unwrap_or_default();
            write_atomically(&dir, "topic.json", &meta)?;
            sync_dir(&topics_dir)?;
            Ok(handle)
        })
        .await
        .map_err(|e| LogError::Closed(format!("create task failed: {e}")))??;
        self.inner
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string(), handle.clone());
        Ok(Self::info(&handle))
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let topics = self.inner.topics.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<TopicInfo> = topics.values().map(|h| Self::info(h)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        let handle = self.handle(topic)?;
        Ok(Self::info(&handle))
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>> {
        self.submit(topic, records, None).await
    }

    async fn append_with_commit(
        &self,
        topic: &str,
        records: Vec<Record>,
        commit: OffsetCommit,
    ) -> Result<Vec<Appended>> {
        if records.is_empty() {
            self.commit(commit).await?;
            return Ok(Vec::new());
        }
        self.submit(topic, records, Some(commit)).await
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.partition(topic, partition)?.read(from, max)
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<u64> {
        self.partition(topic, partition)?
            .offset_for_timestamp(timestamp_ms)
    }

    async fn wait_for(&self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let mut rx = self.partition(topic, partition)?.subscribe();
        rx.wait_for(|end| *end > offset)
            .await
            .map(|_| ())
            .map_err(|_| LogError::Closed("log closed while waiting".into()))
    }

    async fn commit(&self, commit: OffsetCommit) -> Result<()> {
        validate_commit(&commit)?;
        let offsets = self.inner.offsets.clone();
        tokio::task::spawn_blocking(move || offsets.commit_durably(&commit))
            .await
            .map_err(|e| LogError::Closed(format!("commit task failed: {e}")))?
    }

    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>> {
        Ok(self.inner.offsets.get(group, topic, partition))
    }

    async fn join_group(
        &self,
        group: &str,
        topic: &str,
        start: StartPosition,
    ) -> Result<Box<dyn GroupConsumer>> {
        Ok(Box::new(
            consumer::Member::join(self.clone(), group, topic, start).await?,
        ))
    }

    async fn sync(&self) -> Result<()> {
        for h in self.handles() {
            let (reply, rx) = oneshot::channel();
            h.tx.send(Request::Sync { reply })
                .await
                .map_err(|_| LogError::Closed("writer stopped".into()))?;
            rx.await
                .map_err(|_| LogError::Closed("writer stopped".into()))??;
        }
        let offsets = self.inner.offsets.clone();
        tokio::task::spawn_blocking(move || offsets.persist_dirty())
            .await
            .map_err(|e| LogError::Closed(format!("sync task failed: {e}")))?
    }
}

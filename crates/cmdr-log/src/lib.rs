//! cmdr's log: the durable, ordered, partitioned record store that every
//! other part of cmdr reads from and writes to.
//!
//! [`Log`] is the abstraction (append, read, tail, consumer groups); the
//! [`embedded`] module is its default implementation, a single-node log in a
//! data directory, written here because it is the product's heart. A Kafka
//! backend implements the same trait.
//!
//! Key design decision: an append is acknowledged only when its bytes are on
//! disk. Concurrent appends to a topic are gathered into one *round*: one write
//! and one `fdatasync` per touched partition (group commit), and a round is
//! atomic across partitions, so a batch is either wholly in the log after a
//! crash or not at all.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cmdr_log::LogError> {
//! use cmdr_log::{embedded::{EmbeddedLog, LogConfig}, Log, Record};
//! let log = EmbeddedLog::open(LogConfig::new("./data")).await?;
//! log.create_topic("commands", 1).await?;
//! let at = log.append("commands", vec![Record::new("key-1", &b"hello"[..])]).await?;
//! let back = log.read("commands", at[0].partition, at[0].offset, 10).await?;
//! assert_eq!(&back[0].value[..], b"hello");
//! # Ok(()) }
//! ```

pub mod backup;
pub mod batch;
pub mod embedded;
mod error;
pub mod memory;
mod record;

use async_trait::async_trait;

pub use batch::ReadBatch;
pub use error::{LogError, Result};
pub use record::{
    partition_for_key, Appended, Header, OffsetCommit, PartitionInfo, Record, StartPosition,
    StoredRecord, TopicInfo,
};

/// The log abstraction the rest of cmdr is written against.
///
/// Offsets are per partition, start at 0 and are contiguous. Records with the
/// same key go to the same partition ([`partition_for_key`]) and so stay in
/// order. Reading at or past the end returns an empty result, never an error.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Creates `topic` with `partitions` partitions, or returns the existing
    /// topic unchanged (its partition count is never changed).
    ///
    /// # Errors
    /// [`LogError::InvalidTopicName`], [`LogError::Io`].
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<TopicInfo>;

    /// Every topic with its partitions and their start and end offsets.
    ///
    /// # Errors
    /// Backend failures only.
    async fn topics(&self) -> Result<Vec<TopicInfo>>;

    /// One topic's partitions and their start and end offsets.
    ///
    /// # Errors
    /// [`LogError::UnknownTopic`].
    async fn topic(&self, topic: &str) -> Result<TopicInfo>;

    /// Appends `records` (partition chosen by key) and returns each one's
    /// position, in order, once all of them are durable. The batch is atomic:
    /// after a crash it is either wholly present or wholly absent.
    ///
    /// # Errors
    /// [`LogError::UnknownTopic`], [`LogError::RecordTooLarge`], [`LogError::Io`]
    /// (nothing of the batch was acknowledged), [`LogError::Closed`].
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>>;

    /// Like [`Log::append`], and commits a consumer group offset atomically
    /// with the batch: after a crash, either both are present or neither is.
    /// This is what lets a processor handle each input exactly once.
    ///
    /// # Errors
    /// As [`Log::append`].
    async fn append_with_commit(
        &self,
        topic: &str,
        records: Vec<Record>,
        commit: OffsetCommit,
    ) -> Result<Vec<Appended>>;

    /// Up to `max` records of one partition from offset `from` on (fewer, or
    /// none, at the end of the log).
    ///
    /// # Errors
    /// [`LogError::UnknownTopic`], [`LogError::UnknownPartition`],
    /// [`LogError::OffsetOutOfRange`] below the start offset,
    /// [`LogError::Corrupt`] when stored bytes fail their checksum (never served).
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredRecord>>;

    /// The first offset whose record's timestamp is at or after `timestamp_ms`
    /// (the end offset if there is none).
    ///
    /// # Errors
    /// As [`Log::read`].
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<u64>;

    /// Resolves once the partition's end offset is greater than `offset`, that
    /// is, once the record at `offset` can be read. Woken by appends, never polls.
    ///
    /// # Errors
    /// [`LogError::UnknownTopic`], [`LogError::UnknownPartition`], [`LogError::Closed`].
    async fn wait_for(&self, topic: &str, partition: u32, offset: u64) -> Result<()>;

    /// Durably records that `group` has consumed `topic`/`partition` up to
    /// (excluding) `commit.next_offset`.
    ///
    /// # Errors
    /// [`LogError::Io`].
    async fn commit(&self, commit: OffsetCommit) -> Result<()>;

    /// The next offset `group` will read in `topic`/`partition`, if it committed one.
    ///
    /// # Errors
    /// Backend failures only.
    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>>;

    /// Joins consumer group `group` on `topic`. Members of one group share the
    /// topic's partitions; a partition with no committed offset starts at `start`.
    ///
    /// # Errors
    /// [`LogError::UnknownTopic`].
    async fn join_group(
        &self,
        group: &str,
        topic: &str,
        start: StartPosition,
    ) -> Result<Box<dyn GroupConsumer>>;

    /// Makes everything appended so far durable (a no-op when every append
    /// already syncs) and persists consumer group offsets.
    ///
    /// # Errors
    /// [`LogError::Io`].
    async fn sync(&self) -> Result<()>;

    /// The largest record this log takes (key, headers and value, encoded),
    /// if it has a limit; appends over it fail with [`LogError::RecordTooLarge`].
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }

    /// Why this log can no longer take appends until it is reopened (a
    /// write failed and could not be undone, or a writer stopped), if so.
    /// A failure that leaves the log usable (a full disk, undone) is not one:
    /// that append fails alone.
    fn failure(&self) -> Option<String> {
        None
    }

    /// What the writer of `topic` has done since the log was opened, for
    /// logs that write and sync (the embedded log); `None` for others and
    /// for an unknown topic.
    fn write_stats(&self, _topic: &str) -> Option<WriteStats> {
        None
    }

    /// The files of a consistent copy of this log, for a backup taken
    /// while it runs (see [`backup`]). `None` for a log that keeps no
    /// files of its own (in memory, or a broker's).
    ///
    /// # Errors
    /// [`LogError::Io`] when the log's metadata cannot be read.
    async fn backup(&self) -> Result<Option<backup::Backup>> {
        Ok(None)
    }
}

/// What a topic's writer has done since the log was opened: how much group
/// commit shares (records per round) and what durability costs (syncs and
/// the time they took). Counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Rounds written: each is one write per touched partition, then (when
    /// every append is synced) a sync of each, before any is acknowledged.
    pub rounds: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written: the records as encoded on disk.
    pub bytes: u64,
    /// `fdatasync` calls on the topic's segment files.
    pub syncs: u64,
    /// How long those calls took, summed (the syncs of one round's
    /// partitions run at once, each counted with its own time), so that
    /// `sync_time / syncs` is what one sync takes.
    pub sync_time: std::time::Duration,
}

/// One member of a consumer group: reads the partitions assigned to it.
///
/// Dropping the member leaves the group; its partitions go to the others.
#[async_trait]
pub trait GroupConsumer: Send {
    /// Waits until at least one record is available on an assigned partition
    /// and returns up to `max` records (from one or more partitions, each in
    /// offset order). Advances this member's position past them; it does not commit.
    ///
    /// # Errors
    /// As [`Log::read`].
    async fn poll(&mut self, max: usize) -> Result<Vec<StoredRecord>>;

    /// The partitions currently assigned to this member.
    fn assignment(&self) -> Vec<u32>;

    /// Commits `next_offset` for `partition` in this member's group.
    ///
    /// # Errors
    /// [`LogError::Io`].
    async fn commit(&mut self, partition: u32, next_offset: u64) -> Result<()>;

    /// Moves this member's read position of `partition` (for example back to
    /// the committed offset after a failed handler).
    fn seek(&mut self, partition: u32, offset: u64);

    /// The group's name.
    fn group(&self) -> &str;

    /// The topic consumed.
    fn topic(&self) -> &str;
}

//! The log's typed errors. Expected states (end of log) are not errors.

use std::path::PathBuf;

/// Result of a log operation.
pub type Result<T> = std::result::Result<T, LogError>;

/// What can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The topic does not exist.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The topic exists but has no such partition.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition asked for.
        partition: u32,
    },
    /// A topic name that is empty, too long or has characters other than
    /// letters, digits, `.`, `_`, `-`.
    #[error("invalid topic name {0:?} (letters, digits, '.', '_', '-'; 1 to 200 bytes)")]
    InvalidTopicName(String),
    /// A record carries a header name the log keeps for itself (the offset
    /// commits it writes into records). Nothing of the batch was appended.
    #[error("header {0:?} is reserved for the log's own use")]
    ReservedHeader(String),
    /// A consumer group name that is empty, too long or has characters other
    /// than letters, digits, `.`, `_`, `-`.
    #[error("invalid group name {0:?} (letters, digits, '.', '_', '-'; 1 to 200 bytes)")]
    InvalidGroupName(String),
    /// A commit's [`crate::OffsetCommit::expected`] offset is not the group's:
    /// another member committed meanwhile. Nothing of the batch was appended.
    #[error("group {group:?} on {topic}/{partition}: commit expected offset {expected}, the group is at {committed}")]
    Fenced {
        /// Group name.
        group: String,
        /// Topic consumed.
        topic: String,
        /// Partition consumed.
        partition: u32,
        /// The offset the commit expected.
        expected: u64,
        /// The offset the group is at (or being committed to).
        committed: u64,
    },
    /// A record larger than the configured maximum.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// One append's records together larger than one round may write
    /// ([`crate::embedded::MAX_BATCH_BYTES`]): a segment's byte positions
    /// must stay within range.
    #[error("a batch of {size} bytes exceeds the maximum of {max} bytes for one append")]
    BatchTooLarge {
        /// Encoded size of the batch.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// Reading below the first offset the log still has.
    #[error("offset {offset} is below the start offset {start} of {topic}/{partition}")]
    OffsetOutOfRange {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset asked for.
        offset: u64,
        /// First offset available.
        start: u64,
    },
    /// Stored bytes that fail validation; they are never served.
    #[error(
        "corrupt segment {} at byte {position}{}: {reason}",
        .path.display(),
        .offset.map(|o| format!(" (offset {o})")).unwrap_or_default()
    )]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte position in the file.
        position: u64,
        /// The record offset expected there, if known.
        offset: Option<u64>,
        /// What failed.
        reason: String,
    },
    /// An I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the log was doing, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another `EmbeddedLog` in this one) has the data directory open.
    #[error("the log in {0} is in use by another process")]
    Locked(PathBuf),
    /// The log was closed, or its writer failed earlier and refuses further appends.
    #[error("log is closed: {0}")]
    Closed(String),
}

impl LogError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

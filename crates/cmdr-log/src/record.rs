//! The values that cross the [`crate::Log`] API: records in, stored records out.

use std::borrow::Cow;

use bytes::Bytes;

/// A record header: a name and an opaque value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (UTF-8, at most 65,535 bytes). Usually a constant, which
    /// is then borrowed rather than allocated for every record.
    pub name: Cow<'static, str>,
    /// Header value.
    pub value: Bytes,
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Partitioning and ordering key; `None` spreads records round-robin.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Headers, kept in order.
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch; `None` means "now" at append time.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with this key and value, timestamped at append.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: Some(key.into()),
            value: value.into(),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Adds a header.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Bytes>,
    ) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// Sets the timestamp (ms since the epoch).
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }
}

/// A record as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Partition it is in.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its headers.
    pub headers: Vec<Header>,
    /// Its value.
    pub value: Bytes,
}

impl StoredRecord {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The timestamp it was stored with.
    pub timestamp: i64,
}

/// A consumer group's position in one partition: the next offset it will read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    /// Group name.
    pub group: String,
    /// Topic consumed.
    pub topic: String,
    /// Partition consumed.
    pub partition: u32,
    /// The next offset to read (one past the last one handled).
    pub next_offset: u64,
    /// Fencing: the committed offset this commit continues from. When set
    /// and the group's committed offset (or one being committed) is another,
    /// the commit and its batch are refused with [`crate::LogError::Fenced`]:
    /// another member took the partition over and already committed past it.
    /// `None` commits unconditionally. Not stored.
    pub expected: Option<u64>,
}

/// Where a consumer starts in a partition it has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The first record still in the log.
    #[default]
    Earliest,
    /// Only records appended from now on.
    Latest,
    /// A given offset.
    Offset(u64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// One partition's extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// First offset still stored.
    pub start_offset: u64,
    /// One past the last durable offset (the next offset to be written).
    pub end_offset: u64,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionInfo>,
}

/// The partition a key goes to among `partitions`: CRC32C of the key modulo
/// the count. Stable across versions and platforms, so a key keeps its partition.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    crc32c::crc32c(key) % partitions
}

//! Settings of the embedded log, each with its default.

use std::path::PathBuf;
use std::time::Duration;

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync` before every acknowledgement (group commit makes this cheap
    /// under concurrency). The default: an acknowledged record survives a crash.
    Always,
    /// Acknowledge after the write; sync at most this long afterwards. A crash
    /// (of the machine, not only the process) can lose up to this much.
    Interval(Duration),
}

/// Largest [`LogConfig::segment_bytes`]: 2 GiB. Index entries hold byte
/// positions as `u32`, and a segment grows past its roll size by up to one
/// round, so half the `u32` range is left for that.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;

/// Most bytes one append's records may take together: a round is written
/// whole, and a segment holds byte positions as `u32`, with room for one
/// round past [`MAX_SEGMENT_BYTES`].
pub const MAX_BATCH_BYTES: usize = 1 << 30;

/// Largest record length that reading and recovery take as plausible: any
/// record a segment can hold. Not [`LogConfig::max_record_bytes`], which
/// bounds appends only: it may have been larger when a record was written,
/// and lowering it must not make recovery cut acknowledged records.
pub(crate) const MAX_READ_RECORD: usize = MAX_SEGMENT_BYTES as usize;

/// Configuration of an [`super::EmbeddedLog`].
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory that holds topics and consumer group offsets. Created if missing.
    pub dir: PathBuf,
    /// A segment file is rolled once it reaches this size. Default 128 MiB;
    /// at most [`MAX_SEGMENT_BYTES`] (larger values act as that).
    pub segment_bytes: u64,
    /// Largest encoded record accepted. Default 8 MiB.
    pub max_record_bytes: usize,
    /// Bytes between two sparse index entries. Default 4 KiB.
    pub index_interval_bytes: u32,
    /// Most bytes (as encoded) gathered into one write round (group
    /// commit), unless one append alone is larger; taken as at most
    /// [`MAX_BATCH_BYTES`]. Default 8 MiB.
    pub max_round_bytes: usize,
    /// Appends waiting for a round, per topic, before `append` waits for room. Default 65,536.
    pub queue_depth: usize,
    /// Durability. Default [`SyncMode::Always`].
    pub sync: SyncMode,
    /// Longest a round waits for appends that callers have started but not
    /// yet queued, typically callers the previous round has just answered
    /// and that append again at once (group commit; [`SyncMode::Always`]
    /// only). Default [`DEFAULT_MAX_LINGER`]. Zero when callers do not
    /// re-send at once (an HTTP server: an answered caller's next append
    /// comes from a new request), where the wait only delays the round.
    pub max_linger: Duration,
    /// After a small round (under an eighth of this), the active segment
    /// file is kept extended with zeros up to this far ahead of its records
    /// (topped up an eighth at a time once less than half is left), so that
    /// the `fdatasync` of the next small rounds overwrites allocated blocks
    /// and need not also write the file's new size (about a third less time
    /// and CPU per sync on ext4; large rounds, bound by bandwidth rather than
    /// sync latency, simply append). The zeros past the records are cut when
    /// the segment is sealed and when the log is next opened (recovery tells
    /// them from a torn write). Default [`DEFAULT_PREALLOCATE`]; 0 turns it off.
    pub preallocate_bytes: u64,
    /// Bytes of each partition's most recent records kept in memory, so
    /// that readers following the tail (the indexer, live subscribers,
    /// processors) read them from there rather than each from the file.
    /// Default [`DEFAULT_TAIL_CACHE`]; 0 turns it off.
    pub tail_cache_bytes: usize,
}

/// Default [`LogConfig::max_record_bytes`]: 8 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

/// Default [`LogConfig::preallocate_bytes`]: 1 MiB.
pub const DEFAULT_PREALLOCATE: u64 = 1024 * 1024;

/// Default [`LogConfig::tail_cache_bytes`]: 1 MiB per partition.
pub const DEFAULT_TAIL_CACHE: usize = 1024 * 1024;

/// Default [`LogConfig::max_linger`]: 250 µs (and at most half the previous
/// round's sync time).
pub const DEFAULT_MAX_LINGER: Duration = Duration::from_micros(250);

impl LogConfig {
    /// Defaults, with data in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 128 * 1024 * 1024,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            index_interval_bytes: 4096,
            max_round_bytes: 8 * 1024 * 1024,
            queue_depth: 65_536,
            sync: SyncMode::Always,
            max_linger: DEFAULT_MAX_LINGER,
            preallocate_bytes: DEFAULT_PREALLOCATE,
            tail_cache_bytes: DEFAULT_TAIL_CACHE,
        }
    }

    /// Sets [`LogConfig::segment_bytes`].
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes.clamp(1024, MAX_SEGMENT_BYTES);
        self
    }

    /// Sets [`LogConfig::sync`].
    pub fn sync(mut self, sync: SyncMode) -> Self {
        self.sync = sync;
        self
    }

    /// Sets [`LogConfig::max_linger`].
    pub fn max_linger(mut self, linger: Duration) -> Self {
        self.max_linger = linger;
        self
    }

    /// Sets [`LogConfig::preallocate_bytes`].
    pub fn preallocate_bytes(mut self, bytes: u64) -> Self {
        self.preallocate_bytes = bytes;
        self
    }

    /// Sets [`LogConfig::tail_cache_bytes`].
    pub fn tail_cache_bytes(mut self, bytes: usize) -> Self {
        self.tail_cache_bytes = bytes;
        self
    }

    /// Sets [`LogConfig::max_record_bytes`].
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Sets [`LogConfig::index_interval_bytes`].
    pub fn index_interval_bytes(mut self, bytes: u32) -> Self {
        self.index_interval_bytes = bytes.max(1);
        self
    }
}

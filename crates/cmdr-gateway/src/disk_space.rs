//! The free-space reserve of the data directory.
//!
//! A disk that fills up takes down more than the writes: the index can no
//! longer record what the log holds, and the server stops, and will not
//! start again until space is freed. So the gateway keeps a reserve
//! ([`crate::GatewayConfig::min_free_bytes`]): once the file system of the
//! data directory has less than that free, clients' writes (`POST
//! /commands`, `PUT`/`DELETE /schemas/…`, `PUT`/`DELETE /processors/…`) are refused
//! with `507 insufficient-storage` and `/readyz` says so in its
//! `disk_space` check (without failing: reads go on). What the reserve is for goes on too: the
//! indexer indexes what was acknowledged, and processors append the events
//! of commands already taken. Writes resume once the free space is back
//! above the reserve and a margin (a sixteenth of it), so that a disk
//! hovering at the line does not flap.
//!
//! The free space is read (`statvfs`: the space unprivileged users may
//! take) once a second off the async workers, and at once after an append
//! failed. What the index has still to write counts as taken already: the
//! records appended but not indexed yet, at the log's average record size
//! (the index keeps a copy of each command). Between readings, each write
//! taken is counted off the last reading (twice its size: the log's record
//! and the index's copy); once the count says the reserve may be reached,
//! the next write reads the free space again before it is taken. So
//! neither a burst of large commands nor an index catching up runs through
//! the reserve.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Default [`crate::GatewayConfig::min_free_bytes`]: 256 MiB, room for the
/// index to take in a few seconds of full-rate intake and for processors
/// to settle the commands in flight.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// How often the free space is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Bytes per record assumed for a topic whose writes the log does not
/// count (a log other than the embedded one), or before its first write.
pub const UNKNOWN_RECORD_BYTES: u64 = 1024;

/// The bytes free for unprivileged users on the file system holding `path`.
///
/// # Errors
/// When the file system cannot be asked (`path` does not exist, ...).
#[cfg(unix)]
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The bytes free on the file system holding `path`: unknown on this
/// platform, so never short.
///
/// # Errors
/// Never.
#[cfg(not(unix))]
pub fn free_bytes(_path: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// What one reading of the free space changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Still on the same side of the reserve.
    None,
    /// Fell under the reserve: writes are refused from now on.
    Low,
    /// Back above the reserve and its margin: writes are taken again.
    Recovered,
}

/// The data directory's free space and whether it is under the reserve.
/// Shared by the intake (one atomic load per write) and the watcher.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    min_free: u64,
    free: AtomicU64,
    /// Bytes the index had still to write at the last reading.
    unindexed: AtomicU64,
    /// Bytes of writes taken since the last reading.
    spent: AtomicU64,
    low: AtomicBool,
    /// The last reading failed (logged once, until one succeeds).
    unreadable: AtomicBool,
}

impl DiskSpace {
    /// Watches the file system of `dir`, keeping `min_free` bytes in
    /// reserve (0: none, writes are never refused). Reads the free space
    /// once now.
    pub fn new(dir: impl Into<PathBuf>, min_free: u64) -> Self {
        let space = Self {
            dir: dir.into(),
            min_free,
            free: AtomicU64::new(u64::MAX),
            unindexed: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            low: AtomicBool::new(false),
            unreadable: AtomicBool::new(false),
        };
        space.read(0);
        space
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The reserve, in bytes.
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// The free bytes at the last reading (`u64::MAX` before any succeeded).
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// Whether the last reading was under the reserve (and none since
    /// was back above it and its margin): writes are refused.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Whether the writes taken since the last reading may have brought
    /// the free space under the reserve: time to read it again before
    /// taking more.
    pub fn maybe_low(&self) -> bool {
        self.min_free > 0 && self.estimate() < self.min_free
    }

    /// The free bytes at the last reading less what the index had still
    /// to write then: what the reserve is measured against.
    pub fn room(&self) -> u64 {
        self.free()
            .saturating_sub(self.unindexed.load(Ordering::Relaxed))
    }

    /// The room now by the count: [`DiskSpace::room`] less the writes
    /// taken since the last reading.
    pub fn estimate(&self) -> u64 {
        self.room()
            .saturating_sub(self.spent.load(Ordering::Relaxed))
    }

    /// Counts `bytes` of a write taken off the free space, until the next
    /// reading.
    pub fn charge(&self, bytes: u64) {
        self.spent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Reads the free space now and applies it, with `unindexed` bytes
    /// still to be written by the index (see [`DiskSpace::observe`]); logs
    /// a change, and a reading that failed (the last state is kept). Call
    /// it off the async workers: a network file system can take its time.
    pub fn read(&self, unindexed: u64) -> Change {
        // Taken before reading. A write charged before this swap and not
        // yet on disk at the reading nor counted in `unindexed` (appended
        // after the caller computed it) escapes the count until the next
        // reading: milliseconds of writes, which the reserve covers.
        let spent = self.spent.swap(0, Ordering::Relaxed);
        match free_bytes(&self.dir) {
            Ok(free) => {
                if self.unreadable.swap(false, Ordering::Relaxed) {
                    tracing::info!(dir = %self.dir.display(), "the free space can be read again");
                }
                let change = self.observe(free, unindexed);
                match change {
                    Change::Low => tracing::warn!(
                        dir = %self.dir.display(),
                        free_bytes = free,
                        unindexed_bytes = unindexed,
                        min_free_bytes = self.min_free,
                        "the data directory's free space is under the reserve: \
                         writes are refused (507) until space is freed"
                    ),
                    Change::Recovered => tracing::info!(
                        dir = %self.dir.display(),
                        free_bytes = free,
                        "the data directory has room again: writes are taken"
                    ),
                    Change::None => {}
                }
                change
            }
            Err(e) => {
                self.spent.fetch_add(spent, Ordering::Relaxed);
                if !self.unreadable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(dir = %self.dir.display(), error = %e,
                        "cannot read the data directory's free space");
                }
                Change::None
            }
        }
    }

    /// Applies a reading of `free` bytes, with `unindexed` bytes still to
    /// be written by the index: a room (the difference) under the reserve
    /// turns writes off; at or above the reserve plus a sixteenth of it
    /// turns them back on; in between nothing changes.
    pub fn observe(&self, free: u64, unindexed: u64) -> Change {
        self.free.store(free, Ordering::Relaxed);
        self.unindexed.store(unindexed, Ordering::Relaxed);
        if self.min_free == 0 {
            return Change::None;
        }
        let room = self.room();
        let was_low = self.low.load(Ordering::Relaxed);
        if !was_low && room < self.min_free {
            self.low.store(true, Ordering::Relaxed);
            Change::Low
        } else if was_low && room >= self.min_free.saturating_add(self.min_free / 16) {
            self.low.store(false, Ordering::Relaxed);
            Change::Recovered
        } else {
            Change::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl DiskSpace {
        /// A reading of `free` bytes with nothing left to index.
        fn observe_free(&self, free: u64) -> Change {
            self.observe(free, 0)
        }
    }

    #[test]
    fn what_the_index_has_still_to_write_counts_as_taken() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 1000);
        assert_eq!(space.observe(5000, 3000), Change::None);
        assert_eq!(space.room(), 2000);
        assert_eq!(space.observe(5000, 4001), Change::Low);
        // The index caught up, nothing else changed: room again.
        assert_eq!(space.observe(5000, 0), Change::Recovered);
        space.charge(3999);
        assert!(!space.maybe_low(), "1001 bytes left by the count");
        space.charge(2);
        assert!(space.maybe_low(), "999 bytes left by the count");
        assert!(!space.is_low());
    }

    #[test]
    fn writes_stop_under_the_reserve_and_resume_above_its_margin() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 1600);
        assert!(!space.is_low(), "a test machine has 1600 bytes free");
        assert_eq!(space.observe_free(1600), Change::None);
        assert_eq!(space.observe_free(1599), Change::Low);
        assert!(space.is_low());
        assert_eq!(space.free(), 1599);
        assert_eq!(space.observe_free(10), Change::None);
        // Back at the reserve, but not past its margin (100 bytes).
        assert_eq!(space.observe_free(1600), Change::None);
        assert_eq!(space.observe_free(1699), Change::None);
        assert!(space.is_low());
        assert_eq!(space.observe_free(1700), Change::Recovered);
        assert!(!space.is_low());
        assert_eq!(space.observe_free(1650), Change::None);
    }

    #[test]
    fn writes_taken_between_readings_count_against_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 1000);
        space.observe_free(1500);
        space.charge(400);
        assert!(!space.maybe_low());
        space.charge(101);
        assert!(space.maybe_low(), "999 bytes left by the count");
        assert!(!space.is_low(), "not read since");
        assert_eq!(space.estimate(), 999);
        // The next reading starts the count again.
        assert_eq!(space.read(0), Change::None);
        assert!(!space.maybe_low(), "a test machine has 1000 bytes free");
    }

    #[test]
    fn no_reserve_never_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), 0);
        assert_eq!(space.observe_free(0), Change::None);
        assert!(!space.is_low());
    }

    #[test]
    fn the_free_space_of_a_real_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0 && free < u64::MAX);
        let space = DiskSpace::new(dir.path(), free.saturating_mul(2).max(1));
        assert!(space.is_low(), "twice the free space is more than is free");
        assert!(free_bytes(&dir.path().join("missing")).is_err());
        // A failed reading keeps what was known.
        let gone = DiskSpace::new(dir.path().join("missing"), 1);
        assert_eq!(gone.read(0), Change::None);
        assert!(!gone.is_low());
    }
}

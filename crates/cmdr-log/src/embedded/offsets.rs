//! Committed consumer group offsets: one JSON file per group in
//! `<dir>/groups/`, replaced atomically (write, fsync, rename, fsync dir).
//!
//! Offsets committed with [`crate::Log::append_with_commit`] travel inside the
//! appended batch (a record header) and so are durable with it; they are
//! written to the group file lazily (before a segment rolls, on sync and on
//! close) and recovered from the active segments' headers on open.
//!
//! Every commit gets a sequence number, in the order commits are reserved,
//! stored with it in the header and in the group file: on open, a header
//! commit replaces the file's only if it is later by sequence (or, between
//! commits written before sequences existed, ahead by offset). So a durable
//! commit back to an earlier offset (a group reset, for a replay) is not
//! undone by the older header commits still in the active segments.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use crate::{LogError, OffsetCommit, Result};

/// The header that carries an atomic offset commit inside an appended batch.
pub(crate) const COMMIT_HEADER: &str = "cmdr.log.commit";

/// topic → partition → next offset (or, in [`GroupFile::seqs`], the
/// sequence number of the commit that set it).
type GroupOffsets = BTreeMap<String, BTreeMap<u32, u64>>;

/// A group's file: its offsets and their commits' sequence numbers. Files
/// written before sequences existed hold the offsets alone (then every
/// sequence is 0). The keys are not valid topic names, so the two shapes
/// cannot be mistaken for each other.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    #[serde(rename = "@offsets")]
    offsets: GroupOffsets,
    #[serde(rename = "@seqs")]
    seqs: GroupOffsets,
}

impl GroupFile {
    /// Reads either shape (see [`GroupFile`]).
    fn parse(raw: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(raw).or_else(|_| {
            serde_json::from_slice::<GroupOffsets>(raw).map(|offsets| GroupFile {
                offsets,
                seqs: GroupOffsets::new(),
            })
        })
    }

    /// The group's file, as written.
    fn to_file(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    fn seq(&self, topic: &str, partition: u32) -> u64 {
        self.seqs
            .get(topic)
            .and_then(|p| p.get(&partition))
            .copied()
            .unwrap_or(0)
    }
}

/// The header value of an atomic commit.
#[derive(Serialize, Deserialize)]
pub(crate) struct CommitHeader {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub next_offset: u64,
    /// The commit's sequence number (0 in headers written before them).
    #[serde(default)]
    pub seq: u64,
}

impl CommitHeader {
    /// Encodes a commit, with its sequence number, for the header.
    pub fn encode(c: &OffsetCommit, seq: u64) -> Vec<u8> {
        serde_json::to_vec(&CommitHeader {
            group: c.group.clone(),
            topic: c.topic.clone(),
            partition: c.partition,
            next_offset: c.next_offset,
            seq,
        })
        .unwrap_or_default()
    }

    /// Decodes a header value and its sequence number; `None` unless it
    /// names a valid group and topic (a group name becomes a file name).
    pub fn decode(raw: &[u8]) -> Option<(OffsetCommit, u64)> {
        let h: CommitHeader = serde_json::from_slice(raw).ok()?;
        super::validate_name(&h.group).ok()?;
        super::validate_name(&h.topic).ok()?;
        let commit = OffsetCommit {
            group: h.group,
            topic: h.topic,
            partition: h.partition,
            next_offset: h.next_offset,
            expected: None,
        };
        Some((commit, h.seq))
    }
}

/// All groups' committed offsets.
#[derive(Debug)]
pub(crate) struct OffsetStore {
    dir: PathBuf,
    groups: Mutex<HashMap<String, GroupFile>>,
    /// The next commit's sequence number.
    next_seq: AtomicU64,
    /// Groups changed in memory (by atomic commits) but not yet written to their file.
    dirty: Mutex<HashSet<String>>,
    /// Serialises file writes: two commits of one group must not share the
    /// temporary file, and the later snapshot must be the one that lands.
    write_lock: Mutex<()>,
    /// Held through a whole [`OffsetStore::persist_dirty`].
    flush_lock: Mutex<()>,
    /// Commits on their way to the disk, by (group, topic, partition): what
    /// a fenced commit is checked against besides the committed offsets.
    pending: Mutex<HashMap<(String, String, u32), u64>>,
    /// Held shared by every topic writer while it publishes a round (its
    /// partitions' new ends and the commits the round carries), and
    /// exclusively while a backup lists the log: so a backup sees every
    /// topic between two rounds, with the commits of exactly the rounds it
    /// holds (see [`OffsetStore::publishing`]).
    gate: RwLock<()>,
}

impl OffsetStore {
    /// Loads every group file in `dir` (created if missing).
    pub fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
        // A group file renamed into place by a process killed before it
        // synced the directory is read below as if durable: make it so.
        sync_dir(&dir)?;
        let mut groups = HashMap::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
            let path = entry.path();
            let (Some(name), Some("json")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            let raw = std::fs::read(&path)
                .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
            let file = GroupFile::parse(&raw).map_err(|e| LogError::Corrupt {
                path: path.clone(),
                position: 0,
                offset: None,
                reason: format!("group offsets file is not valid: {e}"),
            })?;
            groups.insert(name.to_string(), file);
        }
        let last_seq = groups
            .values()
            .flat_map(|g| g.seqs.values().flat_map(|p| p.values()))
            .max()
            .copied()
            .unwrap_or(0);
        Ok(Self {
            dir,
            groups: Mutex::new(groups),
            next_seq: AtomicU64::new(last_seq.saturating_add(1)),
            dirty: Mutex::new(HashSet::new()),
            write_lock: Mutex::new(()),
            flush_lock: Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
            gate: RwLock::new(()),
        })
    }

    /// Held by a writer while it publishes a round (see `gate`).
    pub fn publishing(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Held by a backup while it lists the log: no round is published
    /// meanwhile (see `gate`).
    pub fn frozen(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The committed next offset of `group` in `topic`/`partition`.
    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .get(group)?
            .offsets
            .get(topic)?
            .get(&partition)
            .copied()
    }

    /// Records commit number `seq` unless a later one is recorded already
    /// (commits can land out of the order they were numbered in); returns
    /// whether it did.
    fn set(&self, c: &OffsetCommit, seq: u64) -> bool {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        apply(groups.entry(c.group.clone()).or_default(), c, seq)
    }

    /// Records commit number `seq`, already durable elsewhere (in a batch
    /// header); the group file is written later.
    pub fn set_lazily(&self, c: &OffsetCommit, seq: u64) {
        if self.set(c, seq) {
            self.dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(c.group.clone());
        }
    }

    /// Merges commit number `seq` recovered from a header: kept if it is
    /// later than the file's, or, between commits without sequence numbers
    /// (0), ahead of it.
    pub fn recover(&self, c: &OffsetCommit, seq: u64) {
        self.next_seq
            .fetch_max(seq.saturating_add(1), Ordering::AcqRel);
        let (file_seq, file_offset) = {
            let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            match groups.get(&c.group) {
                Some(g) => (
                    g.seq(&c.topic, c.partition),
                    g.offsets
                        .get(&c.topic)
                        .and_then(|p| p.get(&c.partition))
                        .copied(),
                ),
                None => (0, None),
            }
        };
        let later = match file_offset {
            None => true,
            Some(offset) => (seq, c.next_offset) > (file_seq, offset),
        };
        if later {
            self.set_lazily(c, seq);
        }
    }

    /// Checks a commit's fence ([`OffsetCommit::expected`]) against the
    /// committed offset or the one being committed, and if it passes, notes
    /// `c` as being committed until [`OffsetStore::settle`]. Checking and
    /// noting under one lock makes two members' commits of one range exclusive.
    ///
    /// Returns the commit's sequence number.
    ///
    /// # Errors
    /// [`crate::LogError::Fenced`].
    pub fn reserve(&self, c: &OffsetCommit) -> Result<u64> {
        let key = (c.group.clone(), c.topic.clone(), c.partition);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let current = pending
            .get(&key)
            .copied()
            .or_else(|| self.get(&c.group, &c.topic, c.partition));
        if let (Some(expected), Some(current)) = (c.expected, current) {
            if expected != current {
                return Err(super::fenced(c, current));
            }
        }
        pending.insert(key, c.next_offset);
        Ok(self.next_seq.fetch_add(1, Ordering::AcqRel))
    }

    /// Ends a [`OffsetStore::reserve`]: the commit landed (and was recorded)
    /// or failed.
    pub fn settle(&self, c: &OffsetCommit) {
        let key = (c.group.clone(), c.topic.clone(), c.partition);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.get(&key) == Some(&c.next_offset) {
            pending.remove(&key);
        }
    }

    /// Records a commit and writes its group file durably before returning;
    /// if the file cannot be written, memory is left as it was.
    pub fn commit_durably(&self, c: &OffsetCommit) -> Result<()> {
        let seq = self.reserve(c)?;
        // Written first, taken into memory only once written: a failed
        // write leaves memory as it was, commits that landed meanwhile
        // (atomic ones, recorded lazily) included.
        let written = {
            let _writing = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let snapshot = {
                let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
                let mut group = groups.get(&c.group).cloned().unwrap_or_default();
                apply(&mut group, c, seq);
                group.to_file()
            };
            let written = write_atomically(&self.dir, &format!("{}.json", c.group), &snapshot);
            if written.is_ok() {
                // Under the write lock: no older snapshot can land after it.
                self.set(c, seq);
            }
            written
        };
        self.settle(c);
        written
    }

    /// Writes every group changed in memory to its file. Callers take turns
    /// from the drain to the last write: one that finds nothing dirty while
    /// another is still writing what it drained waits for it, so that
    /// returning means written (a roll seals header commits on that).
    pub fn persist_dirty(&self) -> Result<()> {
        let _turn = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        let dirty: Vec<String> = self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (i, g) in dirty.iter().enumerate() {
            if let Err(e) = self.persist(g) {
                // Keep what was not written dirty, so a later call retries.
                self.dirty
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(dirty[i..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Every group's file as it would be written now (for a backup):
    /// the commits recorded so far, each durable.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .map(|(name, group)| (name.clone(), group.to_file()))
            .collect()
    }

    fn persist(&self, group: &str) -> Result<()> {
        let _writing = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = {
            let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            groups.get(group).cloned().unwrap_or_default().to_file()
        };
        write_atomically(&self.dir, &format!("{group}.json"), &snapshot)
    }
}

/// Records commit number `seq` in `group` unless a later one is recorded
/// already (commits can land out of the order they were numbered in);
/// returns whether it did.
fn apply(group: &mut GroupFile, c: &OffsetCommit, seq: u64) -> bool {
    if group.seq(&c.topic, c.partition) > seq {
        return false;
    }
    group
        .offsets
        .entry(c.topic.clone())
        .or_default()
        .insert(c.partition, c.next_offset);
    group
        .seqs
        .entry(c.topic.clone())
        .or_default()
        .insert(c.partition, seq);
    true
}

/// Replaces `dir/name` with `data` so that a crash leaves the old or the new
/// content, never a mix: write a temporary file, fsync, rename, fsync the folder.
pub(crate) fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let ctx = |what: &str| format!("{what} {}", dst.display());
    let mut f = std::fs::File::create(&tmp).map_err(|e| LogError::io(ctx("writing"), e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| LogError::io(ctx("writing"), e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| LogError::io(ctx("replacing"), e))?;
    sync_dir(dir)
}

/// fsyncs a folder so that files created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(format!("syncing folder {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A group file written before sequence numbers (offsets alone) is read
    /// with every sequence 0, and written back in the new shape.
    #[test]
    fn a_group_file_without_sequences_is_read_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("g.json"), br#"{"t": {"0": 5, "1": 9}}"#).unwrap();
        let store = OffsetStore::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(
            (store.get("g", "t", 0), store.get("g", "t", 1)),
            (Some(5), Some(9))
        );
        let c = OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            next_offset: 3,
            expected: None,
        };
        store.commit_durably(&c).unwrap();
        drop(store);
        let store = OffsetStore::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(
            (store.get("g", "t", 0), store.get("g", "t", 1)),
            (Some(3), Some(9))
        );
        // An old header commit (sequence 0) ahead of it does not undo it.
        store.recover(
            &OffsetCommit {
                next_offset: 7,
                ..c
            },
            0,
        );
        assert_eq!(store.get("g", "t", 0), Some(3));
    }

    /// A `persist_dirty` that finds nothing to drain while another is still
    /// writing what it drained returns only once that is written (a segment
    /// roll relies on it before sealing header commits).
    #[test]
    fn persist_dirty_returns_once_a_concurrent_drain_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(OffsetStore::open(dir.path().to_path_buf()).unwrap());
        store.set_lazily(
            &OffsetCommit {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                next_offset: 7,
                expected: None,
            },
            1,
        );
        let writing = store.write_lock.lock().unwrap();
        let first = std::thread::spawn({
            let store = store.clone();
            move || store.persist_dirty()
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        let second_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let second = std::thread::spawn({
            let (store, done) = (store.clone(), second_done.clone());
            move || {
                let r = store.persist_dirty();
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                r
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            !second_done.load(std::sync::atomic::Ordering::SeqCst),
            "returned before the first drain was written"
        );
        drop(writing);
        first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        assert!(dir.path().join("g.json").exists());
    }
}

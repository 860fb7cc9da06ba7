//! One segment: a `.log` file of records plus its sparse offset index and
//! time index (`.index`, `.timeindex`), which are rebuilt from the records
//! whenever they are missing or inconsistent.
//!
//! A segment is appended to by its partition's writer only; readers see the
//! bytes below [`Segment::visible_size`], which only grows after those bytes
//! are durable (or written, in interval sync mode).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use bytes::{Bytes, BytesMut};

use super::format::{self, DecodeError, DiskRecord};
use crate::{LogError, Result};

/// Bytes read from a segment file at a time when scanning.
const READ_CHUNK: usize = 256 * 1024;

/// The unit a disk writes whole or not at all (the smallest there is): a
/// field within one is, after a power loss, all old or all new.
const SECTOR: u64 = 512;
/// Size of one `.index` entry: u32 relative offset, u32 position.
const INDEX_ENTRY: usize = 8;
/// Size of one `.timeindex` entry: i64 max timestamp so far, u32 relative offset.
const TIME_ENTRY: usize = 12;

/// The in-memory copy of a segment's sparse indexes.
#[derive(Debug, Default)]
pub(crate) struct SegmentIndex {
    /// (offset - base, byte position), ascending.
    pub entries: Vec<(u32, u32)>,
    /// (largest timestamp up to and including that record, offset - base), ascending.
    pub times: Vec<(i64, u32)>,
}

/// A segment file and its indexes.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of its first record; also its file name.
    pub base: u64,
    /// Path of the `.log` file.
    pub path: PathBuf,
    file: File,
    /// Bytes readers may read (durable bytes).
    visible: AtomicU64,
    /// Largest record timestamp in the visible part (i64::MIN when empty).
    max_ts: AtomicI64,
    /// The sparse indexes; written by the writer, read by readers.
    index: RwLock<SegmentIndex>,
    /// Open index files, appended to by the writer (not synced: rebuilt if damaged).
    index_files: Mutex<Option<(File, File)>>,
}

/// File name stem of a segment: its base offset, zero-padded to 20 digits.
pub(crate) fn stem(base: u64) -> String {
    format!("{base:020}")
}

/// What a full scan of a segment found.
#[derive(Debug, Default)]
pub(crate) struct ScanResult {
    /// Position after the last valid record.
    pub valid_end: u64,
    /// Offset after the last valid record.
    pub next_offset: u64,
    /// Position after the last record that ended a round (a complete round).
    pub round_end: u64,
    /// Offset after that record.
    pub round_end_offset: u64,
    /// Round and partition count of that record.
    pub last_round: Option<(u64, u32)>,
    /// Start position of the last complete round's chunk in this segment.
    pub last_round_start: u64,
    /// Offset of the first record of that chunk.
    pub last_round_start_offset: u64,
    /// Why scanning stopped before the end of the file, if it did.
    pub stopped: Option<String>,
    /// (position, header value) of every consumer group commit header seen.
    pub commits: Vec<(u64, Bytes)>,
}

impl Segment {
    /// Creates an empty segment file (and its index files) at `base` in `dir`.
    pub fn create(dir: &Path, base: u64) -> Result<Self> {
        let path = dir.join(format!("{}.log", stem(base)));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(format!("creating segment {}", path.display()), e))?;
        let seg = Self::from_parts(base, path, file, SegmentIndex::default(), 0, i64::MIN);
        seg.rewrite_index_files()?;
        Ok(seg)
    }

    fn from_parts(
        base: u64,
        path: PathBuf,
        file: File,
        index: SegmentIndex,
        size: u64,
        max_ts: i64,
    ) -> Self {
        Self {
            base,
            path,
            file,
            visible: AtomicU64::new(size),
            max_ts: AtomicI64::new(max_ts),
            index: RwLock::new(index),
            index_files: Mutex::new(None),
        }
    }

    /// Opens an existing segment. A sealed segment trusts its index files
    /// when they are consistent and rebuilds them otherwise; the active
    /// (last) segment is always scanned in full by the caller.
    pub fn open(path: PathBuf, base: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(format!("opening segment {}", path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| LogError::io(format!("reading size of {}", path.display()), e))?
            .len();
        Ok(Self::from_parts(
            base,
            path,
            file,
            SegmentIndex::default(),
            size,
            i64::MIN,
        ))
    }

    /// Bytes readers may read.
    pub fn visible_size(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// Largest timestamp in the segment (i64::MIN when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_ts.load(Ordering::Acquire)
    }

    fn index_path(&self, ext: &str) -> PathBuf {
        self.path.with_extension(ext)
    }

    /// Loads the index files of a sealed segment, or rebuilds them by a scan
    /// when missing or inconsistent. Returns whether a rebuild happened.
    pub fn load_or_rebuild_index(&self, interval: u32, max_record: usize) -> Result<bool> {
        if let Some(idx) = self.read_index_files(max_record) {
            let max_ts = idx.times.last().map_or(i64::MIN, |t| t.0);
            // The time index is sparse: scan the tail after the last entry for the true max.
            let (tail_from, tail_offset) = idx.entries.last().map_or((0, self.base), |e| {
                (u64::from(e.1), self.base + u64::from(e.0))
            });
            *self.index.write().unwrap_or_else(|p| p.into_inner()) = idx;
            let mut tail_max = max_ts;
            self.scan_from(tail_from, tail_offset, max_record, |rec, _, _| {
                tail_max = tail_max.max(rec.timestamp);
                true
            })
            .ok();
            self.max_ts.store(tail_max, Ordering::Release);
            return Ok(false);
        }
        let scan = self.rebuild_index(interval, max_record)?;
        if let Some(reason) = scan.stopped {
            tracing::warn!(segment = %self.path.display(), position = scan.valid_end, %reason,
                "sealed segment has unreadable records; reads past them will fail as corrupt");
        }
        Ok(true)
    }

    fn read_index_files(&self, max_record: usize) -> Option<SegmentIndex> {
        let raw = std::fs::read(self.index_path("index")).ok()?;
        let raw_t = std::fs::read(self.index_path("timeindex")).ok()?;
        if raw.len() % INDEX_ENTRY != 0 || raw_t.len() % TIME_ENTRY != 0 {
            return None;
        }
        let size = self.visible_size();
        let mut idx = SegmentIndex::default();
        for c in raw.chunks_exact(INDEX_ENTRY) {
            let rel = u32::from_le_bytes(c[0..4].try_into().ok()?);
            let pos = u32::from_le_bytes(c[4..8].try_into().ok()?);
            if let Some(&(lr, lp)) = idx.entries.last() {
                if rel <= lr || pos <= lp {
                    return None;
                }
            }
            if pos as u64 >= size {
                return None;
            }
            idx.entries.push((rel, pos));
        }
        for c in raw_t.chunks_exact(TIME_ENTRY) {
            let ts = i64::from_le_bytes(c[0..8].try_into().ok()?);
            let rel = u32::from_le_bytes(c[8..12].try_into().ok()?);
            if let Some(&(lt, lr)) = idx.times.last() {
                if ts < lt || rel <= lr {
                    return None;
                }
            }
            idx.times.push((ts, rel));
        }
        // Both files are written entry by entry together: the time index has
        // one entry per offset index entry, for the same record. A mismatch
        // means one of them is damaged or was cut by a crash.
        if idx.times.len() != idx.entries.len()
            || idx.times.iter().zip(&idx.entries).any(|(t, e)| t.1 != e.0)
        {
            return None;
        }
        // Spot checks (a full check would cost a scan, which is what a
        // rebuild is): the first and last entries must point at intact
        // records with the right offsets. An entry that is wrong in between
        // can only make a read fail as corrupt, never serve a wrong record,
        // since every record read is checked for its CRC and offset.
        for &(rel, pos) in idx.entries.first().into_iter().chain(idx.entries.last()) {
            let (rec, _) = self.read_record_at(pos as u64, max_record).ok()?;
            if rec.offset != self.base + rel as u64 {
                return None;
            }
        }
        Some(idx)
    }

    /// Scans the whole segment, rebuilding both indexes in memory and on disk.
    pub fn rebuild_index(&self, interval: u32, max_record: usize) -> Result<ScanResult> {
        let mut idx = SegmentIndex::default();
        let mut since_entry = u64::MAX;
        let mut max_ts = i64::MIN;
        let scan = self.scan_from(0, self.base, max_record, |rec, pos, len| {
            max_ts = max_ts.max(rec.timestamp);
            if since_entry >= interval as u64 {
                let rel = (rec.offset - self.base) as u32;
                idx.entries.push((rel, pos as u32));
                idx.times.push((max_ts, rel));
                since_entry = 0;
            }
            since_entry += len as u64;
            true
        })?;
        self.max_ts.store(max_ts, Ordering::Release);
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = idx;
        self.rewrite_index_files()?;
        Ok(scan)
    }

    /// Writes the in-memory indexes to fresh index files and keeps them open for appends.
    fn rewrite_index_files(&self) -> Result<()> {
        let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut a = Vec::with_capacity(idx.entries.len() * INDEX_ENTRY);
        for (rel, pos) in &idx.entries {
            a.extend_from_slice(&rel.to_le_bytes());
            a.extend_from_slice(&pos.to_le_bytes());
        }
        let mut b = Vec::with_capacity(idx.times.len() * TIME_ENTRY);
        for (ts, rel) in &idx.times {
            b.extend_from_slice(&ts.to_le_bytes());
            b.extend_from_slice(&rel.to_le_bytes());
        }
        let open = |ext: &str, data: &[u8]| -> Result<File> {
            let p = self.index_path(ext);
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&p)
                .map_err(|e| LogError::io(format!("writing index {}", p.display()), e))?;
            f.write_all(data)
                .map_err(|e| LogError::io(format!("writing index {}", p.display()), e))?;
            Ok(f)
        };
        let files = (open("index", &a)?, open("timeindex", &b)?);
        *self.index_files.lock().unwrap_or_else(|p| p.into_inner()) = Some(files);
        Ok(())
    }

    /// Scans records from `pos` (whose first record should have offset
    /// `expect`), calling `f(record, position, length)` for each valid one
    /// until `f` returns false or the visible end is reached. Stops at the
    /// first invalid record and says why in [`ScanResult::stopped`].
    pub fn scan_from(
        &self,
        mut pos: u64,
        mut expect: u64,
        max_record: usize,
        mut f: impl FnMut(DiskRecord, u64, usize) -> bool,
    ) -> Result<ScanResult> {
        let end = self.visible_size();
        let mut res = ScanResult {
            valid_end: pos,
            next_offset: expect,
            round_end: pos,
            round_end_offset: expect,
            last_round_start: pos,
            last_round_start_offset: expect,
            ..Default::default()
        };
        let limit = record_limit(max_record);
        let mut chunk_start: Option<(u64, u64)> = None;
        let mut buf = Bytes::new();
        let mut buf_pos = pos;
        while pos < end {
            let left = end - pos;
            if left < 4 {
                res.stopped = Some(format!("incomplete record at the end ({left} bytes)"));
                break;
            }
            if pos + 4 > buf_pos + buf.len() as u64 {
                buf = self.read_bytes(pos, READ_CHUNK.min(left as usize))?;
                buf_pos = pos;
            }
            let rel = (pos - buf_pos) as usize;
            let len = format::peek_len(&buf[rel..]).unwrap_or(0);
            if len < format::FIXED_LEN + 6 || len > limit {
                res.stopped = Some(format!("implausible record length {len}"));
                break;
            }
            if len as u64 > left {
                res.stopped = Some(format!(
                    "incomplete record at the end ({left} of {len} bytes)"
                ));
                break;
            }
            if rel + len > buf.len() {
                buf = self.read_bytes(pos, len.max(READ_CHUNK.min(left as usize)))?;
                buf_pos = pos;
            }
            let rel = (pos - buf_pos) as usize;
            let (rec, len) = match format::decode(&buf.slice(rel..rel + len), limit) {
                Ok(r) => r,
                Err(DecodeError::Invalid(why)) => {
                    res.stopped = Some(why);
                    break;
                }
                Err(DecodeError::Incomplete { .. }) => {
                    res.stopped = Some("record cut short".into());
                    break;
                }
            };
            if rec.offset != expect {
                res.stopped = Some(format!(
                    "record offset {} where {} was expected",
                    rec.offset, expect
                ));
                break;
            }
            if chunk_start.is_none() {
                chunk_start = Some((pos, rec.offset));
            }
            if let Some(h) = rec.headers.iter().find(|h| h.name == super::COMMIT_HEADER) {
                res.commits.push((pos, h.value.clone()));
            }
            let (flags, round, round_parts) = (rec.flags, rec.round, rec.round_parts);
            let go_on = f(rec, pos, len);
            pos += len as u64;
            expect += 1;
            res.valid_end = pos;
            res.next_offset = expect;
            if flags & format::FLAG_ROUND_END != 0 {
                res.round_end = pos;
                res.round_end_offset = expect;
                res.last_round = Some((round, round_parts));
                if let Some((s, o)) = chunk_start.take() {
                    res.last_round_start = s;
                    res.last_round_start_offset = o;
                }
            }
            if !go_on {
                break;
            }
        }
        Ok(res)
    }

    /// Reads `len` bytes at `pos` (fewer at the end of the file).
    pub fn read_bytes(&self, pos: u64, len: usize) -> Result<Bytes> {
        let mut buf = BytesMut::zeroed(len);
        let mut done = 0;
        while done < len {
            match self.file.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(LogError::io(
                        format!("reading {} at {}", self.path.display(), pos),
                        e,
                    ))
                }
            }
        }
        buf.truncate(done);
        Ok(buf.freeze())
    }

    /// Decodes the one record at `pos`.
    pub fn read_record_at(&self, pos: u64, max_record: usize) -> Result<(DiskRecord, usize)> {
        let head = self.read_bytes(pos, 4)?;
        let len = format::peek_len(&head).ok_or_else(|| self.corrupt(pos, None, "cut record"))?;
        if len > record_limit(max_record) {
            return Err(self.corrupt(pos, None, "implausible record length"));
        }
        let buf = self.read_bytes(pos, len)?;
        format::decode(&buf, usize::MAX).map_err(|e| self.corrupt(pos, None, &format!("{e:?}")))
    }

    /// A [`LogError::Corrupt`] for this segment.
    pub fn corrupt(&self, position: u64, offset: Option<u64>, reason: &str) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            position,
            offset,
            reason: reason.to_string(),
        }
    }

    /// Byte position to start scanning from to find `offset`.
    pub fn position_for(&self, offset: u64) -> (u64, u64) {
        let rel = offset.saturating_sub(self.base).min(u32::MAX as u64) as u32;
        let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
        let i = idx.entries.partition_point(|e| e.0 <= rel);
        if i == 0 {
            (0, self.base)
        } else {
            let (r, p) = idx.entries[i - 1];
            (p as u64, self.base + r as u64)
        }
    }

    /// Offset from which to scan for the first record at or after `ts`.
    pub fn offset_before_time(&self, ts: i64) -> u64 {
        let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
        let i = idx.times.partition_point(|e| e.0 < ts);
        if i == 0 {
            self.base
        } else {
            self.base + idx.times[i - 1].1 as u64
        }
    }

    /// Writes `data` at `pos` (the writer's append position).
    pub fn write_at(&self, data: &[u8], pos: u64) -> Result<()> {
        self.file
            .write_all_at(data, pos)
            .map_err(|e| LogError::io(format!("writing {} at {}", self.path.display(), pos), e))
    }

    /// Writes zeros over `[from, to)`, extending the file (see
    /// [`super::writer`]: appends then overwrite preallocated zeros, so that
    /// an `fdatasync` need not also write the file's size).
    pub fn zero_fill(&self, from: u64, to: u64) -> Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            self.write_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Looks past the invalid record at `damage` (which should have had
    /// offset `offset`) for proof that it was acknowledged: reading on from
    /// where its length field says it ends, valid records follow one after
    /// another with consecutive offsets from `offset + 1`, in at least two
    /// rounds after `after_round`. Only the round being written when the
    /// process or machine stopped can be torn (a round starts once the
    /// previous one is durable, and the file past the last round is zeros),
    /// so a second round after the damage means the damaged one was
    /// complete on disk. Bytes inside a record (a client's key or value) are
    /// never read as records: the chain starts only at the damaged record's
    /// own end, and is read as the log reads itself. A damaged length field
    /// (or a record cut short) gives no such end, and no proof; nor does a
    /// length field across a [`SECTOR`] boundary, which a power loss can
    /// leave half old (zeros) and half new, a length still plausible but
    /// ending inside the record's own bytes. Returns the (position, offset)
    /// of the first record of the second round.
    pub fn acknowledged_past(
        &self,
        damage: u64,
        offset: u64,
        after_round: Option<u64>,
        max_record: usize,
    ) -> Result<Option<(u64, u64)>> {
        if damage % SECTOR > SECTOR - 4 {
            return Ok(None);
        }
        let end = self.visible_size();
        let head = self.read_bytes(damage, 4)?;
        let Some(len) = format::peek_len(&head) else {
            return Ok(None);
        };
        if len < format::FIXED_LEN + 6 || len > record_limit(max_record) {
            return Ok(None);
        }
        let next = damage + len as u64;
        if next >= end {
            return Ok(None);
        }
        let mut rounds: Option<u64> = None;
        let mut proof = None;
        self.scan_from(next, offset + 1, max_record, |rec, pos, _| {
            if after_round.is_some_and(|r| rec.round <= r) {
                return false;
            }
            match rounds {
                None => rounds = Some(rec.round),
                Some(first) if rec.round > first => {
                    proof = Some((pos, rec.offset));
                    return false;
                }
                Some(first) if rec.round < first => return false,
                Some(_) => {}
            }
            true
        })?;
        Ok(proof)
    }

    /// Whether every byte from `from` to the end of the file is zero: the
    /// unused, preallocated tail of an active segment.
    pub fn is_zero_from(&self, from: u64) -> Result<bool> {
        let len = self
            .file
            .metadata()
            .map_err(|e| LogError::io(format!("reading size of {}", self.path.display()), e))?
            .len();
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = from;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| LogError::io(format!("reading {}", self.path.display()), e))?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// `fdatasync`s the segment file.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io(format!("syncing {}", self.path.display()), e))
    }

    /// Cuts the file to `size` bytes (undoing a failed write or a torn tail).
    pub fn truncate(&self, size: u64) -> Result<()> {
        self.file
            .set_len(size)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| {
                LogError::io(format!("truncating {} to {}", self.path.display(), size), e)
            })?;
        if self.visible_size() > size {
            self.visible.store(size, Ordering::Release);
        }
        Ok(())
    }

    /// Appends index entries to the index files (before they are
    /// published: the files are rebuilt on open when they do not match).
    pub fn write_index(&self, new_entries: &[(u32, u32, i64)]) {
        if new_entries.is_empty() {
            return;
        }
        let mut a = Vec::with_capacity(new_entries.len() * INDEX_ENTRY);
        let mut b = Vec::with_capacity(new_entries.len() * TIME_ENTRY);
        for &(rel, pos, ts) in new_entries {
            a.extend_from_slice(&rel.to_le_bytes());
            a.extend_from_slice(&pos.to_le_bytes());
            b.extend_from_slice(&ts.to_le_bytes());
            b.extend_from_slice(&rel.to_le_bytes());
        }
        if let Some((fi, ft)) = self
            .index_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            // Index files are rebuilt when damaged, so a failed write here only costs a rebuild.
            if fi.write_all(&a).and_then(|()| ft.write_all(&b)).is_err() {
                tracing::warn!(segment = %self.path.display(), "index file write failed; it will be rebuilt on open");
            }
        }
    }

    /// Makes `size` bytes visible and adds the index entries written with
    /// them (to memory: [`Segment::write_index`] writes them to the files).
    pub fn publish(&self, size: u64, max_ts: i64, new_entries: &[(u32, u32, i64)]) {
        if !new_entries.is_empty() {
            let mut idx = self.index.write().unwrap_or_else(|p| p.into_inner());
            for &(rel, pos, ts) in new_entries {
                idx.entries.push((rel, pos));
                idx.times.push((ts, rel));
            }
        }
        self.max_ts.fetch_max(max_ts, Ordering::AcqRel);
        self.visible.store(size, Ordering::Release);
    }
}

impl Segment {
    /// Closes the index files, which only the active segment appends to:
    /// called when the segment is sealed, so that each sealed segment holds
    /// one file descriptor (its records), not three.
    pub fn close_index_files(&self) {
        *self.index_files.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The largest plausible encoded record for a configured maximum.
pub(crate) fn record_limit(max_record: usize) -> usize {
    max_record.saturating_add(format::FIXED_LEN + 64)
}

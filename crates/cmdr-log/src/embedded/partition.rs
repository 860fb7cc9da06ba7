//! A partition: an ordered list of segments, the durable end offset that
//! readers may see, and the read path (offset and time lookups).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::format::DiskRecord;
use super::segment::Segment;
use super::tail::TailCache;
use crate::{LogError, Result, StoredRecord};

/// One partition of a topic, shared by its writer and every reader.
#[derive(Debug)]
pub(crate) struct Partition {
    /// Topic name (for errors).
    pub topic: String,
    /// Partition number.
    pub id: u32,
    /// Folder holding the segment files.
    pub dir: PathBuf,
    /// Segments in offset order; the last one is active. Only the writer adds.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// The end offset readers may see; published after the bytes are durable.
    /// Waiters on the tail subscribe to it.
    end: watch::Sender<u64>,
    /// Largest record accepted, to bound reads.
    max_record: usize,
    /// Bytes between index entries, for an index rebuilt after a read found
    /// one of its entries wrong.
    index_interval: u32,
    /// Held while such a rebuild runs, so that readers take turns at it.
    repairing: std::sync::Mutex<()>,
    /// The most recent published records, which tail readers take from memory.
    tail: RwLock<TailCache>,
}

impl Partition {
    /// A partition over already-recovered `segments` whose durable end is `end`.
    pub fn new(
        topic: &str,
        id: u32,
        dir: PathBuf,
        segments: Vec<Arc<Segment>>,
        end: u64,
        max_record: usize,
        config: &super::LogConfig,
    ) -> Self {
        Self {
            topic: topic.to_string(),
            id,
            dir,
            segments: RwLock::new(segments),
            end: watch::Sender::new(end),
            max_record,
            index_interval: config.index_interval_bytes,
            repairing: std::sync::Mutex::new(()),
            tail: RwLock::new(TailCache::new(end, config.tail_cache_bytes)),
        }
    }

    /// One past the last readable offset.
    pub fn end_offset(&self) -> u64 {
        *self.end.borrow()
    }

    /// First offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.segments().first().map_or(0, |s| s.base)
    }

    /// A receiver woken whenever the end offset moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Makes offsets below `end` readable and wakes tail waiters;
    /// `records` (those up to `end` not yet published, in order) go into
    /// the tail cache first.
    pub fn publish_end(&self, end: u64, records: Vec<StoredRecord>) {
        if !records.is_empty() {
            self.tail
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .extend(records);
        }
        self.end.send_replace(end);
    }

    /// A snapshot of the segment list.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds a new active segment (on roll).
    pub fn push_segment(&self, seg: Arc<Segment>) {
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(seg);
    }

    /// Up to `max` records from offset `from`.
    ///
    /// Damaged bytes are never served: a read stops in front of them and
    /// returns the records before them, so the next read starts at the damaged
    /// record and fails with [`LogError::Corrupt`] naming its file, position
    /// and offset.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<StoredRecord>> {
        let end = self.end_offset();
        if from >= end || max == 0 {
            return Ok(Vec::new());
        }
        let want = max.min((end - from) as usize);
        // The cache holds only offsets past every segment's start.
        if let Some(recent) = self
            .tail
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .read(from, want)
        {
            return Ok(recent);
        }
        let segs = self.segments();
        let start = segs.first().map_or(0, |s| s.base);
        if from < start {
            return Err(LogError::OffsetOutOfRange {
                topic: self.topic.clone(),
                partition: self.id,
                offset: from,
                start,
            });
        }
        let mut out = Vec::with_capacity(want.min(4096));
        let mut i = segs.partition_point(|s| s.base <= from).saturating_sub(1);
        let mut next = from;
        while out.len() < want && i < segs.len() {
            let seg = &segs[i];
            let (pos, at) = seg.position_for(next);
            let max = self.max_record;
            let mut scan =
                seg.scan_from(pos, at, max, collect(self.id, want, &mut next, &mut out))?;
            let sealed = i + 1 < segs.len();
            if scan.stopped.is_some() && pos > 0 && sealed && out.is_empty() {
                // Nothing read from where the index pointed: the damage may
                // be in the index (its files are checked only at their ends
                // when loaded), not the records. Scan from the start; if that
                // reads on, the index was wrong: rebuild it.
                scan = seg.scan_from(
                    0,
                    seg.base,
                    max,
                    collect(self.id, want, &mut next, &mut out),
                )?;
                if scan.stopped.is_none() || !out.is_empty() {
                    self.rebuild_index(seg);
                }
            }
            if out.len() >= want {
                break;
            }
            if let Some(reason) = scan.stopped {
                if !out.is_empty() {
                    break;
                }
                return Err(seg.corrupt(scan.valid_end, Some(scan.next_offset), &reason));
            }
            match segs.get(i + 1) {
                Some(following) if scan.next_offset != following.base => {
                    if !out.is_empty() {
                        break;
                    }
                    return Err(seg.corrupt(
                        scan.valid_end,
                        Some(scan.next_offset),
                        &format!(
                            "segment ends at offset {} but the next one starts at {}",
                            scan.next_offset, following.base
                        ),
                    ));
                }
                Some(_) => i += 1,
                None => {
                    if next < end && out.is_empty() {
                        return Err(seg.corrupt(
                            scan.valid_end,
                            Some(next),
                            "durable records missing from the active segment",
                        ));
                    }
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Rebuilds the index of sealed segment `seg` after a read found an entry
    /// of it wrong; a failure leaves the index as it was (reads still work,
    /// by the scan from the start).
    fn rebuild_index(&self, seg: &Segment) {
        let _turn = self.repairing.lock().unwrap_or_else(|p| p.into_inner());
        tracing::warn!(segment = %seg.path.display(), "an index entry pointed at no record; rebuilding the segment's index");
        if let Err(e) = seg.rebuild_index(self.index_interval, self.max_record) {
            tracing::warn!(segment = %seg.path.display(), error = %e, "rebuilding the index failed");
        }
        // A sealed segment keeps one file descriptor only.
        seg.close_index_files();
    }

    /// The first offset whose timestamp is at or after `ts`, or the end offset.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<u64> {
        let end = self.end_offset();
        for seg in self.segments() {
            if seg.max_timestamp() < ts {
                continue;
            }
            let from = seg.offset_before_time(ts);
            let (pos, at) = seg.position_for(from);
            let mut found = None;
            let scan = seg.scan_from(pos, at, self.max_record, |rec, _, _| {
                if rec.offset < end && rec.timestamp >= ts {
                    found = Some(rec.offset);
                    return false;
                }
                rec.offset + 1 < end
            })?;
            if let Some(o) = found {
                return Ok(o);
            }
            if let Some(reason) = scan.stopped {
                return Err(seg.corrupt(scan.valid_end, Some(scan.next_offset), &reason));
            }
        }
        Ok(end)
    }
}

/// The scan callback of a read: takes records from `next` on into `out`
/// (moving `next` past each) until `out` holds `want`.
fn collect<'a>(
    partition: u32,
    want: usize,
    next: &'a mut u64,
    out: &'a mut Vec<StoredRecord>,
) -> impl FnMut(DiskRecord, u64, usize) -> bool + 'a {
    move |rec, _, _| {
        if rec.offset >= *next {
            *next = rec.offset + 1;
            out.push(stored(partition, rec));
        }
        out.len() < want
    }
}

/// A stored record as the API shows it.
fn stored(partition: u32, rec: DiskRecord) -> StoredRecord {
    StoredRecord {
        partition,
        offset: rec.offset,
        timestamp: rec.timestamp,
        key: rec.key,
        headers: rec.headers,
        value: rec.value,
    }
}

//! Opening a topic after a clean stop or a crash: load sealed segments,
//! validate the active segment of every partition record by record, cut torn
//! or corrupt tails, and remove a last round that did not reach every
//! partition it wrote to. Everything cut is reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::offsets::{sync_dir, CommitHeader, OffsetStore};
use super::partition::Partition;
use super::segment::Segment;
use super::LogConfig;
use crate::{LogError, Result};

/// Something recovery removed from a partition's tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Segment file cut.
    pub segment: PathBuf,
    /// Byte position the file was cut at.
    pub position: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// First offset removed (records from here on were never acknowledged).
    pub from_offset: u64,
    /// Why.
    pub reason: String,
}

/// A recovered topic.
pub(crate) struct Recovered {
    pub partitions: Vec<Arc<Partition>>,
    pub next_round: u64,
    pub truncations: Vec<Truncation>,
}

struct PartState {
    segs: Vec<Arc<Segment>>,
    dir: PathBuf,
    /// (round, parts, chunk start position, chunk first offset) of the last
    /// complete round in the active segment.
    last_round: Option<(u64, u32, u64, u64)>,
    /// Round of the partition's last record when it lies in a sealed
    /// segment (the active segment holds no complete round).
    sealed_round: Option<u64>,
}

/// Opens (and repairs) topic `name` with `partitions` partitions in `dir`.
pub(crate) fn recover_topic(
    dir: &Path,
    name: &str,
    partitions: u32,
    config: &LogConfig,
    offsets: &OffsetStore,
) -> Result<Recovered> {
    // Records as written, whatever the append limit is now.
    let max = super::config::MAX_READ_RECORD;
    let mut truncations = Vec::new();
    let mut states = Vec::new();
    for p in 0..partitions {
        let pdir = dir.join(p.to_string());
        std::fs::create_dir_all(&pdir)
            .map_err(|e| LogError::io(format!("creating {}", pdir.display()), e))?;
        let mut bases = list_segments(&pdir)?;
        if bases.is_empty() {
            Segment::create(&pdir, 0)?;
            sync_dir(&pdir)?;
            bases.push(0);
        }
        let mut segs = Vec::new();
        let last = bases.len() - 1;
        let mut last_round = None;
        let mut sealed_round = None;
        for (i, base) in bases.iter().enumerate() {
            let path = pdir.join(format!("{}.log", super::segment::stem(*base)));
            let seg = Segment::open(path.clone(), *base)?;
            if i < last {
                if seg.visible_size() == 0 {
                    // An empty sealed segment can only be left by an interrupted roll.
                    remove_segment(&path);
                    continue;
                }
                seg.load_or_rebuild_index(config.index_interval_bytes, max)?;
                // A rebuild leaves its index files open; a sealed segment
                // keeps one descriptor only.
                seg.close_index_files();
                segs.push(Arc::new(seg));
                continue;
            }
            // The active segment: validate every record.
            let size = seg.visible_size();
            let scan = seg.rebuild_index(config.index_interval_bytes, max)?;
            if scan.round_end < size
                && scan.round_end == scan.valid_end
                && seg.is_zero_from(scan.valid_end)?
            {
                // Only preallocated zeros after the last round: nothing is
                // lost, and the scan (and index) of the records stands.
                seg.truncate(scan.valid_end)?;
                tracing::debug!(topic = name, partition = p, segment = %path.display(),
                    bytes = size - scan.valid_end, "cut the preallocated tail");
            }
            let size = seg.visible_size();
            // Only where every acknowledged round was synced before the
            // next began: with interval syncs, a machine's crash can lose
            // an earlier round's page and keep a later one's.
            if let (Some(why), super::SyncMode::Always) = (&scan.stopped, config.sync) {
                refuse_damage_to_acknowledged(&seg, &scan, why, max)?;
            }
            if scan.round_end < size {
                let reason = scan
                    .stopped
                    .clone()
                    .unwrap_or_else(|| "round not completed before a crash".into());
                seg.truncate(scan.round_end)?;
                let t = Truncation {
                    topic: name.into(),
                    partition: p,
                    segment: path.clone(),
                    position: scan.round_end,
                    bytes: size - scan.round_end,
                    from_offset: scan.round_end_offset,
                    reason,
                };
                tracing::warn!(topic = name, partition = p, segment = %path.display(), position = t.position,
                    bytes = t.bytes, from_offset = t.from_offset, reason = %t.reason, "truncated the log tail");
                truncations.push(t);
                seg.rebuild_index(config.index_interval_bytes, max)?;
            }
            last_round = scan
                .last_round
                .map(|(r, n)| (r, n, scan.last_round_start, scan.last_round_start_offset));
            // No complete round in the active segment (after the cut above it
            // is empty): the partition's last round is at the end of the
            // previous, sealed segment, as after a crash right after a roll.
            if last_round.is_none() {
                if let Some(prev) = segs.last() {
                    let (pos, at) = prev.position_for(u64::MAX);
                    let tail = prev.scan_from(pos, at, max, |_, _, _| true)?;
                    sealed_round = tail.last_round.map(|r| r.0);
                }
            }
            segs.push(Arc::new(seg));
        }
        states.push(PartState {
            segs,
            dir: pdir,
            last_round,
            sealed_round,
        });
    }

    // A round is atomic across partitions: if the last one is missing from a
    // partition it wrote to, remove it from all of them.
    let rounds = states
        .iter()
        .filter_map(|s| s.last_round.map(|r| r.0).or(s.sealed_round));
    let rmax = rounds.max();
    if let Some(rmax) = rmax {
        let holders: Vec<usize> = (0..states.len())
            .filter(|&i| states[i].last_round.is_some_and(|r| r.0 == rmax))
            .collect();
        let parts = holders
            .first()
            .and_then(|&i| states[i].last_round)
            .map_or(0, |r| r.1);
        // A partition rolls only at the start of a round, and a round starts
        // only once the previous one is durable everywhere; so when round
        // `rmax` ends a sealed segment somewhere, a later round had started:
        // `rmax` is complete, and partitions that do not show it in their
        // active segment have it in a sealed one.
        let complete = states.iter().any(|s| s.sealed_round == Some(rmax));
        if !complete && !holders.is_empty() && (holders.len() as u32) < parts {
            for &i in &holders {
                let Some((_, _, start, first)) = states[i].last_round else {
                    continue;
                };
                let Some(seg) = states[i].segs.last().cloned() else {
                    continue;
                };
                let size = seg.visible_size();
                seg.truncate(start)?;
                seg.rebuild_index(config.index_interval_bytes, max)?;
                let t = Truncation {
                    topic: name.into(),
                    partition: i as u32,
                    segment: seg.path.clone(),
                    position: start,
                    bytes: size - start,
                    from_offset: first,
                    reason: format!(
                        "round {rmax} reached {} of its {parts} partitions before a crash; removed from all",
                        holders.len()
                    ),
                };
                tracing::warn!(topic = name, partition = i, reason = %t.reason, bytes = t.bytes, "truncated an incomplete round");
                truncations.push(t);
            }
        }
    }

    let mut out = Vec::new();
    for (p, st) in states.into_iter().enumerate() {
        let active = st
            .segs
            .last()
            .cloned()
            .ok_or_else(|| LogError::Closed("partition without segments".into()))?;
        // What a killed process wrote but never synced survives in the page
        // cache and is read back above as if durable; appends after this
        // open count on it (a roll seals the segment without syncing it
        // again), so make it durable now. Only the active segment, and the
        // sealed one before it when the active one is empty (a crash right
        // after a roll), can hold unsynced bytes.
        active.sync()?;
        if active.visible_size() == 0 {
            if let Some(prev) = st.segs.len().checked_sub(2).and_then(|i| st.segs.get(i)) {
                prev.sync()?;
            }
        }
        // Recover offsets committed atomically with appends (all still in the active segment).
        let (pos, at) = (0, active.base);
        let scan = active.scan_from(pos, at, max, |_, _, _| true)?;
        for (_, raw) in &scan.commits {
            if let Some((c, seq)) = CommitHeader::decode(raw) {
                offsets.recover(&c, seq);
            }
        }
        let end = scan.next_offset;
        out.push(Arc::new(Partition::new(
            name, p as u32, st.dir, st.segs, end, max, config,
        )));
    }
    Ok(Recovered {
        partitions: out,
        next_round: rmax.map_or(0, |r| r + 1),
        truncations,
    })
}

/// Fails with [`LogError::Corrupt`] when the invalid record a scan of the
/// active segment stopped at is followed by records of later rounds: a
/// crash tears only the round it interrupts, so this is damage to records
/// that were synced and acknowledged, and cutting the segment there would
/// silently drop every intact record after it. Nothing is changed on disk;
/// the message says how to restore or cut by hand.
fn refuse_damage_to_acknowledged(
    seg: &Segment,
    scan: &super::segment::ScanResult,
    why: &str,
    max: usize,
) -> Result<()> {
    let after_round = scan.last_round.map(|(round, _)| round);
    let Some((pos, offset)) =
        seg.acknowledged_past(scan.valid_end, scan.next_offset, after_round, max)?
    else {
        return Ok(());
    };
    Err(LogError::Corrupt {
        path: seg.path.clone(),
        position: scan.valid_end,
        offset: Some(scan.next_offset),
        reason: format!(
            "{why}; records of later rounds follow it (offset {offset} at byte {pos}), so \
             the damage is in records that were on disk and acknowledged, not a write torn \
             by a crash. The log is left as it is: restore the data directory from a backup, \
             or keep the records before the damage and drop it and everything after it with \
             `truncate -s {} {}` (then start again; the index is rebuilt)",
            scan.valid_end,
            seg.path.display()
        ),
    })
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str());
        if let Some(base) = stem.and_then(|s| s.parse::<u64>().ok()) {
            if stem != Some(super::segment::stem(base).as_str()) {
                // Not a name the log writes (`7.log`, `+7.log`): opening the
                // segment by its canonical name would miss it or open
                // another file twice.
                tracing::warn!(file = %path.display(), "ignoring a file that is not a log segment");
                continue;
            }
            // No log reaches 2^63 records: such a name is damage, and
            // offsets counted on from it would overflow.
            if base > MAX_BASE_OFFSET {
                return Err(LogError::Corrupt {
                    path,
                    position: 0,
                    offset: Some(base),
                    reason: format!(
                        "a segment cannot start at offset {base} (at most {MAX_BASE_OFFSET})"
                    ),
                });
            }
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Largest base offset a segment file may have: 2^63 − 1.
const MAX_BASE_OFFSET: u64 = i64::MAX as u64;

fn remove_segment(path: &Path) {
    for ext in ["log", "index", "timeindex"] {
        let _ = std::fs::remove_file(path.with_extension(ext));
    }
}

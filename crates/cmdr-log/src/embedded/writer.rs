//! The topic writer: one OS thread per topic that turns queued appends into
//! *rounds* (group commit). A round encodes every queued batch, writes one
//! buffer per touched partition, `fdatasync`s each touched file, and only then
//! publishes the new end offsets and acknowledges every batch in the round.
//! A round starts only after the previous one is on disk, which is what makes
//! recovery's "only the last round can be incomplete" argument hold.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::format::{self, RecordRef, FLAG_ROUND_END};
use super::offsets::{sync_dir, CommitHeader, OffsetStore, COMMIT_HEADER};
use super::partition::Partition;
use super::segment::Segment;
use super::{LogConfig, Reserved, SyncMode, MAX_BATCH_BYTES};
use crate::{
    partition_for_key, Appended, Header, LogError, Record, Result, StoredRecord, WriteStats,
};

/// A request to a topic writer.
pub(crate) enum Request {
    /// Append a batch (and maybe commit an offset with it).
    Append {
        records: Vec<Record>,
        commit: Option<Reserved>,
        reply: oneshot::Sender<AppendAnswer>,
    },
    /// Make everything written so far durable.
    Sync { reply: oneshot::Sender<Result<()>> },
}

/// A writer's answer to an append: where its records went (or why they did
/// not), and the records themselves, handed back so that the caller's thread
/// frees them. Freed on the writer thread, which allocates none of them, each
/// free went to the allocating thread's glibc arena under its lock: with 64
/// callers that lock contention cost about a tenth of the server's CPU.
pub(crate) struct AppendAnswer {
    /// Positions of the records, in order, or the error.
    pub result: Result<Vec<Appended>>,
    /// The appended records, to be dropped by the caller.
    pub records: Vec<Record>,
}

/// One queued append: its records, its offset commit, and its reply.
type QueuedAppend = (Vec<Record>, Option<Reserved>, oneshot::Sender<AppendAnswer>);

/// The writer's own view of one partition.
struct PartWriter {
    part: Arc<Partition>,
    active: Arc<Segment>,
    /// Bytes of records in the active segment.
    size: u64,
    /// Length of the active segment file: `size` plus preallocated zeros.
    allocated: u64,
    /// Next offset to assign.
    next_offset: u64,
    /// Bytes written since the last sparse index entry.
    since_index: u64,
    /// Largest timestamp in the active segment.
    max_ts: i64,
    /// Written but not yet synced (interval mode).
    dirty: bool,
    /// Preallocating the active segment failed (a disk nearly full): not
    /// tried again until the next segment.
    no_prealloc: bool,
    /// Encoding buffer, reused across rounds.
    buf: Vec<u8>,
}

/// State of one topic's writer thread.
pub(crate) struct TopicWriter {
    parts: Vec<PartWriter>,
    next_round: u64,
    round_robin: u32,
    config: LogConfig,
    offsets: Arc<OffsetStore>,
    /// Set when a failed write could not be undone; every later append fails.
    /// Shared with the topic's handle, which reports it ([`crate::Log::failure`]).
    failed: Arc<OnceLock<String>>,
    /// Appends started by callers and not yet answered.
    in_flight: Arc<InFlight>,
    /// How long the last round's syncs took: bounds the wait for followers.
    last_sync: Duration,
    /// Rounds, records and syncs so far (see [`WriteStats`]).
    counters: Arc<WriteCounters>,
}

/// The counters behind [`WriteStats`], kept by the writer and read by
/// [`crate::Log::write_stats`].
#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    rounds: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    syncs: AtomicU64,
    sync_nanos: AtomicU64,
}

impl WriteCounters {
    /// The counters as they are now.
    pub fn snapshot(&self) -> WriteStats {
        WriteStats {
            rounds: self.rounds.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            sync_time: Duration::from_nanos(self.sync_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Counts `files` syncs that took `took` in all (each its own time).
    fn synced(&self, files: usize, took: Duration) {
        self.syncs.fetch_add(files as u64, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts one round that wrote `records` records in `bytes` bytes.
    fn wrote(&self, records: usize, bytes: usize) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Counts the appends callers have started and not yet seen answered, so the
/// writer can tell whether more are about to arrive; wakes the writer on
/// every change.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    writer: OnceLock<std::thread::Thread>,
}

impl InFlight {
    /// Counts one append until the guard is dropped (answered or abandoned).
    pub fn begin(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    /// Wakes the writer if it waits for followers.
    pub fn notify(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn set_writer(&self, t: std::thread::Thread) {
        let _ = self.writer.set(t);
    }
}

/// One counted append (see [`InFlight`]).
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.notify();
    }
}

impl TopicWriter {
    /// A writer over recovered partitions; `next_round` follows the last round on disk.
    pub fn new(
        partitions: &[Arc<Partition>],
        next_round: u64,
        config: LogConfig,
        offsets: Arc<OffsetStore>,
        in_flight: Arc<InFlight>,
        failed: Arc<OnceLock<String>>,
        counters: Arc<WriteCounters>,
    ) -> Self {
        let parts = partitions
            .iter()
            .map(|p| {
                let segs = p.segments();
                let active = segs
                    .last()
                    .cloned()
                    .expect("a recovered partition has an active segment");
                PartWriter {
                    size: active.visible_size(),
                    allocated: active.visible_size(),
                    max_ts: active.max_timestamp(),
                    next_offset: p.end_offset(),
                    since_index: 0,
                    dirty: false,
                    no_prealloc: false,
                    buf: Vec::new(),
                    active,
                    part: p.clone(),
                }
            })
            .collect();
        Self {
            parts,
            next_round,
            round_robin: 0,
            config,
            offsets,
            failed,
            in_flight,
            last_sync: Duration::ZERO,
            counters,
        }
    }

    /// Runs until every sender is gone, then syncs what is unsynced.
    ///
    /// Group commit: a round takes every queued request; with
    /// [`SyncMode::Always`] it also waits, for at most [`LogConfig::max_linger`]
    /// and half the previous round's sync time, for appends that callers have already
    /// started ([`InFlight`]) but not yet queued, typically the callers the
    /// previous round has just answered. Without that wait, callers split
    /// into two cohorts that alternate rounds, each round half full.
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        self.in_flight.set_writer(std::thread::current());
        let mut last_sync = Instant::now();
        let mut appends = Vec::new();
        let mut syncs = Vec::new();
        // A round writes at most this much, or one append if larger (at
        // most MAX_BATCH_BYTES): a segment's positions stay within `u32`.
        let round_max = self.config.max_round_bytes.min(MAX_BATCH_BYTES);
        // An append taken off the queue that did not fit its round: the next
        // round's first.
        let mut carry = None;
        while let Some(first) = carry.take().or_else(|| rx.blocking_recv()) {
            let mut bytes = 0usize;
            let mut next = Some(first);
            let mut deadline = None;
            loop {
                while let Some(req) = next.take() {
                    match req {
                        Request::Append {
                            records,
                            commit,
                            reply,
                        } => {
                            let size = records
                                .iter()
                                .map(|r| {
                                    format::encoded_len(r.key.as_deref(), &r.headers, &r.value)
                                })
                                .sum::<usize>();
                            if !appends.is_empty() && bytes.saturating_add(size) > round_max {
                                carry = Some(Request::Append {
                                    records,
                                    commit,
                                    reply,
                                });
                                break;
                            }
                            bytes += size;
                            appends.push((records, commit, reply));
                        }
                        Request::Sync { reply } => syncs.push(reply),
                    }
                    if bytes < round_max {
                        next = rx.try_recv().ok();
                    }
                }
                if carry.is_some()
                    || self.config.sync != SyncMode::Always
                    || self.config.max_linger.is_zero()
                    || appends.is_empty()
                    || bytes >= round_max
                    || appends.len() >= self.in_flight.count()
                {
                    break;
                }
                let now = Instant::now();
                let until =
                    *deadline.get_or_insert(now + (self.last_sync / 2).min(self.config.max_linger));
                if now >= until {
                    break;
                }
                // Woken by every submit and every answered caller (see `InFlight`).
                std::thread::park_timeout(until - now);
                next = rx.try_recv().ok();
            }
            if !appends.is_empty() {
                self.round(&mut appends);
            }
            let due = match self.config.sync {
                SyncMode::Always => false,
                SyncMode::Interval(every) => last_sync.elapsed() >= every,
            };
            if due || !syncs.is_empty() {
                let res = self.sync_dirty();
                last_sync = Instant::now();
                for reply in syncs.drain(..) {
                    let _ = reply.send(
                        res.as_ref()
                            .map(|_| ())
                            .map_err(|e| LogError::Closed(e.error().to_string())),
                    );
                }
                match res {
                    Err(SyncFailure::Segment(e)) => {
                        // What the sync should have made durable may be
                        // gone (a failed fsync forgets the dirty pages, and
                        // the next one reports success): refuse appends
                        // until a reopen recovers what is really on disk.
                        tracing::error!(error = %e, "sync failed; refusing appends until the log is reopened");
                        let _ = self.failed.set(format!(
                            "a sync failed ({e}); what it covered may not be on disk"
                        ));
                    }
                    // The records are synced; the groups stay dirty and
                    // the next sync writes them again.
                    Err(SyncFailure::Groups(e)) => {
                        tracing::error!(error = %e, "writing committed offsets failed; retried at the next sync");
                    }
                    Ok(()) => {}
                }
            }
        }
        if let Err(e) = self.sync_dirty() {
            tracing::error!(error = %e.error(), "final sync failed");
        }
    }

    fn sync_dirty(&mut self) -> std::result::Result<(), SyncFailure> {
        for pw in self.parts.iter_mut().filter(|p| p.dirty) {
            let t = Instant::now();
            pw.active.sync().map_err(SyncFailure::Segment)?;
            self.counters.synced(1, t.elapsed());
            pw.dirty = false;
        }
        self.offsets.persist_dirty().map_err(SyncFailure::Groups)
    }

    /// Writes one round and answers every batch in it.
    fn round(&mut self, batch: &mut Vec<QueuedAppend>) {
        if let Some(why) = self.failed.get() {
            for (records, commit, reply) in batch.drain(..) {
                // The reservation ends before the caller hears: it may retry
                // the same commit at once.
                drop(commit);
                let result = Err(LogError::Closed(why.clone()));
                let _ = reply.send(AppendAnswer { result, records });
            }
            return;
        }
        let n = self.parts.len() as u32;
        // Partition of every record, and the records of every partition in order.
        let mut plan: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n as usize];
        for (bi, (records, _, _)) in batch.iter().enumerate() {
            for (ri, rec) in records.iter().enumerate() {
                let p = match &rec.key {
                    Some(k) => partition_for_key(k, n),
                    None => {
                        self.round_robin = self.round_robin.wrapping_add(1);
                        self.round_robin % n
                    }
                };
                plan[p as usize].push((bi, ri));
            }
        }
        let touched: Vec<usize> = (0..n as usize).filter(|&p| !plan[p].is_empty()).collect();
        let round = self.next_round;
        self.next_round += 1;
        let now = crate::embedded::now_ms();
        let mut positions: Vec<Vec<Appended>> = batch
            .iter()
            .map(|(r, _, _)| {
                vec![
                    Appended {
                        partition: 0,
                        offset: 0,
                        timestamp: 0
                    };
                    r.len()
                ]
            })
            .collect();
        let mut entries: Vec<Vec<(u32, u32, i64)>> = vec![Vec::new(); n as usize];
        // The records as readers will see them, for each partition's tail
        // cache once they are durable.
        let cache = self.config.tail_cache_bytes >= super::tail::SMALLEST_USEFUL;
        let mut fresh: Vec<Vec<StoredRecord>> = vec![Vec::new(); n as usize];

        let result = (|| -> Result<()> {
            for &p in &touched {
                self.maybe_roll(p)?;
                let interval = self.config.index_interval_bytes as u64;
                let pw = &mut self.parts[p];
                pw.buf.clear();
                let last = plan[p].len() - 1;
                let mut max_ts = pw.max_ts;
                for (offset, (i, &(bi, ri))) in (pw.next_offset..).zip(plan[p].iter().enumerate()) {
                    let (records, commit, _) = &batch[bi];
                    let rec = &records[ri];
                    let timestamp = rec.timestamp.unwrap_or(now);
                    let extra = match (commit, ri == records.len() - 1) {
                        (Some(c), true) => Some(Header {
                            name: COMMIT_HEADER.into(),
                            value: Bytes::from(CommitHeader::encode(&c.commit, c.seq)),
                        }),
                        _ => None,
                    };
                    let disk = RecordRef {
                        flags: if i == last { FLAG_ROUND_END } else { 0 },
                        offset,
                        timestamp,
                        round,
                        round_parts: touched.len() as u32,
                        key: rec.key.as_deref(),
                        headers: &rec.headers,
                        extra: extra.as_ref(),
                        value: &rec.value,
                    };
                    let pos = pw.size + pw.buf.len() as u64;
                    max_ts = max_ts.max(timestamp);
                    if pw.since_index >= interval {
                        entries[p].push(((offset - pw.active.base) as u32, pos as u32, max_ts));
                        pw.since_index = 0;
                    }
                    let before = pw.buf.len();
                    format::encode_ref(&disk, &mut pw.buf);
                    if cache {
                        let mut headers = rec.headers.clone();
                        headers.extend(extra.clone());
                        fresh[p].push(StoredRecord {
                            partition: p as u32,
                            offset,
                            timestamp,
                            key: rec.key.clone(),
                            headers,
                            value: rec.value.clone(),
                        });
                    }
                    pw.since_index += (pw.buf.len() - before) as u64;
                    positions[bi][ri] = Appended {
                        partition: p as u32,
                        offset,
                        timestamp,
                    };
                }
                pw.active.write_at(&pw.buf, pw.size)?;
                let end = pw.size + pw.buf.len() as u64;
                pw.allocated = pw.allocated.max(end);
                // Zeros ahead, up to the roll point, for later rounds to
                // overwrite. Only after small rounds: a large one costs far
                // more than the size update the zeros would spare it.
                // Topped up an eighth at a time once less than half is left,
                // so that no round carries much: filling it all at once cost
                // that round 1.3 ms of writes and a 2.5 ms sync, which every
                // waiting caller sat through (`cmdr bench http`).
                let prealloc = self.config.preallocate_bytes;
                let limit = (end + prealloc).min(roll_at(&self.config));
                if (pw.buf.len() as u64) < prealloc / 8
                    && pw.allocated - end < prealloc / 2
                    && limit > pw.allocated
                    && !pw.no_prealloc
                {
                    let to = (pw.allocated + prealloc / 8).min(limit);
                    match pw.active.zero_fill(pw.allocated, to) {
                        Ok(()) => pw.allocated = to,
                        // Only an optimisation: the round's records are
                        // written, so it goes on without (cutting what part
                        // of the zeros was written) rather than fail.
                        Err(e) => {
                            tracing::warn!(error = %e, segment = %pw.active.path.display(),
                                "could not preallocate the active segment; going on without");
                            pw.no_prealloc = true;
                            pw.active.truncate(pw.allocated)?;
                        }
                    }
                }
            }
            if self.config.sync == SyncMode::Always {
                let t = Instant::now();
                let segments: Vec<&Segment> =
                    touched.iter().map(|&p| &*self.parts[p].active).collect();
                let synced = sync_all(&segments)?;
                self.last_sync = t.elapsed();
                self.counters.synced(segments.len(), synced);
            }
            Ok(())
        })();

        if let Err(e) = result {
            // Undo: cut every touched file back to its acknowledged size.
            for &p in &touched {
                let pw = &mut self.parts[p];
                pw.since_index = 0;
                pw.allocated = pw.size;
                if let Err(undo) = pw.active.truncate(pw.size) {
                    let _ = self
                        .failed
                        .set(format!("could not undo a failed write ({e}); then: {undo}"));
                }
            }
            let msg = e.to_string();
            tracing::error!(error = %msg, round, "append round failed; nothing in it was acknowledged");
            for (records, commit, reply) in batch.drain(..) {
                // As above: released before the caller hears.
                drop(commit);
                let result = Err(LogError::Closed(format!("append failed: {msg}")));
                let _ = reply.send(AppendAnswer { result, records });
            }
            return;
        }

        let written: usize = touched.iter().map(|&p| self.parts[p].buf.len()).sum();
        let records: usize = touched.iter().map(|&p| plan[p].len()).sum();
        self.counters.wrote(records, written);
        for &p in &touched {
            self.parts[p].active.write_index(&entries[p]);
        }
        // The round's ends and commits are published as one (a backup lists
        // the log between rounds), with no I/O while the gate is held.
        let offsets = Arc::clone(&self.offsets);
        let _publishing = offsets.publishing();
        for &p in &touched {
            let pw = &mut self.parts[p];
            let count = plan[p].len() as u64;
            pw.size += pw.buf.len() as u64;
            pw.next_offset += count;
            pw.dirty = self.config.sync != SyncMode::Always;
            let max_ts = positions_max_ts(&plan[p], &positions).max(pw.max_ts);
            pw.max_ts = max_ts;
            pw.active.publish(pw.size, max_ts, &entries[p]);
            pw.part
                .publish_end(pw.next_offset, std::mem::take(&mut fresh[p]));
        }
        for ((records, commit, reply), pos) in batch.drain(..).zip(positions) {
            if let Some(c) = &commit {
                self.offsets.set_lazily(&c.commit, c.seq);
            }
            // The reservation ends here, after the commit is recorded (or,
            // on an error, when the batch is dropped), however its caller
            // fared meanwhile.
            drop(commit);
            let _ = reply.send(AppendAnswer {
                result: Ok(pos),
                records,
            });
        }
    }

    /// Rolls partition `p` to a new segment when the active one is full.
    fn maybe_roll(&mut self, p: usize) -> Result<()> {
        let pw = &mut self.parts[p];
        if pw.size < roll_at(&self.config) || pw.size == 0 {
            return Ok(());
        }
        // A sealed segment holds records only.
        pw.cut_preallocated()?;
        let pw = &self.parts[p];
        // The records first (in interval sync mode they may not be yet),
        // then the commits they carry in headers: those are recovered from
        // the active segment only, so they go to the group files before
        // this one is sealed. (In interval mode the group files can still
        // get ahead of records of other partitions and topics not synced
        // yet; `cmdr serve` always syncs before answering.)
        if pw.dirty {
            let t = Instant::now();
            pw.active.sync()?;
            self.counters.synced(1, t.elapsed());
        }
        self.offsets.persist_dirty()?;
        let seg = Arc::new(Segment::create(&pw.part.dir, pw.next_offset)?);
        sync_dir(&pw.part.dir)?;
        pw.active.close_index_files();
        tracing::debug!(topic = %pw.part.topic, partition = p, base = pw.next_offset, "rolled segment");
        pw.part.push_segment(seg.clone());
        let pw = &mut self.parts[p];
        pw.active = seg;
        pw.size = 0;
        pw.allocated = 0;
        pw.since_index = 0;
        pw.max_ts = i64::MIN;
        pw.dirty = false;
        pw.no_prealloc = false;
        Ok(())
    }
}

/// What a sync of the dirty partitions failed at.
#[derive(Debug)]
enum SyncFailure {
    /// Syncing a segment: its unsynced records may be lost.
    Segment(LogError),
    /// Writing the group files: the records are safe, the commits retried.
    Groups(LogError),
}

impl SyncFailure {
    fn error(&self) -> &LogError {
        match self {
            Self::Segment(e) | Self::Groups(e) => e,
        }
    }
}

/// Size at which a partition rolls to a new segment.
fn roll_at(config: &LogConfig) -> u64 {
    config.segment_bytes.min(super::MAX_SEGMENT_BYTES)
}

impl PartWriter {
    /// Cuts the active segment's preallocated zeros (durably).
    fn cut_preallocated(&mut self) -> Result<()> {
        if self.allocated > self.size {
            self.active.truncate(self.size)?;
            self.allocated = self.size;
        }
        Ok(())
    }
}

/// `fdatasync`s every segment, in parallel when there are several (one
/// partition's sync does not wait for another's: on most disks several
/// concurrent syncs cost little more than one). Every result is checked;
/// returns the syncs' times, summed.
fn sync_all(segments: &[&Segment]) -> Result<Duration> {
    let Some((first, rest)) = segments.split_first() else {
        return Ok(Duration::ZERO);
    };
    let timed = |seg: &Segment| {
        let t = Instant::now();
        seg.sync().map(|()| t.elapsed())
    };
    if rest.is_empty() {
        return timed(first);
    }
    std::thread::scope(|scope| {
        // A segment whose helper thread could not start is synced here instead.
        let others: Vec<_> = rest
            .iter()
            .map(|seg| {
                let helper = std::thread::Builder::new()
                    .name("cmdr-log-sync".into())
                    .spawn_scoped(scope, || timed(seg));
                (seg, helper.ok())
            })
            .collect();
        let mut result = timed(first);
        for (seg, helper) in others {
            let r = match helper {
                Some(h) => h.join().unwrap_or_else(|_| {
                    Err(LogError::Closed(format!(
                        "the thread syncing {} panicked",
                        seg.path.display()
                    )))
                }),
                None => timed(seg),
            };
            result = match (result, r) {
                (Ok(a), Ok(b)) => Ok(a + b),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            };
        }
        result
    })
}

fn positions_max_ts(plan: &[(usize, usize)], positions: &[Vec<Appended>]) -> i64 {
    plan.iter()
        .map(|&(b, r)| positions[b][r].timestamp)
        .max()
        .unwrap_or(i64::MIN)
}

/// Sends a sync request every `every` while the topic is open (interval mode).
pub(crate) fn spawn_ticker(tx: mpsc::WeakSender<Request>, every: Duration) {
    std::thread::Builder::new()
        .name("cmdr-log-sync".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(tx) = tx.upgrade() else { return };
            let (reply, _) = oneshot::channel();
            if tx.blocking_send(Request::Sync { reply }).is_err() {
                return;
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!(error = %e, "could not start the sync ticker"));
}

//! The indexer task: follows the indexed topics and writes what it reads.
//!
//! One async *reader* per (topic, partition) reads batches with [`Log::read`]
//! and, at the end of the log, waits with [`Log::wait_for`] (woken by
//! appends, never polling). Readers hand batches to one *writer* (a blocking
//! thread, since redb writes are synchronous) through a channel bounded by
//! [`CHANNEL_BATCHES`]; when it is full, readers wait, so a slow disk slows
//! indexing, never memory. The writer gathers up to [`MAX_RECORDS_PER_TXN`]
//! records into one transaction that also stores each partition's next
//! offset: a crash either keeps a whole transaction (records and position)
//! or none of it, so nothing is indexed twice or skipped.
//!
//! Most commits use [`redb::Durability::None`] (the index is rebuildable, and
//! its position travels with the data, so a lost commit is simply redone from
//! the log); one in every [`DURABLE_INTERVAL`] and the last one at shutdown
//! are [`redb::Durability::Immediate`].
//!
//! The writer runs at background CPU priority while it keeps up and nobody
//! waits for the index, at normal priority otherwise (`priority.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmdr_contract::{header, CommandStatus, Event, Outcome, COMMANDS_TOPIC, EVENTS_TOPIC};
use cmdr_log::{Log, StoredRecord};
use redb::{
    Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, WriteTransaction,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::codec::{self, CommandProbe, EventProbe};
use crate::model::{status_code, LogPosition};
use crate::tables::name_hash;
use crate::{tables, DbResult, Index, IndexError, Result, INDEXED_TOPICS};

/// Most records a reader asks the log for at once.
pub const READ_BATCH: usize = 2048;
/// Bytes a reader aims to read at once: its reads are sized by a
/// [`cmdr_log::ReadBatch`] of at most [`READ_BATCH`] records, so large
/// records are read a few at a time.
pub const READ_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Batches in flight between readers and the writer (each at most
/// [`READ_BATCH`] records, and about [`READ_BATCH_BYTES`] or one larger
/// record); readers wait when it is full.
pub const CHANNEL_BATCHES: usize = 16;
/// Most records written in one index transaction.
pub const MAX_RECORDS_PER_TXN: usize = 4_096;
/// Bytes of records past which a transaction takes no further batch (it
/// holds what it writes in memory until its commit).
pub const MAX_BYTES_PER_TXN: usize = 64 * 1024 * 1024;
/// Commits are at least this far apart while nobody waits for the index:
/// under load, records gather into larger transactions (far less work per
/// record: at 2 ms the indexer took a quarter of the server's CPU under
/// `cmdr bench http`); when idle a record waits at most this long longer to
/// become visible.
pub const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(10);
/// Commits are at least this far apart while someone waits for the index
/// (a position, as reads and idempotent posts do, or an outcome, as
/// `?sync=true` does), so those waits stay short: `cmdr bench sync` at 1
/// connection went from 450 to ~1,250 round trips/s (p50 2.2 → 0.7 ms) when
/// this went from 2 ms to 500 µs, and from ~11k to ~14k/s at 64.
pub const MIN_COMMIT_INTERVAL_WAITED: Duration = Duration::from_micros(500);
/// While nobody waits for the index, a reader that has caught up with the
/// log pauses this long before reading again, so it reads once per commit
/// rather than once per append round (thousands of wake-ups a second under
/// load); a wait that starts ends the pause at once.
pub const READ_PAUSE: Duration = MIN_COMMIT_INTERVAL;
/// At least this often a commit is made durable (fsync). Its fsync stalls
/// the log's syncs in the same moment (a 42 ms index fsync held a log sync
/// for 38 ms): at 1 s the p99.9 of `cmdr bench http` at 64 connections was
/// 39 ms, at 10 s 13–15 ms (25-second runs), at the same throughput. After
/// a crash the index redoes at most this much of the log.
pub const DURABLE_INTERVAL: Duration = Duration::from_secs(10);
/// How often the writer purges lapsed idempotency records when keys expire
/// (see [`Index::purge_idempotency`]); sooner while a pass left work.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Records read from one partition, in offset order.
pub(crate) struct Batch {
    topic: &'static str,
    partition: u32,
    records: Vec<StoredRecord>,
}

impl Batch {
    /// About the memory its records take.
    fn bytes(&self) -> usize {
        self.records.iter().map(cmdr_log::batch::stored_bytes).sum()
    }
}

/// A running indexer; stop it with [`IndexerHandle::shutdown`]. Dropping the
/// handle detaches the indexer: it then runs until the log is closed.
#[derive(Debug)]
pub struct IndexerHandle {
    stop: watch::Sender<bool>,
    /// The writer's result, sent when its thread ends.
    writer: oneshot::Receiver<Result<()>>,
}

impl IndexerHandle {
    /// Stops the readers, lets the writer index what was already read, makes
    /// the index durable and returns the writer's result.
    ///
    /// # Errors
    /// The error that stopped the writer, if any.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.writer.await.unwrap_or(Err(IndexError::Stopped))
    }
}

impl Index {
    /// Starts indexing the `commands` and `events` topics (which must exist)
    /// of `log` from the committed positions.
    ///
    /// # Errors
    /// [`IndexError::Log`] when a topic is missing.
    pub async fn spawn_indexer(&self, log: Arc<dyn Log>) -> Result<IndexerHandle> {
        self.rebuild_if_ahead_of(log.as_ref()).await?;
        let (stop, stop_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
        let mut ends = Vec::new();
        for topic in INDEXED_TOPICS {
            let info = log.topic(topic).await?;
            for p in info.partitions {
                ends.push((topic, p.partition, p.end_offset));
                let from = self.position(topic, p.partition).max(p.start_offset);
                tokio::spawn(read_partition(
                    Arc::clone(&log),
                    self.clone(),
                    topic,
                    p.partition,
                    from,
                    tx.clone(),
                    stop_rx.clone(),
                ));
            }
        }
        drop(tx);
        self.inner.caught_up.store(false, Ordering::Release);
        self.inner.running.store(true, Ordering::Release);
        let watcher = self.clone();
        tokio::spawn(async move {
            for (topic, partition, end) in ends {
                while !watcher
                    .wait_indexed(topic, partition, end, Duration::from_secs(3600))
                    .await
                {
                    if !watcher.is_running() {
                        return;
                    }
                }
            }
            watcher.inner.caught_up.store(true, Ordering::Release);
        });
        let index = self.clone();
        let (done, writer) = oneshot::channel();
        // A thread of its own, named so (in `top`, `perf`, `cmdr bench
        // http`'s CPU by thread) rather than one of tokio's blocking pool.
        let spawned = std::thread::Builder::new()
            .name("cmdr-indexer".into())
            .spawn(move || {
                let result = write_until_closed(&index, rx);
                // Closed before the result is told: a shutdown that returns
                // leaves the database free to open again.
                drop(index);
                let _ = done.send(result);
            });
        if let Err(e) = spawned {
            self.inner.running.store(false, Ordering::Release);
            return Err(IndexError::Thread(e));
        }
        Ok(IndexerHandle { stop, writer })
    }

    /// Empties the index when it has indexed past the end of a partition of
    /// `log`: the log lost a tail the index had seen (a log that syncs on an
    /// interval, after a machine crash), and new records will take those
    /// offsets again. Rebuilt from the log, it holds exactly what the log holds.
    async fn rebuild_if_ahead_of(&self, log: &dyn Log) -> Result<()> {
        for topic in INDEXED_TOPICS {
            for p in log.topic(topic).await?.partitions {
                let indexed = self.position(topic, p.partition);
                if indexed > p.end_offset {
                    tracing::warn!(
                        topic,
                        partition = p.partition,
                        indexed,
                        log_end = p.end_offset,
                        "the index is ahead of the log (the log lost its unsynced tail); rebuilding the index from the log"
                    );
                    return self.clear();
                }
            }
        }
        Ok(())
    }

    /// Indexes everything in the log up to its current end, then stops:
    /// the work of `cmdr reindex` after [`Index::wipe`].
    ///
    /// # Errors
    /// As [`Index::spawn_indexer`]; [`IndexError::Stopped`] if the indexer failed.
    pub async fn catch_up(&self, log: Arc<dyn Log>) -> Result<()> {
        let mut ends = Vec::new();
        for topic in INDEXED_TOPICS {
            for p in log.topic(topic).await?.partitions {
                ends.push((topic, p.partition, p.end_offset));
            }
        }
        let handle = self.spawn_indexer(log).await?;
        for (topic, partition, end) in ends {
            while !self
                .wait_indexed(topic, partition, end, Duration::from_secs(3600))
                .await
            {
                if !self.is_running() {
                    break;
                }
            }
        }
        handle.shutdown().await
    }

    /// Makes the calling thread the one unparked when a wait starts (the
    /// writer moves between threads, see `priority.rs`).
    pub(crate) fn set_writer_thread(&self) {
        *self
            .inner
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::thread::current());
    }

    /// Sleeps until the next commit is due (see [`MIN_COMMIT_INTERVAL`]);
    /// woken early (see `Inner::wake_indexer`) when someone starts waiting
    /// for the index, which shortens the interval.
    fn pace(&self, last_commit: Instant) {
        loop {
            let interval = if self.inner.waited() {
                MIN_COMMIT_INTERVAL_WAITED
            } else {
                MIN_COMMIT_INTERVAL
            };
            match interval.checked_sub(last_commit.elapsed()) {
                Some(rest) if !rest.is_zero() => std::thread::park_timeout(rest),
                _ => return,
            }
        }
    }

    /// Entries in the tables of what waits for a record not indexed yet.
    fn waiting(&self) -> Result<Waiting> {
        let path = &self.inner.path;
        let txn = self.inner.db.begin_read().db(path)?;
        let outcomes = txn.open_table(tables::OUTCOMES).db(path)?.len().db(path)?;
        let roots = match txn.open_table(tables::PARKED_ROOTS) {
            Ok(table) => table.len().db(path)?,
            // An index written before the table existed: none parked.
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(e).db(path),
        };
        Ok(Waiting { outcomes, roots })
    }

    fn write_batches(
        &self,
        batches: &[Batch],
        durable: bool,
        waiting: &mut Waiting,
    ) -> Result<Vec<u128>> {
        let path = &self.inner.path;
        let mut txn = self.inner.db.begin_write().db(path)?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).db(path)?;
        let mut settled = Vec::new();
        {
            let mut t = Tables::open(self, &txn, waiting)?;
            for b in batches {
                for rec in &b.records {
                    if b.topic == COMMANDS_TOPIC {
                        t.index_command(rec, &mut settled)?;
                    } else if b.topic == EVENTS_TOPIC {
                        t.index_event(rec, &mut settled)?;
                    }
                }
                if let Some(last) = b.records.last() {
                    t.positions
                        .insert((b.topic, b.partition), last.offset + 1)
                        .db(path)?;
                }
            }
        }
        txn.commit().db(path)?;
        Ok(settled)
    }
}

/// Batches waiting for the writer beyond which it counts as lagging and
/// leaves background priority (see `priority.rs`): 80 ms or more behind
/// the log at the readers' pace (a batch per partition per
/// [`READ_PAUSE`] once caught up).
pub const LAG_BATCHES: usize = CHANNEL_BATCHES / 2;

/// What one [`Writer::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Wrote one transaction.
    Indexed,
    /// Gave the turn back before writing (the batch is kept for the next step).
    Yielded,
    /// Every reader is gone and everything read is indexed.
    Closed,
}

/// The indexer's writer between transactions: the channel from the
/// readers and what it carries from one transaction to the next. Only one
/// thread uses it at a time; it moves between threads (see
/// [`crate::priority`]).
pub(crate) struct Writer {
    rx: mpsc::Receiver<Batch>,
    /// A batch received but not yet written (after [`Step::Yielded`]).
    pending: Option<Batch>,
    waiting: Waiting,
    last_durable: Instant,
    last_commit: Instant,
    purge: Purge,
}

impl Writer {
    /// A writer reading batches from `rx`.
    pub(crate) fn new(index: &Index, rx: mpsc::Receiver<Batch>) -> Result<Self> {
        Ok(Self {
            rx,
            pending: None,
            waiting: index.waiting()?,
            last_durable: Instant::now(),
            last_commit: Instant::now(),
            purge: Purge::default(),
        })
    }

    /// Whether batches pile up: the writer does not keep up.
    pub(crate) fn lagging(&self) -> bool {
        self.rx.len() >= LAG_BATCHES
    }

    /// Whether everything read so far is indexed.
    pub(crate) fn idle(&self) -> bool {
        self.pending.is_none() && self.rx.is_empty()
    }

    /// Waits for the next batch and, once the commit is due, writes it with
    /// whatever else is queued in one transaction, then publishes the new
    /// positions and wakes the outcomes' waiters. With `yield_when_waited`,
    /// if anyone waits for the index once the batch is in hand, it returns
    /// [`Step::Yielded`] instead.
    pub(crate) fn step(&mut self, index: &Index, yield_when_waited: bool) -> Result<Step> {
        let first = match self.pending.take() {
            Some(b) => b,
            None => match self.rx.blocking_recv() {
                Some(b) => b,
                None => return Ok(Step::Closed),
            },
        };
        self.purge.run_if_due(index);
        index.pace(self.last_commit);
        if yield_when_waited && index.inner.waited() {
            self.pending = Some(first);
            return Ok(Step::Yielded);
        }
        let mut count = first.records.len();
        let mut bytes = first.bytes();
        let mut batches = vec![first];
        while count < MAX_RECORDS_PER_TXN && bytes < MAX_BYTES_PER_TXN {
            match self.rx.try_recv() {
                Ok(b) => {
                    count += b.records.len();
                    bytes += b.bytes();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let durable = self.last_durable.elapsed() >= DURABLE_INTERVAL;
        let settled = index.write_batches(&batches, durable, &mut self.waiting)?;
        self.last_commit = Instant::now();
        if durable {
            self.last_durable = Instant::now();
        }
        {
            let mut positions = index
                .inner
                .positions
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for b in &batches {
                if let Some(last) = b.records.last() {
                    positions.insert((b.topic.to_string(), b.partition), last.offset + 1);
                }
            }
        }
        index.inner.progress.send_modify(|g| *g += 1);
        for id in settled {
            index.inner.waiters.wake(id);
        }
        Ok(Step::Indexed)
    }

    /// Makes the last non-durable commits durable (after [`Step::Closed`]).
    pub(crate) fn finish(self, index: &Index) -> Result<()> {
        let path = &index.inner.path;
        let mut txn = index.inner.db.begin_write().db(path)?;
        txn.set_durability(Durability::Immediate).db(path)?;
        txn.commit().db(path)
    }
}

/// When the writer last purged lapsed idempotency records, and where the
/// next pass starts.
#[derive(Default)]
struct Purge {
    last: Option<Instant>,
    from: Option<String>,
}

impl Purge {
    /// Runs one purge pass when one is due. A failed pass is logged and
    /// retried at the next interval: indexing goes on.
    fn run_if_due(&mut self, index: &Index) {
        let interval = if self.from.is_some() {
            MIN_COMMIT_INTERVAL
        } else {
            PURGE_INTERVAL
        };
        if index.idempotency_ttl().is_none() || self.last.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        self.last = Some(Instant::now());
        match index.purge_idempotency(self.from.as_deref()) {
            Ok((removed, next)) => {
                if removed > 0 {
                    tracing::debug!(removed, "purged lapsed idempotency keys");
                }
                self.from = next;
            }
            Err(e) => tracing::warn!(error = %e, "purging lapsed idempotency keys failed"),
        }
    }
}

/// Every table, opened once per write transaction.
struct Tables<'t> {
    index: &'t Index,
    path: &'t std::path::Path,
    commands: Table<'t, u128, &'static [u8]>,
    commands_by_action: Table<'t, (u64, u128), ()>,
    commands_by_key: Table<'t, (u64, u128), ()>,
    commands_by_status: Table<'t, (u8, u128), ()>,
    outcomes: Table<'t, u128, u128>,
    events: Table<'t, u128, &'static [u8]>,
    events_by_action: Table<'t, (u64, u128), ()>,
    events_by_key: Table<'t, (u64, u128), ()>,
    events_by_parent: Table<'t, (u128, u128), ()>,
    events_by_root: Table<'t, (u128, u128), ()>,
    streams: Table<'t, (u64, u64, u32), u128>,
    idempotency: Table<'t, &'static str, &'static [u8]>,
    positions: Table<'t, (&'static str, u32), u64>,
    parked_roots: Table<'t, (u128, u128), ()>,
    /// Sizes of `outcomes` and `parked_roots`, which spare lookups when zero.
    waiting: &'t mut Waiting,
}

/// Entries in the tables of what waits for a record not indexed yet.
#[derive(Debug, Default)]
struct Waiting {
    /// In `outcomes`: outcomes whose command is not indexed yet.
    outcomes: u64,
    /// In `parked_roots`: events whose root is not known yet.
    roots: u64,
}

impl<'t> Tables<'t> {
    fn open(index: &'t Index, txn: &'t WriteTransaction, waiting: &'t mut Waiting) -> Result<Self> {
        let path = &index.inner.path;
        Ok(Self {
            index,
            path,
            waiting,
            parked_roots: txn.open_table(tables::PARKED_ROOTS).db(path)?,
            commands: txn.open_table(tables::COMMANDS).db(path)?,
            commands_by_action: txn.open_table(tables::COMMANDS_BY_ACTION).db(path)?,
            commands_by_key: txn.open_table(tables::COMMANDS_BY_KEY).db(path)?,
            commands_by_status: txn.open_table(tables::COMMANDS_BY_STATUS).db(path)?,
            outcomes: txn.open_table(tables::OUTCOMES).db(path)?,
            events: txn.open_table(tables::EVENTS).db(path)?,
            events_by_action: txn.open_table(tables::EVENTS_BY_ACTION).db(path)?,
            events_by_key: txn.open_table(tables::EVENTS_BY_KEY).db(path)?,
            events_by_parent: txn.open_table(tables::EVENTS_BY_PARENT).db(path)?,
            events_by_root: txn.open_table(tables::EVENTS_BY_ROOT).db(path)?,
            streams: txn.open_table(tables::STREAMS).db(path)?,
            idempotency: txn.open_table(tables::IDEMPOTENCY).db(path)?,
            positions: txn.open_table(tables::POSITIONS).db(path)?,
        })
    }

    fn index_command(&mut self, rec: &StoredRecord, settled: &mut Vec<u128>) -> Result<()> {
        let path = self.path;
        let position = LogPosition {
            partition: rec.partition,
            offset: rec.offset,
        };
        let probe: CommandProbe<'_> = match serde_json::from_slice(&rec.value) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(partition = rec.partition, offset = rec.offset, error = %e,
                    "skipping a commands record that is not a command");
                return Ok(());
            }
        };
        let id = probe.id.as_u128();
        // An outcome read before its command waits in `outcomes`; most
        // commands have none, and then the lookup is skipped.
        let outcome = if self.waiting.outcomes > 0 {
            self.outcomes.remove(id).db(path)?.map(|g| g.value())
        } else {
            None
        };
        if outcome.is_some() {
            self.waiting.outcomes -= 1;
        }
        let status = match outcome {
            Some(ev) => self.status_of_event(ev)?,
            None => CommandStatus::Pending,
        };
        let value = codec::encode_command(status, outcome, position, &rec.value);
        if !insert_first(&mut self.commands, id, &value, path)? {
            return Ok(()); // the same command appended twice
        }
        if outcome.is_some() {
            settled.push(id);
        }
        if let (Some(key), Some(hash)) = (
            rec.header(header::IDEMPOTENCY_KEY),
            rec.header(header::IDEMPOTENCY_HASH),
        ) {
            if let Ok(key) = std::str::from_utf8(key) {
                // The first command with a key keeps it, until it lapses.
                let bound = self
                    .idempotency
                    .get(key)
                    .db(path)?
                    .and_then(|v| crate::idempotency::record_id(v.value()));
                let free = bound.is_none_or(|first| {
                    first != id && self.index.lapsed(first, crate::model::time_of_id(id))
                });
                if free {
                    let mut value = Vec::with_capacity(hash.len() + 16);
                    value.extend_from_slice(&id.to_be_bytes());
                    value.extend_from_slice(hash);
                    self.idempotency.insert(key, value.as_slice()).db(path)?;
                }
            }
        }
        self.commands_by_action
            .insert((name_hash(&probe.action), id), ())
            .db(path)?;
        if !tables::is_own_id(&probe.key, id) {
            self.commands_by_key
                .insert((name_hash(&probe.key), id), ())
                .db(path)?;
        }
        self.commands_by_status
            .insert((status_code(status), id), ())
            .db(path)?;
        // Events without a root that wait for this command get it.
        if self.waiting.roots > 0 {
            self.resolve_parked(id, id, false, settled)?;
        }
        Ok(())
    }

    fn status_of_event(&self, event_id: u128) -> Result<CommandStatus> {
        let Some(raw) = self.events.get(event_id).db(self.path)? else {
            return Ok(CommandStatus::Accepted);
        };
        Ok(codec::event_outcome(raw.value())?.map_or(CommandStatus::Accepted, status_of))
    }

    fn index_event(&mut self, rec: &StoredRecord, settled: &mut Vec<u128>) -> Result<()> {
        let path = self.path;
        let position = LogPosition {
            partition: rec.partition,
            offset: rec.offset,
        };
        // Events come from processors: check the whole shape, not only the probed fields.
        if let Err(e) = Event::from_json(&rec.value) {
            tracing::warn!(partition = rec.partition, offset = rec.offset, error = %e,
                "skipping an events record that is not an event");
            return Ok(());
        }
        let probe: EventProbe<'_> = match serde_json::from_slice(&rec.value) {
            Ok(p) => p,
            Err(_) => return Ok(()),
        };
        let id = probe.id.as_u128();
        let parent = probe.parent.as_u128();
        // The root command: given, else the parent event's root, else the
        // parent if it is a command; unknown (parked) until then.
        let (root, parked) = match probe.root {
            Some(r) => (r.as_u128(), false),
            None => self.root_after(parent)?,
        };
        let value = codec::encode_event(root, position, &rec.value);
        if !insert_first(&mut self.events, id, &value, path)? {
            return Ok(()); // the same event appended twice
        }
        let key_hash = name_hash(&probe.key);
        self.events_by_action
            .insert((name_hash(&probe.action), id), ())
            .db(path)?;
        self.events_by_key.insert((key_hash, id), ()).db(path)?;
        self.events_by_parent.insert((parent, id), ()).db(path)?;
        self.events_by_root.insert((root, id), ()).db(path)?;
        self.streams
            .insert((key_hash, rec.offset, rec.partition), id)
            .db(path)?;
        if parked {
            self.parked_roots.insert((root, id), ()).db(path)?;
            self.waiting.roots += 1;
        } else if let Some(outcome) = probe.outcome {
            self.settle(root, id, status_of(outcome), settled)?;
        }
        // Events without a root that wait for this one get its root.
        if self.waiting.roots > 0 {
            self.resolve_parked(id, root, parked, settled)?;
        }
        Ok(())
    }

    /// The root of an event logged without one whose parent is `parent`,
    /// and whether it is parked: the parent event's root (parked if that
    /// is), or the parent if it is an indexed command; else, until the
    /// parent is indexed, the parent, parked.
    fn root_after(&self, parent: u128) -> Result<(u128, bool)> {
        let path = self.path;
        if let Some(raw) = self.events.get(parent).db(path)? {
            let root = codec::event_root(raw.value())?;
            let parked = self.waiting.roots > 0
                && self
                    .parked_roots
                    .range((root, 0)..=(root, u128::MAX))
                    .db(path)?
                    .next()
                    .is_some();
            return Ok((root, parked));
        }
        if self.commands.get(parent).db(path)?.is_some() {
            return Ok((parent, false));
        }
        Ok((parent, true))
    }

    /// Moves the events parked on `id` (just indexed) to `root`: their
    /// root for good, and their outcome applied, unless `parked` (then
    /// they stay parked, on `root`, with the event `id` itself).
    fn resolve_parked(
        &mut self,
        id: u128,
        root: u128,
        parked: bool,
        settled: &mut Vec<u128>,
    ) -> Result<()> {
        let path = self.path;
        let waiting: Vec<u128> = self
            .parked_roots
            .range((id, 0)..=(id, u128::MAX))
            .db(path)?
            .map(|entry| entry.map(|(k, _)| k.value().1))
            .collect::<std::result::Result<_, _>>()
            .db(path)?;
        for child in waiting {
            self.parked_roots.remove((id, child)).db(path)?;
            self.waiting.roots -= 1;
            let Some(raw) = self.events.get(child).db(path)?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let value = codec::with_root(&raw, root)?;
            self.events.insert(child, value.as_slice()).db(path)?;
            self.events_by_root.remove((id, child)).db(path)?;
            self.events_by_root.insert((root, child), ()).db(path)?;
            if parked {
                self.parked_roots.insert((root, child), ()).db(path)?;
                self.waiting.roots += 1;
            } else if let Some(outcome) = codec::event_outcome(&value)? {
                self.settle(root, child, status_of(outcome), settled)?;
            }
        }
        Ok(())
    }

    /// Records `event` as the outcome of `command` unless it already has
    /// one with a smaller id: the earliest outcome by id counts (UUID v7,
    /// so the first made), whatever order partitions are indexed in, so an
    /// index rebuilt from the log agrees with the live one. Keeps it in
    /// `outcomes` until the command is indexed when it is not yet.
    fn settle(
        &mut self,
        command: u128,
        event: u128,
        status: CommandStatus,
        settled: &mut Vec<u128>,
    ) -> Result<()> {
        let path = self.path;
        let existing = self
            .commands
            .get(command)
            .db(path)?
            .map(|raw| raw.value().to_vec());
        let Some(value) = existing else {
            let early = self.outcomes.get(command).db(path)?.map(|g| g.value());
            match early {
                None => {
                    self.outcomes.insert(command, event).db(path)?;
                    self.waiting.outcomes += 1;
                }
                Some(first) if event < first => {
                    self.outcomes.insert(command, event).db(path)?;
                }
                Some(_) => {}
            }
            return Ok(());
        };
        if codec::outcome_of(&value)?.is_some_and(|first| first <= event) {
            return Ok(());
        }
        let old = codec::command_status(&value)?;
        if old != status {
            self.commands_by_status
                .remove((status_code(old), command))
                .db(path)?;
            self.commands_by_status
                .insert((status_code(status), command), ())
                .db(path)?;
        }
        let value = codec::with_outcome(&value, status, event)?;
        self.commands.insert(command, value.as_slice()).db(path)?;
        settled.push(command);
        Ok(())
    }
}

/// The status an outcome gives its command.
fn status_of(outcome: Outcome) -> CommandStatus {
    match outcome {
        Outcome::Accepted => CommandStatus::Accepted,
        Outcome::Rejected => CommandStatus::Rejected,
    }
}

/// Inserts `id` → `value` unless `id` is already there, in which case the
/// first value is kept; returns whether it inserted. One insert in the
/// common case (no lookup first): a record appended twice is rare.
fn insert_first(
    table: &mut Table<'_, u128, &'static [u8]>,
    id: u128,
    value: &[u8],
    path: &std::path::Path,
) -> Result<bool> {
    let old = table
        .insert(id, value)
        .db(path)?
        .map(|old| old.value().to_vec());
    match old {
        Some(first) => {
            table.insert(id, first.as_slice()).db(path)?;
            Ok(false)
        }
        None => Ok(true),
    }
}

/// The indexer thread: writes what the readers send (see
/// [`crate::priority`]) until they are gone, then marks the indexer stopped
/// and wakes whoever waits on its progress.
fn write_until_closed(index: &Index, rx: mpsc::Receiver<Batch>) -> Result<()> {
    // redb panics on some damaged files: the indexer then stops like on
    // any other failure, so that the server notices (and stops) too.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Writer::new(index, rx).and_then(|w| crate::priority::run_writer(index, w))
    }))
    .unwrap_or_else(|panic| Err(IndexError::Panicked(crate::panic_message(&*panic))));
    *index
        .inner
        .writer_thread
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = None;
    index.inner.running.store(false, Ordering::Release);
    index.inner.progress.send_modify(|g| *g += 1);
    // No outcome will be indexed now: nobody waits for one.
    index.inner.waiters.wake_all();
    if let Err(e) = &result {
        tracing::error!(error = %e, "indexer stopped");
        if e.is_damage() {
            // The file opens but a page of it is broken: the next open
            // rebuilds it rather than stop again on the same page.
            let marker = crate::damage_marker(&index.inner.path);
            if let Err(e) = std::fs::write(&marker, b"") {
                tracing::error!(error = %e, marker = %marker.display(), "could not mark the index for a rebuild; run `cmdr reindex`");
            }
        }
    }
    result
}

/// Resolves when a stop was requested; never when the handle was dropped
/// without one (a detached indexer keeps running).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn read_partition(
    log: Arc<dyn Log>,
    index: Index,
    topic: &'static str,
    partition: u32,
    mut from: u64,
    tx: mpsc::Sender<Batch>,
    mut stop: watch::Receiver<bool>,
) {
    // Started small: the records' size is not known yet.
    let mut batch = cmdr_log::ReadBatch::new(8, READ_BATCH, READ_BATCH_BYTES);
    loop {
        let asked = batch.size();
        let read = tokio::select! {
            r = log.read(topic, partition, from, asked) => r,
            _ = stopped(&mut stop) => return,
        };
        let records = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(topic, partition, offset = from, error = %e, "indexer cannot read the log");
                index.inner.running.store(false, Ordering::Release);
                return;
            }
        };
        let Some(last) = records.last() else {
            let waited = tokio::select! {
                r = log.wait_for(topic, partition, from) => r,
                _ = stopped(&mut stop) => return,
            };
            if let Err(e) = waited {
                tracing::debug!(topic, partition, error = %e, "indexer reader stops");
                return;
            }
            continue;
        };
        from = last.offset + 1;
        let caught_up = records.len() < asked;
        batch.observe(&records);
        if tx
            .send(Batch {
                topic,
                partition,
                records,
            })
            .await
            .is_err()
        {
            return;
        }
        if caught_up {
            // Armed before checking, so a wait starting in between is seen.
            let wake = index.inner.wake_readers.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if !index.inner.waited() {
                tokio::select! {
                    () = tokio::time::sleep(READ_PAUSE) => {}
                    () = wake => {}
                    () = stopped(&mut stop) => return,
                }
            }
        }
    }
}

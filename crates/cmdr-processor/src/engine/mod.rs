//! The consumer engine shared by SDK and webhook processors: reads a topic as
//! a consumer group, hands each record to a [`Dispatch`], and appends the
//! outputs with the group offset atomically.
//!
//! Key decisions:
//! - **Per-key order, cross-key concurrency.** Records with the same key are
//!   handled one after another; records of different keys run concurrently,
//!   at most `max_in_flight` at a time.
//! - **Exactly-once on the embedded log.** Outputs are put back into offset
//!   order per partition ([`sequencer`]) and appended with
//!   [`Log::append_with_commit`] ([`flusher`]), so the committed offset always
//!   matches the outputs in the log, whatever crashes.
//! - **A separate poll task.** `GroupConsumer::poll` advances the read
//!   position, so it is never cancelled mid-way by the runner's `select!`; a
//!   dedicated task polls and hands batches over a bounded channel.
//! - **Shutdown drains.** On shutdown no new input is started; handlers
//!   already running finish and their outputs are flushed. Inputs received but
//!   not started, and inputs waiting to be retried (see [`Stopping`]), stay
//!   uncommitted and are handled after the restart. A running attempt is
//!   bounded by its retry policy's attempt timeout, so draining is too. A
//!   runner superseded by a new webhook registration drains the same way.

mod flusher;
mod sequencer;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use cmdr_log::{Log, Record, StartPosition, StoredRecord};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::ProcessorError;
use sequencer::{Released, Sequencer};

/// Default number of inputs handled concurrently (each of a different key).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Records asked for in one poll.
pub(crate) const POLL_BATCH: usize = 1024;
/// Polled batches queued between the poll task and the runner; when full the
/// poll task waits, so reading never runs ahead of handling.
pub(crate) const POLL_QUEUE: usize = 4;
/// Bytes a poll aims to bring: polls are sized by a [`cmdr_log::ReadBatch`]
/// of at most [`POLL_BATCH`] records.
pub(crate) const POLL_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most inputs received but not yet released; beyond it the runner stops
/// taking batches from the poll task until handlers catch up.
pub(crate) const MAX_BUFFERED_INPUTS: usize = 16 * 1024;
/// Bytes of inputs received but not yet released, and of the outputs they
/// produced, past which the runner stops taking batches from the poll task
/// and starts no input but the oldest unreleased one of each partition (the
/// one that holds back the others' outputs, say while its handler is
/// retried): memory stays bounded whatever the size of inputs and outputs,
/// and the head of the line is never kept waiting.
pub(crate) const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of released outputs queued for the flushers, not yet appended;
/// past it the runner waits for appends.
pub(crate) const MAX_FLUSH_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Handles one input record; the SDK and the webhook runner implement it.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// The records to append to the output topic for `record`. Must settle the
    /// input (retries happen inside); an `Err` stops the runner.
    ///
    /// When `stopping` fires, an input that would wait for another attempt
    /// returns [`ProcessorError::Interrupted`] instead: it is left unsettled.
    fn handle(
        &self,
        record: StoredRecord,
        stopping: Stopping,
    ) -> impl Future<Output = Result<Vec<Record>, ProcessorError>> + Send;
}

/// Tells a [`Dispatch`] that its engine is stopping (a cheap clone of a
/// watch on the engine's shutdown).
#[derive(Debug, Clone)]
pub(crate) struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Resolves once the engine is stopping (at once if it already is).
    pub async fn stopped(&self) {
        let mut rx = self.0.clone();
        // An error means the engine is gone: as good as stopping.
        let _ = rx.wait_for(|stopping| *stopping).await;
    }
}

/// What one engine consumes and where it writes.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub group: String,
    pub input_topic: String,
    pub output_topic: String,
    pub start: StartPosition,
    pub max_in_flight: usize,
}

/// Identity used for per-key ordering; keyless records order only with themselves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyId {
    Key(Bytes),
    Unkeyed(u32, u64),
}

fn key_of(record: &StoredRecord) -> KeyId {
    match &record.key {
        Some(k) => KeyId::Key(k.clone()),
        None => KeyId::Unkeyed(record.partition, record.offset),
    }
}

type TaskOutput = (u32, u64, KeyId, Result<Vec<Record>, ProcessorError>);

/// The runner's bookkeeping; see the module docs.
struct State<D> {
    dispatch: Arc<D>,
    stopping: Stopping,
    max_in_flight: usize,
    /// Keys with an input running or reserved, and the inputs queued behind it.
    keys: HashMap<KeyId, VecDeque<StoredRecord>>,
    /// Inputs of idle keys waiting for a free slot (their key is reserved).
    ready: VecDeque<StoredRecord>,
    tasks: JoinSet<TaskOutput>,
    sequencers: HashMap<u32, Sequencer>,
    /// Inputs received and not released.
    buffered: usize,
    /// Bytes of inputs received and not released, and of their outputs.
    held_bytes: usize,
}

impl<D: Dispatch> State<D> {
    fn start(&mut self, record: StoredRecord) {
        let dispatch = self.dispatch.clone();
        let stopping = self.stopping.clone();
        let key = key_of(&record);
        self.tasks.spawn(async move {
            let (p, o) = (record.partition, record.offset);
            (p, o, key, dispatch.handle(record, stopping).await)
        });
    }

    /// Takes in a polled record: queued behind its key, or ready to start.
    fn receive(&mut self, record: StoredRecord) {
        let bytes = cmdr_log::batch::stored_bytes(&record);
        let sequencer = self.sequencers.entry(record.partition).or_default();
        if !sequencer.received(record.offset, bytes) {
            return;
        }
        self.buffered += 1;
        self.held_bytes += bytes;
        let key = key_of(&record);
        if let Some(queue) = self.keys.get_mut(&key) {
            queue.push_back(record);
        } else {
            self.keys.insert(key, VecDeque::new());
            self.ready.push_back(record);
        }
    }

    /// Whether the byte budget lets more be polled.
    fn may_poll(&self) -> bool {
        self.buffered < MAX_BUFFERED_INPUTS && self.held_bytes < MAX_HELD_BYTES
    }

    /// Notes a finished input; its key's next input becomes ready first.
    fn finished(&mut self, partition: u32, offset: u64, key: KeyId, output: Vec<Record>) {
        self.held_bytes += sequencer::output_bytes(&output);
        if let Some(s) = self.sequencers.get_mut(&partition) {
            s.completed(offset, output);
        }
        let next = self.keys.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some(record) => self.ready.push_front(record),
            None => {
                self.keys.remove(&key);
            }
        }
    }

    /// Starts ready inputs while slots are free: in order within the byte
    /// budget, and past it only the head of the line of a partition (see
    /// [`MAX_HELD_BYTES`]), which is always ready or running.
    fn fill_slots(&mut self) {
        while self.tasks.len() < self.max_in_flight {
            let record = if self.held_bytes < MAX_HELD_BYTES {
                self.ready.pop_front()
            } else {
                let sequencers = &self.sequencers;
                let at = self.ready.iter().position(|r| {
                    sequencers.get(&r.partition).and_then(Sequencer::head) == Some(r.offset)
                });
                at.and_then(|i| self.ready.remove(i))
            };
            let Some(record) = record else {
                break;
            };
            self.start(record);
        }
    }

    /// Takes back the budget of released inputs.
    fn released(&mut self, released: &Released) {
        self.buffered -= released.inputs;
        self.held_bytes = self.held_bytes.saturating_sub(released.bytes);
    }
}

/// Runs one engine until `shutdown` resolves (then drains) or the log fails.
pub(crate) async fn run<D: Dispatch>(
    log: Arc<dyn Log>,
    config: EngineConfig,
    dispatch: Arc<D>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProcessorError> {
    let mut consumer = log
        .join_group(&config.group, &config.input_topic, config.start)
        .await
        .map_err(|e| {
            ProcessorError::log(
                format!("joining group {} on {}", config.group, config.input_topic),
                e,
            )
        })?;
    let (poll_tx, mut poll_rx) =
        mpsc::channel::<Result<Vec<StoredRecord>, ProcessorError>>(POLL_QUEUE);
    let poll_context = format!("polling {} for group {}", config.input_topic, config.group);
    let poller = crate::task_guard::AbortOnDrop(tokio::spawn(async move {
        // Started small: the records' size is not known yet.
        let mut size = cmdr_log::ReadBatch::new(8, POLL_BATCH, POLL_BATCH_BYTES);
        loop {
            let asked = size.size();
            let batch = consumer
                .poll(asked)
                .await
                .map_err(|e| ProcessorError::log(poll_context.clone(), e));
            if let Ok(records) = &batch {
                size.observe(records);
            }
            let failed = batch.is_err();
            if poll_tx.send(batch).await.is_err() || failed {
                break;
            }
        }
    }));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut state = State {
        dispatch,
        stopping: Stopping(stop_rx),
        max_in_flight: config.max_in_flight.max(1),
        keys: HashMap::new(),
        ready: VecDeque::new(),
        tasks: JoinSet::new(),
        sequencers: HashMap::new(),
        buffered: 0,
        held_bytes: 0,
    };
    let flush_budget = Arc::new(tokio::sync::Semaphore::new(MAX_FLUSH_QUEUE_BYTES));
    let mut flush_txs: HashMap<u32, mpsc::Sender<Released>> = HashMap::new();
    let mut flushers: JoinSet<Result<(), ProcessorError>> = JoinSet::new();
    let commit_lock = Arc::new(tokio::sync::Mutex::new(()));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopping = false;
    // Set when an input found its runner superseded: the runner then drains
    // like at shutdown and ends with this error.
    let mut superseded: Option<ProcessorError> = None;

    let outcome: Result<(), ProcessorError> = 'run: loop {
        if stopping && state.tasks.is_empty() {
            break superseded.take().map_or(Ok(()), Err);
        }
        tokio::select! {
            biased;
            () = &mut shutdown, if !stopping => {
                stopping = true;
                let _ = stop_tx.send(true);
                state.ready.clear();
                state.keys.clear();
            }
            Some(done) = state.tasks.join_next(), if !state.tasks.is_empty() => {
                let (partition, offset, key, output) = match done {
                    Ok((p, o, k, Ok(out))) => (p, o, k, out),
                    // Left unsettled on purpose: nothing after it in its
                    // partition is committed, so it runs again after the restart.
                    Ok((_, _, _, Err(ProcessorError::Interrupted))) if stopping => continue,
                    // Another registration takes over from this input on:
                    // drain as for a shutdown, so calls in flight finish and
                    // are committed rather than cut off and sent again.
                    Ok((_, _, _, Err(e @ ProcessorError::Superseded(_)))) => {
                        if !stopping {
                            stopping = true;
                            let _ = stop_tx.send(true);
                            state.ready.clear();
                            state.keys.clear();
                        }
                        superseded.get_or_insert(e);
                        continue;
                    }
                    Ok((_, _, _, Err(e))) => break Err(e),
                    Err(e) => break Err(ProcessorError::Internal(format!("handler task: {e}"))),
                };
                state.finished(partition, offset, key, output);
                // Several releases when outputs are large (see `MAX_RELEASE_BYTES`).
                while let Some(mut released) =
                    state.sequencers.get_mut(&partition).and_then(Sequencer::release)
                {
                    state.released(&released);
                    let share = sequencer::output_bytes(&released.records)
                        .clamp(1, MAX_FLUSH_QUEUE_BYTES) as u32;
                    match Arc::clone(&flush_budget).acquire_many_owned(share).await {
                        Ok(permit) => released.permit = Some(permit),
                        Err(_) => break 'run Err(ProcessorError::Internal("flush budget closed".into())),
                    }
                    let tx = flush_txs.entry(partition).or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(flusher::FLUSH_QUEUE);
                        let target = flusher::FlushTarget {
                            log: log.clone(),
                            group: config.group.clone(),
                            input_topic: config.input_topic.clone(),
                            output_topic: config.output_topic.clone(),
                            partition,
                            commit_lock: commit_lock.clone(),
                        };
                        flushers.spawn(flusher::run(target, rx));
                        tx
                    });
                    if tx.send(released).await.is_err() {
                        break 'run Err(flusher_failure(&mut flushers).await);
                    }
                }
                if !stopping {
                    state.fill_slots();
                }
            }
            batch = poll_rx.recv(), if !stopping && state.may_poll() => {
                match batch {
                    Some(Ok(records)) => {
                        records.into_iter().for_each(|r| state.receive(r));
                        state.fill_slots();
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Err(ProcessorError::Internal("poll task ended".into())),
                }
            }
            Some(done) = flushers.join_next(), if !flushers.is_empty() => {
                break Err(match done {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => ProcessorError::Internal("flusher ended early".into()),
                    Err(e) => ProcessorError::Internal(format!("flusher task: {e}")),
                });
            }
        }
    };

    // Handlers still running are cut off at their next await, and waited
    // for: none of them outlives the run (a rejoin starts a new one).
    state.tasks.abort_all();
    while state.tasks.join_next().await.is_some() {}
    drop(flush_txs);
    let mut result = outcome;
    while let Some(done) = flushers.join_next().await {
        let flushed = match done {
            Ok(r) => r,
            Err(e) => Err(ProcessorError::Internal(format!("flusher task: {e}"))),
        };
        if let (Ok(()), Err(e)) = (&result, flushed) {
            result = Err(e);
        }
    }
    // Only now leave the group: a member taking these partitions over starts
    // from the offsets just committed, not from before them (which would
    // only get its own commits fenced).
    drop(poller);
    drop(poll_rx);
    result
}

/// The error of the flusher that closed its channel.
async fn flusher_failure(flushers: &mut JoinSet<Result<(), ProcessorError>>) -> ProcessorError {
    while let Some(done) = flushers.join_next().await {
        match done {
            Ok(Err(e)) => return e,
            Err(e) => return ProcessorError::Internal(format!("flusher task: {e}")),
            Ok(Ok(())) => {}
        }
    }
    ProcessorError::Internal("flusher ended early".into())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use cmdr_log::memory::MemoryLog;

    use super::*;

    /// Holds offset 0 until `go` is notified; answers every other input
    /// with a 1 MiB output at once.
    struct HeadBlocks {
        started: AtomicUsize,
        go: tokio::sync::Notify,
    }

    impl Dispatch for HeadBlocks {
        async fn handle(
            &self,
            record: StoredRecord,
            _stopping: Stopping,
        ) -> Result<Vec<Record>, ProcessorError> {
            self.started.fetch_add(1, Ordering::SeqCst);
            if record.offset == 0 {
                self.go.notified().await;
            }
            let key = record.key.clone().unwrap_or_default();
            Ok(vec![Record::new(key, vec![b'x'; 1 << 20])])
        }
    }

    /// While the head of the line is held, later inputs' outputs pile up
    /// only to the byte budget (not to the count limit); once it goes, all
    /// of them are appended in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outputs_held_behind_a_slow_head_stay_within_the_byte_budget() {
        const INPUTS: usize = 200;
        let log = Arc::new(MemoryLog::new());
        log.create_topic("in", 1).await.unwrap();
        log.create_topic("out", 1).await.unwrap();
        let inputs = (0..INPUTS)
            .map(|i| Record::new(format!("k{i}"), format!("{i}")))
            .collect();
        log.append("in", inputs).await.unwrap();
        let dispatch = Arc::new(HeadBlocks {
            started: AtomicUsize::new(0),
            go: tokio::sync::Notify::new(),
        });
        let config = EngineConfig {
            group: "g".into(),
            input_topic: "in".into(),
            output_topic: "out".into(),
            start: StartPosition::Earliest,
            max_in_flight: 16,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let engine = tokio::spawn(run(log.clone(), config, dispatch.clone(), async move {
            let _ = stop_rx.await;
        }));

        let budget_inputs = MAX_HELD_BYTES >> 20;
        let mut seen = 0;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen = dispatch.started.load(Ordering::SeqCst);
        }
        assert!(seen > 16, "inputs behind the head run: {seen}");
        assert!(
            seen <= budget_inputs + 16 + 1,
            "{seen} inputs handled while the head waits: more than the byte budget allows"
        );
        assert!(log.read("out", 0, 0, 1).await.unwrap().is_empty());

        dispatch.go.notify_one();
        let mut appended = 0;
        for _ in 0..500 {
            appended = log.topic("out").await.unwrap().partitions[0].end_offset;
            if appended == INPUTS as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(appended, INPUTS as u64);
        let keys: Vec<Bytes> = log
            .read("out", 0, 0, INPUTS)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| r.key)
            .collect();
        let expected: Vec<Bytes> = (0..INPUTS).map(|i| Bytes::from(format!("k{i}"))).collect();
        assert_eq!(keys, expected, "outputs in input order");
        assert_eq!(
            log.committed("g", "in", 0).await.unwrap(),
            Some(INPUTS as u64)
        );
        let _ = stop_tx.send(());
        engine.await.unwrap().unwrap();
    }
}

//! cmdr's index: every command and event of the log, with each command's
//! status, in an embedded database, so that clients can ask "what happened to
//! command X?", list and filter commands and events, read one key's history,
//! and wait for an outcome.
//!
//! The index is a *read model*: an [`indexer`] task follows the `commands` and
//! `events` topics and writes what it reads, with its per-partition positions,
//! in the same transaction, so a crash never double- or skip-indexes. It can
//! always be deleted and rebuilt from the log ([`Index::wipe`]).
//!
//! Why [redb](https://docs.rs/redb): it is pure Rust (no C toolchain, no
//! foreign code in the process), ACID with copy-on-write B-trees (a crash
//! leaves the last committed state), MVCC (readers never block the single
//! writer nor each other, which suits one indexer and many HTTP readers), and
//! it keeps everything in one file in the data directory.
//!
//! ```no_run
//! # async fn demo(log: std::sync::Arc<dyn cmdr_log::Log>) -> Result<(), cmdr_index::IndexError> {
//! use cmdr_index::{Index, Query};
//! let index = Index::open("./cmdr-data/index.redb")?;
//! let indexer = index.spawn_indexer(log).await?;
//! let page = index.list_commands(&Query::default())?;
//! println!("{} commands", page.items.len());
//! indexer.shutdown().await?;
//! # Ok(()) }
//! ```

mod codec;
mod error;
mod idempotency;
pub mod indexer;
mod model;
mod priority;
mod query;
mod tables;
mod waiters;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};
use tokio::sync::watch;

pub use error::{IndexError, Result};
pub use idempotency::{PURGE_BATCH, PURGE_SCAN};
pub use indexer::IndexerHandle;
pub use model::{
    id_floor_for_time, status_code, CommandTree, CommandView, EventView, LogPosition, Order, Page,
    Query, StreamPage, DEFAULT_LIMIT, MAX_CHILDREN, MAX_LIMIT, MAX_PAGE_BYTES, MAX_SCAN,
};
pub use waiters::{OutcomeWaiter, Waiters, MAX_WAITERS};

/// Bytes of redb's page cache. redb's own default (1 GiB) would let the
/// index alone exceed the server's memory budget; hot pages of recent
/// commands fit in this, older ones are read from the OS page cache.
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The topics the indexer follows.
pub const INDEXED_TOPICS: [&str; 2] = [cmdr_contract::COMMANDS_TOPIC, cmdr_contract::EVENTS_TOPIC];

/// The index: a handle to the database, cheap to clone and share.
#[derive(Clone, Debug)]
pub struct Index {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    path: PathBuf,
    /// Outcome waiters, woken by the indexer after each commit.
    waiters: Arc<Waiters>,
    /// Committed positions, (topic, partition) → next offset, mirrored in
    /// memory so that waiting for a position needs no transaction.
    positions: RwLock<HashMap<(String, u32), u64>>,
    /// Bumped after every indexer commit; waiters of positions watch it.
    progress: watch::Sender<u64>,
    /// False once the indexer failed or stopped.
    running: AtomicBool,
    /// True once the running indexer has reached the log's end as it was
    /// when the indexer started (readiness).
    caught_up: AtomicBool,
    /// The indexer's writer thread, unparked when someone starts waiting so
    /// that its commit pacing switches to the short interval at once.
    writer_thread: std::sync::Mutex<Option<std::thread::Thread>>,
    /// How long an `Idempotency-Key` stays bound to its first command, in
    /// ms (0: forever); see [`Index::set_idempotency_ttl`].
    idempotency_ttl_ms: AtomicU64,
    /// Wakes readers pausing between reads (see `indexer::READ_PAUSE`).
    wake_readers: tokio::sync::Notify,
}

impl Inner {
    /// Wakes the indexer's readers and writer thread if they are pacing
    /// their next read or commit, so a wait that just started is served at
    /// the short interval.
    fn wake_indexer(&self) {
        self.wake_readers.notify_waiters();
        if let Some(t) = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            t.unpark();
        }
    }

    /// Whether anyone waits for the index (a position or an outcome).
    fn waited(&self) -> bool {
        self.progress.receiver_count() > 0 || !self.waiters.is_empty()
    }
}

/// Maps any redb error into [`IndexError::Db`] with the file's path.
trait DbResult<T> {
    fn db(self, path: &Path) -> Result<T>;
}

impl<T, E: Into<redb::Error>> DbResult<T> for std::result::Result<T, E> {
    fn db(self, path: &Path) -> Result<T> {
        self.map_err(|e| IndexError::Db {
            path: path.to_path_buf(),
            error: Box::new(e.into()),
        })
    }
}

impl Index {
    /// Opens (or creates) the index file at `path`. A file in an older layout
    /// is wiped and recreated (it will be rebuilt from the log).
    ///
    /// # Errors
    /// [`IndexError::Db`] when the file cannot be opened or created.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| IndexError::Io {
                path: dir.to_path_buf(),
                error,
            })?;
        }
        let create = |path: &Path| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(path)
                .db(path)
        };
        // A file in another layout, or one so damaged that redb panics on
        // it, is wiped: the index is rebuilt from the log.
        let open = |path: &Path| -> Result<Option<(Database, Positions)>> {
            let attempt =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<_> {
                    let db = create(path)?;
                    if Self::format_of(&db, path)? != Some(tables::FORMAT_VERSION) {
                        return Ok(None);
                    }
                    Self::init(&db, path)?;
                    let positions = Self::load_positions(&db, path)?;
                    Ok(Some((db, positions)))
                }));
            match attempt {
                Err(panic) => {
                    tracing::warn!(path = %path.display(), error = %panic_message(&*panic),
                        "the index file is damaged; rebuilding it from the log");
                    Ok(None)
                }
                Ok(Err(e)) if e.is_damage() => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "the index file is damaged; rebuilding it from the log");
                    Ok(None)
                }
                Ok(other) => other,
            }
        };
        let marker = damage_marker(&path);
        let marked = marker.exists();
        if marked {
            tracing::warn!(path = %path.display(), "the indexer found this index damaged; rebuilding it from the log");
        }
        let opened = if marked { None } else { open(&path)? };
        let (db, positions) = match opened {
            Some(opened) => opened,
            None => {
                Self::wipe(&path)?;
                let db = create(&path)?;
                Self::init(&db, &path)?;
                let positions = Self::load_positions(&db, &path)?;
                (db, positions)
            }
        };
        if marked {
            let _ = std::fs::remove_file(&marker);
        }
        let (progress, _) = watch::channel(0);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path,
                waiters: Arc::new(Waiters::default()),
                positions: RwLock::new(positions),
                progress,
                running: AtomicBool::new(false),
                caught_up: AtomicBool::new(false),
                writer_thread: std::sync::Mutex::new(None),
                idempotency_ttl_ms: AtomicU64::new(0),
                wake_readers: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Deletes the index file at `path` (the log is untouched), so that the
    /// next [`Index::open`] and indexer run rebuild it from the log.
    ///
    /// # Errors
    /// [`IndexError::Io`] when the file exists and cannot be removed.
    pub fn wipe(path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(IndexError::Io {
                path: path.to_path_buf(),
                error,
            }),
        }
    }

    /// Empties the index (every table, every position) in one transaction,
    /// keeping the file and its lock, so the next indexer run rebuilds it
    /// from the log. Use it while no indexer runs.
    ///
    /// # Errors
    /// [`IndexError::Db`].
    pub fn clear(&self) -> Result<()> {
        let path = &self.inner.path;
        let txn = self.inner.db.begin_write().db(path)?;
        for table in [
            tables::COMMANDS.name(),
            tables::COMMANDS_BY_ACTION.name(),
            tables::COMMANDS_BY_KEY.name(),
            tables::COMMANDS_BY_STATUS.name(),
            tables::OUTCOMES.name(),
            tables::PARKED_ROOTS.name(),
            tables::EVENTS.name(),
            tables::EVENTS_BY_ACTION.name(),
            tables::EVENTS_BY_KEY.name(),
            tables::EVENTS_BY_PARENT.name(),
            tables::EVENTS_BY_ROOT.name(),
            tables::STREAMS.name(),
            tables::IDEMPOTENCY.name(),
            tables::POSITIONS.name(),
        ] {
            let handle = txn.list_tables().db(path)?.find(|h| h.name() == table);
            if let Some(handle) = handle {
                txn.delete_table(handle).db(path)?;
            }
        }
        txn.commit().db(path)?;
        Self::init(&self.inner.db, path)?;
        self.inner
            .positions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    fn format_of(db: &Database, path: &Path) -> Result<Option<u64>> {
        let txn = db.begin_read().db(path)?;
        let table = match txn.open_table(tables::META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e).db(path),
        };
        Ok(table.get("format").db(path)?.map(|v| v.value()))
    }

    fn init(db: &Database, path: &Path) -> Result<()> {
        let txn = db.begin_write().db(path)?;
        {
            txn.open_table(tables::META)
                .db(path)?
                .insert("format", tables::FORMAT_VERSION)
                .db(path)?;
            txn.open_table(tables::COMMANDS).db(path)?;
            txn.open_table(tables::COMMANDS_BY_ACTION).db(path)?;
            txn.open_table(tables::COMMANDS_BY_KEY).db(path)?;
            txn.open_table(tables::COMMANDS_BY_STATUS).db(path)?;
            txn.open_table(tables::OUTCOMES).db(path)?;
            txn.open_table(tables::PARKED_ROOTS).db(path)?;
            txn.open_table(tables::EVENTS).db(path)?;
            txn.open_table(tables::EVENTS_BY_ACTION).db(path)?;
            txn.open_table(tables::EVENTS_BY_KEY).db(path)?;
            txn.open_table(tables::EVENTS_BY_PARENT).db(path)?;
            txn.open_table(tables::EVENTS_BY_ROOT).db(path)?;
            txn.open_table(tables::STREAMS).db(path)?;
            txn.open_table(tables::IDEMPOTENCY).db(path)?;
            txn.open_table(tables::POSITIONS).db(path)?;
        }
        txn.commit().db(path)
    }

    fn load_positions(db: &Database, path: &Path) -> Result<HashMap<(String, u32), u64>> {
        let txn = db.begin_read().db(path)?;
        let table = txn.open_table(tables::POSITIONS).db(path)?;
        let mut out = HashMap::new();
        for row in table.iter().db(path)? {
            let (k, v) = row.db(path)?;
            let (topic, partition) = k.value();
            out.insert((topic.to_string(), partition), v.value());
        }
        Ok(out)
    }

    /// The file this index lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The next offset the index will index in `topic`/`partition` (0 when it
    /// has indexed nothing there yet).
    pub fn position(&self, topic: &str, partition: u32) -> u64 {
        let positions = self
            .inner
            .positions
            .read()
            .unwrap_or_else(|p| p.into_inner());
        // A few entries (topics × partitions): a scan, with no key to build.
        positions
            .iter()
            .find(|((t, p), _)| *p == partition && t == topic)
            .map_or(0, |(_, o)| *o)
    }

    /// Waits until the index has indexed `topic`/`partition` up to (excluding)
    /// `offset`, for at most `timeout`. Returns whether it got there.
    pub async fn wait_indexed(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> bool {
        let mut rx = self.inner.progress.subscribe();
        if self.position(topic, partition) < offset {
            self.inner.wake_indexer();
        }
        let reached = async {
            loop {
                if self.position(topic, partition) >= offset {
                    return true;
                }
                if !self.is_running() || rx.changed().await.is_err() {
                    return self.position(topic, partition) >= offset;
                }
            }
        };
        tokio::time::timeout(timeout, reached)
            .await
            .unwrap_or(false)
    }

    /// Whether the indexer task is running (false before it starts and after
    /// it stopped or failed).
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Whether the running indexer has indexed everything that was in the
    /// log when it started (until then, listings may miss older records).
    pub fn is_caught_up(&self) -> bool {
        self.is_running() && self.inner.caught_up.load(Ordering::Acquire)
    }

    /// Registers a wait for command `id`'s outcome. Register *before* reading
    /// the command's status, so an outcome indexed in between is not missed.
    /// `None` when [`MAX_WAITERS`] waits are already registered, or when
    /// the indexer is not running (its stop wakes every waiter).
    pub fn wait_for_outcome(&self, id: uuid::Uuid) -> Option<OutcomeWaiter> {
        if !self.is_running() {
            return None;
        }
        let waiter = self.inner.waiters.register(id.as_u128());
        // Stopped in between: its wake-up of every waiter may have come
        // before this one registered.
        if !self.is_running() {
            return None;
        }
        self.inner.wake_indexer();
        waiter
    }

    /// The outcome waiter registry (for metrics and tests).
    pub fn waiters(&self) -> &Arc<Waiters> {
        &self.inner.waiters
    }
}

/// The file whose presence says the index at `path` must be rebuilt (its
/// indexer found it damaged).
pub(crate) fn damage_marker(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".damaged");
    std::path::PathBuf::from(name)
}

/// Each indexed partition's next offset to index, by (topic, partition).
type Positions = HashMap<(String, u32), u64>;

/// The message of a caught panic, when it has one.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

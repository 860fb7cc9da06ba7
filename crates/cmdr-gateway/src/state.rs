//! The state every handler shares: the log, the index, the schema registry,
//! the webhook processor registry and the dead letters, the in-flight
//! idempotency keys, the configuration and the shutdown signal.

use std::sync::Arc;

use cmdr_index::Index;
use cmdr_log::{Log, LogError};
use cmdr_processor::{DeadLetters, ProcessorError, WebhookRegistry};
use tokio::sync::watch;

use crate::config::GatewayConfig;
use crate::disk_space::DiskSpace;
use crate::idempotency::InFlightKeys;
use crate::schemas::SchemaRegistry;

/// Cheap to clone: one `Arc` around everything.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) log: Arc<dyn Log>,
    pub(crate) index: Index,
    pub(crate) schemas: SchemaRegistry,
    /// Webhook processor registrations (`/processors`); the same registry the
    /// webhook supervisor follows, so a `PUT` starts a runner.
    pub(crate) webhooks: WebhookRegistry,
    /// Inputs no attempt could handle (`/dead-letters`).
    pub(crate) dead_letters: DeadLetters,
    pub(crate) idempotency: Arc<InFlightKeys>,
    /// Per commands partition, the highest offset of an idempotent command
    /// whose key was released before the index had it (the index wait ran
    /// out); until the index passes it, a key it does not know may be bound.
    pub(crate) unindexed_keys: std::sync::Mutex<std::collections::HashMap<u32, u64>>,
    /// Partitions of the events topic when the state was built.
    pub(crate) events_partitions: usize,
    pub(crate) config: GatewayConfig,
    /// Set to `true` when the server begins shutting down, so that
    /// long-lived responses (SSE, WebSocket) end and let it drain.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Set when a shutdown was asked for: `/readyz` answers 503 from then
    /// on, through [`GatewayConfig::shutdown_delay`] of normal service
    /// (for load balancers to stop sending) and the drain after it.
    pub(crate) leaving: std::sync::atomic::AtomicBool,
    /// Permits for live followers (SSE streams and WebSocket subscriptions),
    /// [`crate::MAX_LIVE_STREAMS`] in all; when none is left, a new stream
    /// gets 503 instead of growing the number of tasks reading the log.
    pub(crate) live: Arc<tokio::sync::Semaphore>,
    /// Counters of `/metrics` that only intake knows.
    pub(crate) metrics: crate::metrics::Metrics,
    /// The application's own readiness checks (see
    /// [`AppState::add_readiness_check`]).
    pub(crate) readiness: std::sync::RwLock<Vec<(String, ReadinessCheck)>>,
    /// The data directory's free-space reserve, once watched (see
    /// [`AppState::watch_disk_space`]).
    pub(crate) disk: std::sync::OnceLock<Arc<crate::disk_space::DiskSpace>>,
    /// OpenAPI paths and component schemas of the application's own routes
    /// (see [`AppState::document_routes`]).
    pub(crate) documented: std::sync::RwLock<(serde_json::Value, serde_json::Value)>,
}

/// A readiness check of the application's: whether what it names is ready.
pub type ReadinessCheck = Arc<dyn Fn() -> bool + Send + Sync>;

impl AppState {
    /// Builds the state: loads every registered schema and webhook processor
    /// from the log (creating their topics and the dead letter topic if
    /// needed). The index should already be running.
    ///
    /// # Errors
    /// Log failures while loading schemas.
    pub async fn new(
        log: Arc<dyn Log>,
        index: Index,
        config: GatewayConfig,
    ) -> Result<Self, cmdr_log::LogError> {
        let schemas = SchemaRegistry::load(Arc::clone(&log)).await?;
        let webhooks = WebhookRegistry::open(Arc::clone(&log))
            .await
            .map_err(into_log_error)?;
        let dead_letters = DeadLetters::open(Arc::clone(&log))
            .await
            .map_err(into_log_error)?;
        let events_partitions = log
            .topic(cmdr_contract::EVENTS_TOPIC)
            .await
            .map_or(1, |t| t.partitions.len());
        Ok(Self {
            inner: Arc::new(Shared {
                log,
                index,
                schemas,
                webhooks,
                dead_letters,
                idempotency: Arc::default(),
                unindexed_keys: std::sync::Mutex::default(),
                events_partitions,
                config,
                shutdown: watch::channel(false).0,
                leaving: std::sync::atomic::AtomicBool::new(false),
                live: Arc::new(tokio::sync::Semaphore::new(crate::MAX_LIVE_STREAMS)),
                metrics: crate::metrics::Metrics::default(),
                readiness: std::sync::RwLock::default(),
                disk: std::sync::OnceLock::new(),
                documented: std::sync::RwLock::new((
                    serde_json::Value::Object(serde_json::Map::new()),
                    serde_json::Value::Object(serde_json::Map::new()),
                )),
            }),
        })
    }

    /// Adds a check to `/readyz`: it answers 503 while `check` returns
    /// false, and lists it under `checks.{name}`. For what an application
    /// serves beside the API, e.g. a read model replaying the log at
    /// start-up, so that a load balancer sends no reads before it is whole.
    pub fn add_readiness_check(&self, name: impl Into<String>, check: ReadinessCheck) {
        self.inner
            .readiness
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.into(), check));
    }

    /// Keeps [`GatewayConfig::min_free_bytes`] free in the file system of
    /// `data_dir` (see [`crate::disk_space`]): reads its free space now and
    /// then every second on the current runtime, for as long as the state
    /// lives. Once under the reserve, clients' writes get `507` and
    /// `/readyz` says so. A second call changes nothing.
    pub fn watch_disk_space(&self, data_dir: impl Into<std::path::PathBuf>) -> Arc<DiskSpace> {
        let space = self.inner.disk.get_or_init(|| {
            let space = Arc::new(DiskSpace::new(data_dir, self.inner.config.min_free_bytes));
            tokio::spawn(watch_disk(Arc::downgrade(&self.inner)));
            space
        });
        Arc::clone(space)
    }

    /// The data directory's free-space reserve, if watched.
    pub(crate) fn disk_space(&self) -> Option<&DiskSpace> {
        self.inner.disk.get().map(Arc::as_ref)
    }

    /// Reads the data directory's free space now, with what the index has
    /// still to write, if it is watched.
    pub(crate) async fn read_disk_space(&self) {
        let Some(space) = self.inner.disk.get() else {
            return;
        };
        let unindexed = self.unindexed_bytes().await;
        let space = Arc::clone(space);
        // A failed task changes nothing: the last reading stays.
        let _ = tokio::task::spawn_blocking(move || space.read(unindexed)).await;
    }

    /// Bytes the index has still to write: per indexed topic, the records
    /// appended but not indexed, at the topic's average record size.
    async fn unindexed_bytes(&self) -> u64 {
        let mut bytes = 0u64;
        for topic in cmdr_index::INDEXED_TOPICS {
            let Ok(info) = self.inner.log.topic(topic).await else {
                continue;
            };
            let behind: u64 = info
                .partitions
                .iter()
                .map(|p| {
                    let indexed = self.inner.index.position(topic, p.partition);
                    p.end_offset.saturating_sub(indexed)
                })
                .sum();
            let average = self
                .inner
                .log
                .write_stats(topic)
                .filter(|s| s.records > 0)
                .map_or(crate::disk_space::UNKNOWN_RECORD_BYTES, |s| {
                    s.bytes / s.records
                });
            bytes = bytes.saturating_add(behind.saturating_mul(average));
        }
        bytes
    }

    /// `Ok` when a client's write of about `bytes` may be appended (and
    /// then counted off the free space): refused with
    /// [`ApiError::InsufficientStorage`] while the free space is under the
    /// reserve. When the writes taken since the last reading may have
    /// reached the reserve, the free space is read again first.
    pub(crate) async fn check_disk_space(
        &self,
        bytes: usize,
    ) -> Result<(), crate::error::ApiError> {
        let Some(space) = self.inner.disk.get() else {
            return Ok(());
        };
        if !space.is_low() && space.maybe_low() {
            self.read_disk_space().await;
        }
        if space.is_low() || space.maybe_low() {
            return Err(crate::error::ApiError::InsufficientStorage {
                free: space.estimate(),
                min_free: space.min_free(),
            });
        }
        space.charge(bytes as u64);
        Ok(())
    }

    /// After an append failed: reads the free space again at once, so that
    /// a disk that just filled stops the next writes without waiting for
    /// the watcher's next turn.
    pub(crate) fn recheck_disk_space(&self) {
        if self.inner.disk.get().is_some() {
            let state = self.clone();
            tokio::spawn(async move { state.read_disk_space().await });
        }
    }

    /// Documents routes the application serves beside the API (merged into
    /// the router with `app(state).merge(...)`) in `/openapi.json` and
    /// `/docs`: `paths` is an OpenAPI 3.1 `paths` object, `schemas` one of
    /// `components.schemas` (referred to as `#/components/schemas/NAME`).
    /// Their operations are given the 401 and 403 answers of the API's; a
    /// path or schema the API has already keeps the API's.
    pub fn document_routes(&self, paths: serde_json::Value, schemas: serde_json::Value) {
        let mut documented = self
            .inner
            .documented
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let (known_paths, known_schemas) = &mut *documented;
        for (into, from) in [(known_paths, paths), (known_schemas, schemas)] {
            if let (Some(into), serde_json::Value::Object(from)) = (into.as_object_mut(), from) {
                into.extend(from);
            }
        }
    }

    /// The application's documented paths and component schemas.
    pub(crate) fn documented_routes(&self) -> (serde_json::Value, serde_json::Value) {
        self.inner
            .documented
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The application's readiness checks, by name, as they are now.
    pub(crate) fn readiness(&self) -> Vec<(String, bool)> {
        self.inner
            .readiness
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, check)| (name.clone(), check()))
            .collect()
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.inner.index
    }

    /// The log.
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.inner.log
    }

    /// The webhook processor registry (pass it to
    /// [`cmdr_processor::webhook::supervise`] to run the registered processors).
    pub fn webhooks(&self) -> &WebhookRegistry {
        &self.inner.webhooks
    }

    /// The dead letters.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.inner.dead_letters
    }

    /// Turns `/readyz` to 503 ahead of a shutdown, while everything else is
    /// served as before (called by [`crate::serve`] when its shutdown
    /// future resolves, [`GatewayConfig::shutdown_delay`] before
    /// [`AppState::begin_shutdown`]).
    pub fn begin_leaving(&self) {
        self.inner
            .leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a shutdown was asked for (see [`AppState::begin_leaving`];
    /// [`AppState::begin_shutdown`] sets it too).
    pub fn is_leaving(&self) -> bool {
        self.inner
            .leaving
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tells long-lived responses to end (called by [`crate::serve`]).
    pub fn begin_shutdown(&self) {
        self.begin_leaving();
        let _ = self.inner.shutdown.send(true);
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }
}

/// Opening the registries can only fail in the log; keep that error.
fn into_log_error(e: ProcessorError) -> LogError {
    match e {
        ProcessorError::Log { source, .. } => source,
        other => LogError::Closed(other.to_string()),
    }
}

/// Reads the data directory's free space every
/// [`crate::disk_space::CHECK_EVERY`], the first time at once, for as long
/// as the state lives.
async fn watch_disk(shared: std::sync::Weak<Shared>) {
    let mut every = tokio::time::interval(crate::disk_space::CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = shared.upgrade() else {
            return;
        };
        AppState { inner }.read_disk_space().await;
    }
}

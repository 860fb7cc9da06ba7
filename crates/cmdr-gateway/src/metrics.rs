//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
//!
//! Key decision: almost everything is read at scrape time from the state the
//! server already keeps (log end offsets, index positions, waiters, live
//! streams), so the intake path pays only two atomic increments per command.
//! Counters that only intake can know (commands appended, answers by status)
//! live in [`Metrics`].

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The media type of the answer.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label set of per-status and per-topic metrics.
type Labels = Vec<(&'static str, String)>;

/// The counters intake keeps; cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// Commands appended to the log (acknowledged).
    pub appended: Counter,
    /// Answers held back because the index was too far behind (see
    /// [`crate::GatewayConfig::max_index_lag`]).
    pub held_for_index: Counter,
    /// `POST /commands` answers, by status code.
    pub answers: Family<Labels, Counter>,
    /// The `202`, `201` and `409` members of `answers`, held so that counting
    /// the common answers is one atomic increment (no label lookup).
    common: [(u16, Counter); 3],
}

impl Default for Metrics {
    fn default() -> Self {
        let answers: Family<Labels, Counter> = Family::default();
        let common = [202, 201, 409].map(|s| {
            (
                s,
                answers
                    .get_or_create(&vec![("status", s.to_string())])
                    .clone(),
            )
        });
        Self {
            appended: Counter::default(),
            held_for_index: Counter::default(),
            answers,
            common,
        }
    }
}

impl Metrics {
    /// Counts one `POST /commands` answer.
    pub fn answered(&self, status: u16) {
        match self.common.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                self.answers
                    .get_or_create(&vec![("status", status.to_string())])
                    .inc();
            }
        }
    }
}

/// Routes: `GET /metrics`.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let shared = &state.inner;
    let mut root = Registry::default();
    let registry = root.sub_registry_with_prefix("cmdr");
    registry.register(
        "commands_appended",
        "Commands appended to the log (each on disk before its answer)",
        shared.metrics.appended.clone(),
    );
    registry.register(
        "commands_held_for_index",
        "Answers to POST /commands held back while the index was more than max_index_lag commands behind",
        shared.metrics.held_for_index.clone(),
    );
    registry.register(
        "command_answers",
        "Answers to POST /commands, by HTTP status",
        shared.metrics.answers.clone(),
    );

    let end: Family<Labels, Gauge> = Family::default();
    let indexed: Family<Labels, Gauge> = Family::default();
    let lag: Family<Labels, Gauge> = Family::default();
    for topic in cmdr_index::INDEXED_TOPICS {
        let info = shared.log.topic(topic).await?;
        for p in info.partitions {
            let labels = vec![
                ("topic", topic.to_string()),
                ("partition", p.partition.to_string()),
            ];
            let position = shared.index.position(topic, p.partition);
            end.get_or_create(&labels).set(gauge_value(p.end_offset));
            indexed.get_or_create(&labels).set(gauge_value(position));
            lag.get_or_create(&labels)
                .set(gauge_value(p.end_offset.saturating_sub(position)));
        }
    }
    registry.register("log_end_offset", "Next offset of each partition", end);
    registry.register("index_position", "Next offset the index will read", indexed);
    registry.register(
        "index_lag_records",
        "Records appended but not indexed yet",
        lag,
    );

    register_write_stats(registry, shared.log.as_ref()).await?;

    let gauge = |value: usize| {
        let g: Gauge = Gauge::default();
        g.set(gauge_value(value as u64));
        g
    };
    registry.register(
        "index_caught_up",
        "1 once the index has read what the log held at start-up",
        gauge(usize::from(shared.index.is_caught_up())),
    );
    registry.register(
        "outcome_waiters",
        "Requests waiting for a command's outcome (?sync=true, Prefer: wait)",
        gauge(shared.index.waiters().len()),
    );
    let live_in_use = crate::MAX_LIVE_STREAMS.saturating_sub(shared.live.available_permits());
    registry.register(
        "live_streams",
        "Open live streams (SSE streams and WebSocket subscriptions)",
        gauge(live_in_use),
    );
    let webhooks = shared.webhooks.list().await.map_err(ApiError::from)?;
    registry.register(
        "webhook_processors",
        "Registered webhook processors",
        gauge(webhooks.len()),
    );
    let dead_letters = shared
        .log
        .topic(cmdr_processor::DEAD_LETTERS_TOPIC)
        .await
        .map_or(0, |t| t.partitions.iter().map(|p| p.end_offset).sum());
    registry.register(
        "dead_letters",
        "Inputs given up on after every attempt (records in the dead letter topic)",
        gauge(usize::try_from(dead_letters).unwrap_or(usize::MAX)),
    );

    // Once a reading succeeded (before, the free space is not known).
    if let Some(space) = state.disk_space().filter(|s| s.free() != u64::MAX) {
        let bytes = |value: u64| {
            let g: Gauge = Gauge::default();
            g.set(gauge_value(value));
            g
        };
        registry.register_with_unit(
            "data_dir_free",
            "Free space of the data directory's file system at the last reading (once a second)",
            Unit::Bytes,
            bytes(space.free()),
        );
        registry.register_with_unit(
            "data_dir_min_free",
            "The reserve (min_free_bytes): under it, clients' writes get 507",
            Unit::Bytes,
            bytes(space.min_free()),
        );
    }

    if let Some((rss, threads)) = process_status() {
        // Unprefixed: the names every Prometheus client uses for them.
        let process = root.sub_registry_with_prefix("process");
        process.register(
            "resident_memory_bytes",
            "Resident memory of the process",
            gauge(usize::try_from(rss).unwrap_or(usize::MAX)),
        );
        process.register("threads", "Threads of the process", gauge(threads));
    }

    let mut body = String::new();
    encode(&mut body, &root).map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    Ok(res)
}

/// What each topic's log writer has done (logs that keep count: the
/// embedded log): rounds, records and bytes written, syncs and their time.
/// Records per round is how much group commit shares; sync seconds per sync
/// is what the disk takes to make a round durable.
async fn register_write_stats(registry: &mut Registry, log: &dyn cmdr_log::Log) -> ApiResult<()> {
    let rounds: Family<Labels, Counter> = Family::default();
    let records: Family<Labels, Counter> = Family::default();
    let bytes: Family<Labels, Counter> = Family::default();
    let syncs: Family<Labels, Counter> = Family::default();
    let sync_seconds: Family<Labels, Counter<f64, AtomicU64>> = Family::default();
    let mut any = false;
    for topic in log.topics().await? {
        let Some(stats) = log.write_stats(&topic.name) else {
            continue;
        };
        any = true;
        let labels = vec![("topic", topic.name.clone())];
        rounds.get_or_create(&labels).inc_by(stats.rounds);
        records.get_or_create(&labels).inc_by(stats.records);
        bytes.get_or_create(&labels).inc_by(stats.bytes);
        syncs.get_or_create(&labels).inc_by(stats.syncs);
        sync_seconds
            .get_or_create(&labels)
            .inc_by(stats.sync_time.as_secs_f64());
    }
    if !any {
        return Ok(());
    }
    registry.register(
        "log_rounds",
        "Write rounds of each topic's log writer since start (group commit: one write and one sync per touched partition for all the appends queued)",
        rounds,
    );
    registry.register(
        "log_records_written",
        "Records written by each topic's log writer since start",
        records,
    );
    registry.register_with_unit(
        "log_written",
        "Bytes of records written by each topic's log writer since start",
        Unit::Bytes,
        bytes,
    );
    registry.register(
        "log_syncs",
        "fdatasync calls on each topic's segment files since start",
        syncs,
    );
    registry.register_with_unit(
        "log_sync",
        "Time each topic's fdatasync calls took since start, summed (calls run at once each count)",
        Unit::Seconds,
        sync_seconds,
    );
    Ok(())
}

/// Resident bytes and threads of this process, from `/proc/self/status`
/// (Linux; `None` elsewhere).
fn process_status() -> Option<(u64, usize)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let rss_kib = field("VmRSS:")?;
    let threads = field("Threads:")?;
    Some((rss_kib * 1024, usize::try_from(threads).ok()?))
}

/// A gauge holds an `i64`; offsets beyond it (never in practice) saturate.
fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

//! Raw processor throughput: commands/s through a trivial accept handler,
//! from "processor started" to "every command's outcome appended and its
//! offset committed". Run: `cargo bench -p cmdr-processor --bench trivial_handler`.
//!
//! Each iteration pre-loads `BATCH` commands (untimed, 1,000 keys), then times
//! one processor run over them. The figure is printed per backend: the
//! embedded log (durable, `fdatasync` per write round) and an in-memory log
//! (the engine's own ceiling).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cmdr_contract::{header, Command, CommandRequest, COMMANDS_TOPIC};
use cmdr_log::embedded::{EmbeddedLog, LogConfig};
use cmdr_log::{Log, Record};
use cmdr_processor::{Decision, Processor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

/// Commands per timed iteration.
const BATCH: u64 = 50_000;
/// Distinct keys among them.
const KEYS: u64 = 1_000;
/// Partitions of the topics.
const PARTITIONS: u32 = 8;

async fn preload(log: &dyn Log) {
    cmdr_processor::sdk::ensure_topics(log, PARTITIONS)
        .await
        .unwrap();
    let mut records = Vec::with_capacity(BATCH as usize);
    for i in 0..BATCH {
        let req = CommandRequest {
            action: "ping".into(),
            data: json!({ "n": i }).as_object().cloned().unwrap_or_default(),
            key: Some(format!("key-{}", i % KEYS)),
        };
        let cmd = Command::from_request(req, cmdr_contract::now_ms(), Default::default()).unwrap();
        records.push(
            Record::new(Bytes::from(cmd.key.clone().into_bytes()), cmd.to_json())
                .with_header(header::ACTION, &b"ping"[..]),
        );
    }
    for chunk in records.chunks(5_000) {
        log.append(COMMANDS_TOPIC, chunk.to_vec()).await.unwrap();
    }
}

/// Times one processor run over the pre-loaded commands.
async fn run_once(log: Arc<dyn Log>) -> Duration {
    let processor = Processor::builder_shared(log.clone())
        .group("bench")
        .command("ping", |_cmd, _ctx| async {
            Ok(Decision::accept_one("pong", serde_json::Value::Null))
        })
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(processor.run(async {
        let _ = stopped.await;
    }));
    let info = log.topic(COMMANDS_TOPIC).await.unwrap();
    for p in info.partitions {
        while log
            .committed("bench", COMMANDS_TOPIC, p.partition)
            .await
            .unwrap()
            != Some(p.end_offset)
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    elapsed
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("trivial_handler");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(BATCH));
    group.bench_function("memory_log", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    let log: Arc<dyn Log> = Arc::new(cmdr_log::memory::MemoryLog::new());
                    preload(log.as_ref()).await;
                    run_once(log).await
                });
            }
            let per_s = (iters * BATCH) as f64 / total.as_secs_f64();
            println!("trivial handler, memory log: {per_s:.0} commands/s");
            total
        })
    });
    group.bench_function("embedded_log", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    let dir = tempfile::tempdir().unwrap();
                    let log = EmbeddedLog::open(LogConfig::new(dir.path())).await.unwrap();
                    let log: Arc<dyn Log> = Arc::new(log);
                    preload(log.as_ref()).await;
                    run_once(log).await
                });
            }
            let per_s = (iters * BATCH) as f64 / total.as_secs_f64();
            println!("trivial handler, embedded log (fsync on): {per_s:.0} commands/s");
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

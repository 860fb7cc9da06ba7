//! Criterion benchmark of the indexer: `cargo bench -p cmdr-index`.
//!
//! `index/commands/10000`: 10,000 commands (the shape `cmdr bench http`
//! posts) are appended to an in-memory log, then a fresh index file catches
//! up with them ([`Index::catch_up`]: read, decode, write in transactions).
//! The throughput is commands indexed per second, the cost the indexer adds
//! to every accepted command.

use std::sync::Arc;

use cmdr_contract::{header, Command, CommandRequest, Meta};
use cmdr_index::Index;
use cmdr_log::memory::MemoryLog;
use cmdr_log::{Log, Record};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;

const COMMANDS: usize = 10_000;

fn commands_log(rt: &tokio::runtime::Runtime) -> Arc<MemoryLog> {
    rt.block_on(async {
        let log = Arc::new(MemoryLog::new());
        log.create_topic("commands", 1).await.expect("topic");
        log.create_topic("events", 1).await.expect("topic");
        let mut batch = Vec::new();
        for n in 0..COMMANDS {
            let req = CommandRequest::from_value(json!({
                "action": "bench-command",
                "data": {"n": n, "payload": "x".repeat(56)},
                "key": format!("conn-{}", n % 64),
            }))
            .expect("request");
            let mut meta = Meta::new();
            meta.insert("principal".into(), json!("anonymous"));
            let c = Command::from_request(req, cmdr_contract::now_ms(), meta).expect("command");
            batch.push(
                Record::new(c.key.clone(), c.to_json())
                    .with_header(header::ACTION, c.action.clone())
                    .with_timestamp(c.timestamp),
            );
        }
        log.append("commands", batch).await.expect("append");
        log
    })
}

fn indexing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let log = commands_log(&rt);
    let mut group = c.benchmark_group("index");
    group.sample_size(10);
    group.throughput(Throughput::Elements(COMMANDS as u64));
    group.bench_function("commands/10000", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let index = Index::open(dir.path().join("index.redb")).expect("index");
                let log: Arc<dyn Log> = log.clone();
                rt.block_on(index.catch_up(log)).expect("catch up");
                dir
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, indexing);
criterion_main!(benches);

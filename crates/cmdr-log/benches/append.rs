//! Criterion benchmarks of the embedded log with `fdatasync` on:
//! `cargo bench -p cmdr-log --bench append`.
//!
//! - `format/*`: encoding and decoding one 100 B record (CPU only);
//! - `append/single/*`: one awaited single-record append (one round, one sync);
//! - `append/concurrent64/*`: 64 concurrent single-record appends (group commit);
//! - `append/batch1000`: one call of 1,000 records of 100 B;
//! - `read/1000`: reading 1,000 records of 100 B from a warm partition.
//!
//! The figures driver `cmdr bench log` (crate `cmdr-bench`) prints the same
//! workloads as throughput and latency percentiles beside the machine's raw
//! sync rate.

use std::time::Duration;

use bytes::Bytes;
use cmdr_log::embedded::format::{decode, encode, DiskRecord};
use cmdr_log::embedded::{EmbeddedLog, LogConfig, SyncMode};
use cmdr_log::{Log, Record};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio::runtime::Runtime;

const TOPIC: &str = "bench";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn record(size: usize) -> Record {
    Record {
        key: Some(Bytes::from_static(b"key-1")),
        value: Bytes::from(vec![b'v'; size]),
        headers: Vec::new(),
        timestamp: None,
    }
}

async fn open(dir: &tempfile::TempDir) -> EmbeddedLog {
    let log = EmbeddedLog::open(LogConfig::new(dir.path()).sync(SyncMode::Always))
        .await
        .expect("open");
    log.create_topic(TOPIC, 1).await.expect("topic");
    log
}

fn format(c: &mut Criterion) {
    let rec = DiskRecord {
        flags: 1,
        offset: 42,
        timestamp: 1_700_000_000_000,
        round: 7,
        round_parts: 1,
        key: Some(Bytes::from_static(b"customer-42")),
        headers: Vec::new(),
        value: Bytes::from(vec![b'v'; 100]),
    };
    let mut buf = Vec::with_capacity(256);
    encode(&rec, &mut buf);
    let encoded = Bytes::from(buf.clone());
    let mut g = c.benchmark_group("format");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_100B", |b| {
        b.iter(|| {
            buf.clear();
            encode(std::hint::black_box(&rec), &mut buf);
        })
    });
    g.bench_function("decode_100B", |b| {
        b.iter(|| decode(std::hint::black_box(&encoded), 1 << 20).expect("decodes"))
    });
    g.finish();
}

fn append(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = rt.block_on(open(&dir));
    let mut g = c.benchmark_group("append");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for size in [100, 1024] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("single/{size}B"), |b| {
            b.iter(|| {
                rt.block_on(log.append(TOPIC, vec![record(size)]))
                    .expect("append")
            })
        });
        g.throughput(Throughput::Elements(64));
        g.bench_function(format!("concurrent64/{size}B"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let calls = (0..64).map(|_| log.append(TOPIC, vec![record(size)]));
                    for r in futures::future::join_all(calls).await {
                        r.expect("append");
                    }
                })
            })
        });
    }
    g.throughput(Throughput::Elements(1000));
    g.bench_function("batch1000/100B", |b| {
        b.iter_batched(
            || vec![record(100); 1000],
            |batch| rt.block_on(log.append(TOPIC, batch)).expect("append"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = rt.block_on(open(&dir));
    let total = 200_000u64;
    rt.block_on(async {
        for _ in 0..total / 1000 {
            log.append(TOPIC, vec![record(100); 1000])
                .await
                .expect("append");
        }
    });
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1000));
    let mut from = 0u64;
    g.bench_function("1000x100B", |b| {
        b.iter(|| {
            let recs = rt.block_on(log.read(TOPIC, 0, from, 1000)).expect("read");
            from = (from + 1000) % total;
            recs
        })
    });
    g.finish();
}

criterion_group!(benches, format, append, read);
criterion_main!(benches);

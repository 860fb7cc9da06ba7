//! Prints the embedded log figures: `cargo run --release -p cmdr-bench --example log`.
//! `CMDR_BENCH_SECS` sets the measured seconds per case, `CMDR_BENCH_DIR` the
//! folder, `CMDR_BENCH_PARTITIONS` the partitions; `CMDR_BENCH_WRITERS`,
//! `CMDR_BENCH_SIZES`, `CMDR_BENCH_BATCH_WRITERS` (comma-separated) and
//! `CMDR_BENCH_READ_RECORDS` select the cases.

#[tokio::main]
async fn main() -> cmdr_log::Result<()> {
    let mut opts = cmdr_bench::log::Options::default();
    if let Some(secs) = std::env::var("CMDR_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        opts.duration = std::time::Duration::from_secs_f64(secs);
    }
    if let Ok(p) = std::env::var("CMDR_BENCH_PARTITIONS") {
        opts.partitions = p.parse().unwrap_or(1);
    }
    let list = |name: &str| -> Option<Vec<usize>> {
        let v = std::env::var(name).ok()?;
        Some(v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
    };
    if let Some(w) = list("CMDR_BENCH_WRITERS") {
        opts.writers = w;
    }
    if let Some(s) = list("CMDR_BENCH_SIZES") {
        opts.value_sizes = s;
    }
    if let Some(b) = list("CMDR_BENCH_BATCH_WRITERS") {
        opts.batch_writers = b;
    }
    if let Some(n) = list("CMDR_BENCH_READ_RECORDS").and_then(|v| v.first().copied()) {
        opts.read_records = n;
    }
    opts.dir = std::env::var_os("CMDR_BENCH_DIR").map(Into::into);
    let report = cmdr_bench::log::run(&opts).await?;
    println!("{report}");
    Ok(())
}

//! The embedded log benchmark (`cmdr bench log`): append throughput and
//! latency with `fdatasync` on, batched appends, sequential reads, and the
//! machine's own ceiling (raw writes with a sync after each) measured in the
//! same run, so the figures read as ratios.
//!
//! ```no_run
//! # async fn demo() -> cmdr_log::Result<()> {
//! let report = cmdr_bench::log::run(&cmdr_bench::log::Options::default()).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! Every append is acknowledged only after its bytes are on disk
//! ([`SyncMode::Always`]), so with `w` writers that each wait for their
//! acknowledgement at most `w` records are in flight: throughput is bounded
//! by `w / latency`, and latency by the disk's sync time. The raw sync rate
//! printed beside the figures is that bound's denominator.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cmdr_log::embedded::{EmbeddedLog, LogConfig, SyncMode};
use cmdr_log::{Log, LogError, Record, Result};
use hdrhistogram::Histogram;

/// What to measure, and for how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// Folder for the temporary data (its file system is what is measured).
    /// Default: the system temporary folder.
    pub dir: Option<PathBuf>,
    /// Measured time of each append case. Default 3 s.
    pub duration: Duration,
    /// Unmeasured time before each append case. Default 0.5 s.
    pub warmup: Duration,
    /// Value sizes of the single-record append cases. Default 100 B and 1 KiB.
    pub value_sizes: Vec<usize>,
    /// Concurrent writers of the single-record append cases. Default 1, 8, 64.
    pub writers: Vec<usize>,
    /// Records per call in the batched case. Default 1,000.
    pub batch_records: usize,
    /// Concurrent callers in the batched cases. Default 1 and 4.
    pub batch_writers: Vec<usize>,
    /// Records written, then read back, in the sequential read case. Default 2,000,000.
    pub read_records: usize,
    /// Partitions of the topic appended to. Default 1.
    pub partitions: u32,
    /// Length of the raw sync probe run right before each append case (the
    /// disk's sync rate drifts with its other users). Default 0.5 s.
    pub probe: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dir: None,
            duration: Duration::from_secs(3),
            warmup: Duration::from_millis(500),
            value_sizes: vec![100, 1024],
            writers: vec![1, 8, 64],
            batch_records: 1000,
            batch_writers: vec![1, 4],
            read_records: 2_000_000,
            partitions: 1,
            probe: Duration::from_millis(500),
        }
    }
}

/// One measured append case.
#[derive(Debug, Clone)]
pub struct AppendFigures {
    /// Value size in bytes.
    pub value_size: usize,
    /// Concurrent callers.
    pub writers: usize,
    /// Records per call.
    pub batch: usize,
    /// Records acknowledged per second.
    pub records_per_sec: f64,
    /// Value bytes acknowledged per second, in MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// Median call latency, µs.
    pub p50_us: u64,
    /// 99th percentile call latency, µs.
    pub p99_us: u64,
    /// 99.9th percentile call latency, µs.
    pub p999_us: u64,
    /// Largest call latency, µs.
    pub max_us: u64,
    /// Raw 100 B writes with a sync each, per second, measured right before this case.
    pub raw_sync_per_sec: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Raw writes of 100 B, each followed by `fdatasync`, per second.
    pub raw_sync_100b: f64,
    /// Raw writes of 4 KiB, each followed by `fdatasync`, per second.
    pub raw_sync_4k: f64,
    /// Raw writes of 100 B with a sync each, per second, at the end of the run.
    pub raw_sync_100b_end: f64,
    /// Single-record append cases.
    pub appends: Vec<AppendFigures>,
    /// Batched append cases.
    pub batched: Vec<AppendFigures>,
    /// Records read in the sequential read case.
    pub read_records: usize,
    /// Sequential read throughput, records per second.
    pub read_records_per_sec: f64,
    /// Sequential read throughput, value MB per second.
    pub read_mb_per_sec: f64,
    /// Partitions of the topic.
    pub partitions: u32,
}

/// Runs every case of `opts` on fresh logs in temporary folders.
///
/// # Errors
/// Any log or file system failure ([`LogError`]).
pub async fn run(opts: &Options) -> Result<Report> {
    let base = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = |what: &str| {
        tempfile::Builder::new()
            .prefix(&format!("cmdr-bench-{what}-"))
            .tempdir_in(&base)
            .map_err(|e| LogError::io(format!("creating a folder in {}", base.display()), e))
    };
    let raw_dir = tmp("raw")?;
    let raw_sync_100b = raw(raw_dir.path(), 100, opts.duration).await?;
    let raw_sync_4k = raw(raw_dir.path(), 4096, opts.duration).await?;

    let mut appends = Vec::new();
    for &size in &opts.value_sizes {
        for &writers in &opts.writers {
            let dir = tmp("append")?;
            let log = open(dir.path(), opts.partitions).await?;
            let probe = raw(raw_dir.path(), 100, opts.probe).await?;
            let mut figures = measure_appends(&log, size, writers, 1, opts).await?;
            figures.raw_sync_per_sec = probe;
            appends.push(figures);
        }
    }
    let mut batched = Vec::new();
    for &writers in &opts.batch_writers {
        let dir = tmp("batch")?;
        let log = open(dir.path(), opts.partitions).await?;
        let probe = raw(raw_dir.path(), 100, opts.probe).await?;
        let mut figures = measure_appends(&log, 100, writers, opts.batch_records, opts).await?;
        figures.raw_sync_per_sec = probe;
        batched.push(figures);
    }

    let dir = tmp("read")?;
    let log = open(dir.path(), 1).await?;
    fill(&log, opts.read_records, 100).await?;
    let (read_records_per_sec, read_mb_per_sec) = measure_reads(&log, opts.read_records).await?;
    let raw_sync_100b_end = raw(raw_dir.path(), 100, opts.duration).await?;

    Ok(Report {
        raw_sync_100b,
        raw_sync_4k,
        raw_sync_100b_end,
        appends,
        batched,
        read_records: opts.read_records,
        read_records_per_sec,
        read_mb_per_sec,
        partitions: opts.partitions,
    })
}

const TOPIC: &str = "bench";

async fn open(dir: &Path, partitions: u32) -> Result<EmbeddedLog> {
    let log = EmbeddedLog::open(LogConfig::new(dir).sync(SyncMode::Always)).await?;
    log.create_topic(TOPIC, partitions).await?;
    Ok(log)
}

/// [`raw_sync_rate`] off the async threads.
async fn raw(dir: &Path, size: usize, duration: Duration) -> Result<f64> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || raw_sync_rate(&dir, size, duration))
        .await
        .map_err(|e| LogError::Closed(format!("raw sync task: {e}")))?
}

/// Writes of `size` bytes appended to a fresh file, each followed by `fdatasync`, per second.
fn raw_sync_rate(dir: &Path, size: usize, duration: Duration) -> Result<f64> {
    let path = dir.join(format!("raw-{size}"));
    let ctx = |e| LogError::io(format!("raw sync test on {}", path.display()), e);
    let mut f = std::fs::File::create(&path).map_err(ctx)?;
    let buf = vec![0x5au8; size];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        f.write_all(&buf).map_err(ctx)?;
        f.sync_data().map_err(ctx)?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).map_err(ctx)?;
    Ok(rate)
}

/// `writers` tasks each append `batch` records of `size` bytes per call and
/// wait for the acknowledgement, for the warm-up and then the measured time.
async fn measure_appends(
    log: &EmbeddedLog,
    size: usize,
    writers: usize,
    batch: usize,
    opts: &Options,
) -> Result<AppendFigures> {
    let value = Bytes::from(vec![b'v'; size]);
    let measure_from = Instant::now() + opts.warmup;
    let until = measure_from + opts.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let log = log.clone();
        let value = value.clone();
        let key = Bytes::from(format!("writer-{w}"));
        tasks.spawn(async move {
            let mut hist = histogram();
            let mut records = 0u64;
            loop {
                let records_in: Vec<Record> = (0..batch)
                    .map(|_| Record {
                        key: Some(key.clone()),
                        value: value.clone(),
                        headers: Vec::new(),
                        timestamp: None,
                    })
                    .collect();
                let t = Instant::now();
                if t >= until {
                    break;
                }
                log.append(TOPIC, records_in).await?;
                let done = Instant::now();
                if t >= measure_from && done <= until {
                    hist.saturating_record(done.duration_since(t).as_micros() as u64);
                    records += batch as u64;
                }
            }
            Ok::<_, LogError>((hist, records))
        });
    }
    let mut hist = histogram();
    let mut records = 0;
    while let Some(res) = tasks.join_next().await {
        let (h, n) = res.map_err(|e| LogError::Closed(format!("bench writer: {e}")))??;
        hist.add(h)
            .map_err(|e| LogError::Closed(format!("histogram: {e}")))?;
        records += n;
    }
    let secs = opts.duration.as_secs_f64();
    Ok(AppendFigures {
        value_size: size,
        writers,
        batch,
        records_per_sec: records as f64 / secs,
        mb_per_sec: (records as f64 * size as f64) / secs / 1e6,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        raw_sync_per_sec: 0.0,
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Appends `n` records of `size` bytes to partition 0 in calls of 1,000.
async fn fill(log: &EmbeddedLog, n: usize, size: usize) -> Result<()> {
    let value = Bytes::from(vec![b'r'; size]);
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let recs = (0..k)
            .map(|_| Record {
                key: Some(Bytes::from_static(b"reader")),
                value: value.clone(),
                headers: Vec::new(),
                timestamp: None,
            })
            .collect();
        log.append(TOPIC, recs).await?;
        left -= k;
    }
    Ok(())
}

/// Reads partition 0 from offset 0 to its end in reads of 1,000 records.
async fn measure_reads(log: &EmbeddedLog, n: usize) -> Result<(f64, f64)> {
    let start = Instant::now();
    let mut next = 0u64;
    let mut bytes = 0usize;
    while (next as usize) < n {
        let recs = log.read(TOPIC, 0, next, 1000).await?;
        let Some(last) = recs.last() else {
            return Err(LogError::Closed(format!("read stopped at {next} of {n}")));
        };
        next = last.offset + 1;
        bytes += recs.iter().map(|r| r.value.len()).sum::<usize>();
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((n as f64 / secs, bytes as f64 / secs / 1e6))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "machine: raw append + fdatasync per write: {:.0}/s (100 B), {:.0}/s (4 KiB); {:.0}/s (100 B) at the end",
            self.raw_sync_100b, self.raw_sync_4k, self.raw_sync_100b_end
        )?;
        writeln!(
            f,
            "embedded log, fdatasync before every acknowledgement, {} partition(s):",
            self.partitions
        )?;
        writeln!(
            f,
            "{:>7} {:>8} {:>6} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
            "value",
            "writers",
            "batch",
            "records/s",
            "MB/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "raw sync/s",
            "x raw"
        )?;
        for a in self.appends.iter().chain(&self.batched) {
            writeln!(
                f,
                "{:>7} {:>8} {:>6} {:>12.0} {:>8.1} {:>9} {:>9} {:>9} {:>9} {:>10.0} {:>10.1}",
                a.value_size,
                a.writers,
                a.batch,
                a.records_per_sec,
                a.mb_per_sec,
                a.p50_us,
                a.p99_us,
                a.p999_us,
                a.max_us,
                a.raw_sync_per_sec,
                a.records_per_sec / a.raw_sync_per_sec.max(1.0)
            )?;
        }
        writeln!(
            f,
            "sequential read of {} records of 100 B (read(.., 1000), page cache warm): {:.0} records/s, {:.1} MB/s",
            self.read_records, self.read_records_per_sec, self.read_mb_per_sec
        )
    }
}

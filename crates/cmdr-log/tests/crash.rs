//! Crash tests: a child process appends under concurrent load and is killed
//! with SIGKILL at a random moment; the log is then reopened and checked.
//!
//! The child is this test executable itself, re-run with [`CHILD_ENV`] set
//! and a filter that selects only [`crash_child`]. It prints one `ACK` line
//! per record, and only after the append that wrote it returned `Ok` (that
//! is, after its `fdatasync`). After the kill the parent reopens the log and
//! checks that:
//!
//! - every acknowledged record is present, at its offset, with its exact value;
//! - every partition reads in full from offset 0 (nothing corrupt is served)
//!   and its offsets are contiguous;
//! - every batch is wholly present or wholly absent (values carry the batch
//!   id and size), including batches that span partitions;
//! - offsets committed with `append_with_commit` are exactly as far as the
//!   batches they were committed with (never ahead, never behind);
//! - the log accepts appends after recovery, and a second reopen cuts nothing.
//!
//! A SIGKILL loses nothing the kernel has accepted, so it rarely tears a
//! write. To also cover what a power loss does to bytes not yet synced, half
//! of the trials then damage the round that was in flight at the kill (when
//! none of it was acknowledged): in each partition it reached, its bytes are
//! cut, or zeroed, from a random point on.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use cmdr_log::embedded::format::decode;
use cmdr_log::embedded::{EmbeddedLog, LogConfig, SyncMode, Truncation};
use cmdr_log::{Log, OffsetCommit, Record};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Set (to the data directory) in the child process only.
const CHILD_ENV: &str = "CMDR_LOG_CRASH_CHILD_DIR";
/// Set in a child that acknowledges before syncing ([`SyncMode::Interval`]):
/// a process crash must lose nothing it acknowledged there either.
const INTERVAL_ENV: &str = "CMDR_LOG_CRASH_CHILD_INTERVAL";
const TOPIC: &str = "crash";
const PARTITIONS: u32 = 4;
/// Concurrent appending tasks in the child.
const TASKS: u64 = 24;
/// Kill-and-recover trials.
const TRIALS: usize = 60;

/// Small segments and a dense index, so rolls happen during every trial.
fn config(dir: &Path) -> LogConfig {
    LogConfig::new(dir)
        .segment_bytes(16 * 1024)
        .index_interval_bytes(512)
}

/// What a record's value says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    /// Unique batch id: task in the high 32 bits, sequence in the low ones.
    batch: u64,
    /// Records in the batch.
    len: u32,
    /// This record's index in the batch.
    idx: u32,
    /// Commit number carried by the batch (0: none); the task's group commits
    /// `next_offset = commit` with it.
    commit: u64,
}

impl Meta {
    fn task(&self) -> u64 {
        self.batch >> 32
    }

    fn padding(&self) -> Vec<u8> {
        let n = (self.batch.wrapping_mul(31) + u64::from(self.idx) * 7) % 251;
        vec![b'a' + ((self.batch + u64::from(self.idx)) % 26) as u8; n as usize]
    }

    fn value(&self) -> Vec<u8> {
        let mut v =
            format!("{}:{}:{}:{}|", self.batch, self.len, self.idx, self.commit).into_bytes();
        v.extend_from_slice(&self.padding());
        v
    }

    /// Parses a value and checks its padding, so a damaged value never passes.
    fn parse(value: &[u8]) -> Option<Self> {
        let bar = value.iter().position(|&b| b == b'|')?;
        let head = std::str::from_utf8(&value[..bar]).ok()?;
        let mut it = head.split(':').map(str::parse::<u64>);
        let m = Meta {
            batch: it.next()?.ok()?,
            len: it.next()?.ok()?.try_into().ok()?,
            idx: it.next()?.ok()?.try_into().ok()?,
            commit: it.next()?.ok()?,
        };
        (it.next().is_none() && value[bar + 1..] == m.padding()[..]).then_some(m)
    }
}

/// The child process: appends from [`TASKS`] tasks until it is killed.
/// A no-op in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut cfg = config(Path::new(&dir));
        if std::env::var_os(INTERVAL_ENV).is_some() {
            cfg = cfg.sync(SyncMode::Interval(Duration::from_millis(5)));
        }
        let log = EmbeddedLog::open(cfg).await.unwrap();
        log.create_topic(TOPIC, PARTITIONS).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            tasks.spawn(append_forever(log.clone(), task));
        }
        while let Some(res) = tasks.join_next().await {
            res.unwrap();
        }
    });
}

/// One writer in the child: single appends, batches over several keys (so
/// rounds span partitions) and batches with an atomic offset commit.
async fn append_forever(log: EmbeddedLog, task: u64) {
    let mut rng = StdRng::seed_from_u64(rand::rng().random());
    let mut commits = 0;
    for seq in 0u64.. {
        let batch = task << 32 | seq;
        let kind = rng.random_range(0..10);
        let len = if kind < 5 {
            1
        } else {
            rng.random_range(2..=12)
        };
        let commit = if kind == 9 {
            commits += 1;
            commits
        } else {
            0
        };
        let records: Vec<Record> = (0..len)
            .map(|idx| {
                let meta = Meta {
                    batch,
                    len,
                    idx,
                    commit,
                };
                let key = rng.random_range(0..20u32);
                let mut r = Record::new(format!("key-{key}"), meta.value());
                if key >= 16 {
                    r.key = None; // round-robin partitioning
                }
                if idx % 3 == 0 {
                    r = r.with_header("trace", format!("{batch}/{idx}"));
                }
                r
            })
            .collect();
        let res = if commit > 0 {
            let c = OffsetCommit {
                group: format!("g{task}"),
                topic: TOPIC.into(),
                partition: 0,
                next_offset: commit,
                expected: None,
            };
            log.append_with_commit(TOPIC, records, c).await
        } else {
            log.append(TOPIC, records).await
        };
        let at = res.expect("append failed in the crash child");
        // Acknowledged: only now may the parent learn about these records.
        let mut lines = String::new();
        for (idx, a) in at.iter().enumerate() {
            writeln!(lines, "ACK {} {} {} {}", a.partition, a.offset, batch, idx).unwrap();
        }
        let mut out = std::io::stdout().lock();
        out.write_all(lines.as_bytes()).unwrap();
        out.flush().unwrap();
    }
}

/// An acknowledged record as the child reported it.
#[derive(Debug, Clone, Copy)]
struct Ack {
    partition: u32,
    offset: u64,
    batch: u64,
    idx: u32,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let rest = line.strip_suffix('\n')?.strip_prefix("ACK ")?;
    let mut it = rest.split(' ');
    Some(Ack {
        partition: it.next()?.parse().ok()?,
        offset: it.next()?.parse().ok()?,
        batch: it.next()?.parse().ok()?,
        idx: it.next()?.parse().ok()?,
    })
}

/// Runs the child until it has acknowledged `kill_after` records (plus a
/// random moment more), SIGKILLs it and returns every acknowledgement it printed.
fn run_child(dir: &Path, kill_after: usize, extra_micros: u64, interval: bool) -> Vec<Ack> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(&exe);
    if interval {
        cmd.env(INTERVAL_ENV, "1");
    }
    let mut child = cmd
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut acks = Vec::new();
    let mut line = String::new();
    let mut killed = false;
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(a) = parse_ack(&line) {
            acks.push(a);
        }
        if !killed && acks.len() >= kill_after {
            // Not synchronisation: it only moves the kill to a random point
            // inside whatever the child is doing at this moment.
            std::thread::sleep(Duration::from_micros(extra_micros));
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    if !killed {
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).ok();
        panic!(
            "crash child exited on its own ({status}) after {} acks: {} {}\n{err}",
            acks.len(),
            exe.display(),
            "crash_child --exact --nocapture"
        );
    }
    acks
}

/// Reopens the log after a kill and checks everything listed in the module docs.
async fn verify(dir: &Path, acks: &[Ack], trial: usize) -> (Vec<Truncation>, u64) {
    let log = EmbeddedLog::open(config(dir)).await.unwrap();
    let truncations = log.truncations().to_vec();
    let info = log.topic(TOPIC).await.unwrap();
    let mut present: HashMap<(u32, u64), Meta> = HashMap::new();
    let mut batches: HashMap<u64, (u32, BTreeSet<u32>, u64)> = HashMap::new();
    let mut total = 0;
    for p in &info.partitions {
        assert_eq!(
            p.start_offset, 0,
            "trial {trial}: partition {}",
            p.partition
        );
        let mut next = 0;
        while next < p.end_offset {
            let recs = log
                .read(TOPIC, p.partition, next, 1000)
                .await
                .unwrap_or_else(|e| panic!("trial {trial}: reading {}@{next}: {e}", p.partition));
            assert!(!recs.is_empty(), "trial {trial}: empty read below the end");
            for r in recs {
                assert_eq!(r.offset, next, "trial {trial}: offsets are contiguous");
                let m = Meta::parse(&r.value).unwrap_or_else(|| {
                    panic!("trial {trial}: damaged value at {}@{next}", p.partition)
                });
                present.insert((p.partition, next), m);
                let entry = batches
                    .entry(m.batch)
                    .or_insert((m.len, BTreeSet::new(), m.commit));
                assert!(
                    entry.1.insert(m.idx),
                    "trial {trial}: duplicate record {m:?}"
                );
                next += 1;
            }
        }
        total += next;
        let past = log.read(TOPIC, p.partition, next, 10).await.unwrap();
        assert!(
            past.is_empty(),
            "trial {trial}: records past the end offset"
        );
    }

    for (batch, (len, idxs, _)) in &batches {
        assert_eq!(
            idxs.len(),
            *len as usize,
            "trial {trial}: batch {batch:#x} is partly present: {idxs:?} of {len}"
        );
    }
    for a in acks {
        let m = present
            .get(&(a.partition, a.offset))
            .unwrap_or_else(|| panic!("trial {trial}: acknowledged record {a:?} is missing"));
        assert_eq!(
            (m.batch, m.idx),
            (a.batch, a.idx),
            "trial {trial}: acknowledged record {a:?} has another value"
        );
    }
    for task in 0..TASKS {
        let committed = log
            .committed(&format!("g{task}"), TOPIC, 0)
            .await
            .unwrap()
            .unwrap_or(0);
        let with_commit: BTreeSet<u64> = batches
            .iter()
            .filter(|(b, v)| *b >> 32 == task && v.2 > 0)
            .map(|(_, v)| v.2)
            .collect();
        assert_eq!(
            with_commit,
            (1..=committed).collect::<BTreeSet<u64>>(),
            "trial {trial}: group g{task} committed {committed}, batches present with commits {with_commit:?}"
        );
    }
    assert!(present.values().all(|m| m.task() < TASKS));

    // Recovery leaves a log that accepts appends where it left off …
    let at = log
        .append(TOPIC, vec![Record::new("after", "after the crash")])
        .await
        .unwrap();
    let before = info.partitions[at[0].partition as usize].end_offset;
    assert_eq!(at[0].offset, before, "trial {trial}: append after recovery");
    drop(log);
    // … and a second recovery has nothing left to cut.
    let log = EmbeddedLog::open(config(dir)).await.unwrap();
    assert!(
        log.truncations().is_empty(),
        "trial {trial}: second reopen cut {:?}",
        log.truncations()
    );
    let again = log.topic(TOPIC).await.unwrap();
    assert_eq!(
        again.partitions.iter().map(|p| p.end_offset).sum::<u64>(),
        total + 1
    );
    (truncations, total)
}

/// A partition's last segment: its path, its bytes and its records as
/// (position, offset, round).
type LastSegment = (std::path::PathBuf, Vec<u8>, Vec<(usize, u64, u64)>);

/// The last segment of every partition.
fn last_segments(dir: &Path) -> Vec<LastSegment> {
    (0..PARTITIONS)
        .map(|p| {
            let pdir = dir.join("topics").join(TOPIC).join(p.to_string());
            let mut logs: Vec<_> = std::fs::read_dir(&pdir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            let path = logs.pop().unwrap();
            let raw = std::fs::read(&path).unwrap();
            let buf = Bytes::from(raw.clone());
            let mut recs = Vec::new();
            let mut pos = 0;
            while let Ok((rec, len)) = decode(&buf.slice(pos..), usize::MAX) {
                recs.push((pos, rec.offset, rec.round));
                pos += len;
            }
            (path, raw, recs)
        })
        .collect()
}

/// Simulates a power loss of the round in flight at the kill: in every
/// partition it reached, cuts or zeroes its bytes from a random point.
/// Does nothing when any record of that round was acknowledged.
fn tear_in_flight_round(dir: &Path, acks: &[Ack], rng: &mut StdRng) -> Option<String> {
    let segs = last_segments(dir);
    let last = segs
        .iter()
        .filter_map(|(_, _, recs)| recs.last().map(|r| r.2))
        .max()?;
    let acked: BTreeSet<(u32, u64)> = acks.iter().map(|a| (a.partition, a.offset)).collect();
    let mut plan = Vec::new();
    for (p, (path, raw, recs)) in segs.iter().enumerate() {
        let in_round: Vec<_> = recs.iter().filter(|r| r.2 == last).collect();
        if in_round.iter().any(|r| acked.contains(&(p as u32, r.1))) {
            return None;
        }
        if let Some(first) = in_round.first() {
            plan.push((p, path, raw.len(), first.0));
        }
    }
    let mut what = format!("tore unsynced round {last}:");
    for (p, path, len, start) in plan {
        let at = rng.random_range(start..=len);
        if rng.random_bool(0.5) {
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(at as u64).unwrap();
            write!(what, " partition {p} cut at {at} of {len};").unwrap();
        } else {
            let mut raw = std::fs::read(path).unwrap();
            raw[at..].fill(0);
            std::fs::write(path, raw).unwrap();
            write!(what, " partition {p} zeroed from {at} of {len};").unwrap();
        }
    }
    Some(what)
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let seed: u64 = rand::rng().random();
    eprintln!("crash test seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cut_trials = 0;
    let mut torn = 0;
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().unwrap();
        let kill_after = rng.random_range(1..2500);
        // Every fourth trial acknowledges before syncing (interval mode); the
        // torn-round simulation is only valid when every ack follows a sync.
        let interval = trial % 4 == 2;
        let acks = run_child(dir.path(), kill_after, rng.random_range(0..3000), interval);
        if trial % 2 == 1 {
            if let Some(what) = tear_in_flight_round(dir.path(), &acks, &mut rng) {
                eprintln!("trial {trial}: {what}");
                torn += 1;
            }
        }
        let (truncations, records) = rt.block_on(verify(dir.path(), &acks, trial));
        eprintln!(
            "trial {trial}{}: {} acknowledged, {records} recovered, {} truncation(s){}",
            if interval { " (interval sync)" } else { "" },
            acks.len(),
            truncations.len(),
            truncations
                .iter()
                .map(|t| format!(
                    "\n    partition {} at byte {} (offset {}): {} bytes, {}",
                    t.partition, t.position, t.from_offset, t.bytes, t.reason
                ))
                .collect::<String>()
        );
        if !truncations.is_empty() {
            cut_trials += 1;
        }
        for t in truncations {
            let kind = t.reason.split(" (").next().unwrap_or_default();
            let kind = kind
                .split(|c: char| c.is_ascii_digit())
                .next()
                .unwrap_or_default();
            *reasons.entry(kind.trim().to_string()).or_default() += 1;
        }
    }
    eprintln!(
        "{TRIALS} trials ({torn} with an unsynced round torn), {cut_trials} with truncations; reasons: {reasons:?}"
    );
}

/// A crash right after a partition rolled to a new segment (the roll happens
/// at the start of a round, before that round writes anything) leaves the
/// partition's last complete round in a sealed segment. That round reached
/// every partition and was acknowledged: recovery must keep it everywhere.
#[tokio::test]
async fn crash_right_after_a_roll_keeps_the_last_complete_round() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = [0, 1]
        .iter()
        .map(|&p| {
            (0..)
                .map(|i| format!("key-{i}"))
                .find(|k| cmdr_log::partition_for_key(k.as_bytes(), 2) == p)
                .unwrap()
        })
        .collect();
    let log = EmbeddedLog::open(config(dir.path())).await.unwrap();
    log.create_topic(TOPIC, 2).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..50u32 {
        let batch = vec![
            Record::new(keys[0].clone(), format!("a{i}")),
            Record::new(keys[1].clone(), format!("b{i}")),
        ];
        acked.extend(log.append(TOPIC, batch).await.unwrap());
    }
    let ends: Vec<u64> = log
        .topic(TOPIC)
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.end_offset)
        .collect();
    drop(log);
    // What a kill between the roll and the write leaves: an empty new segment.
    let p0 = dir.path().join("topics").join(TOPIC).join("0");
    let stem = format!("{:020}", ends[0]);
    for ext in ["log", "index", "timeindex"] {
        std::fs::write(p0.join(format!("{stem}.{ext}")), b"").unwrap();
    }

    let log = EmbeddedLog::open(config(dir.path())).await.unwrap();
    assert!(
        log.truncations().is_empty(),
        "nothing incomplete to cut: {:?}",
        log.truncations()
    );
    for (p, end) in ends.iter().enumerate() {
        let info = log.topic(TOPIC).await.unwrap();
        assert_eq!(info.partitions[p].end_offset, *end, "partition {p}");
    }
    for a in &acked {
        let r = log.read(TOPIC, a.partition, a.offset, 1).await.unwrap();
        assert_eq!(r.len(), 1, "acknowledged record {a:?} is missing");
    }
}

//! The HTTP benchmark suites `cmdr bench http` runs against a live server,
//! each printing a Markdown table: async intake at several connection
//! counts with the bare-handler ceiling beside it, reads by id, and the
//! server's resident memory and CPU per command.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::http::{self, Load, LoadReport, TABLE_HEADER};

/// Settings of an HTTP suite run.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// The cmdr server under test.
    pub addr: SocketAddr,
    /// Its process id, to read its resident memory (Linux `/proc`).
    pub pid: Option<u32>,
    /// Duration of each load step.
    pub step: Duration,
    /// Connection counts for the intake runs.
    pub connections: Vec<usize>,
    /// The bare ceiling server, when it runs in its own process like the
    /// server under test; `None` serves it inside the load generator.
    pub bare: Option<SocketAddr>,
    /// The bare server's process id, when it runs in its own process: its
    /// CPU per request is reported beside the server's.
    pub bare_pid: Option<u32>,
    /// Runs of each intake step (ceiling and server interleaved); the run
    /// with the median rate is reported. At least 1.
    pub repeat: usize,
    /// The keys the intake suite's commands carry.
    pub keys: Keys,
    /// Intake and reads over HTTP/2 with prior knowledge, this many
    /// streams (the "connections" of the table) to a connection; `None`:
    /// HTTP/1.1. See [`Load::http2`].
    pub http2: Option<usize>,
}

/// The keys the intake suite's commands carry: what the index does per
/// command depends on them (a command without a key has no key-index
/// entry; with keys, each commit touches a leaf of that index per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keys {
    /// One key per connection, `conn-{connection}`.
    #[default]
    PerConnection,
    /// No key: each command's key is its own id.
    None,
    /// `n` keys, `key-0` .. `key-{n-1}`, taken in turn by each connection.
    Cycle(usize),
}

impl std::str::FromStr for Keys {
    type Err = String;

    /// `per-connection`, `none`, or a number of keys (0 is `none`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "per-connection" => Ok(Self::PerConnection),
            "none" | "0" => Ok(Self::None),
            n => n.parse().map(Self::Cycle).map_err(|_| {
                format!("expected per-connection, none or a number of keys, got {n:?}")
            }),
        }
    }
}

/// The body of command `n` of connection `conn`.
fn command_body(keys: Keys, conn: usize, n: u64) -> Bytes {
    let key = match keys {
        Keys::PerConnection => format!(r#","key":"conn-{conn}""#),
        Keys::None => String::new(),
        Keys::Cycle(k) => format!(r#","key":"key-{}""#, (conn as u64 + n) % k.max(1) as u64),
    };
    Bytes::from(format!(
        r#"{{"action":"bench-command","data":{{"n":{n},"payload":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}{key}}}"#
    ))
}

pub(crate) fn post(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    step: Duration,
    expect: StatusCode,
    keys: Keys,
) -> Load {
    let path = path.to_string();
    Load {
        addr,
        method: Method::POST,
        path: Arc::new(move |_, _| path.clone()),
        body: Arc::new(move |conn, n| command_body(keys, conn, n)),
        headers: Vec::new(),
        connections,
        duration: step,
        expect,
        http2: None,
    }
}

/// Resident set size and its peak of process `pid`, in MiB.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user and system, all threads) process `pid` (or `"self"`) has
/// used so far, from `/proc/<pid>/stat`; `None` where that is unavailable.
/// The file counts in USER_HZ ticks, which Linux fixes at 100 per second
/// for user space.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    stat_cpu_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The CPU time in a `/proc/<pid>/stat` line.
fn stat_cpu_time(stat: &str) -> Option<Duration> {
    const USER_HZ: u64 = 100;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields after its last `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime); `fields` starts at field 3.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// Jiffies the machine's CPUs spent in all and idle (idle plus iowait), from
/// the first line of `/proc/stat`; `None` where that is unavailable.
fn machine_jiffies() -> Option<(u64, u64)> {
    stat_jiffies(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Total and idle jiffies in a `/proc/stat` text (its `cpu` line: user nice
/// system idle iowait irq softirq steal ...).
fn stat_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let idle = fields.get(3)? + fields.get(4)?;
    Some((fields.iter().sum(), idle))
}

/// CPU per answered request of the server (`pid`) and of this load
/// generator during `run`, in µs, and the share of the machine's CPU time
/// that stayed idle.
#[derive(Debug, Clone)]
pub(crate) struct CpuPerRequest {
    /// The server's CPU per request.
    pub(crate) server: Option<f64>,
    generator: Option<f64>,
    idle: Option<f64>,
    /// The share of the machine's CPU time spent neither idle nor by the
    /// server or this process: other processes, and interrupts. Far above a
    /// few percent, something else competed for the CPU during the run and
    /// its figures do not compare with others.
    other: Option<f64>,
    /// The server's CPU per request by thread name, most first (Linux).
    threads: Vec<(String, f64)>,
    /// What the server's log writer did for the commands topic meanwhile,
    /// when its `/metrics` tells.
    rounds: Option<Rounds>,
}

/// The commands topic's write rounds during a run: how many commands one
/// round (one write and one `fdatasync`) carried, and how long syncs took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rounds {
    /// Rounds per second.
    per_sec: f64,
    /// Records per round.
    records_per_round: f64,
    /// Mean time of one `fdatasync`, µs.
    sync_us: f64,
}

impl Rounds {
    /// The table row that reports these figures.
    fn row(&self) -> String {
        format!(
            "|   log writer in this step | | {:.0} rounds/s | {:.1} commands per round | fdatasync {:.0} µs on average | | |",
            self.per_sec, self.records_per_round, self.sync_us
        )
    }
}

/// The commands topic's log counters in a `/metrics` text: rounds, records
/// written, syncs and sync seconds.
fn commands_log_counters(metrics: &str) -> Option<[f64; 4]> {
    let value = |name: &str| {
        let prefix = format!("cmdr_log_{name}{{topic=\"commands\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str())?.trim().parse::<f64>().ok())
    };
    Some([
        value("rounds_total")?,
        value("records_written_total")?,
        value("syncs_total")?,
        value("sync_seconds_total")?,
    ])
}

/// The server's commands-topic log counters now, if its `/metrics` has them.
async fn log_counters(addr: SocketAddr) -> Option<[f64; 4]> {
    commands_log_counters(&http::get_text(addr, "/metrics").await.ok()?)
}

/// The rounds between two readings of [`log_counters`], `seconds` apart.
fn rounds_between(before: [f64; 4], after: [f64; 4], seconds: f64) -> Option<Rounds> {
    let [rounds, records, syncs, sync_secs] = [0, 1, 2, 3].map(|i| after[i] - before[i]);
    (rounds > 0.0 && syncs > 0.0 && seconds > 0.0).then(|| Rounds {
        per_sec: rounds / seconds,
        records_per_round: records / rounds,
        sync_us: sync_secs * 1e6 / syncs,
    })
}

impl CpuPerRequest {
    /// The table row that reports these figures under `label`.
    pub(crate) fn row(&self, label: &str) -> String {
        let us = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1} µs"));
        format!(
            "|   {label} | | server {} | load generator {} | machine idle {}, other work {} | | |",
            us(self.server),
            us(self.generator),
            self.idle
                .map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}%")),
            self.other
                .map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}%"))
        )
    }
}

/// The CPU time of each thread of process `pid`, summed by thread name;
/// `None` where `/proc/<pid>/task` is unavailable. A thread that ends
/// between two readings takes its time with it.
fn thread_cpu(pid: &str) -> Option<BTreeMap<String, Duration>> {
    let mut by_name: BTreeMap<String, Duration> = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let (Some(name), Some(t)) = (stat_comm(&stat), stat_cpu_time(&stat)) {
            *by_name.entry(name.to_string()).or_default() += t;
        }
    }
    Some(by_name)
}

/// The command (thread) name in a `/proc/<pid>/stat` line.
fn stat_comm(stat: &str) -> Option<&str> {
    let (head, _) = stat.rsplit_once(')')?;
    Some(head.split_once('(')?.1)
}

/// Per request of `requests`, the CPU each thread name spent between the
/// two readings, most first, leaving out what rounds to nothing.
fn threads_per_request(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
    requests: u64,
) -> Vec<(String, f64)> {
    if requests == 0 {
        return Vec::new();
    }
    let mut per: Vec<(String, f64)> = after
        .iter()
        .map(|(name, t)| {
            let spent = t.saturating_sub(before.get(name).copied().unwrap_or_default());
            (name.clone(), spent.as_secs_f64() * 1e6 / requests as f64)
        })
        .filter(|(_, us)| *us >= 0.05)
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    per
}

/// The run with the median rate (the upper one of an even count), with the
/// CPU measured during it.
fn median(mut runs: Vec<(LoadReport, CpuPerRequest)>) -> Option<(LoadReport, CpuPerRequest)> {
    runs.sort_by(|a, b| a.0.rate().total_cmp(&b.0.rate()));
    let mid = runs.len() / 2;
    runs.into_iter().nth(mid)
}

/// Runs `load`, measuring the CPU the server `pid` and this process spend.
pub(crate) async fn run_measured(
    load: Load,
    pid: Option<u32>,
) -> Result<(LoadReport, CpuPerRequest), String> {
    let server_pid = pid.map(|p| p.to_string());
    let server_cpu = || server_pid.as_deref().and_then(cpu_time);
    let server_threads = || server_pid.as_deref().and_then(thread_cpu);
    let (server0, self0, machine0) = (server_cpu(), cpu_time("self"), machine_jiffies());
    let threads0 = server_threads();
    let report = http::run(load).await?;
    let machine1 = machine_jiffies();
    let threads = threads0
        .zip(server_threads())
        .map(|(t0, t1)| threads_per_request(&t0, &t1, report.ok))
        .unwrap_or_default();
    let spent = |before: Option<Duration>, after: Option<Duration>| after?.checked_sub(before?);
    let per_request = |spent: Option<Duration>| {
        let spent = spent?;
        (report.ok > 0).then(|| spent.as_secs_f64() * 1e6 / report.ok as f64)
    };
    let server_spent = spent(server0, server_cpu());
    let generator_spent = spent(self0, cpu_time("self"));
    let machine = machine0.zip(machine1).and_then(|((t0, i0), (t1, i1))| {
        let total = t1.checked_sub(t0).filter(|t| *t > 0)?;
        Some((total, i1.saturating_sub(i0)))
    });
    let cpu = CpuPerRequest {
        server: per_request(server_spent),
        generator: per_request(generator_spent),
        idle: machine.map(|(total, idle)| 100.0 * idle as f64 / total as f64),
        other: machine.and_then(|(total, idle)| {
            // Jiffies are USER_HZ (100) a second.
            let ours = (server_spent.unwrap_or_default() + generator_spent?).as_secs_f64() * 100.0;
            let busy = total.saturating_sub(idle) as f64;
            Some((100.0 * (busy - ours) / total as f64).max(0.0))
        }),
        threads,
        rounds: None,
    };
    Ok((report, cpu))
}

/// Runs the intake suite: the bare ceiling, `POST /commands` at each
/// connection count, `GET /commands/{id}`, and memory. Returns the report.
///
/// # Errors
/// When the server cannot be reached.
pub async fn intake(opts: &SuiteOptions) -> Result<String, String> {
    let mut out = String::new();
    let bare = match opts.bare {
        Some(addr) => addr,
        None => http::spawn_bare_server().await.map_err(|e| e.to_string())?,
    };
    let _ = writeln!(out, "{TABLE_HEADER}");
    let mut ids = Vec::new();
    let mut at64: Option<Figures> = None;
    for &c in &opts.connections {
        let (mut ceilings, mut reals) = (Vec::new(), Vec::new());
        for _ in 0..opts.repeat.max(1) {
            let mut load = post(
                bare,
                "/commands",
                c,
                opts.step,
                StatusCode::ACCEPTED,
                opts.keys,
            );
            load.http2 = opts.http2;
            ceilings.push(run_measured(load, opts.bare_pid).await?);
            let mut load = post(
                opts.addr,
                "/commands",
                c,
                opts.step,
                StatusCode::ACCEPTED,
                opts.keys,
            );
            load.http2 = opts.http2;
            let counters = log_counters(opts.addr).await;
            let started = std::time::Instant::now();
            let (real, mut cpu) = run_measured(load, opts.pid).await?;
            let seconds = started.elapsed().as_secs_f64();
            if let (Some(before), Some(after)) = (counters, log_counters(opts.addr).await) {
                cpu.rounds = rounds_between(before, after, seconds);
            }
            collect_ids(&real, &mut ids);
            reals.push((real, cpu));
        }
        // Each server run against the ceiling run just before it: the VM's
        // speed drifts between runs, less within a pair.
        let mut pairs: Vec<f64> = ceilings
            .iter()
            .zip(&reals)
            .map(|(c, r)| 100.0 * r.0.rate() / c.0.rate().max(1.0))
            .collect();
        pairs.sort_by(f64::total_cmp);
        let (Some((ceiling, bare_cpu)), Some((real, cpu))) = (median(ceilings), median(reals))
        else {
            return Err("no load run".into());
        };
        let _ = writeln!(out, "{}", ceiling.row("bare 202 handler (ceiling)"));
        if opts.bare_pid.is_some() {
            let _ = writeln!(out, "{}", bare_cpu.row("CPU per request in this step"));
        }
        let _ = writeln!(out, "{}", real.row("POST /commands (fsync before 202)"));
        let _ = writeln!(out, "{}", cpu.row("CPU per command in this step"));
        if !cpu.threads.is_empty() {
            let by_thread: Vec<String> = cpu
                .threads
                .iter()
                .map(|(name, us)| format!("{name} {us:.1} µs"))
                .collect();
            let _ = writeln!(
                out,
                "|   server CPU per command by thread | | {} | | | | |",
                by_thread.join(", ")
            );
        }
        if let Some(rounds) = cpu.rounds {
            let _ = writeln!(out, "{}", rounds.row());
        }
        let memory = opts.pid.and_then(memory_mib);
        if let Some((rss, peak)) = memory {
            let _ = writeln!(out, "|   server memory after this step | | RSS {rss:.1} MiB | peak {peak:.1} MiB | | | |");
        }
        if c == 64 {
            at64 = Some(Figures {
                rate: real.rate(),
                ceiling: ceiling.rate(),
                pairs,
                p99_ms: real.ms(0.99),
                peak_rss_mib: memory.map(|(_, peak)| peak),
            });
        }
    }
    if !ids.is_empty() {
        let ids = Arc::new(ids);
        let load = Load {
            addr: opts.addr,
            method: Method::GET,
            path: Arc::new(move |conn, n| {
                format!("/commands/{}", ids[(conn * 7919 + n as usize) % ids.len()])
            }),
            body: Arc::new(|_, _| Bytes::new()),
            headers: Vec::new(),
            connections: 64,
            duration: opts.step,
            expect: StatusCode::OK,
            http2: opts.http2,
        };
        let got = http::run(load).await?;
        let _ = writeln!(out, "{}", got.row("GET /commands/{id}"));
    }
    if let Some(f) = at64 {
        let _ = writeln!(
            out,
            "\nAt 64 connections: {:.0} commands/s = {:.0}% of the bare handler's {:.0} req/s.",
            f.rate,
            f.of_median_ceiling(),
            f.ceiling
        );
        if f.pairs.len() > 1 {
            let each: Vec<String> = f.pairs.iter().map(|p| format!("{p:.0}%")).collect();
            let _ = writeln!(
                out,
                "Each run against the ceiling run before it: {} (median {:.0}%).",
                each.join(", "),
                f.median_pair()
            );
        }
        let _ = write!(out, "{}", f.verdict());
    }
    Ok(out)
}

/// The 64-connection intake figures the gateway's load targets are stated in.
#[derive(Debug, Clone)]
struct Figures {
    /// Commands acknowledged per second (the median run).
    rate: f64,
    /// The bare handler's requests per second (the median run).
    ceiling: f64,
    /// Each server run's rate over the ceiling run's just before it, in
    /// percent, sorted.
    pairs: Vec<f64>,
    /// 99th percentile latency, ms.
    p99_ms: f64,
    /// Peak resident memory of the server, when known.
    peak_rss_mib: Option<f64>,
}

impl Figures {
    /// The median rate over the median ceiling, in percent.
    fn of_median_ceiling(&self) -> f64 {
        100.0 * self.rate / self.ceiling.max(1.0)
    }

    /// The median of [`Figures::pairs`] (or, with none, the median ratio).
    fn median_pair(&self) -> f64 {
        self.pairs
            .get(self.pairs.len() / 2)
            .copied()
            .unwrap_or_else(|| self.of_median_ceiling())
    }

    /// The share of the ceiling the verdict judges: the lower of the two
    /// ways to compare, so that noise never turns it into a pass.
    fn ceiling_pct(&self) -> f64 {
        self.of_median_ceiling().min(self.median_pair())
    }

    /// One line per target: its figure and whether it is met.
    fn verdict(&self) -> String {
        let mark = |met: bool| if met { "met" } else { "NOT met" };
        let mut out = String::from("\nTargets at 64 connections:\n");
        let _ = writeln!(
            out,
            "- at least 50,000 commands/s: {} ({:.0})",
            mark(self.rate >= 50_000.0),
            self.rate
        );
        let _ = writeln!(
            out,
            "- p99 at most 10 ms: {} ({:.2} ms)",
            mark(self.p99_ms <= 10.0),
            self.p99_ms
        );
        let _ = writeln!(
            out,
            "- at least half the bare ceiling: {} ({:.1}%, the lower of the two ratios above)",
            mark(self.ceiling_pct() >= 50.0),
            self.ceiling_pct()
        );
        match self.peak_rss_mib {
            // The target says 100 MB: 10^8 bytes, 95.4 MiB.
            Some(peak) => {
                let _ = writeln!(
                    out,
                    "- resident memory at most 100 MB: {} (peak {peak:.1} MiB = {:.1} MB)",
                    mark(peak * 1_048_576.0 <= 100e6),
                    peak * 1.048_576
                );
            }
            None => out.push_str("- resident memory at most 100 MB: unknown (no /proc)\n"),
        }
        out
    }
}

/// Runs the sync suite: `POST /commands?sync=true` answered `201` once a
/// processor accepted the command, at each connection count. `body` makes
/// each command (it must be one the running processors accept).
///
/// # Errors
/// When the server cannot be reached.
pub async fn sync(opts: &SuiteOptions, body: http::BodyFn) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(out, "{TABLE_HEADER}");
    for &c in &opts.connections {
        let mut load = post(
            opts.addr,
            "/commands?sync=true",
            c,
            opts.step,
            StatusCode::CREATED,
            opts.keys,
        );
        load.body = body.clone();
        let r = http::run(load).await?;
        let _ = writeln!(out, "{}", r.row("POST /commands?sync=true (accepted)"));
    }
    Ok(out)
}

fn collect_ids(report: &LoadReport, ids: &mut Vec<String>) {
    for body in &report.samples {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Some(id) = v.get("id").and_then(|i| i.as_str()) {
                ids.push(id.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rounds_are_read_off_the_commands_topic_counters() {
        let metrics = |rounds: u32, records: u32, syncs: u32, secs: f64| {
            format!(
                "cmdr_log_rounds_total{{topic=\"events\"}} 7\n\
                 cmdr_log_rounds_total{{topic=\"commands\"}} {rounds}\n\
                 cmdr_log_records_written_total{{topic=\"commands\"}} {records}\n\
                 cmdr_log_syncs_total{{topic=\"commands\"}} {syncs}\n\
                 cmdr_log_sync_seconds_total{{topic=\"commands\"}} {secs}\n# EOF\n"
            )
        };
        let before = commands_log_counters(&metrics(10, 100, 10, 0.001)).unwrap();
        let after = commands_log_counters(&metrics(110, 2100, 110, 0.013)).unwrap();
        let r = rounds_between(before, after, 2.0).unwrap();
        assert_eq!(r.per_sec, 50.0);
        assert_eq!(r.records_per_round, 20.0);
        assert!((r.sync_us - 120.0).abs() < 1e-6, "{r:?}");
        assert!(commands_log_counters("cmdr_commands_appended_total 3\n").is_none());
        assert!(rounds_between(before, before, 2.0).is_none());
    }

    #[test]
    fn cpu_time_reads_utime_and_stime_after_any_command_name() {
        let line = "4242 (cmdr (x) y) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 9 0 1 2 3";
        assert_eq!(stat_cpu_time(line), Some(Duration::from_millis(3250)));
        assert_eq!(stat_cpu_time("4242 (short) S 1 2"), None);
        assert!(cpu_time("self").is_some(), "this process has a /proc entry");
        assert!(cpu_time("no-such-process").is_none());
    }

    #[test]
    fn thread_cpu_is_summed_by_name_per_request() {
        assert_eq!(
            stat_comm("42 (tokio-rt-worker) S 1"),
            Some("tokio-rt-worker")
        );
        assert_eq!(stat_comm("42 (a (b) c) S 1"), Some("a (b) c"));
        let ms = Duration::from_millis;
        let before = BTreeMap::from([("w".to_string(), ms(100)), ("log".to_string(), ms(10))]);
        let after = BTreeMap::from([
            ("w".to_string(), ms(300)),
            ("log".to_string(), ms(10)),
            ("new".to_string(), ms(50)),
        ]);
        // 1,000 requests: 200 ms is 200 µs each; the idle thread is left out.
        assert_eq!(
            threads_per_request(&before, &after, 1000),
            vec![("w".to_string(), 200.0), ("new".to_string(), 50.0)]
        );
        assert!(threads_per_request(&before, &after, 0).is_empty());
        let mine = thread_cpu("self").expect("this process has a /proc entry");
        assert!(!mine.is_empty());
    }

    #[test]
    fn commands_carry_the_keys_asked_for() {
        let key = |keys: &str, conn, n| {
            let body = command_body(keys.parse().unwrap(), conn, n);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["data"]["n"], n);
            v.get("key").and_then(|k| k.as_str()).map(str::to_string)
        };
        assert_eq!(key("per-connection", 7, 3).as_deref(), Some("conn-7"));
        assert_eq!(key("none", 7, 3), None);
        assert_eq!(key("0", 7, 3), None);
        let cycled: Vec<_> = (0..4).filter_map(|n| key("3", 1, n)).collect();
        assert_eq!(cycled, ["key-1", "key-2", "key-0", "key-1"]);
        assert!("many".parse::<Keys>().is_err());
    }

    #[test]
    fn the_verdict_marks_each_target_met_or_not() {
        let f = Figures {
            rate: 52_000.0,
            ceiling: 100_000.0,
            pairs: vec![45.0, 49.6, 55.0],
            p99_ms: 12.5,
            peak_rss_mib: Some(95.0),
        };
        let v = f.verdict();
        assert!(v.contains("50,000 commands/s: met (52000)"), "{v}");
        assert!(v.contains("p99 at most 10 ms: NOT met (12.50 ms)"), "{v}");
        assert!(v.contains("half the bare ceiling: NOT met (49.6%"), "{v}");
        assert!(v.contains("100 MB: met (peak 95.0 MiB = 99.6 MB)"), "{v}");
        let over = Figures {
            peak_rss_mib: Some(96.0),
            ..f.clone()
        };
        assert!(over.verdict().contains("100 MB: NOT met"));
        let unknown = Figures {
            peak_rss_mib: None,
            ..f.clone()
        };
        assert!(unknown.verdict().contains("100 MB: unknown"));
        // The lower ratio decides: 52% by median rates, 49.6% by pairs.
        let passes = Figures {
            pairs: vec![50.5, 51.0, 60.0],
            ..f
        };
        assert!(passes
            .verdict()
            .contains("half the bare ceiling: met (51.0%"));
    }

    #[test]
    fn machine_jiffies_counts_idle_and_iowait_as_idle() {
        let stat = "cpu  100 5 50 300 40 1 4 0 0 0\ncpu0 50 2 25 150 20 0 2 0 0 0\n";
        assert_eq!(stat_jiffies(stat), Some((500, 340)));
        assert_eq!(stat_jiffies("intr 1 2 3\n"), None);
        assert_eq!(stat_jiffies("cpu  1 2 x\n"), None);
        assert!(machine_jiffies().is_some(), "this machine has /proc/stat");
    }
}

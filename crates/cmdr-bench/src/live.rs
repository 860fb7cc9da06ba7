//! The live-updates benchmark behind `cmdr bench live`: writers load
//! `POST /commands` while N clients follow `GET /commands/updates`
//! (Server-Sent Events), and the report shows what the subscribers cost the
//! writers (throughput, latency, server CPU per command), how many
//! messages the server delivered, how long after the command was received
//! each update arrived, and how long after the load every subscriber had
//! them all.
//!
//! An SSE subscriber is a bare TCP client that counts the `event:` lines
//! it reads, so the load generator spends little on them; a WebSocket
//! subscriber (`--protocol ws`) subscribes on `/ws` and counts `record`
//! messages.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::http::TABLE_HEADER;
use crate::suite::{self, Keys};

/// Settings of a live-updates run.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The cmdr server under test.
    pub addr: SocketAddr,
    /// Its process id, for its CPU time and memory (Linux `/proc`).
    pub pid: Option<u32>,
    /// Duration of each load step.
    pub step: Duration,
    /// Writer connections, each with one `POST /commands` in flight.
    pub writers: usize,
    /// Subscriber counts, one step each.
    pub subscribers: Vec<usize>,
    /// The keys the writers' commands carry.
    pub keys: Keys,
    /// How subscribers follow.
    pub protocol: Protocol,
}

/// How the subscribers of a live-updates run follow the commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `GET /commands/updates`, Server-Sent Events.
    #[default]
    Sse,
    /// A subscription on `GET /ws`.
    WebSocket,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    /// `sse` or `ws`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sse" => Ok(Self::Sse),
            "ws" | "websocket" => Ok(Self::WebSocket),
            other => Err(format!("expected sse or ws, got {other:?}")),
        }
    }
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Self::Sse => "SSE",
            Self::WebSocket => "WebSocket",
        }
    }
}

/// Longest wait, after the load, for every subscriber to have every command.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// What one subscriber has received: the commands, and how long after
/// its `timestamp` (set when the server received it) each arrived.
#[derive(Debug)]
struct Tally {
    seen: AtomicU64,
    latency_ms: Mutex<Histogram<u64>>,
}

impl Tally {
    fn new() -> Result<Self, String> {
        Ok(Self {
            seen: AtomicU64::new(0),
            latency_ms: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000, 3).map_err(|e| e.to_string())?,
            ),
        })
    }

    fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Counts a command that arrived as `json` (its record, or a message
    /// holding it) now.
    fn arrived(&self, json: &[u8]) {
        self.seen.fetch_add(1, Ordering::Relaxed);
        if let Some(ts) = timestamp_of(json) {
            let ago = now_ms().saturating_sub(ts);
            if let Ok(mut h) = self.latency_ms.lock() {
                h.saturating_record(ago.max(1));
            }
        }
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The first `"timestamp":N` in `json` (the benchmark's commands carry no
/// such field in their data, so this is the command's own).
fn timestamp_of(json: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = b"\"timestamp\":";
    let at = memchr::memmem::find(json, FIELD)? + FIELD.len();
    let digits = json[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&json[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Splits a byte stream cut anywhere into lines (without their `\n`).
#[derive(Debug, Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Feeds `chunk`, calling `line` with each line it completes.
    fn feed(&mut self, chunk: &[u8], mut line: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                line(&rest[..i]);
            } else {
                self.partial.extend_from_slice(&rest[..i]);
                line(&self.partial);
                self.partial.clear();
            }
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
    }
}

/// One SSE subscriber: opens the stream, signals `ready` once the server's
/// first bytes arrive, then tallies each message's command (its `data:`
/// line) until the connection ends.
async fn subscriber(
    addr: SocketAddr,
    tally: Arc<Tally>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let request = format!(
        "GET /commands/updates HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = Lines::default();
    let mut first = true;
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        if first {
            if !buf[..n].starts_with(b"HTTP/1.1 200") {
                return Err(format!(
                    "the server refused a subscriber: {}",
                    String::from_utf8_lossy(&buf[..n.min(200)])
                ));
            }
            first = false;
            let _ = ready.send(()).await;
        }
        // The chunk-size lines of the chunked encoding never start so.
        lines.feed(&buf[..n], |line| {
            if let Some(data) = line.strip_prefix(b"data: ") {
                tally.arrived(data);
            }
        });
    }
}

/// One WebSocket subscriber: subscribes to every command, signals `ready`
/// once subscribed, then tallies `record` messages until the socket
/// closes.
async fn ws_subscriber(
    addr: SocketAddr,
    tally: Arc<Tally>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Result<(), String> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .map_err(|e| format!("the server refused a subscriber: {e}"))?;
    let subscribe = r#"{"op":"subscribe","id":"bench","topic":"commands"}"#;
    ws.send(Message::text(subscribe))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg.map_err(|e| e.to_string())? else {
            continue;
        };
        if text.starts_with(r#"{"type":"record""#) {
            tally.arrived(text.as_bytes());
        } else if text.contains(r#""type":"subscribed""#) {
            let _ = ready.send(()).await;
        } else if text.contains(r#""type":"error""#) {
            return Err(format!("the server refused a subscription: {text}"));
        }
    }
    Ok(())
}

/// Runs the live-updates suite and returns its report.
///
/// # Errors
/// When the server cannot be reached or refuses a subscriber.
pub async fn run(opts: &LiveOptions) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(out, "{TABLE_HEADER}");
    // Server CPU per command with no subscriber, when that step ran: what
    // each step's extra CPU per delivered message is measured from.
    let mut alone: Option<f64> = None;
    for &n in &opts.subscribers {
        let counts: Vec<Arc<Tally>> = (0..n)
            .map(|_| Tally::new().map(Arc::new))
            .collect::<Result<_, _>>()?;
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(n.max(1));
        let mut tasks = JoinSet::new();
        for tally in &counts {
            let (tally, ready) = (Arc::clone(tally), ready_tx.clone());
            match opts.protocol {
                Protocol::Sse => tasks.spawn(subscriber(opts.addr, tally, ready)),
                Protocol::WebSocket => tasks.spawn(ws_subscriber(opts.addr, tally, ready)),
            };
        }
        drop(ready_tx);
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..n {
            match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
                Ok(Some(())) => {}
                _ => {
                    let why = match tasks.try_join_next() {
                        Some(Ok(Err(e))) => e,
                        _ => "not every subscriber was connected within 60 s".into(),
                    };
                    return Err(why);
                }
            }
        }
        let load = suite::post(
            opts.addr,
            "/commands",
            opts.writers,
            opts.step,
            hyper::StatusCode::ACCEPTED,
            opts.keys,
        );
        let (report, cpu) = suite::run_measured(load, opts.pid).await?;
        let load_end = Instant::now();
        let total = |counts: &[Arc<Tally>]| -> u64 { counts.iter().map(|c| c.seen()).sum() };
        let during = total(&counts);
        // Every subscriber saw at least the acknowledged commands (the
        // requests cut off at the deadline may add a few more).
        let caught_up = loop {
            if counts.iter().all(|c| c.seen() >= report.ok) {
                break Some(load_end.elapsed());
            }
            if load_end.elapsed() > CATCH_UP_LIMIT {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tasks.abort_all();
        let label = format!("POST /commands, {n} {} subscribers", opts.protocol.name());
        let _ = writeln!(out, "{}", report.row(&label));
        let _ = writeln!(out, "{}", cpu.row("CPU per command in this step"));
        if n == 0 {
            alone = cpu.server;
        } else {
            let secs = report.elapsed.as_secs_f64().max(1e-9);
            let extra = alone.zip(cpu.server).map_or_else(
                || "n/a".to_string(),
                |(a, s)| {
                    let per = (s - a) * report.ok as f64 / during.max(1) as f64;
                    format!("{per:.2} µs")
                },
            );
            let caught = caught_up.map_or_else(
                || format!("not within {} s", CATCH_UP_LIMIT.as_secs()),
                |d| format!("{} ms after the load", d.as_millis()),
            );
            let _ = writeln!(
                out,
                "|   delivered | | {:.0} messages/s during the load | all caught up {caught} | server CPU per message {extra} | | |",
                during as f64 / secs,
            );
            let mut latency =
                Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).map_err(|e| e.to_string())?;
            for tally in &counts {
                if let Ok(h) = tally.latency_ms.lock() {
                    latency.add(&*h).map_err(|e| e.to_string())?;
                }
            }
            let _ = writeln!(
                out,
                "|   update latency (command received → update read), ms | | p50 {} | p99 {} | p99.9 {} | | |",
                latency.value_at_quantile(0.5),
                latency.value_at_quantile(0.99),
                latency.value_at_quantile(0.999),
            );
        }
        if let Some((rss, peak)) = opts.pid.and_then(suite::memory_mib) {
            let _ = writeln!(
                out,
                "|   server memory after this step | | RSS {rss:.1} MiB | peak {peak:.1} MiB | | | |"
            );
        }
        // The server notices the closed streams on its next write or
        // heartbeat; give it a moment before the next step.
        while tasks.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_any_cut_and_timestamps_read() {
        let stream = b"HTTP/1.1 200 OK\r\n\r\n1f\r\nid: 0\n\nevent: command\nid: 1\ndata: {\"data\":{},\"timestamp\":17}\n\n\r\n";
        for cut in 0..stream.len() {
            let mut lines = Lines::default();
            let mut data = Vec::new();
            let mut take = |l: &[u8]| {
                if let Some(d) = l.strip_prefix(b"data: ") {
                    data.push(timestamp_of(d));
                }
            };
            lines.feed(&stream[..cut], &mut take);
            lines.feed(&stream[cut..], &mut take);
            assert_eq!(data, [Some(17)], "cut at {cut}");
        }
        assert_eq!(timestamp_of(b"{\"id\":1}"), None);
        let tally = Tally::new().unwrap();
        tally.arrived(format!(r#"{{"timestamp":{}}}"#, now_ms() - 5).as_bytes());
        assert_eq!(tally.seen(), 1);
        let h = tally.latency_ms.lock().unwrap();
        assert!((5..1000).contains(&h.max()), "{}", h.max());
    }
}

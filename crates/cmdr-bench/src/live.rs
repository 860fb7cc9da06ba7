//! The live-updates benchmark behind `cmdr bench live`: writers load
//! `POST /commands` while N clients follow `GET /commands/updates`
//! (Server-Sent Events), and the report shows what the subscribers cost the
//! writers (throughput, latency, server CPU per command), how many
//! messages the server delivered, and how long after the load every
//! subscriber had them all.
//!
//! An SSE subscriber is a bare TCP client that counts the `event:` lines
//! it reads, so the load generator spends little on them; a WebSocket
//! subscriber (`--protocol ws`) subscribes on `/ws` and counts `record`
//! messages.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Counts SSE messages with an `event:` field in a byte stream split
/// anywhere: the pattern `\nevent:` is matched across reads.
#[derive(Debug, Default)]
struct EventCounter {
    matched: usize,
}

impl EventCounter {
    const PATTERN: &'static [u8] = b"\nevent:";

    /// Events that begin in `chunk`.
    fn feed(&mut self, chunk: &[u8]) -> u64 {
        let mut found = 0;
        for &b in chunk {
            if b == Self::PATTERN[self.matched] {
                self.matched += 1;
                if self.matched == Self::PATTERN.len() {
                    found += 1;
                    self.matched = 0;
                }
            } else {
                // Only the pattern's first byte is a newline, so a mismatch
                // restarts the match at this byte.
                self.matched = usize::from(b == b'\n');
            }
        }
        found
    }
}

/// One subscriber: opens the stream, signals `ready` once the server's
/// first bytes arrive, then counts events into `seen` until the connection
/// ends.
async fn subscriber(
    addr: SocketAddr,
    seen: Arc<AtomicU64>,
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
    let mut counter = EventCounter::default();
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
        let found = counter.feed(&buf[..n]);
        if found > 0 {
            seen.fetch_add(found, Ordering::Relaxed);
        }
    }
}

/// One WebSocket subscriber: subscribes to every command, signals `ready`
/// once subscribed, then counts `record` messages into `seen` until the
/// socket closes.
async fn ws_subscriber(
    addr: SocketAddr,
    seen: Arc<AtomicU64>,
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
            seen.fetch_add(1, Ordering::Relaxed);
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
        let counts: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(n.max(1));
        let mut tasks = JoinSet::new();
        for seen in &counts {
            let (seen, ready) = (Arc::clone(seen), ready_tx.clone());
            match opts.protocol {
                Protocol::Sse => tasks.spawn(subscriber(opts.addr, seen, ready)),
                Protocol::WebSocket => tasks.spawn(ws_subscriber(opts.addr, seen, ready)),
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
        let total = |counts: &[Arc<AtomicU64>]| -> u64 {
            counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
        };
        let during = total(&counts);
        // Every subscriber saw at least the acknowledged commands (the
        // requests cut off at the deadline may add a few more).
        let caught_up = loop {
            if counts
                .iter()
                .all(|c| c.load(Ordering::Relaxed) >= report.ok)
            {
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
    fn events_are_counted_across_any_split() {
        let stream = b"HTTP/1.1 200 OK\r\n\r\nid: 0\n\nevent: command\nid: 1\ndata: {\"event: x\"}\n\n:\n\nevent: command\nid: 2\ndata: {}\n\n";
        for cut in 0..stream.len() {
            let mut c = EventCounter::default();
            let n = c.feed(&stream[..cut]) + c.feed(&stream[cut..]);
            assert_eq!(n, 2, "split at {cut}");
        }
        let mut c = EventCounter::default();
        assert_eq!(c.feed(b"\n\nevent:"), 1, "a newline run still matches");
    }
}

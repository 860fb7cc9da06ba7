//! The HTTP load generator behind `cmdr bench http`: keeps N HTTP/1.1
//! connections busy for a fixed time (closed loop: each connection sends its
//! next request when the previous answer is in) and reports throughput and
//! latency percentiles from an HDR histogram. With [`Load::http2`], the N
//! closed loops are HTTP/2 streams instead, that many to a connection.
//!
//! It also runs a *bare* server (a handler that answers `202` without doing
//! anything) on the same machine, measured the same way, as the ceiling that
//! the real server's figures are compared to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Makes the body of the `n`th request of connection `conn`.
pub type BodyFn = Arc<dyn Fn(usize, u64) -> Bytes + Send + Sync>;

/// Makes the path of the `n`th request of connection `conn`.
pub type PathFn = Arc<dyn Fn(usize, u64) -> String + Send + Sync>;

/// One load run's description.
#[derive(Clone)]
pub struct Load {
    /// Server address.
    pub addr: SocketAddr,
    /// Method of every request.
    pub method: Method,
    /// Path (and query) of each request.
    pub path: PathFn,
    /// Body of each request (empty for GET).
    pub body: BodyFn,
    /// Extra headers on every request.
    pub headers: Vec<(String, String)>,
    /// Open connections, each with one request in flight.
    pub connections: usize,
    /// How long to run.
    pub duration: Duration,
    /// Answers with this status count as successes.
    pub expect: StatusCode,
    /// HTTP/2 with prior knowledge, `connections` streams in flight shared
    /// out this many to a connection (`None`: HTTP/1.1, one request in
    /// flight per connection).
    pub http2: Option<usize>,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Connections used.
    pub connections: usize,
    /// Requests answered with the expected status.
    pub ok: u64,
    /// Requests answered otherwise, or failed.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency histogram in microseconds.
    pub latency_us: Histogram<u64>,
    /// Bodies of a few successful answers (for follow-up runs, e.g. ids to GET).
    pub samples: Vec<Bytes>,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency percentile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// One table row: connections, req/s, p50, p99, p99.9, errors.
    pub fn row(&self, label: &str) -> String {
        format!(
            "| {label} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.connections,
            self.rate(),
            self.ms(0.50),
            self.ms(0.99),
            self.ms(0.999),
            self.errors
        )
    }
}

/// Header line matching [`LoadReport::row`].
pub const TABLE_HEADER: &str =
    "| workload | connections | req/s | p50 ms | p99 ms | p99.9 ms | errors |\n|---|---|---|---|---|---|---|";

/// Bodies kept per connection in [`LoadReport::samples`].
const SAMPLES_PER_CONNECTION: usize = 64;

/// Runs `load` and reports.
///
/// # Errors
/// When no connection can be opened.
pub async fn run(load: Load) -> Result<LoadReport, String> {
    let senders = match load.http2 {
        Some(per) => {
            let per = per.max(1);
            let mut senders = Vec::new();
            for _ in 0..load.connections.div_ceil(per) {
                senders.push(http2_sender(load.addr).await?);
            }
            Some((senders, per))
        }
        None => None,
    };
    let deadline = Instant::now() + load.duration;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(load.connections);
    for conn in 0..load.connections {
        let load = load.clone();
        let sender = senders
            .as_ref()
            .map(|(senders, per)| senders[conn / per].clone());
        tasks.push(tokio::spawn(async move {
            let sender = match sender {
                Some(h2) => Sender::Http2(h2),
                None => Sender::Http1(http1_sender(load.addr).await?),
            };
            connection(conn, sender, load, deadline).await
        }));
    }
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut ok, mut errors, mut samples, mut failures) = (0, 0, Vec::new(), Vec::new());
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                ok += r.ok;
                errors += r.errors;
                latency.add(&r.hist).map_err(|e| e.to_string())?;
                samples.extend(r.samples);
            }
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if ok == 0 && !failures.is_empty() {
        return Err(format!("no request succeeded: {}", failures[0]));
    }
    Ok(LoadReport {
        connections: load.connections,
        ok,
        errors: errors + failures.len() as u64,
        elapsed: start.elapsed(),
        latency_us: latency,
        samples,
    })
}

struct ConnResult {
    ok: u64,
    errors: u64,
    hist: Histogram<u64>,
    samples: Vec<Bytes>,
}

/// One connection's (or, for HTTP/2, one stream's) way to send requests.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let sent = match self {
            Self::Http1(s) => {
                s.ready()
                    .await
                    .map_err(|e| format!("connection closed: {e}"))?;
                s.send_request(req).await
            }
            Self::Http2(s) => {
                s.ready()
                    .await
                    .map_err(|e| format!("connection closed: {e}"))?;
                s.send_request(req).await
            }
        };
        sent.map_err(|e| format!("request failed: {e}"))
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

async fn http1_sender(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let (sender, driver) =
        hyper::client::conn::http1::handshake(TokioIo::new(connect(addr).await?))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(driver);
    Ok(sender)
}

async fn http2_sender(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>, String> {
    let (sender, driver) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(connect(addr).await?),
    )
    .await
    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(driver);
    Ok(sender)
}

async fn connection(
    conn: usize,
    mut sender: Sender,
    load: Load,
    deadline: Instant,
) -> Result<ConnResult, String> {
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut ok, mut errors, mut samples) = (0u64, 0u64, Vec::new());
    let host = load.addr.to_string();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let mut req = Request::builder().method(load.method.clone());
        req = match sender {
            Sender::Http1(_) => req.uri((load.path)(conn, n)).header("host", &host),
            // HTTP/2 takes the authority from the URI.
            Sender::Http2(_) => req
                .uri(format!("http://{host}{}", (load.path)(conn, n)))
                .version(hyper::Version::HTTP_2),
        };
        req = req.header("content-type", "application/json");
        for (k, v) in &load.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new((load.body)(conn, n)))
            .map_err(|e| e.to_string())?;
        n += 1;
        let t0 = Instant::now();
        match sender.send(req).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                let us = t0.elapsed().as_micros() as u64;
                match body {
                    Ok(body) if status == load.expect => {
                        ok += 1;
                        hist.saturating_record(us.max(1));
                        if samples.len() < SAMPLES_PER_CONNECTION {
                            samples.push(body);
                        }
                    }
                    _ => errors += 1,
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ConnResult {
        ok,
        errors,
        hist,
        samples,
    })
}

/// The bare ceiling handler: answers `202` to any POST and `200` to any
/// GET, after reading the body, without doing anything else.
pub fn bare_router() -> axum::Router {
    use axum::routing::any;
    axum::Router::new().fallback(any(|body: Bytes| async move {
        let _ = body;
        (StatusCode::ACCEPTED, "{\"status\":\"pending\"}")
    }))
}

/// Serves [`bare_router`] on `listener` until the process ends.
///
/// # Errors
/// When serving fails.
pub async fn serve_bare(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    // Like the gateway (see `cmdr_gateway::serve_router`).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, bare_router()).await
}

/// Serves [`bare_router`] on a fresh loopback port inside this process (on
/// the load generator's own runtime); returns its address.
///
/// # Errors
/// When the port cannot be bound.
pub async fn spawn_bare_server() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_bare(listener));
    Ok(addr)
}

/// The body of `GET path` on `addr`, on a connection of its own, when it
/// answers `200`.
///
/// # Errors
/// When the server cannot be reached or answers another status.
pub async fn get_text(addr: SocketAddr, path: &str) -> Result<String, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, driver) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(driver);
    let req = Request::builder()
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("GET {path}: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("GET {path} answered {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|e| format!("GET {path}: {e}"))
}

//! The connection loop: accepts connections from a listener (plain TCP or
//! [`crate::tls::TlsListener`]) and serves each with hyper, upgrades
//! (WebSocket) included, until a shutdown signal. A connection speaks
//! HTTP/1.1, or HTTP/2 when its client opens with HTTP/2's preface: over
//! TLS when ALPN chose `h2`, in plain text with prior knowledge (`h2c`, as
//! proxies such as Envoy speak to their upstreams). An HTTP/2 connection
//! serves at most [`MAX_CONCURRENT_STREAMS`] requests at once (and, while
//! live-stream places run short, [`MAX_LIVE_STREAMS_PER_CONNECTION`] live
//! streams), and gets the same bounds as an HTTP/1.1 one from `http2.rs`:
//! closed gracefully after the header read timeout with no request open,
//! closed when one of its answers' clients takes nothing for the send
//! timeout (all its streams with it), and told to go (`GOAWAY`) while the
//! server is leaving. WebSockets are
//! HTTP/1.1 only (no extended `CONNECT`): browsers open them on an
//! HTTP/1.1 connection of their own.
//!
//! Unlike `axum::serve`, it bounds how long a client may take to send a
//! request's headers ([`HEADER_READ_TIMEOUT`]): a client that opens
//! connections and trickles bytes (slowloris) cannot hold them for ever,
//! and a keep-alive connection with no next request is closed after the
//! same time. At shutdown it stops accepting, lets every connection finish
//! the request it is serving, and returns once all are closed (an upgraded
//! connection, a WebSocket, leaves this count when it is upgraded; the
//! gateway closes its sockets itself at shutdown, with 1001), or after
//! the drain timeout ([`DRAIN_TIMEOUT`] by default) with the stragglers
//! left behind (a client reading an answer at a trickle cannot keep the
//! process from stopping before an orchestrator kills it). An HTTP/1.1
//! connection serving a live stream (Server-Sent Events) is closed at once
//! instead (an HTTP/2 one gets `GOAWAY` like any other: its live streams
//! end with the shutdown, its other requests finish):
//! its client resumes from the last message it got, and a reader too slow
//! to take the stream's last bytes would otherwise hold the shutdown for
//! the whole drain timeout.
//!
//! A connection whose client takes none of the bytes sent to it for the
//! send timeout ([`crate::send_timeout`]) is closed, whatever it serves.
//!
//! It serves at most a set number of connections at once
//! ([`DEFAULT_MAX_CONNECTIONS`] by default). At the limit, up to
//! [`OVERFLOW_CONNECTIONS`] more are taken for one request each (HTTP/1.1;
//! over HTTP/2, a short connection taking one stream at a time):
//! `/healthz` and `/readyz` are answered as always (an orchestrator's
//! probe must not fail, and restart the server, because clients hold every
//! place), anything else `503` with `Retry-After` (a load balancer then
//! sends it elsewhere). Past those it stops accepting, so further clients
//! wait in the kernel's listen backlog instead of costing file descriptors
//! and memory, until one closes. An
//! upgraded connection (a WebSocket) keeps its place until the socket
//! closes: every request asking for an upgrade carries its connection's
//! `ConnectionSlot`, which the WebSocket handler moves into the socket's
//! task.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::http2::{Streams, Tracked, Verdict};
use crate::send_timeout::{Progress, Watched};

/// Longest a client may take to send a request's headers, and longest a
/// keep-alive connection may stay idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a shutdown waits for open connections to finish (a Kubernetes
/// pod gets 30 s between SIGTERM and SIGKILL; this leaves time for the
/// rest of the shutdown).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Most requests an HTTP/2 connection may have open at once (its
/// `SETTINGS_MAX_CONCURRENT_STREAMS`; RFC 9113 asks for at least 100).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Most bytes of headers an HTTP/2 request may carry, counted as HTTP/2
/// does (name, value and 32 per field): room for the
/// [`crate::head_limits::MAX_HEADER_BYTES`] the server checks itself, so
/// that it answers those over it with its own problem, as for HTTP/1.1.
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 96 * 1024;

/// Most bytes of an answer HTTP/2 holds for a stream whose client's flow
/// control does not take them yet (hyper's default is 400 KB; with up to
/// [`MAX_CONCURRENT_STREAMS`] streams that is per connection 100 times it).
pub const HTTP2_SEND_BUFFER: usize = 64 * 1024;

/// How often an HTTP/2 connection is pinged, and how long its client has
/// to answer before it is closed: a client gone without a word is found
/// even when nothing is being sent to it (a graceful close waits for the
/// client's answer to a ping).
pub const HTTP2_PING: Duration = Duration::from_secs(20);

/// Default most connections served at once, WebSockets included (live
/// streams also have their own limit, [`crate::MAX_LIVE_STREAMS`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Connections taken past `max_connections`
/// ([`crate::GatewayConfig::max_connections`]) at once, each for one
/// HTTP/1.1 request or a short HTTP/2 connection (see the module).
pub const OVERFLOW_CONNECTIONS: usize = 64;

/// Paths an overflow connection answers as usual; the rest get `503`.
const OVERFLOW_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// A connection's place among the [`Limits::max_connections`] served at
/// once, in the extensions of every request that asks for an upgrade: it
/// is given back when the connection and every clone (an upgraded
/// socket's) are gone.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSlot {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// Most live streams (Server-Sent Events) one HTTP/2 connection may
/// serve at once while more than half the server's
/// [`crate::MAX_LIVE_STREAMS`] places are taken: then a client cannot take
/// the rest with a few connections (an HTTP/1.1 connection serves one at a
/// time). With places to spare there is no such limit: a proxy puts many
/// clients' streams on one connection, a browser all its tabs'.
pub const MAX_LIVE_STREAMS_PER_CONNECTION: usize = 32;

/// How many live streams a connection may serve while `free` of the
/// server's places are free (see [`MAX_LIVE_STREAMS_PER_CONNECTION`]).
pub(crate) fn live_streams_per_connection(free: usize) -> usize {
    if free < crate::MAX_LIVE_STREAMS / 2 {
        MAX_LIVE_STREAMS_PER_CONNECTION
    } else {
        usize::MAX
    }
}

/// The live streams a connection serves (see the module documentation),
/// in the extensions of every `GET` request for a path ending in
/// `/updates`: the stream's handler counts itself for as long as its
/// answer lasts ([`LiveStreamFlag::raise`]).
#[derive(Debug, Clone)]
pub(crate) struct LiveStreamFlag(Arc<AtomicUsize>);

impl LiveStreamFlag {
    /// Counts a live stream on the connection until the returned guard is
    /// dropped (with the stream's body), unless `shutdown` (the gateway's
    /// signal, which ends the stream) is set by then: the stream's last
    /// bytes must not hold the shutdown either. `None` when the connection
    /// already serves `cap` (see [`live_streams_per_connection`]).
    pub(crate) fn raise(
        &self,
        shutdown: watch::Receiver<bool>,
        cap: usize,
    ) -> Option<LiveStreamGuard> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(LiveStreamGuard {
            flag: Arc::clone(&self.0),
            shutdown,
        })
    }

    /// Whether the connection serves a live stream.
    fn raised(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// Takes its stream off its [`LiveStreamFlag`] when dropped, outside a
/// shutdown.
#[derive(Debug)]
pub(crate) struct LiveStreamGuard {
    flag: Arc<AtomicUsize>,
    shutdown: watch::Receiver<bool>,
}

impl Drop for LiveStreamGuard {
    fn drop(&mut self) {
        if !*self.shutdown.borrow() {
            self.flag.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Limits of [`serve_connections`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read: Duration,
    /// See [`DRAIN_TIMEOUT`].
    pub drain: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`crate::send_timeout::SEND_TIMEOUT`].
    pub send: Duration,
}

/// Serves `router` on the connections of `listener` until `shutdown`
/// resolves, then drains them (see the module documentation).
pub(crate) async fn serve_connections<L>(
    mut listener: L,
    router: Router,
    limits: Limits,
    leaving: Arc<dyn Fn() -> bool + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(HTTP2_PING)
        .keep_alive_timeout(HTTP2_PING)
        .max_send_buf_size(HTTP2_SEND_BUFFER);
    // Dropped to tell connections to finish; each holds a receiver of
    // `closed` until it ends.
    let (stop, stopping) = watch::channel(());
    let (closed_tx, closed) = watch::channel(());
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let mut full = false;
    loop {
        // A slot first; at the limit an overflow place; past both, accept
        // nothing until a connection ends.
        let place = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.map(Ok),
            extra = Arc::clone(&overflow).acquire_owned() => extra.map(Err),
        };
        let Ok(place) = place else { break };
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        // Said once each time the limit is reached.
        let at_limit = slots.available_permits() == 0;
        if at_limit && !full {
            tracing::warn!(
                max = limits.max_connections,
                "serving the most connections allowed; further clients get 503 (health checks still answered) until one closes"
            );
        }
        full = at_limit;
        // A place may have come free while this connection was awaited.
        let place =
            place.or_else(|extra| Arc::clone(&slots).try_acquire_owned().map_err(|_| extra));
        let slot = match place {
            Ok(slot) => slot,
            Err(extra) => {
                tokio::spawn(serve_overflow(io, router.clone(), limits, extra));
                continue;
            }
        };
        let slot = ConnectionSlot {
            _permit: Arc::new(slot),
        };
        let live = LiveStreamFlag(Arc::new(AtomicUsize::new(0)));
        let flag = live.clone();
        let streams = Arc::new(Streams::default());
        // Heads over the limits are answered before the router.
        let checked =
            crate::head_limits::HeadChecked(TowerToHyperService::new(router.clone().map_request(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    if req.headers().contains_key(axum::http::header::UPGRADE) {
                        req.extensions_mut().insert(slot.clone());
                    }
                    if req.method() == axum::http::Method::GET
                        && req.uri().path().ends_with("/updates")
                    {
                        req.extensions_mut().insert(flag.clone());
                    }
                    req
                },
            )));
        let service = Tracked {
            inner: checked,
            streams: Arc::clone(&streams),
            leaving: Arc::clone(&leaving),
        };
        let progress = Arc::new(Progress::default());
        let conn = http
            .serve_connection_with_upgrades(
                TokioIo::new(Watched::new(io, Arc::clone(&progress))),
                service,
            )
            .into_owned();
        let mut stopping = stopping.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(?peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = progress.stalled(limits.send) => {
                        tracing::debug!(?peer, "the client took nothing for the send timeout; closing");
                        break;
                    }
                    verdict = streams.verdict(limits.header_read, limits.send, draining) => {
                        if verdict == Verdict::Stalled {
                            tracing::debug!(?peer, "a stream's client took nothing for the send timeout; closing");
                            break;
                        }
                        tracing::debug!(?peer, ?verdict, "ending the connection gracefully");
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = stopping.changed(), if !draining => {
                        if live.raised() && !streams.is_http2() {
                            // Nothing to finish: the client resumes.
                            break;
                        }
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(closed);
        });
    }
    drop(listener);
    drop(stop);
    drop(closed);
    if tokio::time::timeout(limits.drain, closed_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = closed_tx.receiver_count(),
            "connections still open after the drain timeout; stopping without them"
        );
    }
}

/// Serves a connection taken past the limit (see the module): a health
/// check as usual, anything else `503`. HTTP/1.1 closes after one request;
/// HTTP/2 takes one stream at a time. Either way the connection ends after
/// the header read and send timeouts together, so an idle or slow client
/// cannot keep the `place`.
async fn serve_overflow<I>(io: I, router: Router, limits: Limits, place: OwnedSemaphorePermit)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let router = router.clone();
        async move {
            if OVERFLOW_PATHS.contains(&req.uri().path()) {
                return router.oneshot(req.map(axum::body::Body::new)).await;
            }
            use axum::response::IntoResponse;
            Ok(crate::error::ApiError::Unavailable(
                "the server is serving the most connections it allows (max_connections); \
                 try again shortly"
                    .into(),
            )
            .into_response())
        }
    });
    // HTTP/2 too (h2 by ALPN, h2c): an orchestrator's probe may speak it.
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(false);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1);
    let conn = http.serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(limits.header_read + limits.send, conn).await;
    drop(place);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_held_to_its_share_of_live_streams_only_when_they_run_short() {
        assert_eq!(
            live_streams_per_connection(crate::MAX_LIVE_STREAMS),
            usize::MAX
        );
        assert_eq!(
            live_streams_per_connection(crate::MAX_LIVE_STREAMS / 2),
            usize::MAX
        );
        assert_eq!(
            live_streams_per_connection(crate::MAX_LIVE_STREAMS / 2 - 1),
            MAX_LIVE_STREAMS_PER_CONNECTION
        );
        let (_tx, shutdown) = watch::channel(false);
        let flag = LiveStreamFlag(Arc::new(AtomicUsize::new(0)));
        let first = flag.raise(shutdown.clone(), 2).unwrap();
        let second = flag.raise(shutdown.clone(), 2).unwrap();
        assert!(flag.raise(shutdown.clone(), 2).is_none(), "over the cap");
        drop(first);
        let third = flag.raise(shutdown.clone(), 2).unwrap();
        drop((second, third));
        assert!(!flag.raised());
    }

    #[test]
    fn at_shutdown_a_live_stream_keeps_its_connection_marked() {
        let (tx, shutdown) = watch::channel(false);
        let flag = LiveStreamFlag(Arc::new(AtomicUsize::new(0)));
        let guard = flag.raise(shutdown, usize::MAX).unwrap();
        tx.send(true).unwrap();
        drop(guard);
        // The connection is closed at once rather than drained.
        assert!(flag.raised());
    }
}

//! The connection loop: accepts connections from a listener (plain TCP or
//! [`crate::tls::TlsListener`]) and serves each with hyper's HTTP/1.1
//! server, upgrades (WebSocket) included, until a shutdown signal.
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
//! process from stopping before an orchestrator kills it). A connection
//! serving a live stream (Server-Sent Events) is closed at once instead:
//! its client resumes from the last message it got, and a reader too slow
//! to take the stream's last bytes would otherwise hold the shutdown for
//! the whole drain timeout.
//!
//! A connection whose client takes none of the bytes sent to it for the
//! send timeout ([`crate::send_timeout`]) is closed, whatever it serves.
//!
//! It serves at most a set number of connections at once
//! ([`DEFAULT_MAX_CONNECTIONS`] by default): at the limit it stops
//! accepting, so further clients wait in the kernel's listen backlog
//! instead of costing file descriptors and memory, until one closes. An
//! upgraded connection (a WebSocket) keeps its place until the socket
//! closes: every request asking for an upgrade carries its connection's
//! `ConnectionSlot`, which the WebSocket handler moves into the socket's
//! task.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::send_timeout::{Progress, Watched};

/// Longest a client may take to send a request's headers, and longest a
/// keep-alive connection may stay idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a shutdown waits for open connections to finish (a Kubernetes
/// pod gets 30 s between SIGTERM and SIGKILL; this leaves time for the
/// rest of the shutdown).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Default most connections served at once, WebSockets included (live
/// streams also have their own limit, [`crate::MAX_LIVE_STREAMS`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// A connection's place among the [`Limits::max_connections`] served at
/// once, in the extensions of every request that asks for an upgrade: it
/// is given back when the connection and every clone (an upgraded
/// socket's) are gone.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSlot {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// Set while a connection serves a live stream (see the module
/// documentation), in the extensions of every `GET` request for a path
/// ending in `/updates`: the stream's handler raises it for as long as its
/// answer lasts ([`LiveStreamFlag::raise`]).
#[derive(Debug, Clone)]
pub(crate) struct LiveStreamFlag(Arc<AtomicBool>);

impl LiveStreamFlag {
    /// Marks the connection as serving a live stream until the returned
    /// guard is dropped (with the stream's body), unless `shutdown` (the
    /// gateway's signal, which ends the stream) is set by then: the
    /// stream's last bytes must not hold the shutdown either.
    pub(crate) fn raise(&self, shutdown: watch::Receiver<bool>) -> LiveStreamGuard {
        self.0.store(true, Ordering::Relaxed);
        LiveStreamGuard {
            flag: Arc::clone(&self.0),
            shutdown,
        }
    }
}

/// Lowers its [`LiveStreamFlag`] when dropped, outside a shutdown.
#[derive(Debug)]
pub(crate) struct LiveStreamGuard {
    flag: Arc<AtomicBool>,
    shutdown: watch::Receiver<bool>,
}

impl Drop for LiveStreamGuard {
    fn drop(&mut self) {
        if !*self.shutdown.borrow() {
            self.flag.store(false, Ordering::Relaxed);
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
    shutdown: impl Future<Output = ()>,
) where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    // Dropped to tell connections to finish; each holds a receiver of
    // `closed` until it ends.
    let (stop, stopping) = watch::channel(());
    let (closed_tx, closed) = watch::channel(());
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut full = false;
    loop {
        // A slot first: at the limit, accept nothing until a connection ends.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        // Said once each time the limit is reached.
        let at_limit = slots.available_permits() == 0;
        if at_limit && !full {
            tracing::warn!(
                max = limits.max_connections,
                "serving the most connections allowed; further clients wait until one closes"
            );
        }
        full = at_limit;
        let slot = ConnectionSlot {
            _permit: Arc::new(slot),
        };
        let live = LiveStreamFlag(Arc::new(AtomicBool::new(false)));
        let flag = live.clone();
        // Heads over the limits are answered before the router.
        let service =
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
        let progress = Arc::new(Progress::default());
        let conn = http
            .serve_connection(
                TokioIo::new(Watched::new(io, Arc::clone(&progress))),
                service,
            )
            .with_upgrades();
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
                    _ = stopping.changed(), if !draining => {
                        if live.0.load(Ordering::Relaxed) {
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

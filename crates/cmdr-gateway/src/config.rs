//! The gateway's settings, each with its default.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::TokenTable;

/// Default largest request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default wait for a command's outcome with `?sync=true`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// Default longest wait a client may ask for with `Prefer: wait=N`.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);
/// Default [`GatewayConfig::max_index_lag`]: about a second of the
/// intake's full rate on a small machine.
pub const DEFAULT_MAX_INDEX_LAG: u64 = 20_000;

/// Configuration of the HTTP gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted; larger ones get 413. Default [`DEFAULT_BODY_LIMIT`].
    pub body_limit: usize,
    /// How long `?sync=true` waits for an outcome. Default [`DEFAULT_WAIT`].
    pub default_wait: Duration,
    /// Upper bound of any wait (`Prefer: wait=N` is clamped). Default [`DEFAULT_MAX_WAIT`].
    pub max_wait: Duration,
    /// How long an idempotent POST, or a read of an id not yet indexed, waits
    /// for the index to catch up with the log. Default 5 s.
    pub index_wait: Duration,
    /// Backpressure: how many commands a partition's index may fall behind
    /// its log before the intake's answers wait (at most `index_wait`) for
    /// it to come back within reach. Writers that wait for their answers
    /// then slow to the index's pace, so reads of what they wrote keep
    /// finding it. Default [`DEFAULT_MAX_INDEX_LAG`].
    pub max_index_lag: u64,
    /// The accepted bearer tokens (replaceable while serving); `None` (the
    /// default): no authentication, every principal is [`crate::auth::ANONYMOUS`].
    pub tokens: Option<Arc<TokenTable>>,
    /// HTTPS: the server's certificate and key (see [`crate::tls`]);
    /// `None` (the default): plain HTTP.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// Longest a client may take to send a request's headers, and again its
    /// body (408 `request-timeout` then), and longest a keep-alive
    /// connection may idle. Default [`crate::server::HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// Longest a client may take none of the bytes sent to it before its
    /// connection is closed (a live stream's reader that stopped reading).
    /// Default [`crate::send_timeout::SEND_TIMEOUT`].
    pub send_timeout: Duration,
    /// Longest a shutdown waits for open connections to finish. Default
    /// [`crate::server::DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// How long a shutdown keeps serving as usual, with `/readyz` already
    /// answering 503, before it stops accepting connections: the time a
    /// load balancer polling readiness needs to stop sending new requests.
    /// Default zero (stop at once).
    pub shutdown_delay: Duration,
    /// Most connections served at once; beyond it the server stops
    /// accepting (new ones wait in the kernel's backlog) until one closes.
    /// Default [`crate::server::DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Origins allowed to call the API from a browser (see [`crate::cors`]);
    /// `None` (the default): no CORS headers, same-origin pages only.
    pub cors: Option<crate::cors::CorsOrigins>,
    /// Bytes kept free in the data directory's file system: under it,
    /// clients' writes get `507` (see [`crate::disk_space`]); 0 keeps no
    /// reserve. Only applied once [`crate::AppState::watch_disk_space`] is
    /// called. Default [`crate::disk_space::DEFAULT_MIN_FREE_BYTES`].
    pub min_free_bytes: u64,
    /// Log a line per answered request (see [`crate::access_log`] for
    /// what it holds); applied by [`crate::serve_router`]. Default off.
    pub access_log: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            default_wait: DEFAULT_WAIT,
            max_wait: DEFAULT_MAX_WAIT,
            index_wait: Duration::from_secs(5),
            max_index_lag: DEFAULT_MAX_INDEX_LAG,
            tokens: None,
            tls: None,
            header_read_timeout: crate::server::HEADER_READ_TIMEOUT,
            send_timeout: crate::send_timeout::SEND_TIMEOUT,
            drain_timeout: crate::server::DRAIN_TIMEOUT,
            shutdown_delay: Duration::ZERO,
            max_connections: crate::server::DEFAULT_MAX_CONNECTIONS,
            cors: None,
            min_free_bytes: crate::disk_space::DEFAULT_MIN_FREE_BYTES,
            access_log: false,
        }
    }
}

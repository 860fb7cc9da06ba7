//! cmdr's HTTP gateway: command intake, validation, status, queries, waiting
//! for outcomes and live updates, on top of a [`cmdr_log::Log`] and a
//! [`cmdr_index::Index`].
//!
//! - [`app`] builds the router from an [`AppState`] (tests call it without a socket);
//! - [`serve`] runs it on a listener until a shutdown future resolves, then
//!   drains in-flight requests, ends live streams and syncs the log;
//! - [`serve_router`] does the same for `app(state).merge(more)`: the
//!   extension point through which an application adds its own routes (read
//!   models, for instance) beside the API.
//!
//! Webhook processors are registered and dead letters read through
//! `/processors` and `/dead-letters`; running the processors is the job of
//! [`cmdr_processor::webhook::supervise`], given [`AppState::webhooks`].
//!
//! Architecture invariant: the gateway is the only layer that knows HTTP; it
//! talks to storage only through the `Log` trait and the index.
//!
//! ```no_run
//! # async fn demo(log: std::sync::Arc<dyn cmdr_log::Log>, index: cmdr_index::Index) -> Result<(), Box<dyn std::error::Error>> {
//! use cmdr_gateway::{serve, AppState, GatewayConfig};
//! let state = AppState::new(log, index, GatewayConfig::default()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! The HTTP API, its media types and its problem codes are described in
//! [`openapi`] (served at `/openapi.json`) and the repository's README.

pub mod access_log;
pub mod auth;
pub mod backup;
mod body;
mod compression;
mod config;
pub mod cors;
pub mod disk_space;
mod error;
mod extract;
pub mod follow;
pub mod head_limits;
mod health;
pub mod html;
mod http2;
mod idempotency;
mod intake;
mod live;
mod log_order;
mod metrics;
pub mod negotiate;
pub mod openapi;
pub mod paths;
mod processors;
mod reads;
mod schema_cost;
mod schemas;
pub mod send_timeout;
pub mod server;
mod sse;
mod state;
pub mod tls;
mod views;

use std::future::Future;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use auth::{Grant, Principal, Role, TokenError, TokenTable, Tokens};
pub use config::{
    GatewayConfig, DEFAULT_BODY_LIMIT, DEFAULT_MAX_INDEX_LAG, DEFAULT_MAX_WAIT, DEFAULT_WAIT,
};
pub use error::{ApiError, ApiResult, PROBLEM_JSON};
pub use extract::{limit_param, query_pairs};
pub use idempotency::{MAX_IN_FLIGHT_KEYS, MAX_KEY_LEN};
pub use live::{
    HEARTBEAT, MAX_LIVE_STREAMS, MAX_SUBSCRIPTIONS, MAX_WS_MESSAGE, SSE_BUFFER, WS_BUFFER,
    WS_READ_BUFFER, WS_WRITE_BUFFER,
};
pub use processors::DEFAULT_DEAD_LETTER_LIMIT;
pub use schemas::SchemaVersion;
pub use state::{AppState, ReadinessCheck};

/// The whole API as a router with its state.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(intake::router())
        .merge(live::router())
        .merge(compression::compressed(
            Router::new()
                .merge(reads::router())
                .merge(schemas::router())
                .merge(processors::router())
                .merge(metrics::router())
                .merge(openapi::router())
                .layer(axum::middleware::from_fn(negotiate::problems_as_pages)),
        ))
        .merge(health::router())
        .merge(backup::router())
        .fallback(|neg: negotiate::Negotiated| async move {
            let res = ApiError::NotFound("no such resource".into()).into_response();
            negotiate::problem_page(neg, res).await
        })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The answer to a method a route does not have: a 405 problem.
async fn method_not_allowed() -> Response {
    let mut res = ApiError::MethodNotAllowed.into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `router` behind the bearer-token check of `state`'s configuration (see
/// [`auth`]); [`serve_router`] applies it to everything it serves (and,
/// outside it, the CORS layer of [`cors`] when origins are configured: a
/// router served another way needs `cors::layer` too). Without configured
/// tokens it only passes requests on.
pub fn authenticated(router: Router, state: &AppState) -> Router {
    if state.inner.config.tokens.is_none() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ))
}

/// `router` with a panic in a handler answered as a 500 problem (and
/// logged), rather than by dropping the connection with no answer; the
/// server goes on either way. No input is meant to panic a handler (see
/// ARCHITECTURE.md); this is the net under that rule, e.g. for a damaged
/// index file that makes the embedded database panic on a read.
pub fn catch_panics(router: Router) -> Router {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        |panic: Box<dyn std::any::Any + Send>| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            ApiError::Internal(format!("a handler panicked: {what}")).into_response()
        },
    ))
}

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Accepting or serving connections failed.
    #[error("serving HTTP: {0}")]
    Http(#[from] std::io::Error),
    /// The final log sync failed: acknowledged data may not be on disk.
    #[error("syncing the log at shutdown: {0}")]
    Sync(#[from] cmdr_log::LogError),
}

/// Serves [`app`] on `listener` (HTTPS when [`GatewayConfig::tls`] is set)
/// until `shutdown` resolves; then answers 503 on `/readyz`, serves on for
/// [`GatewayConfig::shutdown_delay`] (unless `shutdown` called
/// [`AppState::begin_shutdown`] itself, as for a fault), stops accepting,
/// ends live streams, finishes in-flight requests and syncs the log.
///
/// # Errors
/// [`ServeError`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_router(listener, state.clone(), app(state), shutdown).await
}

/// Like [`serve`], with a router of the caller's making, normally
/// `app(state.clone()).merge(extra)` where `extra` (a `Router<()>` without a
/// fallback) adds the application's own routes. `state` must be the state the
/// router was built with: it is told to end live streams at shutdown.
///
/// # Errors
/// [`ServeError`].
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    state: AppState,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let signal_state = state.clone();
    let delay = state.inner.config.shutdown_delay;
    let signal = async move {
        shutdown.await;
        // A caller stopping for a fault has begun the shutdown itself: no delay.
        let now = *signal_state.inner.shutdown.borrow();
        signal_state.begin_leaving();
        if !delay.is_zero() && !now {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "shutting down: not ready any more, serving on for the shutdown delay"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!("shutting down: draining requests");
        signal_state.begin_shutdown();
    };
    // Again, for the routes merged into [`app`]'s (they had none).
    let router = router.method_not_allowed_fallback(method_not_allowed);
    let mut app = catch_panics(authenticated(router, &state));
    if let Some(origins) = &state.inner.config.cors {
        // Outside authentication: preflights carry no token.
        app = app.layer(cors::layer(origins));
    }
    // Once leaving (the shutdown delay), every answer says `Connection:
    // close`: a keep-alive client sends its next request on a new
    // connection, which a load balancer sends elsewhere, instead of on one
    // the drain may be closing as it sends (a reset the client cannot tell
    // from a lost request). Not on a WebSocket's upgrade; outside CORS, so
    // preflights say it too.
    // HTML pages (for browsers) also say that they may not be framed by
    // another site (clickjacking the command form), load nothing, and post
    // forms only here.
    let leaving = state.clone();
    app = app.layer(tower::util::MapResponseLayer::new(
        move |mut res: axum::response::Response| {
            if leaving.is_leaving() && res.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS {
                res.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            if html::is_html(&res) {
                html::secure_headers(res.headers_mut());
            }
            res
        },
    ));
    if state.inner.config.access_log {
        // Outermost: it sees every answer, refusals of the layers above too.
        app = app.layer(axum::middleware::from_fn(access_log::log_request));
    }
    let limits = server::Limits {
        header_read: state.inner.config.header_read_timeout,
        drain: state.inner.config.drain_timeout,
        max_connections: state.inner.config.max_connections,
        send: state.inner.config.send_timeout,
    };
    let leaving_state = state.clone();
    let leaving: std::sync::Arc<dyn Fn() -> bool + Send + Sync> =
        std::sync::Arc::new(move || leaving_state.is_leaving());
    if let Some(tls) = state.inner.config.tls.clone() {
        let listener = tls::TlsListener::new(listener, tls)?;
        server::serve_connections(listener, app, limits, leaving, signal).await;
    } else {
        // No Nagle: answers and live updates (SSE, WebSocket) are small
        // writes that must leave at once, not wait for the previous
        // segment's ACK (the TLS listener sets it too).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        server::serve_connections(listener, app, limits, leaving, signal).await;
    }
    state.log().sync().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_gets_a_500_problem_and_the_router_serves_on() {
        let router = super::catch_panics(
            axum::Router::new()
                .route(
                    "/boom",
                    get(|| async {
                        if true {
                            panic!("index page damaged");
                        }
                        "unreachable"
                    }),
                )
                .route("/fine", get(|| async { "fine" })),
        );
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let res = router.clone().oneshot(get("/boom")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(res.headers()["content-type"], super::PROBLEM_JSON);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "internal");
        // The panic's text stays in the server's log.
        assert!(!String::from_utf8_lossy(&body).contains("damaged"));
        let res = router.oneshot(get("/fine")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

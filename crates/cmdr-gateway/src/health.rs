//! `GET /healthz` (the process answers and its log can still take appends)
//! and `GET /readyz` (the indexer is running and has caught up with the log
//! as it was at start, the log answers and can take appends, not shutting
//! down), plus the `/` home page.
//!
//! A data directory short of space fails neither: restarting the process
//! would free none, and reads go on while writes get 507 (see
//! [`crate::disk_space`]). `/readyz` tells it as `checks.disk_space:
//! false` (it answers 200 if all else is ready).
//!
//! A log that can no longer take appends until it is reopened (a write
//! that failed and could not be undone) fails both: an orchestrator then
//! restarts the process, and the log's recovery repairs it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cmdr_contract::COMMANDS_TOPIC;
use serde_json::json;

use crate::negotiate::Negotiated;
use crate::state::AppState;

/// Routes of this module.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.inner.log.failure() {
        None => Json(json!({"status": "ok"})).into_response(),
        Some(why) => {
            tracing::error!(error = %why, "unhealthy: the log cannot take appends until restarted");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "failing", "checks": {"log": false}})),
            )
                .into_response()
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let indexer = state.inner.index.is_running();
    let caught_up = state.inner.index.is_caught_up();
    let log =
        state.inner.log.topic(COMMANDS_TOPIC).await.is_ok() && state.inner.log.failure().is_none();
    let shutting_down = state.is_leaving();
    let mut checks = json!({"indexer": indexer, "index_caught_up": caught_up, "log": log, "shutting_down": shutting_down});
    let mut ready = indexer && caught_up && log && !shutting_down;
    if let Some(space) = state.disk_space() {
        // Told, not required: reads go on while the disk is short, and
        // taking the instance out of a load balancer would stop them too.
        checks["disk_space"] = json!(!space.is_low());
    }
    for (name, passed) in state.readiness() {
        ready &= passed;
        checks[name] = json!(passed);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not-ready" },
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

/// A form to send a command from a browser (posted as a form; the answer is
/// rendered as HTML).
const SEND_FORM: &str = "<h2>Send a command</h2><form method=post action=/commands>\
<p><label>action <input name=action required placeholder=open-account></label></p>\
<p><label>key <input name=key placeholder=optional></label></p>\
<p><label>data (a JSON object)<br><textarea name=data rows=6 cols=60>{}</textarea></label></p>\
<p><button>POST /commands</button></p></form>";

async fn home(neg: Negotiated) -> Response {
    if neg.html {
        let page = crate::html::page("cmdr", &home_document());
        let mut res = axum::response::Html(page.replace("</body>", &format!("{SEND_FORM}</body>")))
            .into_response();
        crate::negotiate::vary_on_accept(&mut res);
        return res;
    }
    neg.render("cmdr", home_document())
}

fn home_document() -> serde_json::Value {
    json!({
            "name": "cmdr",
            "description": "CQRS manager: send commands, read their status, events and live updates.",
            "links": {
                "commands": "/commands", "events": "/events", "schemas": "/schemas",
                "command_updates": "/commands/updates", "event_updates": "/events/updates",
                "openapi": "/openapi.json", "docs": "/docs", "health": "/healthz", "ready": "/readyz"
            }
    })
}

//! `GET /healthz` (the process answers) and `GET /readyz` (the indexer is
//! running and has caught up with the log as it was at start, the log
//! answers, not shutting down), plus the `/` home page.

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

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let indexer = state.inner.index.is_running();
    let caught_up = state.inner.index.is_caught_up();
    let log = state.inner.log.topic(COMMANDS_TOPIC).await.is_ok();
    let shutting_down = *state.inner.shutdown.borrow();
    let ready = indexer && caught_up && log && !shutting_down;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not-ready" },
        "checks": {"indexer": indexer, "index_caught_up": caught_up, "log": log, "shutting_down": shutting_down},
    });
    (status, Json(body)).into_response()
}

async fn home(neg: Negotiated) -> Response {
    neg.render(
        "cmdr",
        json!({
            "name": "cmdr",
            "description": "CQRS manager: send commands, read their status, events and live updates.",
            "links": {
                "commands": "/commands", "events": "/events", "schemas": "/schemas",
                "command_updates": "/commands/updates", "event_updates": "/events/updates",
                "openapi": "/openapi.json", "docs": "/docs", "health": "/healthz", "ready": "/readyz"
            }
        }),
    )
}

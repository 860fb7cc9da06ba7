//! `cmdr serve --example accounts`: the accounts example domain
//! ([`cmdr_processor::example`]) run inside the server, and its read model
//! over HTTP. The processing layer knows no HTTP, so its routes live here and
//! are merged beside the API (`app(state).merge(router(balances))`).
//!
//! - `GET /accounts`: `{"items": [{"id", "balance", "links"}]}`, by id;
//! - `GET /accounts/{id}`: `{"id", "balance", "links"}`, or 404 `not-found`.
//!
//! Both answer HTML when the client prefers it, like every GET of the API.
//! The balances are a read model: they follow the events topic and may lag an
//! accepted command by a few milliseconds.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use cmdr_gateway::negotiate::Negotiated;
use cmdr_gateway::{ApiError, ApiResult};
use cmdr_processor::example::Balances;
use serde_json::{json, Value};

/// The read-model routes of the accounts example.
pub fn router(balances: Balances) -> Router {
    Router::new()
        .route("/accounts", get(list))
        .route("/accounts/{id}", get(one))
        .with_state(balances)
}

fn account_json(id: &str, balance: i64) -> Value {
    json!({
        "id": id,
        "balance": balance,
        "links": {
            "self": format!("/accounts/{}", cmdr_gateway::paths::segment(id)),
            "events": cmdr_gateway::paths::stream(id),
        },
    })
}

async fn list(State(balances): State<Balances>, neg: Negotiated) -> Response {
    let items: Vec<Value> = balances
        .all()
        .iter()
        .map(|(id, balance)| account_json(id, *balance))
        .collect();
    neg.render("Accounts", json!({ "items": items }))
}

async fn one(
    State(balances): State<Balances>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    neg: Negotiated,
) -> ApiResult<Response> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let balance = balances
        .balance(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no open account {id:?}")))?;
    Ok(neg.render(&format!("Account {id}"), account_json(&id, balance)))
}

//! `cmdr serve --example accounts`: the accounts example domain
//! ([`cmdr_processor::example`]) run inside the server, and its read model
//! over HTTP. The processing layer knows no HTTP, so its routes live here and
//! are merged beside the API (`app(state).merge(router(balances))`).
//!
//! - `GET /accounts`: `{"items": [{"id", "balance", "links"}], "next"}`, by
//!   id, a page at a time (`limit`, 100 by default, at most 1,000; `after`,
//!   an account id; `next` is the following page's link, or `null`);
//! - `GET /accounts/{id}`: `{"id", "balance", "links"}`, or 404 `not-found`.
//!
//! Both answer HTML when the client prefers it, like every GET of the API.
//! The balances are a read model: they follow the events topic and may lag an
//! accepted command by a few milliseconds.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use cmdr_gateway::negotiate::Negotiated;
use cmdr_gateway::{limit_param, query_pairs, ApiError, ApiResult};
use cmdr_index::{DEFAULT_LIMIT, MAX_LIMIT};
use cmdr_processor::example::Balances;
use serde_json::{json, Value};

/// The read-model routes of the accounts example.
pub fn router(balances: Balances) -> Router {
    Router::new()
        .route("/accounts", get(list))
        .route("/accounts/{id}", get(one))
        .layer(axum::middleware::from_fn(
            cmdr_gateway::negotiate::problems_as_pages,
        ))
        .with_state(balances)
}

/// The OpenAPI `paths` and `components.schemas` of [`router`]'s routes,
/// for [`cmdr_gateway::AppState::document_routes`].
pub fn openapi() -> (Value, Value) {
    let problem = |description: &str| json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    let ok = |description: &str, schema: &str| {
        json!({"description": description, "content": {
            "application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}},
            "text/html": {"schema": {"type": "string"}}}})
    };
    let paths = json!({
        "/accounts": {"get": {
            "summary": "The accounts example's accounts and balances, by id (a read model of the events topic: it may lag an accepted command by a few milliseconds)",
            "parameters": [
                {"name": "limit", "in": "query", "description": format!("Accounts per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})."),
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
                {"name": "after", "in": "query", "description": "An account id: the page starts after it (the `next` link carries it).",
                    "schema": {"type": "string"}}],
            "responses": {
                "200": ok("A page of accounts; `next` is the following page's link, or null.", "AccountPage"),
                "400": problem("A bad or unknown query parameter (`bad-request`).")}}},
        "/accounts/{id}": {"get": {
            "summary": "One account of the accounts example and its balance",
            "parameters": [{"name": "id", "in": "path", "required": true, "description": "The account id (the key of its commands).", "schema": {"type": "string"}}],
            "responses": {
                "200": ok("The account.", "Account"),
                "400": problem("The id is not valid UTF-8 once percent-decoded (`bad-request`)."),
                "404": problem("No open account with this id (`not-found`).")}}}
    });
    let schemas = json!({
        "Account": {"type": "object", "properties": {
            "id": {"type": "string"}, "balance": {"type": "integer"},
            "links": {"type": "object", "properties": {"self": {"type": "string"}, "events": {"type": "string", "description": "the account's stream (GET /streams/{key})"}}}}},
        "AccountPage": {"type": "object", "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Account"}},
            "next": {"type": ["string", "null"]}}}
    });
    (paths, schemas)
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

async fn list(
    State(balances): State<Balances>,
    RawQuery(query): RawQuery,
    neg: Negotiated,
) -> ApiResult<Response> {
    let mut limit = DEFAULT_LIMIT;
    let mut after = None;
    for (name, value) in query_pairs(query.as_deref())? {
        match name.as_str() {
            "limit" => limit = limit_param(&value, MAX_LIMIT)?,
            "after" => after = Some(value),
            other => {
                return Err(ApiError::parameter(
                    other,
                    format!("unknown query parameter {other:?} (limit and after are known)"),
                ))
            }
        }
    }
    let (page, more) = balances.page(after.as_deref(), limit);
    let next = match page.last() {
        Some((last, _)) if more => Value::String(format!(
            "/accounts?after={}&limit={limit}",
            cmdr_gateway::paths::segment(last)
        )),
        _ => Value::Null,
    };
    let items: Vec<Value> = page
        .iter()
        .map(|(id, balance)| account_json(id, *balance))
        .collect();
    Ok(neg.render("Accounts", json!({ "items": items, "next": next })))
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

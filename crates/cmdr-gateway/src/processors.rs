//! Webhook processors and dead letters over HTTP:
//! `PUT|GET|DELETE /processors/{name}`, `GET /processors` and
//! `GET /dead-letters`.
//!
//! The gateway only exposes them: registrations live in
//! [`cmdr_processor::WebhookRegistry`] (the `_cmdr_processors` topic) and dead
//! letters in [`cmdr_processor::DeadLetters`] (`_cmdr_dead_letters`); the
//! webhook supervisor that runs the registered processors follows the same
//! registry, so a `PUT` here starts (or restarts) a runner and a `DELETE`
//! stops it. The wire protocol is `crates/cmdr-processor/WEBHOOKS.md`.
//!
//! Resource shapes (an HTTP boundary format, version 1):
//! a processor is `{"name", "actions", "url", "group", "links"}`; a dead letter
//! is `{"position", "processor", "topic", "partition", "offset", "input",
//! "last_error", "attempts", "timestamp", "links"}`.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cmdr_contract::{Violation, COMMANDS_TOPIC};
use cmdr_processor::dead_letter::{StoredDeadLetter, MAX_DEAD_LETTER_PAGE};
use cmdr_processor::webhook::registry::{redacted_url, validate_name};
use cmdr_processor::webhook::runner::group_name;
use cmdr_processor::webhook::RegistryError;
use cmdr_processor::WebhookRegistration;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::PathParam;
use crate::negotiate::Negotiated;
use crate::state::AppState;

/// Default page size of `GET /dead-letters`.
pub const DEFAULT_DEAD_LETTER_LIMIT: usize = 100;

/// Routes of this module.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/processors", get(list))
        .route("/processors/{name}", get(read).put(put).delete(delete))
        .route("/dead-letters", get(dead_letters))
}

/// The processor resource.
fn processor_json(name: &str, r: &WebhookRegistration) -> Value {
    json!({
        "name": name,
        "actions": r.actions,
        // Credentials in the URL and the secret itself are never shown.
        "url": redacted_url(&r.url),
        "signed": r.secret.is_some(),
        "group": group_name(name, &r.actions),
        "links": {
            "self": format!("/processors/{name}"),
            "dead_letters": format!("/dead-letters?processor={name}"),
        },
    })
}

async fn list(State(state): State<AppState>, neg: Negotiated) -> ApiResult<Response> {
    let all = state.inner.webhooks.list().await?;
    let items: Vec<Value> = all.iter().map(|(n, r)| processor_json(n, r)).collect();
    Ok(neg.render("Processors", json!({ "items": items })))
}

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound(format!("no processor is registered as {name:?}"))
}

async fn read(
    State(state): State<AppState>,
    PathParam(name): PathParam,
    neg: Negotiated,
) -> ApiResult<Response> {
    let registration = state
        .inner
        .webhooks
        .get(&name)
        .await?
        .ok_or_else(|| unknown(&name))?;
    Ok(neg.render(
        &format!("Processor {name}"),
        processor_json(&name, &registration),
    ))
}

/// Registers or replaces a processor: `201` when new, `200` when it replaced
/// one (or was identical, in which case nothing is written).
async fn put(
    State(state): State<AppState>,
    PathParam(name): PathParam,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    crate::intake::require_json(&headers)?;
    let body = crate::body::read_body(&headers, body, &state.inner.config).await?;
    let value: Value = crate::body::exact_json(&body)?
        .map_err(|violation| ApiError::InvalidRegistration(vec![violation]))?;
    let mut violations: Vec<Violation> = validate_name(&name).err().into_iter().collect();
    let registration = match WebhookRegistration::from_value(value) {
        Ok(r) => Some(r),
        Err(v) => {
            violations.extend(v.0);
            None
        }
    };
    let Some(registration) = registration.filter(|_| violations.is_empty()) else {
        return Err(ApiError::InvalidRegistration(violations));
    };
    let webhooks = &state.inner.webhooks;
    let previous = webhooks.get(&name).await?;
    if previous.as_ref() != Some(&registration) {
        let refused = |e| match e {
            RegistryError::Invalid(v) => ApiError::InvalidRegistration(v.0),
            RegistryError::Processor(e) => e.into(),
        };
        // A registration that would be refused is told so (422) before a
        // short disk is (507).
        webhooks
            .check(&name, &registration)
            .await
            .map_err(refused)?;
        state.check_disk_space(body.len()).await?;
        webhooks
            .put(&name, registration.clone())
            .await
            .map_err(refused)?;
    }
    let status = if previous.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        [(header::LOCATION, format!("/processors/{name}"))],
        axum::Json(processor_json(&name, &registration)),
    )
        .into_response())
}

async fn delete(State(state): State<AppState>, PathParam(name): PathParam) -> ApiResult<Response> {
    if validate_name(&name).is_err() || state.inner.webhooks.get(&name).await?.is_none() {
        return Err(unknown(&name));
    }
    state.check_disk_space(name.len()).await?;
    if !state.inner.webhooks.delete(&name).await? {
        return Err(unknown(&name));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The dead letter resource, with a link to the command it was about.
fn dead_letter_json(d: &StoredDeadLetter) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
    let mut links = json!({"processor": format!("/processors/{}", d.letter.processor)});
    if let Some(id) = d.letter.input.get("id").and_then(Value::as_str) {
        links["input"] = json!(if d.letter.topic == COMMANDS_TOPIC {
            format!("/commands/{id}")
        } else {
            format!("/events/{id}")
        });
    }
    v["links"] = links;
    v
}

/// `GET /dead-letters?processor=&limit=&after=`: oldest first; `after` is the
/// `position` of the last dead letter already seen (the `next` link has it).
async fn dead_letters(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    neg: Negotiated,
) -> ApiResult<Response> {
    let pairs = crate::extract::query_pairs(raw.as_deref())?;
    let (mut processor, mut after, mut limit) = (None, None, DEFAULT_DEAD_LETTER_LIMIT);
    for (k, v) in &pairs {
        match k.as_str() {
            "processor" => processor = Some(crate::extract::name_filter("processor", v)?),
            "after" => {
                after = Some(v.parse::<u64>().map_err(|_| {
                    ApiError::parameter(
                        "after",
                        format!("after must be a position (a whole number), not {v:?}"),
                    )
                })?)
            }
            "limit" => limit = crate::extract::limit_param(v, MAX_DEAD_LETTER_PAGE)?,
            other => {
                return Err(ApiError::parameter(
                    other,
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    let from = after.map_or(0, |a| a.saturating_add(1));
    let page = state
        .inner
        .dead_letters
        .list(processor.as_deref(), from, limit)
        .await?;
    // A full page may have more after it; a short one reached the end.
    let next = match page.items.last() {
        Some(last) if page.items.len() >= limit => {
            let mut qs: Vec<(&str, String)> = pairs
                .iter()
                .filter(|(k, _)| k != "after")
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            qs.push(("after", last.position.to_string()));
            Value::String(format!(
                "/dead-letters?{}",
                serde_urlencoded::to_string(&qs).unwrap_or_default()
            ))
        }
        _ => Value::Null,
    };
    let items: Vec<Value> = page.items.iter().map(dead_letter_json).collect();
    Ok(neg.render("Dead letters", json!({ "items": items, "next": next })))
}

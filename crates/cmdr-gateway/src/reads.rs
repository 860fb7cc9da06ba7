//! Reads from the index: `GET /commands/{id}`, `GET /commands`,
//! `GET /events/{id}`, `GET /events`, `GET /streams/{key}`.
//!
//! Listings take filters as query parameters (`action`, `key`, `status`,
//! `parent`, `root`, `since`, `until` in ms since the epoch), `order`
//! (`desc`, the default, or `asc`), `limit` (default 100, at most 1000) and
//! `after` (the cursor); they answer `{"items": [...], "next": link|null}`.
//! With `from` (a position) instead, a listing is in log order and answers
//! the `position` to go on from (see [`crate::log_order`]).
//! Unknown or invalid parameters are refused with 400.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use cmdr_contract::{CommandStatus, COMMANDS_TOPIC, EVENTS_TOPIC};
use cmdr_index::{Order, Query, MAX_LIMIT};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::extract::PathParam;
use crate::follow::{format_position, StartAt};
use crate::log_order;
use crate::negotiate::Negotiated;
use crate::state::AppState;
use crate::views::{event_json, CommandBody};

/// Routes of this module.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/commands", get(list_commands))
        .route("/commands/{id}", get(get_command))
        .route("/events", get(list_events))
        .route("/events/{id}", get(get_event))
        .route("/streams", get(get_stream_by_query))
        .route("/streams/{*key}", get(get_stream))
}

/// Which listing a query is for (commands accept `status`; events accept
/// `parent` and `root`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listing {
    Commands,
    Events,
}

fn parse_uuid(name: &str, v: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(v)
        .map_err(|_| ApiError::parameter(name, format!("{name} must be a UUID, not {v:?}")))
}

fn parse_ms(name: &str, v: &str) -> ApiResult<i64> {
    v.parse::<i64>().ok().filter(|t| *t >= 0).ok_or_else(|| {
        ApiError::parameter(
            name,
            format!("{name} must be milliseconds since the epoch, not {v:?}"),
        )
    })
}

/// Listing parameters as parsed.
struct Listed {
    /// The query of an id-ordered listing.
    q: Query,
    /// `from`: a listing in log order from this position (see [`log_order`]).
    from: Option<StartAt>,
    /// The raw pairs, to build the `next` link.
    pairs: Vec<(String, String)>,
}

/// Parses listing parameters.
fn parse_query(raw: Option<&str>, listing: Listing) -> ApiResult<Listed> {
    let pairs = crate::extract::query_pairs(raw)?;
    let mut q = Query::default();
    let mut from = None;
    for (k, v) in &pairs {
        match k.as_str() {
            "from" => from = Some(crate::follow::parse_from(v)?),
            "action" => q.action = Some(crate::extract::action_filter(v)?),
            "key" => q.key = Some(crate::extract::key_filter(v)?),
            "status" if listing == Listing::Commands => {
                q.status = Some(CommandStatus::parse(v).ok_or_else(|| {
                    ApiError::parameter(
                        "status",
                        format!("status must be pending, accepted or rejected, not {v:?}"),
                    )
                })?)
            }
            "parent" if listing == Listing::Events => q.parent = Some(parse_uuid("parent", v)?),
            "root" if listing == Listing::Events => q.root = Some(parse_uuid("root", v)?),
            "since" => q.since = Some(parse_ms("since", v)?),
            "until" => q.until = Some(parse_ms("until", v)?),
            "after" => q.after = Some(parse_uuid("after", v)?),
            "order" => {
                q.order = match v.as_str() {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    _ => {
                        return Err(ApiError::parameter(
                            "order",
                            format!("order must be asc or desc, not {v:?}"),
                        ))
                    }
                }
            }
            "limit" => q.limit = Some(crate::extract::limit_param(v, MAX_LIMIT)?),
            other => {
                return Err(ApiError::parameter(
                    other,
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    if from.is_some() {
        // A listing from a position is in log order and goes on from the
        // position it answers: these have no meaning there.
        for name in ["after", "order", "since", "until"] {
            if pairs.iter().any(|(k, _)| k == name) {
                return Err(ApiError::parameter(
                    name,
                    format!(
                        "{name} cannot be combined with from: a listing from a position \
                         is in log order and goes on from the position it answers"
                    ),
                ));
            }
        }
        if q.status.is_some() {
            // A pending command skipped now would never be listed once
            // settled: the position has gone past it.
            return Err(ApiError::parameter(
                "status",
                "status cannot be combined with from: a status changes after the \
                 position has gone past the command (read each command's status in \
                 the items, or list by status without from)",
            ));
        }
    }
    Ok(Listed { q, from, pairs })
}

/// The page of a listing in log order, as JSON: `items`, the `position`
/// to list from next, and a `next` link when more is indexed already.
async fn log_order_page(
    state: &AppState,
    path: &str,
    topic: log_order::Topic,
    listed: &Listed,
    from: &StartAt,
) -> ApiResult<Value> {
    let q = &listed.q;
    let filter = log_order::LogFilter {
        action: q.action.clone(),
        key: q.key.clone(),
        parent: q.parent,
        root: q.root,
    };
    let page = log_order::page(state, topic, from, &filter, q.effective_limit()).await?;
    let position = format_position(&page.position);
    let next = page.more.then(|| {
        let mut kept: Vec<(&str, &str)> = listed
            .pairs
            .iter()
            .filter(|(k, _)| k != "from")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        kept.push(("from", &position));
        format!(
            "{path}?{}",
            serde_urlencoded::to_string(&kept).unwrap_or_default()
        )
    });
    Ok(json!({"items": page.items, "position": position, "next": next}))
}

/// The link to the page after `next`, keeping the other parameters.
fn next_link(path: &str, pairs: &[(String, String)], next: Option<Uuid>) -> Value {
    let Some(next) = next else { return Value::Null };
    let mut kept: Vec<(&str, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "after")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    kept.push(("after", next.to_string()));
    let qs = serde_urlencoded::to_string(&kept).unwrap_or_default();
    Value::String(format!("{path}?{qs}"))
}

/// Read-your-writes: `lookup`, and on a miss, again once the index has
/// caught up (within the configured wait) with the end the log has now, so
/// that a just-posted id is found. A miss after the index failed to catch
/// up in time says nothing (the id may be in the part of the log not
/// indexed yet): that is a 503 to retry, never `not_found`.
async fn find<T>(
    state: &AppState,
    topic: &str,
    lookup: impl Fn() -> ApiResult<Option<T>>,
    not_found: impl FnOnce() -> ApiError,
) -> ApiResult<T> {
    if let Some(found) = lookup()? {
        return Ok(found);
    }
    let caught_up = index_caught_up(state, topic).await?;
    match lookup()? {
        Some(found) => Ok(found),
        None if caught_up => Err(not_found()),
        None => Err(ApiError::Unavailable(format!(
            "not found yet, but the index is behind the log by more than it \
             could index in {} ms: retry",
            state.inner.config.index_wait.as_millis()
        ))),
    }
}

/// Waits (at most the configured index wait in all) until the index has
/// caught up with every partition of `topic` as the log ends now; whether
/// it did.
pub(crate) async fn index_caught_up(state: &AppState, topic: &str) -> ApiResult<bool> {
    let info = state.inner.log.topic(topic).await?;
    let deadline = tokio::time::Instant::now() + state.inner.config.index_wait;
    for p in info.partitions {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !state
            .inner
            .index
            .wait_indexed(topic, p.partition, p.end_offset, left)
            .await
        {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn get_command(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    neg: Negotiated,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound(format!("no command with id {id:?}"));
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let index = &state.inner.index;
    let lookup = || Ok(index.command_tree(uuid)?);
    let tree = find(&state, COMMANDS_TOPIC, lookup, not_found).await?;
    Ok(neg.render(
        &format!("Command {uuid}"),
        CommandBody::with_tree(&tree).to_value(),
    ))
}

async fn get_event(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    neg: Negotiated,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound(format!("no event with id {id:?}"));
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let index = &state.inner.index;
    let lookup = || Ok(index.event(uuid)?);
    let view = find(&state, EVENTS_TOPIC, lookup, not_found).await?;
    Ok(neg.render(&format!("Event {uuid}"), event_json(&view)))
}

async fn list_commands(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    neg: Negotiated,
) -> ApiResult<Response> {
    let listed = parse_query(raw.as_deref(), Listing::Commands)?;
    if let Some(from) = &listed.from {
        let topic = log_order::Topic::Commands;
        let page = log_order_page(&state, "/commands", topic, &listed, from).await?;
        return Ok(neg.render("Commands", page));
    }
    let Listed { q, pairs, .. } = listed;
    let page = state.inner.index.list_commands(&q)?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|v| CommandBody::with_events(v, &[]).to_value())
        .collect();
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut v| {
            if let Value::Object(m) = &mut v {
                m.remove("events");
            }
            v
        })
        .collect();
    Ok(neg.render(
        "Commands",
        json!({"items": items, "next": next_link("/commands", &pairs, page.next)}),
    ))
}

async fn list_events(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    neg: Negotiated,
) -> ApiResult<Response> {
    let listed = parse_query(raw.as_deref(), Listing::Events)?;
    if let Some(from) = &listed.from {
        let topic = log_order::Topic::Events;
        let page = log_order_page(&state, "/events", topic, &listed, from).await?;
        return Ok(neg.render("Events", page));
    }
    let Listed { q, pairs, .. } = listed;
    let page = state.inner.index.list_events(&q)?;
    let items: Vec<Value> = page.items.iter().map(event_json).collect();
    Ok(neg.render(
        "Events",
        json!({"items": items, "next": next_link("/events", &pairs, page.next)}),
    ))
}

async fn get_stream(
    State(state): State<AppState>,
    PathParam(key): PathParam,
    RawQuery(raw): RawQuery,
    neg: Negotiated,
) -> ApiResult<Response> {
    stream(&state, Some(key), raw.as_deref(), neg)
}

/// `GET /streams?key=K`: the same as `/streams/K`, for keys no path can
/// carry (`.` and `..`, which clients resolve away as dot segments).
async fn get_stream_by_query(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    neg: Negotiated,
) -> ApiResult<Response> {
    stream(&state, None, raw.as_deref(), neg)
}

/// A page of one key's stream; the key from the path, or else from the
/// query's `key`.
fn stream(
    state: &AppState,
    key: Option<String>,
    raw: Option<&str>,
    neg: Negotiated,
) -> ApiResult<Response> {
    let pairs = crate::extract::query_pairs(raw)?;
    let in_path = key.is_some();
    // A key from the path is held to what keys are, as one from the query.
    let key = key.map(|k| crate::extract::key_filter(&k)).transpose()?;
    let (mut key, mut after, mut limit) = (key, None, None);
    for (k, v) in &pairs {
        match k.as_str() {
            "key" if !in_path => key = Some(crate::extract::key_filter(v)?),
            "after" => {
                after = Some(v.parse::<u64>().map_err(|_| {
                    ApiError::parameter(
                        "after",
                        format!("after must be an offset (a whole number), not {v:?}"),
                    )
                })?)
            }
            "limit" => limit = Some(crate::extract::limit_param(v, MAX_LIMIT)?),
            other => {
                return Err(ApiError::parameter(
                    other,
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    let key = key.ok_or_else(|| ApiError::parameter("key", "key is required"))?;
    let page = state.inner.index.stream(&key, after, limit)?;
    let next = page.next.map(|n| {
        let mut qs = vec![("after", n.to_string())];
        if let Some(l) = limit {
            qs.push(("limit", l.to_string()));
        }
        let path = crate::paths::stream(&key);
        let joint = if path.contains('?') { '&' } else { '?' };
        format!(
            "{path}{joint}{}",
            serde_urlencoded::to_string(&qs).unwrap_or_default()
        )
    });
    let items: Vec<Value> = page.items.iter().map(event_json).collect();
    Ok(neg.render(
        &format!("Stream {key}"),
        json!({"key": key, "items": items, "next": next}),
    ))
}

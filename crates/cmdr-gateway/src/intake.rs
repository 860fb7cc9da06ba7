//! `POST /commands`: read and check the body, validate against the action's
//! schema, apply the `Idempotency-Key`, append to the commands topic, and
//! answer at once (202) or after the outcome (`?sync=true`, `Prefer: wait=N`).
//!
//! Nothing is appended unless every check passed. Waiting holds no thread:
//! it awaits an [`cmdr_index::OutcomeWaiter`] with a timeout; on timeout the
//! command stays in the log and its status can be read later.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use cmdr_contract::{
    header as log_header, Command, CommandRequest, CommandStatus, FromJsonError, Meta,
    TraceContext, COMMANDS_TOPIC, EVENTS_TOPIC,
};
use cmdr_log::Record;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::idempotency::{request_hash, validate_key, KeyGuard};
use crate::negotiate::Negotiated;
use crate::state::AppState;
use crate::views::CommandBody;

/// Routes: `POST /commands`.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/commands", post(post_command))
}

/// The body's media type, as far as intake cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
}

fn body_kind(headers: &HeaderMap) -> ApiResult<BodyKind> {
    // A coded body (gzip...) would be read as if it were plain: refused,
    // as RFC 9110 says of a coding the server does not take.
    for coding in headers.get_all(header::CONTENT_ENCODING) {
        let coding = coding.to_str().unwrap_or("?").trim();
        if !coding.eq_ignore_ascii_case("identity") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {coding:?} is not supported: send the body as it is"
            )));
        }
    }
    if headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .nth(1)
        .is_some()
    {
        // Which one a proxy before cmdr read is anyone's guess.
        return Err(ApiError::BadRequest(
            "Content-Type given more than once".into(),
        ));
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type is required (application/json or application/x-www-form-urlencoded)"
                .into(),
        ));
    };
    let ct = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    // Media types are case-insensitive; compared without a lowercased copy.
    let is = |expected: &str| ct.eq_ignore_ascii_case(expected);
    let (prefix, suffix) = ("application/", "+json");
    let structured_json = ct.len() > prefix.len() + suffix.len()
        && ct
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        && ct
            .get(ct.len() - suffix.len()..)
            .is_some_and(|s| s.eq_ignore_ascii_case(suffix));
    if is("application/json") || structured_json {
        Ok(BodyKind::Json)
    } else if is("application/x-www-form-urlencoded") {
        Ok(BodyKind::Form)
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "unsupported Content-Type {ct:?} (use application/json or application/x-www-form-urlencoded)"
        )))
    }
}

/// Refuses a body that is not JSON.
///
/// # Errors
/// [`ApiError::UnsupportedMediaType`].
pub(crate) fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    match body_kind(headers)? {
        BodyKind::Json => Ok(()),
        BodyKind::Form => Err(ApiError::UnsupportedMediaType(
            "this resource takes application/json".into(),
        )),
    }
}

/// The fields of a form body, decoded strictly (see
/// [`crate::extract::decode_urlencoded`]).
fn form_pairs(body: &[u8]) -> ApiResult<Vec<(String, String)>> {
    crate::extract::decode_urlencoded(body).map_err(|_| {
        ApiError::MalformedBody("a form field is not UTF-8 once percent-decoded".into())
    })
}

/// Decodes a form post: `action`, `key`, and either `data` (a JSON object as
/// text) or `data.NAME` fields (string values). A field given twice is
/// refused: which one counts would depend on who reads the form.
fn form_to_value(body: &[u8]) -> ApiResult<Value> {
    // `curl -d '{"action": ...}'` sends JSON labelled as a form: read as
    // one, it would be refused for a missing `action` and a field named
    // after the whole body. Form encoders (browsers too) never send a raw
    // `{`: they percent-encode it.
    if body.trim_ascii_start().starts_with(b"{") {
        return Err(ApiError::UnsupportedMediaType(
            "the body is JSON but its Content-Type says application/x-www-form-urlencoded \
             (what curl -d sends unless told otherwise): send Content-Type: application/json"
                .into(),
        ));
    }
    let pairs = form_pairs(body)?;
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &pairs {
        if !seen.insert(k.as_str()) {
            let pointer = match k.strip_prefix("data.") {
                Some(field) => format!("/data/{}", cmdr_contract::escape_pointer(field)),
                None => format!("/{}", cmdr_contract::escape_pointer(k)),
            };
            return Err(ApiError::Validation(vec![cmdr_contract::Violation::new(
                pointer,
                format!("form field {k:?} given twice"),
            )]));
        }
    }
    let mut obj = Map::new();
    let mut data = Map::new();
    for (k, v) in pairs {
        if k == "data" {
            // As for a JSON body: stored as sent, or refused (a number past
            // a double, which serde cannot read, with its pointer too).
            let exact = cmdr_contract::exact::check(v.as_bytes()).map_err(|e| {
                ApiError::Validation(vec![cmdr_contract::Violation::new(
                    format!("/data{}", e.pointer),
                    e.message,
                )])
            });
            let parsed: Value = match serde_json::from_str(&v) {
                Ok(parsed) => parsed,
                Err(e) => {
                    if cmdr_contract::exact::is_out_of_range(&e) {
                        exact?;
                    }
                    return Err(ApiError::MalformedBody(format!(
                        "form field data is not JSON: {e}"
                    )));
                }
            };
            exact?;
            obj.insert(k, parsed);
        } else if let Some(field) = k.strip_prefix("data.") {
            data.insert(field.to_string(), Value::String(v));
        } else if k == "key" && v.is_empty() {
            // An empty form field means "no key".
        } else {
            obj.insert(k, Value::String(v));
        }
    }
    if !data.is_empty() && obj.contains_key("data") {
        return Err(ApiError::Validation(vec![cmdr_contract::Violation::new(
            "/data",
            "give data either as one JSON field `data` or as `data.NAME` fields, not both",
        )]));
    }
    obj.entry("data").or_insert(Value::Object(data));
    Ok(Value::Object(obj))
}

/// How long the client wants to wait for the outcome, if at all.
#[derive(Debug, Clone, Copy, Default)]
struct Wait {
    /// The wait, clamped to the configured maximum.
    duration: Option<Duration>,
    /// Whether it was asked for with `Prefer: wait=N` (answered with
    /// `Preference-Applied`).
    preferred: bool,
}

/// The seconds of a `Prefer: wait=N` header (RFC 7240: the name in any
/// case, the value a token or a quoted string, blanks around `=`). As RFC
/// 7240 asks, only the first `wait` given counts, and one that is not a
/// number of seconds is ignored, not refused (the answer then has no
/// `Preference-Applied`); other preferences are ignored.
fn preferred_wait(headers: &HeaderMap) -> Option<u64> {
    /// The parts of `s` between the `sep`s outside double quotes.
    fn split_unquoted(s: &str, sep: char) -> impl Iterator<Item = &str> {
        let mut quoted = false;
        let mut escaped = false;
        s.split(move |c: char| {
            if escaped {
                escaped = false;
            } else if quoted && c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = !quoted;
            } else if c == sep && !quoted {
                return true;
            }
            false
        })
    }
    for prefer in headers.get_all("prefer") {
        let Ok(prefer) = prefer.to_str() else {
            continue;
        };
        // Preferences are comma separated; what follows a `;` is a
        // parameter of its preference (`respond-async; wait=5` says no
        // wait), not a preference. Neither separates inside a quoted value.
        for pref in split_unquoted(prefer, ',') {
            let pref = split_unquoted(pref, ';').next().unwrap_or_default();
            let (name, value) = pref.split_once('=').unwrap_or((pref, ""));
            if !name.trim().eq_ignore_ascii_case("wait") {
                continue;
            }
            let value = value.trim();
            let n = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            // Digits past u64 are a long wait all the same: clamped later.
            let digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            return n.parse().ok().or(digits.then_some(u64::MAX));
        }
    }
    None
}

fn requested_wait(state: &AppState, query: Option<&str>, headers: &HeaderMap) -> ApiResult<Wait> {
    let config = &state.inner.config;
    let mut wait = None;
    let mut preferred = false;
    if let Some(q) = query {
        let pairs = crate::extract::query_pairs(Some(q))?;
        for (k, v) in pairs {
            match (k.as_str(), v.as_str()) {
                ("sync", "true" | "1" | "") => wait = Some(config.default_wait),
                ("sync", "false" | "0") => {}
                ("sync", other) => {
                    return Err(ApiError::parameter(
                        "sync",
                        format!("sync must be true or false, not {other:?}"),
                    ))
                }
                (other, _) => {
                    return Err(ApiError::parameter(
                        other,
                        format!("unknown query parameter {other:?}"),
                    ))
                }
            }
        }
    }
    if let Some(secs) = preferred_wait(headers) {
        wait = Some(Duration::from_secs(secs));
        preferred = true;
    }
    Ok(Wait {
        duration: wait.map(|w| w.min(config.max_wait)),
        preferred,
    })
}

async fn post_command(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    neg: Negotiated,
    request: axum::extract::Request,
) -> Response {
    let res = match requested_wait(&state, query.as_deref(), request.headers()) {
        Ok(wait) => answer(&state, neg, wait, request).await,
        Err(e) => e.into_response(),
    };
    state.inner.metrics.answered(res.status().as_u16());
    if !res.status().is_success() {
        // A browser's form post gets its error as a page too.
        return Box::pin(crate::negotiate::problem_page(neg, res)).await;
    }
    res
}

/// The answer to a `POST /commands` asking for `wait`.
async fn answer(
    state: &AppState,
    neg: Negotiated,
    wait: Wait,
    request: axum::extract::Request,
) -> Response {
    let mut res = intake(state, neg, wait.duration, request)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    // RFC 7240: say which wait was applied (after clamping) when the answer
    // came from waiting: the outcome (201, 409; only waits produce them) or
    // a 202 after the wait ran out (marked by `respond_with`).
    let waited = matches!(res.status(), StatusCode::CREATED | StatusCode::CONFLICT)
        || res.extensions().get::<Waited>().is_some();
    if let (true, true, Some(d)) = (wait.preferred, waited, wait.duration) {
        if let Ok(v) = HeaderValue::from_str(&format!("wait={}", d.as_secs())) {
            res.headers_mut().insert("preference-applied", v);
        }
    }
    res
}

/// `POST /commands` once the wait is known: checks, appends, answers.
async fn intake(
    state: &AppState,
    neg: Negotiated,
    wait: Option<Duration>,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    // Taken apart rather than extracted as `HeaderMap`, which would clone it.
    let (parts, body) = request.into_parts();
    let principal = parts.extensions.get::<crate::auth::Principal>().cloned();
    let principal = principal
        .as_ref()
        .map_or(crate::auth::ANONYMOUS, |p| p.0.as_str());
    let headers = parts.headers;
    let kind = body_kind(&headers)?;
    if kind == BodyKind::Form {
        // A form post is not preflighted: without this, a page of any site
        // could send commands to a server without tokens.
        crate::cors::check_origin(&headers, state.inner.config.cors.as_ref())?;
    }
    let bytes = crate::body::read_body(&headers, body, &state.inner.config).await?;
    let request = match kind {
        BodyKind::Json => CommandRequest::from_json(&bytes).map_err(|e| match e {
            FromJsonError::Malformed(e) => ApiError::MalformedBody(format!("malformed JSON: {e}")),
            FromJsonError::Invalid(v) => ApiError::Validation(v.0),
        })?,
        BodyKind::Form => CommandRequest::from_value(form_to_value(&bytes)?)
            .map_err(|v| ApiError::Validation(v.0))?,
    };
    // Validate the data object (moved, not copied) against the action's schema.
    let data = state
        .inner
        .schemas
        .validate(&request.action, Value::Object(request.data))
        .await?;
    let Value::Object(data) = data else {
        return Err(ApiError::Internal("data changed shape".into()));
    };
    let request = CommandRequest { data, ..request };

    let mut keys = headers.get_all("idempotency-key").iter();
    let idempotency_key = match (keys.next(), keys.next()) {
        (Some(v), None) => Some(validate_key(v.as_bytes())?.to_string()),
        (None, _) => None,
        // Which one is the key would depend on who reads the request (a
        // proxy may join them into one).
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "Idempotency-Key given more than once".into(),
            ))
        }
    };
    let trace = trace_context(&headers);
    let Some(idem) = idempotency_key else {
        let command = new_command(request, principal, trace.as_ref())?;
        let waiter = wait.and_then(|_| state.inner.index.wait_for_outcome(command.id));
        let json = Bytes::from(command.to_json());
        append(state, &command, json.clone(), None).await?;
        return respond(state, neg, command, Some(&json), waiter, wait).await;
    };

    // Boxed: this path's future is large, and the common one should not
    // carry (and copy) it on every request.
    Box::pin(intake_idempotent(
        state,
        neg,
        wait,
        request,
        principal,
        idem,
        trace.as_ref(),
    ))
    .await
}

/// The rest of [`intake`] for a command sent with an `Idempotency-Key`.
/// Header on the answer to a retry whose `Idempotency-Key` was bound
/// already: the command is the first request's, nothing was appended.
const IDEMPOTENT_REPLAYED: header::HeaderName =
    header::HeaderName::from_static("idempotent-replayed");

async fn intake_idempotent(
    state: &AppState,
    neg: Negotiated,
    wait: Option<Duration>,
    request: CommandRequest,
    principal: &str,
    idem: String,
    trace: Option<&TraceContext>,
) -> ApiResult<Response> {
    let hash = request_hash(&request, principal);
    let held = state.inner.idempotency.lock(&idem).await?;
    if let Some((id, stored)) = bound_command(state, &idem).await? {
        if stored != hash.as_bytes() {
            let first_by = state.inner.index.command(id)?.and_then(|view| {
                view.command
                    .meta
                    .get("principal")
                    .and_then(|p| p.as_str())
                    .map(str::to_owned)
            });
            return Err(ApiError::IdempotencyKeyReused {
                key: idem,
                by_another_principal: first_by.is_some_and(|p| p != principal),
            });
        }
        let waiter = wait.and_then(|_| state.inner.index.wait_for_outcome(id));
        let Some(view) = state.inner.index.command(id)? else {
            return Err(ApiError::Internal(format!(
                "idempotency record points to unknown command {id}"
            )));
        };
        drop(held);
        let mut answer = if wait.is_some() && view.status != CommandStatus::Pending {
            settled(state, neg, view.command.id).await?
        } else {
            // The first answer (202), with the status as it is now.
            respond_with(state, neg, view.command, view.status, None, waiter, wait).await?
        };
        // Said, as payment APIs do, so that a client can tell a replay
        // from the first acceptance.
        answer
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        return Ok(answer);
    }
    let command = new_command(request, principal, trace)?;
    let waiter = wait.and_then(|_| state.inner.index.wait_for_outcome(command.id));
    let json = Bytes::from(command.to_json());
    // In a task of its own, which holds the key: a request dropped midway
    // (its client gone) still keeps retries waiting until the command is
    // appended and indexed, or known not to be.
    let task = tokio::spawn(append_idempotent(
        state.clone(),
        held,
        command.clone(),
        json.clone(),
        idem,
        hash,
    ));
    task.await
        .map_err(|e| ApiError::Internal(format!("idempotent append: {e}")))??;
    respond(state, neg, command, Some(&json), waiter, wait).await
}

/// The command an `Idempotency-Key` is bound to, with its request hash. When
/// the index does not know the key and may not know every bound key yet
/// (see [`index_knows_every_key`]), it first catches up with the log:
/// answering "unbound" then would append a second command.
async fn bound_command(state: &AppState, key: &str) -> ApiResult<Option<(uuid::Uuid, Vec<u8>)>> {
    let index = &state.inner.index;
    if let Some(found) = index.idempotency(key)? {
        return Ok(Some(found));
    }
    if index_knows_every_key(state) {
        return Ok(None);
    }
    if !crate::reads::index_caught_up(state, COMMANDS_TOPIC).await? {
        return Err(ApiError::Unavailable(
            "the index is catching up with the log; retry with the same Idempotency-Key".into(),
        ));
    }
    Ok(index.idempotency(key)?)
}

/// Whether the index holds every key bound so far, so that a key it does not
/// know is unbound: it has caught up with the log as it was at start-up (keys
/// bound before), and it is past every idempotent command whose key was
/// released before it was indexed. Every other key bound since was indexed
/// before its lock was released (see [`append_idempotent`]).
fn index_knows_every_key(state: &AppState) -> bool {
    let index = &state.inner.index;
    if !index.is_caught_up() {
        return false;
    }
    let unindexed = state
        .inner
        .unindexed_keys
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    unindexed
        .iter()
        .all(|(&partition, &offset)| index.position(COMMANDS_TOPIC, partition) > offset)
}

/// Appends an idempotent command and holds its key (`held`) until the index
/// knows it, so that a retry finds the first command.
async fn append_idempotent(
    state: AppState,
    held: KeyGuard,
    command: Command,
    json: Bytes,
    key: String,
    hash: String,
) -> ApiResult<()> {
    let (partition, offset) = append(&state, &command, json, Some((&key, &hash))).await?;
    let index_wait = state.inner.config.index_wait;
    let indexed = state
        .inner
        .index
        .wait_indexed(COMMANDS_TOPIC, partition, offset + 1, index_wait)
        .await;
    if !indexed {
        // Released anyway, noted first: until the index passes this command,
        // lookups of unknown keys catch the index up (see `bound_command`).
        let mut unindexed = state
            .inner
            .unindexed_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let highest = unindexed.entry(partition).or_insert(offset);
        *highest = (*highest).max(offset);
        tracing::warn!(key = %key, "idempotent command not indexed within the index wait");
    }
    drop(held);
    Ok(())
}

/// The client's W3C trace context: one `traceparent` header, well formed,
/// and the `tracestate` headers joined; `None` otherwise (ignored, never
/// refused: see [`cmdr_contract::trace_context`]).
fn trace_context(headers: &HeaderMap) -> Option<TraceContext> {
    let mut parents = headers
        .get_all(cmdr_contract::trace_context::TRACEPARENT)
        .iter();
    let parent = match (parents.next(), parents.next()) {
        (Some(p), None) => p.to_str().ok()?,
        _ => return None,
    };
    // A `tracestate` that is not text is dropped, the `traceparent` kept.
    let mut state = Some(String::new());
    for v in headers.get_all(cmdr_contract::trace_context::TRACESTATE) {
        match (v.to_str().map(str::trim), state.as_mut()) {
            (Ok(""), _) | (_, None) => {}
            (Ok(v), Some(s)) => {
                if !s.is_empty() {
                    s.push(',');
                }
                s.push_str(v);
            }
            (Err(_), Some(_)) => state = None,
        }
    }
    TraceContext::parse(parent, state.as_deref().filter(|s| !s.is_empty()))
}

/// The command for `request`, sent by `principal` (`meta.principal`)
/// within the client's trace `trace` (`meta.traceparent`, `meta.tracestate`).
fn new_command(
    request: CommandRequest,
    principal: &str,
    trace: Option<&TraceContext>,
) -> ApiResult<Command> {
    let mut meta = Meta::new();
    meta.insert("principal".into(), Value::String(principal.to_string()));
    if let Some(trace) = trace {
        trace.record(&mut meta);
    }
    Command::from_request(request, cmdr_contract::now_ms(), meta)
        .map_err(|v| ApiError::Validation(v.0))
}

/// Appends the command (`json`: [`Command::to_json`]); returns its
/// partition and offset.
async fn append(
    state: &AppState,
    command: &Command,
    json: Bytes,
    idem: Option<(&str, &str)>,
) -> ApiResult<(u32, u64)> {
    // Twice: the log's record, and the index's copy of the command.
    state.check_disk_space(json.len().saturating_mul(2)).await?;
    let mut record = Record::new(command.key.clone(), json)
        .with_header(log_header::ACTION, command.action.clone())
        .with_header(log_header::CONTENT_TYPE, &b"application/json"[..])
        .with_timestamp(command.timestamp);
    if let Some((key, hash)) = idem {
        record = record
            .with_header(log_header::IDEMPOTENCY_KEY, key.to_string())
            .with_header(log_header::IDEMPOTENCY_HASH, hash.to_string());
    }
    let appended = match state.inner.log.append(COMMANDS_TOPIC, vec![record]).await {
        Ok(appended) => appended,
        Err(e) => {
            state.recheck_disk_space();
            return Err(e.into());
        }
    };
    let at = appended
        .first()
        .ok_or_else(|| ApiError::Internal("append returned no position".into()))?;
    state.inner.metrics.appended.inc();
    hold_for_index(state, at.partition, at.offset).await;
    Ok((at.partition, at.offset))
}

/// Backpressure: when the index is more than
/// [`crate::GatewayConfig::max_index_lag`] commands behind the one just
/// appended at `offset` of `partition`, waits (at most the index wait)
/// until it is back within that reach. The command is on disk already; only
/// its answer waits, so a writer that waits for its answers goes at the
/// index's pace instead of leaving it ever further behind (a read of a
/// just-acknowledged id would then time out).
async fn hold_for_index(state: &AppState, partition: u32, offset: u64) {
    let config = &state.inner.config;
    let index = &state.inner.index;
    let behind = offset.saturating_sub(index.position(COMMANDS_TOPIC, partition));
    if behind <= config.max_index_lag {
        return;
    }
    state.inner.metrics.held_for_index.inc();
    let within = offset - config.max_index_lag;
    index
        .wait_indexed(COMMANDS_TOPIC, partition, within, config.index_wait)
        .await;
}

/// [`respond_with`] for a command just appended (pending), whose log value
/// is `json`.
async fn respond(
    state: &AppState,
    neg: Negotiated,
    command: Command,
    json: Option<&[u8]>,
    waiter: Option<cmdr_index::OutcomeWaiter>,
    wait: Option<Duration>,
) -> ApiResult<Response> {
    respond_with(
        state,
        neg,
        command,
        CommandStatus::Pending,
        json,
        waiter,
        wait,
    )
    .await
}

/// The JSON of [`CommandBody::new`] (no outcome, no events) built from the
/// command's log value `json` (the same fields in the same order), without
/// serialising the command a second time. `None` if `json` is not an object.
fn body_from_log_json(json: &[u8], id: uuid::Uuid, status: CommandStatus) -> Option<Vec<u8>> {
    let head = json.strip_suffix(b"}")?;
    if !head.starts_with(b"{") || head.len() < 2 {
        return None;
    }
    let mut out = Vec::with_capacity(json.len() + 140);
    out.extend_from_slice(head);
    let mut id_buf = uuid::Uuid::encode_buffer();
    let id = id.hyphenated().encode_lower(&mut id_buf);
    for part in [
        ",\"status\":\"",
        status.as_str(),
        "\",\"links\":{\"self\":\"/commands/",
        id,
        "\",\"events\":\"/events?root=",
        id,
        "\"}}",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    Some(out)
}

/// Answers for a command that is in the log: after waiting for its outcome
/// when asked, else 202 with `status` (pending unless a retry found more).
/// `json`, when given, is the command's log value (reused for the body).
async fn respond_with(
    state: &AppState,
    neg: Negotiated,
    command: Command,
    status: CommandStatus,
    json: Option<&[u8]>,
    waiter: Option<cmdr_index::OutcomeWaiter>,
    wait: Option<Duration>,
) -> ApiResult<Response> {
    let waited = waiter.is_some() && wait.is_some();
    if let (Some(waiter), Some(wait)) = (waiter, wait) {
        // Boxed, like the idempotent path: only waits pay for its size.
        match Box::pin(outcome_within(state, neg, command.id, waiter, wait)).await {
            Ok(Some(res)) => return Ok(res),
            Ok(None) => {}
            Err(e @ ApiError::Rejected { .. }) => return Err(e),
            // The command is in the log: an error now would have a client
            // without an Idempotency-Key retry and append it twice. It is
            // answered pending, as if the wait had run out.
            Err(e) => {
                tracing::warn!(id = %command.id, error = %e,
                    "could not read the outcome of an appended command; answered pending");
            }
        }
    }
    let mut res = if neg.html {
        let body = CommandBody::new(&command, status);
        axum::response::Html(crate::html::page(
            "Command accepted for processing",
            &body.to_value(),
        ))
        .into_response()
    } else {
        let bytes = match json.and_then(|j| body_from_log_json(j, command.id, status)) {
            Some(bytes) => bytes,
            None => serde_json::to_vec(&CommandBody::new(&command, status))
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        };
        let mut r = bytes.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    *res.status_mut() = StatusCode::ACCEPTED;
    res.headers_mut()
        .insert(header::LOCATION, command_location(command.id));
    if waited {
        res.extensions_mut().insert(Waited);
    }
    Ok(res)
}

/// Longest a sync wait goes on once a shutdown has begun (and at most half
/// the drain timeout): the processors run until requests are drained, so an
/// outcome due in a moment still reaches its client, and a wait for one that
/// is not answers `202` before the drain would cut its connection.
pub const SHUTDOWN_WAIT_GRACE: Duration = Duration::from_secs(5);

/// The answer for a settled command (201, or the 409 rejection as an
/// error) once its outcome is indexed within `wait`; `None` if it is not.
async fn outcome_within(
    state: &AppState,
    neg: Negotiated,
    id: uuid::Uuid,
    mut waiter: cmdr_index::OutcomeWaiter,
    wait: Duration,
) -> ApiResult<Option<Response>> {
    // The outcome may already be indexed (a retry), so look first.
    let settled_now = |state: &AppState| -> ApiResult<bool> {
        Ok(matches!(state.inner.index.command(id)?, Some(v) if v.status != CommandStatus::Pending))
    };
    let mut shutdown = state.shutdown_signal();
    let deadline = tokio::time::Instant::now() + wait;
    let woken = settled_now(state)? || {
        let outcome = waiter.wait();
        tokio::pin!(outcome);
        tokio::select! {
            r = tokio::time::timeout_at(deadline, &mut outcome) => r.is_ok(),
            // (The guard `wait_for` gives is dropped at once: it is not `Send`.)
            () = async { drop(shutdown.wait_for(|s| *s).await) } => {
                // Shutting down: processors go on while requests drain, so
                // the outcome may yet come; waited for a little longer, but
                // never for the whole drain.
                let grace = (state.inner.config.drain_timeout / 2).min(SHUTDOWN_WAIT_GRACE);
                let until = deadline.min(tokio::time::Instant::now() + grace);
                tokio::time::timeout_at(until, &mut outcome).await.is_ok()
            }
        }
    };
    if woken && settled_now(state)? {
        return settled(state, neg, id).await.map(Some);
    }
    Ok(None)
}

/// Marks a `202` given after waiting for an outcome that did not come (see
/// `Preference-Applied` in [`post_command`]).
#[derive(Debug, Clone, Copy)]
struct Waited;

/// `Location: /commands/{id}`, built without an intermediate `String`.
fn command_location(id: uuid::Uuid) -> HeaderValue {
    const PREFIX: &[u8] = b"/commands/";
    let mut buf = [0u8; PREFIX.len() + uuid::fmt::Hyphenated::LENGTH];
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    id.hyphenated().encode_lower(&mut buf[PREFIX.len()..]);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("/commands"))
}

/// 201 with the command and its events, or 409 with the rejection.
async fn settled(state: &AppState, neg: Negotiated, id: uuid::Uuid) -> ApiResult<Response> {
    // The outcome's sibling events (appended with it) may sit in other
    // partitions of `events` that the index has not read yet.
    if state.inner.events_partitions > 1 {
        crate::reads::index_caught_up(state, EVENTS_TOPIC).await?;
    }
    let tree = state
        .inner
        .index
        .command_tree(id)?
        .ok_or_else(|| ApiError::Internal(format!("command {id} vanished")))?;
    let body = CommandBody::with_tree(&tree).to_value();
    let view = &tree.command;
    if view.status == CommandStatus::Rejected {
        let rejection = tree
            .events
            .iter()
            .find(|e| Some(e.event.id) == view.outcome_event)
            .and_then(|e| e.event.rejection())
            .unwrap_or_else(|| {
                cmdr_contract::Rejection::new("rejected", "the command was rejected")
            });
        return Err(ApiError::Rejected {
            rejection,
            command: body,
        });
    }
    let mut res = neg.render("Command accepted", body);
    *res.status_mut() = StatusCode::CREATED;
    res.headers_mut()
        .insert(header::LOCATION, command_location(id));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ct: &str) -> Option<BodyKind> {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        body_kind(&h).ok()
    }

    #[test]
    fn prefer_wait_is_read_as_rfc_7240_allows() {
        let wait = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("prefer", HeaderValue::from_str(v).unwrap());
            }
            preferred_wait(&h)
        };
        assert_eq!(wait(&["wait=5"]), Some(5));
        assert_eq!(wait(&["Wait = \"7\""]), Some(7));
        assert_eq!(wait(&["respond-async, wait=3"]), Some(3));
        // A parameter of another preference is not one.
        assert_eq!(wait(&["return=minimal; wait=2"]), None);
        assert_eq!(wait(&["respond-async; wait=5, wait=10"]), Some(10));
        assert_eq!(wait(&["wait=4; foo=bar"]), Some(4));
        // Separators inside quoted values separate nothing.
        assert_eq!(wait(&["foo=\"a, wait=2, b\""]), None);
        assert_eq!(wait(&["return=minimal; note=\"a,wait=3,b\""]), None);
        assert_eq!(wait(&["foo=\"x, wait=1\", wait=5"]), Some(5));
        assert_eq!(wait(&["foo=\"x\\\", wait=1\", wait=6"]), Some(6));
        // A bare `wait` is a first `wait` that says no number.
        assert_eq!(wait(&["wait, wait=3"]), None);
        // Only the first counts.
        assert_eq!(wait(&["wait=1", "wait=4"]), Some(1));
        assert_eq!(wait(&["wait=1, wait=4"]), Some(1));
        assert_eq!(wait(&["respond-async"]), None);
        assert_eq!(wait(&[]), None);
        // Not a number of seconds: ignored, and so is any later one.
        for bad in ["wait=soon", "wait=-1", "wait=", "wait=1.5"] {
            assert_eq!(wait(&[bad]), None, "{bad}");
        }
        assert_eq!(wait(&["wait=soon, wait=3"]), None);
        // Longer than any maximum: clamped like any long wait.
        assert_eq!(wait(&["wait=99999999999999999999"]), Some(u64::MAX));
    }

    #[test]
    fn media_types_match_without_regard_to_case_and_parameters() {
        assert_eq!(kind("application/json"), Some(BodyKind::Json));
        assert_eq!(
            kind("Application/JSON; charset=utf-8"),
            Some(BodyKind::Json)
        );
        assert_eq!(
            kind("application/vnd.cmdr.command+JSON"),
            Some(BodyKind::Json)
        );
        assert_eq!(
            kind("application/x-www-form-urlencoded"),
            Some(BodyKind::Form)
        );
        assert_eq!(kind("text/plain"), None);
        assert_eq!(kind("application/+json"), None);
        assert_eq!(kind("text/json"), None);
        assert_eq!(kind("applicatio\u{e9}/json"), None);
        assert!(body_kind(&HeaderMap::new()).is_err());
    }

    #[test]
    fn body_from_log_json_matches_the_serialised_body() {
        let value = serde_json::json!({
            "action": "create-customer",
            "data": {"name": "Ann \"A\" \u{e9}", "n": [1, 2.5, null], "nested": {"b": true}},
            "key": "customer-42",
        });
        let request = CommandRequest::from_value(value).unwrap();
        let command = new_command(request, crate::auth::ANONYMOUS, None).unwrap();
        for status in [
            CommandStatus::Pending,
            CommandStatus::Accepted,
            CommandStatus::Rejected,
        ] {
            let fast = body_from_log_json(&command.to_json(), command.id, status).unwrap();
            let slow = serde_json::to_vec(&CommandBody::new(&command, status)).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(slow).unwrap()
            );
        }
        assert!(body_from_log_json(b"[]", command.id, CommandStatus::Pending).is_none());
        assert!(body_from_log_json(b"}", command.id, CommandStatus::Pending).is_none());
    }
}

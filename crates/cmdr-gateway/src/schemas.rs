//! JSON Schemas per action: registered with `PUT /schemas/{action}`, every
//! version kept, stored as records of the `_cmdr_schemas` log topic (so they
//! are as durable as commands and are replayed at start-up), and compiled
//! once, when registered or loaded.
//!
//! Validating a command can be costly however small the schema was made
//! (`schema_cost.rs` bounds the schema, not the schema times the data: a
//! 1 MB array checked against an `anyOf` of a thousand values): a check
//! over [`INLINE_WORK`] runs on a blocking thread, at most
//! [`MAX_BLOCKING_CHECKS`] at once, never on the async workers that serve
//! every other request (a long string counts by its length, see
//! [`STRING_BYTES_PER_NODE`]); `pattern`s run on a regular expression
//! engine whose time is linear in the string (so lookaround and
//! backreferences, which need backtracking, are refused when a schema is
//! registered: with them, one 64 KB string took 10 s; one stored by an
//! earlier cmdr is still applied, see [`compile_stored`]); and an invalid
//! command's errors are all listed only when listing them is bounded
//! ([`LISTED_WORK`]), else the first one is.
//!
//! `DELETE /schemas/{action}` removes an action's schema: its commands are
//! no longer checked. The removal is a version too, and the earlier ones
//! stay readable (`?version=N`); a later `PUT` registers the next version.
//!
//! Log format of a schema record (key = the action), version 1:
//! `{"action": "...", "version": 1, "schema": {...}, "timestamp": <ms>}`;
//! a removal: `{"action": "...", "version": 3, "schema": null, "removed":
//! true, "timestamp": <ms>}`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cmdr_contract::{validate_action, Violation, SCHEMAS_TOPIC};
use cmdr_log::{Log, Record};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::PathParam;
use crate::negotiate::Negotiated;
use crate::state::AppState;

/// Records read from the schemas topic at once while loading.
const LOAD_BATCH: usize = 1024;

/// One registered version of an action's schema, as stored in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// The action it validates.
    pub action: String,
    /// 1, 2, ... in registration order.
    pub version: u32,
    /// The JSON Schema (2020-12).
    pub schema: Value,
    /// When it was registered, ms since the epoch.
    pub timestamp: i64,
    /// This version removed the action's schema (`schema` is `null`):
    /// from it on, the action's commands are not checked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

struct ActionSchemas {
    versions: Vec<SchemaVersion>,
    /// The latest version, compiled; `None` once it removed the schema.
    validator: Option<Arc<Compiled>>,
}

/// A compiled schema and the nodes it expands to (see `schema_cost.rs`).
struct Compiled {
    validator: jsonschema::Validator,
    nodes: u64,
    /// Whether the schema has a `pattern` or `patternProperties` anywhere
    /// (see [`PATTERN_INLINE_BYTES`]).
    patterns: bool,
}

/// Longest string checked on an async worker against a schema with
/// patterns: a pattern's automaton can be large (`(\w+ ?){1,8000}`), and
/// its time is the string's length times that, which a node count does not
/// see. Checks with longer strings run on a blocking thread.
pub(crate) const PATTERN_INLINE_BYTES: usize = 256;

/// Whether `schema` has a `pattern` or `patternProperties` keyword anywhere.
fn has_patterns(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.iter().any(|(k, v)| {
            (k == "pattern" && v.is_string()) || k == "patternProperties" || has_patterns(v)
        }),
        Value::Array(items) => items.iter().any(has_patterns),
        _ => false,
    }
}

/// Whether `data` holds a string (or member name) longer than `limit` bytes.
fn has_string_over(data: &Value, limit: usize) -> bool {
    match data {
        Value::String(s) => s.len() > limit,
        Value::Array(items) => items.iter().any(|v| has_string_over(v, limit)),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.len() > limit || has_string_over(v, limit)),
        _ => false,
    }
}

/// Work (data nodes × schema nodes) up to which a check runs on the async
/// worker that received the command: microseconds.
pub(crate) const INLINE_WORK: u64 = 4096;
/// Bytes of a string (or member name) that count as one data node in a
/// check's work (see [`nodes`]).
pub(crate) const STRING_BYTES_PER_NODE: u64 = 16;
/// Work up to which an invalid command's errors are all collected (the
/// validator collects every error before handing out the first hundred:
/// a costly check's list filled gigabytes).
pub(crate) const LISTED_WORK: u64 = 100_000;
/// Checks running on blocking threads at once; more wait their turn.
pub(crate) const MAX_BLOCKING_CHECKS: usize = 4;

/// Every action's schemas; the latest version of each compiled.
pub(crate) struct SchemaRegistry {
    log: Arc<dyn Log>,
    /// Read on every command; written only when a schema is registered.
    actions: RwLock<HashMap<String, ActionSchemas>>,
    /// Serializes registrations so versions are numbered without gaps.
    register: tokio::sync::Mutex<()>,
    /// Turns for checks on blocking threads ([`MAX_BLOCKING_CHECKS`]).
    blocking: Arc<tokio::sync::Semaphore>,
}

/// Compiles a schema as JSON Schema 2020-12.
/// Most violations one schema check reports.
pub(crate) const MAX_VIOLATIONS: usize = 100;

/// Longest violation message, in bytes (longer ones are cut, marked `…`).
pub(crate) const MAX_VIOLATION_MESSAGE: usize = 512;

/// `s` cut to at most `max` bytes at a character boundary, marked `…`.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Compiles `schema` as JSON Schema 2020-12, after measuring its cost
/// (`schema_cost.rs`), its `pattern`s on the linear-time engine (see the
/// module).
fn compile(schema: &Value) -> Result<Compiled, Vec<Violation>> {
    let nodes =
        crate::schema_cost::expanded_nodes(schema).map_err(|why| vec![Violation::new("", why)])?;
    let validator = jsonschema::draft202012::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| {
            let mut message = e.to_string();
            if message.ends_with("is not a \"regex\"") {
                message.push_str(
                    " that cmdr runs: patterns run in time linear in the string, so \
                     lookaround and backreferences are not supported",
                );
            }
            vec![Violation::new(e.instance_path().to_string(), message)]
        })?;
    Ok(Compiled {
        validator,
        nodes,
        patterns: has_patterns(schema),
    })
}

/// Steps a `pattern` of a grandfathered schema (see [`compile_stored`]) may
/// backtrack per match attempt before the string counts as not matching.
pub(crate) const BACKTRACK_LIMIT: usize = 100_000;

/// [`compile`] for a schema stored by an earlier cmdr, which took `pattern`s
/// with lookaround and backreferences, and measured costs more leniently:
/// rather than leave its action unchecked, such a schema is applied as
/// before (on a backtracking engine, at most [`BACKTRACK_LIMIT`] steps per
/// match attempt), with a warning. Only a schema that does not compile at
/// all is skipped.
fn compile_stored(action: &str, version: u32, schema: &Value) -> Result<Compiled, Vec<Violation>> {
    compile(schema).or_else(|refused| {
        // Taken when it was registered: a cost model grown stricter since
        // must not leave its action unchecked. Measured as the most costly,
        // its checks run off the async workers.
        let nodes = crate::schema_cost::expanded_nodes(schema).unwrap_or_else(|why| {
            tracing::warn!(action, version, %why, "a stored schema is over today's cost bound; it is still applied");
            crate::schema_cost::MAX_EXPANDED_NODES
        });
        let validator = jsonschema::draft202012::options()
            .with_pattern_options(
                jsonschema::PatternOptions::fancy_regex().backtrack_limit(BACKTRACK_LIMIT),
            )
            .build(schema)
            .map_err(|_| refused.clone())?;
        let why = refused.first().map_or("", |v| v.message.as_str());
        tracing::warn!(
            action,
            version,
            why,
            "this stored schema would be refused if registered today (a pattern with \
             lookaround or backreferences, or over the cost bound); it is still applied: \
             register a version that passes"
        );
        Ok(Compiled {
            validator,
            nodes,
            patterns: has_patterns(schema),
        })
    })
}

/// Nodes of `v` (itself, and every value inside it).
/// A string counts one more node per [`STRING_BYTES_PER_NODE`] bytes:
/// `pattern`, `format` and length checks read all of it, so one long string
/// is a costly check however small its schema.
fn nodes(v: &Value) -> u64 {
    match v {
        Value::Array(a) => 1 + a.iter().map(nodes).sum::<u64>(),
        Value::Object(m) => {
            1 + m
                .iter()
                .map(|(k, v)| k.len() as u64 / STRING_BYTES_PER_NODE + nodes(v))
                .sum::<u64>()
        }
        Value::String(s) => 1 + s.len() as u64 / STRING_BYTES_PER_NODE,
        _ => 1,
    }
}

/// Checks `data` against `schema`, a check of `work` (data nodes × schema
/// nodes); the violations, if any (see the module).
fn check(schema: &Compiled, data: &Value, work: u64) -> Option<Vec<Violation>> {
    let validator = &schema.validator;
    if validator.is_valid(data) {
        return None;
    }
    let violation = |e: jsonschema::ValidationError<'_>| {
        Violation::new(
            format!("/data{}", e.instance_path()),
            cut(e.to_string(), MAX_VIOLATION_MESSAGE),
        )
    };
    if work <= LISTED_WORK {
        // Bounded: each message may quote the instance, and a schema can
        // report the same failure through many paths.
        let errors: Vec<Violation> = validator
            .iter_errors(data)
            .take(MAX_VIOLATIONS)
            .map(violation)
            .collect();
        if !errors.is_empty() {
            return Some(errors);
        }
    }
    let first = match validator.validate(data) {
        Err(e) => violation(e),
        // `is_valid` said otherwise; say so rather than accept.
        Ok(()) => Violation::new("/data", "does not match the schema"),
    };
    Some(vec![first])
}

impl SchemaRegistry {
    /// Creates the schemas topic if needed and loads every version in it.
    pub(crate) async fn load(log: Arc<dyn Log>) -> Result<Self, cmdr_log::LogError> {
        let info = log.create_topic(SCHEMAS_TOPIC, 1).await?;
        let mut actions: HashMap<String, ActionSchemas> = HashMap::new();
        for p in info.partitions {
            let mut from = p.start_offset;
            loop {
                let records = log
                    .read(SCHEMAS_TOPIC, p.partition, from, LOAD_BATCH)
                    .await?;
                let Some(last) = records.last() else { break };
                from = last.offset + 1;
                for r in records {
                    let Ok(v) = serde_json::from_slice::<SchemaVersion>(&r.value) else {
                        tracing::warn!(offset = r.offset, "skipping an unreadable schema record");
                        continue;
                    };
                    let compiled = if v.removed {
                        Ok(None)
                    } else {
                        compile_stored(&v.action, v.version, &v.schema).map(|c| Some(Arc::new(c)))
                    };
                    match compiled {
                        Ok(validator) => {
                            let entry =
                                actions
                                    .entry(v.action.clone())
                                    .or_insert_with(|| ActionSchemas {
                                        versions: Vec::new(),
                                        validator: None,
                                    });
                            entry.validator = validator;
                            entry.versions.push(v);
                        }
                        Err(e) => {
                            tracing::warn!(action = %v.action, ?e, "skipping a schema that no longer compiles")
                        }
                    }
                }
            }
        }
        Ok(Self {
            log,
            actions: RwLock::new(actions),
            register: tokio::sync::Mutex::new(()),
            blocking: Arc::new(tokio::sync::Semaphore::new(MAX_BLOCKING_CHECKS)),
        })
    }

    /// Validates `data` against the latest schema of `action`, if any, and
    /// hands it back; off the async workers when costly (see the module).
    ///
    /// # Errors
    /// [`ApiError::SchemaViolation`] with the violations.
    pub(crate) async fn validate(&self, action: &str, data: Value) -> ApiResult<Value> {
        let (schema, version) = {
            let actions = self.actions.read().unwrap_or_else(|p| p.into_inner());
            match actions.get(action) {
                Some(ActionSchemas {
                    validator: Some(validator),
                    versions,
                }) => (
                    Arc::clone(validator),
                    versions.last().map_or(0, |v| v.version),
                ),
                _ => return Ok(data),
            }
        };
        let work = nodes(&data).saturating_mul(schema.nodes.max(1));
        let inline = work <= INLINE_WORK
            && !(schema.patterns && has_string_over(&data, PATTERN_INLINE_BYTES));
        let (data, violations) = if inline {
            let violations = check(&schema, &data, work);
            (data, violations)
        } else {
            let turn = Arc::clone(&self.blocking)
                .acquire_owned()
                .await
                .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
            tokio::task::spawn_blocking(move || {
                // Held by the check itself: a request that goes away does
                // not give the turn back while its check still runs.
                let _turn = turn;
                let violations = check(&schema, &data, work);
                (data, violations)
            })
            .await
            .map_err(|e| ApiError::Internal(format!("schema check: {e}")))?
        };
        match violations {
            None => Ok(data),
            Some(errors) => Err(ApiError::SchemaViolation {
                action: action.to_string(),
                version,
                errors,
            }),
        }
    }

    /// Registers a new version (or returns the latest when it is identical).
    /// Returns the version and whether it is new. (The handler compiles
    /// first, to answer an invalid schema before anything else.)
    #[cfg(test)]
    async fn register(&self, action: &str, schema: Value) -> ApiResult<(SchemaVersion, bool)> {
        let compiled = compile(&schema).map_err(ApiError::InvalidSchema)?;
        self.register_compiled(action, schema, compiled).await
    }

    /// Registers a new version of `schema`, compiled as `compiled` (or
    /// returns the latest when it is identical). Returns the version and
    /// whether it is new.
    async fn register_compiled(
        &self,
        action: &str,
        schema: Value,
        compiled: Compiled,
    ) -> ApiResult<(SchemaVersion, bool)> {
        let compiled = Arc::new(compiled);
        let _serial = self.register.lock().await;
        let latest = {
            let actions = self.actions.read().unwrap_or_else(|p| p.into_inner());
            actions.get(action).and_then(|a| a.versions.last().cloned())
        };
        if let Some(latest) = &latest {
            if !latest.removed && latest.schema == schema {
                return Ok((latest.clone(), false));
            }
        }
        let version = self
            .append(action, latest.as_ref(), schema, Some(compiled))
            .await?;
        Ok((version, true))
    }

    /// Removes `action`'s schema: appends a version that says so.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] when the action has no schema (never had
    /// one, or it is removed already).
    async fn remove(&self, action: &str) -> ApiResult<SchemaVersion> {
        let _serial = self.register.lock().await;
        let latest = {
            let actions = self.actions.read().unwrap_or_else(|p| p.into_inner());
            actions.get(action).and_then(|a| a.versions.last().cloned())
        };
        match &latest {
            Some(l) if !l.removed => self.append(action, Some(l), Value::Null, None).await,
            _ => Err(no_schema(action)),
        }
    }

    /// Appends the version after `latest`, with `schema` (compiled as
    /// `compiled`), or the removal when `compiled` is `None`, and makes it
    /// the action's latest. Registrations hold [`Self::register`].
    async fn append(
        &self,
        action: &str,
        latest: Option<&SchemaVersion>,
        schema: Value,
        compiled: Option<Arc<Compiled>>,
    ) -> ApiResult<SchemaVersion> {
        let version = SchemaVersion {
            action: action.to_string(),
            version: match latest {
                None => 1,
                Some(l) => l.version.checked_add(1).ok_or_else(|| {
                    ApiError::Internal(format!("action {action:?} has no schema version left"))
                })?,
            },
            schema,
            timestamp: cmdr_contract::now_ms(),
            removed: compiled.is_none(),
        };
        let value = serde_json::to_vec(&version).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.log
            .append(SCHEMAS_TOPIC, vec![Record::new(action.to_string(), value)])
            .await?;
        let mut actions = self.actions.write().unwrap_or_else(|p| p.into_inner());
        let entry = actions
            .entry(action.to_string())
            .or_insert_with(|| ActionSchemas {
                versions: Vec::new(),
                validator: None,
            });
        entry.validator = compiled;
        entry.versions.push(version.clone());
        Ok(version)
    }

    /// The schema `action`'s commands are checked against now, if any.
    fn current(&self, action: &str) -> Option<Value> {
        let actions = self.actions.read().unwrap_or_else(|p| p.into_inner());
        let latest = actions.get(action)?.versions.last()?;
        (!latest.removed).then(|| latest.schema.clone())
    }

    fn versions(&self, action: &str) -> Option<Vec<SchemaVersion>> {
        let actions = self.actions.read().unwrap_or_else(|p| p.into_inner());
        actions.get(action).map(|a| a.versions.clone())
    }

    fn summary(&self) -> Vec<Value> {
        let actions = self.actions.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Value> = actions
            .iter()
            .filter_map(|(name, a)| {
                let latest = a.versions.last().filter(|l| !l.removed)?;
                Some(json!({
                    "action": name,
                    "version": latest.version,
                    "versions": a.versions.len(),
                    "links": {"self": format!("/schemas/{}", crate::paths::segment(name))},
                }))
            })
            .collect();
        out.sort_by(|a, b| a["action"].as_str().cmp(&b["action"].as_str()));
        out
    }
}

/// Routes: `GET /schemas`, `GET|PUT|DELETE /schemas/{action}` (the action
/// is the rest of the path: action names may contain `/`).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/schemas", get(list))
        .route("/schemas/{*action}", get(read).put(put).delete(delete))
}

async fn list(State(state): State<AppState>, neg: Negotiated) -> Response {
    neg.render("Schemas", json!({"items": state.inner.schemas.summary()}))
}

/// The `version` of `GET /schemas/{action}`'s query, if given; any other
/// parameter is refused.
fn version_param(raw: Option<&str>) -> ApiResult<Option<u32>> {
    let mut version = None;
    for (k, v) in crate::extract::query_pairs(raw)? {
        match k.as_str() {
            "version" => {
                version = Some(v.parse::<u32>().map_err(|_| {
                    ApiError::parameter(
                        "version",
                        format!("version must be a version number (1, 2, ...), not {v:?}"),
                    )
                })?)
            }
            other => {
                return Err(ApiError::parameter(
                    other,
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    Ok(version)
}

fn version_body(v: &SchemaVersion, all: &[SchemaVersion]) -> Value {
    json!({
        "action": v.action,
        "version": v.version,
        "schema": v.schema,
        "removed": v.removed,
        "timestamp": v.timestamp,
        "versions": all.iter().map(|x| x.version).collect::<Vec<_>>(),
        "links": {
            "self": format!("/schemas/{}?version={}", crate::paths::segment(&v.action), v.version),
            "latest": format!("/schemas/{}", crate::paths::segment(&v.action)),
        },
    })
}

/// The answer for an action without a schema.
fn no_schema(action: &str) -> ApiError {
    ApiError::NotFound(format!("no schema is registered for action {action:?}"))
}

/// Version `version` of `action`'s schemas (`all`), or the latest.
///
/// # Errors
/// [`ApiError::NotFound`] when there is no such version.
fn choose<'a>(
    action: &str,
    all: &'a [SchemaVersion],
    version: Option<u32>,
) -> ApiResult<&'a SchemaVersion> {
    match version {
        None => match all.last() {
            Some(l) if l.removed => Err(ApiError::NotFound(format!(
                "the schema of action {action:?} was removed (version {}); \
                 ?version=N reads the earlier ones",
                l.version
            ))),
            latest => latest.ok_or_else(|| no_schema(action)),
        },
        Some(n) => all.iter().find(|v| v.version == n).ok_or_else(|| {
            ApiError::NotFound(format!("action {action:?} has no schema version {n}"))
        }),
    }
}

async fn read(
    State(state): State<AppState>,
    PathParam(action): PathParam,
    RawQuery(raw): RawQuery,
    neg: Negotiated,
) -> ApiResult<Response> {
    let version = version_param(raw.as_deref())?;
    let versions = state
        .inner
        .schemas
        .versions(&action)
        .ok_or_else(|| no_schema(&action))?;
    let chosen = choose(&action, &versions, version)?;
    Ok(neg.render(
        &format!("Schema of {action}"),
        version_body(chosen, &versions),
    ))
}

async fn put(
    State(state): State<AppState>,
    PathParam(action): PathParam,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    // Reported as an invalid command's action is (`validation-failed`).
    validate_action(&action, "/action").map_err(|v| ApiError::Validation(vec![v]))?;
    crate::intake::require_json(&headers)?;
    let body = crate::body::read_body(&headers, body, &state.inner.config).await?;
    let schema: Value = crate::body::exact_json(&body)?
        .map_err(|violation| ApiError::InvalidSchema(vec![violation]))?;
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(ApiError::InvalidSchema(vec![Violation::new(
            "",
            "a JSON Schema is an object or a boolean",
        )]));
    }
    // An invalid schema is told so (422) before a short disk is (507);
    // the same schema again writes nothing, so it is answered anyway.
    let compiled = compile(&schema).map_err(ApiError::InvalidSchema)?;
    if state.inner.schemas.current(&action).as_ref() != Some(&schema) {
        state.check_disk_space(body.len()).await?;
    }
    let (version, created) = state
        .inner
        .schemas
        .register_compiled(&action, schema, compiled)
        .await?;
    let versions = state.inner.schemas.versions(&action).unwrap_or_default();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!(
        "/schemas/{}?version={}",
        crate::paths::segment(&action),
        version.version
    );
    Ok((
        status,
        [(header::LOCATION, location)],
        axum::Json(version_body(&version, &versions)),
    )
        .into_response())
}

/// `DELETE /schemas/{action}`: `204`, and the action's commands are no
/// longer checked; `404` when it has no schema (now).
async fn delete(
    State(state): State<AppState>,
    PathParam(action): PathParam,
) -> ApiResult<Response> {
    if state.inner.schemas.current(&action).is_none() {
        return Err(no_schema(&action));
    }
    state.check_disk_space(action.len()).await?;
    state.inner.schemas.remove(&action).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cmdr_log::memory::MemoryLog;

    use super::*;

    async fn registry(action: &str, schema: Value) -> SchemaRegistry {
        let registry = SchemaRegistry::load(Arc::new(MemoryLog::new()))
            .await
            .unwrap();
        registry.register(action, schema).await.unwrap();
        registry
    }

    fn violations(r: ApiResult<Value>) -> Vec<Violation> {
        match r {
            Err(ApiError::SchemaViolation { errors, .. }) => errors,
            other => panic!("not a schema violation: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_small_invalid_command_gets_every_violation() {
        let r = registry(
            "open",
            json!({"type": "object", "required": ["a", "b"], "properties": {"n": {"type": "integer"}}}),
        )
        .await;
        let errors = violations(r.validate("open", json!({"n": "x"})).await);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(r.validate("open", json!({"a": 1, "b": 2})).await.is_ok());
        // No schema: handed back as it is.
        assert_eq!(
            r.validate("other", json!({"z": 1})).await.unwrap(),
            json!({"z": 1})
        );
    }

    #[tokio::test]
    async fn a_removed_schema_checks_nothing_and_stays_removed_after_a_restart() {
        let log: Arc<dyn Log> = Arc::new(MemoryLog::new());
        let r = SchemaRegistry::load(Arc::clone(&log)).await.unwrap();
        let strict = json!({"type": "object", "required": ["a"]});
        r.register("open", strict.clone()).await.unwrap();
        assert!(r.validate("open", json!({})).await.is_err());
        let removal = r.remove("open").await.unwrap();
        assert_eq!((removal.version, removal.removed), (2, true));
        assert_eq!(removal.schema, Value::Null);
        assert!(r.validate("open", json!({})).await.is_ok());
        assert!(matches!(r.remove("open").await, Err(ApiError::NotFound(_))));
        assert!(matches!(
            r.remove("never").await,
            Err(ApiError::NotFound(_))
        ));
        assert!(r.summary().is_empty(), "{:?}", r.summary());
        let versions = r.versions("open").unwrap();
        assert!(choose("open", &versions, None).is_err());
        assert_eq!(choose("open", &versions, Some(1)).unwrap().schema, strict);

        // Loaded again from the log: still removed.
        let again = SchemaRegistry::load(Arc::clone(&log)).await.unwrap();
        assert!(again.validate("open", json!({})).await.is_ok());
        assert_eq!(again.versions("open").unwrap().len(), 2);
        // The same schema as before the removal is a new version.
        let (v, created) = again.register("open", strict).await.unwrap();
        assert_eq!((v.version, created, v.removed), (3, true, false));
        assert!(again.validate("open", json!({})).await.is_err());
        let reloaded = SchemaRegistry::load(log).await.unwrap();
        assert!(reloaded.validate("open", json!({})).await.is_err());
    }

    /// Every item failing every branch of a wide `anyOf`: the validator
    /// would collect items × branches errors before the first hundred are
    /// taken (10,000 items took gigabytes); past the listed work only the
    /// first violation is reported.
    #[tokio::test]
    async fn a_costly_invalid_command_gets_its_first_violation_only() {
        let branches: Vec<Value> = (0..1000)
            .map(|i| json!({"const": format!("v{i}")}))
            .collect();
        let r = registry(
            "enum",
            json!({"properties": {"a": {"items": {"anyOf": branches}}}}),
        )
        .await;
        let data = json!({"a": vec!["zz"; 300]});
        let errors = violations(r.validate("enum", data).await);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].pointer, "/data/a/0");
        let ok = json!({"a": vec!["v7"; 300]});
        assert_eq!(r.validate("enum", ok.clone()).await.unwrap(), ok);
    }

    /// Validates `data` on a one-thread runtime while another task counts
    /// its turns, and checks that it got some: the check ran off the async
    /// worker.
    async fn validate_beside_a_ticker(
        r: &SchemaRegistry,
        action: &str,
        data: Value,
    ) -> ApiResult<Value> {
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            loop {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        let checked = r.validate(action, data).await;
        let during = ticks.load(Ordering::Relaxed);
        ticker.abort();
        assert!(during > 0, "the other task never ran during the check");
        checked
    }

    /// A costly check runs off the async worker: on a one-thread runtime,
    /// another task goes on running while it does.
    #[tokio::test(flavor = "current_thread")]
    async fn a_costly_check_leaves_the_async_worker_free() {
        let r = registry(
            "re",
            json!({"properties": {"s": {"items": {"pattern": "^(?:(?:a|aa)+b|a+c)$"}}}}),
        )
        .await;
        let data = json!({"s": vec!["a".repeat(25) + "d"; 2000]});
        let checked = validate_beside_a_ticker(&r, "re", data).await;
        assert!(checked.is_err(), "{checked:?}");
    }

    /// One long string under a tiny schema is a costly check too: it runs
    /// off the async worker.
    #[tokio::test(flavor = "current_thread")]
    async fn a_long_string_is_checked_off_the_async_worker() {
        let r = registry(
            "long",
            json!({"properties": {"s": {"pattern": "^(a|aa)+$"}}}),
        )
        .await;
        let data = json!({"s": "a".repeat(64_000) + "b"});
        assert!(nodes(&data) * 4 > INLINE_WORK, "{}", nodes(&data));
        let checked = validate_beside_a_ticker(&r, "long", data).await;
        assert!(checked.is_err(), "{checked:?}");
    }

    /// A large pattern makes a short string costly too: a string past
    /// `PATTERN_INLINE_BYTES` under a schema with patterns is checked off
    /// the async worker, however few nodes the data has.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_pattern_over_a_modest_string_is_checked_off_the_async_worker() {
        let r = registry(
            "big",
            json!({"properties": {"s": {"pattern": "^(?:[a-z]+ ?){1,3000}$"}}}),
        )
        .await;
        let data = json!({"s": "ab ".repeat(1500) + "!"});
        assert!(nodes(&data) * 4 <= INLINE_WORK, "{}", nodes(&data));
        let checked = validate_beside_a_ticker(&r, "big", data).await;
        assert!(checked.is_err(), "{checked:?}");
        assert!(!has_string_over(
            &json!({"s": "a".repeat(256)}),
            PATTERN_INLINE_BYTES
        ));
        assert!(has_string_over(
            &json!([{"s": "a".repeat(257)}]),
            PATTERN_INLINE_BYTES
        ));
        assert!(has_patterns(&json!({"items": {"patternProperties": {}}})));
        assert!(!has_patterns(
            &json!({"properties": {"pattern": {"type": "string"}}})
        ));
    }

    /// Lookaround and backreferences need a backtracking engine, whose time
    /// can grow with the square of a string's length: refused up front.
    #[test]
    fn patterns_that_need_backtracking_are_refused() {
        for pattern in ["(?=a)(a|aa)+$", "^(?!x).*$", "(a)\\1"] {
            let why = compile(&json!({"pattern": pattern}))
                .err()
                .unwrap_or_else(|| panic!("{pattern} was taken"));
            assert!(
                why[0]
                    .message
                    .contains("lookaround and backreferences are not supported"),
                "{pattern}: {why:?}"
            );
        }
        assert!(compile(&json!({"pattern": "^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$"})).is_ok());
    }

    /// A schema with lookaround stored by an earlier cmdr still checks its
    /// action's commands when loaded, rather than none.
    #[tokio::test]
    async fn a_stored_schema_with_lookaround_is_still_applied() {
        let log = Arc::new(MemoryLog::new());
        log.create_topic(SCHEMAS_TOPIC, 1).await.unwrap();
        let stored = SchemaVersion {
            action: "pw".into(),
            version: 1,
            schema: json!({"properties": {"p": {"pattern": "^(?=.*[0-9]).{8,}$"}}}),
            timestamp: 0,
            removed: false,
        };
        log.append(
            SCHEMAS_TOPIC,
            vec![cmdr_log::Record::new(
                "pw",
                serde_json::to_vec(&stored).unwrap(),
            )],
        )
        .await
        .unwrap();
        // And one over today's cost bound (nested `unevaluated*`).
        let mut nested = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        for _ in 0..12 {
            nested = json!({"allOf": [nested], "unevaluatedProperties": false});
        }
        assert!(compile(&nested).is_err());
        let stored = SchemaVersion {
            action: "deep".into(),
            version: 1,
            schema: nested,
            timestamp: 0,
            removed: false,
        };
        log.append(
            SCHEMAS_TOPIC,
            vec![cmdr_log::Record::new(
                "deep",
                serde_json::to_vec(&stored).unwrap(),
            )],
        )
        .await
        .unwrap();
        let r = SchemaRegistry::load(log).await.unwrap();
        assert!(r.validate("pw", json!({"p": "abcdefgh1"})).await.is_ok());
        assert!(r.validate("pw", json!({"p": "abcdefghi"})).await.is_err());
        assert!(r.validate("deep", json!({"a": 1})).await.is_ok());
        assert!(r.validate("deep", json!({"a": "no"})).await.is_err());
    }
}

//! The API's self-description: `GET /openapi.json` (OpenAPI 3.1) and
//! `GET /docs`, a browsable page generated from the same document.
//!
//! Operations that need a token get the shared 401 and 403 responses
//! added by [`document`]; the public ones (health checks, the API
//! description) say so with `security: []`. The `code` enum of the
//! `Problem` schema is built from [`ApiError::code`], so it lists every
//! code the server can send.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cmdr_contract::{Rejection, Violation};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::html::escape;
use crate::state::AppState;

/// Routes of this module.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/openapi.json",
            get(|State(state): State<AppState>| async move { Json(served_document(&state)) }),
        )
        .route("/docs", get(docs))
}

/// One error of each kind (see the tests, which fail to compile when a kind
/// is added to [`ApiError`] without being listed here).
fn every_error() -> Vec<ApiError> {
    let s = String::new;
    vec![
        ApiError::MalformedBody(s()),
        ApiError::BadRequest(s()),
        ApiError::BadParameter {
            parameter: s(),
            message: s(),
        },
        ApiError::Unauthorized(s()),
        ApiError::Forbidden(s()),
        ApiError::NotFound(s()),
        ApiError::MethodNotAllowed,
        ApiError::Rejected {
            rejection: Rejection::new("", ""),
            command: Value::Null,
        },
        ApiError::RequestTimeout(s()),
        ApiError::PayloadTooLarge { limit: 0 },
        ApiError::UnsupportedMediaType(s()),
        ApiError::UriTooLong(s()),
        ApiError::HeadersTooLarge(s()),
        ApiError::Validation(Vec::<Violation>::new()),
        ApiError::SchemaViolation {
            action: s(),
            version: 0,
            errors: Vec::new(),
        },
        ApiError::InvalidSchema(Vec::new()),
        ApiError::InvalidRegistration(Vec::new()),
        ApiError::IdempotencyKeyReused {
            key: s(),
            by_another_principal: false,
        },
        ApiError::UpgradeRequired(s()),
        ApiError::InsufficientStorage {
            free: 0,
            min_free: 0,
        },
        ApiError::NotImplemented(s()),
        ApiError::Unavailable(s()),
        ApiError::Internal(s()),
    ]
}

/// Every problem `code` the server sends, in [`ApiError`]'s order.
fn problem_codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = every_error().iter().map(ApiError::code).collect();
    // Two kinds share `bad-request`.
    let mut seen = std::collections::HashSet::new();
    codes.retain(|c| seen.insert(*c));
    codes
}

fn problem(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

/// A reference to a response of `components.responses`.
fn shared(name: &str) -> Value {
    json!({"$ref": format!("#/components/responses/{name}")})
}

/// A GET answer: JSON, or an HTML page for a browser (see `negotiate`).
fn json_ok(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}, "text/html": {}}})
}

/// An answer that is JSON whatever the client accepts.
fn json_only(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// `response` with a `Location` header saying what it points to.
fn with_location(mut response: Value, what: &str) -> Value {
    response["headers"]["Location"] = json!({"description": what, "schema": {"type": "string"}});
    response
}

/// A `POST /commands` answer after waiting (`Prefer: wait=N`) says so.
fn with_preference_applied(mut response: Value) -> Value {
    response["headers"]["Preference-Applied"] = json!({
        "description": "wait=N, the wait applied (after clamping), when the answer came from a Prefer: wait=N.",
        "schema": {"type": "string"}
    });
    response["headers"]["Idempotent-Replayed"] = json!({
        "description": "true when the answer is to a retry with a bound Idempotency-Key: the first request's command, nothing appended.",
        "schema": {"type": "string", "enum": ["true"]}
    });
    response
}

/// `components.responses`: answers many operations share.
fn shared_responses() -> Value {
    json!({
        "Unauthorized": {
            "description": "Tokens are configured and the request has none, or not a valid one (`unauthorized`).",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer realm=\"cmdr\""}},
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        },
        "Forbidden": problem("The token lacks the role (`forbidden`): read for GET, write for POST /commands, admin for GET /backup and the rest."),
        "MethodNotAllowed": {
            "description": "A method the path does not have, on any path (`method-not-allowed`).",
            "headers": {"Allow": {"schema": {"type": "string"}, "description": "The methods the path has."}},
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        },
        "UriTooLong": problem(&format!("The request target (path and query) is over {} bytes (`uri-too-long`).", crate::head_limits::MAX_URI_BYTES)),
        "HeadersTooLarge": problem(&format!("More than {} bytes of headers (`headers-too-large`); more than 100 headers get a 431 without a body.", crate::head_limits::MAX_HEADER_BYTES)),
        "InsufficientStorage": {
            "description": "The data directory's free space is under the reserve (`min_free_bytes`): nothing was written; writes are taken again once space is freed (`insufficient-storage`).",
            "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "30 (seconds)"}},
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        },
        "Unavailable": problem("The log is closed or the index has stopped: shutting down or failed (`unavailable`)."),
        "Internal": problem("An internal error, logged by the server; no details are shown (`internal`).")
    })
}

fn param(name: &str, location: &str, desc: &str, schema: Value) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "description": desc, "schema": schema})
}

/// `param` marked as required.
fn required(mut param: Value) -> Value {
    param["required"] = Value::Bool(true);
    param
}

fn list_params(events: bool) -> Vec<Value> {
    let mut p = vec![
        param(
            "action",
            "query",
            "Only this action.",
            json!({"type": "string"}),
        ),
        param("key", "query", "Only this key.", json!({"type": "string", "minLength": 1})),
        param(
            "since",
            "query",
            "Only at or after this time (ms since the epoch, of the id: UUID v7 ids carry the time they were given).",
            json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}),
        ),
        param(
            "until",
            "query",
            "Only before this time (ms since the epoch, of the id).",
            json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}),
        ),
        param(
            "order",
            "query",
            "Newest first (desc, default) or oldest first (asc).",
            json!({"enum": ["desc", "asc"]}),
        ),
        param(
            "limit",
            "query",
            "Page size (default 100).",
            json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        ),
        param(
            "after",
            "query",
            "Cursor: the id after which the page starts (from `next`). Listings are ordered by id, given when a command is received, and two commands received together may be indexed in the other order: polling `order=asc&after=LAST` can miss one. To poll for every new command or event without a gap, use `from`.",
            json!({"type": "string", "format": "uuid"}),
        ),
        param(
            "from",
            "query",
            "List in log order from a position instead: `start`, `end`, or a position as answered in `position` (or given by live updates: `42`, `42.7` with several partitions). The page then answers the `position` after the last record it read; listing again from it gives exactly the records indexed since, none missed, none repeated. Cannot be combined with `after`, `order`, `since`, `until` or `status` (a status changes after the position has gone past).",
            json!({"type": "string", "pattern": FROM_PATTERN}),
        ),
    ];
    if events {
        p.push(param(
            "parent",
            "query",
            "Only events caused by this command or event.",
            json!({"type": "string", "format": "uuid"}),
        ));
        p.push(param(
            "root",
            "query",
            "Only events of this command's causal tree.",
            json!({"type": "string", "format": "uuid"}),
        ));
    } else {
        p.push(param(
            "status",
            "query",
            "Only commands with this status.",
            json!({"enum": ["pending", "accepted", "rejected"]}),
        ));
    }
    p
}

/// The `access_token` query parameter of the live endpoints (see `auth`).
fn access_token_param() -> Value {
    param(
        "access_token",
        "query",
        "The bearer token, for clients that cannot set Authorization (a browser's EventSource or WebSocket); only the live endpoints take it.",
        json!({"type": "string"}),
    )
}

/// What `from` takes (see `follow::StartAt::parse`).
const FROM_PATTERN: &str = r"^(start|earliest|end|latest|now|[0-9]+(\.[0-9]+)*)$";

/// Where a live stream or subscription starts (see `follow::StartAt`).
const FROM_DESCRIPTION: &str = "Where to start: `end` (the default; also `latest` or `now`): only records appended from now on; `start` (also `earliest`): the oldest record still in the log; or a position (an SSE id: one offset per partition joined by '.', e.g. 42 or 42.7).";

fn updates_params(events: bool) -> Vec<Value> {
    let mut p = vec![
        param(
            "from",
            "query",
            FROM_DESCRIPTION,
            json!({"type": "string", "pattern": FROM_PATTERN, "examples": ["end", "start", "42", "42.7"]}),
        ),
        param(
            "action",
            "query",
            "Only this action.",
            json!({"type": "string"}),
        ),
        param("key", "query", "Only this key.", json!({"type": "string", "minLength": 1})),
        access_token_param(),
        param(
            "Last-Event-ID",
            "header",
            "Resume right after this position (an SSE id: an event's, or a block with an id alone, sent when the stream starts and after records the filters skipped); it wins over `from`. A position past the end of the log is a 400.",
            json!({"type": "string"}),
        ),
    ];
    if events {
        p.push(param(
            "parent",
            "query",
            "Only events caused by this id.",
            json!({"type": "string", "format": "uuid"}),
        ));
        p.push(param(
            "root",
            "query",
            "Only events of this command's tree.",
            json!({"type": "string", "format": "uuid"}),
        ));
    }
    p
}

/// The 200 of a Server-Sent Events endpoint whose messages are `name`.
fn event_stream(name: &str) -> Value {
    json!({
        "description": format!("An event stream. Each message has `event: {name}`, `id:` the position just after the record, and `data:` the record as stored in the log (one line of JSON: the {name} without the `status`, `position` or `links` that the GET resources add; a CR outside JSON strings is sent as a space). A block with an `id:` and no data is a position alone: sent when the stream starts and when it has caught up past records the filters skipped. A comment is sent every 15 s when idle."),
        "content": {"text/event-stream": {"schema": {"type": "string"}}}
    })
}

/// The responses of a Server-Sent Events endpoint.
fn updates_responses(name: &str) -> Value {
    json!({
        "200": event_stream(name),
        "400": problem("Bad or unknown query parameter, or a position (`from`, Last-Event-ID) that is malformed or past the end of the log."),
        "500": shared("Internal"),
        "503": problem(&format!("Too many live streams (at most {}, SSE streams and WebSocket subscriptions together), or the log is closed (`unavailable`).", crate::MAX_LIVE_STREAMS))
    })
}

/// A catch-all path parameter: the rest of the path, `/` included.
fn rest_of_path_param(name: &str, what: &str) -> Value {
    param(
        name,
        "path",
        &format!("{what}. The route takes the rest of the path, so a `/` in it may appear unescaped (`a/b` and `a%2Fb` are the same); other reserved characters are percent-encoded."),
        json!({"type": "string"}),
    )
}

/// The `{action}` path parameter of `/schemas/{action}`: an action name.
fn action_path_param() -> Value {
    let mut p = rest_of_path_param(
        "action",
        "Action name (letters, digits, '-', '_', '.', '/'; 1 to 200 bytes; not `.` or `..`)",
    );
    p["schema"] = json!({"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,200}$", "not": {"enum": [".", ".."]}});
    p
}

/// The `{name}` path parameter of `/processors/{name}`.
fn processor_name_param() -> Value {
    param(
        "name",
        "path",
        "Processor name (letters, digits, '-', '_').",
        json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$"}),
    )
}

/// A description of the media types a JSON request body may have.
const JSON_BODY: &str = "application/json, or any structured-syntax JSON type application/*+json (e.g. application/vnd.example+json); parameters such as charset are ignored.";

/// The paths of commands, reads and live updates.
fn command_paths() -> Value {
    json!({
        "/commands": {
            "post": {
                "summary": "Send a command",
                "description": "Validates the command (and its data against the action's JSON Schema, if registered), appends it durably and answers 202. With ?sync=true or Prefer: wait=N, waits for the outcome: 201 accepted, 409 rejected, 202 still pending. Nothing is appended on any error. The 202 and 201 are an HTML page for a client that prefers text/html (a browser's form post).",
                "parameters": [
                    param("sync", "query", "Wait for the outcome (default wait 5 s); true, 1 or empty for yes, false or 0 for no.", json!({"type": "boolean"})),
                    param("Prefer", "header", "wait=N: wait up to N seconds for the outcome (answered with Preference-Applied: wait=N, N clamped to the maximum).", json!({"type": "string"})),
                    param("Idempotency-Key", "header", "1 to 255 visible ASCII characters (spaces allowed inside). A retry with the same key and body returns the first answer; a different body is refused (422); an invalid key is a 400.", json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"})),
                    param("traceparent", "header", "W3C Trace Context: kept as the command's meta.traceparent, and sent on to its webhook processor, so that its handling continues the client's trace. A malformed one is ignored.", json!({"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$"})),
                    param("tracestate", "header", "W3C Trace Context, with a valid traceparent: kept as meta.tracestate (several headers joined with commas; dropped when over 512 characters).", json!({"type": "string"}))
                ],
                "requestBody": {"required": true, "description": format!("JSON: {JSON_BODY} Or a form (application/x-www-form-urlencoded)."), "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/CommandRequest"}},
                    "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["action"], "properties": {"action": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,200}$", "not": {"enum": [".", ".."]}}, "key": {"type": "string", "description": "empty: no key"}, "data": {"type": "string", "description": "a JSON object as text (not with data.NAME fields)"}}, "patternProperties": {"^data\\.": {"type": "string", "description": "data.NAME: the data member NAME, a string"}}, "additionalProperties": false, "description": "Each field at most once; a raw `{` starting the body is JSON sent with the wrong Content-Type (415)."}}
                }},
                "responses": {
                    "202": with_preference_applied(with_location(json_ok("Appended; outcome pending (or still pending after the wait).", "Command"), "/commands/{id}")),
                    "201": with_preference_applied(with_location(json_ok("Accepted by its processor (sync), with its events.", "Command"), "/commands/{id}")),
                    "400": problem("Malformed JSON or form (`malformed-body`), bad or unknown query parameter, bad Idempotency-Key header (`bad-request`)."),
                    "409": with_preference_applied(problem("Rejected by its processor (sync); `rejection` says why and `command` is the command with its events.")),
                    "408": problem("The body did not arrive within the header read timeout (default 30 s)."),
                    "413": problem("Body over the limit (default 1 MiB), or a command larger than the log's largest record."),
                    "415": problem("Unsupported or missing Content-Type."),
                    "422": problem("Invalid command (`validation-failed`), schema violation (`schema-violation`; errors: [{pointer, message}]) or Idempotency-Key reused (`idempotency-key-reused`)."),
                    "500": shared("Internal"),
                    "507": shared("InsufficientStorage"),
                    "503": problem("Shutting down, the log closed, too many idempotency keys in flight, or the index still catching up for an idempotent request (`unavailable`); nothing was appended.")
                }
            },
            "get": {"summary": "List commands", "parameters": list_params(false), "responses": {
                "200": json_ok("A page of commands (without their events).", "CommandPage"), "400": problem("Bad or unknown query parameter."),
                "500": shared("Internal"), "503": shared("Unavailable")}}
        },
        "/commands/{id}": {"get": {"summary": "A command with its status, outcome and events",
            "parameters": [param("id", "path", "Command id.", json!({"type": "string", "format": "uuid"}))],
            "responses": {"200": json_ok("The command.", "Command"), "400": problem("The id in the path is not valid UTF-8 (`bad-request`)."), "404": problem("Unknown id."), "500": shared("Internal"), "503": shared("Unavailable")}}},
        "/events": {"get": {"summary": "List events", "parameters": list_params(true), "responses": {
            "200": json_ok("A page of events.", "EventPage"), "400": problem("Bad or unknown query parameter."),
            "500": shared("Internal"), "503": shared("Unavailable")}}},
        "/events/{id}": {"get": {"summary": "One event",
            "parameters": [param("id", "path", "Event id.", json!({"type": "string", "format": "uuid"}))],
            "responses": {"200": json_ok("The event.", "Event"), "400": problem("The id in the path is not valid UTF-8 (`bad-request`)."), "404": problem("Unknown id."), "500": shared("Internal"), "503": shared("Unavailable")}}},
        "/streams/{key}": {"get": {"summary": "The events of one key in log order",
            "parameters": [
                rest_of_path_param("key", "The key (aggregate id)"),
                param("after", "query", "Continue after this offset (from `next`).", json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})),
                param("limit", "query", "Page size (default 100).", json!({"type": "integer", "minimum": 1, "maximum": 1000}))
            ],
            "responses": {"200": json_ok("A page of the stream (empty for an unknown key).", "StreamPage"), "400": problem("Bad or unknown query parameter, or the key is not valid UTF-8 once percent-decoded (`bad-request`)."),
                "500": shared("Internal"), "503": shared("Unavailable")}}},
        "/streams": {"get": {"summary": "The events of one key in log order, the key in the query (for `.` and `..`, which no path can carry)",
            "parameters": [
                required(param("key", "query", "The key (aggregate id).", json!({"type": "string", "minLength": 1}))),
                param("after", "query", "Continue after this offset (from `next`).", json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})),
                param("limit", "query", "Page size (default 100).", json!({"type": "integer", "minimum": 1, "maximum": 1000}))
            ],
            "responses": {"200": json_ok("A page of the stream (empty for an unknown key).", "StreamPage"), "400": problem("Missing key, or a bad or unknown query parameter."),
                "500": shared("Internal"), "503": shared("Unavailable")}}},
        "/commands/updates": {"get": {"summary": "New commands as Server-Sent Events (event: command, id: position)",
            "parameters": updates_params(false),
            "responses": updates_responses("command")}},
        "/events/updates": {"get": {"summary": "New events as Server-Sent Events (event: event, id: position)",
            "parameters": updates_params(true),
            "responses": updates_responses("event")}},
        "/ws": {"get": {"summary": "WebSocket: {op: subscribe, id, topic, from, action, key, parent, root} / {op: unsubscribe, id}; server sends subscribed, record, unsubscribed, error messages.",
            "description": format!("`topic` is commands or events (`parent`, `root` for events only); `from` takes what the SSE endpoints' `from` does (`end` by default). A record message is {{type: record, subscription, position, record}}, `record` the record as stored in the log. At most {} subscriptions per socket and {} KiB per message (a larger one closes the socket). The only query parameter is `access_token`; filters go in subscribe messages.", crate::MAX_SUBSCRIPTIONS, crate::MAX_WS_MESSAGE / 1024),
            "parameters": [access_token_param()],
            "responses": {"101": {"description": "Switching protocols."},
                "400": problem("An upgrade without Sec-WebSocket-Key, or an unknown query parameter (checked first) (`bad-request`)."),
                "426": {
                    "description": "Not a WebSocket upgrade request (`upgrade-required`).",
                    "headers": {"Upgrade": {"schema": {"const": "websocket"}}, "Sec-WebSocket-Version": {"schema": {"const": "13"}}},
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                }}}}
    })
}

/// The paths of schemas, processors and dead letters.
fn admin_paths() -> Value {
    json!({
        "/schemas": {"get": {"summary": "Actions with a registered schema", "responses": {"200": json_ok("The list, by action.", "SchemaList")}}},
        "/schemas/{action}": {
            "get": {"summary": "The latest (or ?version=N) schema of an action",
                "parameters": [action_path_param(), param("version", "query", "A version.", json!({"type": "integer", "minimum": 1, "maximum": u32::MAX}))],
                "responses": {"200": json_ok("The schema.", "SchemaVersion"), "400": problem("`version` is not a whole number, an unknown query parameter, or the action is not valid UTF-8 once percent-decoded (`bad-request`)."),
                    "404": problem("No schema for the action, or no such version.")}},
            "put": {"summary": "Register a new version of an action's schema (JSON Schema 2020-12)",
                "parameters": [action_path_param()],
                "requestBody": {"required": true, "description": JSON_BODY, "content": {"application/json": {"schema": {"type": ["object", "boolean"]}}}},
                "responses": {
                    "201": with_location(json_only("Registered as a new version.", "SchemaVersion"), "/schemas/{action}?version=N"),
                    "200": with_location(json_only("Identical to the latest version; nothing changed.", "SchemaVersion"), "/schemas/{action}?version=N"),
                    "400": problem("Malformed JSON, or the action is not valid UTF-8 once percent-decoded (`bad-request`)."), "408": problem("The body did not arrive within the header read timeout."), "413": problem("Too large."), "415": problem("Not JSON."),
                    "422": problem("An invalid action name in the path (`validation-failed`, errors: [{pointer: /action, message}]; checked first), or not a valid JSON Schema (`invalid-schema`)."),
                    "500": shared("Internal"), "503": shared("Unavailable"), "507": shared("InsufficientStorage")}},
            "delete": {"summary": "Remove an action's schema: its commands are no longer checked",
                "description": "The removal is kept as a version (`removed: true`, `schema: null`); earlier versions stay readable with ?version=N, and a later PUT registers the next version.",
                "parameters": [action_path_param()],
                "responses": {"204": {"description": "Removed."}, "400": problem("The path parameter is not valid UTF-8 once percent-decoded (`bad-request`)."), "404": problem("The action has no schema (never had one, or it is removed already)."),
                    "500": shared("Internal"), "503": shared("Unavailable"), "507": shared("InsufficientStorage")}}
        },
        "/processors": {"get": {"summary": "Registered webhook processors", "responses": {"200": json_ok("Every registration, by name.", "ProcessorList"), "500": shared("Internal"), "503": shared("Unavailable")}}},
        "/processors/{name}": {
            "get": {"summary": "One webhook processor's registration",
                "parameters": [processor_name_param()],
                "responses": {"200": json_ok("The registration.", "Processor"), "400": problem("The path parameter is not valid UTF-8 once percent-decoded (`bad-request`)."), "404": problem("No such processor."), "500": shared("Internal"), "503": shared("Unavailable")}},
            "put": {"summary": "Register or replace a webhook processor",
                "description": "cmdr POSTs each command of `actions` to `url` and reads the answer: 200 {events: [...]} accepts, 422 {rejection: {code, message, details}} rejects, anything else is retried with backoff; after the last attempt the command is rejected with `processing-failed` and a dead letter is kept (GET /dead-letters). Its position is kept under consumer group webhook-{name}.{hash of its actions}: re-registering the same name with the same actions continues where it left off; with other actions it goes over the commands topic again, skipping commands that already have an outcome. Protocol: crates/cmdr-processor/WEBHOOKS.md.",
                "parameters": [processor_name_param()],
                "requestBody": {"required": true, "description": JSON_BODY, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProcessorRequest"}}}},
                "responses": {
                    "201": with_location(json_only("Registered.", "Processor"), "/processors/{name}"),
                    "200": with_location(json_only("Replaced (or identical: nothing written).", "Processor"), "/processors/{name}"),
                    "400": problem("Malformed JSON, or the name is not valid UTF-8 once percent-decoded (`bad-request`)."), "408": problem("The body did not arrive within the header read timeout."), "413": problem("Too large."), "415": problem("Not JSON."),
                    "422": problem("Invalid name or registration (`invalid-registration`, errors: [{pointer, message}]); the pointer `/name` is the path parameter `name`, the others point into the body (`/actions/1`, `/url`, `/secret`, an unknown field), or an action another processor already handles."),
                    "500": shared("Internal"), "503": shared("Unavailable"), "507": shared("InsufficientStorage")}},
            "delete": {"summary": "Remove a webhook processor (its runner stops)",
                "parameters": [param("name", "path", "Processor name.", json!({"type": "string"}))],
                "responses": {"204": {"description": "Removed."}, "400": problem("The path parameter is not valid UTF-8 once percent-decoded (`bad-request`)."), "404": problem("No such processor (or an invalid name)."), "500": shared("Internal"), "503": shared("Unavailable"), "507": shared("InsufficientStorage")}}
        },
        "/dead-letters": {"get": {"summary": "Inputs no attempt could handle, oldest first",
            "parameters": [
                param("processor", "query", "Only this processor's (a webhook name or an SDK group).", json!({"type": "string"})),
                param("limit", "query", "Page size (default 100).", json!({"type": "integer", "minimum": 1, "maximum": 1000})),
                param("after", "query", "Cursor: the position after which the page starts (from `next`).", json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}))
            ],
            "responses": {"200": json_ok("A page of dead letters.", "DeadLetterPage"), "400": problem("Bad or unknown query parameter."), "500": shared("Internal"), "503": shared("Unavailable")}}}
    })
}

/// The paths of the home page, health checks, metrics and this description.
fn service_paths() -> Value {
    json!({
        "/": {"get": {"summary": "Home: links to the API's resources (a browser also gets a form to send a command)",
            "responses": {"200": json_ok("The links.", "Home")}}},
        "/healthz": {"get": {"summary": "Liveness (the process answers and its log can take appends)", "security": [], "responses": {
            "200": json_only("Alive (`status: ok`).", "Health"),
            "503": json_only("The log can no longer take appends until the process restarts (`status: failing`). Plain JSON, not a problem document.", "Health")}}},
        "/readyz": {"get": {"summary": "Readiness (indexer running and caught up with the log as it was at start, log answering and taking appends, not shutting down)", "security": [], "responses": {
            "200": json_only("Ready (`status: ready`).", "Readiness"),
            "503": json_only("Not ready (`status: not-ready`; `checks` says why). Plain JSON, not a problem document.", "Readiness")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (OpenMetrics text): intake counters, log end offsets, index position and lag, waiters, live streams, process memory",
            "responses": {"200": {"description": "OpenMetrics text (version 1.0.0, UTF-8).", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}},
                "500": shared("Internal"), "503": shared("Unavailable")}}},
        "/backup": {"get": {"summary": "An online backup of the log: a tar archive of `cmdr-backup.json` (what it holds) and the log's files under `log/`, every record durable when the request came in, taken while the server goes on (admin role). Restore: `tar -xf` it into an empty directory and start `cmdr serve --data-dir` on it; the index is rebuilt from the log.",
            "responses": {"200": {"description": "The archive, streamed (an error while it is read cuts it short, which a tar reader reports).", "headers": {"Content-Disposition": {"schema": {"type": "string"}, "description": "attachment; filename=\"cmdr-backup-MS.tar\""}}, "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}},
                "501": problem("The server's log keeps no files of its own to back up (`not-implemented`)."),
                "500": shared("Internal"), "503": shared("Unavailable")}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1 (JSON whatever the client accepts).", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/docs": {"get": {"summary": "This document as a page", "security": [], "responses": {"200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}}}}
    })
}

/// The request and resource schemas.
fn resource_schemas() -> Value {
    json!({
        "CommandRequest": {"type": "object", "required": ["action", "data"], "additionalProperties": false, "properties": {
            "action": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,200}$", "not": {"enum": [".", ".."]}},
            "data": {"type": "object"},
            "key": {"type": ["string", "null"], "minLength": 1, "maxLength": 1024, "description": "Ordering key; absent or null: the command id. At most 1024 bytes of UTF-8 (maxLength counts characters, so a key of multi-byte characters is refused below 1024 of them)."}}},
        "Command": {"type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"}, "action": {"type": "string"}, "data": {"type": "object"},
            "key": {"type": "string"}, "timestamp": {"type": "integer", "description": "ms since the epoch"},
            "meta": {"type": "object"}, "status": {"enum": ["pending", "accepted", "rejected"]},
            "outcome": {"type": "object"}, "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "events_complete": {"type": "boolean", "description": "With events: whether they are the whole causal tree. A large tree (over 1,000 events or about 4 MiB) is cut, its outcome event kept; links.events lists all of it."},
            "links": {"type": "object"}}},
        "Event": {"type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"}, "parent": {"type": "string", "format": "uuid"},
            "root": {"type": "string", "format": "uuid"}, "action": {"type": "string"}, "data": {"type": "object"},
            "key": {"type": "string"}, "timestamp": {"type": "integer"}, "outcome": {"enum": ["accepted", "rejected"]},
            "position": {"type": "object", "properties": {"partition": {"type": "integer"}, "offset": {"type": "integer"}}},
            "links": {"type": "object"}}},
        "CommandPage": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Command"}}, "next": {"type": ["string", "null"], "description": "the next page's link; a page may hold fewer than `limit` items and still have one (it examined 20,000 index entries, or holds about 4 MiB): keep going until it is null"}, "position": {"type": "string", "description": "only with `from`: the position after the last record read; list `from` it later for what is new"}}},
        "EventPage": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}, "next": {"type": ["string", "null"], "description": "the next page's link; a page may hold fewer than `limit` items and still have one (it examined 20,000 index entries, or holds about 4 MiB): keep going until it is null"}, "position": {"type": "string", "description": "only with `from`: the position after the last record read; list `from` it later for what is new"}}},
        "StreamPage": {"type": "object", "properties": {"key": {"type": "string"}, "items": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}, "next": {"type": ["string", "null"], "description": "the next page's link (after=OFFSET)"}}},
        "SchemaVersion": {"type": "object", "properties": {"action": {"type": "string"}, "version": {"type": "integer"}, "schema": {"description": "the JSON Schema; null in a removal"}, "removed": {"type": "boolean", "description": "this version removed the schema: from it on, the action's commands are not checked"}, "timestamp": {"type": "integer"},
            "versions": {"type": "array", "items": {"type": "integer"}, "description": "every version of the action"},
            "links": {"type": "object", "properties": {"self": {"type": "string"}, "latest": {"type": "string"}}}}},
        "SchemaSummary": {"type": "object", "properties": {"action": {"type": "string"}, "version": {"type": "integer", "description": "the latest version"},
            "versions": {"type": "integer", "description": "how many versions the action has (a count; SchemaVersion.versions lists them)"},
            "links": {"type": "object", "properties": {"self": {"type": "string"}}}}},
        "SchemaList": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/SchemaSummary"}}}},
        "ProcessorRequest": {"type": "object", "required": ["actions", "url"], "additionalProperties": false, "properties": {
            "actions": {"type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": true, "items": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,200}$", "not": {"enum": [".", ".."]}}},
            "url": {"type": "string", "pattern": "^https?://[^/?#\\s]+([/?#]|$)", "maxLength": 2048, "description": "http:// or https:// and a host"},
            "secret": {"type": ["string", "null"], "minLength": 16, "maxLength": 256, "pattern": "^[!-~]*$", "description": "16 to 256 printable ASCII characters without spaces; signs each request (cmdr-signature header, see WEBHOOKS.md); never shown back. Absent or null: requests are not signed."}}},
        "Processor": {"type": "object", "properties": {
            "name": {"type": "string"}, "actions": {"type": "array", "items": {"type": "string"}}, "url": {"type": "string"},
            "signed": {"type": "boolean", "description": "whether requests carry a cmdr-signature"},
            "group": {"type": "string", "description": "its consumer group on the commands topic"}, "links": {"type": "object"}}},
        "ProcessorList": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Processor"}}}},
        "DeadLetter": {"type": "object", "properties": {
            "position": {"type": "integer"}, "processor": {"type": "string"}, "topic": {"type": "string"},
            "partition": {"type": "integer"}, "offset": {"type": "integer"}, "input": {"type": "object", "description": "the command or event as logged"},
            "last_error": {"type": "string"}, "attempts": {"type": "integer"}, "timestamp": {"type": "integer"}, "links": {"type": "object"}}},
        "DeadLetterPage": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetter"}}, "next": {"type": ["string", "null"]}}}
    })
}

/// The schemas of the home page, health checks and problem documents.
fn service_schemas() -> Value {
    json!({
        "Home": {"type": "object", "properties": {"name": {"type": "string"}, "description": {"type": "string"}, "links": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "Health": {"type": "object", "properties": {
            "status": {"enum": ["ok", "failing"]},
            "checks": {"type": "object", "description": "With `failing` only.", "properties": {"log": {"type": "boolean"}}}}},
        "Readiness": {"type": "object", "properties": {
            "status": {"enum": ["ready", "not-ready"]},
            "checks": {"type": "object", "properties": {"indexer": {"type": "boolean"}, "index_caught_up": {"type": "boolean"}, "log": {"type": "boolean"}, "shutting_down": {"type": "boolean"}, "disk_space": {"type": "boolean", "description": "The data directory's free space is above the reserve (min_free_bytes); while false, writes get 507. Told, not required: it does not make the answer 503 (reads go on)."}}, "additionalProperties": {"type": "boolean", "description": "The application's own checks (e.g. accounts_example)."}}}},
        "Problem": {"type": "object", "required": ["type", "title", "status"], "properties": {
            "type": {"type": "string", "description": "/problems/{code}"}, "code": {"enum": problem_codes()},
            "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
            "errors": {"type": "array", "description": "What is wrong, each item naming where: `pointer` (a JSON Pointer into the request's body or path) or `parameter` (a query parameter).",
                "items": {"type": "object", "properties": {"pointer": {"type": "string"}, "parameter": {"type": "string"}, "message": {"type": "string"}}}},
            "rejection": {"type": "object"}, "command": {"type": "object"}}}
    })
}

/// Adds the shared 414 and 431 to every operation (see
/// [`crate::head_limits`]), and the shared 401 and 403 to every operation
/// that needs a token: all but those with `security: []`.
fn add_auth_responses(paths: &mut Value) {
    let Some(paths) = paths.as_object_mut() else {
        return;
    };
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        // Only the operations: a path item also has `parameters`,
        // `summary`, `servers`...
        let operations = item.iter_mut().filter(|(key, op)| {
            op.is_object()
                && matches!(
                    key.as_str(),
                    "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
                )
        });
        for (_, op) in operations {
            op["responses"]["414"] = shared("UriTooLong");
            op["responses"]["431"] = shared("HeadersTooLarge");
            if op["security"] == json!([]) {
                continue;
            }
            op["responses"]["401"] = shared("Unauthorized");
            op["responses"]["403"] = shared("Forbidden");
        }
    }
}

/// `a` with the members of the object `b` added.
fn merged(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// The document served: [`document`] with the paths and component schemas
/// the application added (see [`AppState::document_routes`]), each of
/// their operations answering 401 and 403 too, as the API's do.
fn served_document(state: &AppState) -> Value {
    let mut doc = document();
    let (mut paths, schemas) = state.documented_routes();
    add_auth_responses(&mut paths);
    // The API's own entries win over the application's.
    doc["paths"] = merged(paths, doc["paths"].take());
    doc["components"]["schemas"] = merged(schemas, doc["components"]["schemas"].take());
    doc
}

/// The OpenAPI 3.1 document of the HTTP API (without the routes an
/// application adds beside it).
pub fn document() -> Value {
    let mut paths = merged(merged(command_paths(), admin_paths()), service_paths());
    add_auth_responses(&mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cmdr",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "CQRS manager: clients send commands; processors answer with events; cmdr indexes both, derives each command's status (pending, accepted, rejected) and serves queries and live updates. Every error is application/problem+json (RFC 9457) with a stable `code`; a method a path does not have is a 405 with Allow (components/responses/MethodNotAllowed), an unknown path a 404. When the server is configured with tokens, every request but /healthz, /readyz, /openapi.json and /docs (security: []) needs Authorization: Bearer <token>, or, on the live endpoints (/commands/updates, /events/updates, /ws), which browsers open without headers, ?access_token=<token> (401 without a valid one, 403 without the role: read for GET, write for POST /commands, admin for the rest)."
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A token from `cmdr token new`, when the server has tokens configured."}},
            "responses": shared_responses(),
            "schemas": merged(resource_schemas(), service_schemas())
        }
    })
}

async fn docs(State(state): State<AppState>) -> Response {
    let doc = served_document(&state);
    let mut rows = String::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, ops) in paths {
            for (method, op) in ops.as_object().into_iter().flatten() {
                let link = if method == "get" && !path.contains('{') {
                    format!("<a href=\"{0}\">{0}</a>", escape(path))
                } else {
                    escape(path)
                };
                let codes: Vec<String> = op["responses"]
                    .as_object()
                    .map(|r| r.keys().cloned().collect())
                    .unwrap_or_default();
                rows.push_str(&format!(
                    "<tr><td><b>{}</b></td><td><code>{}</code></td><td>{}<br><small>{}</small></td><td>{}</td></tr>",
                    method.to_uppercase(),
                    link,
                    escape(op["summary"].as_str().unwrap_or("")),
                    escape(op["description"].as_str().unwrap_or("")),
                    codes.join(" ")
                ));
            }
        }
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>cmdr API</title><style>body{{font-family:system-ui,sans-serif;margin:2em}}\
td{{border-bottom:1px solid #ddd;padding:.4em;vertical-align:top}}</style></head><body><h1>cmdr API</h1>\
<p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1).</p>\
<table><tr><th>Method</th><th>Path</th><th>What</th><th>Statuses</th></tr>{rows}</table></body></html>",
        escape(doc["info"]["description"].as_str().unwrap_or(""))
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The place of `e`'s kind in [`every_error`]. Exhaustive on purpose:
    /// a kind added to [`ApiError`] stops this from compiling until it is
    /// listed here and in [`every_error`].
    fn kind(e: &ApiError) -> usize {
        match e {
            ApiError::MalformedBody(_) => 0,
            ApiError::BadRequest(_) => 1,
            ApiError::BadParameter { .. } => 2,
            ApiError::Unauthorized(_) => 3,
            ApiError::Forbidden(_) => 4,
            ApiError::NotFound(_) => 5,
            ApiError::MethodNotAllowed => 6,
            ApiError::Rejected { .. } => 7,
            ApiError::RequestTimeout(_) => 8,
            ApiError::PayloadTooLarge { .. } => 9,
            ApiError::UnsupportedMediaType(_) => 10,
            ApiError::UriTooLong(_) => 11,
            ApiError::HeadersTooLarge(_) => 12,
            ApiError::Validation(_) => 13,
            ApiError::SchemaViolation { .. } => 14,
            ApiError::InvalidSchema(_) => 15,
            ApiError::InvalidRegistration(_) => 16,
            ApiError::IdempotencyKeyReused { .. } => 17,
            ApiError::UpgradeRequired(_) => 18,
            ApiError::InsufficientStorage { .. } => 19,
            ApiError::NotImplemented(_) => 20,
            ApiError::Unavailable(_) => 21,
            ApiError::Internal(_) => 22,
        }
    }

    #[test]
    fn path_items_keep_their_own_fields_and_their_operations_get_the_shared_answers() {
        let mut paths = json!({
            "/x/{id}": {
                "summary": "an application's route",
                "parameters": [{"name": "id", "in": "path", "required": true}],
                "servers": [],
                "get": {"responses": {"200": {"description": "ok"}}},
                "x-extension": "kept"
            },
            "/public": {"get": {"security": [], "responses": {}}}
        });
        add_auth_responses(&mut paths);
        let item = &paths["/x/{id}"];
        assert_eq!(item["summary"], "an application's route");
        assert!(item["parameters"].is_array());
        assert_eq!(item["x-extension"], "kept");
        for code in ["401", "403", "414", "431"] {
            assert!(item["get"]["responses"][code].is_object(), "{code}");
        }
        assert!(paths["/public"]["get"]["responses"]["401"].is_null());
        assert!(paths["/public"]["get"]["responses"]["431"].is_object());
    }

    #[test]
    fn every_error_kind_is_listed_once() {
        let kinds: Vec<usize> = every_error().iter().map(kind).collect();
        assert_eq!(kinds, (0..=22).collect::<Vec<_>>());
    }

    #[test]
    fn the_problem_code_enum_is_every_code_the_server_sends() {
        let doc = document();
        let documented: BTreeSet<&str> = doc["components"]["schemas"]["Problem"]["properties"]
            ["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let sent: BTreeSet<&str> = every_error().iter().map(ApiError::code).collect();
        assert_eq!(documented, sent);
        assert!(documented.contains("request-timeout"));
        // Each error's problem document carries its code.
        for e in every_error() {
            assert_eq!(e.to_problem()["code"], e.code());
        }
    }

    /// Every `$ref` in `v`, as found.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50);
        for r in found {
            let pointer = r.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn public_operations_have_no_auth_responses_and_the_others_have_both() {
        let doc = document();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let public = op["security"] == json!([]);
                let responses = &op["responses"];
                assert_eq!(
                    (responses["401"].is_null(), responses["403"].is_null()),
                    (public, public),
                    "{method} {path}"
                );
            }
        }
    }

    /// The document's patterns say what the server takes: `from` what
    /// `StartAt::parse` reads, an action what the contract accepts.
    #[test]
    fn documented_patterns_agree_with_the_parsers() {
        let from = jsonschema::validator_for(&json!({"type": "string", "pattern": FROM_PATTERN}))
            .expect("a valid pattern");
        for v in [
            "start", "earliest", "end", "latest", "now", "0", "42.7", "1.2.3", "", "4x", "4.",
            ".4", "-1", "+5", "1.+2", "start.1",
        ] {
            assert_eq!(
                from.is_valid(&json!(v)),
                crate::follow::StartAt::parse(v).is_ok(),
                "from={v:?}"
            );
        }
        let doc = document();
        let action = &doc["components"]["schemas"]["CommandRequest"]["properties"]["action"];
        let action = jsonschema::validator_for(action).expect("a valid schema");
        for a in ["pay", "billing/pay", "a.b", ".", "..", "...", "", "a b"] {
            assert_eq!(
                action.is_valid(&json!(a)),
                cmdr_contract::validate_action(a, "/action").is_ok(),
                "action {a:?}"
            );
        }
    }
}

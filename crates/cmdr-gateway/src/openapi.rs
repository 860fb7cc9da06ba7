//! The API's self-description: `GET /openapi.json` (OpenAPI 3.1) and
//! `GET /docs`, a browsable page generated from the same document.

use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::html::escape;
use crate::state::AppState;

/// Routes of this module.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(document()) }))
        .route("/docs", get(docs))
}

fn problem(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn json_ok(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}, "text/html": {}}})
}

fn param(name: &str, location: &str, desc: &str, schema: Value) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "description": desc, "schema": schema})
}

fn list_params(events: bool) -> Vec<Value> {
    let mut p = vec![
        param(
            "action",
            "query",
            "Only this action.",
            json!({"type": "string"}),
        ),
        param("key", "query", "Only this key.", json!({"type": "string"})),
        param(
            "since",
            "query",
            "Only at or after this time (ms since the epoch).",
            json!({"type": "integer", "minimum": 0}),
        ),
        param(
            "until",
            "query",
            "Only before this time (ms since the epoch).",
            json!({"type": "integer", "minimum": 0}),
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
            "Cursor: the id after which the page starts (from `next`).",
            json!({"type": "string", "format": "uuid"}),
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

fn updates_params(events: bool) -> Vec<Value> {
    let mut p = vec![
        param(
            "from",
            "query",
            "Where to start: end (default), start, or a position (an SSE id).",
            json!({"type": "string"}),
        ),
        param(
            "action",
            "query",
            "Only this action.",
            json!({"type": "string"}),
        ),
        param("key", "query", "Only this key.", json!({"type": "string"})),
        access_token_param(),
        param(
            "Last-Event-ID",
            "header",
            "Resume right after this position (an SSE id: an event's, or a block with an id alone, sent when the stream starts and after records the filters skipped). A position past the end of the log is a 400.",
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

/// The OpenAPI 3.1 document of the HTTP API.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cmdr",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "CQRS manager: clients send commands; processors answer with events; cmdr indexes both, derives each command's status (pending, accepted, rejected) and serves queries and live updates. Every error is application/problem+json (RFC 9457) with a stable `code`. When the server is configured with tokens, every request but /healthz, /readyz, /openapi.json and /docs needs Authorization: Bearer <token>, or, on the live endpoints (/commands/updates, /events/updates, /ws), which browsers open without headers, ?access_token=<token> (401 without a valid one, 403 without the role: read for GET, write for POST /commands, admin for the rest)."
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/commands": {
                "post": {
                    "summary": "Send a command",
                    "description": "Validates the command (and its data against the action's JSON Schema, if registered), appends it durably and answers 202. With ?sync=true or Prefer: wait=N, waits for the outcome: 201 accepted, 409 rejected, 202 still pending. Nothing is appended on any error.",
                    "parameters": [
                        param("sync", "query", "Wait for the outcome (default wait 5 s).", json!({"type": "boolean"})),
                        param("Prefer", "header", "wait=N: wait up to N seconds for the outcome (answered with Preference-Applied: wait=N, N clamped to the maximum).", json!({"type": "string"})),
                        param("Idempotency-Key", "header", "A retry with the same key and body returns the first answer; a different body is refused (422).", json!({"type": "string", "maxLength": 255}))
                    ],
                    "requestBody": {"required": true, "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/CommandRequest"}},
                        "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {"action": {"type": "string"}, "key": {"type": "string"}, "data": {"type": "string", "description": "a JSON object as text; or data.NAME fields"}}}}
                    }},
                    "responses": {
                        "202": {"description": "Appended; outcome pending.", "headers": {"Location": {"schema": {"type": "string"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Command"}}}},
                        "201": json_ok("Accepted by its processor (sync), with its events.", "Command"),
                        "400": problem("Malformed JSON or form, bad query or header."),
                        "409": problem("Rejected by its processor (sync); `rejection` says why."),
                        "408": problem("The body did not arrive within the header read timeout (default 30 s)."),
                        "413": problem("Body over the limit (default 1 MiB)."),
                        "415": problem("Unsupported Content-Type."),
                        "422": problem("Invalid command, schema violation (errors: [{pointer, message}]) or Idempotency-Key reused."),
                        "503": problem("Shutting down or overloaded.")
                    }
                },
                "get": {"summary": "List commands", "parameters": list_params(false), "responses": {"200": json_ok("A page of commands.", "CommandPage"), "400": problem("Bad query parameter.")}}
            },
            "/commands/{id}": {"get": {"summary": "A command with its status, outcome and events",
                "parameters": [param("id", "path", "Command id.", json!({"type": "string", "format": "uuid"}))],
                "responses": {"200": json_ok("The command.", "Command"), "404": problem("Unknown id.")}}},
            "/events": {"get": {"summary": "List events", "parameters": list_params(true), "responses": {"200": json_ok("A page of events.", "EventPage"), "400": problem("Bad query parameter.")}}},
            "/events/{id}": {"get": {"summary": "One event",
                "parameters": [param("id", "path", "Event id.", json!({"type": "string", "format": "uuid"}))],
                "responses": {"200": json_ok("The event.", "Event"), "404": problem("Unknown id.")}}},
            "/streams/{key}": {"get": {"summary": "The events of one key in log order",
                "parameters": [
                    param("key", "path", "The key (aggregate id).", json!({"type": "string"})),
                    param("after", "query", "Continue after this offset (from `next`).", json!({"type": "integer", "minimum": 0})),
                    param("limit", "query", "Page size (default 100).", json!({"type": "integer", "minimum": 1, "maximum": 1000}))
                ],
                "responses": {"200": json_ok("A page of the stream.", "EventPage"), "400": problem("Bad query parameter.")}}},
            "/commands/updates": {"get": {"summary": "New commands as Server-Sent Events (event: command, id: position)",
                "parameters": updates_params(false),
                "responses": {"200": {"description": "An event stream.", "content": {"text/event-stream": {}}}, "400": problem("Bad parameter or position.")}}},
            "/events/updates": {"get": {"summary": "New events as Server-Sent Events (event: event, id: position)",
                "parameters": updates_params(true),
                "responses": {"200": {"description": "An event stream.", "content": {"text/event-stream": {}}}, "400": problem("Bad parameter or position.")}}},
            "/ws": {"get": {"summary": "WebSocket: {op: subscribe, id, topic, from, action, key, parent, root} / {op: unsubscribe, id}; server sends subscribed, record, unsubscribed, error messages.",
                "parameters": [access_token_param()],
                "responses": {"101": {"description": "Switching protocols."}, "426": problem("Not a WebSocket upgrade request (answered with Upgrade: websocket).")}}},
            "/schemas": {"get": {"summary": "Actions with a registered schema", "responses": {"200": json_ok("The list.", "SchemaList")}}},
            "/schemas/{action}": {
                "get": {"summary": "The latest (or ?version=N) schema of an action",
                    "parameters": [param("action", "path", "Action name.", json!({"type": "string"})), param("version", "query", "A version.", json!({"type": "integer", "minimum": 1}))],
                    "responses": {"200": json_ok("The schema.", "SchemaVersion"), "404": problem("No schema.")}},
                "put": {"summary": "Register a new version of an action's schema (JSON Schema 2020-12)",
                    "parameters": [param("action", "path", "Action name.", json!({"type": "string"}))],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": ["object", "boolean"]}}}},
                    "responses": {"201": json_ok("Registered as a new version.", "SchemaVersion"), "200": json_ok("Identical to the latest version; nothing changed.", "SchemaVersion"),
                        "400": problem("Malformed JSON."), "408": problem("The body did not arrive within the header read timeout."), "413": problem("Too large."), "415": problem("Not JSON."), "422": problem("Not a valid JSON Schema.")}}
            },
            "/processors": {"get": {"summary": "Registered webhook processors", "responses": {"200": json_ok("Every registration, by name.", "ProcessorList")}}},
            "/processors/{name}": {
                "get": {"summary": "One webhook processor's registration",
                    "parameters": [param("name", "path", "Processor name (letters, digits, '-', '_').", json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$"}))],
                    "responses": {"200": json_ok("The registration.", "Processor"), "404": problem("No such processor.")}},
                "put": {"summary": "Register or replace a webhook processor",
                    "description": "cmdr POSTs each command of `actions` to `url` and reads the answer: 200 {events: [...]} accepts, 422 {rejection: {code, message, details}} rejects, anything else is retried with backoff; after the last attempt the command is rejected with `processing-failed` and a dead letter is kept (GET /dead-letters). Its position is kept under consumer group webhook-{name}: re-registering the same name continues where it left off. Protocol: crates/cmdr-processor/WEBHOOKS.md.",
                    "parameters": [param("name", "path", "Processor name (letters, digits, '-', '_').", json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$"}))],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProcessorRequest"}}}},
                    "responses": {"201": json_ok("Registered.", "Processor"), "200": json_ok("Replaced (or identical).", "Processor"),
                        "400": problem("Malformed JSON."), "408": problem("The body did not arrive within the header read timeout."), "413": problem("Too large."), "415": problem("Not JSON."),
                        "422": problem("Invalid name or registration (errors: [{pointer, message}]).")}},
                "delete": {"summary": "Remove a webhook processor (its runner stops)",
                    "parameters": [param("name", "path", "Processor name.", json!({"type": "string"}))],
                    "responses": {"204": {"description": "Removed."}, "404": problem("No such processor.")}}
            },
            "/dead-letters": {"get": {"summary": "Inputs no attempt could handle, oldest first",
                "parameters": [
                    param("processor", "query", "Only this processor's (a webhook name or an SDK group).", json!({"type": "string"})),
                    param("limit", "query", "Page size (default 100).", json!({"type": "integer", "minimum": 1, "maximum": 1000})),
                    param("after", "query", "Cursor: the position after which the page starts (from `next`).", json!({"type": "integer", "minimum": 0}))
                ],
                "responses": {"200": json_ok("A page of dead letters.", "DeadLetterPage"), "400": problem("Bad query parameter.")}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "The process answers."}}}},
            "/readyz": {"get": {"summary": "Readiness (indexer running, log answering)", "responses": {"200": {"description": "Ready."}, "503": {"description": "Not ready."}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (OpenMetrics text): intake counters, log end offsets, index position and lag, waiters, live streams, process memory", "responses": {"200": {"description": "OpenMetrics text.", "content": {"application/openmetrics-text": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1."}}}},
            "/docs": {"get": {"summary": "This document as a page", "responses": {"200": {"description": "HTML."}}}}
        },
        "components": {
          "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A token from `cmdr token new`, when the server has tokens configured."}},
          "schemas": {
            "CommandRequest": {"type": "object", "required": ["action", "data"], "additionalProperties": false, "properties": {
                "action": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,200}$"},
                "data": {"type": "object"},
                "key": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "Ordering key; defaults to the command id."}}},
            "Command": {"type": "object", "properties": {
                "id": {"type": "string", "format": "uuid"}, "action": {"type": "string"}, "data": {"type": "object"},
                "key": {"type": "string"}, "timestamp": {"type": "integer", "description": "ms since the epoch"},
                "meta": {"type": "object"}, "status": {"enum": ["pending", "accepted", "rejected"]},
                "outcome": {"type": "object"}, "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                "links": {"type": "object"}}},
            "Event": {"type": "object", "properties": {
                "id": {"type": "string", "format": "uuid"}, "parent": {"type": "string", "format": "uuid"},
                "root": {"type": "string", "format": "uuid"}, "action": {"type": "string"}, "data": {"type": "object"},
                "key": {"type": "string"}, "timestamp": {"type": "integer"}, "outcome": {"enum": ["accepted", "rejected"]},
                "position": {"type": "object", "properties": {"partition": {"type": "integer"}, "offset": {"type": "integer"}}},
                "links": {"type": "object"}}},
            "CommandPage": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Command"}}, "next": {"type": ["string", "null"]}}},
            "EventPage": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}, "next": {"type": ["string", "integer", "null"]}}},
            "SchemaVersion": {"type": "object", "properties": {"action": {"type": "string"}, "version": {"type": "integer"}, "schema": {}, "timestamp": {"type": "integer"}, "versions": {"type": "array", "items": {"type": "integer"}}}},
            "SchemaList": {"type": "object", "properties": {"items": {"type": "array"}}},
            "ProcessorRequest": {"type": "object", "required": ["actions", "url"], "additionalProperties": false, "properties": {
                "actions": {"type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": true, "items": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,200}$"}},
                "url": {"type": "string", "pattern": "^http://", "maxLength": 2048},
                "secret": {"type": "string", "minLength": 16, "maxLength": 256, "description": "Signs each request (cmdr-signature header, see WEBHOOKS.md); never shown back."}}},
            "Processor": {"type": "object", "properties": {
                "name": {"type": "string"}, "actions": {"type": "array", "items": {"type": "string"}}, "url": {"type": "string"},
                "signed": {"type": "boolean", "description": "whether requests carry a cmdr-signature"},
                "group": {"type": "string", "description": "its consumer group on the commands topic"}, "links": {"type": "object"}}},
            "ProcessorList": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Processor"}}}},
            "DeadLetter": {"type": "object", "properties": {
                "position": {"type": "integer"}, "processor": {"type": "string"}, "topic": {"type": "string"},
                "partition": {"type": "integer"}, "offset": {"type": "integer"}, "input": {"type": "object", "description": "the command or event as logged"},
                "last_error": {"type": "string"}, "attempts": {"type": "integer"}, "timestamp": {"type": "integer"}, "links": {"type": "object"}}},
            "DeadLetterPage": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetter"}}, "next": {"type": ["string", "null"]}}},
            "Problem": {"type": "object", "required": ["type", "title", "status"], "properties": {
                "type": {"type": "string"}, "code": {"enum": ["malformed-body", "bad-request", "not-found", "method-not-allowed", "command-rejected", "payload-too-large", "unsupported-media-type", "validation-failed", "schema-violation", "invalid-schema", "invalid-registration", "idempotency-key-reused", "unauthorized", "forbidden", "upgrade-required", "unavailable", "internal"]},
                "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {"pointer": {"type": "string"}, "message": {"type": "string"}}}},
                "rejection": {"type": "object"}, "command": {"type": "object"}}}
        }}
    })
}

async fn docs() -> Response {
    let doc = document();
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

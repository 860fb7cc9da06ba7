//! The gateway's one error type and its HTTP form: `application/problem+json`
//! (RFC 9457) with a stable `type` (`/problems/{code}`), a `code`, a `title`,
//! the `status`, a `detail` for humans and, for validation failures, `errors`:
//! a list of `{pointer, message}` (`{parameter, message}` for a query
//! parameter).
//!
//! Internal failures are logged with their context and answered with a
//! generic message; their details are never shown to clients.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cmdr_contract::{Rejection, Violation};
use serde_json::{json, Value};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything a request can fail with, each variant with its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed-json`: the body is not JSON (or not a valid form).
    #[error("the body is not valid: {0}")]
    MalformedBody(String),
    /// 400 `bad-request`: a header, or the request as a whole, is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 400 `bad-request`: a query parameter is invalid or unknown; the
    /// problem's `errors` holds `{parameter, message}`.
    #[error("{message}")]
    BadParameter {
        /// The query parameter's name.
        parameter: String,
        /// What is wrong with it.
        message: String,
    },
    /// 401 `unauthorized`: tokens are configured and the request has none,
    /// or not a valid one (answered with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden`: the token lacks the role the request needs.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not-found`: no such command, event, schema or route.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method-not-allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 `command-rejected`: the command's processor rejected it.
    #[error("the command was rejected: {}", .rejection.message)]
    Rejected {
        /// Why.
        rejection: Rejection,
        /// The command resource, with its events.
        command: Value,
    },
    /// 408 `request-timeout`: the client took too long to send the body.
    #[error("{0}")]
    RequestTimeout(String),
    /// 413 `payload-too-large`: the body exceeds the configured limit.
    #[error("the body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 414 `uri-too-long`: the request target is over
    /// [`crate::head_limits::MAX_URI_BYTES`].
    #[error("{0}")]
    UriTooLong(String),
    /// 431 `headers-too-large`: more header bytes than
    /// [`crate::head_limits::MAX_HEADER_BYTES`].
    #[error("{0}")]
    HeadersTooLarge(String),
    /// 415 `unsupported-media-type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 `validation-failed`: the request (a command, a schema's action name) is not valid.
    #[error("the request is not valid (see errors)")]
    Validation(Vec<Violation>),
    /// 422 `schema-violation`: `data` does not match the action's JSON Schema.
    #[error("data does not match the schema of action {action:?} (version {version})")]
    SchemaViolation {
        /// The action.
        action: String,
        /// The schema version used.
        version: u32,
        /// Every violation, pointers rooted at the command (`/data/...`).
        errors: Vec<Violation>,
    },
    /// 422 `invalid-schema`: a registered schema is not a valid JSON Schema.
    #[error("the schema is not a valid JSON Schema (2020-12)")]
    InvalidSchema(Vec<Violation>),
    /// 422 `invalid-registration`: a webhook processor registration is invalid.
    #[error("the processor registration is not valid")]
    InvalidRegistration(Vec<Violation>),
    /// 422 `idempotency-key-reused`: the key was used with a different
    /// request, or by another principal.
    #[error(
        "Idempotency-Key {key:?} was already used {}",
        if *.by_another_principal { "by another principal" } else { "with a different request" }
    )]
    IdempotencyKeyReused {
        /// The key.
        key: String,
        /// Whether the first use was another principal's (else the
        /// request differed).
        by_another_principal: bool,
    },
    /// 426 `upgrade-required`: a plain request to the WebSocket endpoint
    /// (answered with `Upgrade: websocket` and `Sec-WebSocket-Version: 13`).
    #[error("{0}")]
    UpgradeRequired(String),
    /// 507 `insufficient-storage`: the data directory's free space is under
    /// the reserve (see [`crate::disk_space`]); answered with `Retry-After`.
    #[error(
        "the data directory has {free} bytes free, under the {min_free} kept in reserve \
         (min_free_bytes): nothing was appended; writes are taken again once space is freed"
    )]
    InsufficientStorage {
        /// Bytes free at the last reading.
        free: u64,
        /// The reserve.
        min_free: u64,
    },
    /// 501 `not-implemented`: the server cannot do this at all (a backup
    /// of a log that keeps no files of its own).
    #[error("{0}")]
    NotImplemented(String),
    /// 503 `unavailable`: the log or index cannot serve now (shutting down,
    /// overloaded, failed).
    #[error("{0}")]
    Unavailable(String),
    /// 500 `internal`: logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A [`ApiError::BadParameter`] for query parameter `parameter`.
    pub fn parameter(parameter: &str, message: impl Into<String>) -> Self {
        Self::BadParameter {
            parameter: parameter.to_string(),
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedBody(_) | Self::BadRequest(_) | Self::BadParameter { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Rejected { .. } => StatusCode::CONFLICT,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Validation(_)
            | Self::SchemaViolation { .. }
            | Self::InvalidSchema(_)
            | Self::InvalidRegistration(_)
            | Self::IdempotencyKeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            Self::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code (the last segment of `type`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedBody(_) => "malformed-body",
            Self::BadRequest(_) | Self::BadParameter { .. } => "bad-request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Rejected { .. } => "command-rejected",
            Self::RequestTimeout(_) => "request-timeout",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::UriTooLong(_) => "uri-too-long",
            Self::HeadersTooLarge(_) => "headers-too-large",
            Self::Validation(_) => "validation-failed",
            Self::SchemaViolation { .. } => "schema-violation",
            Self::InvalidSchema(_) => "invalid-schema",
            Self::InvalidRegistration(_) => "invalid-registration",
            Self::IdempotencyKeyReused { .. } => "idempotency-key-reused",
            Self::UpgradeRequired(_) => "upgrade-required",
            Self::InsufficientStorage { .. } => "insufficient-storage",
            Self::NotImplemented(_) => "not-implemented",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::MalformedBody(_) => "Malformed request body",
            Self::BadRequest(_) => "Bad request",
            Self::BadParameter { .. } => "Bad query parameter",
            Self::Unauthorized(_) => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::NotFound(_) => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Rejected { .. } => "Command rejected",
            Self::RequestTimeout(_) => "Request timeout",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::UnsupportedMediaType(_) => "Unsupported media type",
            Self::UriTooLong(_) => "URI too long",
            Self::HeadersTooLarge(_) => "Request header fields too large",
            Self::Validation(_) => "Invalid request",
            Self::SchemaViolation { .. } => "Data does not match the action's schema",
            Self::InvalidSchema(_) => "Invalid JSON Schema",
            Self::InvalidRegistration(_) => "Invalid processor registration",
            Self::IdempotencyKeyReused { .. } => "Idempotency-Key reused",
            Self::UpgradeRequired(_) => "Upgrade required",
            Self::InsufficientStorage { .. } => "Insufficient storage",
            Self::NotImplemented(_) => "Not implemented",
            Self::Unavailable(_) => "Service unavailable",
            Self::Internal(_) => "Internal server error",
        }
    }

    /// The problem document.
    pub fn to_problem(&self) -> Value {
        let detail = match self {
            Self::Internal(_) => "an internal error occurred; it has been logged".to_string(),
            other => other.to_string(),
        };
        let mut body = json!({
            "type": format!("/problems/{}", self.code()),
            "code": self.code(),
            "title": self.title(),
            "status": self.status().as_u16(),
            "detail": detail,
        });
        let extra = match self {
            Self::Validation(errors)
            | Self::InvalidSchema(errors)
            | Self::InvalidRegistration(errors) => Some(("errors", json!(errors))),
            Self::SchemaViolation { errors, .. } => Some(("errors", json!(errors))),
            Self::BadParameter { parameter, message } => Some((
                "errors",
                json!([{"parameter": parameter, "message": message}]),
            )),
            Self::Rejected { rejection, command } => {
                body["command"] = command.clone();
                Some(("rejection", json!(rejection)))
            }
            _ => None,
        };
        if let Some((k, v)) = extra {
            body[k] = v;
        }
        body
    }
}

impl From<cmdr_index::IndexError> for ApiError {
    fn from(e: cmdr_index::IndexError) -> Self {
        match e {
            cmdr_index::IndexError::Stopped => Self::Unavailable("the index is not running".into()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<cmdr_processor::ProcessorError> for ApiError {
    fn from(e: cmdr_processor::ProcessorError) -> Self {
        match e {
            cmdr_processor::ProcessorError::Log { source, .. } => source.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<cmdr_log::LogError> for ApiError {
    fn from(e: cmdr_log::LogError) -> Self {
        match e {
            cmdr_log::LogError::Closed(why) => {
                // The cause names files and disks: for the operator, not
                // for every client.
                tracing::error!(error = %why, "the log refused an append");
                Self::Unavailable(
                    "the log cannot take writes right now; nothing was appended (see the server's log)"
                        .into(),
                )
            }
            cmdr_log::LogError::RecordTooLarge { max, .. } => Self::PayloadTooLarge { limit: max },
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(msg) = &self {
            tracing::error!(error = %msg, "internal error");
        }
        let body = serde_json::to_vec(&self.to_problem()).unwrap_or_default();
        let mut res = (self.status(), body).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if matches!(self, Self::Unavailable(_)) {
            // A guess, but better than a client's tight loop.
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Self::InsufficientStorage { .. }) {
            // Someone must free space: not a matter of a second.
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        }
        if matches!(self, Self::Unauthorized(_)) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cmdr\""),
            );
        }
        if matches!(self, Self::UpgradeRequired(_)) {
            // RFC 9110 §15.5.22 and RFC 6455 §4.4: name the protocol and version.
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        res
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

//! Reading request bodies: bounded in size and in time, and refused in a
//! way the client can read.
//!
//! A client that sends a whole body over the limit without waiting for
//! `100 Continue` (most do) is still writing when the `413` is ready. Were
//! the connection closed then, its next write would fail and many clients
//! would report a broken pipe instead of the problem. So the rest of such a
//! body is read and thrown away, up to [`DISCARD_BYTES`] and for at most
//! [`DISCARD_TIME`] (like a web server's lingering close), and only then is
//! the `413` sent; nothing of it is kept.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::{ApiError, ApiResult};

/// Most bytes of a refused body read and thrown away before its `413`.
pub const DISCARD_BYTES: u64 = 64 * 1024 * 1024;

/// Longest a refused body is read before its `413` is sent anyway.
pub const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads a body of at most `config.body_limit` bytes, sent within
/// `config.header_read_timeout` (a client trickling its body cannot hold a
/// connection and a request for ever).
///
/// # Errors
/// [`ApiError::PayloadTooLarge`] beyond the limit (checked against
/// `Content-Length` first, then while reading), after discarding the rest
/// (see the module documentation); [`ApiError::RequestTimeout`] when the
/// body takes too long; [`ApiError::MalformedBody`] when the body cannot
/// be read.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    config: &crate::GatewayConfig,
) -> ApiResult<Bytes> {
    let limit = config.body_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = ApiError::PayloadTooLarge { limit };
    if declared.is_some_and(|n| n > limit as u64) {
        discard_unless_asked_first(headers, body).await;
        return Err(too_large);
    }
    let within = config.header_read_timeout;
    let read = tokio::time::timeout(within, Limited::new(&mut body, limit).collect())
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!(
                "the body did not arrive within {} s",
                within.as_secs_f64()
            ))
        })?;
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            discard_unless_asked_first(headers, body).await;
            Err(too_large)
        }
        Err(e) => Err(ApiError::MalformedBody(format!(
            "reading the body failed: {e}"
        ))),
    }
}

/// Reads what is left of `body` and drops it, within [`DISCARD_BYTES`] and
/// [`DISCARD_TIME`]; not at all when the client sent
/// `Expect: 100-continue`: it waits for a go-ahead, and reading would give
/// it one.
async fn discard_unless_asked_first(headers: &HeaderMap, mut body: Body) {
    if headers.contains_key(header::EXPECT) {
        return;
    }
    let discard = async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
                if read > DISCARD_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, discard).await;
}

/// Parses a JSON body that must mean exactly what it says, as a command
/// must ([`cmdr_contract::exact`]): no member given twice (a schema's
/// `"type"` twice is a mistake a parser would hide by keeping one), no
/// number past what a double holds. Malformed JSON is the `Err`; a body
/// that parses but is not exact is the inner `Err`, its [`Violation`] for
/// the caller to report as its kind of 422.
///
/// [`Violation`]: cmdr_contract::Violation
///
/// # Errors
/// [`ApiError::MalformedBody`].
pub(crate) fn exact_json(
    body: &[u8],
) -> ApiResult<Result<serde_json::Value, cmdr_contract::Violation>> {
    let exact = cmdr_contract::exact::check(body);
    match serde_json::from_slice(body) {
        Ok(value) => Ok(exact.map(|()| value)),
        Err(e) if cmdr_contract::exact::is_out_of_range(&e) => match exact {
            Err(violation) => Ok(Err(violation)),
            Ok(()) => Err(ApiError::MalformedBody(e.to_string())),
        },
        Err(e) => Err(ApiError::MalformedBody(e.to_string())),
    }
}

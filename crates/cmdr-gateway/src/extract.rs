//! Extractors whose rejections are problem documents like every other error.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::ApiError;

/// The single path parameter of a route, percent-decoded; a malformed one
/// (invalid UTF-8) is a 400 problem rather than axum's plain-text answer.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(p)) => Ok(Self(p)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The `name=value` pairs of `application/x-www-form-urlencoded` bytes (a
/// form body or a query string), decoded strictly: `+` is a space, and a
/// name or value that is not UTF-8 once percent-decoded is refused, not
/// patched with replacement characters (which would make `key=%FF` a
/// filter for U+FFFD). The error is the offending field as sent.
pub(crate) fn decode_urlencoded(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let decode = |part: &[u8]| -> Option<String> {
        let spaced: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        String::from_utf8(bytes).ok()
    };
    bytes
        .split(|&b| b == b'&')
        .filter(|field| !field.is_empty())
        .map(|field| {
            let (k, v) = match field.iter().position(|&b| b == b'=') {
                Some(i) => (&field[..i], &field[i + 1..]),
                None => (field, &field[field.len()..]),
            };
            match (decode(k), decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(String::from_utf8_lossy(field).into_owned()),
            }
        })
        .collect()
}

/// The pairs of a query string (none without one), each name at most once:
/// `action=a&action=b` is not "a or b", and taking one of the two would
/// answer another question than the one asked. Routes merged beside the
/// API (the accounts example's) parse their queries with it too.
///
/// # Errors
/// [`ApiError::BadRequest`] for a parameter that is not UTF-8 once
/// percent-decoded, or naming the parameter given twice.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(q) = raw else {
        return Ok(Vec::new());
    };
    let pairs = decode_urlencoded(q.as_bytes()).map_err(|field| {
        let name = field.split('=').next().unwrap_or_default();
        ApiError::parameter(
            name,
            format!("query parameter {field:?} is not UTF-8 once percent-decoded"),
        )
    })?;
    let mut given = std::collections::HashSet::new();
    for (k, _) in &pairs {
        if !given.insert(k.as_str()) {
            return Err(ApiError::parameter(
                k,
                format!("query parameter {k:?} given twice"),
            ));
        }
    }
    Ok(pairs)
}

/// A `key` filter: 1 to [`cmdr_contract::MAX_KEY_LEN`] bytes, as keys are.
/// An empty one would match nothing and say nothing of why.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `key`.
pub(crate) fn key_filter(v: &str) -> Result<String, ApiError> {
    if v.is_empty() || v.len() > cmdr_contract::MAX_KEY_LEN {
        return Err(ApiError::parameter(
            "key",
            format!(
                "key must be 1 to {} bytes, not {}",
                cmdr_contract::MAX_KEY_LEN,
                v.len()
            ),
        ));
    }
    Ok(v.to_string())
}

/// An `action` filter: a valid action name (as [`cmdr_contract::validate_action`]
/// checks it). An empty or invalid one would match nothing and say nothing
/// of why.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `action`.
pub(crate) fn action_filter(v: &str) -> Result<String, ApiError> {
    cmdr_contract::validate_action(v, "")
        .map_err(|violation| ApiError::parameter("action", violation.message))?;
    Ok(v.to_string())
}

/// A filter on a name (`processor`): not empty, which would match nothing.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `param`.
pub(crate) fn name_filter(param: &str, v: &str) -> Result<String, ApiError> {
    if v.is_empty() {
        return Err(ApiError::parameter(
            param,
            format!("{param} must not be empty (it would match nothing)"),
        ));
    }
    Ok(v.to_string())
}

/// A `limit` query parameter: a page size from 1 to `max`.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `limit`.
pub fn limit_param(v: &str, max: usize) -> Result<usize, ApiError> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::parameter(
                "limit",
                format!("limit must be a number from 1 to {max}, not {v:?}"),
            )
        })
}

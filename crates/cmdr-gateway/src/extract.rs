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

/// The pairs of a query string (none without one), each name at most once:
/// `action=a&action=b` is not "a or b", and taking one of the two would
/// answer another question than the one asked. Routes merged beside the
/// API (the accounts example's) parse their queries with it too.
///
/// # Errors
/// [`ApiError::BadRequest`] for a malformed query, or naming the parameter
/// given twice.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(q) = raw else {
        return Ok(Vec::new());
    };
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(q).map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
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

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

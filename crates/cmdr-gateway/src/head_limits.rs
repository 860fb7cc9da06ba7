//! Limits on a request's head, answered with problem documents.
//!
//! hyper refuses a head it cannot hold (more headers than it has room for,
//! a head over its buffer, a URL over 64 KiB) with a bare `431` or `414`
//! and no body. So the server gives hyper room beyond these limits
//! ([`HYPER_MAX_HEADERS`]) and checks them first itself, outermost, where
//! a refusal is a `431 headers-too-large` or `414 uri-too-long` problem like
//! every other error. Only a head past hyper's own bounds (over
//! [`HYPER_MAX_HEADERS`] headers, about 400 KB, or a URL over 64 KiB) still
//! gets hyper's bare answer.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Most headers a request may have.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of header names and values a request may have.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest request target (path and query), in bytes.
pub const MAX_URI_BYTES: usize = 32 * 1024;
/// Headers hyper makes room for: past [`MAX_HEADERS`], so that this
/// module, not hyper, refuses a request with a few too many.
pub const HYPER_MAX_HEADERS: usize = 1024;

/// Refuses a request whose head is over the limits (see the module).
pub(crate) async fn check(req: Request, next: Next) -> Response {
    match refusal(&req) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

fn refusal(req: &Request) -> Option<ApiError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(ApiError::UriTooLong(format!(
            "the request target is {target} bytes, over the limit of {MAX_URI_BYTES}"
        )));
    }
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return Some(ApiError::HeadersTooLarge(format!(
            "the request has {} headers, over the limit of {MAX_HEADERS}",
            headers.len()
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Some(ApiError::HeadersTooLarge(format!(
            "the request's headers are {bytes} bytes, over the limit of {MAX_HEADER_BYTES}"
        )));
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    async fn status(req: Request) -> (StatusCode, String) {
        let app = Router::new()
            .fallback(get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(check));
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn heads_over_the_limits_get_problems() {
        let ok = Request::get("/commands?limit=5")
            .body(Body::empty())
            .unwrap();
        assert_eq!(status(ok).await.0, StatusCode::OK);

        let long = format!("/commands?key={}", "k".repeat(MAX_URI_BYTES));
        let (code, body) = status(Request::get(long).body(Body::empty()).unwrap()).await;
        assert_eq!(code, StatusCode::URI_TOO_LONG);
        assert!(body.contains("\"code\":\"uri-too-long\""), "{body}");

        let mut many = Request::get("/").body(Body::empty()).unwrap();
        for i in 0..=MAX_HEADERS {
            many.headers_mut().insert(
                axum::http::HeaderName::try_from(format!("x-h{i}")).unwrap(),
                axum::http::HeaderValue::from_static("1"),
            );
        }
        let (code, body) = status(many).await;
        assert_eq!(code, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(body.contains("\"code\":\"headers-too-large\""), "{body}");

        let mut big = Request::get("/").body(Body::empty()).unwrap();
        big.headers_mut().insert(
            "x-big",
            axum::http::HeaderValue::try_from("v".repeat(MAX_HEADER_BYTES)).unwrap(),
        );
        assert_eq!(
            status(big).await.0,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
}

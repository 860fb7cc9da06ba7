//! Limits on a request's head, answered with problem documents.
//!
//! hyper refuses a head it cannot hold (more than 100 headers, a head over
//! its buffer of about 400 KB, a URL over 64 KiB) with a bare `431` or
//! `414` and no body. So the server checks tighter limits on the head's
//! size first itself, as each request comes from hyper (`HeadChecked`,
//! before the router and its layers: the access log and CORS do not see
//! these refusals), where a refusal is a `431 headers-too-large` or `414
//! uri-too-long` problem like every other error. Only a head past hyper's
//! own bounds still gets hyper's bare answer: more than 100 headers (room
//! for more would cost every request a heap allocation: hyper keeps 100 on
//! the stack), about 400 KB of head, or a URL over 64 KiB. An HTTP/1.1
//! request without exactly one `Host` is a `400 bad-request` here too.

use std::convert::Infallible;

use axum::response::{IntoResponse, Response};
use futures::future::Either;

use crate::error::ApiError;

/// Most bytes of header names and values a request may have.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest request target (path and query), in bytes.
pub const MAX_URI_BYTES: usize = 32 * 1024;

/// A hyper service that answers a request whose head is over the limits
/// itself, with its problem, and passes every other on to the service it
/// wraps.
#[derive(Debug, Clone)]
pub(crate) struct HeadChecked<S>(pub S);

impl<S, B> hyper::service::Service<axum::http::Request<B>> for HeadChecked<S>
where
    S: hyper::service::Service<axum::http::Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<std::future::Ready<Result<Response, Infallible>>, S::Future>;

    fn call(&self, req: axum::http::Request<B>) -> Self::Future {
        match refusal(&req) {
            Some(e) => Either::Left(std::future::ready(Ok(e.into_response()))),
            None => Either::Right(self.0.call(req)),
        }
    }
}

/// Why a request's head is refused, if it is.
fn refusal<B>(req: &axum::http::Request<B>) -> Option<ApiError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(ApiError::UriTooLong(format!(
            "the request target is {target} bytes, over the limit of {MAX_URI_BYTES}"
        )));
    }
    let bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Some(ApiError::HeadersTooLarge(format!(
            "the request's headers are {bytes} bytes, over the limit of {MAX_HEADER_BYTES}"
        )));
    }
    // RFC 9112 §6.1: a transfer coding other than chunked (which hyper
    // decodes) would reach the handlers still coded.
    for te in req.headers().get_all(axum::http::header::TRANSFER_ENCODING) {
        let codings = te.to_str().unwrap_or("?");
        if codings
            .split(',')
            .any(|c| !c.trim().eq_ignore_ascii_case("chunked"))
        {
            return Some(ApiError::NotImplemented(format!(
                "Transfer-Encoding {codings:?} is not supported: only chunked"
            )));
        }
    }
    // RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request (an HTTP/2
    // one has been given its `:authority` as Host by then). The same-origin
    // checks read it.
    if req.version() == axum::http::Version::HTTP_11 {
        let mut hosts = req.headers().get_all(axum::http::header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(_), None) => {}
            (None, _) => {
                return Some(ApiError::BadRequest(
                    "an HTTP/1.1 request needs a Host header (RFC 9112)".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Some(ApiError::BadRequest(
                    "Host given more than once (RFC 9112 allows one)".into(),
                ))
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, Request, StatusCode};

    use super::*;

    fn status(req: &Request<()>) -> Option<(StatusCode, &'static str)> {
        refusal(req).map(|e| (e.status(), e.code()))
    }

    #[test]
    fn heads_over_the_limits_get_problems() {
        let ok = Request::get("/commands?limit=5")
            .header("host", "x")
            .body(())
            .unwrap();
        assert_eq!(status(&ok), None);

        let long = format!("/commands?key={}", "k".repeat(MAX_URI_BYTES));
        let long = Request::get(long).header("host", "x").body(()).unwrap();
        assert_eq!(
            status(&long),
            Some((StatusCode::URI_TOO_LONG, "uri-too-long"))
        );

        let mut big = Request::get("/").header("host", "x").body(()).unwrap();
        big.headers_mut().insert(
            "x-big",
            HeaderValue::try_from("v".repeat(MAX_HEADER_BYTES)).unwrap(),
        );
        assert_eq!(
            status(&big),
            Some((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large"
            ))
        );
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_not_implemented() {
        for te in ["gzip, chunked", "chunked, chunked, deflate", "bogus"] {
            let req = Request::post("/commands")
                .header("host", "x")
                .header("transfer-encoding", te)
                .body(())
                .unwrap();
            assert_eq!(
                status(&req),
                Some((StatusCode::NOT_IMPLEMENTED, "not-implemented")),
                "{te}"
            );
        }
        let chunked = Request::post("/commands")
            .header("host", "x")
            .header("transfer-encoding", "Chunked")
            .body(())
            .unwrap();
        assert_eq!(status(&chunked), None);
    }

    #[test]
    fn an_http_1_1_request_has_one_host() {
        let none = Request::get("/").body(()).unwrap();
        assert_eq!(
            status(&none),
            Some((StatusCode::BAD_REQUEST, "bad-request"))
        );
        let two = Request::get("/")
            .header("host", "a")
            .header("host", "b")
            .body(())
            .unwrap();
        assert_eq!(status(&two), Some((StatusCode::BAD_REQUEST, "bad-request")));
        let old = Request::get("/")
            .version(axum::http::Version::HTTP_10)
            .body(())
            .unwrap();
        assert_eq!(status(&old), None, "HTTP/1.0 needs no Host");
    }

    #[tokio::test]
    async fn the_service_answers_refusals_and_passes_the_rest_on() {
        use hyper::service::Service as _;
        let inner = hyper::service::service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(StatusCode::NO_CONTENT.into_response())
        });
        let checked = HeadChecked(inner);
        let ok = checked
            .call(
                Request::get("/")
                    .header("host", "x")
                    .body(String::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        let long = Request::get(format!("/{}", "x".repeat(MAX_URI_BYTES)))
            .body(String::new())
            .unwrap();
        let refused = checked.call(long).await.unwrap();
        assert_eq!(refused.status(), StatusCode::URI_TOO_LONG);
        assert_eq!(
            refused.headers()["content-type"],
            crate::error::PROBLEM_JSON
        );
    }
}

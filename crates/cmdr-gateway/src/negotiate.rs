//! Content negotiation for GET resources: JSON by default, an HTML page when
//! the client prefers `text/html` (a browser), so the API explains itself.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::error::PROBLEM_JSON;

/// Most bytes of a problem document shown as a page: problems are made
/// here and small; a larger one (say, quoting a huge query) stays JSON.
const MAX_PROBLEM_BYTES: usize = 256 * 1024;

/// Whether the client asked for HTML: an `Accept` header that rates
/// `text/html` above every JSON type (by `q`, then by order), as browsers do.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    /// Render HTML instead of JSON.
    pub html: bool,
}

impl Negotiated {
    /// Reads the preference from an `Accept` header value.
    pub fn from_accept(accept: Option<&HeaderValue>) -> Self {
        let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
        // The best (q, earlier first) of each kind.
        let mut html: Option<(f32, usize)> = None;
        let mut json: Option<(f32, usize)> = None;
        for (i, range) in accept.split(',').enumerate() {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            // Compared without allocating: this runs on every request.
            let best = if media.eq_ignore_ascii_case("text/html") {
                &mut html
            } else if media
                .as_bytes()
                .windows(4)
                .any(|w| w.eq_ignore_ascii_case(b"json"))
            {
                &mut json
            } else {
                continue;
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                *best = Some((q, i));
            }
        }
        let html = match (html, json) {
            (Some(_), None) => true,
            (Some((hq, hi)), Some((jq, ji))) => hq > jq || (hq == jq && hi < ji),
            _ => false,
        };
        Self { html }
    }

    /// Answers `body` as JSON, or as an HTML page titled `title`, with
    /// `Vary: Accept` (so that a cache keeps the two apart).
    pub fn render(self, title: &str, body: Value) -> Response {
        let mut res = if self.html {
            Html(crate::html::page(title, &body)).into_response()
        } else {
            Json(body).into_response()
        };
        vary_on_accept(&mut res);
        res
    }
}

/// `res` as an HTML page when it is a problem document and the client
/// prefers HTML (`neg`): a browser that posted a form or followed a link
/// sees an error as it sees every resource, the problem's fields on a page,
/// with the status and headers of the JSON answer. Anything else is
/// returned as it is.
pub(crate) async fn problem_page(neg: Negotiated, res: Response) -> Response {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !is_problem {
        return res;
    }
    let mut res = res;
    // The JSON and the page are two answers to one URL: a cache must keep
    // them apart.
    vary_on_accept(&mut res);
    let small = axum::body::HttpBody::size_hint(res.body())
        .upper()
        .is_some_and(|n| n <= MAX_PROBLEM_BYTES as u64);
    if !neg.html || !small {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // An error cannot happen with the problems made here; the page then
    // shows the status alone.
    let bytes = axum::body::to_bytes(body, MAX_PROBLEM_BYTES)
        .await
        .unwrap_or_default();
    let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let title = problem
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("Error");
    let page = crate::html::page(title, &problem);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(page))
}

/// Middleware: every problem answer of the routes it wraps as an HTML page
/// for clients that prefer HTML, and marked `Vary: Accept` for all (the
/// API's reads; the accounts example's routes too).
pub async fn problems_as_pages(request: Request, next: Next) -> Response {
    let neg = Negotiated::from_accept(request.headers().get(header::ACCEPT));
    let res = next.run(request).await;
    problem_page(neg, res).await
}

/// Marks `res` as chosen by the request's `Accept` header.
pub fn vary_on_accept(res: &mut Response) {
    res.headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept"));
}

impl<S: Send + Sync> FromRequestParts<S> for Negotiated {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_accept(parts.headers.get(header::ACCEPT)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html_and_api_clients_json() {
        let html =
            |s: &'static str| Negotiated::from_accept(Some(&HeaderValue::from_static(s))).html;
        assert!(html(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!html("application/json"));
        assert!(!html("application/json, text/html"));
        assert!(!html("*/*"));
        assert!(!html("text/html;q=0.1, application/json"));
        assert!(html("application/json;q=0.1, text/html"));
        assert!(!html("text/html;q=0"));
        assert!(html("TEXT/HTML"));
        assert!(!Negotiated::from_accept(None).html);
    }
}

//! Content negotiation for GET resources: JSON by default, an HTML page when
//! the client prefers `text/html` (a browser), so the API explains itself.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::Value;

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

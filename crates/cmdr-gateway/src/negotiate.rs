//! Content negotiation for GET resources: JSON by default, an HTML page when
//! the client prefers `text/html` (a browser), so the API explains itself.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::Value;

/// Whether the client asked for HTML (an `Accept` header that names
/// `text/html` before any JSON type).
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    /// Render HTML instead of JSON.
    pub html: bool,
}

impl Negotiated {
    /// Reads the preference from an `Accept` header value.
    pub fn from_accept(accept: Option<&HeaderValue>) -> Self {
        let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
        let html = accept.find("text/html");
        let json = accept.find("json");
        Self {
            html: matches!((html, json), (Some(h), Some(j)) if h < j)
                || (html.is_some() && json.is_none()),
        }
    }

    /// Answers `body` as JSON, or as an HTML page titled `title`.
    pub fn render(self, title: &str, body: Value) -> Response {
        if self.html {
            Html(crate::html::page(title, &body)).into_response()
        } else {
            Json(body).into_response()
        }
    }
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
        assert!(!Negotiated::from_accept(None).html);
    }
}

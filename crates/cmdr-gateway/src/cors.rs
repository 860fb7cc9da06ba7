//! Cross-origin requests (CORS), for browser applications served from
//! another origin than the gateway's.
//!
//! Off unless origins are configured ([`crate::GatewayConfig::cors`]). When
//! on, the layer wraps the authentication layer, so a browser's preflight
//! (`OPTIONS` without a token) is answered, and the actual request is then
//! checked like any other. Allowed: the API's methods, the request headers
//! clients use (`Authorization`, `Content-Type`, `Idempotency-Key`,
//! `Prefer`, `Last-Event-ID`); exposed to scripts: `Location`,
//! `Preference-Applied`, `WWW-Authenticate`. Browsers cache a preflight for
//! [`PREFLIGHT_MAX_AGE`].

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long browsers may cache a preflight answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The origins allowed to call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`*`).
    Any,
    /// These origins, each `scheme://host[:port]`.
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// Parses configured origins: `["*"]` for any, otherwise a list of
    /// `http(s)://host[:port]` (no path, no trailing slash).
    ///
    /// # Errors
    /// A message naming the first origin that is not one.
    pub fn parse(origins: &[String]) -> Result<Self, String> {
        if origins.iter().any(|o| o == "*") {
            if origins.len() > 1 {
                return Err("cors origin \"*\" allows every origin and goes alone".into());
            }
            return Ok(Self::Any);
        }
        let mut list = Vec::with_capacity(origins.len());
        for o in origins {
            // As browsers send it: lower case, no default port.
            let lower = o.to_ascii_lowercase();
            let normal = lower
                .strip_suffix(":443")
                .filter(|_| lower.starts_with("https://"))
                .or_else(|| {
                    lower
                        .strip_suffix(":80")
                        .filter(|_| lower.starts_with("http://"))
                })
                .unwrap_or(&lower);
            let host = normal
                .strip_prefix("https://")
                .or_else(|| normal.strip_prefix("http://"))
                .filter(|h| !h.is_empty() && !h.contains(['/', '?', '#', ' ']));
            let value = host.and_then(|_| HeaderValue::from_str(normal).ok()).ok_or_else(|| {
                format!("cors origin {o:?} is not scheme://host[:port] (e.g. https://app.example.com)")
            })?;
            list.push(value);
        }
        Ok(Self::List(list))
    }
}

/// The CORS layer for `origins` (see the module documentation).
pub fn layer(origins: &CorsOrigins) -> CorsLayer {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("prefer"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::LOCATION,
            header::WWW_AUTHENTICATE,
            HeaderName::from_static("preference-applied"),
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        let parse =
            |v: &[&str]| CorsOrigins::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(parse(&["*"]), Ok(CorsOrigins::Any));
        assert!(
            matches!(parse(&["https://a.example", "http://localhost:8080"]), Ok(CorsOrigins::List(l)) if l.len() == 2)
        );
        for bad in [
            &["*", "https://a.example"][..],
            &["a.example"],
            &["https://a.example/"],
            &["https://"],
            &["ftp://a"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins_are_kept_as_browsers_send_them() {
        let parse =
            |v: &[&str]| CorsOrigins::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            parse(&[
                "HTTPS://App.Example:443",
                "http://b.example:80",
                "https://c.example:8443"
            ]),
            Ok(CorsOrigins::List(vec![
                HeaderValue::from_static("https://app.example"),
                HeaderValue::from_static("http://b.example"),
                HeaderValue::from_static("https://c.example:8443"),
            ]))
        );
    }
}

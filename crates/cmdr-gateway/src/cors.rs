//! Cross-origin requests (CORS), for browser applications served from
//! another origin than the gateway's.
//!
//! Off unless origins are configured ([`crate::GatewayConfig::cors`]). When
//! on, the layer wraps the authentication layer, so a browser's preflight
//! (`OPTIONS` without a token) is answered, and the actual request is then
//! checked like any other. Allowed: the API's methods, the request headers
//! clients use (`Authorization`, `Content-Type`, `Idempotency-Key`,
//! `Prefer`, `Last-Event-ID`); exposed to scripts: `Location`,
//! `Preference-Applied`, `Idempotent-Replayed`, `WWW-Authenticate`. Browsers cache a preflight for
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

/// Refuses a request a browser sent from another site that CORS cannot
/// stop: a WebSocket upgrade or a form post (neither is preflighted, so
/// the browser sends it whatever this server answers). Allowed: no
/// `Origin` (not a browser, or same-origin navigation), the server's own
/// origin (the `Origin` host is the request's `Host`), or a configured one.
///
/// # Errors
/// [`crate::ApiError::Forbidden`].
pub fn check_origin(
    headers: &axum::http::HeaderMap,
    allowed: Option<&CorsOrigins>,
) -> crate::ApiResult<()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    match allowed {
        Some(CorsOrigins::Any) => return Ok(()),
        Some(CorsOrigins::List(list)) if list.iter().any(|o| o == origin) => return Ok(()),
        _ => {}
    }
    let origin_host = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
    });
    // The host the browser asked for: `Host`, or the one a reverse proxy
    // that rewrites `Host` passes on (a page cannot set either header on
    // the requests checked here).
    let mut hosts = [header::HOST.as_str(), "x-forwarded-host"]
        .into_iter()
        .filter_map(|name| headers.get(name).and_then(|h| h.to_str().ok()))
        .flat_map(|h| h.split(',').map(str::trim));
    match origin_host {
        Some(o) if hosts.any(|h| o.eq_ignore_ascii_case(h)) => Ok(()),
        _ => Err(crate::ApiError::Forbidden(format!(
            "a page at {} may not use this server from a browser (not its own origin, nor \
             a configured cors origin)",
            origin.to_str().unwrap_or("another origin")
        ))),
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
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            header::LOCATION,
            header::WWW_AUTHENTICATE,
            HeaderName::from_static("preference-applied"),
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_may_upgrade_and_post_forms_from_the_servers_origin_or_configured_ones() {
        use axum::http::HeaderMap;
        let headers = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:3000"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        let listed = CorsOrigins::parse(&["https://app.example.com".into()]).unwrap();
        assert!(check_origin(&headers(None), None).is_ok());
        assert!(check_origin(&headers(Some("http://127.0.0.1:3000")), None).is_ok());
        assert!(check_origin(&headers(Some("https://evil.example")), None).is_err());
        assert!(check_origin(&headers(Some("null")), None).is_err());
        assert!(check_origin(&headers(Some("https://app.example.com")), Some(&listed)).is_ok());
        assert!(check_origin(&headers(Some("https://evil.example")), Some(&listed)).is_err());
        assert!(check_origin(
            &headers(Some("https://evil.example")),
            Some(&CorsOrigins::Any)
        )
        .is_ok());
        // Behind a proxy that rewrites Host and says what it was.
        let mut proxied = headers(Some("https://cmdr.example.com"));
        assert!(check_origin(&proxied, None).is_err());
        proxied.insert(
            "x-forwarded-host",
            HeaderValue::from_static("cmdr.example.com"),
        );
        assert!(check_origin(&proxied, None).is_ok());
    }

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

//! The access log ([`crate::GatewayConfig::access_log`]): one `info` line
//! per answered request, target `cmdr::access`, with the method, the path,
//! the query (an `access_token` in it shown as `***`), the protocol
//! version (`HTTP/1.1`, `HTTP/2.0`), the status, the time
//! to the answer's head in milliseconds, and the principal when tokens are
//! on. Live streams and WebSockets are logged when their answer starts,
//! not when they end. With `--log-format json` each line is a JSON object
//! a log collector can index.
//!
//! Off by default: at the intake's full rate a line per request costs more
//! than the request (a load balancer in front usually keeps its own log).

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::Principal;

/// Logs `req` once it is answered (see the module).
pub(crate) async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(redacted);
    let version = req.version();
    let res = next.run(req).await;
    let millis = start.elapsed().as_secs_f64() * 1000.0;
    let principal = res.extensions().get::<Principal>().map(|p| p.0.as_str());
    tracing::info!(
        target: "cmdr::access",
        method = %method,
        path = %path,
        query = query.as_deref().unwrap_or(""),
        version = ?version,
        status = res.status().as_u16(),
        ms = (millis * 1000.0).round() / 1000.0,
        principal = principal.unwrap_or(""),
        "request"
    );
    res
}

/// `query` with the value of every `access_token` parameter replaced by
/// `***`: a bearer token must not reach the logs.
fn redacted(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_token_name(name) => format!("{name}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether a query parameter's raw name is `access_token` (perhaps
/// percent-encoded, as the server decodes it).
fn is_token_name(raw: &str) -> bool {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .is_ok_and(|n| n.replace('+', " ") == "access_token")
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn tokens_in_queries_are_hidden() {
        assert_eq!(redacted("from=start&action=pay"), "from=start&action=pay");
        assert_eq!(
            redacted("access_token=s3cret&from=0"),
            "access_token=***&from=0"
        );
        assert_eq!(
            redacted("a=1&access%5Ftoken=s3cret"),
            "a=1&access%5Ftoken=***"
        );
        assert_eq!(redacted("access_token"), "access_token");
        assert_eq!(redacted(""), "");
    }
}

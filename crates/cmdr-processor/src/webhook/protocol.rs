//! The webhook wire protocol (public; documented in `WEBHOOKS.md`): the
//! request's signature, the processor's answers and how they are read.
//!
//! Key decision: anything but a well-formed `200` or `422` is a failure to
//! retry, never a guess. A malformed answer is a processor bug; retrying and
//! then dead-lettering makes it visible instead of losing the command.

use cmdr_contract::{EventDraft, Rejection};
use serde::Deserialize;

/// Header naming the webhook processor a request is for.
pub const PROCESSOR_HEADER: &str = "cmdr-processor";
/// Header with the attempt number (1 for the first try).
pub const ATTEMPT_HEADER: &str = "cmdr-attempt";
/// Header signing a request of a registration with a secret:
/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>`.
pub const SIGNATURE_HEADER: &str = "cmdr-signature";

/// The [`SIGNATURE_HEADER`] value for `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Most events one answer may carry: each becomes a record of its own, so an
/// answer of tiny events could otherwise make hundreds of megabytes of
/// records out of one command.
pub const MAX_ANSWER_EVENTS: usize = 1000;

/// Most bytes of a failed answer's body kept in the error message.
pub const ERROR_BODY_PREVIEW: usize = 512;

/// How a webhook processor decided a command.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookAnswer {
    /// `200 {"events": [...]}`.
    Accept(Vec<EventDraft>),
    /// `422 {"rejection": {...}}`.
    Reject(Rejection),
}

// The answer's shapes, unknown fields refused at every level (a misspelt
// `data` must fail the attempt, not drop the payload).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    events: Vec<WireEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent {
    action: String,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    rejection: WireRejection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRejection {
    code: String,
    message: String,
    #[serde(default)]
    details: serde_json::Value,
}

/// Reads a processor's answer: `Ok` for a well-formed accept or reject, `Err`
/// (the failure to report and retry) for anything else.
pub fn parse_answer(status: u16, body: &[u8]) -> Result<WebhookAnswer, String> {
    match status {
        200 => {
            let parsed: AcceptBody = serde_json::from_slice(body)
                .map_err(|e| format!("invalid 200 answer (expected {{\"events\": [...]}}): {e}"))?;
            if parsed.events.len() > MAX_ANSWER_EVENTS {
                return Err(format!(
                    "invalid 200 answer: {} events, at most {MAX_ANSWER_EVENTS} allowed",
                    parsed.events.len()
                ));
            }
            let drafts: Vec<EventDraft> = parsed
                .events
                .into_iter()
                .map(|e| EventDraft {
                    action: e.action,
                    data: e.data,
                    key: e.key,
                })
                .collect();
            for (i, draft) in drafts.iter().enumerate() {
                if let Some(problem) = crate::records::draft_problem(draft, i) {
                    return Err(format!("invalid 200 answer: {problem}"));
                }
            }
            Ok(WebhookAnswer::Accept(drafts))
        }
        422 => {
            let parsed: RejectBody = serde_json::from_slice(body).map_err(|e| {
                format!("invalid 422 answer (expected {{\"rejection\": {{\"code\", \"message\"}}}}): {e}")
            })?;
            let r = parsed.rejection;
            let rejection = Rejection {
                code: r.code,
                message: r.message,
                details: r.details,
            };
            if let Some(problem) = crate::records::rejection_problem(&rejection) {
                return Err(format!("invalid 422 answer: {problem}"));
            }
            Ok(WebhookAnswer::Reject(rejection))
        }
        other => {
            let end = body.len().min(ERROR_BODY_PREVIEW);
            Err(format!(
                "HTTP {other}: {}",
                String::from_utf8_lossy(&body[..end])
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_has_at_most_max_answer_events() {
        let answer = |n: usize| {
            let events = vec![r#"{"action":"a"}"#; n].join(",");
            parse_answer(200, format!(r#"{{"events":[{events}]}}"#).as_bytes())
        };
        assert!(answer(MAX_ANSWER_EVENTS).is_ok());
        assert!(answer(MAX_ANSWER_EVENTS + 1).is_err_and(|e| e.contains("at most")));
    }

    #[test]
    fn unknown_fields_are_refused_inside_events_and_rejections_too() {
        let typo = parse_answer(200, br#"{"events":[{"action":"paid","date":{"n":1}}]}"#);
        assert!(typo.is_err_and(|e| e.contains("date")));
        let typo = parse_answer(
            422,
            br#"{"rejection":{"code":"c","message":"m","detials":{"x":1}}}"#,
        );
        assert!(typo.is_err_and(|e| e.contains("detials")));
    }

    #[test]
    fn reads_accepts_rejects_and_refuses_the_rest() {
        let ok = parse_answer(
            200,
            br#"{"events":[{"action":"paid","data":{"n":1},"key":"k"}]}"#,
        );
        assert!(matches!(ok, Ok(WebhookAnswer::Accept(e)) if e[0].key.as_deref() == Some("k")));
        let no = parse_answer(
            422,
            br#"{"rejection":{"code":"broke","message":"no money"}}"#,
        );
        assert!(matches!(no, Ok(WebhookAnswer::Reject(r)) if r.code == "broke"));
        assert!(parse_answer(200, b"{}").is_err());
        assert!(parse_answer(200, br#"{"events":[{"action":"bad name"}]}"#).is_err());
        assert!(parse_answer(500, b"boom")
            .unwrap_err()
            .contains("HTTP 500: boom"));
        assert!(parse_answer(422, br#"{"rejection":{"code":""}}"#).is_err());
    }
}

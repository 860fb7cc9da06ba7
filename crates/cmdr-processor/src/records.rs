//! Turning contract events into log records, and a command's outcome into
//! events: the one place where `parent`, `root` and `outcome` are set.

use bytes::Bytes;
use cmdr_contract::{header, Command, Event, EventDraft, Outcome, Rejection};
use cmdr_log::Record;
use serde_json::json;

/// Action of the event emitted when a command is accepted with no events of
/// its own, so that every accepted command still has an outcome event.
pub const ACCEPTED_ACTION: &str = "command-accepted";
/// Rejection code of a command whose handling failed on every attempt.
pub const PROCESSING_FAILED: &str = "processing-failed";

/// The log record of an event: key = the event's key, value = its JSON, with
/// the action and content-type headers and the event's timestamp.
pub fn event_record(event: &Event) -> Record {
    Record::new(Bytes::from(event.key.clone().into_bytes()), event.to_json())
        .with_header(
            header::ACTION,
            Bytes::from(event.action.clone().into_bytes()),
        )
        .with_header(header::CONTENT_TYPE, &b"application/json"[..])
        .with_timestamp(event.timestamp)
}

/// The events of an accepted command: each has `parent` = `root` = the command
/// id; the last one carries `outcome: accepted`. No drafts gives one
/// [`ACCEPTED_ACTION`] event.
pub fn accepted_events(command: &Command, drafts: Vec<EventDraft>, timestamp: i64) -> Vec<Event> {
    let drafts = if drafts.is_empty() {
        vec![EventDraft::new(ACCEPTED_ACTION, serde_json::Value::Null)]
    } else {
        drafts
    };
    let mut events: Vec<Event> = drafts
        .into_iter()
        .map(|d| d.into_event(command.id, command.id, &command.key, timestamp))
        .collect();
    if let Some(last) = events.last_mut() {
        last.outcome = Some(Outcome::Accepted);
    }
    events
}

/// The rejection event of a command (`outcome: rejected`).
pub fn rejected_event(command: &Command, rejection: Rejection, timestamp: i64) -> Event {
    rejection.into_event(command.id, &command.key, timestamp)
}

/// The rejection given to a command whose handler failed on every attempt;
/// its `error` is `last_error` cut to [`MAX_ERROR_LEN`] bytes.
pub fn processing_failed(attempts: u32, last_error: &str) -> Rejection {
    Rejection {
        code: PROCESSING_FAILED.into(),
        message: format!("the command could not be processed after {attempts} attempt(s)"),
        details: json!({"attempts": attempts, "error": cut_error(last_error)}),
    }
}

/// Longest error text kept in a `processing-failed` rejection or a dead
/// letter: a handler's error (or a webhook's answer) may be any size, and
/// what gives up on a command must fit in a record, or the processor
/// would fail on it over and over.
pub const MAX_ERROR_LEN: usize = 4096;

/// `error` cut to at most [`MAX_ERROR_LEN`] bytes (on a character
/// boundary), saying how much was cut.
pub fn cut_error(error: &str) -> std::borrow::Cow<'_, str> {
    if error.len() <= MAX_ERROR_LEN {
        return error.into();
    }
    let mut end = MAX_ERROR_LEN - 64;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes cut)", &error[..end], error.len() - end).into()
}

/// The events caused by `cause` (an event): `parent` = its id, `root` = its root
/// (or its parent when it has none).
pub fn caused_events(cause: &Event, drafts: Vec<EventDraft>, timestamp: i64) -> Vec<Event> {
    let root = cause.root.unwrap_or(cause.parent);
    drafts
        .into_iter()
        .map(|d| d.into_event(cause.id, root, &cause.key, timestamp))
        .collect()
}

/// Room left in a log record for what a processor adds around an event's
/// action, data and key: its key when inherited from the cause, twice (in
/// the JSON, where a control character takes six bytes, and as the record's
/// key; keys are at most [`cmdr_contract::MAX_KEY_LEN`] bytes), the action
/// again as a header (at most [`cmdr_contract::MAX_ACTION_LEN`]), and 2 KiB
/// for its ids, timestamp, outcome and the commit header of the append.
pub const RECORD_HEADROOM: usize =
    7 * cmdr_contract::MAX_KEY_LEN + cmdr_contract::MAX_ACTION_LEN + 2048;

/// Deepest nesting of what a handler returns inside an event (a draft's
/// `data`, a rejection's `details`): serde_json reads at most 128 levels,
/// and the event record adds a few around it. An event nested deeper could
/// be appended but not read back (by the index, or an event processor).
pub const MAX_OUTPUT_DEPTH: usize = 120;

/// Nesting depth of `v` (a scalar is 1), counted up to `MAX_OUTPUT_DEPTH + 1`.
pub(crate) fn depth(v: &serde_json::Value) -> usize {
    fn walk(v: &serde_json::Value, at: usize) -> usize {
        if at > MAX_OUTPUT_DEPTH {
            return at;
        }
        match v {
            serde_json::Value::Object(m) => m.values().map(|c| walk(c, at + 1)).max().unwrap_or(at),
            serde_json::Value::Array(a) => a.iter().map(|c| walk(c, at + 1)).max().unwrap_or(at),
            _ => at,
        }
    }
    walk(v, 1)
}

/// Why event draft `i` of an answer cannot become an event, if it cannot:
/// the same rules as a command's action and key, and a readable depth.
pub(crate) fn draft_problem(draft: &EventDraft, i: usize) -> Option<String> {
    if let Err(v) = cmdr_contract::validate_action(&draft.action, &format!("/events/{i}/action")) {
        return Some(format!("{}: {}", v.pointer, v.message));
    }
    match draft.key.as_deref() {
        Some("") => return Some(format!("/events/{i}/key must not be empty")),
        Some(k) if k.len() > cmdr_contract::MAX_KEY_LEN => {
            return Some(format!(
                "/events/{i}/key must be at most {} bytes",
                cmdr_contract::MAX_KEY_LEN
            ))
        }
        _ => {}
    }
    let deepest = draft.data.values().map(depth).max().unwrap_or(0) + 1;
    (deepest > MAX_OUTPUT_DEPTH)
        .then(|| format!("/events/{i}/data is nested deeper than {MAX_OUTPUT_DEPTH} levels"))
}

/// Why a rejection cannot become a rejection event, if it cannot.
pub(crate) fn rejection_problem(rejection: &Rejection) -> Option<String> {
    if rejection.code.is_empty() {
        return Some("/rejection/code must not be empty".into());
    }
    let deepest = depth(&rejection.details);
    (deepest > MAX_OUTPUT_DEPTH)
        .then(|| format!("/rejection/details is nested deeper than {MAX_OUTPUT_DEPTH} levels"))
}

/// What a handler returns that becomes one event record.
pub(crate) trait RecordPart: serde::Serialize {
    /// Bytes of the record's own key that come from it (a draft's key; the
    /// key is also inside its JSON).
    fn key_len(&self) -> usize;

    /// Why it cannot become event `i` of an answer, if it cannot.
    fn problem(&self, i: usize) -> Option<String>;
}

impl RecordPart for EventDraft {
    fn key_len(&self) -> usize {
        self.key.as_ref().map_or(0, String::len)
    }

    fn problem(&self, i: usize) -> Option<String> {
        draft_problem(self, i)
    }
}

impl RecordPart for Rejection {
    fn key_len(&self) -> usize {
        0
    }

    fn problem(&self, _: usize) -> Option<String> {
        rejection_problem(self)
    }
}

/// Counts the bytes written to it (measures JSON without building it).
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks that each event draft (or the rejection) a handler returned can
/// become an event (see [`draft_problem`], [`rejection_problem`]) that fits
/// in one record of a log that takes at most `limit` bytes. Returned from
/// inside an attempt, the error makes the attempt fail (then the command is
/// dead-lettered and rejected), where an invalid or over-long record would
/// fail the processor's append over and over, or be appended unreadable.
pub(crate) fn fits_in_record<'a, T: RecordPart + 'a>(
    returned: impl IntoIterator<Item = &'a T>,
    limit: Option<usize>,
) -> Result<(), crate::HandlerError> {
    let room = limit.map(|l| l.saturating_sub(RECORD_HEADROOM));
    for (i, one) in returned.into_iter().enumerate() {
        if let Some(problem) = one.problem(i) {
            return Err(format!("the handler's answer is not a valid event: {problem}").into());
        }
        let Some(room) = room else { continue };
        let mut json = ByteCount(0);
        let size = match serde_json::to_writer(&mut json, one) {
            Ok(()) => json.0 + one.key_len(),
            Err(_) => usize::MAX,
        };
        if size > room {
            return Err(format!(
                "event {i} of the handler's answer (counting from 0; {size} bytes) is over the {room} bytes an event record can hold"
            )
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn each_event_must_fit_in_a_record_not_all_of_them_together() {
        let limit = Some(64 * 1024);
        let draft = |len: usize| EventDraft::new("e", json!({"pad": "x".repeat(len)}));
        let three = [draft(40_000), draft(40_000), draft(40_000)];
        assert!(fits_in_record(&three, limit).is_ok());
        assert!(fits_in_record(&[draft(70_000)], limit).is_err());
        // A key counts twice: in the JSON and as the record's key.
        let mut keyed = draft(15_000);
        keyed.key = Some("k".repeat(25_000));
        assert!(fits_in_record(&[keyed], limit).is_err());
        assert!(fits_in_record(&[draft(70_000)], None).is_ok());
        let rejection = Rejection::new("too-big", "x".repeat(70_000));
        assert!(fits_in_record([&rejection], limit).is_err());
    }

    /// Nested `levels` deep: `{"a": {"a": ... 1}}`.
    fn nested(levels: usize) -> serde_json::Value {
        (1..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn drafts_that_cannot_become_readable_events_fail_the_attempt() {
        let limit = Some(64 * 1024);
        let err = |drafts: &[EventDraft]| match fits_in_record(drafts, limit) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted"),
        };
        // Deep enough to append, too deep to read back.
        let deep = EventDraft::new("echoed", json!({ "payload": nested(125) }));
        assert!(err(&[deep]).contains("nested deeper"));
        let fine = EventDraft::new("echoed", json!({ "payload": nested(100) }));
        assert!(fits_in_record(std::slice::from_ref(&fine), limit).is_ok());
        // A long action would not fit the headroom; a bad one is no action.
        assert!(err(&[EventDraft::new("a".repeat(40_000), json!({}))]).contains("/events/0/action"));
        assert!(
            err(&[fine.clone(), EventDraft::new("has space", json!({}))])
                .contains("/events/1/action")
        );
        let mut keyless = fine.clone();
        keyless.key = Some(String::new());
        assert!(err(&[keyless]).contains("must not be empty"));
        let mut long_key = fine;
        long_key.key = Some("k".repeat(cmdr_contract::MAX_KEY_LEN + 1));
        assert!(err(&[long_key]).contains("at most"));
        // Checked without a record limit too.
        assert!(fits_in_record(&[EventDraft::new("", json!({}))], None).is_err());
        let no_code = Rejection::new("", "why");
        assert!(fits_in_record([&no_code], None).is_err());
        let mut deep_details = Rejection::new("no", "why");
        deep_details.details = nested(125);
        assert!(fits_in_record([&deep_details], None).is_err());
    }
}

//! Commands: as a client sends them and as they are written to the log.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{validate_action, Violation, Violations};

/// Who sent a command and how; free-form beyond `principal`.
pub type Meta = Map<String, Value>;

/// A command as a client sends it: `{"action": ..., "data": {...}, "key": ...}`.
///
/// Decoded leniently (as a JSON value) so that every structural problem can be
/// reported at once with a pointer; see [`CommandRequest::from_value`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// What the command asks for, e.g. `open-account`.
    pub action: String,
    /// The payload; always a JSON object.
    pub data: Map<String, Value>,
    /// Ordering key (aggregate id). Defaults to the command id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The longest ordering key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

impl CommandRequest {
    /// Checks a decoded JSON document against the command shape, reporting
    /// every violation with a JSON Pointer.
    ///
    /// # Errors
    /// [`Violations`] listing each missing or invalid field.
    pub fn from_value(value: Value) -> Result<Self, Violations> {
        let Value::Object(mut obj) = value else {
            return Err(Violations(vec![Violation::new(
                "",
                "a command must be a JSON object",
            )]));
        };
        let mut violations = Vec::new();
        let action = match obj.remove("action") {
            Some(Value::String(a)) => {
                if let Err(v) = validate_action(&a, "/action") {
                    violations.push(v);
                }
                a
            }
            Some(_) => {
                violations.push(Violation::new("/action", "action must be a string"));
                String::new()
            }
            None => {
                violations.push(Violation::new("/action", "action is required"));
                String::new()
            }
        };
        let data = match obj.remove("data") {
            Some(Value::Object(d)) => d,
            Some(_) => {
                violations.push(Violation::new("/data", "data must be a JSON object"));
                Map::new()
            }
            None => {
                violations.push(Violation::new("/data", "data is required"));
                Map::new()
            }
        };
        let key = match obj.remove("key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => match key_violation(&k) {
                Some(v) => {
                    violations.push(v);
                    None
                }
                None => Some(k),
            },
            Some(_) => {
                violations.push(Violation::new("/key", "key must be a string"));
                None
            }
        };
        // Listed up to a bound: a body of 150,000 unknown fields made an
        // answer of 11 MB.
        let room = MAX_UNKNOWN_LISTED;
        for unknown in obj.keys().take(room) {
            violations.push(Violation::new(
                format!("/{}", escape_pointer(unknown)),
                "unknown field (expected action, data, key)",
            ));
        }
        if obj.len() > room {
            violations.push(Violation::new(
                "",
                format!("and {} more unknown fields", obj.len() - room),
            ));
        }
        if violations.is_empty() {
            Ok(Self { action, data, key })
        } else {
            Err(Violations(violations))
        }
    }
}

impl CommandRequest {
    /// Decodes a command from JSON text and checks it as
    /// [`CommandRequest::from_value`] does, with the same answers. A
    /// well-formed command is decoded straight into its fields, without
    /// first building a JSON value of the whole document (this is on the
    /// path of every posted command); anything else takes the lenient path
    /// that reports every violation. Text that would not be stored as sent
    /// (a member given twice, a number beyond 64 bits; see [`crate::exact`])
    /// is refused too, with a pointer to it.
    ///
    /// # Errors
    /// [`FromJsonError::Malformed`] when `json` is not JSON,
    /// [`FromJsonError::Invalid`] when it is not a valid command.
    pub fn from_json(json: &[u8]) -> Result<Self, FromJsonError> {
        /// The exact shape of a command; anything else fails to decode.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Exact {
            action: String,
            data: Map<String, Value>,
            #[serde(default)]
            key: Option<String>,
        }
        // Serde also decodes a struct from an array; only an object is a command.
        let object = json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let exact = if object {
            serde_json::from_slice::<Exact>(json).ok()
        } else {
            None
        };
        if let Some(Exact { action, data, key }) = exact {
            let valid = validate_action(&action, "/action").is_ok()
                && key.as_deref().and_then(key_violation).is_none();
            if valid {
                crate::exact::check(json)
                    .map_err(|v| FromJsonError::Invalid(Violations(vec![v])))?;
                return Ok(Self { action, data, key });
            }
        }
        let value: Value = match serde_json::from_slice(json) {
            Ok(value) => value,
            Err(e) => {
                // A number past a double's range is valid JSON that serde
                // cannot hold: refused like an integer past 64 bits, with
                // its pointer, rather than as malformed.
                if crate::exact::is_out_of_range(&e) {
                    if let Err(v) = crate::exact::check(json) {
                        return Err(FromJsonError::Invalid(Violations(vec![v])));
                    }
                }
                return Err(FromJsonError::Malformed(e));
            }
        };
        let checked = Self::from_value(value);
        match (checked, crate::exact::check(json)) {
            (Ok(request), Ok(())) => Ok(request),
            (Ok(_), Err(v)) => Err(FromJsonError::Invalid(Violations(vec![v]))),
            (Err(Violations(mut all)), inexact) => {
                all.extend(inexact.err());
                Err(FromJsonError::Invalid(Violations(all)))
            }
        }
    }
}

/// Why [`CommandRequest::from_json`] refused its input.
#[derive(Debug)]
pub enum FromJsonError {
    /// Not JSON at all.
    Malformed(serde_json::Error),
    /// JSON, but not a valid command: every violation, with its pointer.
    Invalid(Violations),
}

/// What is wrong with an ordering key, if anything.
fn key_violation(key: &str) -> Option<Violation> {
    if key.is_empty() {
        Some(Violation::new("/key", "key must not be empty"))
    } else if key.len() > MAX_KEY_LEN {
        Some(Violation::new(
            "/key",
            format!("key must be at most {MAX_KEY_LEN} bytes"),
        ))
    } else {
        None
    }
}

/// Most unknown fields of a command listed one by one in its violations.
pub const MAX_UNKNOWN_LISTED: usize = 100;

/// Escapes one JSON Pointer reference token (RFC 6901).
pub fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A command as written to the commands topic (log key = `key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Assigned by cmdr, UUID v7.
    pub id: Uuid,
    /// What the command asks for.
    pub action: String,
    /// The payload.
    pub data: Map<String, Value>,
    /// Ordering key; the command id unless the client gave one.
    pub key: String,
    /// When cmdr accepted it, ms since the epoch.
    pub timestamp: i64,
    /// Who sent it and how (`principal`, ...).
    #[serde(default)]
    pub meta: Meta,
}

impl Command {
    /// Builds the logged command for a validated request, assigning a new id.
    ///
    /// # Errors
    /// Never today; kept fallible so that future checks need no API change.
    pub fn from_request(
        req: CommandRequest,
        timestamp: i64,
        meta: Meta,
    ) -> Result<Self, Violations> {
        let id = crate::new_id();
        Ok(Self {
            id,
            key: req.key.unwrap_or_else(|| id.to_string()),
            action: req.action,
            data: req.data,
            timestamp,
            meta,
        })
    }

    /// The log value: this command as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a log value.
    ///
    /// # Errors
    /// When the bytes are not a command in the contract's shape.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Where a command stands, derived from the events topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// Appended, no outcome yet.
    Pending,
    /// Its processor accepted it (its outcome event is indexed).
    Accepted,
    /// Its processor rejected it.
    Rejected,
}

impl CommandStatus {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "accepted" => Some(Self::Accepted),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_listed_up_to_a_bound() {
        let mut v = json!({"action": "a", "data": {}});
        for i in 0..(MAX_UNKNOWN_LISTED + 50) {
            v[format!("x{i}")] = json!(1);
        }
        let errors = CommandRequest::from_value(v).unwrap_err().0;
        assert_eq!(errors.len(), MAX_UNKNOWN_LISTED + 1);
        assert_eq!(errors.last().unwrap().message, "and 50 more unknown fields");
    }

    #[test]
    fn from_json_answers_as_from_value_does() {
        let long_key = format!("\"{}\"", "k".repeat(MAX_KEY_LEN + 1));
        let cases = [
            r#"{"action": "open", "data": {"n": [1, 2.5, null, {"x": "\u00e9"}]}, "key": "a-1"}"#
                .to_string(),
            r#"  {"data": {}, "action": "open"}"#.to_string(),
            r#"{"action": "open", "data": {}, "key": null}"#.to_string(),
            r#"["open", {}, "k"]"#.to_string(),
            r#"{"action": "Not An Action!", "data": {}}"#.to_string(),
            r#"{"action": "open", "data": {}, "key": ""}"#.to_string(),
            format!(r#"{{"action": "open", "data": {{}}, "key": {long_key}}}"#),
            r#"{"action": "open", "data": {}, "extra": 1}"#.to_string(),
            r#"{"action": "open", "data": []}"#.to_string(),
            r#"{"action": 5}"#.to_string(),
            r#""open""#.to_string(),
        ];
        for case in &cases {
            let lenient = serde_json::from_slice::<Value>(case.as_bytes())
                .map(|v| CommandRequest::from_value(v).map_err(|e| e.0));
            match (CommandRequest::from_json(case.as_bytes()), lenient) {
                (Ok(fast), Ok(Ok(slow))) => assert_eq!(fast, slow, "{case}"),
                (Err(FromJsonError::Invalid(fast)), Ok(Err(slow))) => {
                    assert_eq!(fast.0, slow, "{case}");
                }
                (fast, slow) => panic!("{case}: {fast:?} but {slow:?}"),
            }
        }
        assert!(matches!(
            CommandRequest::from_json(b"{oops"),
            Err(FromJsonError::Malformed(_))
        ));
    }

    /// What a parser would store otherwise than sent is refused, on the
    /// fast path and the lenient one alike.
    #[test]
    fn from_json_refuses_what_would_not_be_stored_as_sent() {
        for (case, pointer) in [
            (r#"{"action": "a", "data": {}, "action": "b"}"#, "/action"),
            (r#"{"action": "a", "data": {"x": 1, "x": 2}}"#, "/data/x"),
            (
                r#"{"action": "a", "data": {"n": 18446744073709551617}}"#,
                "/data/n",
            ),
            (
                r#"{"action": "a", "data": {"n": 1e-400}, "extra": 1}"#,
                "/data/n",
            ),
            // Past a double: serde cannot even read it.
            (r#"{"action": "a", "data": {"n": [1e400]}}"#, "/data/n/0"),
        ] {
            match CommandRequest::from_json(case.as_bytes()) {
                Err(FromJsonError::Invalid(v)) => {
                    assert!(v.0.iter().any(|v| v.pointer == pointer), "{case}: {v:?}");
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    }

    /// Decimals are read as the nearest double, as JavaScript's
    /// `JSON.parse` and Python's `json` read them, up to the largest double
    /// (serde_json's default, faster reading was one double off for some,
    /// and refused the largest one).
    #[test]
    fn decimals_are_stored_as_the_nearest_double() {
        let long = format!("17976931348623157{}.0", "0".repeat(289));
        let json = format!(
            r#"{{"action": "a", "data": {{"long": {long}, "max": 1.7976931348623158e308, "tie": 9007199254740993.0}}}}"#
        );
        let req = CommandRequest::from_json(json.as_bytes()).unwrap();
        let cmd = Command::from_request(req, 1, Meta::new()).unwrap();
        let stored: Value = serde_json::from_slice(&cmd.to_json()).unwrap();
        assert_eq!(
            stored["data"]["long"].as_f64(),
            Some(1.797_693_134_862_315_6e305)
        );
        assert_eq!(stored["data"]["max"].as_f64(), Some(f64::MAX));
        assert_eq!(
            stored["data"]["tie"].as_f64(),
            Some(9_007_199_254_740_992.0)
        );
    }

    #[test]
    fn reports_every_violation_with_a_pointer() {
        let err = CommandRequest::from_value(json!({"action": "", "data": [], "key": 3, "x/y": 1}))
            .unwrap_err();
        let pointers: Vec<_> = err.0.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/action", "/data", "/key", "/x~1y"]);
    }

    #[test]
    fn key_defaults_to_id() {
        let req = CommandRequest::from_value(json!({"action": "a", "data": {}})).unwrap();
        let cmd = Command::from_request(req, 1, Meta::new()).unwrap();
        assert_eq!(cmd.key, cmd.id.to_string());
    }
}

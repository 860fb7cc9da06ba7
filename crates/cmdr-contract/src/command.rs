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
            Some(Value::String(k)) if k.is_empty() => {
                violations.push(Violation::new("/key", "key must not be empty"));
                None
            }
            Some(Value::String(k)) if k.len() > MAX_KEY_LEN => {
                violations.push(Violation::new(
                    "/key",
                    format!("key must be at most {MAX_KEY_LEN} bytes"),
                ));
                None
            }
            Some(Value::String(k)) => Some(k),
            Some(_) => {
                violations.push(Violation::new("/key", "key must be a string"));
                None
            }
        };
        for unknown in obj.keys() {
            violations.push(Violation::new(
                format!("/{}", escape_pointer(unknown)),
                "unknown field (expected action, data, key)",
            ));
        }
        if violations.is_empty() {
            Ok(Self { action, data, key })
        } else {
            Err(Violations(violations))
        }
    }
}

/// Escapes one JSON Pointer reference token (RFC 6901).
pub(crate) fn escape_pointer(token: &str) -> String {
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

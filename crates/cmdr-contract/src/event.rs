//! Events: what processors emit, and how a command's outcome is told.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The action of a rejection event.
pub const REJECTED_ACTION: &str = "command-rejected";

/// How an event ends the handling of the command that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The command was accepted; this is its last event.
    Accepted,
    /// The command was rejected; this event says why.
    Rejected,
}

/// Why a command was rejected: machine-readable `code`, human `message`, free `details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Stable, machine-readable reason, e.g. `insufficient-funds`.
    pub code: String,
    /// For a human.
    pub message: String,
    /// Anything else the processor wants the client to know.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

/// An event as written to the events topic (log key = `key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUID v7.
    pub id: Uuid,
    /// The command or event that caused this one.
    pub parent: Uuid,
    /// The command at the root of the causal chain (equals `parent` for a command's own events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Uuid>,
    /// What happened, e.g. `account-opened`.
    pub action: String,
    /// The payload.
    pub data: Map<String, Value>,
    /// Ordering key.
    pub key: String,
    /// When it was emitted, ms since the epoch.
    pub timestamp: i64,
    /// Set on the event that ends a command's handling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

impl Event {
    /// The log value: this event as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a log value.
    ///
    /// # Errors
    /// When the bytes are not an event in the contract's shape.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The rejection this event carries, if it is a rejection event.
    pub fn rejection(&self) -> Option<Rejection> {
        if self.outcome != Some(Outcome::Rejected) {
            return None;
        }
        serde_json::from_value(Value::Object(self.data.clone())).ok()
    }
}

/// An event a processor wants to emit; cmdr fills in id, parent, root and timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDraft {
    /// What happened.
    pub action: String,
    /// The payload.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// Ordering key; defaults to the key of what caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl EventDraft {
    /// A draft with this action and data, keyed like its cause.
    pub fn new(action: impl Into<String>, data: Value) -> Self {
        let data = match data {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        Self {
            action: action.into(),
            data,
            key: None,
        }
    }

    /// Sets the ordering key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Turns the draft into an event caused by `parent` (key defaults to `parent_key`).
    pub fn into_event(self, parent: Uuid, root: Uuid, parent_key: &str, timestamp: i64) -> Event {
        Event {
            id: crate::new_id(),
            parent,
            root: Some(root),
            action: self.action,
            data: self.data,
            key: self.key.unwrap_or_else(|| parent_key.to_string()),
            timestamp,
            outcome: None,
        }
    }
}

impl Rejection {
    /// A rejection with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: Value::Null,
        }
    }

    /// The rejection event for the command `command_id` keyed `key`.
    pub fn into_event(self, command_id: Uuid, key: &str, timestamp: i64) -> Event {
        let data = match serde_json::to_value(&self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Event {
            id: crate::new_id(),
            parent: command_id,
            root: Some(command_id),
            action: REJECTED_ACTION.into(),
            data,
            key: key.to_string(),
            timestamp,
            outcome: Some(Outcome::Rejected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_round_trips_through_an_event() {
        let id = crate::new_id();
        let ev = Rejection::new("insufficient-funds", "balance 5 < 10").into_event(id, "k", 1);
        let back = Event::from_json(&ev.to_json()).unwrap();
        assert_eq!(back.rejection().unwrap().code, "insufficient-funds");
        assert_eq!(back.parent, id);
    }
}

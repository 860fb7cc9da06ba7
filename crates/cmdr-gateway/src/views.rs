//! The JSON shapes of resources (an HTTP boundary format): a command with its
//! status, outcome, events and links; an event with its links.

use cmdr_contract::{Command, CommandStatus};
use cmdr_index::{CommandTree, CommandView, EventView};
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Links of a command resource.
#[derive(Serialize)]
struct CommandLinks {
    #[serde(rename = "self")]
    this: String,
    events: String,
}

/// A command resource, borrowing the command so the hot path does not copy it.
#[derive(Serialize)]
pub struct CommandBody<'a> {
    id: Uuid,
    action: &'a str,
    data: &'a Map<String, Value>,
    key: &'a str,
    timestamp: i64,
    meta: &'a Map<String, Value>,
    status: CommandStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<Value>>,
    /// With `events`: whether they are the whole causal tree (a large one
    /// is cut, its outcome event kept; `links.events` lists all of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    events_complete: Option<bool>,
    links: CommandLinks,
}

impl<'a> CommandBody<'a> {
    /// A command with `status` and no events (the answer to an async POST).
    pub fn new(command: &'a Command, status: CommandStatus) -> Self {
        Self {
            id: command.id,
            action: &command.action,
            data: &command.data,
            key: &command.key,
            timestamp: command.timestamp,
            meta: &command.meta,
            status,
            outcome: None,
            events: None,
            events_complete: None,
            links: CommandLinks {
                this: format!("/commands/{}", command.id),
                events: format!("/events?root={}", command.id),
            },
        }
    }

    /// An indexed command with its causal tree.
    pub fn with_tree(tree: &'a CommandTree) -> Self {
        let mut body = Self::with_events(&tree.command, &tree.events);
        body.events_complete = Some(tree.complete);
        body
    }

    /// An indexed command with its causal events (the outcome event among
    /// them; without it, as in a listing, the outcome gives only the event's
    /// id and the status).
    pub fn with_events(view: &'a CommandView, events: &[EventView]) -> Self {
        let mut body = Self::new(&view.command, view.status);
        body.outcome = view.outcome_event.map(|id| {
            match events.iter().find(|e| e.event.id == id) {
                Some(e) => {
                    let mut o = json!({"event": e.event.id, "action": e.event.action, "status": view.status});
                    if let Some(r) = e.event.rejection() {
                        o["rejection"] = json!(r);
                    }
                    o
                }
                None => json!({"event": id, "status": view.status}),
            }
        });
        body.events = Some(events.iter().map(event_json).collect());
        body
    }

    /// As a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// An event resource.
pub fn event_json(view: &EventView) -> Value {
    let mut v = serde_json::to_value(&view.event).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("position".into(), json!(view.position));
        let mut links = json!({"self": format!("/events/{}", view.event.id), "parent": format!("/events/{}", view.event.parent)});
        if let Some(root) = view.event.root {
            links["root"] = json!(format!("/commands/{root}"));
            if root == view.event.parent {
                links["parent"] = json!(format!("/commands/{root}"));
            }
        }
        m.insert("links".into(), links);
    }
    v
}

//! What a handler is: an async function of the input and a [`Context`] that
//! returns a [`Decision`] (commands) or events (events), or a transient error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cmdr_contract::{Command, Event, EventDraft, Rejection};
use uuid::Uuid;

/// A handler's transient failure: the runtime retries it with backoff, and
/// settles the input as failed after the last attempt. Any error type converts
/// into it with `?`.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How a command handler decides a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Accept the command; these events are appended (parent = root = the
    /// command id) and the last one is marked as the outcome. No events at all
    /// gives one `command-accepted` event.
    Accept(Vec<EventDraft>),
    /// Reject the command with a reason; one `command-rejected` event is appended.
    Reject(Rejection),
}

impl Decision {
    /// Accepts with these events.
    pub fn accept(events: impl IntoIterator<Item = EventDraft>) -> Self {
        Self::Accept(events.into_iter().collect())
    }

    /// Accepts with a single event of `action` and `data`, keyed like the command.
    pub fn accept_one(action: impl Into<String>, data: serde_json::Value) -> Self {
        Self::Accept(vec![EventDraft::new(action, data)])
    }

    /// Rejects with a machine-readable `code` and a human `message`.
    pub fn reject(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Reject(Rejection::new(code, message))
    }

    /// Rejects with `code`, `message` and free-form `details`.
    pub fn reject_with(
        code: impl Into<String>,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self::Reject(Rejection {
            code: code.into(),
            message: message.into(),
            details,
        })
    }
}

/// What a handler knows besides its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The input's id (command or event id).
    pub id: Uuid,
    /// The input's ordering key; emitted events default to it.
    pub key: String,
    /// The command at the root of the causal chain (the command itself for command handlers).
    pub root: Uuid,
    /// 1 for the first try, 2 for the first retry, and so on.
    pub attempt: u32,
    /// The input's partition in its topic.
    pub partition: u32,
    /// The input's offset in its partition.
    pub offset: u64,
}

/// A boxed, sendable future, as stored handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A stored command handler.
pub(crate) type CommandHandler =
    Arc<dyn Fn(Command, Context) -> BoxFuture<Result<Decision, HandlerError>> + Send + Sync>;
/// A stored event handler.
pub(crate) type EventHandler =
    Arc<dyn Fn(Event, Context) -> BoxFuture<Result<Vec<EventDraft>, HandlerError>> + Send + Sync>;

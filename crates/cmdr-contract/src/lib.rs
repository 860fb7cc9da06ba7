//! The data contract every part of cmdr agrees on: what a command and an
//! event are, how they look on the log, and how a command's outcome is told.
//!
//! This crate does no I/O. It is the boundary format of the log values, so
//! every change here is a change to a public, versioned contract (see
//! `CONTRACT.md` at the repository root).
//!
//! ```
//! use cmdr_contract::{CommandRequest, Command};
//! let req: CommandRequest = serde_json::from_str(
//!     r#"{"action":"open-account","data":{"owner":"ada"},"key":"acc-1"}"#).unwrap();
//! let cmd = Command::from_request(req, 1_700_000_000_000, Default::default()).unwrap();
//! assert_eq!(cmd.key, "acc-1");
//! let bytes = cmd.to_json();
//! assert_eq!(Command::from_json(&bytes).unwrap(), cmd);
//! ```

mod action;
mod command;
mod event;
pub mod exact;
mod topics;
pub mod trace_context;
mod violation;

pub use action::{validate_action, MAX_ACTION_LEN};
pub use command::{
    escape_pointer, Command, CommandRequest, CommandStatus, FromJsonError, Meta, MAX_KEY_LEN,
};
pub use event::{Event, EventDraft, Outcome, Rejection, REJECTED_ACTION};
pub use topics::{header, COMMANDS_TOPIC, EVENTS_TOPIC, SCHEMAS_TOPIC};
pub use trace_context::TraceContext;
pub use violation::{Violation, Violations};

/// A new time-ordered id (UUID v7), as used for commands and events.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// Milliseconds since the Unix epoch, the contract's timestamp unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

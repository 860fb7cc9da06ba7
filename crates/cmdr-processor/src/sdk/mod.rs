//! The Rust processor SDK: register an async handler per command action and
//! per event action, and run them as consumer groups over any [`cmdr_log::Log`].
//!
//! Key decision: handlers decide, the runtime does the rest. A command handler
//! returns a [`Decision`] (accept with events, or reject); the runtime sets
//! `parent`, `root` and the outcome mark, keeps per-key order, retries
//! transient errors, and appends events and offset atomically. See
//! [`Processor`] for an example.

mod builder;
mod dispatch;
mod follow;
mod handler;

pub use builder::{
    ensure_topics, Processor, ProcessorBuilder, DEFAULT_PARTITIONS, EVENTS_GROUP_SUFFIX,
};
pub use follow::{follow, replay, FOLLOW_BATCH};
pub use handler::{BoxFuture, Context, Decision, HandlerError};

pub(crate) use dispatch::{with_retries, Retried};

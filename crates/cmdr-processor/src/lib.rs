//! cmdr's processing layer: where the business lives.
//!
//! - [`sdk`]: the Rust SDK. [`Processor::builder`] registers a handler per
//!   command action and per event action and runs them as consumer groups.
//! - [`webhook`]: processors in any language, as HTTP endpoints cmdr POSTs each
//!   command to (protocol in `WEBHOOKS.md`), registered in a [`WebhookRegistry`].
//! - [`dead_letter`]: inputs that failed every attempt, kept and queryable.
//! - [`example`]: the accounts domain, a worked example.
//!
//! Key design decision: processing is exactly-once on the embedded log.
//! Events emitted for an input and the consumer group offset past it are
//! appended in one atomic [`cmdr_log::Log::append_with_commit`], in offset
//! order per partition, so a crash at any point neither loses nor repeats a
//! command's outcome. Only dead letters (written before the outcome) may be
//! repeated after a crash, and their reader hides repeats.
//!
//! Layering: this crate depends on `cmdr-contract` and `cmdr-log` only; it
//! knows nothing of HTTP serving (the gateway exposes it).

#![warn(missing_docs)]

pub mod dead_letter;
mod engine;
mod error;
pub mod example;
pub mod records;
mod retry;
pub mod sdk;
mod task_guard;
pub mod tls;
pub mod webhook;

pub use dead_letter::{DeadLetter, DeadLetters, DEAD_LETTERS_TOPIC};
pub use engine::DEFAULT_MAX_IN_FLIGHT;
pub use error::ProcessorError;
pub use retry::{
    RetryPolicy, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF,
};
pub use sdk::{Context, Decision, HandlerError, Processor, ProcessorBuilder};
pub use webhook::{WebhookConfig, WebhookRegistration, WebhookRegistry};

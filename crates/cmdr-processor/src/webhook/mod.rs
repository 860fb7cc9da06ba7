//! Webhook processors: command processors in any language, as plain HTTP
//! endpoints. cmdr POSTs each command of the registered actions to the URL
//! and reads the answer (`200` events, `422` rejection, anything else a
//! failure to retry). The protocol is public and documented in `WEBHOOKS.md`.
//!
//! - [`registry`]: registrations, stored durably in the log.
//! - [`runner`]: one processor's consumer group and HTTP calls.
//! - [`supervisor`]: one runner per registration, following changes.
//! - [`protocol`]: the answers and how they are read.
//! - [`settled`]: skipping commands another processor already settled.

pub mod protocol;
pub mod registry;
pub mod runner;
pub mod settled;
pub mod supervisor;

pub use registry::{RegistryError, WebhookRegistration, WebhookRegistry, PROCESSORS_TOPIC};
pub use runner::{run_webhook, WebhookConfig, DEFAULT_MAX_ANSWER_BYTES, DEFAULT_WEBHOOK_TIMEOUT};
pub use settled::{SettledCheck, SettledCommands};
pub use supervisor::supervise;

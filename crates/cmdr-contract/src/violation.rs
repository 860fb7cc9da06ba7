//! Validation failures, each located by a JSON Pointer (RFC 6901).

use serde::{Deserialize, Serialize};

/// One thing wrong with an input, located by a JSON Pointer into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON Pointer to the offending field, e.g. `/data/amount`; `""` is the whole document.
    pub pointer: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl Violation {
    /// A violation at `pointer` saying `message`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// Every violation found in one input (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} violation(s), first: {}: {}", .0.len(), .0[0].pointer, .0[0].message)]
pub struct Violations(pub Vec<Violation>);

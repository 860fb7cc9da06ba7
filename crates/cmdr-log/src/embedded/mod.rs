//! The embedded log: topics of partitions, each partition a folder of
//! segment files, in a data directory. Durable (group-committed `fdatasync`),
//! crash-safe (tail validation and truncation on open) and fast.
//!
//! Layout of the data directory:
//!
//! ```text
//! <dir>/topics/<topic>/topic.json                  {"partitions": N, "format": 1}
//! <dir>/topics/<topic>/<partition>/<base>.log       records (see [`format`])
//! <dir>/topics/<topic>/<partition>/<base>.index     sparse offset index: (u32 rel offset, u32 position)*
//! <dir>/topics/<topic>/<partition>/<base>.timeindex time index: (i64 max timestamp, u32 rel offset)*
//! <dir>/groups/<group>.json                         committed consumer group offsets
//! ```

mod config;
pub mod format;

pub use config::{LogConfig, SyncMode};

//! Names of cmdr's topics and of the log record headers it sets.

/// The topic cmdr appends accepted commands to. Only cmdr writes here.
pub const COMMANDS_TOPIC: &str = "commands";
/// The topic processors append events to.
pub const EVENTS_TOPIC: &str = "events";
/// cmdr's internal topic of registered JSON Schemas (one record per version).
pub const SCHEMAS_TOPIC: &str = "_cmdr_schemas";

/// Log record header names set by cmdr.
pub mod header {
    /// The command's or event's action, so consumers can filter without decoding the value.
    pub const ACTION: &str = "cmdr-action";
    /// The `Idempotency-Key` a command was posted with.
    pub const IDEMPOTENCY_KEY: &str = "cmdr-idempotency-key";
    /// SHA-256 (hex) of the request that carried the idempotency key.
    pub const IDEMPOTENCY_HASH: &str = "cmdr-idempotency-hash";
    /// The content type of the value (always `application/json` for now).
    pub const CONTENT_TYPE: &str = "content-type";
}

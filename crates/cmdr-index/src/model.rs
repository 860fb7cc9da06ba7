//! What the index returns: commands and events with their derived state,
//! queries with filters, and pages with a cursor.

use cmdr_contract::{Command, CommandStatus, Event};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default page size of a listing.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size a listing accepts.
pub const MAX_LIMIT: usize = 1000;
/// Most index entries one listing examines before it returns a (possibly
/// short) page with a cursor; bounds the work a selective filter can cause.
pub const MAX_SCAN: usize = 20_000;
/// About the most bytes of items one listing page holds: a page of large
/// commands ends sooner (with a cursor), so that no answer holds a
/// thousand megabyte-sized commands at once.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most events returned as a command's causal tree.
pub const MAX_CHILDREN: usize = 1000;

/// Where a record is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

/// A command as indexed: the logged command and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandView {
    /// The command as logged.
    #[serde(flatten)]
    pub command: Command,
    /// `pending` until its outcome event is indexed.
    pub status: CommandStatus,
    /// Id of the event that settled it, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_event: Option<Uuid>,
    /// Where it is in the commands topic.
    pub position: LogPosition,
}

/// A command with its causal tree, read together ([`crate::Index::command_tree`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandTree {
    /// The command and its status.
    pub command: CommandView,
    /// Its events, oldest first, the outcome event among them once there is one.
    pub events: Vec<EventView>,
    /// Whether `events` holds the whole tree (else list it with `?root=`).
    pub complete: bool,
}

/// An event as indexed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// The event as logged.
    #[serde(flatten)]
    pub event: Event,
    /// Where it is in the events topic.
    pub position: LogPosition,
}

/// Listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Newest first (the default).
    #[default]
    Desc,
    /// Oldest first.
    Asc,
}

/// Filters and paging shared by command and event listings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this action.
    pub action: Option<String>,
    /// Only this key.
    pub key: Option<String>,
    /// Only this status (commands only).
    pub status: Option<CommandStatus>,
    /// Only events caused by this command or event (events only).
    pub parent: Option<Uuid>,
    /// Only events whose root command is this one (events only).
    pub root: Option<Uuid>,
    /// Only records at or after this time (ms since the epoch, from the id).
    pub since: Option<i64>,
    /// Only records before this time (ms since the epoch, from the id).
    pub until: Option<i64>,
    /// Continue after this id (the `next` cursor of the previous page).
    pub after: Option<Uuid>,
    /// Order; newest first by default.
    pub order: Order,
    /// Page size: [`DEFAULT_LIMIT`] when `None`, clamped to [`MAX_LIMIT`].
    pub limit: Option<usize>,
}

impl Query {
    /// The effective page size.
    pub fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, in the asked order.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<Uuid>,
}

/// One page of a key's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamPage {
    /// Events of the key in log order.
    pub items: Vec<EventView>,
    /// Pass as `after` (an offset) to continue; `None` at the current end.
    pub next: Option<u64>,
}

/// The stored status code of a status (the key of the status index).
pub fn status_code(status: CommandStatus) -> u8 {
    match status {
        CommandStatus::Pending => 0,
        CommandStatus::Accepted => 1,
        CommandStatus::Rejected => 2,
    }
}

/// The smallest UUID v7 (as `u128`) with a timestamp at or after `ms`.
pub fn id_floor_for_time(ms: i64) -> u128 {
    let ms = ms.clamp(0, (1i64 << 48) - 1) as u128;
    ms << 80
}

/// The time (ms since the epoch) in a UUID v7 id: its top 48 bits.
pub fn time_of_id(id: u128) -> i64 {
    (id >> 80) as i64
}

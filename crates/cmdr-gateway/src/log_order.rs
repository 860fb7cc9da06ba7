//! Listings in log order: `GET /commands?from=POSITION` and
//! `GET /events?from=POSITION`, for clients that poll for what is new.
//!
//! The other listings are ordered by id, and an id is given before its
//! record is appended, so a poller paging `order=asc&after=LAST` can miss a
//! record indexed after its last page with a smaller id. A listing from a
//! position cannot: it reads the log itself from a position (the same
//! `o0.o1...` as live updates give, see [`crate::follow`]), only as far as
//! the index has got in each partition (so every item has its status and
//! the position never runs ahead of what was listed), and answers the
//! position after the last record it read. Polling again from that
//! position returns exactly the records after it, none missed, none
//! repeated, whatever order their ids are in.
//!
//! Within a page, records of different partitions are merged by id (time);
//! each partition stays in its log order.

use std::collections::VecDeque;

use cmdr_contract::{CommandStatus, COMMANDS_TOPIC, EVENTS_TOPIC};
use cmdr_index::{MAX_PAGE_BYTES, MAX_SCAN};
use cmdr_log::{ReadBatch, StoredRecord};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiResult;
use crate::follow::{self, Filter, StartAt};
use crate::state::AppState;
use crate::views::{event_json, CommandBody};

/// Bytes of records held for one page while merging the partitions, all
/// partitions together (one record larger than a partition's share is
/// still read, alone).
const READ_BYTES: usize = 4 * 1024 * 1024;

/// Most records read from one partition at once.
const READ_RECORDS: usize = 1024;

/// Which topic a listing reads, and the status filter of commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    /// The commands topic, optionally only commands with this status.
    Commands(Option<CommandStatus>),
    /// The events topic.
    Events,
}

/// One page of a listing in log order.
pub(crate) struct LogPage {
    /// The items, as the id-ordered listings give them.
    pub items: Vec<Value>,
    /// The position after the last record read (list from it next).
    pub position: Vec<u64>,
    /// Whether the page was cut (more records are indexed past `position`).
    pub more: bool,
}

#[derive(Deserialize)]
struct IdProbe {
    id: Uuid,
}

/// One partition's records read ahead, not yet taken into the page.
struct Head {
    records: VecDeque<(Option<Uuid>, StoredRecord)>,
    /// The next offset to read from the log.
    next: u64,
    /// Where the index has got: nothing at or past it is read.
    end: u64,
    batch: ReadBatch,
}

/// A page of `topic` from `from`: at most `limit` items passing `filter`
/// (and the status of [`Topic::Commands`]), reading at most
/// [`MAX_SCAN`] records and about [`MAX_PAGE_BYTES`] of items.
///
/// # Errors
/// [`crate::ApiError::BadRequest`] for a position that does not fit the
/// topic (see [`follow::resolve`]); log and index errors.
pub(crate) async fn page(
    state: &AppState,
    topic: Topic,
    from: &StartAt,
    filter: &Filter,
    limit: usize,
) -> ApiResult<LogPage> {
    let name = match topic {
        Topic::Commands(_) => COMMANDS_TOPIC,
        Topic::Events => EVENTS_TOPIC,
    };
    let log = &state.inner.log;
    let index = &state.inner.index;
    let mut position = follow::resolve(log.as_ref(), name, from).await?;
    let share = (READ_BYTES / position.len().max(1)).max(64 * 1024);
    let mut heads: Vec<Head> = position
        .iter()
        .enumerate()
        .map(|(p, &next)| Head {
            records: VecDeque::new(),
            next,
            end: index.position(name, p as u32),
            batch: ReadBatch::new(16, READ_RECORDS, share),
        })
        .collect();
    let (mut items, mut scanned, mut bytes) = (Vec::new(), 0usize, 0usize);
    loop {
        if items.len() >= limit || scanned >= MAX_SCAN || bytes >= MAX_PAGE_BYTES {
            let more = heads
                .iter()
                .any(|h| !h.records.is_empty() || h.next < h.end);
            return Ok(LogPage {
                items,
                position,
                more,
            });
        }
        for (p, head) in heads.iter_mut().enumerate() {
            if head.records.is_empty() && head.next < head.end {
                let want = head.batch.size().min((head.end - head.next) as usize);
                let read = log.read(name, p as u32, head.next, want).await?;
                head.batch.observe(&read);
                head.next = read.last().map_or(head.end, |r| r.offset + 1);
                head.records.extend(read.into_iter().map(|r| {
                    let id = serde_json::from_slice::<IdProbe>(&r.value)
                        .ok()
                        .map(|i| i.id);
                    (id, r)
                }));
            }
        }
        // The partition whose next record has the smallest id (records
        // without a readable id first: they are skipped at once).
        let Some(p) = (0..heads.len())
            .filter(|&p| !heads[p].records.is_empty())
            .min_by_key(|&p| heads[p].records.front().map(|(id, _)| *id))
        else {
            return Ok(LogPage {
                items,
                position,
                more: false,
            });
        };
        let Some((id, record)) = heads[p].records.pop_front() else {
            continue;
        };
        position[p] = record.offset + 1;
        scanned += 1;
        let Some(id) = id.filter(|_| filter.matches(&record.value)) else {
            continue;
        };
        let item = match topic {
            Topic::Commands(status) => index
                .command(id)?
                .filter(|v| status.is_none_or(|s| v.status == s))
                .map(|v| {
                    let mut json = CommandBody::with_events(&v, &[]).to_value();
                    if let Value::Object(m) = &mut json {
                        m.remove("events");
                    }
                    json
                }),
            Topic::Events => index.event(id)?.map(|v| event_json(&v)),
        };
        if let Some(item) = item {
            bytes += record.value.len();
            items.push(item);
        }
    }
}

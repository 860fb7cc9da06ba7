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
//! each partition stays in its log order. Only filters on what a record
//! says for ever (`action`, `key`, `parent`, `root` as the index resolved
//! it) are taken: a status changes after the position has gone past.
//!
//! A page holds, per partition, only the offset, id, size and verdict of
//! the records read ahead (their values are dropped once probed), reads
//! at most [`READ_BYTES`] at a time in all, and gives other tasks a turn
//! after each read.

use std::collections::VecDeque;

use cmdr_contract::{COMMANDS_TOPIC, EVENTS_TOPIC};
use cmdr_index::{MAX_PAGE_BYTES, MAX_SCAN};
use cmdr_log::ReadBatch;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::follow::{self, Filter, StartAt};
use crate::state::AppState;
use crate::views::{event_json, CommandBody};

/// Bytes of records one read of a partition may bring, all partitions'
/// shares together (a record larger than a share is still read, alone).
pub const READ_BYTES: usize = 4 * 1024 * 1024;

/// Most records read from one partition at once.
const READ_RECORDS: usize = 1024;

/// Which topic a listing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    /// The commands topic.
    Commands,
    /// The events topic.
    Events,
}

/// What a listing in log order keeps: the record's own `action` and `key`,
/// and, for events, the `parent` and the `root` the index resolved.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogFilter {
    /// Only this action.
    pub action: Option<String>,
    /// Only this key.
    pub key: Option<String>,
    /// Only events caused by this command or event.
    pub parent: Option<Uuid>,
    /// Only events of this command's causal tree.
    pub root: Option<Uuid>,
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

/// A record read ahead: all a page keeps of it until its turn.
struct Ahead {
    offset: u64,
    /// `None` when the value has no readable id (skipped).
    id: Option<Uuid>,
    /// Whether its `action` and `key` pass the filter.
    passes: bool,
    bytes: usize,
}

/// One partition's records read ahead, not yet taken into the page.
struct Head {
    records: VecDeque<Ahead>,
    /// The next offset to read from the log.
    next: u64,
    /// Where the index has got: nothing at or past it is read.
    end: u64,
    batch: ReadBatch,
}

/// A page of `topic` from `from`: at most `limit` items passing `filter`,
/// reading at most [`MAX_SCAN`] records and about [`MAX_PAGE_BYTES`] of
/// items.
///
/// # Errors
/// A 400 naming `from` for a position that does not fit the topic (see
/// [`follow::resolve`]); log and index errors.
pub(crate) async fn page(
    state: &AppState,
    topic: Topic,
    from: &StartAt,
    filter: &LogFilter,
    limit: usize,
) -> ApiResult<LogPage> {
    let name = match topic {
        Topic::Commands => COMMANDS_TOPIC,
        Topic::Events => EVENTS_TOPIC,
    };
    let log = &state.inner.log;
    let index = &state.inner.index;
    let mut position = follow::resolve(log.as_ref(), name, from)
        .await
        .map_err(|e| match e {
            ApiError::BadRequest(m) => ApiError::parameter("from", m),
            other => other,
        })?;
    let share = (READ_BYTES / position.len().max(1)).max(64 * 1024);
    let mut heads: Vec<Head> = position
        .iter()
        .enumerate()
        .map(|(p, &next)| Head {
            records: VecDeque::new(),
            next,
            end: index.position(name, p as u32),
            batch: ReadBatch::new(1, READ_RECORDS, share),
        })
        .collect();
    let record_filter = Filter {
        action: filter.action.clone(),
        key: filter.key.clone(),
        ..Filter::default()
    };
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
                    Ahead {
                        offset: r.offset,
                        id: serde_json::from_slice::<IdProbe>(&r.value)
                            .ok()
                            .map(|i| i.id),
                        passes: record_filter.matches(&r.value),
                        bytes: r.value.len(),
                    }
                }));
                // Reads of the embedded log do not wait: let the other
                // tasks of this thread have a turn.
                tokio::task::yield_now().await;
            }
        }
        // The partition whose next record has the smallest id (records
        // without a readable id first: they are skipped at once).
        let Some(p) = (0..heads.len())
            .filter(|&p| !heads[p].records.is_empty())
            .min_by_key(|&p| heads[p].records.front().map(|r| r.id))
        else {
            return Ok(LogPage {
                items,
                position,
                more: false,
            });
        };
        let Some(record) = heads[p].records.pop_front() else {
            continue;
        };
        position[p] = record.offset + 1;
        scanned += 1;
        let Some(id) = record.id.filter(|_| record.passes) else {
            continue;
        };
        // The index keeps the first of a record logged twice: this one
        // only if it is that one.
        let here =
            |at: &cmdr_index::LogPosition| at.partition == p as u32 && at.offset == record.offset;
        let item = match topic {
            Topic::Commands => index.command(id)?.filter(|v| here(&v.position)).map(|v| {
                let mut json = CommandBody::with_events(&v, &[]).to_value();
                if let Value::Object(m) = &mut json {
                    m.remove("events");
                }
                json
            }),
            Topic::Events => index
                .event(id)?
                .filter(|v| {
                    here(&v.position)
                        && filter.parent.is_none_or(|x| v.event.parent == x)
                        && filter.root.is_none_or(|x| v.event.root == Some(x))
                })
                .map(|v| event_json(&v)),
        };
        if let Some(item) = item {
            bytes += record.bytes;
            items.push(item);
        }
    }
}

//! Following a topic from a position: the engine behind Server-Sent Events
//! and WebSocket subscriptions.
//!
//! A follower reads the log itself (the latest records from the log's tail
//! cache, older ones from its files; never a buffer of the gateway's own),
//! from a *position*: the next offset of every partition, written `o0.o1...` (one
//! number per partition, e.g. `42` for a one-partition topic). Each update
//! carries the position just after it, so a client that resumes from the last
//! position it saw gets exactly the records after it, none missed, none
//! repeated. Updates go through a channel bounded by the caller; when the
//! client is slow the follower stops reading until there is room, so memory
//! stays bounded and the client catches up from the log later. Under load a
//! follower at the tail reads at most once per [`linger`] (longer the more
//! followers there are, at most [`FOLLOW_LINGER`]), so that many
//! subscribers cost a few large writes rather than one per record.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use cmdr_log::Log;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Most records a follower reads from one partition at once.
pub const FOLLOW_BATCH: usize = 256;
/// Bytes of records a follower aims to read at once (a
/// [`cmdr_log::ReadBatch`] of at most [`FOLLOW_BATCH`] records), so large
/// records are read a few at a time.
pub const FOLLOW_BATCH_BYTES: usize = 1024 * 1024;

/// Longest a follower that has just read up to the tail waits before it
/// reads again (see [`linger`]).
pub const FOLLOW_LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// A follower's share of [`linger`]: the wait grows with the followers, so
/// that together they wake at most about 10,000 times a second.
pub const LINGER_PER_FOLLOWER: std::time::Duration = std::time::Duration::from_micros(100);

/// How long a follower that has just read up to the tail waits before it
/// reads again, with `followers` following at once: [`LINGER_PER_FOLLOWER`]
/// each, at most [`FOLLOW_LINGER`]. Under load records come in many small
/// rounds; a follower then reads and sends them together, without a
/// wake-up and a write per round, which is most of what many subscribers
/// cost (with 100 of them, this and one write per read took the server's
/// CPU per delivered record from about 4 to under 2 µs, `cmdr bench
/// live`). A few followers barely wait, and reading nothing after the
/// wait, a follower waits for the log: an idle one reads a new record at
/// once.
pub fn linger(followers: usize) -> std::time::Duration {
    LINGER_PER_FOLLOWER
        .saturating_mul(u32::try_from(followers).unwrap_or(u32::MAX))
        .min(FOLLOW_LINGER)
}

/// Where following starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record still in the log.
    Start,
    /// Only records appended from now on (the default).
    End,
    /// A position as sent with an earlier update.
    Position(Vec<u64>),
}

impl StartAt {
    /// Parses `start`, `end` or a position.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`].
    pub fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "start" | "earliest" => Ok(Self::Start),
            "end" | "latest" | "now" => Ok(Self::End),
            pos => pos
                .split('.')
                // Digits only: `u64`'s parser would also take a `+`.
                .map(|n| {
                    if n.bytes().all(|b| b.is_ascii_digit()) {
                        n.parse::<u64>().ok()
                    } else {
                        None
                    }
                })
                .collect::<Option<Vec<_>>>()
                .map(Self::Position)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "invalid position {pos:?} (start, end, or offsets like 42 or 42.7)"
                    ))
                }),
        }
    }
}

/// The `from` query parameter: [`StartAt::parse`], refused naming it.
///
/// # Errors
/// [`ApiError::BadRequest`] with the parameter `from`.
pub fn parse_from(v: &str) -> ApiResult<StartAt> {
    StartAt::parse(v).map_err(|_| {
        ApiError::parameter(
            "from",
            format!(
                "from must be start, end or a position like 42 or 42.7 (as answered in \
                 `position` or an update's id), not {v:?}"
            ),
        )
    })
}

/// Formats a position.
pub fn format_position(pos: &[u64]) -> String {
    let mut s = String::with_capacity(pos.len() * 8);
    for (i, p) in pos.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        s.push_str(&p.to_string());
    }
    s
}

/// What records to pass on; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Filter {
    /// The record's `action`.
    pub action: Option<String>,
    /// The record's `key`.
    pub key: Option<String>,
    /// The event's `parent`.
    pub parent: Option<Uuid>,
    /// The event's `root`.
    pub root: Option<Uuid>,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    action: Cow<'a, str>,
    #[serde(borrow, default)]
    key: Cow<'a, str>,
    #[serde(default)]
    parent: Option<Uuid>,
    #[serde(default)]
    root: Option<Uuid>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.action.is_none() && self.key.is_none() && self.parent.is_none() && self.root.is_none()
    }

    /// Whether the JSON record `value` passes.
    pub fn matches(&self, value: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        let Ok(p) = serde_json::from_slice::<Probe<'_>>(value) else {
            return false;
        };
        self.action.as_deref().is_none_or(|a| a == p.action)
            && self.key.as_deref().is_none_or(|k| k == p.key)
            && self.parent.is_none_or(|x| p.parent == Some(x))
            && self
                .root
                .is_none_or(|x| p.root == Some(x) || (p.root.is_none() && p.parent == Some(x)))
    }
}

/// Most bytes of record values a follower's updates may hold at once,
/// queued for its client or not yet sent on: beyond it the follower waits,
/// as for a full channel. A larger record is sent alone. With many live
/// streams open each gets less (see [`follow_buffer_bytes`]).
pub const FOLLOW_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Fewest bytes a follower may hold, however many live streams are open.
pub const MIN_FOLLOW_BUFFER_BYTES: usize = 256 * 1024;

/// The bytes all live streams together may hold in their followers'
/// buffers, about, when each client reads nothing: each follower's share
/// is taken as it starts (see [`follow_buffer_bytes`]).
pub const LIVE_BUFFER_BYTES: usize = 256 * 1024 * 1024;

/// A follower's buffer when `open` live streams are open (this one
/// included): an equal share of [`LIVE_BUFFER_BYTES`], from
/// [`MIN_FOLLOW_BUFFER_BYTES`] to [`FOLLOW_BUFFER_BYTES`]. A hundred
/// streams get 2.5 MiB each; past a thousand, 256 KiB. Each keeps the share
/// it started with, so 4,096 clients that read nothing, opened one after
/// another, hold under 2 GiB (16 GiB at 4 MiB each).
pub fn follow_buffer_bytes(open: usize) -> usize {
    (LIVE_BUFFER_BYTES / open.max(1)).clamp(MIN_FOLLOW_BUFFER_BYTES, FOLLOW_BUFFER_BYTES)
}

/// One record passed to a client, or where the follower has got to.
#[derive(Debug)]
pub struct Update {
    /// The position after this record (resume from it).
    pub position: String,
    /// The record's JSON value; `None` for a position alone: sent when the
    /// follower starts and when it waits after records the filter skipped,
    /// so that a client resuming from it does not read them again (or,
    /// having seen nothing yet, miss what came meanwhile).
    pub value: Option<Bytes>,
    /// The value's share of its follower's buffer, given back when the
    /// update is dropped (once sent on).
    pub held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Values at least this large are copied out of the read that brought
/// them before they wait for the client (see [`own_value`]).
const COPY_VALUES_FROM: usize = 4096;

/// A record's value as a follower keeps it until its client takes it. A
/// value read from a segment file shares that read's buffer (up to
/// [`FOLLOW_BATCH_BYTES`]), which it would keep whole while it waits: a
/// large one is copied out, so that the follower's buffer counts what it
/// holds. (Small ones come many to a read; framing copies every value once
/// more anyway.)
fn own_value(value: Bytes) -> Bytes {
    if value.len() >= COPY_VALUES_FROM {
        Bytes::copy_from_slice(&value)
    } else {
        value
    }
}

/// Resolves where to start in `topic`.
///
/// # Errors
/// [`ApiError::BadRequest`] for a position with the wrong number of
/// partitions or past the end of the log (a position this server never
/// gave: following from it would silently skip the records up to it); log
/// errors.
pub async fn resolve(log: &dyn Log, topic: &str, at: &StartAt) -> ApiResult<Vec<u64>> {
    let info = log.topic(topic).await?;
    if let StartAt::Position(pos) = at {
        // The shape first: offsets of another topic's partitions say
        // nothing about this one's end.
        if pos.len() != info.partitions.len() {
            let plural =
                |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            return Err(ApiError::BadRequest(format!(
                "position {} has {} but topic {topic} has {} (one offset per \
                 partition, joined with '.')",
                format_position(pos),
                plural(pos.len(), "offset"),
                plural(info.partitions.len(), "partition"),
            )));
        }
        let past = pos
            .iter()
            .zip(&info.partitions)
            .enumerate()
            .find(|(_, (o, p))| **o > p.end_offset);
        if let Some((i, (o, p))) = past {
            return Err(ApiError::BadRequest(format!(
                "position {} is past the end of the log: partition {i} of topic {topic} \
                 ends at offset {}, not {o} (was the data directory replaced? \
                 start again with from=start or from=end)",
                format_position(pos),
                p.end_offset
            )));
        }
    }
    Ok(match at {
        StartAt::Start => info.partitions.iter().map(|p| p.start_offset).collect(),
        StartAt::End => info.partitions.iter().map(|p| p.end_offset).collect(),
        StartAt::Position(pos) => pos
            .iter()
            .zip(&info.partitions)
            .map(|(o, p)| (*o).max(p.start_offset))
            .collect(),
    })
}

/// Follows `topic` from `pos`, sending matching records to `tx` until the
/// receiver is dropped, the server shuts down or the log fails. `places`
/// is the semaphore of the live streams' places, one taken by each
/// follower (of [`crate::MAX_LIVE_STREAMS`]): how many are taken sets the
/// [`linger`].
pub async fn follow(
    log: Arc<dyn Log>,
    topic: &'static str,
    mut pos: Vec<u64>,
    filter: Filter,
    tx: mpsc::Sender<Update>,
    mut shutdown: watch::Receiver<bool>,
    places: Arc<tokio::sync::Semaphore>,
) {
    // The position last told to the client.
    let mut told = format_position(&pos);
    let start = Update {
        position: told.clone(),
        value: None,
        held: None,
    };
    let open = crate::MAX_LIVE_STREAMS.saturating_sub(places.available_permits());
    let buffer = follow_buffer_bytes(open);
    let budget = Arc::new(tokio::sync::Semaphore::new(buffer));
    if tx.send(start).await.is_err() {
        return;
    }
    // Started small: the records' size is not known yet.
    // Reads no larger than the buffer: a follower waiting for room holds
    // the read it is in.
    let mut batch = cmdr_log::ReadBatch::new(8, FOLLOW_BATCH, FOLLOW_BATCH_BYTES.min(buffer));
    // When the follower last read records, while it has not waited since.
    let mut last_read = None;
    loop {
        let mut progressed = false;
        for (p, next) in pos.clone().into_iter().enumerate() {
            let records = tokio::select! {
                r = log.read(topic, p as u32, next, batch.size()) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let records = match records {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(topic, partition = p, error = %e, "follower stops");
                    return;
                }
            };
            batch.observe(&records);
            let read_any = !records.is_empty();
            for r in records {
                pos[p] = r.offset + 1;
                progressed = true;
                if filter.matches(&r.value) {
                    told = format_position(&pos);
                    let share = r.value.len().clamp(1, buffer) as u32;
                    let held = tokio::select! {
                        p = Arc::clone(&budget).acquire_many_owned(share) => p.ok(),
                        _ = tx.closed() => return,
                        _ = shutdown.wait_for(|s| *s) => return,
                    };
                    let update = Update {
                        position: told.clone(),
                        value: Some(own_value(r.value)),
                        held,
                    };
                    if tx.send(update).await.is_err() {
                        return;
                    }
                }
            }
            if read_any {
                if tx.is_closed() {
                    // Nobody listens: a scan of records the filter skips
                    // would otherwise go on to the end of the log.
                    return;
                }
                // Log reads do not wait while catching up: let the other
                // tasks of this thread (requests, writers) have a turn.
                tokio::task::yield_now().await;
            }
        }
        if !progressed {
            // Caught up: say how far the filter has read, once.
            let at = format_position(&pos);
            if at != told {
                told = at;
                let update = Update {
                    position: told.clone(),
                    value: None,
                    held: None,
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
            // Just read something: under load more comes in many small
            // rounds, so wait a little and read them together (no wake-up
            // per round). Reading nothing then, wait for the log.
            let followers = crate::MAX_LIVE_STREAMS.saturating_sub(places.available_permits());
            let due = last_read.take().map(|t| t + linger(followers));
            if let Some(due) = due.filter(|due| tokio::time::Instant::now() < *due) {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => continue,
                    _ = tx.closed() => return,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
            let waits = pos
                .iter()
                .enumerate()
                .map(|(p, o)| log.wait_for(topic, p as u32, *o));
            tokio::select! {
                (r, _, _) = futures::future::select_all(waits) => {
                    if r.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
                _ = shutdown.wait_for(|s| *s) => return,
            }
        } else {
            last_read = Some(tokio::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_follower_buffer_shrinks_with_the_live_streams_open() {
        assert_eq!(follow_buffer_bytes(0), FOLLOW_BUFFER_BYTES);
        assert_eq!(follow_buffer_bytes(64), FOLLOW_BUFFER_BYTES);
        assert_eq!(follow_buffer_bytes(128), 2 * 1024 * 1024);
        assert_eq!(follow_buffer_bytes(4096), MIN_FOLLOW_BUFFER_BYTES);
    }

    /// A client that reads nothing holds at most the buffer's bytes of
    /// records (and one more), not a channel full of large ones; with
    /// many streams open, less.
    #[tokio::test]
    async fn a_client_that_reads_nothing_holds_a_bounded_number_of_bytes() {
        let log = Arc::new(cmdr_log::memory::MemoryLog::new());
        log.create_topic("t", 1).await.unwrap();
        for i in 0..20u8 {
            let value = vec![b'a' + i; 256 * 1024];
            log.append("t", vec![cmdr_log::Record::new("k", value)])
                .await
                .unwrap();
        }
        // Alone: 4 MiB, 16 of these records (and one more). With all but
        // 16 places taken: 256 KiB, one record (and one more).
        for (taken, most) in [(0, 17), (crate::MAX_LIVE_STREAMS - 16, 2)] {
            let (tx, mut rx) = mpsc::channel(64);
            let (_stop, stopped) = watch::channel(false);
            let places = Arc::new(tokio::sync::Semaphore::new(crate::MAX_LIVE_STREAMS));
            let _taken = places.clone().try_acquire_many_owned(taken as u32).unwrap();
            let follower = tokio::spawn(follow(
                log.clone(),
                "t",
                vec![0],
                Filter::default(),
                tx,
                stopped,
                places,
            ));
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let mut records = 0;
            while let Ok(u) = rx.try_recv() {
                records += usize::from(u.value.is_some());
            }
            assert!(
                (1..=most).contains(&records),
                "{taken} places taken: {records} records of 256 KiB held"
            );
            follower.abort();
        }
    }

    #[test]
    fn the_linger_grows_with_the_followers_up_to_its_bound() {
        use std::time::Duration;
        assert_eq!(linger(0), Duration::ZERO);
        assert_eq!(linger(1), Duration::from_micros(100));
        assert_eq!(linger(10), Duration::from_millis(1));
        assert_eq!(linger(100), FOLLOW_LINGER);
        assert_eq!(linger(usize::MAX), FOLLOW_LINGER);
    }

    #[test]
    fn positions_parse_and_format() {
        assert_eq!(StartAt::parse("start").unwrap(), StartAt::Start);
        assert_eq!(StartAt::parse("end").unwrap(), StartAt::End);
        assert_eq!(
            StartAt::parse("42.7").unwrap(),
            StartAt::Position(vec![42, 7])
        );
        assert!(StartAt::parse("4x").is_err());
        assert!(StartAt::parse("").is_err());
        assert_eq!(format_position(&[42, 7]), "42.7");
    }

    #[test]
    fn filters_match_on_fields_and_root_falls_back_to_parent() {
        let root = Uuid::now_v7();
        let rec = format!(
            r#"{{"id":"{0}","parent":"{root}","action":"a","key":"k","data":{{}}}}"#,
            Uuid::now_v7()
        );
        let f = |action: Option<&str>, key: Option<&str>, root: Option<Uuid>| Filter {
            action: action.map(str::to_string),
            key: key.map(str::to_string),
            parent: None,
            root,
        };
        assert!(f(None, None, None).matches(b"not json"));
        assert!(f(Some("a"), Some("k"), Some(root)).matches(rec.as_bytes()));
        assert!(!f(Some("b"), None, None).matches(rec.as_bytes()));
        assert!(!f(None, Some("x"), None).matches(rec.as_bytes()));
        assert!(!f(Some("a"), None, None).matches(b"not json"));
    }
}

//! Reads: one command or event, filtered listings with cursors, a key's
//! history, a command's causal tree, idempotency records.
//!
//! Readers use their own MVCC read transaction, so they never wait for the
//! indexer nor for each other.

use std::ops::ControlFlow;

use redb::{ReadTransaction, ReadableDatabase, ReadableTableMetadata};
use uuid::Uuid;

use crate::codec::{decode_command, decode_event};
use crate::model::{
    id_floor_for_time, status_code, CommandTree, CommandView, EventView, Order, Page, Query,
    StreamPage, MAX_CHILDREN, MAX_PAGE_BYTES, MAX_SCAN,
};
use crate::tables::name_hash;
use crate::{tables, DbResult, Index, Result};

/// The id range `[lo, hi]` a query covers (from its time range and cursor).
fn id_range(q: &Query) -> Option<(u128, u128)> {
    let mut lo = q.since.map_or(0, id_floor_for_time);
    let mut hi = q
        .until
        .map_or(u128::MAX, |t| id_floor_for_time(t).saturating_sub(1));
    if let Some(after) = q.after {
        let a = after.as_u128();
        match q.order {
            Order::Asc => lo = lo.max(a.checked_add(1)?),
            Order::Desc => hi = hi.min(a.checked_sub(1)?),
        }
    }
    (lo <= hi).then_some((lo, hi))
}

/// Iterates the ids of a secondary index `(prefix, id)` in `[lo, hi]` in
/// `order`, calling `visit` until it breaks.
macro_rules! scan_secondary {
    ($txn:expr, $path:expr, $table:expr, $prefix:expr, $lo:expr, $hi:expr, $order:expr, $visit:expr) => {{
        let table = $txn.open_table($table).db($path)?;
        let range = table.range(($prefix, $lo)..=($prefix, $hi)).db($path)?;
        let visit = $visit;
        let iter: Box<dyn Iterator<Item = _>> = match $order {
            Order::Asc => Box::new(range),
            Order::Desc => Box::new(range.rev()),
        };
        for row in iter {
            let (k, _) = row.db($path)?;
            if let ControlFlow::Break(()) = visit(k.value().1)? {
                break;
            }
        }
    }};
}

/// The first id at or beyond `from` (in `order`, within `[lo, hi]`) of a
/// secondary index `(prefix, id)`, as `Result<Option<u128>>`. `from` lies
/// within `[lo, hi]`.
macro_rules! seek_secondary {
    ($table:expr, $path:expr, $prefix:expr, $from:expr, $lo:expr, $hi:expr, $order:expr) => {{
        let (a, b) = match $order {
            Order::Asc => ($from, $hi),
            Order::Desc => ($lo, $from),
        };
        let mut range = $table.range(($prefix, a)..=($prefix, b)).db($path)?;
        let row = match $order {
            Order::Asc => range.next(),
            Order::Desc => range.next_back(),
        };
        match row {
            Some(row) => Ok::<_, crate::IndexError>(Some(row.db($path)?.0.value().1)),
            None => Ok(None),
        }
    }};
}

/// Collects a page: `visit` is called per candidate id with the loaded item
/// when it matches; stops at the limit, after [`MAX_SCAN`] candidates, or
/// past [`MAX_PAGE_BYTES`] of items (as `weigh` reckons them).
struct Collector<T> {
    items: Vec<T>,
    limit: usize,
    scanned: usize,
    bytes: usize,
    weigh: fn(&T) -> usize,
    last: Option<u128>,
    cut: bool,
}

impl<T> Collector<T> {
    fn new(limit: usize, weigh: fn(&T) -> usize) -> Self {
        Self {
            items: Vec::with_capacity(limit.min(128)),
            limit,
            scanned: 0,
            bytes: 0,
            weigh,
            last: None,
            cut: false,
        }
    }

    fn offer(&mut self, id: u128, item: Option<T>) -> ControlFlow<()> {
        self.scanned += 1;
        self.last = Some(id);
        if let Some(item) = item {
            self.bytes = self.bytes.saturating_add((self.weigh)(&item));
            self.items.push(item);
        }
        if self.items.len() >= self.limit
            || self.scanned >= MAX_SCAN
            || self.bytes >= MAX_PAGE_BYTES
        {
            self.cut = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn page(self) -> Page<T> {
        Page {
            items: self.items,
            next: if self.cut {
                self.last.map(Uuid::from_u128)
            } else {
                None
            },
        }
    }
}

impl Index {
    fn read_txn(&self) -> Result<ReadTransaction> {
        self.inner.db.begin_read().db(&self.inner.path)
    }

    /// One command with its status, or `None` if it is not (yet) indexed.
    ///
    /// # Errors
    /// [`crate::IndexError::Db`], [`crate::IndexError::Decode`].
    pub fn command(&self, id: Uuid) -> Result<Option<CommandView>> {
        let txn = self.read_txn()?;
        get_command(&txn, self, id.as_u128())
    }

    /// One event, or `None` if it is not (yet) indexed.
    ///
    /// # Errors
    /// [`crate::IndexError::Db`], [`crate::IndexError::Decode`].
    pub fn event(&self, id: Uuid) -> Result<Option<EventView>> {
        let txn = self.read_txn()?;
        get_event(&txn, self, id.as_u128())
    }

    /// The events whose root is command `id` (its causal tree), oldest first:
    /// at most [`MAX_CHILDREN`], and no more once they hold about
    /// [`MAX_PAGE_BYTES`].
    ///
    /// # Errors
    /// [`crate::IndexError::Db`], [`crate::IndexError::Decode`].
    pub fn children(&self, id: Uuid) -> Result<Vec<EventView>> {
        let txn = self.read_txn()?;
        Ok(self.tree_in(&txn, id)?.items)
    }

    /// One command with its causal tree ([`Index::children`]), read
    /// together, so that its status and its events agree; the outcome event
    /// is always among the events, even past the tree's limits. `None` if
    /// the command is not (yet) indexed.
    ///
    /// # Errors
    /// [`crate::IndexError::Db`], [`crate::IndexError::Decode`].
    pub fn command_tree(&self, id: Uuid) -> Result<Option<CommandTree>> {
        let txn = self.read_txn()?;
        let Some(command) = get_command(&txn, self, id.as_u128())? else {
            return Ok(None);
        };
        let page = self.tree_in(&txn, id)?;
        // A page cut exactly at the tree's end has a cursor too.
        let complete = match page.next {
            None => true,
            Some(last) => !self.tree_has_after(&txn, id, last)?,
        };
        let mut events = page.items;
        if let Some(outcome) = command.outcome_event {
            if !events.iter().any(|e| e.event.id == outcome) {
                events.extend(get_event(&txn, self, outcome.as_u128())?);
            }
        }
        Ok(Some(CommandTree {
            command,
            events,
            complete,
        }))
    }

    /// Whether command `id`'s tree has an event after event `after`.
    fn tree_has_after(&self, txn: &ReadTransaction, id: Uuid, after: Uuid) -> Result<bool> {
        let path = &self.inner.path;
        let (root, after) = (id.as_u128(), after.as_u128());
        let Some(from) = after.checked_add(1) else {
            return Ok(false);
        };
        let table = txn.open_table(tables::EVENTS_BY_ROOT).db(path)?;
        let next = table
            .range((root, from)..=(root, u128::MAX))
            .db(path)?
            .next();
        Ok(next.is_some())
    }

    fn tree_in(&self, txn: &ReadTransaction, id: Uuid) -> Result<Page<EventView>> {
        let q = Query {
            root: Some(id),
            order: Order::Asc,
            limit: Some(MAX_CHILDREN),
            ..Query::default()
        };
        self.events_page_in(txn, &q, event_weight)
    }

    /// A page of commands matching `q`.
    ///
    /// # Errors
    /// [`crate::IndexError::Db`], [`crate::IndexError::Decode`].
    pub fn list_commands(&self, q: &Query) -> Result<Page<CommandView>> {
        let path = &self.inner.path;
        let txn = self.read_txn()?;
        let mut c = Collector::new(q.effective_limit(), |v: &CommandView| {
            map_weight(&v.command.data) + v.command.key.len() + v.command.action.len()
        });
        let Some((lo, hi)) = id_range(q) else {
            return Ok(c.page());
        };
        let matches = |v: &CommandView| {
            q.action.as_deref().is_none_or(|a| v.command.action == a)
                && q.key.as_deref().is_none_or(|k| v.command.key == k)
                && q.status.is_none_or(|s| v.status == s)
        };
        let mut check = |id: u128| -> Result<ControlFlow<()>> {
            let item = get_command(&txn, self, id)?.filter(&matches);
            Ok(c.offer(id, item))
        };
        if let Some(key) = q.key.as_deref() {
            // A command sent without a key is not in the key index (see
            // `tables::COMMANDS_BY_KEY`): offered in its place in the order.
            let mut own = tables::own_id_of(key).filter(|id| (lo..=hi).contains(id));
            let mut done = false;
            let mut visit = |id: u128| -> Result<ControlFlow<()>> {
                if let Some(o) = own {
                    let first = match q.order {
                        Order::Asc => o < id,
                        Order::Desc => o > id,
                    };
                    if first || o == id {
                        own = None;
                    }
                    if first && check(o)?.is_break() {
                        done = true;
                        return Ok(ControlFlow::Break(()));
                    }
                }
                let flow = check(id)?;
                done = flow.is_break();
                Ok(flow)
            };
            scan_secondary!(
                txn,
                path,
                tables::COMMANDS_BY_KEY,
                name_hash(key),
                lo,
                hi,
                q.order,
                &mut visit
            );
            if let (false, Some(o)) = (done, own) {
                // The last candidate: the page ends here either way.
                let _ = check(o)?;
            }
        } else if let (Some(action), Some(status)) = (q.action.as_deref(), q.status) {
            // Both indexes, each seeking to where the other stands (a
            // zig-zag join): a rare combination costs about as many seeks
            // as the rarer of the two has entries in the range, instead of a
            // scan of the commoner's that ends page after page empty.
            let by_action = txn.open_table(tables::COMMANDS_BY_ACTION).db(path)?;
            let by_status = txn.open_table(tables::COMMANDS_BY_STATUS).db(path)?;
            let (a, s) = (name_hash(action), status_code(status));
            let mut at = match q.order {
                Order::Asc => lo,
                Order::Desc => hi,
            };
            loop {
                let Some(x) = seek_secondary!(by_action, path, a, at, lo, hi, q.order)? else {
                    break;
                };
                let Some(y) = seek_secondary!(by_status, path, s, x, lo, hi, q.order)? else {
                    break;
                };
                if x == y {
                    let item = get_command(&txn, self, x)?.filter(&matches);
                    if c.offer(x, item).is_break() {
                        break;
                    }
                    let next = match q.order {
                        Order::Asc => x.checked_add(1).filter(|n| *n <= hi),
                        Order::Desc => x.checked_sub(1).filter(|n| *n >= lo),
                    };
                    let Some(next) = next else { break };
                    at = next;
                } else {
                    // No id from `x` to just before `y` has both: examined.
                    if c.offer(x, None).is_break() {
                        break;
                    }
                    at = y;
                }
            }
        } else if let Some(action) = q.action.as_deref() {
            scan_secondary!(
                txn,
                path,
                tables::COMMANDS_BY_ACTION,
                name_hash(action),
                lo,
                hi,
                q.order,
                &mut check
            );
        } else if let Some(status) = q.status {
            let code = status_code(status);
            scan_secondary!(
                txn,
                path,
                tables::COMMANDS_BY_STATUS,
                code,
                lo,
                hi,
                q.order,
                &mut check
            );
        } else {
            let table = txn.open_table(tables::COMMANDS).db(path)?;
            let range = table.range(lo..=hi).db(path)?;
            let iter: Box<dyn Iterator<Item = _>> = match q.order {
                Order::Asc => Box::new(range),
                Order::Desc => Box::new(range.rev()),
            };
            for row in iter {
                let (k, v) = row.db(path)?;
                let view = decode_command(v.value())?;
                if c.offer(k.value(), Some(view).filter(&matches)).is_break() {
                    break;
                }
            }
        }
        Ok(c.page())
    }

    /// A page of events matching `q` (`status` is ignored).
    ///
    /// # Errors
    /// [`crate::IndexError::Db`], [`crate::IndexError::Decode`].
    pub fn list_events(&self, q: &Query) -> Result<Page<EventView>> {
        let txn = self.read_txn()?;
        self.events_page_in(&txn, q, event_weight)
    }

    /// [`Index::list_events`] in `txn`, each page's bytes reckoned by `weigh`.
    fn events_page_in(
        &self,
        txn: &ReadTransaction,
        q: &Query,
        weigh: fn(&EventView) -> usize,
    ) -> Result<Page<EventView>> {
        let path = &self.inner.path;
        let mut c = Collector::new(q.effective_limit(), weigh);
        let Some((lo, hi)) = id_range(q) else {
            return Ok(c.page());
        };
        let matches = |v: &EventView| {
            q.action.as_deref().is_none_or(|a| v.event.action == a)
                && q.key.as_deref().is_none_or(|k| v.event.key == k)
                && q.parent.is_none_or(|p| v.event.parent == p)
                && q.root.is_none_or(|r| v.event.root == Some(r))
        };
        let mut check = |id: u128| -> Result<ControlFlow<()>> {
            let item = get_event(txn, self, id)?.filter(&matches);
            Ok(c.offer(id, item))
        };
        if let Some(parent) = q.parent {
            let p = parent.as_u128();
            scan_secondary!(
                txn,
                path,
                tables::EVENTS_BY_PARENT,
                p,
                lo,
                hi,
                q.order,
                &mut check
            );
        } else if let Some(root) = q.root {
            let r = root.as_u128();
            scan_secondary!(
                txn,
                path,
                tables::EVENTS_BY_ROOT,
                r,
                lo,
                hi,
                q.order,
                &mut check
            );
        } else if let Some(key) = q.key.as_deref() {
            scan_secondary!(
                txn,
                path,
                tables::EVENTS_BY_KEY,
                name_hash(key),
                lo,
                hi,
                q.order,
                &mut check
            );
        } else if let Some(action) = q.action.as_deref() {
            scan_secondary!(
                txn,
                path,
                tables::EVENTS_BY_ACTION,
                name_hash(action),
                lo,
                hi,
                q.order,
                &mut check
            );
        } else {
            let table = txn.open_table(tables::EVENTS).db(path)?;
            let range = table.range(lo..=hi).db(path)?;
            let iter: Box<dyn Iterator<Item = _>> = match q.order {
                Order::Asc => Box::new(range),
                Order::Desc => Box::new(range.rev()),
            };
            for row in iter {
                let (k, v) = row.db(path)?;
                let view = decode_event(v.value())?;
                if c.offer(k.value(), Some(view).filter(&matches)).is_break() {
                    break;
                }
            }
        }
        Ok(c.page())
    }

    /// The events of `key` in log order, after offset `after` (exclusive),
    /// at most `limit` (clamped like a listing).
    ///
    /// # Errors
    /// [`crate::IndexError::Db`], [`crate::IndexError::Decode`].
    pub fn stream(
        &self,
        key: &str,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<StreamPage> {
        let path = &self.inner.path;
        let limit = Query {
            limit,
            ..Query::default()
        }
        .effective_limit();
        let txn = self.read_txn()?;
        let table = txn.open_table(tables::STREAMS).db(path)?;
        let lo = match after {
            Some(a) => match a.checked_add(1) {
                Some(lo) => lo,
                None => {
                    return Ok(StreamPage {
                        items: Vec::new(),
                        next: None,
                    })
                }
            },
            None => 0,
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut scanned = 0;
        let mut bytes = 0usize;
        let hash = name_hash(key);
        // The page ends with the offset where it is full (or has scanned
        // enough: a short page with a cursor means keep going); rows of other
        // partitions at that offset are read first, as the cursor is past it.
        let mut full_at = None;
        for row in table
            .range((hash, lo, 0)..=(hash, u64::MAX, u32::MAX))
            .db(path)?
        {
            let (k, v) = row.db(path)?;
            let (_, offset, _) = k.value();
            if let Some(at) = full_at.filter(|&at| at != offset) {
                next = Some(at);
                break;
            }
            // Another key with the same hash: skipped (see `tables`).
            if let Some(ev) = get_event(&txn, self, v.value())?.filter(|e| e.event.key == key) {
                bytes += event_weight(&ev);
                items.push(ev);
            }
            scanned += 1;
            let full = items.len() >= limit || scanned >= MAX_SCAN || bytes >= MAX_PAGE_BYTES;
            if full_at.is_none() && full {
                full_at = Some(offset);
            }
        }
        Ok(StreamPage { items, next })
    }

    /// Counts of indexed commands and events (for health and tests).
    ///
    /// # Errors
    /// [`crate::IndexError::Db`].
    pub fn counts(&self) -> Result<(u64, u64)> {
        let path = &self.inner.path;
        let txn = self.read_txn()?;
        let c = txn.open_table(tables::COMMANDS).db(path)?.len().db(path)?;
        let e = txn.open_table(tables::EVENTS).db(path)?.len().db(path)?;
        Ok((c, e))
    }
}

fn get_command(txn: &ReadTransaction, index: &Index, id: u128) -> Result<Option<CommandView>> {
    let path = &index.inner.path;
    let table = txn.open_table(tables::COMMANDS).db(path)?;
    table
        .get(id)
        .db(path)?
        .map(|raw| decode_command(raw.value()))
        .transpose()
}

fn get_event(txn: &ReadTransaction, index: &Index, id: u128) -> Result<Option<EventView>> {
    let path = &index.inner.path;
    let table = txn.open_table(tables::EVENTS).db(path)?;
    table
        .get(id)
        .db(path)?
        .map(|raw| decode_event(raw.value()))
        .transpose()
}

/// About the bytes an event takes in a page.
fn event_weight(v: &EventView) -> usize {
    map_weight(&v.event.data) + v.event.key.len() + v.event.action.len()
}

/// About the bytes `v` takes as JSON (strings and numbers by length, a few
/// bytes per other node), without serialising it.
fn json_weight(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().map(json_weight).sum::<usize>() + 2,
        Value::Object(m) => map_weight(m),
        _ => 8,
    }
}

/// [`json_weight`] of an object.
fn map_weight(m: &serde_json::Map<String, serde_json::Value>) -> usize {
    m.iter()
        .map(|(k, v)| k.len() + 4 + json_weight(v))
        .sum::<usize>()
        + 2
}

//! The tail cache: a partition's most recent records, kept in memory as the
//! writer published them (once durable, in the default sync mode), so that
//! the readers that follow the tail (the indexer, live subscribers,
//! processors) take them from memory instead of each reading and checking
//! them from the file again.
//!
//! It holds a contiguous run of offsets ending at the published end, bounded
//! in bytes; a read from an offset inside it is answered from it, any other
//! read goes to the segments. The records share their payloads with the
//! appends that wrote them (reference-counted [`bytes::Bytes`]).

use std::collections::VecDeque;

use crate::StoredRecord;

/// Bytes a record is counted for beyond its key, headers and value.
const RECORD_OVERHEAD: usize = 96;

/// The smallest capacity that can hold a record (one costs at least
/// [`RECORD_OVERHEAD`], and at most a quarter of the capacity is kept):
/// below it the writer does not fill the cache at all.
pub(crate) const SMALLEST_USEFUL: usize = 4 * RECORD_OVERHEAD;

/// A partition's recent records; see the module documentation.
#[derive(Debug)]
pub(crate) struct TailCache {
    /// Offset of `records[0]` (or, when empty, of the next record).
    first: u64,
    records: VecDeque<StoredRecord>,
    /// Bytes counted for `records`.
    bytes: usize,
    /// Most bytes held; 0 turns the cache off.
    capacity: usize,
}

impl TailCache {
    /// An empty cache whose next record will have offset `end`.
    pub fn new(end: u64, capacity: usize) -> Self {
        Self {
            first: end,
            records: VecDeque::new(),
            bytes: 0,
            capacity,
        }
    }

    fn cost(r: &StoredRecord) -> usize {
        RECORD_OVERHEAD
            + r.key.as_ref().map_or(0, |k| k.len())
            + r.value.len()
            + r.headers
                .iter()
                .map(|h| h.name.len() + h.value.len() + 32)
                .sum::<usize>()
    }

    /// Adds the records of a round about to be published, in offset order and
    /// following on from the last one held. A record over a quarter of the
    /// capacity is not kept (nor, the run being contiguous, anything before
    /// it).
    pub fn extend(&mut self, records: impl IntoIterator<Item = StoredRecord>) {
        for r in records {
            let next = self.first + self.records.len() as u64;
            let cost = Self::cost(&r);
            if r.offset != next || cost > self.capacity / 4 {
                // Out of step (never expected), or too large to keep: start
                // again after it.
                self.records.clear();
                self.bytes = 0;
                self.first = r.offset + 1;
                continue;
            }
            self.bytes += cost;
            self.records.push_back(r);
            while self.bytes > self.capacity {
                let Some(old) = self.records.pop_front() else {
                    break;
                };
                self.bytes -= Self::cost(&old);
                self.first += 1;
            }
        }
    }

    /// Up to `max` records from offset `from`, when the cache holds `from`;
    /// `None` when the read must go to the segments.
    pub fn read(&self, from: u64, max: usize) -> Option<Vec<StoredRecord>> {
        let at = usize::try_from(from.checked_sub(self.first)?).ok()?;
        if at >= self.records.len() {
            return None;
        }
        Some(self.records.range(at..).take(max).cloned().collect())
    }

    /// Offset of the first record held (or of the next one, when empty).
    #[cfg(test)]
    pub fn first(&self) -> u64 {
        self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(offset: u64, size: usize) -> StoredRecord {
        StoredRecord {
            partition: 0,
            offset,
            timestamp: 0,
            key: None,
            headers: Vec::new(),
            value: Bytes::from(vec![b'x'; size]),
        }
    }

    #[test]
    fn holds_the_most_recent_records_within_its_capacity() {
        let mut c = TailCache::new(10, 1000);
        c.extend((10..20).map(|o| rec(o, 200 - RECORD_OVERHEAD)));
        // Each costs 200 bytes: the last five fit.
        assert_eq!(c.first(), 15);
        assert!(c.read(14, 10).is_none(), "evicted: read from the file");
        let got = c.read(17, 2).unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [17, 18]);
        assert_eq!(c.read(15, 100).unwrap().len(), 5);
        assert!(c.read(20, 1).is_none(), "past the end");
    }

    #[test]
    fn a_large_record_or_a_gap_starts_the_run_again() {
        let mut c = TailCache::new(0, 1000);
        c.extend([rec(0, 10), rec(1, 10), rec(2, 900), rec(3, 10)]);
        assert_eq!(c.first(), 3);
        assert!(c.read(1, 1).is_none());
        assert_eq!(c.read(3, 1).unwrap()[0].offset, 3);
        c.extend([rec(7, 10)]);
        assert_eq!(c.first(), 8);
        assert!(c.read(7, 1).is_none());
        let mut off = TailCache::new(0, 0);
        off.extend([rec(0, 1)]);
        assert!(off.read(0, 1).is_none(), "capacity 0 keeps nothing");
    }
}

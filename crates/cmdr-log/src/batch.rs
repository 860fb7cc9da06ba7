//! How many records to ask one read for, so that reads of any record size
//! stay near a byte target.
//!
//! Reads are sized in records ([`crate::Log::read`], [`crate::GroupConsumer::poll`]),
//! but what a reader holds is bytes: 2,048 records of 100 bytes are nothing,
//! 2,048 records of 1 MiB are 2 GiB. Every reader that runs unattended (the
//! indexer, processors, live followers) sizes its reads with a [`ReadBatch`]:
//! it halves the count while reads bring more than the target, and doubles
//! it (up to its maximum) while full reads bring under a quarter of it. A
//! record larger than the target is still read, alone.

use crate::StoredRecord;

/// An adaptive read size; see the module docs.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    size: usize,
    max: usize,
    target_bytes: usize,
}

impl ReadBatch {
    /// Starts at `start` records (clamped to `1..=max`), never asks for more
    /// than `max`, and aims at `target_bytes` per read.
    pub fn new(start: usize, max: usize, target_bytes: usize) -> Self {
        let max = max.max(1);
        Self {
            size: start.clamp(1, max),
            max,
            target_bytes: target_bytes.max(1),
        }
    }

    /// The number of records to ask the next read for.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The largest [`ReadBatch::size`] can grow to.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Adjusts the size to what a read of [`ReadBatch::size`] records brought.
    pub fn observe(&mut self, records: &[StoredRecord]) {
        let bytes: usize = records.iter().map(stored_bytes).sum();
        if bytes > self.target_bytes {
            self.size = (self.size / 2).max(1);
        } else if bytes < self.target_bytes / 4 && records.len() >= self.size {
            self.size = (self.size * 2).min(self.max);
        }
    }
}

/// About the memory a record read back takes: its key, headers and value.
pub fn stored_bytes(record: &StoredRecord) -> usize {
    record.value.len()
        + record.key.as_ref().map_or(0, |k| k.len())
        + record
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{stored_bytes, ReadBatch};
    use crate::StoredRecord;

    fn records(n: usize, bytes: usize) -> Vec<StoredRecord> {
        (0..n)
            .map(|i| StoredRecord {
                partition: 0,
                offset: i as u64,
                timestamp: 0,
                key: None,
                headers: Vec::new(),
                value: Bytes::from(vec![b'x'; bytes]),
            })
            .collect()
    }

    #[test]
    fn large_records_shrink_the_batch_to_one_and_small_ones_grow_it_back() {
        let mut b = ReadBatch::new(64, 1024, 1 << 20);
        for _ in 0..10 {
            let read = records(b.size(), 600 * 1024);
            b.observe(&read);
        }
        assert_eq!(
            b.size(),
            1,
            "one 600 KiB record is under the target, two are over"
        );
        let read = records(1, 4 << 20);
        b.observe(&read);
        assert_eq!(b.size(), 1, "never below one");
        for _ in 0..20 {
            let read = records(b.size(), 100);
            b.observe(&read);
        }
        assert_eq!(b.size(), 1024, "small records grow it to its maximum");
    }

    #[test]
    fn a_short_read_does_not_grow_the_batch() {
        let mut b = ReadBatch::new(8, 1024, 1 << 20);
        b.observe(&records(3, 10));
        assert_eq!(b.size(), 8);
    }

    #[test]
    fn stored_bytes_counts_key_headers_and_value() {
        let mut r = records(1, 10).remove(0);
        r.key = Some(Bytes::from_static(b"abc"));
        r.headers.push(crate::Header {
            name: "n".into(),
            value: Bytes::from_static(b"vv"),
        });
        assert_eq!(stored_bytes(&r), 10 + 3 + 1 + 2);
    }
}

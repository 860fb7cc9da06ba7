//! Puts the outputs of concurrently handled inputs back into offset order,
//! per partition, so that only a contiguous prefix is ever committed.
//!
//! Key decision: an input's output is released only when every earlier input
//! of its partition has been released. The committed offset then always equals
//! one past the last input whose output is in the log, which is what makes
//! `append_with_commit` exactly-once even though different keys finish out of order.

use std::collections::BTreeMap;

use cmdr_log::Record;

/// Output bytes (about) past which a release stops taking more inputs, so
/// that no append gets near the log's batch limit however many large
/// outputs finish together; the rest comes in the next release.
pub(crate) const MAX_RELEASE_BYTES: usize = 64 * 1024 * 1024;

/// About the bytes `records` take in the log.
pub(crate) fn output_bytes(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| {
            r.value.len()
                + r.key.as_ref().map_or(0, |k| k.len())
                + r.headers
                    .iter()
                    .map(|h| h.name.len() + h.value.len())
                    .sum::<usize>()
                + 64
        })
        .sum()
}

/// The outputs of one contiguous run of inputs of a partition, ready to append.
#[derive(Debug, Default)]
pub(crate) struct Released {
    /// Output records, in input offset order.
    pub records: Vec<Record>,
    /// The first input offset covered.
    pub from: u64,
    /// One past the last input offset covered.
    pub next_offset: u64,
    /// How many inputs are covered.
    pub inputs: usize,
}

/// One partition's inputs in flight, by offset; `None` until handled.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    slots: BTreeMap<u64, Option<Vec<Record>>>,
    /// One past the highest offset received, to recognise redelivery.
    next_expected: u64,
}

impl Sequencer {
    /// Registers an input received from the log; `false` when this runner has
    /// already received that offset (a consumer that rewound after a
    /// rebalance), in which case the input must not be handled again.
    #[must_use]
    pub fn received(&mut self, offset: u64) -> bool {
        if offset < self.next_expected {
            return false;
        }
        self.next_expected = offset + 1;
        self.slots.insert(offset, None);
        true
    }

    /// Records the output of a handled input.
    pub fn completed(&mut self, offset: u64, output: Vec<Record>) {
        if let Some(slot) = self.slots.get_mut(&offset) {
            *slot = Some(output);
        }
    }

    /// Takes the outputs of the contiguous handled prefix, if any: at least
    /// one input, and no more once [`MAX_RELEASE_BYTES`] are taken (call
    /// again for the rest).
    pub fn release(&mut self) -> Option<Released> {
        let mut released = Released::default();
        let mut bytes = 0usize;
        while let Some(entry) = self.slots.first_entry() {
            if entry.get().is_none() || bytes >= MAX_RELEASE_BYTES {
                break;
            }
            bytes += entry.get().as_deref().map_or(0, output_bytes);
            let offset = *entry.key();
            if released.inputs == 0 {
                released.from = offset;
            }
            let output = entry.remove().unwrap_or_default();
            released.records.extend(output);
            released.next_offset = offset + 1;
            released.inputs += 1;
        }
        (released.inputs > 0).then_some(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_only_the_contiguous_prefix() {
        let mut s = Sequencer::default();
        for o in 5..9 {
            assert!(s.received(o));
        }
        assert!(!s.received(6), "a redelivered offset is refused");
        s.completed(6, vec![Record::new("b", "6")]);
        assert!(s.release().is_none());
        s.completed(5, vec![Record::new("a", "5")]);
        let r = s.release().unwrap();
        assert_eq!(
            (r.from, r.next_offset, r.inputs, r.records.len()),
            (5, 7, 2, 2)
        );
        assert_eq!(&r.records[0].value[..], b"5");
        s.completed(8, vec![]);
        assert!(s.release().is_none());
        s.completed(7, vec![]);
        assert_eq!(s.release().unwrap().next_offset, 9);
    }

    #[test]
    fn a_release_stops_past_its_byte_budget() {
        let mut s = Sequencer::default();
        let big = || vec![Record::new("k", vec![b'x'; MAX_RELEASE_BYTES / 3])];
        for o in 0..7 {
            assert!(s.received(o));
            s.completed(o, big());
        }
        let mut covered = Vec::new();
        while let Some(r) = s.release() {
            assert!(output_bytes(&r.records) <= MAX_RELEASE_BYTES + MAX_RELEASE_BYTES / 3);
            covered.push((r.from, r.next_offset));
        }
        assert_eq!(covered, [(0, 3), (3, 6), (6, 7)]);
    }
}

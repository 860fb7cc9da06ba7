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
    /// The bytes of the inputs covered and of their outputs, as counted by
    /// [`Sequencer::received`] and [`output_bytes`].
    pub bytes: usize,
    /// A share of the engine's flush budget, held until the outputs are
    /// appended (set by the engine).
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// One input in flight: its size, and its output once handled.
#[derive(Debug)]
struct Slot {
    input_bytes: usize,
    output: Option<Vec<Record>>,
}

/// One partition's inputs in flight, by offset.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    slots: BTreeMap<u64, Slot>,
    /// One past the highest offset received, to recognise redelivery.
    next_expected: u64,
}

impl Sequencer {
    /// Registers an input of `input_bytes` received from the log; `false`
    /// when this runner has already received that offset (a consumer that
    /// rewound after a rebalance), in which case the input must not be
    /// handled again.
    #[must_use]
    pub fn received(&mut self, offset: u64, input_bytes: usize) -> bool {
        if offset < self.next_expected {
            return false;
        }
        self.next_expected = offset + 1;
        self.slots.insert(
            offset,
            Slot {
                input_bytes,
                output: None,
            },
        );
        true
    }

    /// Records the output of a handled input.
    pub fn completed(&mut self, offset: u64, output: Vec<Record>) {
        if let Some(slot) = self.slots.get_mut(&offset) {
            slot.output = Some(output);
        }
    }

    /// The offset of the oldest input not released yet: the one that holds
    /// back every later output of the partition.
    pub fn head(&self) -> Option<u64> {
        self.slots.keys().next().copied()
    }

    /// Takes the outputs of the contiguous handled prefix, if any: at least
    /// one input, and no more once [`MAX_RELEASE_BYTES`] are taken (call
    /// again for the rest).
    pub fn release(&mut self) -> Option<Released> {
        let mut released = Released::default();
        let mut bytes = 0usize;
        while let Some(entry) = self.slots.first_entry() {
            if entry.get().output.is_none() || bytes >= MAX_RELEASE_BYTES {
                break;
            }
            let out_bytes = entry.get().output.as_deref().map_or(0, output_bytes);
            bytes += out_bytes;
            let offset = *entry.key();
            if released.inputs == 0 {
                released.from = offset;
            }
            let slot = entry.remove();
            released.bytes += slot.input_bytes + out_bytes;
            released.records.extend(slot.output.unwrap_or_default());
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
            assert!(s.received(o, 0));
        }
        assert!(!s.received(6, 0), "a redelivered offset is refused");
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
    fn the_head_is_the_oldest_unreleased_input_and_a_release_counts_its_bytes() {
        let mut s = Sequencer::default();
        assert_eq!(s.head(), None);
        assert!(s.received(3, 100));
        assert!(s.received(4, 50));
        s.completed(4, vec![Record::new("k", "out")]);
        assert_eq!(
            s.head(),
            Some(3),
            "a handled input behind the head does not move it"
        );
        s.completed(3, vec![]);
        let r = s.release().unwrap();
        assert_eq!(r.bytes, 100 + 50 + output_bytes(&[Record::new("k", "out")]));
        assert_eq!(s.head(), None);
    }

    #[test]
    fn a_release_stops_past_its_byte_budget() {
        let mut s = Sequencer::default();
        let big = || vec![Record::new("k", vec![b'x'; MAX_RELEASE_BYTES / 3])];
        for o in 0..7 {
            assert!(s.received(o, 0));
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

//! The redb tables of the index, and the on-disk format of their values.
//!
//! This is a storage boundary, but not a durable contract: the whole index can
//! be deleted and rebuilt from the log (`cmdr reindex`), so the format may
//! change between versions ([`FORMAT_VERSION`] makes an old file be rebuilt).
//!
//! Ids are UUID v7 stored as `u128`, so numeric order is time order; this is
//! why no separate time index is needed: a time range is an id range.
//!
//! Secondary indexes on a string (action, key) are keyed by the string's
//! [`name_hash`], not the string: fixed-width keys insert and compare several
//! times faster than `(&str, u128)` tuples, and an index insert is on the
//! path of every command. Readers compare the loaded record's field with the
//! one asked for, so a hash collision costs a skipped row, never a wrong one.

use redb::TableDefinition;

/// Version of this layout; a file with another version is wiped and rebuilt.
pub const FORMAT_VERSION: u64 = 6;

/// `"format"` → [`FORMAT_VERSION`].
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Command id → status, outcome, position and the logged JSON (see `codec`).
pub const COMMANDS: TableDefinition<u128, &[u8]> = TableDefinition::new("commands");
/// ([`name_hash`] of the action, command id) → ().
pub const COMMANDS_BY_ACTION: TableDefinition<(u64, u128), ()> =
    TableDefinition::new("commands_by_action");
/// ([`name_hash`] of the key, command id) → (), for commands sent with a
/// key. A command sent without one has its own id as key (see
/// [`own_id_of`]) and no entry here: it is the one row in `commands` with
/// that id. Its entry would be an insert at a random place, the costliest
/// of the index: `cmdr bench` clients without keys cost the indexer
/// 9–11 µs per command with it, 6 µs with keys.
pub const COMMANDS_BY_KEY: TableDefinition<(u64, u128), ()> =
    TableDefinition::new("commands_by_key");
/// (status code, command id) → (); see [`crate::status_code`].
pub const COMMANDS_BY_STATUS: TableDefinition<(u8, u128), ()> =
    TableDefinition::new("commands_by_status");
/// Command id → id of the event that settled it, only while that command is
/// not indexed yet (an outcome can be read before its command, e.g. from
/// another partition); indexing the command takes the entry out. Indexed
/// commands keep their outcome in their `commands` value.
pub const OUTCOMES: TableDefinition<u128, u128> = TableDefinition::new("outcomes");
/// (unresolved ancestor id, event id) → (): events logged without a `root`
/// whose chain of parents leads to an id not indexed yet (an event, or a
/// command, of a partition read later). Such an event's stored root is
/// that id for now, and its outcome, if it is one, waits; indexing the id
/// resolves them (see the indexer). Empty in the common case: cmdr's own
/// processors always give `root`.
pub const PARKED_ROOTS: TableDefinition<(u128, u128), ()> = TableDefinition::new("parked_roots");
/// Event id → root, position and the logged JSON (see `codec`).
pub const EVENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("events");
/// ([`name_hash`] of the action, event id) → ().
pub const EVENTS_BY_ACTION: TableDefinition<(u64, u128), ()> =
    TableDefinition::new("events_by_action");
/// ([`name_hash`] of the key, event id) → ().
pub const EVENTS_BY_KEY: TableDefinition<(u64, u128), ()> = TableDefinition::new("events_by_key");
/// (parent id, event id) → ().
pub const EVENTS_BY_PARENT: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("events_by_parent");
/// (root command id, event id) → (): the causal tree of a command.
pub const EVENTS_BY_ROOT: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("events_by_root");
/// ([`name_hash`] of the key, offset, partition) → event id: one key's
/// history in log order (a key lives in one partition, so its offsets are
/// ordered). The partition makes every entry unique: two keys with one hash
/// in different partitions can have events at the same offset.
pub const STREAMS: TableDefinition<(u64, u64, u32), u128> = TableDefinition::new("streams");
/// Idempotency-Key → the 16-byte command id followed by the request hash.
pub const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// (topic, partition) → next offset to index. Written in the same transaction
/// as the records it covers.
pub const POSITIONS: TableDefinition<(&str, u32), u64> = TableDefinition::new("positions");

/// The 64-bit FNV-1a hash of `name` (an action or a key), as secondary
/// indexes store it. Part of the file format: it must never change without
/// a new [`FORMAT_VERSION`].
pub fn name_hash(name: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(name.as_bytes());
    h.finish()
}

/// Whether `key` is command `id`'s own id as text (hyphenated, lower case):
/// the key of a command sent without one, which has no
/// [`COMMANDS_BY_KEY`] entry.
pub fn is_own_id(key: &str, id: u128) -> bool {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::from_u128(id)
        .hyphenated()
        .encode_lower(&mut buf)
        == key
}

/// The command `key` would be the own key of (see [`is_own_id`]), if it is
/// a command id as text.
pub fn own_id_of(key: &str) -> Option<u128> {
    let id = uuid::Uuid::try_parse(key).ok()?.as_u128();
    is_own_id(key, id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::{is_own_id, name_hash, own_id_of};

    /// Two keys the stream test (`tests/indexing.rs`) relies on colliding.
    #[test]
    fn these_two_keys_share_a_hash() {
        assert_eq!(name_hash("k-n1oRQL6ec_P"), name_hash("k-zInH0GxQTsJ"));
    }

    #[test]
    fn only_the_canonical_text_of_an_id_is_its_own_key() {
        let id = uuid::Uuid::now_v7();
        let text = id.to_string();
        assert!(is_own_id(&text, id.as_u128()));
        assert_eq!(own_id_of(&text), Some(id.as_u128()));
        assert!(!is_own_id(&text, id.as_u128() + 1));
        assert_eq!(own_id_of(&text.to_uppercase()), None);
        assert_eq!(own_id_of(&id.simple().to_string()), None);
        assert_eq!(own_id_of("account-7"), None);
    }

    #[test]
    fn name_hash_is_fnv1a_64() {
        // Published FNV-1a 64 test vectors: the hash is part of the format.
        assert_eq!(name_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(name_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(name_hash("foobar"), 0x8594_4171_f739_67e8);
    }
}

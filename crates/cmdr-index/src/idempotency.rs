//! `Idempotency-Key` records: the lookup, their expiry and the purge.
//!
//! A key is bound to the first command posted with it (the indexer maps key
//! → request hash and command id in the same transaction as the command).
//! With a time to live ([`Index::set_idempotency_ttl`]) the binding lapses
//! that long after the command (its UUID v7 carries its time): lookups then
//! ignore it, the next command posted with the key takes it over, and the
//! indexer purges lapsed records in small batches so the table stays bounded
//! by the keys of one TTL.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redb::{Durability, ReadableDatabase, ReadableTable};
use uuid::Uuid;

use crate::model::time_of_id;
use crate::{tables, DbResult, Index, Result};

/// Most lapsed records removed by one purge pass.
pub const PURGE_BATCH: usize = 5_000;
/// Most records one purge pass looks at (it resumes where the last stopped).
pub const PURGE_SCAN: usize = 20_000;

/// The command id at the front of an idempotency value (hash follows).
pub(crate) fn record_id(value: &[u8]) -> Option<u128> {
    value.first_chunk::<16>().map(|id| u128::from_be_bytes(*id))
}

impl Index {
    /// Sets how long an `Idempotency-Key` stays bound to its first command;
    /// `None` (the default) binds it forever. Applies to lookups at once and
    /// to what the indexer writes from then on.
    pub fn set_idempotency_ttl(&self, ttl: Option<Duration>) {
        let ms = ttl.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.inner.idempotency_ttl_ms.store(ms, Ordering::Relaxed);
    }

    /// The time to live of idempotency keys, if they expire.
    pub fn idempotency_ttl(&self) -> Option<Duration> {
        match self.inner.idempotency_ttl_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether a key bound to command `id` has lapsed by `now_ms`.
    pub(crate) fn lapsed(&self, id: u128, now_ms: i64) -> bool {
        match self.inner.idempotency_ttl_ms.load(Ordering::Relaxed) {
            0 => false,
            ttl => time_of_id(id).saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)) <= now_ms,
        }
    }

    /// The live idempotency record of `key`: the id of the command first
    /// posted with it and the hash of that request; `None` when there is
    /// none or it lapsed.
    ///
    /// # Errors
    /// [`crate::IndexError::Db`].
    pub fn idempotency(&self, key: &str) -> Result<Option<(Uuid, Vec<u8>)>> {
        let path = &self.inner.path;
        let txn = self.inner.db.begin_read().db(path)?;
        let table = txn.open_table(tables::IDEMPOTENCY).db(path)?;
        let Some(raw) = table.get(key).db(path)? else {
            return Ok(None);
        };
        let bytes = raw.value();
        let Some(id) = record_id(bytes) else {
            return Ok(None);
        };
        if self.lapsed(id, cmdr_contract::now_ms()) {
            return Ok(None);
        }
        Ok(Some((Uuid::from_u128(id), bytes[16..].to_vec())))
    }

    /// Removes up to [`PURGE_BATCH`] lapsed idempotency records, looking at
    /// up to [`PURGE_SCAN`] records from key `from` on (`None`: the first
    /// key). Returns how many were removed and the key the next pass starts
    /// at (`None`: the table was scanned to its end). Does nothing
    /// when keys do not expire. The indexer runs it every
    /// [`crate::indexer::PURGE_INTERVAL`].
    ///
    /// # Errors
    /// [`crate::IndexError::Db`].
    pub fn purge_idempotency(&self, from: Option<&str>) -> Result<(usize, Option<String>)> {
        if self.idempotency_ttl().is_none() {
            return Ok((0, None));
        }
        let path = &self.inner.path;
        let now = cmdr_contract::now_ms();
        let mut txn = self.inner.db.begin_write().db(path)?;
        // Like most index commits: a lost purge is redone by the next one.
        txn.set_durability(Durability::None).db(path)?;
        let mut lapsed = Vec::new();
        let mut next = None;
        {
            let mut table = txn.open_table(tables::IDEMPOTENCY).db(path)?;
            let range = match from {
                Some(k) => table.range::<&str>(k..),
                None => table.range::<&str>(..),
            }
            .db(path)?;
            for (scanned, row) in range.enumerate() {
                let (k, v) = row.db(path)?;
                if scanned >= PURGE_SCAN || lapsed.len() >= PURGE_BATCH {
                    next = Some(k.value().to_string());
                    break;
                }
                if record_id(v.value()).is_some_and(|id| self.lapsed(id, now)) {
                    lapsed.push(k.value().to_string());
                }
            }
            for k in &lapsed {
                table.remove(k.as_str()).db(path)?;
            }
        }
        txn.commit().db(path)?;
        Ok((lapsed.len(), next))
    }
}

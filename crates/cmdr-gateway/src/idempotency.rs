//! Idempotent command intake: the request hash and the in-memory lock that
//! serializes concurrent retries of one `Idempotency-Key`.
//!
//! The durable record (key → hash, command id) is the command itself: the key
//! and hash travel as log headers and the index maps them in the same
//! transaction as the command. What memory adds is mutual exclusion: while one
//! request with a key is between "look up" and "appended and indexed", a
//! retry with the same key waits instead of appending a second command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cmdr_contract::CommandRequest;
use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;

use crate::error::ApiError;

/// Longest `Idempotency-Key` accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// Most distinct keys being processed at once; beyond it requests with a new
/// key get 503 (retry later) rather than growing memory.
pub const MAX_IN_FLIGHT_KEYS: usize = 100_000;
const SHARDS: usize = 32;

/// SHA-256 of the request's canonical JSON (`action`, `data`, `key`) and,
/// unless it is [`crate::auth::ANONYMOUS`], the principal sending it, hex:
/// a key is bound to the principal that first used it, and another
/// principal's request with it is refused like a different body, never
/// answered with the first principal's command.
pub fn request_hash(req: &CommandRequest, principal: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(req).unwrap_or_default());
    if principal != crate::auth::ANONYMOUS {
        // After the JSON, which cannot end in a NUL: no two inputs collide.
        hash.update(b"\0");
        hash.update(principal.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// Checks an `Idempotency-Key` header value: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
///
/// # Errors
/// [`ApiError::BadRequest`].
pub fn validate_key(key: &[u8]) -> Result<&str, ApiError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    match std::str::from_utf8(key) {
        Ok(s) if ok => Ok(s),
        _ => Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))),
    }
}

type Slot = Arc<tokio::sync::Mutex<()>>;

/// A key's lock and how many requests hold or wait for it; the entry goes
/// when the last of them does, however it ends (done, or dropped while
/// waiting: a cancelled waiter must not leave the key behind).
struct Entry {
    slot: Slot,
    users: usize,
}

/// Keys currently being processed, sharded to avoid one global lock.
pub(crate) struct InFlightKeys {
    shards: Box<[Mutex<HashMap<String, Entry>>]>,
}

impl Default for InFlightKeys {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// One request's use of a key, counted in its [`Entry`] until dropped.
struct User {
    keys: Arc<InFlightKeys>,
    key: String,
}

impl Drop for User {
    fn drop(&mut self) {
        let mut shard = self.keys.shard(&self.key);
        if let Some(entry) = shard.get_mut(&self.key) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

/// Held while one request with a key runs; releases the key on drop. It owns
/// what it needs, so it can move into a task that outlives the request.
pub(crate) struct KeyGuard {
    // Dropped in this order: the lock, then the use.
    _guard: OwnedMutexGuard<()>,
    _user: User,
}

impl InFlightKeys {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        let h = key.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.shards[h % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no other request holds `key`, then holds it.
    pub(crate) async fn lock(self: &Arc<Self>, key: &str) -> Result<KeyGuard, ApiError> {
        let slot = {
            let mut shard = self.shard(key);
            if !shard.contains_key(key) && shard.len() >= MAX_IN_FLIGHT_KEYS / SHARDS {
                return Err(ApiError::Unavailable(
                    "too many idempotent requests in flight".into(),
                ));
            }
            let entry = shard.entry(key.to_string()).or_insert_with(|| Entry {
                slot: Slot::default(),
                users: 0,
            });
            entry.users += 1;
            Arc::clone(&entry.slot)
        };
        // Counted from here: released even if this future is dropped while waiting.
        let user = User {
            keys: Arc::clone(self),
            key: key.to_string(),
        };
        let guard = slot.lock_owned().await;
        Ok(KeyGuard {
            _guard: guard,
            _user: user,
        })
    }

    /// Keys held or waited for (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_forgotten_when_its_last_user_goes() {
        let keys = Arc::new(InFlightKeys::default());
        let held = keys.lock("k").await.unwrap();
        assert_eq!(keys.len(), 1);
        drop(held);
        assert_eq!(keys.len(), 0);

        // A waiter cancelled after the holder left (before it ran again)
        // does not leave the key behind.
        let held = keys.lock("k").await.unwrap();
        let mut waiter = Box::pin(keys.lock("k"));
        assert!(futures::poll!(waiter.as_mut()).is_pending());
        drop(held);
        drop(waiter);
        assert_eq!(keys.len(), 0);

        // A waiter that gets the key holds it alone, then frees it.
        let held = keys.lock("k").await.unwrap();
        let waiter = tokio::spawn({
            let keys = Arc::clone(&keys);
            async move { keys.lock("k").await.map(drop).is_ok() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiter.await.unwrap());
        assert_eq!(keys.len(), 0);
    }
}

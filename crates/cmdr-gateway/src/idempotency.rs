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

/// SHA-256 of the request's canonical JSON (`action`, `data`, `key`), hex.
pub fn request_hash(req: &CommandRequest) -> String {
    let bytes = serde_json::to_vec(req).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
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

/// Keys currently being processed, sharded to avoid one global lock.
pub(crate) struct InFlightKeys {
    shards: Box<[Mutex<HashMap<String, Slot>>]>,
}

impl Default for InFlightKeys {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// Held while one request with a key runs; releases the key on drop. It owns
/// what it needs, so it can move into a task that outlives the request.
pub(crate) struct KeyGuard {
    keys: Arc<InFlightKeys>,
    key: String,
    slot: Slot,
    guard: Option<OwnedMutexGuard<()>>,
}

impl InFlightKeys {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
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
            Arc::clone(shard.entry(key.to_string()).or_default())
        };
        let guard = Arc::clone(&slot).lock_owned().await;
        Ok(KeyGuard {
            keys: Arc::clone(self),
            key: key.to_string(),
            slot,
            guard: Some(guard),
        })
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut shard = self.keys.shard(&self.key);
        // The map's reference and ours: nobody else is waiting for the key.
        if Arc::strong_count(&self.slot) == 2 {
            shard.remove(&self.key);
        }
    }
}

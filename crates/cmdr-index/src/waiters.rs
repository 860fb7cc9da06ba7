//! Waiting for a command's outcome without holding a thread: a sharded map
//! from command id to one-shot senders that the indexer fires once the
//! command's outcome is indexed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Most waiters registered at once across all commands. When full,
/// [`Waiters::register`] returns `None` and the caller answers without
/// waiting (a `pending` status), so memory stays bounded under any load.
pub const MAX_WAITERS: usize = 65_536;

/// Number of independently locked shards, so concurrent requests rarely
/// contend on one mutex.
const SHARDS: usize = 64;

type Shard = Mutex<HashMap<u128, Vec<oneshot::Sender<()>>>>;

/// The registry of outcome waiters, shared by the indexer and the gateway.
#[derive(Debug)]
pub struct Waiters {
    /// One map per shard, chosen by the low bits of the id.
    shards: Box<[Shard]>,
    /// Registered and not yet dropped waiters (bounded by [`MAX_WAITERS`]).
    count: AtomicUsize,
}

impl Default for Waiters {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            count: AtomicUsize::new(0),
        }
    }
}

impl Waiters {
    fn shard(&self, id: u128) -> MutexGuard<'_, HashMap<u128, Vec<oneshot::Sender<()>>>> {
        // A poisoned shard only means another thread panicked mid-update of a
        // map of senders; its contents are still valid.
        self.shards[(id as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Registers interest in the outcome of command `id`; `None` when
    /// [`MAX_WAITERS`] are already registered.
    pub fn register(self: &Arc<Self>, id: u128) -> Option<OutcomeWaiter> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= MAX_WAITERS {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.shard(id).entry(id).or_default().push(tx);
        Some(OutcomeWaiter {
            rx,
            id,
            waiters: Arc::clone(self),
        })
    }

    /// Wakes every waiter of command `id`.
    pub(crate) fn wake(&self, id: u128) {
        let senders = self.shard(id).remove(&id);
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(()); // the waiter may have given up; nothing to do then
        }
    }

    /// Wakes every waiter (the indexer stopped: no outcome will come).
    pub(crate) fn wake_all(&self) {
        for shard in self.shards.iter() {
            let all = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            for tx in all.into_values().flatten() {
                let _ = tx.send(());
            }
        }
    }

    /// Waiters currently registered.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether no waiter is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A registered wait for one command's outcome; await [`OutcomeWaiter::wait`].
/// Dropping it (for example on timeout) unregisters it.
#[derive(Debug)]
pub struct OutcomeWaiter {
    rx: oneshot::Receiver<()>,
    id: u128,
    waiters: Arc<Waiters>,
}

impl OutcomeWaiter {
    /// Resolves once the command's outcome has been indexed (or the indexer stopped).
    pub async fn wait(&mut self) {
        let _ = (&mut self.rx).await;
    }
}

impl Drop for OutcomeWaiter {
    fn drop(&mut self) {
        self.rx.close();
        let mut shard = self.waiters.shard(self.id);
        if let Some(list) = shard.get_mut(&self.id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                shard.remove(&self.id);
            }
        }
        drop(shard);
        self.waiters.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wake_resolves_and_drop_unregisters() {
        let w = Arc::new(Waiters::default());
        let mut a = w.register(7).unwrap();
        let b = w.register(7).unwrap();
        assert_eq!(w.len(), 2);
        drop(b);
        assert_eq!(w.len(), 1);
        w.wake(7);
        a.wait().await;
        drop(a);
        assert!(w.is_empty());
        assert!(w.shard(7).is_empty());
    }
}

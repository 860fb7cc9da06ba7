//! The balances read model: an event processor that folds the events topic
//! into account balances, rebuilt from the start of the topic on every run.
//!
//! Key decision: no consumer group. The model lives in memory, so it must see
//! every event on each start; [`crate::sdk::replay`] and
//! [`crate::sdk::follow`] read the topic from the beginning without committing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cmdr_contract::{Event, EVENTS_TOPIC};
use cmdr_log::{Log, StoredRecord};

use super::ledger::Ledger;
use crate::sdk::{ensure_topics, follow, replay, DEFAULT_PARTITIONS};
use crate::ProcessorError;

/// Account balances as seen by the events so far; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Balances {
    ledger: Ledger,
    /// Events applied so far (any action), so callers can wait for catch-up.
    applied: Arc<AtomicU64>,
    /// Whether the replay of the topic as it was at the start is done.
    replayed: Arc<AtomicBool>,
}

impl Balances {
    /// An empty read model; [`Balances::run`] fills it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replays the events topic from its start, then follows it until `shutdown`.
    ///
    /// # Errors
    /// [`ProcessorError::Log`].
    pub async fn run(
        &self,
        log: Arc<dyn Log>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProcessorError> {
        ensure_topics(log.as_ref(), DEFAULT_PARTITIONS).await?;
        let this = self.clone();
        let apply = move |record: StoredRecord| {
            if let Ok(event) = Event::from_json(&record.value) {
                this.ledger.apply(&event);
            }
            this.applied.fetch_add(1, Ordering::Release);
        };
        let positions = replay(log.as_ref(), EVENTS_TOPIC, &apply).await?;
        self.replayed.store(true, Ordering::Release);
        follow(log, EVENTS_TOPIC, positions, Arc::new(apply), shutdown).await
    }

    /// One account's balance, if it is open.
    pub fn balance(&self, account: &str) -> Option<i64> {
        self.ledger.balance(account)
    }

    /// Every open account's balance.
    pub fn all(&self) -> BTreeMap<String, i64> {
        self.ledger.all()
    }

    /// A page of open accounts in id order: see [`Ledger::page`].
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<(String, i64)>, bool) {
        self.ledger.page(after, limit)
    }

    /// Whether the events logged before [`Balances::run`] started are all
    /// applied (until then, balances are those of the past).
    pub fn is_replayed(&self) -> bool {
        self.replayed.load(Ordering::Acquire)
    }

    /// How many events have been applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

//! Account balances folded from the events topic: the state shared by the
//! accounts command processor (to decide) and the balances read model (to answer).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use cmdr_contract::Event;

use super::accounts::{ACCOUNT_OPENED, DEPOSITED, TRANSFER_CREDITED, TRANSFER_DEBITED, WITHDRAWN};

/// Balances by account id, in the smallest currency unit.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// A std mutex: held only for map operations, never across an await.
    balances: Arc<Mutex<HashMap<String, i64>>>,
}

impl Ledger {
    /// The balances, locked (a poisoned lock still holds consistent data:
    /// every update is a single map operation).
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        self.balances.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one event of the accounts domain (others are ignored).
    pub fn apply(&self, event: &Event) {
        let amount = event
            .data
            .get("amount")
            .and_then(|a| a.as_i64())
            .unwrap_or(0);
        let mut balances = self.lock();
        match event.action.as_str() {
            ACCOUNT_OPENED => {
                balances.entry(event.key.clone()).or_insert(0);
            }
            DEPOSITED | TRANSFER_CREDITED | WITHDRAWN | TRANSFER_DEBITED => {
                let balance = balances.entry(event.key.clone()).or_insert(0);
                let next = if matches!(event.action.as_str(), DEPOSITED | TRANSFER_CREDITED) {
                    balance.checked_add(amount)
                } else {
                    balance.checked_sub(amount)
                };
                // The accounts processor never writes such an event, but
                // any processor may append to the events topic.
                match next {
                    Some(n) => *balance = n,
                    None => tracing::warn!(event = %event.id, account = %event.key,
                        "skipping an event that would overflow the balance"),
                }
            }
            _ => {}
        }
    }

    /// One account's balance, if it is open.
    pub fn balance(&self, account: &str) -> Option<i64> {
        self.lock().get(account).copied()
    }

    /// Every open account's balance.
    pub fn all(&self) -> BTreeMap<String, i64> {
        self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmdr_contract::EventDraft;
    use serde_json::json;
    use uuid::Uuid;

    fn event(action: &str, amount: i64) -> Event {
        EventDraft::new(action, json!({"amount": amount})).into_event(
            Uuid::nil(),
            Uuid::nil(),
            "acc-1",
            0,
        )
    }

    #[test]
    fn an_event_that_would_overflow_a_balance_is_skipped() {
        let ledger = Ledger::default();
        ledger.apply(&event(ACCOUNT_OPENED, 0));
        ledger.apply(&event(DEPOSITED, 5));
        ledger.apply(&event(WITHDRAWN, i64::MIN));
        ledger.apply(&event(DEPOSITED, i64::MAX));
        assert_eq!(ledger.balance("acc-1"), Some(5));
        ledger.apply(&event(WITHDRAWN, 2));
        assert_eq!(ledger.balance("acc-1"), Some(3));
    }
}

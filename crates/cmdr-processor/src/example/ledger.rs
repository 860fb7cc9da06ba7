//! Account balances folded from the events topic: the state shared by the
//! accounts command processor (to decide) and the balances read model (to answer).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use cmdr_contract::Event;

use super::accounts::{ACCOUNT_OPENED, DEPOSITED, TRANSFER_CREDITED, TRANSFER_DEBITED, WITHDRAWN};

/// Balances by account id, in the smallest currency unit.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// A std mutex: held only for map operations, never across an await.
    /// Ordered by id, so that the read model pages through it.
    balances: Arc<Mutex<BTreeMap<String, i64>>>,
}

impl Ledger {
    /// The balances, locked (a poisoned lock still holds consistent data:
    /// every update is a single map operation).
    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, i64>> {
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
        self.lock().clone()
    }

    /// At most `limit` open accounts with their balances, in id order,
    /// starting after the id `after` (from the first without it), and
    /// whether more follow.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<(String, i64)>, bool) {
        let balances = self.lock();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut items: Vec<(String, i64)> = balances
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit.saturating_add(1))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        (items, more)
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

    #[test]
    fn pages_go_through_every_account_once_in_id_order() {
        let ledger = Ledger::default();
        for id in ["b", "a", "d", "c", "e"] {
            ledger.apply(&EventDraft::new(ACCOUNT_OPENED, json!({})).into_event(
                Uuid::nil(),
                Uuid::nil(),
                id,
                0,
            ));
        }
        let (first, more) = ledger.page(None, 2);
        assert_eq!(first, [("a".to_string(), 0), ("b".to_string(), 0)]);
        assert!(more);
        let (second, more) = ledger.page(Some("b"), 2);
        assert_eq!(second, [("c".to_string(), 0), ("d".to_string(), 0)]);
        assert!(more);
        let (last, more) = ledger.page(Some("d"), 2);
        assert_eq!(last, [("e".to_string(), 0)]);
        assert!(!more);
        // After an id that is not an account: from the next one.
        let (from_gap, _) = ledger.page(Some("bb"), 10);
        assert_eq!(from_gap.len(), 3);
        assert_eq!(ledger.page(Some("e"), 10), (Vec::new(), false));
        assert!(!ledger.page(None, 5).1);
    }
}

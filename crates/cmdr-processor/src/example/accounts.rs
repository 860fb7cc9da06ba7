//! The accounts command processor: open-account, deposit, withdraw (rejected
//! with `insufficient-funds` on overdraft) and transfer (events for both
//! accounts, each under its own key).
//!
//! Key decision: the processor decides from its own [`Ledger`], rebuilt from
//! the events topic by [`Accounts::load`] before it runs and updated as it
//! decides. Since outcomes and offsets are appended atomically, the rebuilt
//! ledger always matches the commands already handled. Rebuild (call `load`
//! again) after [`crate::Processor::run`] returns an error.
//!
//! Simplification of an example: a transfer credits the target account in
//! memory at once, while its events become durable with the source account's
//! partition; a crash in between can make a concurrent command on the target
//! see a credit that is then replayed later. A real domain would credit in a
//! second step (an event processor reacting to `transfer-debited`).

use std::sync::Arc;

use cmdr_contract::{Command, EventDraft, EVENTS_TOPIC};
use cmdr_log::Log;
use serde_json::json;

use super::ledger::Ledger;
use crate::sdk::{ensure_topics, replay, DEFAULT_PARTITIONS};
use crate::{Context, Decision, HandlerError, Processor, ProcessorBuilder, ProcessorError};

/// Command: open the account named by the command key. `data`: `{"owner"?: string}`.
pub const OPEN_ACCOUNT: &str = "open-account";
/// Command: `{"amount": positive integer}` into the keyed account.
pub const DEPOSIT: &str = "deposit";
/// Command: `{"amount": positive integer}` out of the keyed account.
pub const WITHDRAW: &str = "withdraw";
/// Command: `{"to": account, "amount": positive integer}` from the keyed account.
pub const TRANSFER: &str = "transfer";
/// Event: an account was opened (`{"owner"}`).
pub const ACCOUNT_OPENED: &str = "account-opened";
/// Event: money came in (`{"amount", "balance"}`).
pub const DEPOSITED: &str = "deposited";
/// Event: money went out (`{"amount", "balance"}`).
pub const WITHDRAWN: &str = "withdrawn";
/// Event, keyed by the source account: `{"to", "amount", "balance"}`.
pub const TRANSFER_DEBITED: &str = "transfer-debited";
/// Event, keyed by the target account: `{"from", "amount"}`.
pub const TRANSFER_CREDITED: &str = "transfer-credited";
/// The accounts processor's consumer group.
pub const ACCOUNTS_GROUP: &str = "accounts";

/// The accounts command processor's state; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    ledger: Ledger,
}

impl Accounts {
    /// Rebuilds the ledger from every event in the log (creating the topics
    /// with [`DEFAULT_PARTITIONS`] partitions if missing).
    ///
    /// # Errors
    /// [`ProcessorError::Log`].
    pub async fn load(log: &dyn Log) -> Result<Self, ProcessorError> {
        ensure_topics(log, DEFAULT_PARTITIONS).await?;
        let ledger = Ledger::default();
        replay(log, EVENTS_TOPIC, |record| {
            if let Ok(event) = cmdr_contract::Event::from_json(&record.value) {
                ledger.apply(&event);
            }
        })
        .await?;
        Ok(Self { ledger })
    }

    /// The processor builder with the four command handlers, group
    /// [`ACCOUNTS_GROUP`]; add settings and call `build`.
    pub fn processor(&self, log: Arc<dyn Log>) -> ProcessorBuilder {
        let (a, b, c, d) = (self.clone(), self.clone(), self.clone(), self.clone());
        Processor::builder_shared(log)
            .group(ACCOUNTS_GROUP)
            .command(OPEN_ACCOUNT, move |cmd, ctx| {
                let s = a.clone();
                async move { s.open(&cmd, &ctx) }
            })
            .command(DEPOSIT, move |cmd, ctx| {
                let s = b.clone();
                async move { s.deposit(&cmd, &ctx) }
            })
            .command(WITHDRAW, move |cmd, ctx| {
                let s = c.clone();
                async move { s.withdraw(&cmd, &ctx) }
            })
            .command(TRANSFER, move |cmd, ctx| {
                let s = d.clone();
                async move { s.transfer(&cmd, &ctx) }
            })
    }

    /// The decided balance of `account`, if it is open.
    pub fn balance(&self, account: &str) -> Option<i64> {
        self.ledger.balance(account)
    }

    fn open(&self, cmd: &Command, ctx: &Context) -> Result<Decision, HandlerError> {
        let mut balances = self.ledger.lock();
        if balances.contains_key(&ctx.key) {
            return Ok(Decision::reject(
                "account-exists",
                format!("account {} is already open", ctx.key),
            ));
        }
        balances.insert(ctx.key.clone(), 0);
        let owner = cmd
            .data
            .get("owner")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        Ok(Decision::accept_one(
            ACCOUNT_OPENED,
            json!({ "owner": owner }),
        ))
    }

    fn deposit(&self, cmd: &Command, ctx: &Context) -> Result<Decision, HandlerError> {
        let amount = match amount(cmd) {
            Ok(a) => a,
            Err(rejection) => return Ok(rejection),
        };
        let mut balances = self.ledger.lock();
        let Some(balance) = balances.get_mut(&ctx.key) else {
            return Ok(unknown(&ctx.key));
        };
        let Some(raised) = balance.checked_add(amount) else {
            return Ok(too_large(&ctx.key, *balance, amount));
        };
        *balance = raised;
        Ok(Decision::accept_one(
            DEPOSITED,
            json!({ "amount": amount, "balance": *balance }),
        ))
    }

    fn withdraw(&self, cmd: &Command, ctx: &Context) -> Result<Decision, HandlerError> {
        let amount = match amount(cmd) {
            Ok(a) => a,
            Err(rejection) => return Ok(rejection),
        };
        let mut balances = self.ledger.lock();
        let Some(balance) = balances.get_mut(&ctx.key) else {
            return Ok(unknown(&ctx.key));
        };
        if *balance < amount {
            return Ok(insufficient(*balance, amount));
        }
        *balance -= amount;
        Ok(Decision::accept_one(
            WITHDRAWN,
            json!({ "amount": amount, "balance": *balance }),
        ))
    }

    fn transfer(&self, cmd: &Command, ctx: &Context) -> Result<Decision, HandlerError> {
        let amount = match amount(cmd) {
            Ok(a) => a,
            Err(rejection) => return Ok(rejection),
        };
        let Some(to) = cmd
            .data
            .get("to")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
        else {
            return Ok(Decision::reject(
                "invalid-target",
                "data.to must name the target account",
            ));
        };
        if to == ctx.key {
            return Ok(Decision::reject(
                "invalid-target",
                "cannot transfer to the same account",
            ));
        }
        let mut balances = self.ledger.lock();
        let Some(&from_balance) = balances.get(&ctx.key) else {
            return Ok(unknown(&ctx.key));
        };
        let Some(&to_balance) = balances.get(to) else {
            return Ok(unknown(to));
        };
        if from_balance < amount {
            return Ok(insufficient(from_balance, amount));
        }
        // Decided before anything changes: a refused transfer leaves both
        // balances as they were.
        let Some(credited) = to_balance.checked_add(amount) else {
            return Ok(too_large(to, to_balance, amount));
        };
        balances.insert(ctx.key.clone(), from_balance - amount);
        balances.insert(to.to_string(), credited);
        Ok(Decision::accept([
            EventDraft::new(
                TRANSFER_DEBITED,
                json!({ "to": to, "amount": amount, "balance": from_balance - amount }),
            ),
            EventDraft::new(
                TRANSFER_CREDITED,
                json!({ "from": ctx.key, "amount": amount }),
            )
            .with_key(to),
        ]))
    }
}

/// The command's positive integer `amount`, or the rejection to give.
fn amount(cmd: &Command) -> Result<i64, Decision> {
    match cmd.data.get("amount").and_then(|a| a.as_i64()) {
        Some(a) if a > 0 => Ok(a),
        _ => Err(Decision::reject(
            "invalid-amount",
            "data.amount must be a positive integer",
        )),
    }
}

fn unknown(account: &str) -> Decision {
    Decision::reject_with(
        "unknown-account",
        format!("account {account} is not open"),
        json!({ "account": account }),
    )
}

fn too_large(account: &str, balance: i64, amount: i64) -> Decision {
    Decision::reject_with(
        "balance-overflow",
        format!("account {account}'s balance {balance} cannot take {amount} more"),
        json!({ "account": account, "balance": balance, "amount": amount }),
    )
}

fn insufficient(balance: i64, amount: i64) -> Decision {
    Decision::reject_with(
        "insufficient-funds",
        format!("balance {balance} is less than {amount}"),
        json!({ "balance": balance, "amount": amount }),
    )
}

//! The example domain end to end on the log: open, deposit, withdraw (and
//! its overdraft rejection), transfer across keys, the balances read model,
//! and the command side rebuilt from the events after a restart.

mod common;

use std::sync::Arc;

use cmdr_log::Log;
use cmdr_processor::example::{accounts, Accounts, Balances};
use common::*;
use serde_json::json;

async fn start(
    log: Arc<dyn Log>,
) -> tokio::task::JoinHandle<Result<(), cmdr_processor::ProcessorError>> {
    let state = Accounts::load(log.as_ref()).await.unwrap();
    let processor = state.processor(log).retry(fast_retry(2)).build().unwrap();
    tokio::spawn(processor.run(std::future::pending()))
}

#[tokio::test]
async fn accounts_decide_and_balances_follow() {
    let (log, _dir) = test_log().await;
    let balances = Balances::new();
    let (b, l) = (balances.clone(), log.clone());
    let follower = tokio::spawn(async move { b.run(l, std::future::pending()).await });
    let processor = start(log.clone()).await;

    let l = log.as_ref();
    for id in ["alice", "bob"] {
        let opened = send(l, accounts::OPEN_ACCOUNT, json!({"owner": id}), Some(id)).await;
        assert!(accepted(&outcome_of(l, opened.id).await));
    }
    let again = send(l, accounts::OPEN_ACCOUNT, json!({}), Some("alice")).await;
    assert_eq!(
        outcome_of(l, again.id).await.rejection().unwrap().code,
        "account-exists"
    );
    let deposit = send(l, accounts::DEPOSIT, json!({"amount": 100}), Some("alice")).await;
    assert_eq!(outcome_of(l, deposit.id).await.data["balance"], 100);
    let overdraft = send(l, accounts::WITHDRAW, json!({"amount": 150}), Some("alice")).await;
    let rejection = outcome_of(l, overdraft.id).await.rejection().unwrap();
    assert_eq!(rejection.code, "insufficient-funds");
    assert_eq!(rejection.details, json!({"balance": 100, "amount": 150}));
    let withdraw = send(l, accounts::WITHDRAW, json!({"amount": 30}), Some("alice")).await;
    assert!(accepted(&outcome_of(l, withdraw.id).await));
    let transfer = send(
        l,
        accounts::TRANSFER,
        json!({"to": "bob", "amount": 50}),
        Some("alice"),
    )
    .await;
    let credited = outcome_of(l, transfer.id).await;
    assert_eq!(
        (credited.action.as_str(), credited.key.as_str()),
        (accounts::TRANSFER_CREDITED, "bob")
    );
    let debited = events(l)
        .await
        .into_iter()
        .find(|e| e.action == accounts::TRANSFER_DEBITED)
        .unwrap();
    assert_eq!(
        (debited.key.as_str(), debited.parent),
        ("alice", transfer.id)
    );
    let unknown = send(l, accounts::DEPOSIT, json!({"amount": 1}), Some("carol")).await;
    assert_eq!(
        outcome_of(l, unknown.id).await.rejection().unwrap().code,
        "unknown-account"
    );
    let invalid = send(l, accounts::DEPOSIT, json!({"amount": -1}), Some("bob")).await;
    assert_eq!(
        outcome_of(l, invalid.id).await.rejection().unwrap().code,
        "invalid-amount"
    );

    // A balance that would overflow refuses the deposit or transfer, and a
    // refused transfer debits nothing.
    let rich = send(l, accounts::OPEN_ACCOUNT, json!({}), Some("rich")).await;
    assert!(accepted(&outcome_of(l, rich.id).await));
    let max = send(
        l,
        accounts::DEPOSIT,
        json!({"amount": i64::MAX}),
        Some("rich"),
    )
    .await;
    assert!(accepted(&outcome_of(l, max.id).await));
    let more = send(l, accounts::DEPOSIT, json!({"amount": 1}), Some("rich")).await;
    assert_eq!(
        outcome_of(l, more.id).await.rejection().unwrap().code,
        "balance-overflow"
    );
    let to_rich = send(
        l,
        accounts::TRANSFER,
        json!({"to": "rich", "amount": 5}),
        Some("alice"),
    )
    .await;
    assert_eq!(
        outcome_of(l, to_rich.id).await.rejection().unwrap().code,
        "balance-overflow"
    );

    wait_until("the read model to catch up", || async {
        balances.balance("alice") == Some(20) && balances.balance("bob") == Some(50)
    })
    .await;

    // Restart: the command side is rebuilt from the events and decides the same.
    processor.abort();
    let _ = processor.await;
    let processor = start(log.clone()).await;
    let too_much = send(l, accounts::WITHDRAW, json!({"amount": 21}), Some("alice")).await;
    assert_eq!(
        outcome_of(l, too_much.id).await.rejection().unwrap().code,
        "insufficient-funds"
    );
    let exact = send(l, accounts::WITHDRAW, json!({"amount": 20}), Some("alice")).await;
    assert_eq!(outcome_of(l, exact.id).await.data["balance"], 0);

    // A fresh read model replays the whole history.
    let replayed = Balances::new();
    let (b, l2) = (replayed.clone(), log.clone());
    let follower2 = tokio::spawn(async move { b.run(l2, std::future::pending()).await });
    wait_until("the replayed read model", || async {
        replayed.balance("alice") == Some(0) && replayed.balance("bob") == Some(50)
    })
    .await;
    for t in [processor, follower, follower2] {
        t.abort();
    }
}

#[tokio::test]
async fn the_example_runs_as_one_unit_and_stops_cleanly() {
    let (log, _dir) = test_log().await;
    let balances = Balances::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::spawn(cmdr_processor::example::run(
        log.clone(),
        balances.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let l = log.as_ref();
    send(l, accounts::OPEN_ACCOUNT, json!({}), Some("dora")).await;
    let deposit = send(l, accounts::DEPOSIT, json!({"amount": 7}), Some("dora")).await;
    assert!(accepted(&outcome_of(l, deposit.id).await));
    wait_until("the balance", || async {
        balances.balance("dora") == Some(7)
    })
    .await;
    stop.send(()).unwrap();
    app.await.unwrap().unwrap();
}

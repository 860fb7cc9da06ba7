//! The SDK's outcome model: accepted and rejected commands, event handlers'
//! causal links, skipped actions, and graceful shutdown.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use cmdr_contract::{EventDraft, Outcome, REJECTED_ACTION};
use cmdr_processor::{records::ACCEPTED_ACTION, Decision, Processor};
use common::*;
use serde_json::json;
use tokio::sync::oneshot;

#[tokio::test]
async fn accepted_and_rejected_commands_get_linked_outcome_events() {
    let (log, _dir) = test_log().await;
    let processor = Processor::builder_shared(log.clone())
        .group("greeter")
        .command("greet", |cmd, ctx| async move {
            assert_eq!(ctx.id, cmd.id);
            assert_eq!(ctx.attempt, 1);
            match cmd.data.get("name").and_then(|n| n.as_str()) {
                Some(name) => Ok(Decision::accept([
                    EventDraft::new("greeting-prepared", json!({ "name": name })),
                    EventDraft::new("greeted", json!({ "name": name })).with_key("audit"),
                ])),
                None => Ok(Decision::reject_with(
                    "missing-name",
                    "data.name is required",
                    json!({"field": "name"}),
                )),
            }
        })
        .command("noop", |_cmd, _ctx| async { Ok(Decision::accept([])) })
        .event("greeted", |event, _ctx| async move {
            Ok(vec![EventDraft::new(
                "greeting-logged",
                json!({ "of": event.id }),
            )])
        })
        .retry(fast_retry(3))
        .build()
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(processor.run(async {
        let _ = stopped.await;
    }));

    let ok = send(log.as_ref(), "greet", json!({"name": "ada"}), Some("k1")).await;
    let no = send(log.as_ref(), "greet", json!({}), Some("k2")).await;
    let noop = send(log.as_ref(), "noop", json!({}), None).await;

    let accepted_outcome = outcome_of(log.as_ref(), ok.id).await;
    assert_eq!(accepted_outcome.action, "greeted");
    assert_eq!(accepted_outcome.outcome, Some(Outcome::Accepted));
    assert_eq!(accepted_outcome.key, "audit");
    let rejected = outcome_of(log.as_ref(), no.id).await;
    assert_eq!(rejected.action, REJECTED_ACTION);
    let rejection = rejected.rejection().unwrap();
    assert_eq!(rejection.code, "missing-name");
    assert_eq!(rejection.details, json!({"field": "name"}));
    assert_eq!(
        (rejected.parent, rejected.root, rejected.key.as_str()),
        (no.id, Some(no.id), "k2")
    );
    let noop_outcome = outcome_of(log.as_ref(), noop.id).await;
    assert_eq!(noop_outcome.action, ACCEPTED_ACTION);

    // The event handler's event: parent = the greeted event, root = the command.
    let logged = wait_for_value("the event handler's event", || async {
        events(log.as_ref())
            .await
            .into_iter()
            .find(|e| e.action == "greeting-logged")
    })
    .await;
    assert_eq!(logged.parent, accepted_outcome.id);
    assert_eq!(logged.root, Some(ok.id));
    assert_eq!(logged.key, "audit");
    assert_eq!(logged.outcome, None);

    let all = events(log.as_ref()).await;
    let prepared: Vec<_> = all.iter().filter(|e| e.parent == ok.id).collect();
    assert_eq!(prepared.len(), 2, "two events for the accepted command");
    let first = prepared
        .iter()
        .find(|e| e.action == "greeting-prepared")
        .unwrap();
    assert_eq!(
        (first.key.as_str(), first.outcome, first.root),
        ("k1", None, Some(ok.id))
    );

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn commands_without_a_handler_are_skipped_and_committed() {
    let (log, _dir) = test_log().await;
    let seen = Arc::new(AtomicU32::new(0));
    let counter = seen.clone();
    let processor = Processor::builder_shared(log.clone())
        .group("mine")
        .command("mine", move |_cmd, _ctx| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(Decision::accept_one("done", json!({}))) }
        })
        .build()
        .unwrap();
    let theirs: Vec<_> = (0..20)
        .map(|i| command("theirs", json!({"i": i}), Some("k")))
        .collect();
    send_all(log.as_ref(), &theirs).await;
    let mine = send(log.as_ref(), "mine", json!({}), Some("k")).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(processor.run(async {
        let _ = stopped.await;
    }));
    outcome_of(log.as_ref(), mine.id).await;
    // Everything before `mine` in its partition is committed, skipped commands included.
    let partition = cmdr_log::partition_for_key(b"k", TEST_PARTITIONS);
    wait_until("the commit past all 21 commands", || async {
        log.committed("mine", cmdr_contract::COMMANDS_TOPIC, partition)
            .await
            .unwrap()
            == Some(21)
    })
    .await;
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(
        outcomes(log.as_ref()).await.len(),
        1,
        "no outcome for other processors' commands"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_drains_running_handlers() {
    let (log, _dir) = test_log().await;
    let (entered_tx, entered_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let processor = Processor::builder_shared(log.clone())
        .group("slow")
        .command("slow", move |_cmd, _ctx| {
            let entered = entered_tx.clone();
            let mut release = release_rx.clone();
            async move {
                let _ = entered.send(()).await;
                let _ = release.wait_for(|r| *r).await;
                Ok(Decision::accept_one("slow-done", json!({})))
            }
        })
        .build()
        .unwrap();
    let cmd = send(log.as_ref(), "slow", json!({}), None).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(processor.run(async {
        let _ = stopped.await;
    }));
    let mut entered_rx = entered_rx;
    entered_rx.recv().await.unwrap();
    stop.send(()).unwrap();
    release_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    // The handler that was running when shutdown came finished and was flushed.
    assert_eq!(outcomes(log.as_ref()).await[&cmd.id].len(), 1);
}

#[tokio::test]
async fn a_processor_needs_a_group_and_a_handler() {
    let (log, _dir) = test_log().await;
    assert!(Processor::builder_shared(log.clone())
        .group("g")
        .build()
        .is_err());
    assert!(Processor::builder_shared(log)
        .command("a", |_c, _x| async { Ok(Decision::accept([])) })
        .build()
        .is_err());
}

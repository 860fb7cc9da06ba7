//! Transient failures: retried with backoff, then settled as
//! `processing-failed` with a dead letter; never an endless loop.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cmdr_contract::EventDraft;
use cmdr_processor::{records::PROCESSING_FAILED, DeadLetters, Decision, Processor, RetryPolicy};
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_handler_that_fails_twice_then_succeeds_is_accepted_on_attempt_three() {
    let (log, _dir) = test_log().await;
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    let processor = Processor::builder_shared(log.clone())
        .group("flaky")
        .command("flaky", move |_cmd, ctx| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if ctx.attempt < 3 {
                    return Err(format!("try {} failed", ctx.attempt).into());
                }
                Ok(Decision::accept_one(
                    "worked",
                    json!({ "attempt": ctx.attempt }),
                ))
            }
        })
        .retry(fast_retry(5))
        .build()
        .unwrap();
    let cmd = send(log.as_ref(), "flaky", json!({}), None).await;
    let task = tokio::spawn(processor.run(std::future::pending()));
    let outcome = outcome_of(log.as_ref(), cmd.id).await;
    task.abort();
    assert!(accepted(&outcome));
    assert_eq!(outcome.data["attempt"], 3);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_attempt_that_hangs_is_cut_at_the_attempt_timeout_and_retried() {
    let (log, _dir) = test_log().await;
    let processor = Processor::builder_shared(log.clone())
        .group("hangs")
        .command("hangs", |_cmd, ctx| async move {
            if ctx.attempt == 1 {
                // A call that never answers (a lost connection, a deadlock).
                std::future::pending::<()>().await;
            }
            Ok(Decision::accept_one(
                "worked",
                json!({ "attempt": ctx.attempt }),
            ))
        })
        .retry(fast_retry(3).attempt_timeout(Duration::from_millis(200)))
        .build()
        .unwrap();
    let cmd = send(log.as_ref(), "hangs", json!({}), Some("h")).await;
    let task = tokio::spawn(processor.run(std::future::pending()));
    let outcome = outcome_of(log.as_ref(), cmd.id).await;
    task.abort();
    assert!(accepted(&outcome), "{outcome:?}");
    assert_eq!(outcome.data["attempt"], 2);
}

#[tokio::test]
async fn a_handler_that_always_hangs_is_settled_as_processing_failed() {
    let (log, _dir) = test_log().await;
    let processor = Processor::builder_shared(log.clone())
        .group("stuck")
        .command("stuck", |_cmd, _ctx| async {
            std::future::pending::<Result<Decision, cmdr_processor::HandlerError>>().await
        })
        .retry(fast_retry(2).attempt_timeout(Duration::from_millis(100)))
        .build()
        .unwrap();
    let cmd = send(log.as_ref(), "stuck", json!({}), Some("s")).await;
    let task = tokio::spawn(processor.run(std::future::pending()));
    let rejection = outcome_of(log.as_ref(), cmd.id).await.rejection().unwrap();
    task.abort();
    assert_eq!(rejection.code, PROCESSING_FAILED);
    assert_eq!(rejection.details["attempts"], 2);
    assert_eq!(rejection.details["error"], "attempt timed out after 100 ms");
}

#[tokio::test]
async fn shutdown_cuts_a_retry_wait_short_and_the_next_run_handles_the_command() {
    let (log, _dir) = test_log().await;
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    // A minute between attempts: without the cut, shutdown would wait it out.
    let processor = Processor::builder_shared(log.clone())
        .group("slow-retry")
        .command("flaky", move |_cmd, _ctx| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Err("not yet".into()) }
        })
        .retry(RetryPolicy::new(5, Duration::from_secs(60)))
        .build()
        .unwrap();
    let cmd = send(log.as_ref(), "flaky", json!({}), Some("f")).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(processor.run(async {
        let _ = stopped.await;
    }));
    wait_until("the first attempt", || {
        let n = attempts.load(Ordering::SeqCst);
        async move { n >= 1 }
    })
    .await;
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("shutdown waited for the retry backoff")
        .unwrap();
    ended.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert!(!outcomes(log.as_ref()).await.contains_key(&cmd.id));

    // Left uncommitted: the next run of the group handles it.
    let processor = Processor::builder_shared(log.clone())
        .group("slow-retry")
        .command("flaky", |_cmd, ctx| async move {
            Ok(Decision::accept_one(
                "worked",
                json!({ "attempt": ctx.attempt }),
            ))
        })
        .build()
        .unwrap();
    let task = tokio::spawn(processor.run(std::future::pending()));
    let outcome = outcome_of(log.as_ref(), cmd.id).await;
    task.abort();
    assert!(accepted(&outcome), "{outcome:?}");
}

#[tokio::test]
async fn a_handler_that_always_fails_becomes_processing_failed_with_a_dead_letter() {
    let (log, _dir) = test_log().await;
    let processor = Processor::builder_shared(log.clone())
        .group("broken")
        .command("broken", |_cmd, _ctx| async {
            Err("database unreachable".into())
        })
        .command("panics", |_cmd, _ctx| async { panic!("handler bug") })
        .command("panics-early", |cmd: cmdr_contract::Command, _ctx| {
            // Panics before its future exists (no `async` block yet).
            let n = cmd
                .data
                .get("n")
                .and_then(|v| v.as_u64())
                .expect("early handler bug");
            async move {
                Ok(cmdr_processor::Decision::accept(vec![EventDraft::new(
                    "n",
                    json!(n),
                )]))
            }
        })
        .event("ping", |_e, _ctx| async {
            Err::<Vec<EventDraft>, _>("event side down".into())
        })
        .retry(fast_retry(3))
        .build()
        .unwrap();
    let cmd = send(log.as_ref(), "broken", json!({}), Some("b")).await;
    let bug = send(log.as_ref(), "panics", json!({}), Some("p")).await;
    let early = send(log.as_ref(), "panics-early", json!({}), Some("q")).await;
    let task = tokio::spawn(processor.run(std::future::pending()));

    let failed = outcome_of(log.as_ref(), cmd.id).await;
    let rejection = failed.rejection().unwrap();
    assert_eq!(rejection.code, PROCESSING_FAILED);
    assert_eq!(rejection.details["attempts"], 3);
    assert_eq!(rejection.details["error"], "database unreachable");
    let panicked = outcome_of(log.as_ref(), bug.id).await.rejection().unwrap();
    assert_eq!(panicked.code, PROCESSING_FAILED);
    assert!(panicked.details["error"]
        .as_str()
        .unwrap()
        .contains("handler bug"));
    let early = outcome_of(log.as_ref(), early.id)
        .await
        .rejection()
        .unwrap();
    assert_eq!(early.code, PROCESSING_FAILED);
    assert!(early.details["error"]
        .as_str()
        .unwrap()
        .contains("early handler bug"));

    let letters = DeadLetters::open(log.clone()).await.unwrap();
    let page = letters.list(Some("broken"), 0, 100).await.unwrap();
    let of_cmd = page
        .items
        .iter()
        .find(|d| d.letter.input["id"] == json!(cmd.id))
        .unwrap();
    assert_eq!(of_cmd.letter.attempts, 3);
    assert_eq!(of_cmd.letter.last_error, "database unreachable");
    assert_eq!(of_cmd.letter.topic, "commands");
    assert!(letters
        .list(Some("somebody-else"), 0, 100)
        .await
        .unwrap()
        .items
        .is_empty());
    task.abort();
}

#[tokio::test]
async fn an_answer_too_large_for_a_record_fails_the_command_not_the_processor() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn cmdr_log::Log> = Arc::new(
        cmdr_log::embedded::EmbeddedLog::open(
            cmdr_log::embedded::LogConfig::new(dir.path()).max_record_bytes(64 * 1024),
        )
        .await
        .unwrap(),
    );
    cmdr_processor::sdk::ensure_topics(log.as_ref(), 1)
        .await
        .unwrap();
    let processor = Processor::builder_shared(log.clone())
        .group("sizes")
        .command("too-big", |_cmd, _ctx| async {
            Ok(Decision::accept_one(
                "big",
                json!({"pad": "x".repeat(100_000)}),
            ))
        })
        .command("fine", |_cmd, _ctx| async {
            Ok(Decision::accept_one("small", json!({})))
        })
        .retry(fast_retry(2))
        .build()
        .unwrap();
    let big = send(log.as_ref(), "too-big", json!({}), Some("a")).await;
    let fine = send(log.as_ref(), "fine", json!({}), Some("b")).await;
    let task = tokio::spawn(processor.run(std::future::pending()));
    let failed = outcome_of(log.as_ref(), big.id).await.rejection().unwrap();
    assert_eq!(failed.code, PROCESSING_FAILED);
    assert!(
        failed.details["error"]
            .as_str()
            .unwrap()
            .contains("an event record can hold"),
        "{}",
        failed.details
    );
    assert!(accepted(&outcome_of(log.as_ref(), fine.id).await));
    assert!(!task.is_finished(), "the processor keeps running");
    task.abort();
}

/// A log whose records are at most 64 KiB.
async fn small_log(dir: &std::path::Path) -> Arc<dyn cmdr_log::Log> {
    let log: Arc<dyn cmdr_log::Log> = Arc::new(
        cmdr_log::embedded::EmbeddedLog::open(
            cmdr_log::embedded::LogConfig::new(dir).max_record_bytes(64 * 1024),
        )
        .await
        .unwrap(),
    );
    cmdr_processor::sdk::ensure_topics(log.as_ref(), 1)
        .await
        .unwrap();
    log
}

/// An error larger than a record fails its command (cut short in the
/// rejection and the dead letter), not the processor, which would
/// otherwise stop on the same command at every restart.
#[tokio::test]
async fn an_error_larger_than_a_record_fails_the_command_not_the_processor() {
    let dir = tempfile::tempdir().unwrap();
    let log = small_log(dir.path()).await;
    let processor = Processor::builder_shared(log.clone())
        .group("errs")
        .command("boom", |_cmd, _ctx| async {
            Err::<Decision, _>(format!("upstream said: {}", "x".repeat(100_000)).into())
        })
        .retry(fast_retry(2))
        .build()
        .unwrap();
    let cmd = send(log.as_ref(), "boom", json!({}), Some("a")).await;
    let task = tokio::spawn(processor.run(std::future::pending()));
    let failed = outcome_of(log.as_ref(), cmd.id).await.rejection().unwrap();
    assert_eq!(failed.code, PROCESSING_FAILED);
    let error = failed.details["error"].as_str().unwrap();
    assert!(
        error.len() <= cmdr_processor::records::MAX_ERROR_LEN && error.ends_with("bytes cut)"),
        "{error}"
    );
    let letters = DeadLetters::open(log.clone())
        .await
        .unwrap()
        .list(Some("errs"), 0, 10)
        .await
        .unwrap();
    assert_eq!(letters.items.len(), 1);
    assert_eq!(letters.items[0].letter.input["id"], cmd.id.to_string());
    assert!(!task.is_finished(), "the processor stopped");
    task.abort();
}

/// A command key of control characters takes six bytes a character in
/// JSON; an answer that fits beside it is appended, not a processor stop.
#[tokio::test]
async fn an_answer_that_fits_beside_an_escaped_key_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = small_log(dir.path()).await;
    let room = 64 * 1024 - cmdr_processor::records::RECORD_HEADROOM;
    let processor = Processor::builder_shared(log.clone())
        .group("keys")
        .command("big", move |_cmd, _ctx| async move {
            // Just under the room an answer has.
            Ok(Decision::accept_one(
                "big",
                json!({"pad": "x".repeat(room - 100)}),
            ))
        })
        .retry(fast_retry(2))
        .build()
        .unwrap();
    let key = "\u{1}".repeat(cmdr_contract::MAX_KEY_LEN);
    let cmd = send(log.as_ref(), "big", json!({}), Some(&key)).await;
    let task = tokio::spawn(processor.run(std::future::pending()));
    let outcome = outcome_of(log.as_ref(), cmd.id).await;
    assert_eq!(outcome.action, "big", "{outcome:?}");
    assert!(!task.is_finished(), "the processor stopped");
    task.abort();
}

//! Webhook processors against a real HTTP server on 127.0.0.1:0: success,
//! rejection, timeout, retries and dead letters, and the registry.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use cmdr_processor::records::PROCESSING_FAILED;
use cmdr_processor::webhook::protocol::signature;
use cmdr_processor::webhook::{
    supervise, RegistryError, WebhookConfig, WebhookRegistration, WebhookRegistry,
};
use cmdr_processor::DeadLetters;
use common::*;
use serde_json::{json, Value};

/// Requests seen by the test server, by route: (attempt header, body).
type Seen = Arc<Mutex<HashMap<String, Vec<(u32, Value)>>>>;

async fn answer(
    State(seen): State<Seen>,
    Path(route): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let attempt: u32 = headers
        .get("cmdr-attempt")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    seen.lock()
        .unwrap()
        .entry(route.clone())
        .or_default()
        .push((attempt, body.clone()));
    match route.as_str() {
        "ok" => (
            StatusCode::OK,
            Json(json!({"events": [
                {"action": "payment-recorded", "data": {"amount": body["data"]["amount"]}},
                {"action": "ledger-updated", "data": {}, "key": "ledger"}
            ]})),
        ),
        "reject" => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"rejection": {"code": "card-declined", "message": "declined", "details": {"retry": false}}}),
            ),
        ),
        "flaky" if attempt < 3 => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "busy"})),
        ),
        "flaky" => (StatusCode::OK, Json(json!({"events": []}))),
        "huge" => (
            StatusCode::OK,
            Json(json!({"events": [{"action": "huge", "data": {"pad": "x".repeat(100_000)}}]})),
        ),
        "slow" if attempt < 2 => std::future::pending().await,
        "slow" => (
            StatusCode::OK,
            Json(json!({"events": [{"action": "slow-done", "data": {}}]})),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "down"})),
        ),
    }
}

async fn start_server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/{route}", post(answer))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

fn registration(action: &str, url: String) -> WebhookRegistration {
    WebhookRegistration {
        actions: vec![action.into()],
        url,
        secret: None,
    }
}

/// Requests a signing endpoint saw: (its `cmdr-signature`, its body).
type SignedRequests = Arc<Mutex<Vec<(String, bytes::Bytes)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_with_a_secret_signs_each_request() {
    const SECRET: &str = "correct-horse-battery-staple";
    // The endpoint checks the signature as WEBHOOKS.md tells processors to.
    let seen: SignedRequests = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(seen): State<SignedRequests>,
                 headers: HeaderMap,
                 body: bytes::Bytes| async move {
                    let header = headers
                        .get("cmdr-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().push((header.clone(), body.clone()));
                    let t: u64 = header
                        .strip_prefix("t=")
                        .and_then(|rest| rest.split(',').next())
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    if header == signature(SECRET, t, &body) {
                        (
                            StatusCode::OK,
                            Json(json!({"events": [{"action": "paid", "data": {}}]})),
                        )
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            Json(json!({"error": "bad signature"})),
                        )
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (log, _dir) = test_log().await;
    let registry = WebhookRegistry::open(log.clone()).await.unwrap();
    let signed = |action: &str, secret: &str| WebhookRegistration {
        actions: vec![action.into()],
        url: url.clone(),
        secret: Some(secret.into()),
    };
    registry.put("signed", signed("pay", SECRET)).await.unwrap();
    registry
        .put("forged", signed("steal", "not-the-right-secret"))
        .await
        .unwrap();
    let config = WebhookConfig {
        retry: fast_retry(2),
        ..WebhookConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let supervisor = tokio::spawn(supervise(log.clone(), registry.clone(), config, async {
        let _ = stopped.await;
    }));
    let pay = send(log.as_ref(), "pay", json!({"amount": 3}), Some("p")).await;
    let steal = send(log.as_ref(), "steal", json!({}), Some("s")).await;
    assert!(accepted(&outcome_of(log.as_ref(), pay.id).await));
    let refused = outcome_of(log.as_ref(), steal.id)
        .await
        .rejection()
        .unwrap();
    assert_eq!(
        refused.code, PROCESSING_FAILED,
        "a wrong secret fails the check"
    );

    let logged: Vec<bytes::Bytes> = read_all(log.as_ref(), "commands")
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 3, "pay once, steal twice: {}", seen.len());
    for (header, body) in &seen {
        assert!(
            header.starts_with("t=") && header.contains(",v1="),
            "{header}"
        );
        assert!(logged.contains(body), "the body is the command as logged");
    }
    drop(stop);
    supervisor.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_accept_reject_retry_time_out_and_dead_letter() {
    let (log, _dir) = test_log().await;
    let (base, seen) = start_server().await;
    let registry = WebhookRegistry::open(log.clone()).await.unwrap();
    for route in ["ok", "reject", "flaky", "slow", "down", "huge"] {
        registry
            .put(
                route,
                registration(&format!("do-{route}"), format!("{base}/{route}")),
            )
            .await
            .unwrap();
    }
    let config = WebhookConfig {
        timeout: Duration::from_millis(300),
        retry: fast_retry(3),
        max_answer_bytes: 64 * 1024,
        ..WebhookConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let supervisor = tokio::spawn(supervise(log.clone(), registry.clone(), config, async {
        let _ = stopped.await;
    }));

    let ok = send(log.as_ref(), "do-ok", json!({"amount": 12}), Some("acct-1")).await;
    let reject = send(log.as_ref(), "do-reject", json!({}), None).await;
    let flaky = send(log.as_ref(), "do-flaky", json!({}), None).await;
    let slow = send(log.as_ref(), "do-slow", json!({}), None).await;
    let down = send(log.as_ref(), "do-down", json!({}), Some("d")).await;
    let huge = send(log.as_ref(), "do-huge", json!({}), Some("h")).await;

    // Success: the processor's events, linked to the command, the last one the outcome.
    let outcome = outcome_of(log.as_ref(), ok.id).await;
    assert!(accepted(&outcome));
    assert_eq!(
        (outcome.action.as_str(), outcome.key.as_str()),
        ("ledger-updated", "ledger")
    );
    let all = events(log.as_ref()).await;
    let recorded = all.iter().find(|e| e.action == "payment-recorded").unwrap();
    assert_eq!((recorded.parent, recorded.key.as_str()), (ok.id, "acct-1"));
    assert_eq!(recorded.data["amount"], 12);
    let body = seen.lock().unwrap()["ok"][0].1.clone();
    for field in ["id", "action", "data", "key", "timestamp", "meta"] {
        assert!(body.get(field).is_some(), "request carries {field}");
    }
    assert_eq!(body["id"], json!(ok.id));

    // Rejection.
    let rejected = outcome_of(log.as_ref(), reject.id)
        .await
        .rejection()
        .unwrap();
    assert_eq!(rejected.code, "card-declined");
    assert_eq!(rejected.details, json!({"retry": false}));

    // Retries: two 503s, then accepted on attempt 3.
    assert!(accepted(&outcome_of(log.as_ref(), flaky.id).await));
    let attempts: Vec<u32> = seen.lock().unwrap()["flaky"]
        .iter()
        .map(|(a, _)| *a)
        .collect();
    assert_eq!(attempts, [1, 2, 3]);

    // Timeout: no answer to attempt 1, accepted on attempt 2.
    let slow_outcome = outcome_of(log.as_ref(), slow.id).await;
    assert_eq!(slow_outcome.action, "slow-done");

    // Dead letter: every attempt fails; a processing-failed rejection ends the wait.
    let failed = outcome_of(log.as_ref(), down.id).await.rejection().unwrap();
    assert_eq!(failed.code, PROCESSING_FAILED);
    let letters = DeadLetters::open(log.clone())
        .await
        .unwrap()
        .list(Some("down"), 0, 10)
        .await
        .unwrap();
    assert_eq!(letters.items.len(), 1);
    let letter = &letters.items[0].letter;
    assert_eq!(
        (letter.attempts, letter.input["id"].clone()),
        (3, json!(down.id))
    );
    assert!(
        letter.last_error.contains("HTTP 500"),
        "{}",
        letter.last_error
    );

    // An answer over the size cap is a failed attempt, never read whole.
    let too_big = outcome_of(log.as_ref(), huge.id).await.rejection().unwrap();
    assert_eq!(too_big.code, PROCESSING_FAILED);
    assert!(
        too_big.details["error"]
            .as_str()
            .unwrap()
            .contains("answer larger than 65536 bytes"),
        "{}",
        too_big.details
    );

    // Each command was settled exactly once.
    let by_command = outcomes(log.as_ref()).await;
    for id in [ok.id, reject.id, flaky.id, slow.id, down.id, huge.id] {
        assert_eq!(by_command[&id].len(), 1);
    }
    stop.send(()).unwrap();
    supervisor.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_registration_added_while_running_is_picked_up() {
    let (log, _dir) = test_log().await;
    let (base, _seen) = start_server().await;
    let registry = WebhookRegistry::open(log.clone()).await.unwrap();
    let supervisor = tokio::spawn(supervise(
        log.clone(),
        registry.clone(),
        WebhookConfig::default(),
        std::future::pending(),
    ));
    let cmd = send(log.as_ref(), "late", json!({}), None).await;
    registry
        .put("late", registration("late", format!("{base}/ok")))
        .await
        .unwrap();
    assert!(accepted(&outcome_of(log.as_ref(), cmd.id).await));
    supervisor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_action_leave_one_owner() {
    let (log, _dir) = test_log().await;
    let registry = WebhookRegistry::open(log.clone()).await.unwrap();
    let puts: Vec<_> = (0..16)
        .map(|i| {
            let registry = registry.clone();
            tokio::spawn(async move {
                registry
                    .put(&format!("p{i}"), registration("pay", "http://h/x".into()))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut accepted = 0;
    for put in puts {
        accepted += usize::from(put.await.unwrap());
    }
    assert_eq!(accepted, 1, "one registration wins, the others are refused");
    let owners: Vec<_> = registry
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.handles("pay"))
        .collect();
    assert_eq!(owners.len(), 1, "{owners:?}");
}

#[tokio::test]
async fn the_registry_validates_persists_and_deletes() {
    let (log, _dir) = test_log().await;
    let registry = WebhookRegistry::open(log.clone()).await.unwrap();
    let bad = registry
        .put("no/slashes", registration("pay", "http://h/x".into()))
        .await;
    assert!(matches!(bad, Err(RegistryError::Invalid(v)) if v.0[0].pointer == "/name"));
    let bad = registry
        .put(
            "p",
            WebhookRegistration {
                actions: vec![],
                url: "ftp://h".into(),
                secret: None,
            },
        )
        .await;
    let Err(RegistryError::Invalid(v)) = bad else {
        panic!("expected violations")
    };
    let pointers: Vec<_> = v.0.iter().map(|v| v.pointer.as_str()).collect();
    assert_eq!(pointers, ["/actions", "/url"]);

    registry
        .put("pay", registration("pay", "http://h/one".into()))
        .await
        .unwrap();
    registry
        .put("pay", registration("pay", "http://h/two".into()))
        .await
        .unwrap();
    registry
        .put("ship", registration("ship", "http://h/ship".into()))
        .await
        .unwrap();
    // One action, one processor: another name for `pay` is refused.
    let taken = registry
        .put(
            "billing",
            WebhookRegistration {
                actions: vec!["refund".into(), "pay".into()],
                url: "http://h/billing".into(),
                secret: None,
            },
        )
        .await;
    let Err(RegistryError::Invalid(v)) = taken else {
        panic!("expected the taken action to be refused")
    };
    assert_eq!(v.0.len(), 1);
    assert_eq!(v.0[0].pointer, "/actions/1");
    assert!(
        v.0[0].message.contains("processor pay"),
        "{}",
        v.0[0].message
    );
    assert!(registry.get("billing").await.unwrap().is_none());
    assert_eq!(
        registry.get("pay").await.unwrap().unwrap().url,
        "http://h/two"
    );

    // Another instance (a fresh registry over the same log) sees the same.
    let other = WebhookRegistry::open(log.clone()).await.unwrap();
    assert_eq!(
        other.list().await.unwrap().keys().collect::<Vec<_>>(),
        ["pay", "ship"]
    );
    assert!(other.delete("pay").await.unwrap());
    assert!(!other.delete("pay").await.unwrap());
    assert_eq!(
        registry.get("pay").await.unwrap(),
        None,
        "deletion seen through the first instance"
    );
    assert_eq!(registry.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_changed_registration_continues_where_the_old_one_stopped() {
    let (log, _dir) = test_log().await;
    let (base, seen) = start_server().await;
    let registry = WebhookRegistry::open(log.clone()).await.unwrap();
    registry
        .put("pay", registration("pay", format!("{base}/ok")))
        .await
        .unwrap();
    let run = |registry: WebhookRegistry| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(supervise(
            log.clone(),
            registry,
            WebhookConfig::default(),
            async {
                let _ = stopped.await;
            },
        ));
        (stop, task)
    };
    let (stop, task) = run(registry.clone());
    let before = send(log.as_ref(), "pay", json!({"amount": 1}), Some("a")).await;
    assert_eq!(
        outcome_of(log.as_ref(), before.id).await.action,
        "ledger-updated"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Same name, new URL: the same consumer group goes on from its offset.
    registry
        .put("pay", registration("pay", format!("{base}/reject")))
        .await
        .unwrap();
    let after = send(log.as_ref(), "pay", json!({"amount": 2}), Some("a")).await;
    let (stop, task) = run(registry.clone());
    assert_eq!(
        outcome_of(log.as_ref(), after.id)
            .await
            .rejection()
            .unwrap()
            .code,
        "card-declined"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let by_command = outcomes(log.as_ref()).await;
    assert_eq!(
        (by_command[&before.id].len(), by_command[&after.id].len()),
        (1, 1)
    );
    let requests = seen.lock().unwrap();
    assert_eq!(
        requests["ok"].len(),
        1,
        "the first command was not sent again"
    );
    assert_eq!(requests["reject"].len(), 1);
}

/// WEBHOOKS.md: any status but 200 and 422 is a failed attempt, redirects
/// included. Followed, a 303 would turn into a GET whose answer became
/// the command's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_attempt_not_followed() {
    use axum::response::IntoResponse;
    let app = Router::new()
        .route(
            "/hook",
            post(|| async {
                (
                    StatusCode::SEE_OTHER,
                    [(axum::http::header::LOCATION, "/elsewhere")],
                )
                    .into_response()
            }),
        )
        .route(
            "/elsewhere",
            axum::routing::get(|| async {
                Json(json!({"events": [{"action": "not-from-the-processor"}]}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (log, _dir) = test_log().await;
    let cmd = send(log.as_ref(), "pay", json!({}), Some("k")).await;
    let config = WebhookConfig {
        retry: fast_retry(2),
        ..WebhookConfig::default()
    };
    let l = log.clone();
    let task = tokio::spawn(async move {
        cmdr_processor::webhook::run_webhook(
            l,
            "redirecting",
            registration("pay", url),
            &config,
            std::future::pending(),
        )
        .await
    });
    let outcome = outcome_of(log.as_ref(), cmd.id).await;
    task.abort();
    let rejection = outcome.rejection().expect("a rejection");
    assert_eq!(rejection.code, PROCESSING_FAILED, "{outcome:?}");
    assert!(
        rejection.details["error"].as_str().unwrap().contains("303"),
        "{rejection:?}"
    );
}

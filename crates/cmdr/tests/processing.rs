//! End-to-end: processors inside the real `cmdr` binary.
//!
//! - `cmdr serve --example accounts`: sync outcomes over HTTP and through
//!   `cmdr send --sync`, the balances read model at `/accounts`, and per-key
//!   order under concurrent load;
//! - webhook processors registered with `PUT /processors/{name}` and served by
//!   an axum server inside the test: success, rejection, retries then a dead
//!   letter, no answer in time (timeouts) then a dead letter, an answer that
//!   comes after the wait (202, then accepted), and registrations that
//!   survive a restart.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use support::{run_cli, send, Reply, Server, Sse, TestPki};
use tokio::sync::watch;

/// Longest a polled condition may take to hold.
const POLL_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two polls.
const POLL_EVERY: Duration = Duration::from_millis(20);

fn client() -> reqwest::Client {
    support::client()
}

/// POSTs a command with `?sync=true`.
async fn sync_command(s: &Server, action: &str, key: &str, data: Value) -> Reply {
    send(
        client()
            .post(s.at("/commands?sync=true"))
            .json(&json!({"action": action, "data": data, "key": key})),
    )
    .await
}

/// GETs `path` until `done` holds for the body (bounded); returns the last reply.
async fn poll(s: &Server, path: &str, done: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = tokio::time::Instant::now() + POLL_TIMEOUT;
    loop {
        let r = send(client().get(s.at(path))).await;
        if done(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path}: condition not met within {POLL_TIMEOUT:?}; last answer {} {}\n{}",
            r.status,
            r.text,
            s.output()
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn balance_is(s: &Server, account: &str, balance: i64) {
    poll(s, &format!("/accounts/{account}"), |r| {
        r.status == 200 && r.body["balance"] == balance
    })
    .await;
}

#[tokio::test]
async fn accounts_example_outcomes_read_model_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &["--example", "accounts"]).await;

    // The example's routes are described with the API's.
    let doc = send(client().get(s.at("/openapi.json"))).await.expect(200);
    let accounts = &doc.body["paths"]["/accounts"]["get"];
    assert!(accounts["summary"].is_string(), "{}", doc.text);
    assert!(accounts["responses"]["401"].is_object(), "{}", doc.text);
    assert!(doc.body["paths"]["/accounts/{id}"]["get"].is_object());
    assert!(doc.body["paths"]["/commands"]["post"].is_object());
    assert!(doc.body["components"]["schemas"]["AccountPage"].is_object());
    assert!(doc.body["components"]["schemas"]["Problem"].is_object());
    let docs = send(client().get(s.at("/docs"))).await.expect(200);
    assert!(docs.text.contains("/accounts/{id}"), "{}", docs.text);

    let r = sync_command(&s, "open-account", "acc-1", json!({"owner": "ada"}))
        .await
        .expect(201);
    assert_eq!(r.body["status"], "accepted", "{}", r.text);
    assert_eq!(
        r.body["events"][0]["action"], "account-opened",
        "{}",
        r.text
    );
    assert_eq!(r.body["events"][0]["outcome"], "accepted", "{}", r.text);
    assert_eq!(r.body["events"][0]["parent"], r.body["id"], "{}", r.text);
    sync_command(&s, "deposit", "acc-1", json!({"amount": 100}))
        .await
        .expect(201);

    // Its actions are its own: a webhook cannot take one too.
    let r = register(&s, "shadow", &["ship", "deposit"], "http://127.0.0.1:9/x")
        .await
        .expect_problem(422, "invalid-registration");
    assert_eq!(r.body["errors"][0]["pointer"], "/actions/1", "{}", r.text);

    // The example's own routes answer a wrong method with a problem too.
    send(client().post(s.at("/accounts")))
        .await
        .expect_problem(405, "method-not-allowed");

    // Overdraft: 409 with the processor's reason.
    let r = sync_command(&s, "withdraw", "acc-1", json!({"amount": 500}))
        .await
        .expect_problem(409, "command-rejected");
    assert_eq!(
        r.body["rejection"]["code"], "insufficient-funds",
        "{}",
        r.text
    );
    assert_eq!(r.body["rejection"]["details"]["balance"], 100, "{}", r.text);
    assert_eq!(r.body["command"]["status"], "rejected", "{}", r.text);

    // A transfer emits events for both accounts, under their own keys.
    sync_command(&s, "open-account", "acc-2", json!({"owner": "bob"}))
        .await
        .expect(201);
    let r = sync_command(
        &s,
        "transfer",
        "acc-1",
        json!({"to": "acc-2", "amount": 30}),
    )
    .await
    .expect(201);
    let events: Vec<(&str, &str)> = r.body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {}", r.text))
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [
            ("transfer-debited", "acc-1"),
            ("transfer-credited", "acc-2")
        ],
        "{}",
        r.text
    );
    balance_is(&s, "acc-1", 70).await;
    balance_is(&s, "acc-2", 30).await;
    let r = send(client().get(s.at("/accounts"))).await.expect(200);
    let ids: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acc-1", "acc-2"], "{}", r.text);
    assert!(r.body["next"].is_null(), "{}", r.text);
    // A page at a time: `limit`, then the `next` link to the end.
    let r = send(client().get(s.at("/accounts?limit=1")))
        .await
        .expect(200);
    assert_eq!(r.body["items"][0]["id"], "acc-1", "{}", r.text);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
    let next = r.body["next"].as_str().expect("a next link").to_string();
    assert_eq!(next, "/accounts?after=acc-1&limit=1");
    let r = send(client().get(s.at(&next))).await.expect(200);
    assert_eq!(r.body["items"][0]["id"], "acc-2", "{}", r.text);
    assert!(r.body["next"].is_null(), "{}", r.text);
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "page=2",
        "after=a&after=b",
    ] {
        send(client().get(s.at(&format!("/accounts?{bad}"))))
            .await
            .expect_problem(400, "bad-request");
    }
    let r = send(
        client()
            .get(s.at("/accounts/acc-1"))
            .header("accept", "text/html"),
    )
    .await
    .expect(200);
    assert!(
        r.text.contains("<html") && r.text.contains("70"),
        "{}",
        r.text
    );
    send(client().get(s.at("/accounts/nobody")))
        .await
        .expect_problem(404, "not-found");

    // The command line: accepted (exit 0) and rejected (exit 2).
    let (status, out, err) = run_cli(&[
        "send",
        "deposit",
        "--data",
        r#"{"amount": 5}"#,
        "--key",
        "acc-2",
        "--sync",
        "--url",
        &s.url,
    ]);
    assert!(status.success(), "cmdr send: {status}\n{out}\n{err}");
    assert!(out.contains(r#""status": "accepted""#), "{out}");
    assert!(out.contains(r#""action": "deposited""#), "{out}");
    let (status, out, err) = run_cli(&[
        "send",
        "withdraw",
        "--data",
        r#"{"amount": 1000}"#,
        "--key",
        "acc-2",
        "--sync",
        "--url",
        &s.url,
    ]);
    assert_eq!(status.code(), Some(2), "cmdr send: {status}\n{out}\n{err}");
    assert!(
        err.contains("409") && err.contains("insufficient-funds"),
        "{err}"
    );
    balance_is(&s, "acc-2", 35).await;
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_under_concurrent_load() {
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 20;
    const ACCOUNTS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(&dir.path().join("data"), &["--example", "accounts"]).await);
    for a in 0..ACCOUNTS {
        sync_command(&s, "open-account", &format!("acc-{a}"), json!({}))
            .await
            .expect(201);
    }
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let s = s.clone();
        clients.push(tokio::spawn(async move {
            for j in 0..PER_CLIENT {
                let account = format!("acc-{}", (c + j) % ACCOUNTS);
                let amount = (c * 1000 + j + 1) as i64;
                sync_command(&s, "deposit", &account, json!({"amount": amount}))
                    .await
                    .expect(201);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    for a in 0..ACCOUNTS {
        let account = format!("acc-{a}");
        let expected = CLIENTS * PER_CLIENT / ACCOUNTS;
        // The deposits in the order they were appended to the commands topic.
        let mut sse = Sse::connect(
            &s.at(&format!(
                "/commands/updates?from=start&action=deposit&key={account}"
            )),
            None,
        )
        .await;
        let mut appended = Vec::new();
        for _ in 0..expected {
            let m = sse.next().await;
            appended.push((
                m.data["id"].as_str().unwrap().to_string(),
                m.data["data"]["amount"].as_i64().unwrap(),
            ));
        }
        // The account's events in log order: one per deposit, same order.
        let r = send(client().get(s.at(&format!("/streams/{account}?limit=1000"))))
            .await
            .expect(200);
        let deposited: Vec<&Value> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "deposited")
            .collect();
        let parents: Vec<&str> = deposited
            .iter()
            .map(|e| e["parent"].as_str().unwrap())
            .collect();
        let ids: Vec<&str> = appended.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(parents, ids, "{account}: events out of command order");
        let mut balance = 0;
        for (event, (_, amount)) in deposited.iter().zip(&appended) {
            balance += amount;
            assert_eq!(event["data"]["balance"], balance, "{account}: {event}");
        }
        balance_is(&s, &account, balance).await;
    }
    Arc::into_inner(s)
        .expect("no client holds the server")
        .stop();
}

/// A request's `traceparent` and `tracestate` headers.
type TraceHeaders = (Option<String>, Option<String>);

/// What the test's webhook endpoint saw: requests per route.
#[derive(Clone)]
struct Endpoint {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    /// The `traceparent` and `tracestate` headers of each request, in order.
    traces: Arc<Mutex<Vec<TraceHeaders>>>,
    /// Holds `/gate` answers until set to true.
    gate: watch::Receiver<bool>,
}

async fn webhook(
    State(ep): State<Endpoint>,
    Path(route): Path<String>,
    headers: axum::http::HeaderMap,
    Json(command): Json<Value>,
) -> (StatusCode, Json<Value>) {
    *ep.calls.lock().unwrap().entry(route.clone()).or_default() += 1;
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    ep.traces
        .lock()
        .unwrap()
        .push((header("traceparent"), header("tracestate")));
    match route.as_str() {
        "ok" | "ok-too" => (
            StatusCode::OK,
            Json(
                json!({"events": [{"action": "paid", "data": {"amount": command["data"]["amount"]}}]}),
            ),
        ),
        "reject" => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"rejection": {"code": "card-declined", "message": "the card was declined", "details": {"retryable": false}}}),
            ),
        ),
        "gate" => {
            let mut gate = ep.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
            (
                StatusCode::OK,
                Json(json!({"events": [{"action": "shipped", "data": {}}]})),
            )
        }
        "hang" => std::future::pending().await,
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "down"})),
        ),
    }
}

/// Starts the webhook endpoint on 127.0.0.1:0; returns its base URL, its
/// state and the gate's sender.
async fn start_endpoint() -> (String, Endpoint, watch::Sender<bool>) {
    start_endpoint_tls(None).await
}

/// Like [`start_endpoint`], serving HTTPS with `pki`'s certificate if given.
async fn start_endpoint_tls(pki: Option<&TestPki>) -> (String, Endpoint, watch::Sender<bool>) {
    let (open, gate) = watch::channel(false);
    let ep = Endpoint {
        calls: Arc::default(),
        traces: Arc::default(),
        gate,
    };
    let app = Router::new()
        .route("/{route}", post(webhook))
        .with_state(ep.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = match pki {
        None => {
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}")
        }
        Some(pki) => {
            let config = cmdr_gateway::tls::server_config(&pki.cert, &pki.key).unwrap();
            let tls = Arc::new(cmdr_gateway::tls::ServerTls::new(config));
            let listener = cmdr_gateway::tls::TlsListener::new(listener, tls).unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("https://localhost:{}", addr.port())
        }
    };
    (base, ep, open)
}

async fn register(s: &Server, name: &str, actions: &[&str], url: &str) -> Reply {
    send(
        client()
            .put(s.at(&format!("/processors/{name}")))
            .json(&json!({"actions": actions, "url": url})),
    )
    .await
}

const FAST_RETRIES: [&str; 6] = [
    "--webhook-max-attempts",
    "3",
    "--webhook-backoff-ms",
    "10",
    "--webhook-max-backoff-ms",
    "50",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_moved_to_another_processor_is_not_sent_again_for_settled_commands() {
    let (base, ep, _gate) = start_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]).await;
    let c = client();
    register(&s, "alpha", &["pay"], &format!("{base}/ok"))
        .await
        .expect(201);
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = sync_command(&s, "pay", &format!("inv-{i}"), json!({"amount": i}))
            .await
            .expect(201);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }

    // The action moves to a new processor (a new consumer group, which
    // starts at the beginning of the commands topic).
    send(c.delete(s.at("/processors/alpha"))).await.expect(204);
    register(&s, "beta", &["pay"], &format!("{base}/ok-too"))
        .await
        .expect(201);
    let r = sync_command(&s, "pay", "inv-new", json!({"amount": 9}))
        .await
        .expect(201);
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1, "{}", r.text);

    let calls = ep.calls.lock().unwrap().clone();
    assert_eq!(calls.get("ok"), Some(&3), "{calls:?}");
    assert_eq!(
        calls.get("ok-too"),
        Some(&1),
        "beta gets only the command sent after it took over: {calls:?}"
    );
    for id in ids {
        let r = send(c.get(s.at(&format!("/commands/{id}"))))
            .await
            .expect(200);
        assert_eq!(r.body["status"], "accepted");
        assert_eq!(
            r.body["events"].as_array().unwrap().len(),
            1,
            "one outcome: {}",
            r.text
        );
    }
    s.stop();
}

/// Actions given to a processor that already runs are handled for the
/// commands sent before too: those another processor left unsettled, and
/// those sent while nobody had the action (the processor had passed over
/// both while it did not have their actions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_added_to_a_running_processor_are_handled_for_earlier_commands() {
    let (base, ep, _gate) = start_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    // Alpha's calls fail until it is deleted; it retries, so its commands
    // stay pending.
    let flags = [
        "--webhook-timeout-ms",
        "300",
        "--webhook-max-attempts",
        "100",
        "--webhook-backoff-ms",
        "200",
        "--webhook-max-backoff-ms",
        "500",
    ];
    let s = Server::start(&dir.path().join("data"), &flags).await;
    let c = client();
    register(&s, "alpha", &["pay"], &format!("{base}/down"))
        .await
        .expect(201);
    register(&s, "beta", &["ship"], &format!("{base}/ok-too"))
        .await
        .expect(201);
    let mut ids = Vec::new();
    for (action, key) in [("pay", "inv-1"), ("pay", "inv-2"), ("refund", "inv-3")] {
        let r = send(
            c.post(s.at("/commands"))
                .json(&json!({"action": action, "key": key, "data": {"amount": 1}})),
        )
        .await
        .expect(202);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    // Beta handles a later shipment: it has passed over the others.
    sync_command(&s, "ship", "parcel-1", json!({}))
        .await
        .expect(201);
    until_calls(&ep, "down", 2).await;

    send(c.delete(s.at("/processors/alpha"))).await.expect(204);
    register(
        &s,
        "beta",
        &["ship", "pay", "refund"],
        &format!("{base}/ok-too"),
    )
    .await
    .expect(200);
    for id in &ids {
        let r = poll(&s, &format!("/commands/{id}"), |r| {
            r.body["status"] == "accepted"
        })
        .await;
        assert_eq!(
            r.body["events"].as_array().unwrap().len(),
            1,
            "one outcome: {}",
            r.text
        );
    }
    // The shipment was not sent again.
    assert_eq!(ep.calls.lock().unwrap().get("ok-too"), Some(&4));
    s.stop();
}

/// An https:// processor whose CA the server was given is called; one
/// whose certificate no trusted CA signed is not (its command becomes a dead
/// letter that names the certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_processors_over_https_trust_the_given_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestPki::new(&dir.path().join("trusted"));
    let stranger = TestPki::new(&dir.path().join("stranger"));
    let (good, ep, _gate) = start_endpoint_tls(Some(&trusted)).await;
    let (bad, _, _gate2) = start_endpoint_tls(Some(&stranger)).await;
    let mut args = FAST_RETRIES.to_vec();
    args.extend(["--webhook-ca-cert", trusted.ca.to_str().unwrap()]);
    let s = Server::start(&dir.path().join("data"), &args).await;
    register(&s, "payments", &["pay"], &format!("{good}/ok"))
        .await
        .expect(201);
    register(&s, "elsewhere", &["refund"], &format!("{bad}/ok"))
        .await
        .expect(201);
    let r = sync_command(&s, "pay", "inv-1", json!({"amount": 3}))
        .await
        .expect(201);
    assert_eq!(r.body["events"][0]["action"], "paid", "{}", r.text);
    assert_eq!(ep.calls.lock().unwrap().get("ok"), Some(&1));

    sync_command(&s, "refund", "inv-1", json!({})).await;
    let r = poll(&s, "/dead-letters?processor=elsewhere", |r| {
        r.body["items"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let error = r.body["items"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{}", r.text);
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_processors_over_http() {
    let (base, ep, gate) = start_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &FAST_RETRIES).await;
    let c = client();

    // Registration: 201 new, 200 again, 422 with pointers, 415 without JSON.
    let r = register(&s, "payments", &["pay"], &format!("{base}/ok"))
        .await
        .expect(201);
    assert_eq!(r.header("location"), "/processors/payments");
    let group = cmdr_processor::webhook::runner::group_name("payments", &["pay".into()]);
    assert_eq!(
        (r.body["name"].as_str(), r.body["group"].as_str()),
        (Some("payments"), Some(group.as_str())),
        "{}",
        r.text
    );
    register(&s, "payments", &["pay"], &format!("{base}/ok"))
        .await
        .expect(200);
    let r = send(
        c.put(s.at("/processors/bad"))
            .json(&json!({"actions": ["ok", "no spaces"], "url": "ftp://x", "extra": 1})),
    )
    .await
    .expect_problem(422, "invalid-registration");
    let pointers: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/actions/1", "/url", "/extra"], "{}", r.text);
    send(c.put(s.at("/processors/bad")).body("{}"))
        .await
        .expect_problem(415, "unsupported-media-type");
    register(&s, "refunds", &["refund"], &format!("{base}/reject"))
        .await
        .expect(201);
    register(&s, "broken", &["explode"], &format!("{base}/fail"))
        .await
        .expect(201);
    register(&s, "shipping", &["ship"], &format!("{base}/gate"))
        .await
        .expect(201);
    let r = send(c.get(s.at("/processors"))).await.expect(200);
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["broken", "payments", "refunds", "shipping"],
        "{}",
        r.text
    );
    let r = send(c.get(s.at("/processors/refunds"))).await.expect(200);
    assert_eq!(r.body["actions"], json!(["refund"]), "{}", r.text);
    let r = send(c.get(s.at("/processors")).header("accept", "text/html"))
        .await
        .expect(200);
    assert!(
        r.text.contains("<html") && r.text.contains("payments"),
        "{}",
        r.text
    );
    send(c.get(s.at("/processors/nope")))
        .await
        .expect_problem(404, "not-found");

    // Success: 201 with the processor's events.
    let r = sync_command(&s, "pay", "order-1", json!({"amount": 12}))
        .await
        .expect(201);
    assert_eq!(r.body["events"][0]["action"], "paid", "{}", r.text);
    assert_eq!(r.body["events"][0]["data"]["amount"], 12, "{}", r.text);
    assert_eq!(ep.traces.lock().unwrap().pop(), Some((None, None)));

    // A client's W3C trace context goes with its command to the processor.
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = send(
        c.post(s.at("/commands?sync=true"))
            .header("traceparent", PARENT)
            .header("tracestate", "rojo=00f067aa0ba902b7")
            .header("tracestate", "congo=t61rcWkgMzE")
            .json(&json!({"action": "pay", "data": {"amount": 1}, "key": "order-9"})),
    )
    .await
    .expect(201);
    assert_eq!(r.body["meta"]["traceparent"], PARENT, "{}", r.text);
    assert_eq!(
        ep.traces.lock().unwrap().pop(),
        Some((
            Some(PARENT.to_string()),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_string())
        ))
    );
    // A malformed one is ignored, never refused.
    let r = send(
        c.post(s.at("/commands"))
            .header("traceparent", "00-nope")
            .json(&json!({"action": "audit", "data": {}})),
    )
    .await
    .expect(202);
    assert!(r.body["meta"].get("traceparent").is_none(), "{}", r.text);

    // Rejection (422 from the processor): 409 with its reason.
    let r = sync_command(&s, "refund", "order-1", json!({}))
        .await
        .expect_problem(409, "command-rejected");
    assert_eq!(r.body["rejection"]["code"], "card-declined", "{}", r.text);

    // Failure: every attempt, then processing-failed and a dead letter.
    let r = sync_command(&s, "explode", "order-2", json!({}))
        .await
        .expect_problem(409, "command-rejected");
    assert_eq!(
        r.body["rejection"]["code"], "processing-failed",
        "{}",
        r.text
    );
    let failed = r.body["command"]["id"].as_str().unwrap().to_string();
    assert_eq!(ep.calls.lock().unwrap().get("fail"), Some(&3));
    let r = send(c.get(s.at("/dead-letters?processor=broken")))
        .await
        .expect(200);
    let letters = r.body["items"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{}", r.text);
    assert_eq!(letters[0]["input"]["id"], failed.as_str(), "{}", r.text);
    assert_eq!(letters[0]["attempts"], 3, "{}", r.text);
    assert_eq!(
        letters[0]["links"]["input"],
        format!("/commands/{failed}"),
        "{}",
        r.text
    );
    let r = send(c.get(s.at("/dead-letters?processor=payments")))
        .await
        .expect(200);
    assert_eq!(r.body, json!({"items": [], "next": null}));
    // Cursor pagination: a full page links to the next one, which is empty here.
    let r = send(c.get(s.at("/dead-letters?limit=1"))).await.expect(200);
    let next = r.body["next"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", r.text));
    let r = send(c.get(s.at(next))).await.expect(200);
    assert_eq!(r.body, json!({"items": [], "next": null}), "GET {next}");
    send(c.get(s.at("/dead-letters?limit=0")))
        .await
        .expect_problem(400, "bad-request");

    // An answer after the wait: 202 pending, then accepted later.
    let r = send(
        c.post(s.at("/commands"))
            .header("prefer", "wait=1")
            .json(&json!({"action": "ship", "data": {}, "key": "order-3"})),
    )
    .await
    .expect(202);
    assert_eq!(r.body["status"], "pending", "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    gate.send(true).unwrap();
    let r = poll(&s, &format!("/commands/{id}"), |r| {
        r.body["status"] == "accepted"
    })
    .await;
    assert_eq!(r.body["events"][0]["action"], "shipped", "{}", r.text);

    // Registrations survive a restart, and their processors run again.
    s.stop();
    let s = Server::start(&data, &FAST_RETRIES).await;
    send(c.get(s.at("/processors/payments"))).await.expect(200);
    let r = sync_command(&s, "pay", "order-4", json!({"amount": 7}))
        .await
        .expect(201);
    assert_eq!(r.body["events"][0]["data"]["amount"], 7, "{}", r.text);
    let r = send(c.get(s.at("/dead-letters"))).await.expect(200);
    assert_eq!(
        r.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );

    // Deletion: 204, then 404.
    let r = send(c.delete(s.at("/processors/refunds")))
        .await
        .expect(204);
    assert!(r.text.is_empty(), "{}", r.text);
    send(c.delete(s.at("/processors/refunds")))
        .await
        .expect_problem(404, "not-found");
    send(c.get(s.at("/processors/refunds")))
        .await
        .expect_problem(404, "not-found");
    s.stop();
}

#[tokio::test]
async fn a_webhook_that_never_answers_times_out_into_a_dead_letter() {
    let (base, _ep, _gate) = start_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[
            "--webhook-timeout-ms",
            "100",
            "--webhook-max-attempts",
            "2",
            "--webhook-backoff-ms",
            "10",
        ],
    )
    .await;
    register(&s, "silent", &["wait-forever"], &format!("{base}/hang"))
        .await
        .expect(201);
    let r = sync_command(&s, "wait-forever", "k", json!({}))
        .await
        .expect_problem(409, "command-rejected");
    assert_eq!(
        r.body["rejection"]["code"], "processing-failed",
        "{}",
        r.text
    );
    let r = send(client().get(s.at("/dead-letters?processor=silent")))
        .await
        .expect(200);
    assert_eq!(r.body["items"][0]["attempts"], 2, "{}", r.text);
    let last_error = r.body["items"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(last_error.contains("timeout"), "{}", r.text);
    s.stop();
}

/// Calls of `route` the endpoint has received.
fn calls(ep: &Endpoint, route: &str) -> usize {
    ep.calls.lock().unwrap().get(route).copied().unwrap_or(0)
}

/// Waits (10 s at most) until the endpoint has received `n` calls of `route`.
async fn until_calls(ep: &Endpoint, route: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while calls(ep, route) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{route} called {} times, not {n}",
            calls(ep, route)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_call_does_not_hold_up_shutdown() {
    let (base, ep, _gate) = start_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Calls may take ten minutes, and this one never ends.
    let flags = ["--webhook-timeout-ms", "600000"];
    let s = Server::start(&data, &flags).await;
    register(&s, "silent", &["wait-forever"], &format!("{base}/hang"))
        .await
        .expect(201);
    send(
        client()
            .post(s.at("/commands"))
            .json(&json!({"action": "wait-forever", "data": {}, "key": "k"})),
    )
    .await
    .expect(202);
    until_calls(&ep, "hang", 1).await;
    let started = std::time::Instant::now();
    // A clean exit (checked by `stop`) once the processors' grace is over.
    s.stop();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    // The abandoned call is made again at the next start.
    let s = Server::start(&data, &flags).await;
    until_calls(&ep, "hang", 2).await;
    // A second signal during shutdown exits at once, with an error.
    s.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.signal(libc::SIGINT);
    let status = s.wait_exit(Duration::from_secs(3));
    assert!(!status.success(), "{status}");
}

/// `--no-webhooks` (a restored copy of a server) calls no endpoint: the
/// registrations are there, the commands wait; served again without it,
/// they are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_webhooks_starts_no_processor_until_served_without_it() {
    let (base, ep, _gate) = start_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &[]).await;
    register(&s, "payments", &["pay"], &format!("{base}/ok"))
        .await
        .expect(201);
    s.stop();

    let s = Server::start(&data, &["--no-webhooks"]).await;
    let sent = send(
        client()
            .post(s.at("/commands"))
            .json(&json!({"action": "pay", "data": {"amount": 3}, "key": "k"})),
    )
    .await
    .expect(202);
    let id = sent.body["id"].as_str().unwrap().to_string();
    send(client().get(s.at("/processors/payments")))
        .await
        .expect(200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(calls(&ep, "ok"), 0, "an endpoint was called");
    let r = send(client().get(s.at(&format!("/commands/{id}"))))
        .await
        .expect(200);
    assert_eq!(r.body["status"], "pending");
    assert!(
        s.output().contains("webhook processors not started"),
        "{}",
        s.output()
    );
    s.stop();

    let s = Server::start(&data, &[]).await;
    until_calls(&ep, "ok", 1).await;
    poll(&s, &format!("/commands/{id}"), |r| {
        r.body["status"] == "accepted"
    })
    .await;
    s.stop();
}

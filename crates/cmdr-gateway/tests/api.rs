//! The router against an in-memory log, without a socket: intake, errors,
//! schemas, idempotency, sync outcomes (a test processor appends them),
//! listings and streams.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cmdr_contract::{Command, EventDraft, Outcome, Rejection};
use cmdr_gateway::{app, AppState, GatewayConfig};
use cmdr_index::Index;
use cmdr_log::memory::MemoryLog as MemLog;
use cmdr_log::{Log, Record};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Harness {
    log: Arc<MemLog>,
    state: AppState,
    _dir: tempfile::TempDir,
}

async fn harness(config: GatewayConfig) -> Harness {
    harness_with_partitions(config, 1).await
}

async fn harness_with_partitions(config: GatewayConfig, partitions: u32) -> Harness {
    harness_of(config, partitions, true).await
}

/// A harness whose index never moves: no indexer runs.
async fn harness_without_indexer(config: GatewayConfig) -> Harness {
    harness_of(config, 1, false).await
}

async fn harness_of(config: GatewayConfig, partitions: u32, indexer: bool) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(MemLog::new());
    log.create_topic("commands", partitions).await.unwrap();
    log.create_topic("events", partitions).await.unwrap();
    let index = Index::open(dir.path().join("index.redb")).unwrap();
    let dyn_log: Arc<dyn Log> = log.clone();
    if indexer {
        index.spawn_indexer(dyn_log.clone()).await.unwrap();
    }
    let state = AppState::new(dyn_log, index, config).await.unwrap();
    Harness {
        log,
        state,
        _dir: dir,
    }
}

/// `cmdr_gateway::serve` of a harness on a loopback port.
struct Served {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), cmdr_gateway::ServeError>>,
}

impl Served {
    async fn start(h: &Harness) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(cmdr_gateway::serve(listener, h.state.clone(), async {
            let _ = stopped.await;
        }));
        Served { addr, stop, task }
    }

    /// Shuts the server down and waits (10 s at most) for it to drain.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

/// A stand-in command processor: accepts `approve`, rejects `deny`, ignores the rest.
fn spawn_processor(log: Arc<MemLog>) {
    tokio::spawn(async move {
        let mut next = 0;
        loop {
            if log.wait_for("commands", 0, next).await.is_err() {
                return;
            }
            for r in log.read("commands", 0, next, 100).await.unwrap() {
                next = r.offset + 1;
                let c = Command::from_json(&r.value).unwrap();
                let ev = match c.action.as_str() {
                    "approve" => {
                        let mut e = EventDraft::new("approved", json!({"ok": true}))
                            .into_event(c.id, c.id, &c.key, 1);
                        e.outcome = Some(Outcome::Accepted);
                        e
                    }
                    "deny" => Rejection::new("denied", "not today").into_event(c.id, &c.key, 1),
                    _ => continue,
                };
                log.append("events", vec![Record::new(ev.key.clone(), ev.to_json())])
                    .await
                    .unwrap();
            }
        }
    });
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

async fn call(h: &Harness, req: Request<Body>) -> Reply {
    let what = format!("{} {}", req.method(), req.uri());
    let res = app(h.state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    eprintln!("{what} -> {status} {text}");
    Reply {
        status,
        headers,
        body,
        text,
    }
}

fn post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn commands_in_log(h: &Harness) -> u64 {
    h.log.topic("commands").await.unwrap().partitions[0].end_offset
}

#[tokio::test]
async fn post_then_read_a_command_and_its_outcome() {
    let h = harness(GatewayConfig::default()).await;
    let r = call(
        &h,
        post(
            "/commands",
            json!({"action": "open", "data": {"owner": "ada"}, "key": "acc-1"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.headers["location"], format!("/commands/{id}").as_str());
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["links"]["self"], format!("/commands/{id}"));

    let r = call(&h, get(&format!("/commands/{id}"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["data"]["owner"], "ada");

    let cid = uuid::Uuid::parse_str(&id).unwrap();
    let mut ev = EventDraft::new("opened", json!({})).into_event(cid, cid, "acc-1", 2);
    ev.outcome = Some(Outcome::Accepted);
    h.log
        .append("events", vec![Record::new("acc-1", ev.to_json())])
        .await
        .unwrap();
    let r = call(&h, get(&format!("/events/{}", ev.id))).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&h, get(&format!("/commands/{id}"))).await;
    assert_eq!(r.body["status"], "accepted");
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["outcome"]["event"], ev.id.to_string());

    let r = call(&h, get("/streams/acc-1")).await;
    assert_eq!(r.body["items"][0]["id"], ev.id.to_string());
    let r = call(&h, get("/commands?status=accepted")).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // A listing's item says which event settled it (no events are loaded).
    assert_eq!(
        r.body["items"][0]["outcome"],
        json!({"event": ev.id.to_string(), "status": "accepted"})
    );
    assert!(r.body["items"][0].get("events").is_none());
    let r = call(&h, get(&format!("/events?root={id}"))).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // In log order from a position, with the same items.
    let r = call(&h, get(&format!("/events?from=start&root={id}"))).await;
    assert_eq!(r.body["items"][0]["id"], ev.id.to_string());
    assert_eq!(r.body["position"], "1");
    let r = call(
        &h,
        get(&format!("/events?from=0&parent={}", uuid::Uuid::nil())),
    )
    .await;
    assert_eq!(
        (r.body["items"].clone(), r.body["position"].clone()),
        (json!([]), json!("1"))
    );
    let r = call(&h, get("/commands?from=0")).await;
    assert_eq!(r.body["items"][0]["outcome"]["status"], "accepted");
    // An event logged without a root: both listings use the root the index
    // worked out from its parent.
    let mut child = EventDraft::new("noted", json!({})).into_event(ev.id, cid, "acc-1", 3);
    child.root = None;
    h.log
        .append("events", vec![Record::new("acc-1", child.to_json())])
        .await
        .unwrap();
    indexed_all(&h, "events").await;
    let by_id = call(&h, get(&format!("/events?root={id}&order=asc"))).await;
    let by_position = call(&h, get(&format!("/events?from=start&root={id}"))).await;
    assert_eq!(
        by_id.body["items"].as_array().unwrap().len(),
        2,
        "{}",
        by_id.text
    );
    assert_eq!(by_position.body["items"], by_id.body["items"]);
}

#[tokio::test]
async fn keys_no_path_can_carry_are_read_by_query() {
    let h = harness(GatewayConfig::default()).await;
    let r = call(
        &h,
        post(
            "/commands",
            json!({"action": "open", "data": {}, "key": ".."}),
        ),
    )
    .await;
    let cid = uuid::Uuid::parse_str(r.body["id"].as_str().unwrap()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let ev = EventDraft::new("opened", json!({})).into_event(cid, cid, "..", 2);
        ids.push(ev.id.to_string());
        h.log
            .append("events", vec![Record::new("..", ev.to_json())])
            .await
            .unwrap();
    }
    indexed_all(&h, "events").await;
    let r = call(&h, get("/streams?key=..&limit=2")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["key"], "..");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let next = r.body["next"].as_str().unwrap().to_string();
    assert!(next.starts_with("/streams?key=..&after="), "{next}");
    let r = call(&h, get(&next)).await;
    assert_eq!(r.body["items"][0]["id"], ids[2].as_str());
    let r = call(&h, get("/streams")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["errors"][0]["parameter"], "key");
    let r = call(&h, get("/streams/a?key=b")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["errors"][0]["parameter"], "key");
}

/// A miss while the index is behind the log is no proof that the id does
/// not exist: 503 with `Retry-After`, not 404.
#[tokio::test]
async fn a_miss_while_the_index_lags_is_a_503_not_a_404() {
    let h = harness_without_indexer(GatewayConfig {
        index_wait: Duration::from_millis(50),
        ..GatewayConfig::default()
    })
    .await;
    let unknown = "/commands/01900000-0000-7000-8000-000000000000";
    // Nothing logged: the index has all of it, so a miss is a 404.
    assert_eq!(call(&h, get(unknown)).await.status, StatusCode::NOT_FOUND);
    let r = call(&h, post("/commands", json!({"action": "a", "data": {}}))).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    for uri in [format!("/commands/{id}"), unknown.to_string()] {
        let r = call(&h, get(&uri)).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{uri}: {}",
            r.text
        );
        assert_eq!(r.body["code"], "unavailable");
        assert_eq!(r.headers["retry-after"], "1");
    }
}

/// Backpressure: past `max_index_lag` commands behind, answers wait for
/// the index (here it never comes: each waits `index_wait`, then answers).
#[tokio::test]
async fn answers_wait_while_the_index_is_too_far_behind() {
    let h = harness_without_indexer(GatewayConfig {
        index_wait: Duration::from_millis(20),
        max_index_lag: 2,
        ..GatewayConfig::default()
    })
    .await;
    let held = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("cmdr_commands_held_for_index_total "))
            .map(|n| n.to_string())
    };
    for _ in 0..5 {
        let r = call(&h, post("/commands", json!({"action": "a", "data": {}}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    // Offsets 0, 1 and 2 are within reach of an index at 0; 3 and 4 are not.
    let r = call(&h, get("/metrics")).await;
    assert_eq!(held(&r.text).as_deref(), Some("2"), "{}", r.text);
    assert_eq!(commands_in_log(&h).await, 5);
}

#[tokio::test]
async fn a_sync_wait_under_way_at_shutdown_still_gets_an_outcome_that_comes_soon() {
    let h = harness(GatewayConfig::default()).await;
    let state = h.state.clone();
    let waiting = tokio::spawn(async move {
        let req = post(
            "/commands?sync=true",
            json!({"action": "later", "data": {}}),
        );
        let res = app(state).oneshot(req).await.unwrap();
        res.status()
    });
    // The command is in the log and its client waits: the shutdown begins.
    let record = loop {
        let records = h.log.read("commands", 0, 0, 1).await.unwrap();
        if let Some(r) = records.into_iter().next() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let c = Command::from_json(&record.value).unwrap();
    h.state.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "answered before its outcome came");
    // The processor, still running during the drain, settles it.
    let mut e = EventDraft::new("done", json!({})).into_event(c.id, c.id, &c.key, 1);
    e.outcome = Some(Outcome::Accepted);
    h.log
        .append("events", vec![Record::new(e.key.clone(), e.to_json())])
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered within the grace")
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn browsers_get_errors_as_pages_and_api_clients_as_problems() {
    let h = harness(GatewayConfig::default()).await;
    let browser = "text/html,application/xhtml+xml,*/*;q=0.8";
    let unknown = "/commands/0190a0a0-0000-7000-8000-000000000000";
    let form = |accept: &str| {
        Request::post("/commands")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", accept)
            .body(Body::from("action=a&data=%7Bbad"))
            .unwrap()
    };
    let read = |path: &str, accept: &str| {
        Request::get(path)
            .header("accept", accept)
            .body(Body::empty())
            .unwrap()
    };
    for (req, status, code) in [
        (read(unknown, browser), StatusCode::NOT_FOUND, "not-found"),
        (
            read("/nowhere", browser),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            read("/commands?limit=0", browser),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (form(browser), StatusCode::BAD_REQUEST, "malformed-body"),
    ] {
        let what = format!("{} {}", req.method(), req.uri());
        let r = call(&h, req).await;
        assert_eq!(r.status, status, "{what}: {}", r.text);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{what}: {:?}",
            r.headers
        );
        assert!(
            r.text.contains("<html") && r.text.contains(code),
            "{what}: {}",
            r.text
        );
        assert_eq!(r.headers["vary"], "accept", "{what}");
    }
    for req in [read(unknown, "application/json"), form("*/*")] {
        let r = call(&h, req).await;
        assert_eq!(r.headers["vary"], "accept", "{}", r.text);
        assert_eq!(
            r.headers["content-type"], "application/problem+json",
            "{}",
            r.text
        );
    }
    assert_eq!(
        h.log.topic("commands").await.unwrap().partitions[0].end_offset,
        0
    );
}

#[tokio::test]
async fn sync_waits_for_accepted_rejected_or_times_out() {
    let h = harness(GatewayConfig::default()).await;
    spawn_processor(h.log.clone());
    let r = call(
        &h,
        post(
            "/commands?sync=true",
            json!({"action": "approve", "data": {}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["status"], "accepted");
    assert_eq!(r.body["events"][0]["action"], "approved");

    let r = call(
        &h,
        post("/commands?sync=true", json!({"action": "deny", "data": {}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.body["code"], "command-rejected");
    assert_eq!(r.body["rejection"]["code"], "denied");
    assert_eq!(r.body["command"]["status"], "rejected");
    assert!(
        !r.headers.contains_key("preference-applied"),
        "?sync=true is not a Prefer header"
    );

    let req = Request::post("/commands")
        .header("content-type", "application/json")
        .header("prefer", "wait=0")
        .body(Body::from(
            json!({"action": "ignored", "data": {}}).to_string(),
        ))
        .unwrap();
    let r = call(&h, req).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.headers["preference-applied"], "wait=0");
    assert_eq!(
        h.state.index().waiters().len(),
        0,
        "timed-out waiters are unregistered"
    );
}

#[tokio::test]
async fn bad_input_gets_problem_details_and_appends_nothing() {
    let config = GatewayConfig {
        body_limit: 1024,
        ..GatewayConfig::default()
    };
    let h = harness(config).await;
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            Request::post("/commands")
                .header("content-type", "application/json")
                .body(Body::from("{nope"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "malformed-body",
        ),
        (
            post("/commands", json!({"data": []})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        ),
        (
            post("/commands", json!({"action": "a b", "data": {}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        ),
        (
            post(
                "/commands",
                json!({"action": "a", "data": {"x": "y".repeat(2000)}}),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
        ),
        (
            Request::post("/commands")
                .header("content-type", "text/plain")
                .body(Body::from("hi"))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        (
            Request::post("/commands").body(Body::from("{}")).unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        (
            Request::post("/commands")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("action=a&data=%7B%7D&data.x=1"))
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        ),
        (
            post("/commands?sync=maybe", json!({"action": "a", "data": {}})),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        // A coded body would be read as if it were plain.
        (
            Request::post("/commands")
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(Body::from(r#"{"action": "a", "data": {}}"#))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        // Which key counts would depend on who reads the request.
        (
            Request::post("/commands")
                .header("content-type", "application/json")
                .header("idempotency-key", "k-a")
                .header("idempotency-key", "k-b")
                .body(Body::from(r#"{"action": "a", "data": {}}"#))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        // Forms: invalid UTF-8 is refused, not replaced; a field given twice too.
        (
            Request::post("/commands")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("action=a&data.x=%FF%FE"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "malformed-body",
        ),
        (
            Request::post("/commands")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("action=a&data.x=1&data.x=2"))
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        ),
        // JSON labelled as a form (curl -d's default): told to say JSON.
        (
            Request::post("/commands")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(r#" {"action": "a", "data": {}}"#))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        // A form's JSON `data` is held to what a JSON body is, numbers
        // past a double included.
        (
            Request::post("/commands")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("action=a&data=%7B%22n%22%3A1e400%7D"))
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        ),
        (
            Request::post("/commands")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("action=a&data=%7B%22x%22%3A1%2C%22x%22%3A2%7D"))
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        ),
        (
            get("/commands/0190a0a0-0000-7000-8000-000000000000"),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            get("/commands/not-a-uuid"),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            get("/events/0190a0a0-0000-7000-8000-000000000000"),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            get("/commands?limit=0"),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            get("/commands?limit=1001"),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            get("/commands?status=done"),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            get("/commands?bogus=1"),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            get("/events?after=x"),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            get("/streams/k?after=-1"),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            get("/commands/updates?from=x.y"),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        // A position past the end of the log (never given by this server).
        (
            get("/commands/updates?from=1000000"),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (
            Request::get("/events/updates")
                .header("last-event-id", "18446744073709551615")
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "bad-request",
        ),
        (get("/nowhere"), StatusCode::NOT_FOUND, "not-found"),
        (
            Request::delete("/commands").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let r = call(&h, req).await;
        assert_eq!(r.status, status, "{what}: {}", r.text);
        assert_eq!(
            r.headers["content-type"], "application/problem+json",
            "{what}"
        );
        assert_eq!(r.body["code"], code, "{what}: {}", r.text);
        assert_eq!(r.body["type"], format!("/problems/{code}"), "{what}");
        assert_eq!(r.body["status"], status.as_u16(), "{what}");
    }
    // A bad query parameter is named in `errors`.
    for (uri, parameter) in [
        ("/commands?limit=0", "limit"),
        ("/commands?status=done", "status"),
        ("/commands?order=ASC", "order"),
        ("/commands?bogus=1", "bogus"),
        ("/commands?action=a&action=b", "action"),
        ("/events?after=x", "after"),
        ("/events?since=-5", "since"),
        ("/streams/k?after=-1", "after"),
        ("/dead-letters?limit=0", "limit"),
        ("/commands/updates?key=a&key=b", "key"),
        ("/events/updates?root=x", "root"),
        ("/commands/updates?from=abc", "from"),
        ("/commands?from=abc", "from"),
        // Keys are 1 to 1024 bytes of UTF-8: no filter matches otherwise.
        ("/commands?key=", "key"),
        ("/commands?key=%FF", "key"),
        ("/events/updates?key=", "key"),
        ("/streams?key=", "key"),
        ("/events?action=%C3%28", "action"),
        // Nor an empty or impossible action, or an empty processor name.
        ("/commands?action=", "action"),
        ("/events?action=a%20b", "action"),
        ("/events/updates?action=", "action"),
        ("/commands?from=start&action=", "action"),
        ("/dead-letters?processor=", "processor"),
    ] {
        let r = call(&h, get(uri)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.text);
        assert_eq!(r.body["code"], "bad-request", "{uri}");
        assert_eq!(
            r.body["errors"][0]["parameter"], parameter,
            "{uri}: {}",
            r.text
        );
        assert!(r.body["errors"][0]["message"].is_string(), "{uri}");
    }
    let r = call(
        &h,
        post("/commands?sync=maybe", json!({"action": "a", "data": {}})),
    )
    .await;
    assert_eq!(r.body["errors"][0]["parameter"], "sync", "{}", r.text);
    // A key in the path is held to what keys are, as one in the query.
    let long = format!("/streams/{}", "k".repeat(1025));
    let r = call(&h, get(&long)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["errors"][0]["parameter"], "key", "{}", r.text);
    // Headers that must come once: which one a proxy read is a guess.
    let twice = Request::post("/commands")
        .header("content-type", "application/json")
        .header("content-type", "text/plain")
        .body(Body::from(json!({"action": "a", "data": {}}).to_string()))
        .unwrap();
    let r = call(&h, twice).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let twice = Request::get("/commands/updates")
        .header("last-event-id", "0")
        .header("last-event-id", "1")
        .body(Body::empty())
        .unwrap();
    let r = call(&h, twice).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = call(
        &h,
        post("/commands", json!({"action": "", "data": 3, "extra": 1})),
    )
    .await;
    let pointers: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/action", "/data", "/extra"]);
    assert_eq!(commands_in_log(&h).await, 0, "nothing appended on errors");
}

#[tokio::test]
async fn schemas_validate_data_and_keep_versions() {
    let h = harness(GatewayConfig::default()).await;
    let schema = json!({"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer", "minimum": 1}}});
    let put = |s: Value| {
        Request::put("/schemas/deposit")
            .header("content-type", "application/json")
            .body(Body::from(s.to_string()))
            .unwrap()
    };
    let r = call(&h, put(schema.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["version"], 1);
    let r = call(&h, put(schema.clone())).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "identical schema is not a new version"
    );
    let r = call(&h, put(json!({"type": "not-a-type"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["code"], "invalid-schema");
    // A member given twice is a mistake a parser would hide by keeping one.
    let twice = Request::put("/schemas/deposit")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"type": "object", "properties": {"n": {"type": "integer", "type": "string"}}}"#,
        ))
        .unwrap();
    let r = call(&h, twice).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["code"], "invalid-schema");
    assert_eq!(
        r.body["errors"][0]["pointer"], "/properties/n/type",
        "{}",
        r.text
    );

    let r = call(
        &h,
        post(
            "/commands",
            json!({"action": "deposit", "data": {"amount": 0, "x": 1}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["code"], "schema-violation");
    assert_eq!(r.body["errors"][0]["pointer"], "/data/amount");
    assert_eq!(commands_in_log(&h).await, 0);
    let r = call(
        &h,
        post(
            "/commands",
            json!({"action": "deposit", "data": {"amount": 5}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let mut v2 = schema.clone();
    v2["properties"]["amount"]["minimum"] = json!(0);
    assert_eq!(call(&h, put(v2)).await.body["version"], 2);
    let r = call(&h, get("/schemas/deposit")).await;
    assert_eq!(
        (r.body["version"].clone(), r.body["versions"].clone()),
        (json!(2), json!([1, 2]))
    );
    let r = call(&h, get("/schemas/deposit?version=1")).await;
    assert_eq!(r.body["schema"], schema);
    assert_eq!(
        call(&h, get("/schemas/deposit?version=9")).await.status,
        StatusCode::NOT_FOUND
    );
    // A misspelt parameter is refused, not ignored (the latest would be shown).
    let r = call(&h, get("/schemas/deposit?versoin=1")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["code"], "bad-request");
    assert_eq!(
        call(&h, get("/schemas/nothing")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = call(&h, get("/schemas")).await;
    assert_eq!(r.body["items"][0]["action"], "deposit");

    // An action with `/` and dot segments: its links encode the slashes
    // (else clients would resolve `a/../b` to `b`) and lead back to it.
    let r = call(
        &h,
        Request::put("/schemas/billing/../pay")
            .header("content-type", "application/json")
            .body(Body::from(json!({"type": "object"}).to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.headers["location"],
        "/schemas/billing%2F..%2Fpay?version=1"
    );
    let r = call(&h, get("/schemas")).await;
    let link = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["action"] == "billing/../pay")
        .map(|i| i["links"]["self"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(link, "/schemas/billing%2F..%2Fpay");
    let r = call(&h, get(&link)).await;
    assert_eq!(r.body["action"], "billing/../pay", "{}", r.text);

    // Schemas are replayed from the log by a new gateway.
    let dyn_log: Arc<dyn Log> = h.log.clone();
    let again = AppState::new(dyn_log, h.state.index().clone(), GatewayConfig::default())
        .await
        .unwrap();
    let h2 = Harness {
        log: h.log.clone(),
        state: again,
        _dir: tempfile::tempdir().unwrap(),
    };
    let r = call(
        &h2,
        post(
            "/commands",
            json!({"action": "deposit", "data": {"amount": "x"}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn idempotent_retries_return_the_first_answer() {
    let h = harness(GatewayConfig::default()).await;
    let req = |body: Value| {
        Request::post("/commands")
            .header("content-type", "application/json")
            .header("idempotency-key", "abc-1")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let first = call(&h, req(json!({"action": "pay", "data": {"n": 1}}))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    // Concurrent retries: all get the first command.
    let retries = futures::future::join_all(
        (0..8).map(|_| call(&h, req(json!({"data": {"n": 1}, "action": "pay"})))),
    )
    .await;
    assert!(first.headers.get("idempotent-replayed").is_none());
    for r in retries {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(r.body["id"], first.body["id"]);
        assert_eq!(r.headers["idempotent-replayed"], "true");
    }
    assert_eq!(commands_in_log(&h).await, 1);
    let other = call(&h, req(json!({"action": "pay", "data": {"n": 2}}))).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.body["code"], "idempotency-key-reused");
    assert!(
        other.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("with a different request")),
        "{}",
        other.text
    );
    assert_eq!(commands_in_log(&h).await, 1);
}

#[tokio::test]
async fn an_idempotent_retry_never_appends_again_while_the_index_lags() {
    let h = harness(GatewayConfig::default()).await;
    let req = || {
        Request::post("/commands")
            .header("content-type", "application/json")
            .header("idempotency-key", "after-restart")
            .body(Body::from(
                json!({"action": "pay", "data": {"n": 1}}).to_string(),
            ))
            .unwrap()
    };
    let first = call(&h, req()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);

    // A restart with an index that has not caught up with the log yet (its
    // last commits were lost, or it is being rebuilt): a fresh index file
    // over the same log, its indexer not started.
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path().join("index.redb")).unwrap();
    let dyn_log: Arc<dyn Log> = h.log.clone();
    let config = GatewayConfig {
        index_wait: Duration::from_millis(200),
        ..GatewayConfig::default()
    };
    let state = AppState::new(dyn_log.clone(), index.clone(), config)
        .await
        .unwrap();
    let restarted = Harness {
        log: h.log.clone(),
        state,
        _dir: dir,
    };
    let lagging = call(&restarted, req()).await;
    assert_eq!(
        lagging.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        lagging.text
    );
    assert_eq!(lagging.body["code"], "unavailable");
    assert_eq!(
        commands_in_log(&h).await,
        1,
        "nothing appended while unsure"
    );

    index.spawn_indexer(dyn_log).await.unwrap();
    let retry = call(&restarted, req()).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.text);
    assert_eq!(retry.body["id"], first.body["id"]);
    assert_eq!(commands_in_log(&h).await, 1);
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_endpoint_is_a_problem() {
    let h = harness(GatewayConfig::default()).await;
    let r = call(&h, get("/ws")).await;
    assert_eq!(r.status, StatusCode::UPGRADE_REQUIRED, "{}", r.text);
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    assert_eq!(r.headers.get("upgrade").unwrap(), "websocket");
    assert_eq!(r.headers.get("sec-websocket-version").unwrap(), "13");
    assert_eq!(r.body["code"], "upgrade-required");
}

#[tokio::test]
async fn server_sent_event_streams_count_towards_the_live_stream_limit() {
    let h = harness(GatewayConfig::default()).await;
    let mut open = Vec::new();
    for _ in 0..cmdr_gateway::MAX_LIVE_STREAMS {
        let res = app(h.state.clone())
            .oneshot(get("/events/updates"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        open.push(res);
    }
    let over = call(&h, get("/commands/updates")).await;
    assert_eq!(
        over.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        over.text
    );
    assert_eq!(over.body["code"], "unavailable");
    // A client that goes away frees its place.
    drop(open.pop());
    let mut freed = false;
    for _ in 0..100 {
        let res = app(h.state.clone())
            .oneshot(get("/commands/updates"))
            .await
            .unwrap();
        if res.status() == StatusCode::OK {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "a closed stream's place was not freed");
}

#[tokio::test]
async fn form_posts_html_pages_and_self_description() {
    let h = harness(GatewayConfig::default()).await;
    let req = Request::post("/commands")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("action=greet&key=&data.name=ada"))
        .unwrap();
    let r = call(&h, req).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["data"]["name"], "ada");
    let id = r.body["id"].as_str().unwrap().to_string();
    let req = Request::get(format!("/commands/{id}"))
        .header("accept", "text/html,application/xhtml+xml")
        .body(Body::empty())
        .unwrap();
    let r = call(&h, req).await;
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text.contains(&format!("<a href=\"/commands/{id}\">")));
    let r = call(&h, get("/openapi.json")).await;
    assert_eq!(r.body["openapi"], "3.1.0");
    assert!(r.body["paths"]["/commands"]["post"]["responses"]["413"].is_object());
    assert!(call(&h, get("/docs"))
        .await
        .text
        .contains("/schemas/{action}"));
    assert_eq!(call(&h, get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(call(&h, get("/readyz")).await.status, StatusCode::OK);
}

/// An application's own readiness check holds `/readyz` until it passes.
#[tokio::test]
async fn readiness_waits_for_the_applications_checks() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let h = harness(GatewayConfig::default()).await;
    indexed_all(&h, "commands").await;
    let model = Arc::new(AtomicBool::new(false));
    let seen = model.clone();
    h.state
        .add_readiness_check("read_model", Arc::new(move || seen.load(Ordering::Acquire)));
    let r = call(&h, get("/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["checks"]["read_model"], false);
    model.store(true, Ordering::Release);
    // Ready once the index also says it has caught up (it soon does).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = call(&h, get("/readyz")).await;
        if r.status == StatusCode::OK || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["checks"]["read_model"], true);
}

#[tokio::test]
async fn schemas_that_would_make_validation_too_costly_are_refused() {
    let h = harness(GatewayConfig::default()).await;
    let put = |action: &str, s: Value| {
        Request::put(format!("/schemas/{action}"))
            .header("content-type", "application/json")
            .body(Body::from(s.to_string()))
            .unwrap()
    };
    // 2.5 KB whose validation work doubles at each of 40 levels.
    let mut defs = serde_json::Map::new();
    defs.insert("a0".into(), json!({"type": "object"}));
    for n in 1..=40 {
        let prev = format!("#/$defs/a{}", n - 1);
        defs.insert(
            format!("a{n}"),
            json!({"allOf": [{"$ref": prev}, {"$ref": prev}]}),
        );
    }
    let r = call(
        &h,
        put("boom", json!({"$defs": defs, "$ref": "#/$defs/a40"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["code"], "invalid-schema");
    assert!(r.text.contains("would take too long"), "{}", r.text);

    // Violations are bounded in number and length.
    let r = call(
        &h,
        put(
            "many",
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let data: serde_json::Map<String, Value> =
        (0..500).map(|i| (format!("p{i}"), json!(i))).collect();
    let r = call(
        &h,
        post("/commands", json!({"action": "many", "data": data})),
    )
    .await;
    assert_eq!(r.body["code"], "schema-violation");
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 100);
    let long = json!({"type": "object", "properties": {"s": {"const": "x".repeat(5000)}}});
    assert_eq!(
        call(&h, put("long", long)).await.status,
        StatusCode::CREATED
    );
    let r = call(
        &h,
        post(
            "/commands",
            json!({"action": "long", "data": {"s": "y".repeat(5000)}}),
        ),
    )
    .await;
    let message = r.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.len() <= 512 + '…'.len_utf8() && message.ends_with('…'),
        "{message}"
    );
}

#[tokio::test]
async fn a_log_that_cannot_take_appends_fails_both_probes() {
    let h = harness(GatewayConfig::default()).await;
    h.log.fail("could not undo a failed write");
    let r = call(&h, post("/commands", json!({"action": "a", "data": {}}))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "1");
    // The cause is the operator's (it names files), not the client's.
    assert!(!r.text.contains("undo"), "{}", r.text);
    let health = call(&h, get("/healthz")).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.body["checks"]["log"], false);
    let ready = call(&h, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["checks"]["log"], false);
}

#[tokio::test]
async fn listings_paginate_with_next_links() {
    let h = harness(GatewayConfig::default()).await;
    for i in 0..7 {
        call(
            &h,
            post("/commands", json!({"action": "tick", "data": {"i": i}})),
        )
        .await;
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        h.state
            .index()
            .wait_indexed("commands", 0, 7, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let mut next = Some("/commands?limit=3&order=asc&action=tick".to_string());
    let mut seen = Vec::new();
    while let Some(uri) = next {
        let r = call(&h, get(&uri)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        seen.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["data"]["i"].as_i64().unwrap()),
        );
        next = r.body["next"].as_str().map(str::to_string);
    }
    assert_eq!(seen, (0..7).collect::<Vec<_>>());
}

/// `req` with `Accept-Encoding: gzip`.
fn gzip_accepted(mut req: Request<Body>) -> Request<Body> {
    req.headers_mut()
        .insert("accept-encoding", "gzip".parse().unwrap());
    req
}

/// The raw answer to `req`: status, headers and body bytes as sent.
async fn call_raw(h: &Harness, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let res = app(h.state.clone()).oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

#[tokio::test]
async fn read_answers_are_gzipped_when_accepted_and_intake_answers_never() {
    let h = harness(GatewayConfig::default()).await;
    let (status, headers, _) = call_raw(
        &h,
        gzip_accepted(post(
            "/commands",
            json!({"action": "tick", "data": {"pad": "x".repeat(4000)}}),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(headers.get("content-encoding").is_none(), "{headers:?}");
    for i in 0..20 {
        call(
            &h,
            post("/commands", json!({"action": "tick", "data": {"i": i}})),
        )
        .await;
    }
    indexed_all(&h, "commands").await;
    let plain = call(&h, get("/commands?limit=50")).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.headers.get("content-encoding").is_none());
    let (status, headers, bytes) = call_raw(&h, gzip_accepted(get("/commands?limit=50"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    assert!(
        headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("accept-encoding")),
        "{headers:?}"
    );
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut json).unwrap();
    assert!(
        bytes.len() * 4 < json.len(),
        "{} -> {}",
        bytes.len(),
        json.len()
    );
    let body: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(body["items"], plain.body["items"]);
    // A small answer is not worth it.
    let (_, headers, _) = call_raw(&h, gzip_accepted(get("/commands?limit=1&action=none"))).await;
    assert!(headers.get("content-encoding").is_none(), "{headers:?}");
}

/// Waits until the index has caught up with the end of every partition of
/// `topic`.
async fn indexed_all(h: &Harness, topic: &str) {
    let info = h.log.topic(topic).await.unwrap();
    for p in info.partitions {
        assert!(
            h.state
                .index()
                .wait_indexed(topic, p.partition, p.end_offset, Duration::from_secs(10))
                .await
        );
    }
}

/// Appends `value` to the commands topic as it is, under `key`.
async fn append_command_json(h: &Harness, key: &str, value: &Value) {
    h.log
        .append(
            "commands",
            vec![cmdr_log::Record::new(
                key.to_string(),
                value.to_string().into_bytes(),
            )],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn listings_from_a_position_are_in_log_order_and_miss_nothing() {
    let h = harness_with_partitions(GatewayConfig::default(), 3).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        let r = call(
            &h,
            post(
                "/commands",
                json!({"action": if i % 2 == 0 { "even" } else { "odd" }, "data": {"i": i}, "key": format!("k{i}")}),
            ),
        )
        .await;
        sent.push(r.body["id"].as_str().unwrap().to_string());
    }
    indexed_all(&h, "commands").await;

    // From the start, page by page, following `next`.
    let mut next = Some("/commands?from=start&limit=4".to_string());
    let (mut seen, mut position) = (Vec::new(), String::new());
    while let Some(uri) = next {
        let r = call(&h, get(&uri)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for item in r.body["items"].as_array().unwrap() {
            assert_eq!(item["status"], "pending");
            assert!(item["links"]["self"].is_string());
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        position = r.body["position"].as_str().unwrap().to_string();
        next = r.body["next"].as_str().map(str::to_string);
    }
    // Merged across the three partitions by id: the order they were sent in.
    assert_eq!(seen, sent);
    assert_eq!(position.split('.').count(), 3);

    // A command logged after that page with an id older than everything
    // listed: an id-ordered poller misses it, a position does not.
    let late = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1, 0));
    let value = json!({"id": late, "action": "odd", "data": {}, "key": "late",
        "timestamp": 1000, "meta": {"principal": "anonymous"}});
    append_command_json(&h, "late", &value).await;
    indexed_all(&h, "commands").await;
    let by_id = call(&h, get(&format!("/commands?order=asc&after={}", sent[9]))).await;
    assert_eq!(by_id.body["items"], json!([]));
    let r = call(&h, get(&format!("/commands?from={position}"))).await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", r.text);
    assert_eq!(items[0]["id"], late.to_string());
    assert!(r.body["next"].is_null());
    let after_late = r.body["position"].as_str().unwrap().to_string();
    assert_ne!(after_late, position);
    // Nothing new: the same position back, no items.
    let r = call(&h, get(&format!("/commands?from={after_late}"))).await;
    assert_eq!(
        (r.body["items"].clone(), r.body["position"].clone()),
        (json!([]), json!(after_late))
    );

    // Filters, and the position still goes past what they skip.
    let r = call(&h, get("/commands?from=start&action=odd")).await;
    let mut odd: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["data"]["i"]
                .as_i64()
                .map_or("late", |i| if i % 2 == 1 { "odd" } else { "even" })
        })
        .collect();
    // (The late one comes after the commands logged before it in its partition.)
    odd.sort();
    assert_eq!(odd, ["late", "odd", "odd", "odd", "odd", "odd"]);
    assert_eq!(r.body["position"], json!(after_late));
    let r = call(&h, get("/commands?from=end")).await;
    assert_eq!(
        (r.body["items"].clone(), r.body["position"].clone()),
        (json!([]), json!(after_late))
    );
    let r = call(&h, get("/events?from=start")).await;
    assert_eq!(r.body["items"], json!([]), "{}", r.text);

    // What cannot be combined with a position, and positions that do not fit.
    for (uri, parameter) in [
        ("/commands?from=start&order=asc", "order"),
        (&*format!("/commands?from=start&after={}", sent[0]), "after"),
        ("/events?from=start&since=5", "since"),
        ("/commands?from=soon", "from"),
        // A status changes after the position has gone past a command.
        ("/commands?from=start&status=accepted", "status"),
        // Positions that do not fit the topic.
        ("/commands?from=1.2", "from"),
        ("/commands?from=99.0.0", "from"),
    ] {
        let r = call(&h, get(uri)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(r.body["errors"][0]["parameter"], parameter, "{uri}");
    }

    // A command logged twice is indexed once, and listed once.
    append_command_json(&h, "late", &value).await;
    indexed_all(&h, "commands").await;
    let r = call(&h, get(&format!("/commands?from={after_late}"))).await;
    assert_eq!(r.body["items"], json!([]), "{}", r.text);
    assert_ne!(r.body["position"], json!(after_late));
}

#[tokio::test]
async fn websocket_subscribes_filters_and_unsubscribes() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let h = harness(GatewayConfig::default()).await;
    let server = Served::start(&h).await;
    let addr = server.addr;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let sub = json!({"op": "subscribe", "id": "s1", "topic": "commands", "from": "start", "action": "wanted"});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .unwrap();
    let m = next_text(&mut ws).await;
    assert_eq!(
        m,
        json!({"type": "subscribed", "id": "s1", "position": "0"})
    );
    call(
        &h,
        post("/commands", json!({"action": "other", "data": {}})),
    )
    .await;
    call(
        &h,
        post("/commands", json!({"action": "wanted", "data": {"n": 1}})),
    )
    .await;
    // Past the skipped command, maybe a position alone first (resume
    // from it would not read that command again).
    let mut m = next_text(&mut ws).await;
    if m["type"] == "position" {
        assert_eq!(
            m,
            json!({"type": "position", "subscription": "s1", "position": "1"})
        );
        m = next_text(&mut ws).await;
    }
    assert_eq!(
        (m["type"].as_str(), m["subscription"].as_str()),
        (Some("record"), Some("s1"))
    );
    assert_eq!(m["record"]["data"]["n"], 1);
    assert_eq!(m["position"], "2");
    ws.send(Message::Text(
        json!({"op": "unsubscribe", "id": "s1"}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        json!({"type": "unsubscribed", "id": "s1"})
    );
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "error");
    let bad = json!({"op": "subscribe", "id": "s2", "topic": "nope"});
    ws.send(Message::Text(bad.to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "error");
    // A misspelt filter is refused (it would subscribe to everything), and
    // so is an events-only filter on commands; the error names the id.
    for bad in [
        json!({"op": "subscribe", "id": "s3", "topic": "events", "acton": "x"}),
        json!({"op": "subscribe", "id": "s4", "topic": "commands", "root": uuid::Uuid::now_v7()}),
    ] {
        ws.send(Message::Text(bad.to_string().into()))
            .await
            .unwrap();
        let m = next_text(&mut ws).await;
        assert_eq!(
            (m["type"].as_str(), m["id"].clone()),
            (Some("error"), bad["id"].clone()),
            "{m}"
        );
        assert!(
            m["message"].as_str().unwrap().contains("unknown field"),
            "{m}"
        );
    }
    // An empty key matches nothing: refused, as on the query strings.
    let bad = json!({"op": "subscribe", "id": "s5", "topic": "commands", "key": ""});
    ws.send(Message::Text(bad.to_string().into()))
        .await
        .unwrap();
    let m = next_text(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("error"), Some("s5")),
        "{m}"
    );
    assert!(
        m["message"].as_str().unwrap().contains("key must be"),
        "{m}"
    );
    // A member given twice would be read as one of them: refused.
    ws.send(Message::Text(
        r#"{"op": "subscribe", "id": "s6", "topic": "commands", "op": "unsubscribe"}"#.into(),
    ))
    .await
    .unwrap();
    let m = next_text(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("error"), Some("s6")),
        "{m}"
    );
    assert!(m["message"].as_str().unwrap().contains("/op"), "{m}");
    // So is an empty action.
    let bad = json!({"op": "subscribe", "id": "s7", "topic": "commands", "action": ""});
    ws.send(Message::Text(bad.to_string().into()))
        .await
        .unwrap();
    let m = next_text(&mut ws).await;
    assert_eq!(m["type"], "error", "{m}");

    // Shutdown ends the socket and the server drains.
    server.stop().await;
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    use futures::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("no socket error");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test]
async fn event_updates_filter_and_resume_from_a_position() {
    let h = harness(GatewayConfig::default()).await;
    let parent = uuid::Uuid::now_v7();
    let other = uuid::Uuid::now_v7();
    for (i, p) in [(0, parent), (1, other), (2, parent), (3, parent)] {
        let ev = EventDraft::new("seen", json!({"i": i})).into_event(p, p, "k", 1);
        h.log
            .append("events", vec![Record::new("k", ev.to_json())])
            .await
            .unwrap();
    }
    let read = |uri: String, last: Option<String>, want: usize| {
        let h = &h;
        async move {
            let mut req = Request::get(uri);
            if let Some(l) = last {
                req = req.header("last-event-id", l);
            }
            let res = app(h.state.clone())
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(res.headers()["content-type"], "text/event-stream");
            let mut body = res.into_body();
            let mut text = String::new();
            // Blocks with data: events (id-only blocks move the position).
            while text.split("\n\n").filter(|b| b.contains("data:")).count() < want {
                let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                    .await
                    .expect("an SSE frame")
                    .unwrap()
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            // Updates ready together come in one chunk: the first `want`.
            text.split("\n\n")
                .filter(|b| b.contains("data:"))
                .take(want)
                .map(|b| {
                    let id = b
                        .lines()
                        .find_map(|l| l.strip_prefix("id:"))
                        .unwrap()
                        .trim()
                        .to_string();
                    let data = b
                        .lines()
                        .find_map(|l| l.strip_prefix("data:"))
                        .unwrap()
                        .trim();
                    (
                        id,
                        serde_json::from_str::<Value>(data).unwrap()["data"]["i"]
                            .as_i64()
                            .unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let got = read(
        format!("/events/updates?from=start&parent={parent}"),
        None,
        2,
    )
    .await;
    assert_eq!(got.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(got[1].0, "3", "the position after the event at offset 2");
    let rest = read(
        format!("/events/updates?root={parent}"),
        Some(got[1].0.clone()),
        1,
    )
    .await;
    assert_eq!(rest, [("4".to_string(), 3)]);

    // A filter that matches nothing still moves the client's position: an
    // id-only block where it starts, and one at the end once it has read
    // (and skipped) everything, so a resume neither rereads nor misses.
    let res = app(h.state.clone())
        .oneshot(
            Request::get("/events/updates?from=start&action=nothing")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = res.into_body();
    let mut text = String::new();
    while text.matches("\n\n").count() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an SSE frame")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks, ["id: 0", "id: 4"], "{text:?}");
}

fn put(uri: &str, body: Value) -> Request<Body> {
    Request::put(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn processors_are_registered_read_and_deleted() {
    let h = harness(GatewayConfig::default()).await;
    let reg = json!({"actions": ["pay"], "url": "http://127.0.0.1:9/pay"});
    let r = call(&h, put("/processors/payments", reg.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers["location"], "/processors/payments");
    let group = cmdr_processor::webhook::runner::group_name("payments", &["pay".into()]);
    assert_eq!(r.body["group"], group.as_str());
    assert!(group.starts_with("webhook-payments."), "{group}");
    let records = h.log.topic("_cmdr_processors").await.unwrap().partitions[0].end_offset;
    // Identical: 200 and nothing written; changed: 200 and written.
    let r = call(&h, put("/processors/payments", reg)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let after = h.log.topic("_cmdr_processors").await.unwrap().partitions[0].end_offset;
    assert_eq!(after, records);
    let put_url = |url: &str| {
        put(
            "/processors/payments",
            json!({"actions": ["pay", "refund"], "url": url}),
        )
    };
    let stored_url = || async {
        let registration = h.state.webhooks().get("payments").await.unwrap();
        registration.unwrap().url
    };
    let r = call(&h, put_url("http://127.0.0.1:9/v2")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(stored_url().await, "http://127.0.0.1:9/v2");
    // Credentials in the URL are used, never shown.
    let r = call(&h, put_url("http://user:s3cret@127.0.0.1:9/v2")).await;
    assert_eq!(
        r.body["url"], "http://user:***@127.0.0.1:9/v2",
        "{}",
        r.text
    );
    for path in ["/processors/payments", "/processors"] {
        let r = call(&h, get(path)).await;
        assert!(
            r.text.contains("user:***@") && !r.text.contains("s3cret"),
            "{}",
            r.text
        );
    }
    assert_eq!(stored_url().await, "http://user:s3cret@127.0.0.1:9/v2");

    let twice = Request::put("/processors/twice")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"url": "http://127.0.0.1:9/", "actions": ["a"], "actions": ["b"]}"#,
        ))
        .unwrap();
    let r = call(&h, twice).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["code"], "invalid-registration");
    assert_eq!(r.body["errors"][0]["pointer"], "/actions", "{}", r.text);

    let r = call(&h, put("/processors/a%20b", json!({"actions": "pay"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["code"], "invalid-registration");
    let pointers: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/name", "/actions", "/url"]);
    let r = call(
        &h,
        Request::put("/processors/x")
            .header("content-type", "application/json")
            .body(Body::from("{"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.body["code"], "malformed-body", "{}", r.text);

    let r = call(&h, get("/processors")).await;
    assert_eq!(
        r.body["items"][0]["actions"],
        json!(["pay", "refund"]),
        "{}",
        r.text
    );
    let r = call(&h, get("/processors/payments")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(
        &h,
        Request::get("/processors/payments")
            .header("accept", "text/html")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(r.text.contains("<html"), "{}", r.text);
    let delete = || {
        Request::delete("/processors/payments")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(call(&h, delete()).await.status, StatusCode::NO_CONTENT);
    let r = call(&h, delete()).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-found"))
    );
    assert_eq!(
        call(&h, get("/processors/payments")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = call(&h, get("/openapi.json")).await;
    assert!(r.body["paths"]["/processors/{name}"]["put"].is_object());
    assert!(r.body["paths"]["/dead-letters"]["get"].is_object());
}

#[tokio::test]
async fn dead_letters_filter_and_paginate() {
    let h = harness(GatewayConfig::default()).await;
    for (i, processor) in ["a", "b", "a", "a"].into_iter().enumerate() {
        let letter = cmdr_processor::DeadLetter {
            processor: processor.into(),
            topic: "commands".into(),
            partition: 0,
            offset: i as u64,
            input: json!({"id": format!("00000000-0000-7000-8000-00000000000{i}")}),
            last_error: "down".into(),
            attempts: 5,
            timestamp: 1,
        };
        h.state.dead_letters().append(&letter).await.unwrap();
    }
    let r = call(&h, get("/dead-letters?processor=a&limit=2")).await;
    let offsets: Vec<u64> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 2], "{}", r.text);
    assert_eq!(
        r.body["items"][0]["links"]["input"],
        "/commands/00000000-0000-7000-8000-000000000000"
    );
    let next = r.body["next"].as_str().unwrap().to_string();
    let r = call(&h, get(&next)).await;
    let offsets: Vec<u64> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3], "{}", r.text);
    assert_eq!(r.body["next"], Value::Null);
    let r = call(&h, get("/dead-letters")).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 4, "{}", r.text);
    for bad in [
        "/dead-letters?after=x",
        "/dead-letters?limit=1001",
        "/dead-letters?nope=1",
    ] {
        let r = call(&h, get(bad)).await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad-request")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn metrics_count_answers_and_show_the_index_position() {
    let h = harness(GatewayConfig::default()).await;
    for _ in 0..2 {
        let r = call(&h, post("/commands", json!({"action": "a", "data": {}}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    let r = call(&h, post("/commands", json!({"action": "", "data": {}}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = call(
        &h,
        post("/commands?sync=maybe", json!({"action": "a", "data": {}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        h.state
            .index()
            .wait_indexed("commands", 0, 2, Duration::from_secs(5))
            .await
    );

    let r = call(&h, get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let lines: Vec<&str> = r.text.lines().collect();
    for expected in [
        "cmdr_commands_appended_total 2",
        "cmdr_command_answers_total{status=\"202\"} 2",
        "cmdr_command_answers_total{status=\"422\"} 1",
        "cmdr_command_answers_total{status=\"400\"} 1",
        "cmdr_command_answers_total{status=\"201\"} 0",
        "cmdr_log_end_offset{topic=\"commands\",partition=\"0\"} 2",
        "cmdr_index_position{topic=\"commands\",partition=\"0\"} 2",
        "cmdr_index_lag_records{topic=\"commands\",partition=\"0\"} 0",
        "cmdr_outcome_waiters 0",
        "cmdr_live_streams 0",
        "cmdr_webhook_processors 0",
        "# EOF",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected:?} missing in:\n{}",
            r.text
        );
    }
    #[cfg(target_os = "linux")]
    for expected in [
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_threads gauge",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected:?} missing in:\n{}",
            r.text
        );
    }
}

/// Sends `GET /healthz` on a new connection to `addr` and checks that no
/// answer comes within 300 ms: the server is at its connection limit.
async fn unanswered_healthz(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Connected by the kernel, not yet accepted.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut answer)).await;
    assert!(early.is_err(), "answered beyond the connection limit");
    stream
}

/// Reads the `200` answer to the request [`unanswered_healthz`] sent, once
/// the server has a place for it.
async fn answered_at_last(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut answer = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("served once a place was free")
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
}

/// Sends `request` on a new connection and reads the whole answer (the
/// server closes an overflow connection after one).
async fn one_answer(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an overflow connection is answered at once and closed")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// At `max_connections`, further connections each get one answer: health
/// checks as usual, anything else a quick 503. Past the overflow places
/// too, the server accepts nothing until a connection closes: the next
/// client waits in the listen backlog, then is served.
#[tokio::test]
async fn past_the_limit_health_checks_answer_the_rest_is_refused_then_waits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let h = harness(GatewayConfig {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(3),
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let mut answer = [0u8; 1024];
    let mut first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let n = first.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));

    // The first (keep-alive) connection holds the only place.
    for path in ["/healthz", "/readyz"] {
        let got = one_answer(
            server.addr,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200"), "{path}: {got}");
    }
    let got = one_answer(
        server.addr,
        b"POST /commands HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 26\r\n\r\n{\"action\":\"a\",\"data\":{}}",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    let lower = got.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json")
            && lower.contains("retry-after: 1"),
        "{got}"
    );
    assert!(got.contains("max_connections"), "{got}");

    // Idle clients take every overflow place; the next one is not accepted.
    let mut idle = Vec::new();
    for _ in 0..cmdr_gateway::server::OVERFLOW_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = unanswered_healthz(server.addr).await;
    drop(first);
    answered_at_last(waiting).await;
    drop(idle);
    server.stop().await;
}

/// A connection accepted once a place came free is served as usual, even
/// if the accept loop was waiting with an overflow place when it came.
#[tokio::test]
async fn a_place_freed_while_waiting_serves_the_next_connection() {
    let h = harness(GatewayConfig {
        max_connections: 1,
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = one_answer(
        server.addr,
        b"GET /commands?from=end HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    server.stop().await;
}

/// A WebSocket keeps its connection's place among `max_connections` until
/// it closes (idle sockets cannot pile up past the limit), and a message
/// over `MAX_WS_MESSAGE` closes it.
#[tokio::test]
async fn websockets_count_against_the_connection_limit() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;

    let h = harness(GatewayConfig {
        max_connections: 1,
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    // The socket is open and idle: the next client gets the overflow's 503.
    let got = one_answer(
        server.addr,
        b"GET /commands?from=end HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");

    // A message over the limit ends the socket with a Close frame saying
    // why (1009, message too big), which frees the place.
    let big = "x".repeat(cmdr_gateway::MAX_WS_MESSAGE + 1);
    let _ = ws.send(Message::Text(big.into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the socket stayed open after an oversized message")
    .expect("a close frame with a code");
    assert_eq!(closed.code, CloseCode::Size);
    assert!(closed.reason.contains("64 KiB"), "{}", closed.reason);
    drop(ws);
    // The place is free again: a request on a new connection is served.
    let mut served = String::new();
    for _ in 0..50 {
        served = one_answer(
            server.addr,
            b"GET /commands?from=end HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        if served.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    server.stop().await;
}

/// A client that trickles a request's headers (or idles between requests)
/// is cut off after `header_read_timeout`; others are served meanwhile.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let h = harness(GatewayConfig {
        header_read_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let addr = server.addr;

    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 1024];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );

    // A live stream outlasts the timeout: it is a response, not a wait for headers.
    let mut live = tokio::net::TcpStream::connect(addr).await.unwrap();
    live.write_all(
        b"GET /commands/updates HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    call(&h, post("/commands", json!({"action": "late", "data": {}}))).await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"late\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), live.read(&mut answer))
            .await
            .expect("the live stream delivers")
            .unwrap();
        assert!(
            n > 0,
            "the live stream was closed: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&answer[..n]);
    }

    for (name, conn) in [("slow", &mut slow), ("idle", &mut idle)] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the {name} connection is still open");
    }
    server.stop().await;
}

/// A body sent at a trickle gets 408 and appends nothing; a request still
/// waiting for its body at shutdown does not hold the server past the
/// drain timeout.
#[tokio::test]
async fn slow_bodies_time_out_and_do_not_hold_a_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let partial_post = b"POST /commands HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"action\"";
    let h = harness(GatewayConfig {
        header_read_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(partial_post).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    assert_eq!(commands_in_log(&h).await, 0, "nothing appended");
    server.stop().await;

    let h = harness(GatewayConfig {
        header_read_timeout: Duration::from_secs(120),
        drain_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let mut stuck = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stuck.write_all(partial_post).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Stops within `Served::stop`'s 10 s, not after the 120 s body timeout.
    server.stop().await;
}

/// A live stream whose reader has stopped reading does not hold a
/// shutdown for the drain timeout: its connection is closed at once (the
/// client resumes from the last message it got).
#[tokio::test]
async fn a_stalled_live_stream_does_not_hold_a_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let h = harness(GatewayConfig {
        drain_timeout: Duration::from_secs(120),
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"GET /commands/updates?from=start HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 256];
    let n = stalled.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    // Far more than the socket buffers, the follower's and hyper's hold.
    let value = format!(r#"{{"x":"{}"}}"#, "a".repeat(256 * 1024));
    for _ in 0..160 {
        h.log
            .append("commands", vec![Record::new("k", value.clone())])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Within `Served::stop`'s 10 s, not after the 120 s drain timeout.
    server.stop().await;
    drop(stalled);
}

/// Browsers' live clients authenticate with `?access_token=`; taking the
/// token's read role away (a table replacement, as SIGHUP does) ends the
/// streams it opened:
/// the WebSocket with a Close frame 1008, the SSE stream by its end.
#[tokio::test]
async fn live_streams_take_a_query_token_and_end_when_it_is_revoked() {
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;

    let grant = |name: &str| cmdr_gateway::Grant {
        principal: name.into(),
        roles: vec![cmdr_gateway::Role::Read],
    };
    let mut tokens = cmdr_gateway::Tokens::default();
    tokens.add_token("cmdr_viewer", grant("viewer")).unwrap();
    tokens.add_token("cmdr_other", grant("other")).unwrap();
    let table = Arc::new(cmdr_gateway::TokenTable::new(tokens));
    let h = harness(GatewayConfig {
        tokens: Some(table.clone()),
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let addr = server.addr;

    assert!(tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .is_err());
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?access_token=cmdr_viewer"))
            .await
            .unwrap();
    let sub = json!({"op": "subscribe", "id": "s1", "topic": "commands"});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "subscribed");
    let mut sse = tokio::net::TcpStream::connect(addr).await.unwrap();
    sse.write_all(b"GET /events/updates?access_token=cmdr_viewer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = sse.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );

    // A reload that keeps the token changes nothing; one that keeps it
    // without its read role ends both (as one without the token does).
    let mut kept = cmdr_gateway::Tokens::default();
    kept.add_token("cmdr_viewer", grant("viewer")).unwrap();
    table.replace(kept);
    let mut write_only = cmdr_gateway::Tokens::default();
    write_only
        .add_token(
            "cmdr_viewer",
            cmdr_gateway::Grant {
                principal: "viewer".into(),
                roles: vec![cmdr_gateway::Role::Write],
            },
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    table.replace(write_only);
    let closed = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the socket is closed within 10 s");
        match msg {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a Close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.map(|f| f.code), Some(CloseCode::Policy));
    // The response ends (its last chunk); the connection may stay open.
    let mut rest = Vec::new();
    while !rest.ends_with(b"0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), sse.read(&mut head))
            .await
            .expect("the SSE stream ends within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed before the stream's end");
        rest.extend_from_slice(&head[..n]);
    }
    server.stop().await;
}

/// The action of `/schemas/{action}` is the rest of the path and is checked
/// as a command's action is; a missing version is reported plainly.
#[tokio::test]
async fn schema_paths_are_checked_and_missing_versions_reported_plainly() {
    let h = harness(GatewayConfig::default()).await;
    let schema = json!({"type": "object"});
    let r = call(&h, put("/schemas/bad%20act", schema.clone())).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["code"], "validation-failed");
    assert_eq!(r.body["errors"][0]["pointer"], "/action");
    assert_eq!(call(&h, get("/schemas")).await.body["items"], json!([]));

    // A `/` in the action may appear unescaped; the PUT's answers are JSON
    // with a Location, new (201) or identical (200). Links encode it.
    for (uri, status) in [
        ("/schemas/billing/pay", StatusCode::CREATED),
        ("/schemas/billing%2Fpay", StatusCode::OK),
    ] {
        let r = call(&h, put(uri, schema.clone())).await;
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(r.headers["location"], "/schemas/billing%2Fpay?version=1");
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let r = call(&h, get("/schemas/billing/pay")).await;
    assert_eq!(r.body["action"], "billing/pay");
    assert_eq!(r.body["links"]["latest"], "/schemas/billing%2Fpay");
    let r = call(&h, get("/schemas")).await;
    assert_eq!(
        r.body["items"],
        json!([{"action": "billing/pay", "version": 1, "versions": 1,
                "links": {"self": "/schemas/billing%2Fpay"}}])
    );

    let r = call(&h, get("/schemas/billing/pay?version=0")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.body["detail"],
        "action \"billing/pay\" has no schema version 0"
    );
    for (uri, parameter) in [
        ("/schemas/billing/pay?version=x", "version"),
        ("/schemas/billing/pay?version=1&version=1", "version"),
        ("/schemas/billing/pay?v=1", "v"),
    ] {
        let r = call(&h, get(uri)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body["code"], "bad-request");
        assert_eq!(r.body["errors"][0]["parameter"], parameter, "{uri}");
    }
}

/// `/ws` takes only `access_token`: filters go in subscribe messages.
#[tokio::test]
async fn the_websocket_endpoint_refuses_unknown_query_parameters() {
    let h = harness(GatewayConfig::default()).await;
    // Checked before the upgrade itself.
    let r = call(&h, get("/ws?from=start")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["code"], "bad-request");
    assert!(r.body["detail"].as_str().unwrap().contains("\"from\""));

    let server = Served::start(&h).await;
    let addr = server.addr;
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws?action=x")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), StatusCode::BAD_REQUEST)
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?access_token=t"))
        .await
        .unwrap();
    drop(ws);
    server.stop().await;
}

/// The document's `security: []` marks exactly the operations a server with
/// tokens answers without one; every other operation is a 401 then, as its
/// shared 401 response says.
#[tokio::test]
async fn the_document_marks_exactly_the_operations_that_need_no_token() {
    let mut tokens = cmdr_gateway::Tokens::default();
    tokens
        .add_token(
            "cmdr_admin",
            cmdr_gateway::Grant {
                principal: "ops".into(),
                roles: vec![cmdr_gateway::Role::Admin],
            },
        )
        .unwrap();
    let h = harness(GatewayConfig {
        tokens: Some(Arc::new(cmdr_gateway::TokenTable::new(tokens))),
        ..GatewayConfig::default()
    })
    .await;
    let doc = cmdr_gateway::openapi::document();
    let router = cmdr_gateway::authenticated(app(h.state.clone()), &h.state);
    let mut public = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let uri = path.replace("{id}", "x").replace("{key}", "k");
        let uri = uri.replace("{action}", "a").replace("{name}", "n");
        for (method, op) in ops.as_object().unwrap() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let res = router.clone().oneshot(req).await.unwrap();
            let open = op["security"] == json!([]);
            assert_eq!(
                res.status() != StatusCode::UNAUTHORIZED,
                open,
                "{method} {uri}: {}",
                res.status()
            );
            assert_eq!(op["responses"]["401"].is_null(), open, "{method} {path}");
            if open {
                // `/readyz` may be 503 while the new index catches up.
                let ok = res.status() == StatusCode::OK || path == "/readyz";
                assert!(ok, "{method} {uri}: {}", res.status());
                public.push(path.as_str());
            }
        }
    }
    public.sort_unstable();
    assert_eq!(public, ["/docs", "/healthz", "/openapi.json", "/readyz"]);
}

/// The answers the document describes for health checks, the home page and
/// a method a path does not have.
#[tokio::test]
async fn service_answers_match_the_document() {
    let h = harness(GatewayConfig::default()).await;
    let r = call(&h, get("/healthz")).await;
    assert_eq!(r.body, json!({"status": "ok"}));
    // Ready or not (the new index may still be catching up), plain JSON.
    let r = call(&h, get("/readyz")).await;
    let ready = r.status == StatusCode::OK;
    assert!(ready || r.status == StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.body["status"], if ready { "ready" } else { "not-ready" });
    assert_eq!(r.body["checks"]["indexer"], true);
    let r = call(&h, get("/")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["links"]["commands"], "/commands");
    let r = call(&h, get("/openapi.json")).await;
    assert_eq!(r.headers["content-type"], "application/json");
    let doc = r.body;
    assert!(doc["paths"]["/"]["get"].is_object());

    let r = call(
        &h,
        Request::delete("/commands").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["code"], "method-not-allowed");
    let allow = r.headers["allow"].to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert!(doc["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"].is_object());
}

/// Once `unsubscribed` is answered, no record of that subscription
/// follows, even when it was busy sending a backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_of_a_subscription_follows_its_unsubscribed() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let h = harness(GatewayConfig::default()).await;
    for i in 0..1500 {
        call(
            &h,
            post("/commands", json!({"action": "a", "data": {"i": i}})),
        )
        .await;
    }
    let server = Served::start(&h).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    for round in 0..20 {
        let id = format!("s{round}");
        let sub = json!({"op": "subscribe", "id": id, "topic": "commands", "from": "start"});
        ws.send(Message::Text(sub.to_string().into()))
            .await
            .unwrap();
        assert_eq!(next_text(&mut ws).await["type"], "subscribed");
        assert_eq!(next_text(&mut ws).await["type"], "record");
        let unsub = json!({"op": "unsubscribe", "id": id});
        ws.send(Message::Text(unsub.to_string().into()))
            .await
            .unwrap();
        while next_text(&mut ws).await["type"] != "unsubscribed" {}
        // A marker: the next message must be its answer.
        ws.send(Message::Text("{not json".into())).await.unwrap();
        let m = next_text(&mut ws).await;
        assert_eq!(m["type"], "error", "round {round}: {m}");
    }
}

/// An idle WebSocket is pinged every heartbeat.
#[tokio::test]
async fn an_idle_websocket_is_pinged() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let h = harness(GatewayConfig::default()).await;
    let server = Served::start(&h).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    let wait = cmdr_gateway::HEARTBEAT + Duration::from_secs(5);
    let msg = tokio::time::timeout(wait, ws.next())
        .await
        .expect("a message within a heartbeat")
        .expect("socket open")
        .expect("no socket error");
    assert!(matches!(msg, Message::Ping(_)), "{msg:?}");
}

/// An `Idempotency-Key` belongs to the principal that first used it:
/// another principal sending the same body with it is refused, not given
/// the first one's command, and appends nothing.
#[tokio::test]
async fn an_idempotency_key_is_bound_to_its_principal() {
    let mut tokens = cmdr_gateway::Tokens::default();
    for (token, principal) in [("cmdr_alice", "alice"), ("cmdr_bob", "bob")] {
        tokens
            .add_token(
                token,
                cmdr_gateway::Grant {
                    principal: principal.into(),
                    roles: vec![cmdr_gateway::Role::Write, cmdr_gateway::Role::Read],
                },
            )
            .unwrap();
    }
    let h = harness(GatewayConfig {
        tokens: Some(Arc::new(cmdr_gateway::TokenTable::new(tokens))),
        ..GatewayConfig::default()
    })
    .await;
    let router = cmdr_gateway::authenticated(app(h.state.clone()), &h.state);
    let post_as = |token: &str| {
        Request::post("/commands")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", "order-7")
            .body(Body::from(
                json!({"action": "pay", "data": {"n": 1}}).to_string(),
            ))
            .unwrap()
    };
    let first = router.clone().oneshot(post_as("cmdr_alice")).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let bob = router.clone().oneshot(post_as("cmdr_bob")).await.unwrap();
    assert_eq!(bob.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = axum::body::to_bytes(bob.into_body(), usize::MAX)
        .await
        .unwrap();
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "idempotency-key-reused", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("by another principal")),
        "{problem}"
    );
    let again = router.oneshot(post_as("cmdr_alice")).await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let end = h.log.topic("commands").await.unwrap().partitions[0].end_offset;
    assert_eq!(end, 1, "one command appended");
}

/// A subscription says where it starts, and where it has read to past
/// records its filter skipped: a client that resumes from the last
/// position it saw misses nothing and reads nothing twice.
#[tokio::test]
async fn a_subscription_tells_its_positions_past_skipped_records() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let h = harness(GatewayConfig::default()).await;
    call(&h, post("/commands", json!({"action": "old", "data": {}}))).await;
    let server = Served::start(&h).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    let sub = json!({"op": "subscribe", "id": "s", "topic": "commands", "action": "wanted"});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        json!({"type": "subscribed", "id": "s", "position": "1"})
    );
    call(
        &h,
        post("/commands", json!({"action": "other", "data": {}})),
    )
    .await;
    assert_eq!(
        next_text(&mut ws).await,
        json!({"type": "position", "subscription": "s", "position": "2"})
    );
}

/// The live streams open, from `/metrics`.
async fn live_streams(h: &Harness) -> u64 {
    let r = call(h, get("/metrics")).await;
    r.text
        .lines()
        .find_map(|l| l.strip_prefix("cmdr_live_streams ")?.parse().ok())
        .unwrap()
}

/// A client that opens a live stream and then reads nothing is cut off
/// after the send timeout, and its place among the live streams is freed.
#[tokio::test]
async fn a_live_stream_whose_client_reads_nothing_is_closed_after_the_send_timeout() {
    use tokio::io::AsyncWriteExt;
    let h = harness(GatewayConfig {
        send_timeout: Duration::from_secs(1),
        ..GatewayConfig::default()
    })
    .await;
    // Far more than the socket buffers hold.
    let big = axum::body::Bytes::from(format!("\"{}\"", "x".repeat(100_000)));
    for _ in 0..4 {
        let records = (0..50)
            .map(|i| Record::new(format!("k{i}"), big.clone()))
            .collect();
        h.log.append("commands", records).await.unwrap();
    }
    let server = Served::start(&h).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /commands/updates?from=start HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let open = tokio::time::Instant::now();
    while live_streams(&h).await == 0 {
        assert!(
            open.elapsed() < Duration::from_secs(5),
            "the stream never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still open for a while (the send timeout has not passed)...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(live_streams(&h).await, 1);
    // ...then closed.
    while live_streams(&h).await == 1 {
        assert!(
            open.elapsed() < Duration::from_secs(15),
            "the stalled stream was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stream);
    server.stop().await;
}

/// An HTTP/2 connection with prior knowledge (h2c) to `addr`, its
/// streams' receive window `window` bytes, and the task driving it (it
/// ends when the server closes the connection).
async fn h2_connect(
    addr: std::net::SocketAddr,
    window: u32,
) -> (
    hyper::client::conn::http2::SendRequest<Body>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(window)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

/// The answer's head to `GET path` on an HTTP/2 connection.
async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<Body>,
    addr: std::net::SocketAddr,
    path: &str,
) -> hyper::Response<hyper::body::Incoming> {
    send.ready().await.unwrap();
    send.send_request(h2_request(addr, "GET", path, Body::empty()))
        .await
        .unwrap()
}

/// A request for HTTP/2: the authority in the URI, no `Host` header.
fn h2_request(addr: std::net::SocketAddr, method: &str, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .version(axum::http::Version::HTTP_2)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

async fn h2_call(
    send: &mut hyper::client::conn::http2::SendRequest<Body>,
    req: Request<Body>,
) -> (StatusCode, Value) {
    send.ready().await.unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.version(), axum::http::Version::HTTP_2);
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// HTTP/2 in plain text (prior knowledge): requests side by side on one
/// connection, a live stream among them, and the same-origin check of a
/// form post made from `:authority` (HTTP/2 sends no `Host`).
#[tokio::test]
async fn http2_serves_requests_side_by_side_on_one_connection() {
    let h = harness(GatewayConfig::default()).await;
    let server = Served::start(&h).await;
    let addr = server.addr;
    let (mut send, _conn) = h2_connect(addr, 65_535).await;

    let live = {
        let mut req = h2_request(addr, "GET", "/commands/updates?action=h2", Body::empty());
        req.headers_mut()
            .insert("accept", "text/event-stream".parse().unwrap());
        send.ready().await.unwrap();
        send.send_request(req).await.unwrap()
    };
    assert_eq!(live.status(), StatusCode::OK);

    let posts = (0..50).map(|i| {
        let mut send = send.clone();
        async move {
            let body = json!({"action": "h2", "data": {"i": i}, "key": format!("k{i}")});
            h2_call(
                &mut send,
                h2_request(addr, "POST", "/commands", Body::from(body.to_string())),
            )
            .await
        }
    });
    let answers = futures::future::join_all(posts).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
    }
    let id = answers[0].1["id"].as_str().unwrap().to_string();
    let (status, body) = h2_call(
        &mut send,
        h2_request(addr, "GET", &format!("/commands/{id}"), Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], id.as_str());

    // The live stream, on the same connection, saw the 50 commands.
    let mut body = live.into_body();
    let mut seen = String::new();
    while seen.matches("\"action\":\"h2\"").count() < 50 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the live stream delivers")
            .expect("the live stream stays open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }

    let form = |origin: &str| {
        let mut req = h2_request(
            addr,
            "POST",
            "/commands",
            Body::from("action=h2&data=%7B%7D"),
        );
        let headers = req.headers_mut();
        headers.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        headers.insert("origin", origin.parse().unwrap());
        req
    };
    let (status, body) = h2_call(&mut send, form("https://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = h2_call(&mut send, form(&format!("http://{addr}"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    drop(body);
    server.stop().await;
}

/// An HTTP/2 connection with no request open is closed after the header
/// read timeout, as is one that never says anything; one whose client
/// takes none of a live stream's bytes (its flow control window stays
/// shut while the connection itself is read) is closed after the send
/// timeout, and its place among the live streams freed.
#[tokio::test]
async fn idle_and_stalled_http2_connections_are_closed() {
    use tokio::io::AsyncReadExt;

    let h = harness(GatewayConfig {
        header_read_timeout: Duration::from_millis(300),
        send_timeout: Duration::from_secs(1),
        ..GatewayConfig::default()
    })
    .await;
    let big = axum::body::Bytes::from(format!("\"{}\"", "x".repeat(100_000)));
    let records = (0..20)
        .map(|i| Record::new(format!("k{i}"), big.clone()))
        .collect();
    h.log.append("commands", records).await.unwrap();
    let server = Served::start(&h).await;
    let addr = server.addr;

    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, idle) = h2_connect(addr, 65_535).await;
    let (status, _) = h2_call(
        &mut send,
        h2_request(addr, "GET", "/healthz", Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(10), idle)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest))
        .await
        .expect("the silent connection is closed")
        .unwrap();

    let (mut send, stalled) = h2_connect(addr, 1024).await;
    let live = h2_get(&mut send, addr, "/commands/updates?from=start").await;
    assert_eq!(live.status(), StatusCode::OK);
    let opened = tokio::time::Instant::now();
    assert_eq!(live_streams(&h).await, 1);
    tokio::time::timeout(Duration::from_secs(15), stalled)
        .await
        .expect("the stalled connection is closed")
        .unwrap()
        .ok();
    assert!(
        opened.elapsed() >= Duration::from_millis(700),
        "closed before the send timeout"
    );
    let freed = tokio::time::Instant::now();
    while live_streams(&h).await != 0 {
        assert!(
            freed.elapsed() < Duration::from_secs(5),
            "the stream's place is never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(live);
    server.stop().await;
}

/// While the server is leaving (its shutdown delay), a request on an
/// HTTP/2 connection is answered and the connection then ends gracefully
/// (`GOAWAY`: the client's next requests go to a new connection); at the
/// shutdown a live stream on HTTP/2 ends and does not hold it.
#[tokio::test]
async fn http2_connections_are_sent_away_while_leaving_and_drained_at_shutdown() {
    let h = harness(GatewayConfig {
        shutdown_delay: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(120),
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let addr = server.addr;
    let (mut send, conn) = h2_connect(addr, 65_535).await;
    let (mut send_live, _live_conn) = h2_connect(addr, 65_535).await;
    let live = h2_get(&mut send_live, addr, "/commands/updates").await;
    assert_eq!(live.status(), StatusCode::OK);

    let stopping = tokio::spawn(server.stop());
    while !h.state.is_leaving() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _) = h2_call(
        &mut send,
        h2_request(addr, "GET", "/healthz", Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(1), conn)
        .await
        .expect("the connection is sent away within the shutdown delay")
        .unwrap()
        .unwrap();
    // Within `Served::stop`'s 10 s, not the 120 s drain timeout.
    stopping.await.unwrap();
    let mut body = live.into_body();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the live stream ends")
    {
        if frame.is_err() {
            break;
        }
    }
}

/// An answer sent whole (a listing) whose client's flow control never
/// takes it is a stall too: its connection is closed after the send
/// timeout, and it holds no shutdown for the drain timeout.
#[tokio::test]
async fn an_http2_answer_left_untaken_closes_its_connection() {
    let h = harness(GatewayConfig {
        header_read_timeout: Duration::from_millis(300),
        send_timeout: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(60),
        ..GatewayConfig::default()
    })
    .await;
    let pad = "x".repeat(30_000);
    for i in 0..30 {
        let body = json!({"action": "big", "key": format!("k{i}"), "data": {"pad": pad}});
        let r = call(&h, post("/commands", body)).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    let started = tokio::time::Instant::now();
    while call(&h, get("/commands?limit=30")).await.text.len() < 800_000 {
        assert!(started.elapsed() < Duration::from_secs(10), "never indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = Served::start(&h).await;
    let addr = server.addr;
    let (mut send, conn) = h2_connect(addr, 1024).await;
    let res = h2_get(&mut send, addr, "/commands?limit=30").await;
    assert_eq!(res.status(), StatusCode::OK);
    // Never read: the window stays at 1 KiB of ~900 KB.
    tokio::time::timeout(Duration::from_secs(8), conn)
        .await
        .expect("the stalled connection is closed")
        .ok();
    drop(res);
    // Within `Served::stop`'s 10 s, not the 60 s drain timeout.
    server.stop().await;
}

/// One HTTP/2 connection may serve many live streams while the server has
/// places to spare (a proxy's clients, a browser's tabs share one); a
/// client whose window is 0 takes nothing and is closed.
#[tokio::test]
async fn an_http2_connection_serves_many_live_streams_and_one_taking_nothing_is_closed() {
    let h = harness(GatewayConfig {
        header_read_timeout: Duration::from_millis(300),
        send_timeout: Duration::from_secs(1),
        ..GatewayConfig::default()
    })
    .await;
    h.log
        .append("commands", vec![Record::new("k", "\"x\"")])
        .await
        .unwrap();
    let server = Served::start(&h).await;
    let addr = server.addr;
    let many = cmdr_gateway::server::MAX_LIVE_STREAMS_PER_CONNECTION + 8;
    let (send, _conn) = h2_connect(addr, 65_535).await;
    let mut answers = Vec::new();
    for i in 0..many {
        let mut send = send.clone();
        let res = h2_get(&mut send, addr, "/commands/updates").await;
        assert_eq!(res.status(), StatusCode::OK, "stream {i}");
        answers.push(res);
    }
    assert_eq!(live_streams(&h).await, many as u64);
    drop(answers);

    let (send, zero) = h2_connect(addr, 0).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut send = send.clone();
        held.push(h2_get(&mut send, addr, "/commands/updates?from=start").await);
    }
    tokio::time::timeout(Duration::from_secs(8), zero)
        .await
        .expect("a client that takes nothing is closed")
        .ok();
    drop(held);
    server.stop().await;
}

/// While leaving (a shutdown delay longer than the send timeout), a
/// request on an HTTP/2 connection sends it away; a `Prefer: wait` request
/// already running on it still gets its answer, as on HTTP/1.1.
#[tokio::test]
async fn an_http2_wait_under_way_outlives_its_connection_being_sent_away() {
    let h = harness(GatewayConfig {
        send_timeout: Duration::from_secs(1),
        shutdown_delay: Duration::from_secs(6),
        drain_timeout: Duration::from_secs(20),
        ..GatewayConfig::default()
    })
    .await;
    let server = Served::start(&h).await;
    let addr = server.addr;
    let (mut send, conn) = h2_connect(addr, 65_535).await;
    // A wait of 4 s (no processor: answered 202 when it ends).
    let mut waiting = send.clone();
    let wait = tokio::spawn(async move {
        waiting.ready().await.unwrap();
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/commands"))
            .version(axum::http::Version::HTTP_2)
            .header("content-type", "application/json")
            .header("prefer", "wait=4")
            .body(Body::from(
                json!({"action": "ignored", "data": {}}).to_string(),
            ))
            .unwrap();
        let t = tokio::time::Instant::now();
        let r = waiting.send_request(req).await;
        (t.elapsed(), r.map(|r| r.status()))
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(server.stop());
    while !h.state.is_leaving() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _) = h2_call(
        &mut send,
        h2_request(addr, "GET", "/healthz", Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (took, answer) = wait.await.unwrap();
    assert!(took >= Duration::from_secs(3), "{took:?}");
    let _ = conn.await;
    let _ = stopping.await;
    assert_eq!(
        answer.ok(),
        Some(StatusCode::ACCEPTED),
        "the wait's answer was lost"
    );
}

/// Healthy HTTP/2 clients are not cut: a live stream idle for
/// several send timeouts, and a large listing read steadily but slowly
/// through a small window.
#[tokio::test]
async fn healthy_slow_http2_clients_are_kept() {
    let h = harness(GatewayConfig {
        header_read_timeout: Duration::from_millis(500),
        send_timeout: Duration::from_secs(1),
        ..GatewayConfig::default()
    })
    .await;
    let pad = "x".repeat(30_000);
    for i in 0..10 {
        let body = json!({"action": "big", "key": format!("k{i}"), "data": {"pad": pad}});
        assert_eq!(
            call(&h, post("/commands", body)).await.status,
            StatusCode::ACCEPTED
        );
    }
    let started = tokio::time::Instant::now();
    while call(&h, get("/commands?limit=10")).await.text.len() < 300_000 {
        assert!(started.elapsed() < Duration::from_secs(10), "never indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = Served::start(&h).await;
    let addr = server.addr;
    let (mut send, conn) = h2_connect(addr, 32 * 1024).await;
    // One request first, then only a live stream, idle.
    let (status, _) = h2_call(
        &mut send,
        h2_request(addr, "GET", "/healthz", Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let live = h2_get(&mut send, addr, "/commands/updates").await;
    assert_eq!(live.status(), StatusCode::OK);
    let mut live = live.into_body();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !conn.is_finished(),
        "an idle live stream's connection was cut"
    );
    // A large listing, read a frame at a time, 300 ms apart.
    let res = h2_get(&mut send, addr, "/commands?limit=10").await;
    let mut body = res.into_body();
    let mut got = 0;
    let t = tokio::time::Instant::now();
    while let Some(frame) = body.frame().await {
        got += frame
            .expect("slow reader cut")
            .into_data()
            .map(|d| d.len())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(t.elapsed() > Duration::from_secs(1), "read slowly");
    assert!(got > 300_000);
    // A new command reaches the idle live stream.
    let body = json!({"action": "small", "key": "z", "data": {}});
    assert_eq!(
        call(&h, post("/commands", body)).await.status,
        StatusCode::ACCEPTED
    );
    let frame = tokio::time::timeout(Duration::from_secs(5), live.frame())
        .await
        .unwrap();
    assert!(frame.unwrap().is_ok());
    assert!(!conn.is_finished());
    drop(live);
    server.stop().await;
}

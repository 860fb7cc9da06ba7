//! Test helpers: a log to run against, sending commands, reading events, and
//! waiting on a condition by bounded polling (never a bare sleep).
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cmdr_contract::{
    header, Command, CommandRequest, Event, Outcome, COMMANDS_TOPIC, EVENTS_TOPIC,
};
use cmdr_log::embedded::{EmbeddedLog, LogConfig};
use cmdr_log::{Log, Record};
use cmdr_processor::RetryPolicy;
use serde_json::Value;
use uuid::Uuid;

/// Partitions the tests create `commands` and `events` with.
pub const TEST_PARTITIONS: u32 = 4;
/// Longest a condition is waited for before the test fails.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// Interval between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A fresh embedded log in a temporary directory, with the topics created;
/// the guard keeps the directory alive.
pub async fn test_log() -> (Arc<dyn Log>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = Arc::new(open_log(dir.path()).await);
    cmdr_processor::sdk::ensure_topics(log.as_ref(), TEST_PARTITIONS)
        .await
        .unwrap();
    (log, dir)
}

/// Opens the embedded log in `dir`.
pub async fn open_log(dir: &std::path::Path) -> EmbeddedLog {
    EmbeddedLog::open(LogConfig::new(dir)).await.unwrap()
}

/// A retry policy with tiny backoffs, for tests.
pub fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts, Duration::from_millis(1)).max_backoff(Duration::from_millis(5))
}

/// The command as the gateway would log it.
pub fn command(action: &str, data: Value, key: Option<&str>) -> Command {
    let Value::Object(data) = data else {
        panic!("data must be an object")
    };
    let req = CommandRequest {
        action: action.into(),
        data,
        key: key.map(String::from),
    };
    Command::from_request(req, cmdr_contract::now_ms(), Default::default()).unwrap()
}

/// The log record of a command.
pub fn command_record(cmd: &Command) -> Record {
    Record::new(Bytes::from(cmd.key.clone().into_bytes()), cmd.to_json())
        .with_header(header::ACTION, Bytes::from(cmd.action.clone().into_bytes()))
}

/// Appends commands in one batch, in order.
pub async fn send_all(log: &dyn Log, cmds: &[Command]) {
    log.append(COMMANDS_TOPIC, cmds.iter().map(command_record).collect())
        .await
        .unwrap();
}

/// Appends one command and returns it.
pub async fn send(log: &dyn Log, action: &str, data: Value, key: Option<&str>) -> Command {
    let cmd = command(action, data, key);
    send_all(log, std::slice::from_ref(&cmd)).await;
    cmd
}

/// Every record of `topic`, partition by partition.
pub async fn read_all(log: &dyn Log, topic: &str) -> Vec<cmdr_log::StoredRecord> {
    let info = log.topic(topic).await.unwrap();
    let mut out = Vec::new();
    for p in info.partitions {
        let mut next = p.start_offset;
        loop {
            let batch = log.read(topic, p.partition, next, 4096).await.unwrap();
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            out.extend(batch);
        }
    }
    out
}

/// Every event, partition by partition, each partition in log order.
pub async fn events(log: &dyn Log) -> Vec<Event> {
    read_all(log, EVENTS_TOPIC)
        .await
        .iter()
        .map(|r| Event::from_json(&r.value).unwrap())
        .collect()
}

/// Outcome events (accepted or rejected) by the command they settle.
pub async fn outcomes(log: &dyn Log) -> HashMap<Uuid, Vec<Event>> {
    let mut by_command: HashMap<Uuid, Vec<Event>> = HashMap::new();
    for e in events(log).await {
        if e.outcome.is_some() {
            by_command.entry(e.parent).or_default().push(e);
        }
    }
    by_command
}

/// The outcome of `command`, waiting for it.
pub async fn outcome_of(log: &dyn Log, command: Uuid) -> Event {
    wait_for_value("the command's outcome", || async {
        outcomes(log)
            .await
            .remove(&command)
            .and_then(|mut v| v.pop())
    })
    .await
}

/// Checks `probe` every few milliseconds until it yields a value; fails the
/// test after [`WAIT_LIMIT`].
pub async fn wait_for_value<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until `n` commands have an outcome.
pub async fn wait_outcomes(log: &dyn Log, n: usize) {
    wait_until(&format!("{n} outcomes"), || async {
        outcomes(log).await.len() >= n
    })
    .await;
}

/// Checks `condition` every few milliseconds until it holds; fails the test
/// after [`WAIT_LIMIT`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether an event is an accepted outcome.
pub fn accepted(e: &Event) -> bool {
    e.outcome == Some(Outcome::Accepted)
}

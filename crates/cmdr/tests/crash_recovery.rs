//! Crash recovery by name: the server is killed with SIGKILL right after a
//! burst of acknowledged commands (the index may be behind, its last commits
//! not durable); after a restart every acknowledged command is listed exactly
//! once, and idempotency records survived with their commands. With the
//! accounts example running, a processor killed while commands are in flight
//! handles each one exactly once after the restart.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use support::{send, Server};

const COMMANDS: usize = 300;
const CONCURRENCY: usize = 16;

#[tokio::test]
async fn index_neither_loses_nor_duplicates_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &[]).await;
    let url = s.at("/commands");
    let mut acked = HashSet::new();
    for chunk in (0..COMMANDS).collect::<Vec<_>>().chunks(CONCURRENCY) {
        let posts = chunk.iter().map(|i| {
            let req = support::client()
                .post(&url)
                .header("idempotency-key", format!("crash-{i}"))
                .json(&json!({"action": "crash-test", "data": {"i": i}, "key": format!("k-{}", i % 7)}));
            send(req)
        });
        for r in futures::future::join_all(posts).await {
            acked.insert(r.expect(202).body["id"].as_str().unwrap().to_string());
        }
    }
    s.crash();

    let s = Server::start(&data, &[]).await;
    let mut listed = Vec::new();
    let mut next = Some(s.at("/commands?action=crash-test&limit=1000&order=asc"));
    while let Some(url) = next {
        let r = send(support::client().get(&url)).await.expect(200);
        listed.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
        next = r.body["next"].as_str().map(|n| s.at(n));
    }
    assert_eq!(
        listed.len(),
        COMMANDS,
        "every command listed once after the crash\n{}",
        s.output()
    );
    assert_eq!(listed.iter().cloned().collect::<HashSet<_>>(), acked);
    // A retry after the crash still returns the first command.
    let r = send(
        support::client()
            .post(s.at("/commands"))
            .header("idempotency-key", "crash-5")
            .json(&json!({"action": "crash-test", "data": {"i": 5}, "key": "k-5"})),
    )
    .await
    .expect(202);
    assert!(acked.contains(r.body["id"].as_str().unwrap()), "{}", r.text);
    s.stop();
}

/// Every page of a listing, following `next` links.
async fn list_all(s: &Server, first: &str) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut next = Some(s.at(first));
    while let Some(url) = next {
        let r = send(support::client().get(&url)).await.expect(200);
        items.extend(r.body["items"].as_array().unwrap().iter().cloned());
        next = r.body["next"].as_str().map(|n| s.at(n));
    }
    items
}

#[tokio::test]
async fn accounts_processor_handles_each_command_once_after_sigkill() {
    const ACCOUNTS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--example", "accounts"];
    let s = Server::start(&data, &args).await;
    let client = support::client();
    for a in 0..ACCOUNTS {
        send(
            client
                .post(s.at("/commands?sync=true"))
                .json(&json!({"action": "open-account", "data": {}, "key": format!("acc-{a}")})),
        )
        .await
        .expect(201);
    }
    // Acknowledged (202) deposits; the server is killed right after the last
    // acknowledgement, typically while the processor still handles some (the
    // test holds whatever the moment: each command settled exactly once).
    let mut acked = HashSet::new();
    for chunk in (0..COMMANDS).collect::<Vec<_>>().chunks(CONCURRENCY) {
        let posts = chunk.iter().map(|i| {
            send(client.post(s.at("/commands")).json(&json!({
                "action": "deposit", "data": {"amount": 1}, "key": format!("acc-{}", i % ACCOUNTS)
            })))
        });
        for r in futures::future::join_all(posts).await {
            acked.insert(r.expect(202).body["id"].as_str().unwrap().to_string());
        }
    }
    s.crash();

    let s = Server::start(&data, &args).await;
    // Bounded polling until no deposit is pending any more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !list_all(&s, "/commands?action=deposit&status=pending&limit=1000")
        .await
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deposits still pending after the restart\n{}",
            s.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted = list_all(&s, "/commands?action=deposit&status=accepted&limit=1000").await;
    assert_eq!(accepted.len(), COMMANDS, "{}", s.output());
    // One `deposited` event per command, none repeated, none missing.
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for a in 0..ACCOUNTS {
        for e in list_all(&s, &format!("/streams/acc-{a}?limit=1000")).await {
            if e["action"] == "deposited" {
                *outcomes
                    .entry(e["parent"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    let repeated: Vec<_> = outcomes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "handled twice: {repeated:?}");
    assert_eq!(outcomes.keys().cloned().collect::<HashSet<_>>(), acked);
    // The read model, rebuilt from the log, agrees.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = send(client.get(s.at("/accounts"))).await.expect(200);
        let total: i64 = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["balance"].as_i64().unwrap())
            .sum();
        if total == COMMANDS as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "balances total {total}, not {COMMANDS}: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop();
}

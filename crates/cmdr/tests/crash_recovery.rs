//! Crash recovery by name: the server is killed with SIGKILL right after a
//! burst of acknowledged commands (the index may be behind, its last commits
//! not durable); after a restart every acknowledged command is listed exactly
//! once, and idempotency records survived with their commands.

mod support;

use std::collections::HashSet;

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
            let req = reqwest::Client::new()
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
        let r = send(reqwest::Client::new().get(&url)).await.expect(200);
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
        reqwest::Client::new()
            .post(s.at("/commands"))
            .header("idempotency-key", "crash-5")
            .json(&json!({"action": "crash-test", "data": {"i": 5}, "key": "k-5"})),
    )
    .await
    .expect(202);
    assert!(acked.contains(r.body["id"].as_str().unwrap()), "{}", r.text);
    s.stop();
}

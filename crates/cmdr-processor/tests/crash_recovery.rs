//! Crash recovery: a processor *process* killed with SIGKILL in the middle of
//! a stream, then restarted, settles every command exactly once.
//!
//! The worker is this test binary itself, re-run with [`WORKER_DIR_ENV`] set:
//! `crash_worker` then runs a processor over the log in that directory,
//! printing `handled <n>` as it goes, until killed (or, with
//! [`WORKER_FINISH_ENV`], until every command is committed).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cmdr_contract::COMMANDS_TOPIC;
use cmdr_log::Log;
use cmdr_processor::{Decision, Processor};
use common::*;
use serde_json::json;

/// Set in a worker's environment: the log directory.
const WORKER_DIR_ENV: &str = "CMDR_TEST_CRASH_WORKER_DIR";
/// Set in a worker's environment to stop once everything is committed.
const WORKER_FINISH_ENV: &str = "CMDR_TEST_CRASH_WORKER_FINISH";
const GROUP: &str = "crashy";
const TOTAL: usize = 3000;
const KEYS: usize = 16;

/// Whether every partition's committed offset of [`GROUP`] is at its end.
async fn all_committed(log: &dyn Log) -> bool {
    let info = log.topic(COMMANDS_TOPIC).await.unwrap();
    for p in info.partitions {
        if log
            .committed(GROUP, COMMANDS_TOPIC, p.partition)
            .await
            .unwrap()
            != Some(p.end_offset)
        {
            return false;
        }
    }
    true
}

/// The worker's body; a no-op unless run as a worker.
#[test]
fn crash_worker() {
    let Ok(dir) = std::env::var(WORKER_DIR_ENV) else {
        return;
    };
    let finish = std::env::var(WORKER_FINISH_ENV).is_ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let log: Arc<dyn Log> = Arc::new(open_log(std::path::Path::new(&dir)).await);
        let handled = Arc::new(AtomicUsize::new(0));
        let count = handled.clone();
        let processor = Processor::builder_shared(log.clone())
            .group(GROUP)
            .command("work", move |cmd, _ctx| {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    // A little work per command, so that a kill lands mid-stream.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    if n.is_multiple_of(100) {
                        // The parent may stop reading; a failed write is no failure here.
                        let _ = writeln!(std::io::stdout(), "handled {n}");
                    }
                    Ok(Decision::accept_one(
                        "worked",
                        json!({ "seq": cmd.data["seq"] }),
                    ))
                }
            })
            .max_in_flight(KEYS)
            .build()
            .unwrap();
        let watcher = log.clone();
        processor
            .run(async move {
                if !finish {
                    return std::future::pending().await;
                }
                wait_until("every command committed", || {
                    all_committed(watcher.as_ref())
                })
                .await;
            })
            .await
            .unwrap();
    });
}

fn spawn_worker(dir: &std::path::Path, finish: bool) -> Child {
    let mut cmd = Process::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "crash_worker", "--nocapture", "--test-threads=1"])
        .env(WORKER_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if finish {
        cmd.env(WORKER_FINISH_ENV, "1");
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

/// Reads the worker's output until it reports `at_least` handled commands.
fn wait_handled(child: &mut Child, at_least: usize) {
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line
            .strip_prefix("handled ")
            .and_then(|n| n.parse::<usize>().ok())
        {
            if n >= at_least {
                return;
            }
        }
    }
    panic!("the worker ended before handling {at_least} commands");
}

#[test]
fn a_processor_process_killed_mid_stream_settles_each_command_once_after_restart() {
    if std::env::var(WORKER_DIR_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cmds: Vec<_> = (0..TOTAL)
        .map(|i| {
            command(
                "work",
                json!({ "seq": i }),
                Some(&format!("key-{}", i % KEYS)),
            )
        })
        .collect();
    rt.block_on(async {
        let log = open_log(dir.path()).await;
        cmdr_processor::sdk::ensure_topics(&log, TEST_PARTITIONS)
            .await
            .unwrap();
        for chunk in cmds.chunks(500) {
            send_all(&log, chunk).await;
        }
        log.sync().await.unwrap();
    });

    for _ in 0..2 {
        let mut worker = spawn_worker(dir.path(), false);
        wait_handled(&mut worker, 500);
        worker.kill().unwrap(); // SIGKILL
        worker.wait().unwrap();
    }
    let settled_before = rt.block_on(async { outcomes(&open_log(dir.path()).await).await.len() });
    assert!(
        settled_before > 0 && settled_before < TOTAL,
        "killed mid-stream ({settled_before} settled)"
    );
    let mut finisher = spawn_worker(dir.path(), true);
    let status = finisher.wait().unwrap();
    assert!(status.success(), "the restarted worker failed: {status}");

    rt.block_on(async {
        let log = open_log(dir.path()).await;
        let by_command = outcomes(&log).await;
        assert_eq!(by_command.len(), TOTAL, "every command settled");
        for cmd in &cmds {
            assert_eq!(
                by_command[&cmd.id].len(),
                1,
                "command {} settled once",
                cmd.id
            );
        }
        assert_eq!(events(&log).await.len(), TOTAL, "no event appended twice");
        // Per-key order survived the crashes too.
        let mut last: std::collections::HashMap<String, i64> = Default::default();
        for e in events(&log).await {
            let seq = e.data["seq"].as_i64().unwrap();
            let previous = last.insert(e.key.clone(), seq).unwrap_or(-1);
            assert!(seq > previous, "events of {} in command order", e.key);
        }
    });
}

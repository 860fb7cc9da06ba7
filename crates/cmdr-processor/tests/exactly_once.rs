//! Exactly-once and ordering: a processor stopped abruptly mid-stream and
//! restarted gives every command exactly one outcome; under concurrent load
//! each key's commands are handled, and their events appended, in order.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cmdr_contract::EVENTS_TOPIC;
use cmdr_log::Log;
use cmdr_processor::{Decision, Processor};
use common::*;
use serde_json::json;

fn counting_processor(log: Arc<dyn Log>) -> Processor {
    Processor::builder_shared(log)
        .group("counter")
        .command("count", |cmd, _ctx| async move {
            tokio::task::yield_now().await;
            Ok(Decision::accept_one(
                "counted",
                json!({ "seq": cmd.data["seq"] }),
            ))
        })
        .max_in_flight(32)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_aborted_mid_stream_and_restarted_settles_each_command_once() {
    let (log, _dir) = test_log().await;
    let total = 4000;
    let cmds: Vec<_> = (0..total)
        .map(|i| {
            command(
                "count",
                json!({ "seq": i / 50 }),
                Some(&format!("key-{}", i % 50)),
            )
        })
        .collect();
    for chunk in cmds.chunks(500) {
        send_all(log.as_ref(), chunk).await;
    }
    let mut settled_at_stops = Vec::new();
    for round in 0..3 {
        // Each run gets its own runtime; dropping it is the abrupt stop: every
        // task of the processor is cancelled wherever it was.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(counting_processor(log.clone()).run(std::future::pending()));
        let target = (round + 1) * total / 10;
        wait_until("some progress", || async {
            outcomes(log.as_ref()).await.len() >= target
        })
        .await;
        tokio::task::spawn_blocking(move || drop(rt)).await.unwrap();
        // Appends handed to the log before the stop still land, as they would
        // have reached the disk before a process died.
        log.sync().await.unwrap();
        settled_at_stops.push(outcomes(log.as_ref()).await.len());
    }
    let task = tokio::spawn(counting_processor(log.clone()).run(std::future::pending()));
    wait_outcomes(log.as_ref(), total).await;
    task.abort();

    let by_command = outcomes(log.as_ref()).await;
    assert_eq!(by_command.len(), total);
    eprintln!("commands settled at each stop: {settled_at_stops:?} of {total}");
    assert!(
        settled_at_stops[0] < total,
        "the first stop came mid-stream"
    );
    for cmd in &cmds {
        assert_eq!(
            by_command[&cmd.id].len(),
            1,
            "command {} has one outcome",
            cmd.id
        );
    }
    assert_eq!(
        events(log.as_ref()).await.len(),
        total,
        "no event was appended twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_under_concurrent_load() {
    let (log, _dir) = test_log().await;
    let (keys, per_key) = (64, 60);
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let last_seq: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, l, n, p) = (running.clone(), last_seq.clone(), now.clone(), peak.clone());
    let processor = Processor::builder_shared(log.clone())
        .group("ordered")
        .command("step", move |cmd, ctx| {
            let (running, last_seq, now, peak) = (r.clone(), l.clone(), n.clone(), p.clone());
            async move {
                assert!(
                    running.lock().unwrap().insert(ctx.key.clone()),
                    "two commands of one key at once"
                );
                let in_flight = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(in_flight, Ordering::SeqCst);
                let seq = cmd.data["seq"].as_i64().unwrap();
                for _ in 0..(seq % 3) {
                    tokio::task::yield_now().await;
                }
                let previous = last_seq.lock().unwrap().insert(ctx.key.clone(), seq);
                assert_eq!(previous.map_or(-1, |s| s), seq - 1, "handled in order");
                now.fetch_sub(1, Ordering::SeqCst);
                running.lock().unwrap().remove(&ctx.key);
                Ok(Decision::accept_one("stepped", json!({ "seq": seq })))
            }
        })
        .build()
        .unwrap();
    let task = tokio::spawn(processor.run(std::future::pending()));
    // Interleave keys, several appends, while the processor runs.
    for seq in 0..per_key {
        let batch: Vec<_> = (0..keys)
            .map(|k| command("step", json!({ "seq": seq }), Some(&format!("acct-{k}"))))
            .collect();
        send_all(log.as_ref(), &batch).await;
    }
    wait_outcomes(log.as_ref(), keys * per_key).await;
    task.abort();

    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for record in read_all(log.as_ref(), EVENTS_TOPIC).await {
        let e = cmdr_contract::Event::from_json(&record.value).unwrap();
        seen.entry(e.key)
            .or_default()
            .push(e.data["seq"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), keys);
    let expected: Vec<i64> = (0..per_key as i64).collect();
    for (key, seqs) in seen {
        assert_eq!(seqs, expected, "events of {key} in command order");
    }
    assert!(
        peak.load(Ordering::SeqCst) > 1,
        "different keys ran concurrently"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_processor_stopped_abruptly_reacts_to_each_event_once() {
    let (log, _dir) = test_log().await;
    let total = 2000;
    // Source events, as a command processor would have appended them.
    let records: Vec<_> = (0..total)
        .map(|i| {
            let cause = command("x", json!({}), Some(&format!("k-{}", i % 20)));
            let event = cmdr_contract::EventDraft::new("ping", json!({ "i": i })).into_event(
                cause.id,
                cause.id,
                &cause.key,
                cmdr_contract::now_ms(),
            );
            cmdr_processor::records::event_record(&event)
        })
        .collect();
    log.append(EVENTS_TOPIC, records).await.unwrap();
    let reactor = |log: Arc<dyn Log>| {
        Processor::builder_shared(log)
            .group("reactor")
            .event("ping", |e, _ctx| async move {
                tokio::task::yield_now().await;
                Ok(vec![cmdr_contract::EventDraft::new(
                    "pong",
                    json!({ "i": e.data["i"] }),
                )])
            })
            .build()
            .unwrap()
    };
    let pongs = |log: Arc<dyn Log>| async move {
        events(log.as_ref())
            .await
            .into_iter()
            .filter(|e| e.action == "pong")
            .collect::<Vec<_>>()
    };
    for round in 1..=2 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(reactor(log.clone()).run(std::future::pending()));
        wait_until("some pongs", || async {
            pongs(log.clone()).await.len() >= round * total / 10
        })
        .await;
        tokio::task::spawn_blocking(move || drop(rt)).await.unwrap();
        log.sync().await.unwrap();
    }
    let task = tokio::spawn(reactor(log.clone()).run(std::future::pending()));
    wait_until("every pong", || async {
        pongs(log.clone()).await.len() >= total
    })
    .await;
    task.abort();

    let mut per_parent: HashMap<uuid::Uuid, usize> = HashMap::new();
    for pong in pongs(log.clone()).await {
        *per_parent.entry(pong.parent).or_default() += 1;
    }
    assert_eq!(per_parent.len(), total);
    assert!(
        per_parent.values().all(|&n| n == 1),
        "each event caused exactly one pong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_partitions_in_a_rebalance_is_fenced_then_rejoins() {
    let (log, _dir) = test_log().await;
    // Keys of both halves of the partitions: the first member keeps 0 and 2
    // when the second joins, the second takes 1 and 3.
    let keys: Vec<String> = {
        let (mut kept, mut moved) = (Vec::new(), Vec::new());
        for i in 0.. {
            let key = format!("key-{i}");
            let p = cmdr_log::partition_for_key(key.as_bytes(), TEST_PARTITIONS);
            let half = if p.is_multiple_of(2) {
                &mut kept
            } else {
                &mut moved
            };
            if half.len() < 3 {
                half.push(key);
            }
            if kept.len() == 3 && moved.len() == 3 {
                break;
            }
        }
        kept.into_iter().chain(moved).collect()
    };
    let mut sent = Vec::new();
    for key in &keys {
        sent.push(send(log.as_ref(), "pay", json!({}), Some(key)).await);
    }

    // The first member takes every command, and holds them until the gate opens.
    let (open, gate) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let first = {
        let started = started.clone();
        Processor::builder_shared(log.clone())
            .group("payments")
            .command("pay", move |_cmd, _ctx| {
                started.fetch_add(1, Ordering::SeqCst);
                let mut gate = gate.clone();
                async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Ok(Decision::accept_one("paid", json!({"by": "first"})))
                }
            })
            .build()
            .unwrap()
    };
    let first = tokio::spawn(first.run(std::future::pending()));
    wait_until("the first member holds every command", || {
        let n = started.load(Ordering::SeqCst);
        async move { n == 6 }
    })
    .await;

    // A second member joins: it takes half the partitions over, from the
    // committed offsets, and settles their commands at once.
    let second = Processor::builder_shared(log.clone())
        .group("payments")
        .command("pay", |_cmd, _ctx| async {
            Ok(Decision::accept_one("paid", json!({"by": "second"})))
        })
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(second.run(async {
        let _ = stopped.await;
    }));
    wait_outcomes(log.as_ref(), 3).await;

    // The first member finishes: its commit of the ranges it lost is
    // refused, so those commands keep the second member's outcome only,
    // and the first member rejoins the group instead of stopping.
    open.send(true).unwrap();
    let outcomes_of = |cmds: Vec<cmdr_contract::Command>| {
        let log = log.clone();
        async move {
            wait_for_value("an outcome for every command", || async {
                let all = outcomes(log.as_ref()).await;
                cmds.iter()
                    .all(|c| all.contains_key(&c.id))
                    .then(|| cmds.iter().map(|c| all[&c.id].clone()).collect::<Vec<_>>())
            })
            .await
        }
    };
    for (cmd, events) in sent.iter().zip(outcomes_of(sent.clone()).await) {
        assert_eq!(events.len(), 1, "{}: {events:?}", cmd.key);
    }
    // Once the second member leaves, the first, still running, takes every
    // partition and settles what comes next, each once.
    drop(stop);
    second.await.unwrap().unwrap();
    assert!(
        !first.is_finished(),
        "the fenced member rejoined and runs on"
    );
    let mut later = Vec::new();
    for key in &keys {
        later.push(send(log.as_ref(), "pay", json!({}), Some(key)).await);
    }
    for (cmd, events) in later.iter().zip(outcomes_of(later.clone()).await) {
        assert_eq!(events.len(), 1, "{}: {events:?}", cmd.key);
        assert_eq!(events[0].data["by"], "first", "{}", cmd.key);
    }
    first.abort();
}

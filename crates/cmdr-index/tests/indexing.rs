//! The indexer against an in-memory log: status derivation, listings and
//! filters, streams, idempotency records, restart and rebuild.

use std::sync::Arc;
use std::time::Duration;

use cmdr_contract::{
    header, Command, CommandRequest, CommandStatus, EventDraft, Meta, Outcome, Rejection,
};
use cmdr_index::{Index, IndexerHandle, Order, Query};
use cmdr_log::memory::MemoryLog as MemLog;
use cmdr_log::{Log, Record};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

async fn log() -> Arc<MemLog> {
    let log = Arc::new(MemLog::new());
    log.create_topic("commands", 2).await.unwrap();
    log.create_topic("events", 2).await.unwrap();
    log
}

/// A new index in a temporary directory, indexing a new log.
async fn indexing() -> (tempfile::TempDir, Arc<MemLog>, Index, IndexerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let log = log().await;
    let index = Index::open(dir.path().join("index.redb")).unwrap();
    let handle = index.spawn_indexer(log.clone()).await.unwrap();
    (dir, log, index, handle)
}

/// The ids of every command `q` lists, following its `next` cursors.
fn every_page(index: &Index, mut q: Query) -> Vec<uuid::Uuid> {
    let mut seen = Vec::new();
    loop {
        let page = index.list_commands(&q).unwrap();
        seen.extend(page.items.iter().map(|v| v.command.id));
        match page.next {
            Some(n) => q.after = Some(n),
            None => return seen,
        }
    }
}

fn command(action: &str, key: Option<&str>) -> Command {
    let req = CommandRequest::from_value(json!({"action": action, "data": {"n": 1}, "key": key}))
        .unwrap();
    Command::from_request(req, cmdr_contract::now_ms(), Meta::new()).unwrap()
}

async fn append_command(log: &MemLog, c: &Command, idem: Option<(&str, &str)>) {
    let mut r = Record::new(c.key.clone(), c.to_json());
    if let Some((k, h)) = idem {
        r = r
            .with_header(header::IDEMPOTENCY_KEY, k.to_string())
            .with_header(header::IDEMPOTENCY_HASH, h.to_string());
    }
    log.append("commands", vec![r]).await.unwrap();
}

async fn append_event(log: &MemLog, e: &cmdr_contract::Event) {
    log.append("events", vec![Record::new(e.key.clone(), e.to_json())])
        .await
        .unwrap();
}

async fn caught_up(index: &Index, log: &MemLog) {
    for topic in ["commands", "events"] {
        for p in log.topic(topic).await.unwrap().partitions {
            assert!(
                index
                    .wait_indexed(topic, p.partition, p.end_offset, WAIT)
                    .await,
                "{topic}/{}",
                p.partition
            );
        }
    }
}

#[tokio::test]
async fn status_follows_outcome_events_in_either_order() {
    let (_dir, log, index, handle) = indexing().await;

    let a = command("open", Some("acc-1"));
    let b = command("open", Some("acc-2"));
    let mut waiter = index.wait_for_outcome(a.id).unwrap();
    append_command(&log, &a, None).await;
    append_command(&log, &b, None).await;
    caught_up(&index, &log).await;
    assert_eq!(
        index.command(a.id).unwrap().unwrap().status,
        CommandStatus::Pending
    );

    let mut ev = EventDraft::new("opened", json!({})).into_event(a.id, a.id, &a.key, 5);
    ev.outcome = Some(Outcome::Accepted);
    append_event(&log, &ev).await;
    tokio::time::timeout(WAIT, waiter.wait())
        .await
        .expect("woken");
    let view = index.command(a.id).unwrap().unwrap();
    assert_eq!(view.status, CommandStatus::Accepted);
    assert_eq!(view.outcome_event, Some(ev.id));
    assert_eq!(index.children(a.id).unwrap().len(), 1);

    // Outcome indexed before its command.
    let c = command("open", Some("acc-3"));
    let rej = Rejection::new("nope", "no").into_event(c.id, &c.key, 6);
    append_event(&log, &rej).await;
    caught_up(&index, &log).await;
    append_command(&log, &c, None).await;
    caught_up(&index, &log).await;
    assert_eq!(
        index.command(c.id).unwrap().unwrap().status,
        CommandStatus::Rejected
    );

    let rejected = index
        .list_commands(&Query {
            status: Some(CommandStatus::Rejected),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(rejected.items.len(), 1);
    let pending = index
        .list_commands(&Query {
            status: Some(CommandStatus::Pending),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(pending.items[0].command.id, b.id);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn first_outcome_wins_duplicates_are_ignored_and_early_outcomes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let log = log().await;
    let index = Index::open(&path).unwrap();
    let handle = index.spawn_indexer(log.clone()).await.unwrap();

    let a = command("open", Some("acc-1"));
    append_command(&log, &a, None).await;
    let mut accepted = EventDraft::new("opened", json!({})).into_event(a.id, a.id, &a.key, 5);
    accepted.outcome = Some(Outcome::Accepted);
    append_event(&log, &accepted).await;
    let late = Rejection::new("late", "too late").into_event(a.id, &a.key, 6);
    append_event(&log, &late).await;
    // The same command and the same event appended again (a retried append).
    append_command(&log, &a, None).await;
    append_event(&log, &accepted).await;
    caught_up(&index, &log).await;
    let view = index.command(a.id).unwrap().unwrap();
    assert_eq!(view.status, CommandStatus::Accepted);
    assert_eq!(view.outcome_event, Some(accepted.id));
    let by_action = index
        .list_commands(&Query {
            action: Some("open".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(by_action.items.len(), 1, "a duplicate is listed once");
    assert_eq!(index.children(a.id).unwrap().len(), 2);

    // An outcome whose command comes after a restart.
    let b = command("open", Some("acc-2"));
    let rejected = Rejection::new("nope", "no").into_event(b.id, &b.key, 7);
    append_event(&log, &rejected).await;
    caught_up(&index, &log).await;
    handle.shutdown().await.unwrap();
    drop(index);

    let index = Index::open(&path).unwrap();
    let handle = index.spawn_indexer(log.clone()).await.unwrap();
    append_command(&log, &b, None).await;
    caught_up(&index, &log).await;
    let view = index.command(b.id).unwrap().unwrap();
    assert_eq!(view.status, CommandStatus::Rejected);
    assert_eq!(view.outcome_event, Some(rejected.id));
    let pending = index
        .list_commands(&Query {
            status: Some(CommandStatus::Pending),
            ..Query::default()
        })
        .unwrap();
    assert!(pending.items.is_empty());
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn listings_paginate_filter_and_survive_restart_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let log = log().await;
    let index = Index::open(&path).unwrap();
    let handle = index.spawn_indexer(log.clone()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..25 {
        let c = command(if i % 2 == 0 { "even" } else { "odd" }, Some("k"));
        append_command(&log, &c, Some((&format!("idem-{i}"), "abcd"))).await;
        let e = EventDraft::new("seen", json!({"i": i})).into_event(c.id, c.id, "stream-1", 1);
        append_event(&log, &e).await;
        ids.push(c.id);
    }
    caught_up(&index, &log).await;

    let seen = every_page(
        &index,
        Query {
            limit: Some(10),
            order: Order::Asc,
            ..Query::default()
        },
    );
    assert_eq!(seen, ids);
    let newest = index
        .list_commands(&Query {
            limit: Some(1),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(newest.items[0].command.id, ids[24]);
    let even = index
        .list_commands(&Query {
            action: Some("even".into()),
            limit: Some(1000),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(even.items.len(), 13);
    assert!(even.next.is_none());
    let stream = index.stream("stream-1", None, Some(20)).unwrap();
    assert_eq!(stream.items.len(), 20);
    let rest = index.stream("stream-1", stream.next, None).unwrap();
    assert_eq!(rest.items.len(), 5);
    let (id, hash) = index.idempotency("idem-3").unwrap().unwrap();
    assert_eq!((id, hash.as_slice()), (ids[3], &b"abcd"[..]));
    handle.shutdown().await.unwrap();
    drop(index);

    // Restart: positions were stored with the data; nothing is indexed twice.
    let index = Index::open(&path).unwrap();
    let handle = index.spawn_indexer(log.clone()).await.unwrap();
    let c = command("late", None);
    append_command(&log, &c, None).await;
    caught_up(&index, &log).await;
    assert_eq!(index.counts().unwrap(), (26, 25));
    handle.shutdown().await.unwrap();
    drop(index);

    // Empty in place and rebuild from the log.
    let index = Index::open(&path).unwrap();
    index.clear().unwrap();
    assert_eq!(index.counts().unwrap(), (0, 0));
    assert_eq!(index.position("commands", 0), 0);
    index.catch_up(log.clone()).await.unwrap();
    assert_eq!(index.counts().unwrap(), (26, 25));
    assert!(index.idempotency("idem-3").unwrap().is_some());
    drop(index);

    // Rebuild from the log after deleting the file.
    Index::wipe(&path).unwrap();
    let index = Index::open(&path).unwrap();
    index.catch_up(log.clone()).await.unwrap();
    assert_eq!(index.counts().unwrap(), (26, 25));
}

/// A command as if posted `ago` before now (its UUID v7 carries the time).
fn command_at(action: &str, ago: Duration) -> Command {
    let mut c = command(action, Some("k"));
    let at = std::time::SystemTime::now() - ago;
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    c.id = uuid::Uuid::new_v7(ts);
    c.timestamp = since.as_millis() as i64;
    c
}

#[tokio::test]
async fn idempotency_keys_lapse_after_their_ttl_and_are_purged() {
    let log = log().await;
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path().join("index.redb")).unwrap();
    let day = Duration::from_secs(86_400);
    index.set_idempotency_ttl(Some(day));
    let handle = index.spawn_indexer(log.clone()).await.unwrap();

    // Bound two days ago: lapsed. Bound an hour ago: live.
    let old = command_at("old", 2 * day);
    let recent = command_at("recent", Duration::from_secs(3600));
    append_command(&log, &old, Some(("lapsed", "h1"))).await;
    append_command(&log, &recent, Some(("live", "h2"))).await;
    caught_up(&index, &log).await;
    assert!(index.idempotency("lapsed").unwrap().is_none());
    let (id, _) = index.idempotency("live").unwrap().unwrap();
    assert_eq!(id, recent.id);

    // A live key stays with its first command; a lapsed one is taken over.
    let retry = command("retry", Some("k"));
    let fresh = command("fresh", Some("k"));
    append_command(&log, &retry, Some(("live", "h3"))).await;
    append_command(&log, &fresh, Some(("lapsed", "h4"))).await;
    caught_up(&index, &log).await;
    assert_eq!(index.idempotency("live").unwrap().unwrap().0, recent.id);
    let (id, hash) = index.idempotency("lapsed").unwrap().unwrap();
    assert_eq!((id, hash.as_slice()), (fresh.id, &b"h4"[..]));

    // Without a TTL nothing lapses.
    index.set_idempotency_ttl(None);
    let ancient = command_at("ancient", 3 * day);
    append_command(&log, &ancient, Some(("forever", "h5"))).await;
    caught_up(&index, &log).await;
    assert_eq!(index.idempotency("forever").unwrap().unwrap().0, ancient.id);
    assert_eq!(index.purge_idempotency(None).unwrap(), (0, None));

    // The purge removes lapsed records only, and scans to the end.
    index.set_idempotency_ttl(Some(day));
    assert!(index.idempotency("forever").unwrap().is_none());
    assert_eq!(index.purge_idempotency(None).unwrap(), (1, None));
    assert_eq!(index.purge_idempotency(None).unwrap(), (0, None));
    assert!(index.idempotency("live").unwrap().is_some());
    assert!(index.idempotency("lapsed").unwrap().is_some());
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_index_ahead_of_the_log_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let before = log().await;
    let index = Index::open(&path).unwrap();
    let handle = index.spawn_indexer(before.clone()).await.unwrap();
    let lost: Vec<Command> = (0..3).map(|_| command("open", Some("acc-1"))).collect();
    for c in &lost {
        append_command(&before, c, None).await;
    }
    caught_up(&index, &before).await;
    handle.shutdown().await.unwrap();
    drop(index);

    // The log came back shorter (its unsynced tail lost in a machine crash),
    // and a new command took one of the lost offsets.
    let after = log().await;
    let kept = command("open", Some("acc-1"));
    append_command(&after, &kept, None).await;
    let index = Index::open(&path).unwrap();
    let handle = index.spawn_indexer(after.clone()).await.unwrap();
    caught_up(&index, &after).await;
    assert!(
        index.command(kept.id).unwrap().is_some(),
        "the new command is indexed"
    );
    for c in &lost {
        assert!(
            index.command(c.id).unwrap().is_none(),
            "a lost command is gone"
        );
    }
    let all = index.list_commands(&Query::default()).unwrap();
    assert_eq!(all.items.len(), 1);
    handle.shutdown().await.unwrap();
}

/// Threads of this process named `name`, by id.
#[cfg(target_os = "linux")]
fn threads_named(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// While it keeps up and nobody waits, the writer runs on a thread at
/// `SCHED_IDLE` and indexes there; a wait brings it back to normal priority
/// and is served.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_indexes_at_background_priority_while_nobody_waits() {
    let (_dir, log, index, handle) = indexing().await;
    caught_up(&index, &log).await;

    // The thread has its name from the start and lowers its own priority
    // first thing: wait for both.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let bg = threads_named("cmdr-indexer-bg");
        // SAFETY: a plain query of a thread's policy by id.
        let policies: Vec<i32> = bg
            .iter()
            .map(|&tid| unsafe { libc::sched_getscheduler(tid) })
            .collect();
        if !bg.is_empty() && policies.iter().all(|&p| p == libc::SCHED_IDLE) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no background indexer thread at SCHED_IDLE: threads {bg:?}, policies {policies:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Indexed without anyone waiting: by the background thread.
    let a = command("open", Some("acc-1"));
    append_command(&log, &a, None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while index.command(a.id).unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "not indexed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A wait is served.
    let b = command("open", Some("acc-2"));
    append_command(&log, &b, None).await;
    caught_up(&index, &log).await;
    assert!(index.command(b.id).unwrap().is_some());
    handle.shutdown().await.unwrap();
}

/// A command sent without a key has its own id as key, and is listed under
/// that key in order among the commands sent with it as their key, though
/// the key index holds no entry for it.
#[tokio::test]
async fn a_command_without_a_key_is_listed_under_its_own_id() {
    let (_dir, log, index, handle) = indexing().await;
    // `before` is older than `own` but sent with `own`'s id as its key.
    let mut before = command("deposit", Some("placeholder"));
    let own = command("open", None);
    let after = [
        command("deposit", Some(&own.key)),
        command("withdraw", Some(&own.key)),
    ];
    before.key = own.key.clone();
    assert_eq!(own.key, own.id.to_string());
    let other = command("open", None);
    for c in [&before, &own, &after[0], &other, &after[1]] {
        append_command(&log, c, None).await;
    }
    caught_up(&index, &log).await;

    let expected = vec![before.id, own.id, after[0].id, after[1].id];
    for (order, limit) in [
        (Order::Asc, 100),
        (Order::Asc, 1),
        (Order::Desc, 2),
        (Order::Desc, 3),
    ] {
        let seen = every_page(
            &index,
            Query {
                key: Some(own.key.clone()),
                order,
                limit: Some(limit),
                ..Query::default()
            },
        );
        let mut want = expected.clone();
        if order == Order::Desc {
            want.reverse();
        }
        assert_eq!(seen, want, "{order:?}, {limit} a page");
    }
    // Together with another filter, and for the other keyless command.
    let opened = index
        .list_commands(&Query {
            key: Some(own.key.clone()),
            action: Some("open".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(opened.items.len(), 1);
    assert_eq!(opened.items[0].command.id, own.id);
    let alone = index
        .list_commands(&Query {
            key: Some(other.key.clone()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(
        alone.items.iter().map(|v| v.command.id).collect::<Vec<_>>(),
        vec![other.id]
    );
    handle.shutdown().await.unwrap();
}

/// Two keys with one 64-bit FNV-1a hash, in different event partitions,
/// with events at the same offset: each keeps its own stream (they shared
/// one `streams` entry when it was keyed by hash and offset alone).
#[tokio::test]
async fn keys_with_one_hash_keep_their_own_streams() {
    // One hash (a unit test of `tables` checks it).
    let (k1, k2) = ("k-n1oRQL6ec_P", "k-zInH0GxQTsJ");
    let n = (2..16)
        .find(|&n| {
            cmdr_log::partition_for_key(k1.as_bytes(), n)
                != cmdr_log::partition_for_key(k2.as_bytes(), n)
        })
        .unwrap();
    let log = Arc::new(MemLog::new());
    log.create_topic("commands", 1).await.unwrap();
    log.create_topic("events", n).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path().join("i.redb")).unwrap();
    let c = command("open", Some(k1));
    let e1 = EventDraft::new("x", json!({})).into_event(c.id, c.id, k1, 1);
    let e2 = EventDraft::new("x", json!({})).into_event(c.id, c.id, k2, 1);
    append_event(&log, &e1).await;
    append_event(&log, &e2).await;
    index.catch_up(log.clone()).await.unwrap();
    for (key, event) in [(k1, &e1), (k2, &e2)] {
        let stream = index.stream(key, None, None).unwrap();
        let ids: Vec<_> = stream.items.iter().map(|e| e.event.id).collect();
        assert_eq!(ids, vec![event.id], "{key}");
    }
}

/// Two outcomes of one command in different event partitions: the one
/// with the smaller id counts, whatever order they are indexed in, so the
/// live index and one rebuilt from the log agree.
#[tokio::test]
async fn of_two_outcomes_the_earliest_by_id_counts_in_any_indexing_order() {
    let live_log = log().await;
    let c = command("open", Some("acct"));
    append_command(&live_log, &c, None).await;
    let mut accepted = EventDraft::new("opened", json!({})).into_event(c.id, c.id, "acct", 2);
    accepted.outcome = Some(Outcome::Accepted);
    let rejected = Rejection::new("exists", "already open").into_event(c.id, "acct", 3);
    assert!(accepted.id < rejected.id);
    let dir = tempfile::tempdir().unwrap();
    // The later outcome indexed first (live), then the earlier one.
    let live = Index::open(dir.path().join("live.redb")).unwrap();
    let handle = live.spawn_indexer(live_log.clone()).await.unwrap();
    append_event(&live_log, &rejected).await;
    caught_up(&live, &live_log).await;
    assert_eq!(
        live.command(c.id).unwrap().unwrap().status,
        CommandStatus::Rejected
    );
    append_event(&live_log, &accepted).await;
    caught_up(&live, &live_log).await;
    let view = live.command(c.id).unwrap().unwrap();
    assert_eq!(
        (view.status, view.outcome_event),
        (CommandStatus::Accepted, Some(accepted.id))
    );
    let accepted_list = every_page(
        &live,
        Query {
            status: Some(CommandStatus::Accepted),
            ..Query::default()
        },
    );
    let rejected_list = every_page(
        &live,
        Query {
            status: Some(CommandStatus::Rejected),
            ..Query::default()
        },
    );
    assert_eq!((accepted_list, rejected_list), (vec![c.id], vec![]));
    handle.shutdown().await.unwrap();
    // Both outcomes before their command (early outcomes), in log order.
    let early = log().await;
    append_event(&early, &rejected).await;
    append_event(&early, &accepted).await;
    append_command(&early, &c, None).await;
    let rebuilt = Index::open(dir.path().join("rebuilt.redb")).unwrap();
    rebuilt.catch_up(early).await.unwrap();
    let view = rebuilt.command(c.id).unwrap().unwrap();
    assert_eq!(
        (view.status, view.outcome_event),
        (CommandStatus::Accepted, Some(accepted.id))
    );
}

/// A commands record that is not a whole command (written by something
/// other than cmdr) is skipped, not indexed to break every read of it.
#[tokio::test]
async fn a_partial_command_record_is_skipped() {
    let (_dir, log, index, handle) = indexing().await;
    let good = command("a", Some("k"));
    append_command(&log, &good, None).await;
    let bad = format!(
        r#"{{"id":"{}","action":"a","key":"k"}}"#,
        uuid::Uuid::now_v7()
    );
    log.append("commands", vec![Record::new("k", bad)])
        .await
        .unwrap();
    let not_object = format!(
        r#"{{"id":"{}","action":"a","key":"k","data":[1],"timestamp":1}}"#,
        uuid::Uuid::now_v7()
    );
    log.append("commands", vec![Record::new("k", not_object)])
        .await
        .unwrap();
    caught_up(&index, &log).await;
    let listed = every_page(&index, Query::default());
    assert_eq!(listed, vec![good.id]);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_damaged_index_file_is_rebuilt_from_the_log() {
    let (dir, log, index, handle) = indexing().await;
    for _ in 0..50 {
        append_command(&log, &command("a", Some("k")), None).await;
    }
    caught_up(&index, &log).await;
    handle.shutdown().await.unwrap();
    drop(index);
    let good = std::fs::read(dir.path().join("index.redb")).unwrap();
    // Damage spread over the file (xorshift positions), many ways.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for trial in 0..40 {
        let mut bytes = good.clone();
        for _ in 0..(1 + trial % 8) * 16 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % bytes.len() as u64) as usize;
            bytes[at] ^= (seed >> 56) as u8 | 1;
        }
        let path = dir.path().join(format!("damaged-{trial}.redb"));
        std::fs::write(&path, bytes).unwrap();
        // Opens (as it was, or wiped) and indexes the whole log, or its
        // indexer stops on the damage and the next open rebuilds it.
        let mut complete = false;
        for _open in 0..2 {
            let index = Index::open(&path).unwrap_or_else(|e| panic!("trial {trial}: {e}"));
            let Ok(handle) = index.spawn_indexer(log.clone()).await else {
                continue;
            };
            complete = true;
            for p in log.topic("commands").await.unwrap().partitions {
                complete &= index
                    .wait_indexed(
                        "commands",
                        p.partition,
                        p.end_offset,
                        Duration::from_secs(5),
                    )
                    .await;
            }
            let _ = handle.shutdown().await;
            if complete {
                break;
            }
        }
        assert!(complete, "trial {trial}: not indexed after a reopen");
    }
    // The mark an indexer leaves when it finds its file damaged: the next
    // open starts the index afresh.
    let path = dir.path().join("index.redb");
    let marker = dir.path().join("index.redb.damaged");
    std::fs::write(&marker, b"").unwrap();
    let index = Index::open(&path).unwrap();
    assert!(!marker.exists());
    assert!(index
        .list_commands(&Query::default())
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn a_page_of_large_commands_ends_early_with_a_cursor() {
    let (_dir, log, index, _handle) = indexing().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let req = CommandRequest::from_value(
            json!({"action": "big", "data": {"i": i, "blob": "x".repeat(500_000)}}),
        )
        .unwrap();
        let c = Command::from_request(req, cmdr_contract::now_ms(), Meta::new()).unwrap();
        append_command(&log, &c, None).await;
        ids.push(c.id);
    }
    caught_up(&index, &log).await;
    let q = Query {
        limit: Some(1000),
        order: Order::Asc,
        ..Query::default()
    };
    let first = index.list_commands(&q).unwrap();
    let bytes = first.items.len() * 500_000;
    assert!(
        (cmdr_index::MAX_PAGE_BYTES..cmdr_index::MAX_PAGE_BYTES + 500_100).contains(&bytes),
        "{} items",
        first.items.len()
    );
    assert!(first.next.is_some());
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(every_page(&index, q), sorted);
}

/// Events logged without a `root` (outside processors may leave it out)
/// whose parents are indexed after them, as from partitions read in
/// another order: each waits for its parent, and once the command is
/// indexed every one has it as root, and the outcome among them settles
/// it. A rebuild from the log agrees.
#[tokio::test]
async fn rootless_events_indexed_before_their_parents_get_the_command_as_root() {
    let (dir, log, index, handle) = indexing().await;
    let c = command("open", Some("acc-9"));
    let rootless = |draft: EventDraft, parent: uuid::Uuid| {
        let mut e = draft.into_event(parent, c.id, &c.key, 7);
        e.root = None;
        e
    };
    let e1 = rootless(EventDraft::new("checked", json!({})), c.id);
    let mut e2 = rootless(EventDraft::new("opened", json!({})), e1.id);
    e2.outcome = Some(Outcome::Accepted);
    let e3 = rootless(EventDraft::new("welcomed", json!({})), e2.id);
    // Children first, the command last.
    for e in [&e3, &e2, &e1] {
        append_event(&log, e).await;
        caught_up(&index, &log).await;
    }
    assert!(index.command(c.id).unwrap().is_none());
    append_command(&log, &c, None).await;
    caught_up(&index, &log).await;
    let check = |index: &Index| {
        for e in [&e1, &e2, &e3] {
            let view = index.event(e.id).unwrap().unwrap();
            assert_eq!(view.event.root, Some(c.id), "root of {}", e.action);
        }
        assert_eq!(index.children(c.id).unwrap().len(), 3);
        let view = index.command(c.id).unwrap().unwrap();
        assert_eq!(view.status, CommandStatus::Accepted);
        assert_eq!(view.outcome_event, Some(e2.id));
    };
    check(&index);
    handle.shutdown().await.unwrap();
    let rebuilt = Index::open(dir.path().join("rebuilt.redb")).unwrap();
    rebuilt.catch_up(log.clone()).await.unwrap();
    check(&rebuilt);
}

/// A command's tree past the page's byte budget is cut, its outcome event
/// kept (it comes last here), and said to be incomplete; a stream page is
/// cut by bytes too, with a cursor.
#[tokio::test]
async fn a_large_causal_tree_is_cut_but_keeps_its_outcome() {
    let (_dir, log, index, handle) = indexing().await;
    let c = command("import", Some("batch-1"));
    append_command(&log, &c, None).await;
    let big = "x".repeat(300_000);
    let mut last = None;
    for i in 0..20 {
        let mut e = EventDraft::new("imported", json!({ "i": i, "pad": big }))
            .into_event(c.id, c.id, &c.key, 9);
        if i == 19 {
            e.outcome = Some(Outcome::Accepted);
            last = Some(e.id);
        }
        append_event(&log, &e).await;
    }
    caught_up(&index, &log).await;
    let tree = index.command_tree(c.id).unwrap().unwrap();
    assert!(!tree.complete);
    assert!(tree.events.len() < 20, "{}", tree.events.len());
    assert_eq!(tree.events.last().map(|e| e.event.id), last);
    assert_eq!(tree.command.status, CommandStatus::Accepted);
    let page = index.stream(&c.key, None, Some(1000)).unwrap();
    assert!(page.items.len() < 20 && page.next.is_some());
    handle.shutdown().await.unwrap();
}

/// A stopped indexer indexes no outcome: its waiters are woken, and no
/// new wait is taken.
#[tokio::test]
async fn waiters_are_woken_when_the_indexer_stops() {
    let (_dir, _log, index, handle) = indexing().await;
    let c = command("open", None);
    let mut waiter = index.wait_for_outcome(c.id).unwrap();
    handle.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, waiter.wait())
        .await
        .expect("woken at the stop");
    assert!(index.wait_for_outcome(c.id).is_none());
}

/// A tree of exactly the most events a command view holds is complete;
/// one more event makes it incomplete.
#[tokio::test]
async fn a_tree_that_just_fits_is_complete() {
    let (_dir, log, index, handle) = indexing().await;
    let c = command("import", Some("batch-2"));
    append_command(&log, &c, None).await;
    let event = || EventDraft::new("imported", json!({})).into_event(c.id, c.id, &c.key, 9);
    let records: Vec<Record> = (0..cmdr_index::MAX_CHILDREN)
        .map(|_| {
            let e = event();
            Record::new(e.key.clone(), e.to_json())
        })
        .collect();
    log.append("events", records).await.unwrap();
    caught_up(&index, &log).await;
    let tree = index.command_tree(c.id).unwrap().unwrap();
    assert_eq!(tree.events.len(), cmdr_index::MAX_CHILDREN);
    assert!(tree.complete);
    append_event(&log, &event()).await;
    caught_up(&index, &log).await;
    assert!(!index.command_tree(c.id).unwrap().unwrap().complete);
    handle.shutdown().await.unwrap();
}

/// Listings filtered by both `action` and `status` list exactly the
/// commands with both, in either order and across pages; a rare
/// combination among more commands than one listing examines comes in one
/// page, not after pages of nothing (the two indexes seek to each other).
#[tokio::test]
async fn action_and_status_listings_seek_through_both_indexes() {
    let (_dir, log, index, handle) = indexing().await;
    let settle = |c: &Command, n: usize| {
        let mut ev = EventDraft::new("done", json!({})).into_event(c.id, c.id, &c.key, 1);
        match n % 3 {
            0 => ev.outcome = Some(Outcome::Accepted),
            1 => ev = Rejection::new("no", "no").into_event(c.id, &c.key, 1),
            _ => return None,
        }
        Some(Record::new(ev.key.clone(), ev.to_json()))
    };
    // A mix: every (action, status) pair, statuses in no order.
    let mut all = Vec::new();
    let (mut commands, mut events) = (Vec::new(), Vec::new());
    for n in 0..300usize {
        let c = command(["a", "b", "c"][n % 3], Some(&format!("k{}", n % 7)));
        commands.push(Record::new(c.key.clone(), c.to_json()));
        let status = match settle(&c, n / 3 + n % 5) {
            Some(r) => {
                events.push(r);
                if (n / 3 + n % 5) % 3 == 0 {
                    CommandStatus::Accepted
                } else {
                    CommandStatus::Rejected
                }
            }
            None => CommandStatus::Pending,
        };
        all.push((c.id, c.action.clone(), status));
    }
    log.append("commands", commands).await.unwrap();
    log.append("events", events).await.unwrap();
    caught_up(&index, &log).await;
    for action in ["a", "b", "c"] {
        for status in [
            CommandStatus::Pending,
            CommandStatus::Accepted,
            CommandStatus::Rejected,
        ] {
            let want: Vec<_> = all
                .iter()
                .filter(|(_, a, s)| a == action && *s == status)
                .map(|(id, _, _)| *id)
                .collect();
            assert!(!want.is_empty());
            for order in [Order::Asc, Order::Desc] {
                let q = Query {
                    action: Some(action.into()),
                    status: Some(status),
                    limit: Some(7),
                    order,
                    ..Query::default()
                };
                let mut got = every_page(&index, q);
                if order == Order::Desc {
                    got.reverse();
                }
                assert_eq!(got, want, "{action} {status:?} {order:?}");
            }
        }
    }

    // Three accepted among more pending commands of the same action than
    // one listing examines.
    let mut rare = Vec::new();
    for batch in 0..(cmdr_index::MAX_SCAN / 500 + 2) {
        let mut commands = Vec::new();
        for i in 0..500 {
            let c = command("common", Some(&format!("k{i}")));
            if (batch, i) == (0, 10) || (batch, i) == (20, 250) || (batch, i) == (41, 499) {
                let mut ev = EventDraft::new("done", json!({})).into_event(c.id, c.id, &c.key, 1);
                ev.outcome = Some(Outcome::Accepted);
                append_event(&log, &ev).await;
                rare.push(c.id);
            }
            commands.push(Record::new(c.key.clone(), c.to_json()));
        }
        log.append("commands", commands).await.unwrap();
    }
    caught_up(&index, &log).await;
    for order in [Order::Asc, Order::Desc] {
        let page = index
            .list_commands(&Query {
                action: Some("common".into()),
                status: Some(CommandStatus::Accepted),
                limit: Some(10),
                order,
                ..Query::default()
            })
            .unwrap();
        let mut got: Vec<_> = page.items.iter().map(|v| v.command.id).collect();
        if order == Order::Desc {
            got.reverse();
        }
        assert_eq!(got, rare, "{order:?}");
        assert!(page.next.is_none(), "one page: {order:?}");
    }
    handle.shutdown().await.unwrap();
}

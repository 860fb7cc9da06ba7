//! The embedded log's basic contract: append, read, reopen, roll, lookups,
//! tail waits and consumer groups.

use std::time::Duration;

use cmdr_log::embedded::{EmbeddedLog, LogConfig};
use cmdr_log::{Log, LogError, OffsetCommit, Record, StartPosition};

/// Small segments and index intervals; a tail cache of a few records, so
/// that reads of all but the latest ones go to the files.
fn config(dir: &tempfile::TempDir) -> LogConfig {
    LogConfig::new(dir.path())
        .segment_bytes(4096)
        .index_interval_bytes(256)
        .tail_cache_bytes(2048)
}

/// An embedded log in `dir` with topics `in` and `out`, one partition each.
async fn in_and_out(dir: &tempfile::TempDir) -> EmbeddedLog {
    let log = EmbeddedLog::open(config(dir)).await.unwrap();
    log.create_topic("in", 1).await.unwrap();
    log.create_topic("out", 1).await.unwrap();
    log
}

/// A commit of `group`'s position `next_offset` in partition 0 of `topic`.
fn commit(group: &str, topic: &str, next_offset: u64) -> OffsetCommit {
    OffsetCommit {
        group: group.into(),
        topic: topic.into(),
        partition: 0,
        next_offset,
        expected: None,
    }
}

/// Files under `dir` this process has open (Linux: `/proc/self/fd`).
fn open_files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// Index files (of any segment of topic `t`) this process has open.
fn index_files_open(dir: &tempfile::TempDir) -> usize {
    let topic = dir.path().canonicalize().unwrap().join("topics/t");
    open_files_under(dir.path())
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x != "log"))
        .filter(|p| p.starts_with(&topic))
        .count()
}

/// The tail cache answers exactly what the files do: the same records,
/// keys, headers (a consumer group's commit header included), timestamps
/// and partitions.
#[tokio::test]
async fn the_tail_cache_answers_what_the_files_do() {
    let dir = tempfile::tempdir().unwrap();
    let cached = || LogConfig::new(dir.path()).tail_cache_bytes(1 << 20);
    let log = EmbeddedLog::open(cached()).await.unwrap();
    log.create_topic("t", 3).await.unwrap();
    log.create_topic("in", 1).await.unwrap();
    for i in 0..60u64 {
        let mut rec = Record::new(format!("k{}", i % 5), format!("value-{i}"))
            .with_header("h", format!("header-{i}"));
        if i % 3 == 0 {
            rec.key = None;
        }
        if i % 4 == 0 {
            rec = rec.with_timestamp(1_000 + i as i64);
        }
        if i % 10 == 0 {
            let c = OffsetCommit {
                group: "g".into(),
                topic: "in".into(),
                partition: 0,
                next_offset: i,
                expected: None,
            };
            log.append_with_commit("t", vec![rec, Record::new("k1", "more")], c)
                .await
                .unwrap();
        } else {
            log.append("t", vec![rec]).await.unwrap();
        }
    }
    let read_all = |log: EmbeddedLog| async move {
        let mut all = Vec::new();
        for p in 0..3 {
            all.push(log.read("t", p, 0, 1000).await.unwrap());
        }
        all
    };
    let from_memory = read_all(log.clone()).await;
    assert_eq!(from_memory.iter().map(Vec::len).sum::<usize>(), 66);
    assert!(from_memory
        .iter()
        .flatten()
        .any(|r| r.headers.iter().any(|h| h.name != "h")));
    drop(log);
    let reopened = EmbeddedLog::open(cached()).await.unwrap();
    assert_eq!(from_memory, read_all(reopened).await);
}

#[tokio::test]
async fn appends_read_back_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    log.create_topic("t", 1).await.unwrap();
    for i in 0..500u64 {
        let rec = Record::new(format!("k{}", i % 7), format!("value-{i}"))
            .with_timestamp(1000 + i as i64);
        let at = log.append("t", vec![rec]).await.unwrap();
        assert_eq!(at[0].offset, i);
    }
    let all = log.read("t", 0, 0, 10_000).await.unwrap();
    assert_eq!(all.len(), 500);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, r)| r.offset == i as u64 && r.value == format!("value-{i}")));
    let mid = log.read("t", 0, 321, 5).await.unwrap();
    assert_eq!(
        mid.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [321, 322, 323, 324, 325]
    );
    assert!(
        log.read("t", 0, 500, 10).await.unwrap().is_empty(),
        "reading at the end is empty"
    );
    assert!(
        log.read("t", 0, 9999, 10).await.unwrap().is_empty(),
        "reading past the end is empty"
    );
    assert_eq!(log.offset_for_timestamp("t", 0, 1250).await.unwrap(), 250);
    assert_eq!(log.offset_for_timestamp("t", 0, 0).await.unwrap(), 0);
    assert_eq!(log.offset_for_timestamp("t", 0, 99_999).await.unwrap(), 500);
    // A sealed segment holds one file descriptor, its records: the index
    // files are only open while the segment is active.
    assert_eq!(
        index_files_open(&dir),
        2,
        "{:?}",
        open_files_under(dir.path())
    );
    drop(log);

    let segments = std::fs::read_dir(dir.path().join("topics/t/0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert!(segments > 3, "the log rolled segments ({segments})");

    // Index files that must be rebuilt at open (they are not synced): the
    // sealed segments still end up holding one descriptor each.
    for e in std::fs::read_dir(dir.path().join("topics/t/0")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x != "log") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    assert_eq!(
        index_files_open(&dir),
        2,
        "{:?}",
        open_files_under(dir.path())
    );
    assert!(log.truncations().is_empty());
    let info = log.topic("t").await.unwrap();
    assert_eq!(info.partitions[0].end_offset, 500);
    let again = log.read("t", 0, 0, 10_000).await.unwrap();
    assert_eq!(again, all);
    let at = log
        .append("t", vec![Record::new("k", "after")])
        .await
        .unwrap();
    assert_eq!(at[0].offset, 500);
}

#[tokio::test]
async fn typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(&dir).max_record_bytes(1000))
        .await
        .unwrap();
    assert!(matches!(
        log.append("nope", vec![Record::new("k", "v")]).await,
        Err(LogError::UnknownTopic(_))
    ));
    // A record posing as one of the log's own offset commits.
    log.create_topic("own", 1).await.unwrap();
    let forged = Record::new("k", "v").with_header(
        "cmdr.log.commit",
        r#"{"group":"g","topic":"own","partition":0,"next_offset":42,"seq":1000}"#,
    );
    assert!(matches!(
        log.append("own", vec![forged]).await,
        Err(LogError::ReservedHeader(_))
    ));
    assert_eq!(log.committed("g", "own", 0).await.unwrap(), None);
    assert!(matches!(
        log.create_topic("bad/name", 1).await,
        Err(LogError::InvalidTopicName(_))
    ));
    log.create_topic("t", 2).await.unwrap();
    let big = Record::new("k", vec![0u8; 2000]);
    assert!(matches!(
        log.append("t", vec![big]).await,
        Err(LogError::RecordTooLarge { .. })
    ));
    assert!(matches!(
        log.read("t", 5, 0, 1).await,
        Err(LogError::UnknownPartition { .. })
    ));
    // A record that fits alone but not with the commit header an append with
    // a commit adds to it is refused too, never written unreadable.
    let fits_alone = |len| Record::new("k", vec![b'x'; len]);
    let mut len = 900;
    while cmdr_log::embedded::format::encoded_len(Some(b"k"), &[], &vec![b'x'; len + 1]) <= 1000 {
        len += 1;
    }
    let p = log.append("t", vec![fits_alone(len)]).await.unwrap()[0].partition;
    let commit = OffsetCommit {
        group: "a-processor-with-a-long-name".repeat(3),
        topic: "t".into(),
        partition: 0,
        next_offset: 1,
        expected: None,
    };
    assert!(matches!(
        log.append_with_commit("t", vec![fits_alone(len)], commit.clone())
            .await,
        Err(LogError::RecordTooLarge { .. })
    ));
    let small = Record::new("k", "v");
    log.append_with_commit("t", vec![fits_alone(len - 200), small], commit)
        .await
        .unwrap();
    let all = log.read("t", p, 0, 100).await.unwrap();
    assert_eq!(all.len(), 3, "every acknowledged record reads back");
}

#[tokio::test]
async fn keys_keep_their_partition_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    log.create_topic("t", 4).await.unwrap();
    let batch: Vec<Record> = (0..200)
        .map(|i| Record::new(format!("key-{}", i % 10), format!("{i}")))
        .collect();
    let at = log.append("t", batch).await.unwrap();
    for key in 0..10 {
        let parts: std::collections::HashSet<u32> = at
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 10 == key)
            .map(|(_, a)| a.partition)
            .collect();
        assert_eq!(parts.len(), 1);
    }
    let info = log.topic("t").await.unwrap();
    assert_eq!(
        info.partitions.iter().map(|p| p.end_offset).sum::<u64>(),
        200
    );
}

#[tokio::test]
async fn tail_waiters_wake_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    log.create_topic("t", 1).await.unwrap();
    let waiter = {
        let log = log.clone();
        tokio::spawn(async move { log.wait_for("t", 0, 0).await })
    };
    tokio::task::yield_now().await;
    log.append("t", vec![Record::new("k", "v")]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn consumer_group_shares_partitions_and_resumes_from_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    log.create_topic("t", 4).await.unwrap();
    let batch: Vec<Record> = (0..100)
        .map(|i| Record::new(format!("key-{i}"), format!("{i}")))
        .collect();
    log.append("t", batch).await.unwrap();

    let mut a = log
        .join_group("g", "t", StartPosition::Earliest)
        .await
        .unwrap();
    let mut b = log
        .join_group("g", "t", StartPosition::Earliest)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for member in [&mut a, &mut b] {
        let recs = member.poll(1000).await.unwrap();
        assert_eq!(member.assignment().len(), 2);
        for r in &recs {
            member.commit(r.partition, r.offset + 1).await.unwrap();
        }
        seen.extend(recs.into_iter().map(|r| (r.partition, r.offset)));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 100);
    drop((a, b));
    drop(log);

    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    log.append("t", vec![Record::new("new", "x")])
        .await
        .unwrap();
    let mut c = log
        .join_group("g", "t", StartPosition::Earliest)
        .await
        .unwrap();
    let recs = c.poll(1000).await.unwrap();
    assert_eq!(recs.len(), 1, "resumes after its commits");
    assert_eq!(recs[0].value, "x");
}

#[tokio::test]
async fn atomic_commit_survives_reopen_without_a_group_file_write() {
    let dir = tempfile::tempdir().unwrap();
    let log = in_and_out(&dir).await;
    let commit = commit("proc", "in", 7);
    log.append_with_commit("out", vec![Record::new("k", "result")], commit)
        .await
        .unwrap();
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(7));
    // Simulate a crash: take the files as they are on disk now, without the
    // group file (which is written lazily), and open that copy.
    let crashed = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), crashed.path(), &|p| {
        !p.ends_with("groups/proc.json") && !p.ends_with("LOCK")
    });
    drop(log);
    let log = EmbeddedLog::open(config(&crashed)).await.unwrap();
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(7));
}

#[tokio::test]
async fn start_positions() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    log.create_topic("t", 1).await.unwrap();
    let batch: Vec<Record> = (0..10)
        .map(|i| Record::new("k", format!("{i}")).with_timestamp(100 + i))
        .collect();
    log.append("t", batch).await.unwrap();
    let mut latest = log
        .join_group("g1", "t", StartPosition::Latest)
        .await
        .unwrap();
    let mut at_offset = log
        .join_group("g2", "t", StartPosition::Offset(4))
        .await
        .unwrap();
    let mut at_time = log
        .join_group("g3", "t", StartPosition::Timestamp(107))
        .await
        .unwrap();
    assert_eq!(at_offset.poll(100).await.unwrap()[0].offset, 4);
    assert_eq!(at_time.poll(100).await.unwrap()[0].offset, 7);
    log.append("t", vec![Record::new("k", "new")])
        .await
        .unwrap();
    assert_eq!(latest.poll(100).await.unwrap()[0].offset, 10);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    assert!(matches!(
        EmbeddedLog::open(config(&dir)).await,
        Err(LogError::Locked(_))
    ));
    drop(log);
}

/// Copies `from` into `to`, keeping files for which `keep` is true.
fn copy_tree(
    from: &std::path::Path,
    to: &std::path::Path,
    keep: &dyn Fn(&std::path::Path) -> bool,
) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dst = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&path, &dst, keep);
        } else if keep(&path) {
            std::fs::copy(&path, &dst).unwrap();
        }
    }
}

/// Two members handling one range: the second commit of it is fenced and
/// appends nothing, whichever path (with a batch or offset only) it takes.
async fn fencing_on(log: &dyn Log) {
    log.create_topic("in", 1).await.unwrap();
    log.create_topic("out", 1).await.unwrap();
    let commit = |expected: Option<u64>, next_offset: u64| OffsetCommit {
        group: "proc".into(),
        topic: "in".into(),
        partition: 0,
        next_offset,
        expected,
    };
    let out = |v: &str| vec![Record::new("k", v.to_string())];
    log.append_with_commit("out", out("first"), commit(Some(0), 5))
        .await
        .unwrap();
    // Another member started from offset 0 before that commit landed.
    let late = log
        .append_with_commit("out", out("again"), commit(Some(0), 5))
        .await;
    assert!(
        matches!(
            late,
            Err(LogError::Fenced {
                expected: 0,
                committed: 5,
                ..
            })
        ),
        "{late:?}"
    );
    assert!(matches!(
        log.commit(commit(Some(3), 9)).await,
        Err(LogError::Fenced { .. })
    ));
    assert_eq!(log.topic("out").await.unwrap().partitions[0].end_offset, 1);
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(5));
    // The member that holds the range goes on; unconditional commits pass.
    log.append_with_commit("out", out("next"), commit(Some(5), 8))
        .await
        .unwrap();
    log.commit(commit(Some(8), 9)).await.unwrap();
    log.commit(commit(None, 2)).await.unwrap();
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(2));
}

#[tokio::test]
async fn a_commit_from_a_fenced_member_is_refused_with_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedLog::open(config(&dir)).await.unwrap();
    fencing_on(&embedded).await;
    fencing_on(&cmdr_log::memory::MemoryLog::new()).await;
}

/// A member that stops waiting for its commit (its future dropped while the
/// batch is with the writer) keeps the range reserved until the writer is
/// done with it: a second commit of the same range is fenced, not appended
/// beside the first.
#[tokio::test]
async fn a_commit_whose_caller_gave_up_still_fences_the_range() {
    use futures::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let log = in_and_out(&dir).await;
    let commit = OffsetCommit {
        group: "proc".into(),
        topic: "in".into(),
        partition: 0,
        next_offset: 5,
        expected: Some(0),
    };
    let first = log.append_with_commit("out", vec![Record::new("k", "first")], commit.clone());
    // One poll hands the batch to the writer; the caller then gives up.
    let done = first.now_or_never();
    let second = log
        .append_with_commit("out", vec![Record::new("k", "again")], commit)
        .await;
    assert!(
        matches!(second, Err(LogError::Fenced { .. })),
        "{second:?} (first: {done:?})"
    );
    log.sync().await.unwrap();
    assert_eq!(log.topic("out").await.unwrap().partitions[0].end_offset, 1);
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(5));
}

/// Lowering `max_record_bytes` between runs limits new appends only: the
/// records written under the old limit are read and recovered as they are.
#[tokio::test]
async fn a_lower_record_limit_keeps_the_larger_records_already_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = cmdr_log::embedded::EmbeddedLog::open(cmdr_log::embedded::LogConfig::new(dir.path()))
        .await
        .unwrap();
    log.create_topic("t", 1).await.unwrap();
    log.append("t", vec![Record::new("k", vec![1u8; 10_000])])
        .await
        .unwrap();
    log.append("t", vec![Record::new("k", "small")])
        .await
        .unwrap();
    drop(log);
    let config = cmdr_log::embedded::LogConfig::new(dir.path()).max_record_bytes(4096);
    let log = cmdr_log::embedded::EmbeddedLog::open(config).await.unwrap();
    assert!(log.truncations().is_empty(), "{:?}", log.truncations());
    assert_eq!(log.topic("t").await.unwrap().partitions[0].end_offset, 2);
    let read = log.read("t", 0, 0, 10).await.unwrap();
    assert_eq!(read[0].value.len(), 10_000);
    // New appends obey the new limit.
    let big = log
        .append("t", vec![Record::new("k", vec![1u8; 10_000])])
        .await;
    assert!(
        matches!(big, Err(cmdr_log::LogError::RecordTooLarge { .. })),
        "{big:?}"
    );
}

/// A topic whose metadata says it has no partitions is refused at open,
/// not a writer that panics on the first append.
#[tokio::test]
async fn a_topic_with_zero_partitions_in_its_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = cmdr_log::embedded::EmbeddedLog::open(cmdr_log::embedded::LogConfig::new(dir.path()))
        .await
        .unwrap();
    log.create_topic("t", 1).await.unwrap();
    drop(log);
    std::fs::write(
        dir.path().join("topics/t/topic.json"),
        br#"{"partitions":0,"format":1}"#,
    )
    .unwrap();
    let opened =
        cmdr_log::embedded::EmbeddedLog::open(cmdr_log::embedded::LogConfig::new(dir.path())).await;
    assert!(
        matches!(&opened, Err(cmdr_log::LogError::Corrupt { reason, .. }) if reason.contains("at least one partition")),
        "{:?}",
        opened.as_ref().err()
    );
}

/// A durable commit back to an earlier offset (a group reset, for a replay)
/// stays after a reopen: the older commit still in a header of the active
/// segment does not win because its offset is higher. A crash copy taken
/// before the reset keeps the header commit.
#[tokio::test]
async fn a_commit_back_to_an_earlier_offset_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = in_and_out(&dir).await;
    let at = |next_offset| commit("proc", "in", next_offset);
    log.append_with_commit("out", vec![Record::new("k", "result")], at(8))
        .await
        .unwrap();
    let before_reset = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), before_reset.path(), &|p| !p.ends_with("LOCK"));
    log.commit(at(2)).await.unwrap();
    log.sync().await.unwrap();
    drop(log);
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(2));
    // Later header commits still move it on, after another reopen too.
    log.append_with_commit("out", vec![Record::new("k", "again")], at(3))
        .await
        .unwrap();
    drop(log);
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(3));
    drop(log);
    let log = EmbeddedLog::open(config(&before_reset)).await.unwrap();
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(8));
}

/// One append may not hold more than a round can write (the records here
/// share one buffer, so the test holds 7 MiB, not a gigabyte): refused
/// whole, nothing written.
#[tokio::test]
async fn an_append_larger_than_a_round_may_write_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    log.create_topic("t", 1).await.unwrap();
    let value = bytes::Bytes::from(vec![0u8; 7 << 20]);
    let n = cmdr_log::embedded::MAX_BATCH_BYTES / (7 << 20) + 1;
    let records: Vec<Record> = (0..n).map(|_| Record::new("k", value.clone())).collect();
    let refused = log.append("t", records).await;
    assert!(
        matches!(refused, Err(LogError::BatchTooLarge { .. })),
        "{refused:?}"
    );
    assert_eq!(log.topic("t").await.unwrap().partitions[0].end_offset, 0);
}

/// A commit naming a topic that is not a valid name is refused with its
/// batch: recovery reads back only commit headers with valid names, so it
/// would be acknowledged and then lost at the next open.
#[tokio::test]
async fn a_commit_naming_an_invalid_topic_is_refused_with_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = in_and_out(&dir).await;
    let bad = commit("proc", "in put", 7);
    let appended = log
        .append_with_commit("out", vec![Record::new("k", "v")], bad.clone())
        .await;
    assert!(
        matches!(&appended, Err(LogError::InvalidTopicName(t)) if t == "in put"),
        "{appended:?}"
    );
    assert_eq!(log.topic("out").await.unwrap().partitions[0].end_offset, 0);
    assert!(matches!(
        log.commit(bad).await,
        Err(LogError::InvalidTopicName(_))
    ));
    assert_eq!(log.committed("proc", "in put", 0).await.unwrap(), None);
}

/// A topic written in a newer log format is refused at open, not taken for
/// a torn tail and cut.
#[tokio::test]
async fn a_topic_in_a_newer_format_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = in_and_out(&dir).await;
    log.append("in", vec![Record::new("k", "v")]).await.unwrap();
    drop(log);
    let meta = dir.path().join("topics/in/topic.json");
    std::fs::write(&meta, br#"{"partitions":1,"format":2}"#).unwrap();
    let opened = EmbeddedLog::open(config(&dir)).await;
    assert!(
        matches!(&opened, Err(LogError::Corrupt { reason, .. }) if reason.contains("newer")),
        "{:?}",
        opened.as_ref().err()
    );
    // Back to this format: the record is still there.
    std::fs::write(&meta, br#"{"partitions":1,"format":1}"#).unwrap();
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    assert_eq!(log.topic("in").await.unwrap().partitions[0].end_offset, 1);
}

/// A durable commit whose group file cannot be written fails and leaves
/// the committed offset as it was, even when atomic commits of the same
/// partition land while it fails: it never moves back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_durable_commit_never_moves_a_concurrent_commit_back() {
    let dir = tempfile::tempdir().unwrap();
    // Segments large enough not to roll: a roll writes the group files too.
    let log = EmbeddedLog::open(LogConfig::new(dir.path()).max_linger(Duration::ZERO))
        .await
        .unwrap();
    log.create_topic("out", 1).await.unwrap();
    // Every write of group g's file fails: its temporary file is a folder.
    std::fs::create_dir_all(dir.path().join("groups/.g.json.tmp")).unwrap();
    let at = |next_offset| commit("g", "in", next_offset);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = {
        let (log, stop) = (log.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if log.commit(at(1)).await.is_err() {
                    failed += 1;
                }
            }
            failed
        })
    };
    for i in 2..1000u64 {
        log.append_with_commit("out", vec![Record::new("k", "v")], at(i))
            .await
            .unwrap();
        for _ in 0..10 {
            let now = log.committed("g", "in", 0).await.unwrap();
            assert_eq!(now, Some(i), "acknowledged commit {i} moved back");
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(failing.await.unwrap() > 0, "no durable commit was tried");
}

/// Appends queued together that exceed a round's byte budget are split
/// over several rounds (the carry path: an append taken off the queue that
/// does not fit waits for the next round), and every one is answered and
/// written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_beyond_a_rounds_budget_wait_for_the_next_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    // Three records a round, about.
    c.max_round_bytes = 1024;
    let log = EmbeddedLog::open(c).await.unwrap();
    log.create_topic("in", 1).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let value = format!("{i:04}-{}", "x".repeat(300));
            log.append("in", vec![Record::new(format!("k{}", i % 4), value)])
                .await
                .unwrap()
        }));
    }
    let done = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks))
        .await
        .expect("every append answered");
    assert_eq!(done.len(), 200);
    let mut seen = std::collections::HashSet::new();
    let mut next = 0;
    while next < 200 {
        for r in log.read("in", 0, next, 1000).await.unwrap() {
            assert!(seen.insert(r.value[..4].to_vec()), "record twice");
            next = r.offset + 1;
        }
    }
    assert_eq!(seen.len(), 200);
}

/// A group file that cannot be written makes a sync fail, but the records
/// are on disk: appends go on, and the commit is written once it can be.
#[tokio::test]
async fn a_group_file_that_cannot_be_written_does_not_stop_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(LogConfig::new(dir.path())).await.unwrap();
    log.create_topic("out", 1).await.unwrap();
    let blocker = dir.path().join("groups/.g.json.tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let at = |next_offset| commit("g", "in", next_offset);
    log.append_with_commit("out", vec![Record::new("k", "v")], at(1))
        .await
        .unwrap();
    assert!(log.sync().await.is_err());
    log.append("out", vec![Record::new("k", "w")])
        .await
        .unwrap();
    std::fs::remove_dir(&blocker).unwrap();
    log.sync().await.unwrap();
    assert!(dir.path().join("groups/g.json").exists());
    assert_eq!(log.committed("g", "in", 0).await.unwrap(), Some(1));
}

/// The writer counts its rounds, records, bytes and syncs: one batch over
/// two partitions is one round with a sync of each.
#[tokio::test]
async fn write_stats_count_rounds_records_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(&dir)).await.unwrap();
    log.create_topic("t", 2).await.unwrap();
    assert_eq!(log.write_stats("t"), Some(cmdr_log::WriteStats::default()));
    assert_eq!(log.write_stats("missing"), None);
    let at = log
        .append(
            "t",
            vec![
                Record::new("a", "1"),
                Record::new("b", "2"),
                Record::new("a", "3"),
            ],
        )
        .await
        .unwrap();
    let touched: std::collections::HashSet<u32> = at.iter().map(|a| a.partition).collect();
    let stats = log.write_stats("t").unwrap();
    assert_eq!((stats.rounds, stats.records), (1, 3));
    assert_eq!(stats.syncs, touched.len() as u64);
    assert!(
        stats.bytes > 3 && stats.sync_time > Duration::ZERO,
        "{stats:?}"
    );
    log.append("t", vec![Record::new("a", "4")]).await.unwrap();
    let later = log.write_stats("t").unwrap();
    assert_eq!((later.rounds, later.records), (2, 4));
    assert!(later.bytes > stats.bytes && later.syncs > stats.syncs);
}

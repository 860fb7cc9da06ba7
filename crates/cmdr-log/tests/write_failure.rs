//! Writes that fail, for real: the process's file size limit
//! (`RLIMIT_FSIZE`) is lowered below what a round needs, and `pwrite` fails
//! with `EFBIG`. The limit is per process, so these tests have a binary of
//! their own and take turns ([`LIMIT`]).
//!
//! - A round whose records cannot be written is undone and acknowledges
//!   nothing: no record of it is visible or survives a reopen, its offset
//!   commit is not recorded, and its commit reservation ends before its
//!   caller hears, so the same commit can be retried at once.
//! - A round whose records are written but whose zeros ahead (the
//!   segment's preallocation) cannot be is acknowledged: the zeros are only
//!   an optimisation.

use std::path::{Path, PathBuf};

use cmdr_log::embedded::{EmbeddedLog, LogConfig};
use cmdr_log::{Log, LogError, OffsetCommit, Record};

/// The one segment of partition 0 of `topic`.
fn segment(dir: &Path, topic: &str) -> PathBuf {
    let part = dir.join("topics").join(topic).join("0");
    std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap()
}

/// Held by the test that lowers the file size limit.
static LIMIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Ignores SIGXFSZ, which the kernel sends past the limit and which would
/// end the process: the write then fails with EFBIG instead.
fn ignore_sigxfsz() {
    // SAFETY: sets this process's disposition of one signal.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// Sets the soft limit on the size of files this process writes.
fn limit_file_size(soft: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a stack value we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = soft.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

#[tokio::test]
async fn a_failed_round_is_undone_and_its_commit_can_be_retried_at_once() {
    let _turn = LIMIT.lock().await;
    ignore_sigxfsz();
    let dir = tempfile::tempdir().unwrap();
    // No zeros ahead: the segment file is exactly its records.
    let config = || LogConfig::new(dir.path()).preallocate_bytes(0);
    let log = EmbeddedLog::open(config()).await.unwrap();
    log.create_topic("in", 1).await.unwrap();
    log.create_topic("out", 1).await.unwrap();
    log.append("out", vec![Record::new("k", "before")])
        .await
        .unwrap();
    let seg = segment(dir.path(), "out");
    let len = std::fs::metadata(&seg).unwrap().len();

    let commit = OffsetCommit {
        group: "proc".into(),
        topic: "in".into(),
        partition: 0,
        next_offset: 3,
        expected: Some(0),
    };
    limit_file_size(len + 1024);
    let big = Record::new("k", vec![b'x'; 8192]);
    let failed = log
        .append_with_commit("out", vec![big], commit.clone())
        .await;
    assert!(matches!(failed, Err(LogError::Closed(_))), "{failed:?}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len, "undone");
    assert_eq!(log.failure(), None, "an undone round leaves the log usable");
    assert_eq!(log.topic("out").await.unwrap().partitions[0].end_offset, 1);
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), None);

    // The same commit at once, with a batch that fits: not fenced.
    let at = log
        .append_with_commit("out", vec![Record::new("k", "retried")], commit)
        .await
        .unwrap();
    assert_eq!(at[0].offset, 1);
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(3));
    limit_file_size(libc::RLIM_INFINITY);

    drop(log);
    let log = EmbeddedLog::open(config()).await.unwrap();
    assert!(log.truncations().is_empty(), "{:?}", log.truncations());
    let back = log.read("out", 0, 0, 10).await.unwrap();
    let values: Vec<&[u8]> = back.iter().map(|r| &r.value[..]).collect();
    assert_eq!(values, [&b"before"[..], &b"retried"[..]]);
    assert_eq!(log.committed("proc", "in", 0).await.unwrap(), Some(3));
}

#[tokio::test]
async fn a_round_whose_zeros_ahead_cannot_be_written_is_acknowledged() {
    const AHEAD: u64 = 64 * 1024;
    let _turn = LIMIT.lock().await;
    ignore_sigxfsz();
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig::new(dir.path()).preallocate_bytes(AHEAD);
    let log = EmbeddedLog::open(config()).await.unwrap();
    log.create_topic("out", 1).await.unwrap();
    log.append("out", vec![Record::new("k", "first")])
        .await
        .unwrap();
    let seg = segment(dir.path(), "out");
    let allocated = std::fs::metadata(&seg).unwrap().len();

    // Room for records up to the zeros already there and a little more,
    // not for the next eighth of zeros.
    limit_file_size(allocated + 1024);
    let mut written = 1;
    for i in 0..20 {
        log.append("out", vec![Record::new("k", format!("record {i}"))])
            .await
            .unwrap();
        written += 1;
    }
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(len <= allocated + 1024, "{len} > {allocated} + 1024");
    limit_file_size(libc::RLIM_INFINITY);

    drop(log);
    let log = EmbeddedLog::open(config()).await.unwrap();
    assert!(log.truncations().is_empty(), "{:?}", log.truncations());
    assert_eq!(log.read("out", 0, 0, 100).await.unwrap().len(), written);
}

//! The embedded log's online backup ([`crate::Log::backup`]): its files
//! as they are durable at one instant, listed while the writers wait.
//!
//! The listing is taken with the log frozen between two rounds (the
//! offset store's gate, which every writer holds while it publishes a
//! round): every partition of every topic ends at a round's end, and the
//! group offsets are exactly those of the rounds listed, commits carried
//! in batch headers included. It takes what is in memory only (segment
//! lists and durable sizes, group offsets), so writers wait microseconds
//! (milliseconds for tens of thousands of segments); the files are read
//! afterwards.
//!
//! Sealed segments never change again, so they are copied whole, with
//! their index files (which a restore checks and rebuilds if they are
//! off). An active segment is copied up to its durable end, never its
//! preallocated zeros; its index files are left out (opening a log always
//! rebuilds the active segment's). A roll while the backup is copied
//! changes nothing: the segment that was active is copied up to the end
//! listed, and the new one is not in the backup.

use std::sync::Arc;

use super::segment::{self, Segment};
use super::EmbeddedLog;
use crate::backup::{Backup, BackupFile, BackupSource};
use crate::{LogError, Result};

/// A segment as listed: its durable size then, whether it was sealed.
struct Listed {
    topic: usize,
    partition: u32,
    segment: Arc<Segment>,
    len: u64,
    sealed: bool,
}

impl EmbeddedLog {
    /// The backup's files (see the module documentation and
    /// [`crate::backup`]).
    pub(super) fn backup_files(&self) -> Result<Backup> {
        let (handles, groups, topics, listed) = {
            let _frozen = self.inner.offsets.frozen();
            let mut handles = self.handles();
            handles.sort_by(|a, b| a.name.cmp(&b.name));
            let groups = self.inner.offsets.snapshot();
            let topics: Vec<_> = handles.iter().map(|h| Self::info(h)).collect();
            let mut listed = Vec::new();
            for (topic, handle) in handles.iter().enumerate() {
                for partition in &handle.partitions {
                    let segments = partition.segments();
                    let active = segments.len().saturating_sub(1);
                    for (i, segment) in segments.into_iter().enumerate() {
                        listed.push(Listed {
                            topic,
                            partition: partition.id,
                            len: segment.visible_size(),
                            segment,
                            sealed: i < active,
                        });
                    }
                }
            }
            (handles, groups, topics, listed)
        };
        let mut files: Vec<BackupFile> = groups
            .into_iter()
            .map(|(group, json)| BackupFile {
                name: format!("groups/{group}.json"),
                source: BackupSource::Bytes(json),
            })
            .collect();
        for handle in &handles {
            let meta_path = self
                .inner
                .config
                .dir
                .join("topics")
                .join(&handle.name)
                .join("topic.json");
            let meta = std::fs::read(&meta_path)
                .map_err(|e| LogError::io(format!("reading {}", meta_path.display()), e))?;
            files.push(BackupFile {
                name: format!("topics/{}/topic.json", handle.name),
                source: BackupSource::Bytes(meta),
            });
            for seg in listed
                .iter()
                .filter(|s| handles[s.topic].name == handle.name)
            {
                let stem = segment::stem(seg.segment.base);
                let name =
                    |ext: &str| format!("topics/{}/{}/{stem}.{ext}", handle.name, seg.partition);
                files.push(BackupFile {
                    name: name("log"),
                    source: BackupSource::File {
                        path: seg.segment.path.clone(),
                        len: seg.len,
                    },
                });
                if !seg.sealed {
                    continue;
                }
                for ext in ["index", "timeindex"] {
                    let path = seg.segment.path.with_extension(ext);
                    // Missing index files are rebuilt by a restore.
                    if let Ok(meta) = std::fs::metadata(&path) {
                        files.push(BackupFile {
                            name: name(ext),
                            source: BackupSource::File {
                                path,
                                len: meta.len(),
                            },
                        });
                    }
                }
            }
        }
        Ok(Backup { files, topics })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crate::backup::{Backup, BackupSource};
    use crate::embedded::{EmbeddedLog, LogConfig};
    use crate::{Log, OffsetCommit, Record};

    /// Copies `backup` into `dir` as a restore would.
    fn restore(backup: &Backup, dir: &std::path::Path) {
        for file in &backup.files {
            let to = dir.join(&file.name);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let bytes = match &file.source {
                BackupSource::Bytes(b) => b.clone(),
                BackupSource::File { path, len } => {
                    let mut buf = Vec::new();
                    std::fs::File::open(path)
                        .unwrap()
                        .take(*len)
                        .read_to_end(&mut buf)
                        .unwrap();
                    assert_eq!(buf.len() as u64, *len, "{}", path.display());
                    buf
                }
            };
            std::fs::write(to, bytes).unwrap();
        }
    }

    fn config(dir: &std::path::Path) -> LogConfig {
        // Small segments: the backup spans sealed ones and an active one.
        LogConfig::new(dir).segment_bytes(4096)
    }

    #[tokio::test]
    async fn a_backup_taken_while_appending_opens_with_everything_durable_before_it() {
        let src = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(config(src.path())).await.unwrap();
        log.create_topic("events", 2).await.unwrap();
        log.create_topic("commands", 3).await.unwrap();
        let command = |i: u32| {
            vec![Record::new(
                format!("k{i}"),
                format!("c{i}{}", "x".repeat(100)),
            )]
        };
        for i in 0..200 {
            log.append("commands", command(i)).await.unwrap();
        }
        log.commit(OffsetCommit {
            group: "readers".into(),
            topic: "commands".into(),
            partition: 0,
            next_offset: 5,
            expected: None,
        })
        .await
        .unwrap();
        // Appends go on while the backup is taken and copied.
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 200..400 {
                    log.append("commands", command(i)).await.unwrap();
                    log.append(
                        "events",
                        vec![Record::new(format!("k{i}"), format!("e{i}"))],
                    )
                    .await
                    .unwrap();
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let before = log.topics().await.unwrap();
        let backup = log
            .backup()
            .await
            .unwrap()
            .expect("the embedded log backs up");
        let dst = tempfile::tempdir().unwrap();
        restore(&backup, dst.path());
        writer.await.unwrap();

        assert!(!backup.files.iter().any(|f| f.name.ends_with("LOCK")));
        let sealed = backup.files.iter().filter(|f| f.name.ends_with(".index"));
        assert!(sealed.count() >= 3, "sealed segments in every partition");
        let copy = EmbeddedLog::open(config(dst.path())).await.unwrap();
        // Nothing half-written: the copy opens without a cut.
        assert!(copy.truncations().is_empty(), "{:?}", copy.truncations());
        for listed in &backup.topics {
            let at_start = before.iter().find(|t| t.name == listed.name).unwrap();
            let restored = copy.topic(&listed.name).await.unwrap();
            for ((s, l), r) in at_start
                .partitions
                .iter()
                .zip(&listed.partitions)
                .zip(&restored.partitions)
            {
                assert!(s.end_offset <= l.end_offset, "{s:?} {l:?}");
                assert!(l.end_offset <= r.end_offset, "{l:?} {r:?}");
                // The same records as the source.
                let a = log
                    .read(&listed.name, r.partition, 0, 10_000)
                    .await
                    .unwrap();
                let b = copy
                    .read(&listed.name, r.partition, 0, 10_000)
                    .await
                    .unwrap();
                assert_eq!(b.len() as u64, r.end_offset);
                for (x, y) in a.iter().zip(&b) {
                    assert_eq!((x.offset, &x.value), (y.offset, &y.value));
                }
            }
        }
        assert_eq!(
            copy.committed("readers", "commands", 0).await.unwrap(),
            Some(5)
        );
        // The copy takes appends.
        copy.append("commands", vec![Record::new("k", "after")])
            .await
            .unwrap();
    }

    /// Keys landing in each of `n` partitions.
    fn keys(n: u32) -> Vec<String> {
        (0..n)
            .map(|p| {
                (0..)
                    .map(|i| format!("key{i}"))
                    .find(|k| crate::partition_for_key(k.as_bytes(), n) == p)
                    .unwrap()
            })
            .collect()
    }

    /// Batch number → how many of its records `topic` holds.
    async fn batch_counts(log: &EmbeddedLog, topic: &str, n: u32) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for p in 0..n {
            for r in log.read(topic, p, 0, 1_000_000).await.unwrap() {
                let v = String::from_utf8(r.value.to_vec()).unwrap();
                let b: u64 = v.split('-').next().unwrap().parse().unwrap();
                *counts.entry(b).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Batches spanning every partition are appended while backups are
    /// taken: no copy holds one in part (the listing is taken between
    /// rounds; read partition by partition, it held some in part).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn backups_under_load_hold_every_batch_wholly_or_not_at_all() {
        const N: u32 = 16;
        let src = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(config(src.path())).await.unwrap();
        log.create_topic("events", N).await.unwrap();
        let ks = keys(N);
        let batch = move |b: u64| -> Vec<Record> {
            ks.iter()
                .enumerate()
                .map(|(i, k)| Record::new(k.clone(), format!("{b}-{i}-{}", "p".repeat(60))))
                .collect()
        };
        // Many sealed segments: a listing takes a while.
        for b in 0..300 {
            log.append("events", batch(b)).await.unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let (log, stop, batch) = (log.clone(), stop.clone(), batch.clone());
                tokio::spawn(async move {
                    let mut b = 1_000 + w;
                    while !stop.load(Ordering::Relaxed) {
                        log.append("events", batch(b)).await.unwrap();
                        b += 4;
                    }
                })
            })
            .collect();
        let t0 = std::time::Instant::now();
        let mut copies = 0;
        while copies < 20 && t0.elapsed() < std::time::Duration::from_secs(5) {
            let backup = log.backup().await.unwrap().unwrap();
            let dst = tempfile::tempdir().unwrap();
            restore(&backup, dst.path());
            let copy = EmbeddedLog::open(config(dst.path())).await.unwrap();
            assert!(copy.truncations().is_empty(), "{:?}", copy.truncations());
            let counts = batch_counts(&copy, "events", N).await;
            let partial: Vec<_> = counts.iter().filter(|(_, n)| **n != N as usize).collect();
            assert!(
                partial.is_empty(),
                "copy {copies} holds batches in part: {partial:?}"
            );
            copies += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
    }

    /// A processor-like writer appends outputs with the commits of their
    /// inputs (rolling the output topic often) while backups are taken:
    /// each copy holds the commit made with every output it holds, also
    /// when the output's segment was sealed since (commits in a sealed
    /// segment are not read back at open: only the group file has them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn backups_under_load_hold_the_commits_of_the_outputs_they_hold() {
        let src = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(config(src.path())).await.unwrap();
        log.create_topic("in", 1).await.unwrap();
        log.create_topic("out", 1).await.unwrap();
        for i in 0..200 {
            log.append("in", vec![Record::new("k", format!("c{i}"))])
                .await
                .unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (log, stop) = (log.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 1;
                while !stop.load(Ordering::Relaxed) {
                    let commit = OffsetCommit {
                        group: "proc".into(),
                        topic: "in".into(),
                        partition: 0,
                        next_offset: n,
                        expected: None,
                    };
                    let out = vec![Record::new("k", format!("{n}{}", "o".repeat(300)))];
                    log.append_with_commit("out", out, commit).await.unwrap();
                    n += 1;
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let t0 = std::time::Instant::now();
        let mut copies = 0;
        while copies < 40 && t0.elapsed() < std::time::Duration::from_secs(5) {
            let backup = log.backup().await.unwrap().unwrap();
            let dst = tempfile::tempdir().unwrap();
            restore(&backup, dst.path());
            let copy = EmbeddedLog::open(config(dst.path())).await.unwrap();
            let held = copy.read("out", 0, 0, 1_000_000).await.unwrap().len() as u64;
            // Output n was appended with next offset n.
            let committed = copy.committed("proc", "in", 0).await.unwrap().unwrap_or(0);
            assert_eq!(
                committed, held,
                "copy {copies}: outputs held vs their commit"
            );
            copies += 1;
        }
        stop.store(true, Ordering::Relaxed);
        writer.await.unwrap();
    }

    /// The listing's premise: no round is published while the log is
    /// frozen (an append is answered only once its round is).
    #[tokio::test]
    // Held across awaits on purpose: the writer, on its own thread, waits.
    #[allow(clippy::await_holding_lock)]
    async fn no_round_is_published_while_a_backup_lists() {
        let src = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(config(src.path())).await.unwrap();
        log.create_topic("t", 2).await.unwrap();
        let frozen = log.inner.offsets.frozen();
        let append = tokio::spawn({
            let log = log.clone();
            async move { log.append("t", vec![Record::new("k", "v")]).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!append.is_finished(), "answered while frozen");
        assert_eq!(
            log.topic("t")
                .await
                .unwrap()
                .partitions
                .iter()
                .map(|p| p.end_offset)
                .sum::<u64>(),
            0
        );
        drop(frozen);
        append.await.unwrap().unwrap();
    }
}

//! The embedded log's online backup ([`crate::Log::backup`]): its files
//! as they are durable now, listed without stopping the writers.
//!
//! Sealed segments never change again, so they are copied whole, with
//! their index files (which a restore checks and rebuilds if they are
//! off). An active segment is copied up to its durable end, never its
//! preallocated zeros; its index files are left out (opening a log always
//! rebuilds the active segment's). A roll while the backup is copied
//! changes nothing: the segment that was active is copied up to the end
//! taken here, and the new one is not in the backup.

use std::sync::Arc;

use super::{segment, EmbeddedLog, TopicHandle};
use crate::backup::{Backup, BackupFile, BackupSource};
use crate::{LogError, Result};

impl EmbeddedLog {
    /// The backup's files (see the module documentation and
    /// [`crate::backup`]).
    pub(super) fn backup_files(&self, first: &[String]) -> Result<Backup> {
        let mut files = Vec::new();
        // Before any topic's end: no offset may point past what is copied.
        for (group, json) in self.inner.offsets.snapshot() {
            files.push(BackupFile {
                name: format!("groups/{group}.json"),
                source: BackupSource::Bytes(json),
            });
        }
        let mut handles: Vec<Arc<TopicHandle>> = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        // The named topics in their order, then the others by name.
        handles.sort_by_key(|h| {
            (
                first
                    .iter()
                    .position(|f| *f == h.name)
                    .unwrap_or(first.len()),
                h.name.clone(),
            )
        });
        let mut topics = Vec::new();
        for handle in handles {
            let dir = self.inner.config.dir.join("topics").join(&handle.name);
            let meta_path = dir.join("topic.json");
            let meta = std::fs::read(&meta_path)
                .map_err(|e| LogError::io(format!("reading {}", meta_path.display()), e))?;
            files.push(BackupFile {
                name: format!("topics/{}/topic.json", handle.name),
                source: BackupSource::Bytes(meta),
            });
            // The ends first: the bytes listed below hold at least them.
            topics.push(Self::info(&handle));
            for partition in &handle.partitions {
                let segments = partition.segments();
                let active = segments.len().saturating_sub(1);
                for (i, seg) in segments.iter().enumerate() {
                    let stem = segment::stem(seg.base);
                    let name =
                        |ext: &str| format!("topics/{}/{}/{stem}.{ext}", handle.name, partition.id);
                    files.push(BackupFile {
                        name: name("log"),
                        source: BackupSource::File {
                            path: seg.path.clone(),
                            len: seg.visible_size(),
                        },
                    });
                    if i == active {
                        continue;
                    }
                    for ext in ["index", "timeindex"] {
                        let path = seg.path.with_extension(ext);
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
        }
        Ok(Backup { files, topics })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

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
        for i in 0..200 {
            log.append(
                "commands",
                vec![Record::new(
                    format!("k{i}"),
                    format!("c{i}{}", "x".repeat(100)),
                )],
            )
            .await
            .unwrap();
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
                    log.append(
                        "commands",
                        vec![Record::new(
                            format!("k{i}"),
                            format!("c{i}{}", "x".repeat(100)),
                        )],
                    )
                    .await
                    .unwrap();
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
            .backup(&["events", "commands"])
            .await
            .unwrap()
            .expect("the embedded log backs up");
        let dst = tempfile::tempdir().unwrap();
        restore(&backup, dst.path());
        writer.await.unwrap();

        assert!(!backup.files.iter().any(|f| f.name.ends_with("LOCK")));
        let sealed = backup.files.iter().filter(|f| f.name.ends_with(".index"));
        assert!(sealed.count() >= 3, "sealed segments in every partition");
        let order: Vec<&str> = backup.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(order, ["events", "commands"]);
        let copy = EmbeddedLog::open(config(dst.path())).await.unwrap();
        // At most a round copied from part of its partitions is removed.
        for t in copy.truncations() {
            assert!(t.reason.contains("round"), "{t:?}");
        }
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
}

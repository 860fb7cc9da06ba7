//! `GET /backup`: an online backup of the log, streamed as a tar archive
//! while the server goes on taking commands (admin role).
//!
//! The archive holds `cmdr-backup.json` (what is in it: each topic's
//! partitions and their end offsets in the copy, the bytes, the time),
//! then the log's files under `log/` as [`cmdr_log::Log::backup`] lists
//! them: the log as it was at one instant after the request came in,
//! every record durable by then, every batch wholly or not at all. The index is not in it: a server
//! started on the restored directory rebuilds it from the log. Restoring
//! is `tar -xf backup.tar -C NEW_DATA_DIR`, then `cmdr serve --data-dir
//! NEW_DATA_DIR`.
//!
//! The files are read on a blocking thread into a bounded channel (at most
//! 8 chunks of 256 KiB wait for the client), so a
//! slow client holds a thread and little memory, and the send timeout ends
//! a client that stops reading. A file found shorter than the backup lists
//! ends the answer with an error (the archive is then cut short, which a
//! tar reader reports), never with a wrong archive.

use std::io::{self, Read, Write};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cmdr_log::backup::{Backup, BackupSource};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Name of the archive's first entry, which says what the archive holds.
pub const MANIFEST: &str = "cmdr-backup.json";

/// Bytes of archive sent to the client at a time.
const CHUNK_BYTES: usize = 256 * 1024;

/// Chunks read ahead of the client.
const CHANNEL_CHUNKS: usize = 8;

/// The backup route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/backup", get(backup))
}

async fn backup(State(state): State<AppState>) -> ApiResult<Response> {
    let backup = state
        .log()
        .backup()
        .await
        .map_err(|e| ApiError::Unavailable(format!("the backup could not be listed: {e}")))?
        .ok_or_else(|| {
            ApiError::NotImplemented(
                "this server's log keeps no files of its own to back up (a log in memory)".into(),
            )
        })?;
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let manifest = serde_json::to_vec_pretty(&manifest(&backup, created_ms))
        .map_err(|e| ApiError::Internal(format!("the backup's manifest: {e}")))?;
    let length = archive_len(&backup, manifest.len() as u64);
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkSender {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
        };
        let written = write_archive(&backup, &manifest, created_ms / 1000, &mut out);
        match written {
            Ok(()) => {}
            // The client went away: nobody to tell.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                tracing::warn!(error = %e, "backup cut short");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Known up front: a cut answer is an error to every client, even one
    // that reads to the connection's end.
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"cmdr-backup-{created_ms}.tar\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// What [`MANIFEST`] says about `backup`.
fn manifest(backup: &Backup, created_ms: u64) -> Value {
    json!({
        "format": 1,
        "cmdr": env!("CARGO_PKG_VERSION"),
        "created_ms": created_ms,
        "files": backup.files.len(),
        "bytes": backup.bytes(),
        "topics": backup.topics.iter().map(|t| json!({
            "name": t.name,
            "partitions": t.partitions.iter().map(|p| json!({
                "partition": p.partition,
                "end_offset": p.end_offset,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "restore": "tar -xf THIS.tar -C NEW_DATA_DIR, then cmdr serve --data-dir NEW_DATA_DIR (the index is rebuilt from log/)",
    })
}

/// Tar's block: headers and every entry's data take whole blocks.
const BLOCK: u64 = 512;

/// Where the log's files go in the archive.
const LOG_DIR: &str = "log/";

/// The exact length of the archive [`write_archive`] writes (as the `tar`
/// crate writes GNU archives): per entry a header block and its data in
/// whole blocks, with a long-name entry first for a name over 100 bytes
/// (a header and the name, NUL-ended, in whole blocks), then two empty
/// blocks.
fn archive_len(backup: &Backup, manifest_len: u64) -> u64 {
    let blocks = |n: u64| n.div_ceil(BLOCK) * BLOCK;
    let entry = |name_len: usize, len: u64| {
        let long_name = if name_len > 100 {
            BLOCK + blocks(name_len as u64 + 1)
        } else {
            0
        };
        long_name + BLOCK + blocks(len)
    };
    let files: u64 = backup
        .files
        .iter()
        .map(|f| entry(LOG_DIR.len() + f.name.len(), f.len()))
        .sum();
    entry(MANIFEST.len(), manifest_len) + files + 2 * BLOCK
}

/// Writes the archive: the manifest, then every file under [`LOG_DIR`].
fn write_archive(
    backup: &Backup,
    manifest: &[u8],
    mtime: u64,
    out: &mut ChunkSender,
) -> io::Result<()> {
    let mut tar = tar::Builder::new(&mut *out);
    append(&mut tar, MANIFEST, manifest.len() as u64, mtime, manifest)?;
    for file in &backup.files {
        let name = format!("{LOG_DIR}{}", file.name);
        match &file.source {
            BackupSource::Bytes(bytes) => {
                append(&mut tar, &name, bytes.len() as u64, mtime, &bytes[..])?;
            }
            BackupSource::File { path, len } => {
                let opened = std::fs::File::open(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
                })?;
                let exact = Exact {
                    inner: opened.take(*len),
                    left: *len,
                    path,
                };
                append(&mut tar, &name, *len, mtime, exact)?;
            }
        }
    }
    tar.into_inner()?.flush()
}

/// Appends a regular file of `len` bytes read from `data`.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    len: u64,
    mtime: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(len);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    tar.append_data(&mut header, name, data)
}

/// The first `left` bytes of a file, or an error if it has fewer.
struct Exact<'a> {
    inner: io::Take<std::fs::File>,
    left: u64,
    path: &'a std::path::Path,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} ended {} bytes short of what the backup lists",
                    self.path.display(),
                    self.left
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Sends what is written to it to the client, [`CHUNK_BYTES`] at a time;
/// `BrokenPipe` once the client is gone.
struct ChunkSender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_shorter_than_listed_is_an_error_not_a_short_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut exact = Exact {
            inner: std::fs::File::open(&path).unwrap().take(12),
            left: 12,
            path: &path,
        };
        let mut out = Vec::new();
        let err = exact.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("2 bytes short"), "{err}");
        let mut exact = Exact {
            inner: std::fs::File::open(&path).unwrap().take(4),
            left: 4,
            path: &path,
        };
        let mut out = Vec::new();
        exact.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"0123");
    }

    #[tokio::test]
    async fn the_archive_holds_the_manifest_then_the_files_cut_to_their_listed_length() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("seg.log");
        std::fs::write(&seg, b"records\0\0\0preallocated").unwrap();
        let backup = Backup {
            files: vec![
                cmdr_log::backup::BackupFile {
                    name: "groups/g.json".into(),
                    source: BackupSource::Bytes(b"{}".to_vec()),
                },
                cmdr_log::backup::BackupFile {
                    name: format!("topics/{}/0/seg.log", "t".repeat(120)),
                    source: BackupSource::File {
                        path: seg.clone(),
                        len: 7,
                    },
                },
            ],
            topics: Vec::new(),
        };
        let manifest = serde_json::to_vec(&manifest(&backup, 1_000)).unwrap();
        let length = archive_len(&backup, manifest.len() as u64);
        let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
        let written = tokio::task::spawn_blocking(move || {
            let mut out = ChunkSender {
                tx,
                buf: Vec::new(),
            };
            write_archive(&backup, &manifest, 1, &mut out)
        });
        let mut archive = Vec::new();
        while let Some(chunk) = rx.recv().await {
            archive.extend_from_slice(&chunk.unwrap());
        }
        written.await.unwrap().unwrap();
        assert_eq!(archive.len() as u64, length, "the announced length");
        let mut entries = Vec::new();
        for entry in tar::Archive::new(&archive[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            entries.push((name, data));
        }
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        let long = format!("log/topics/{}/0/seg.log", "t".repeat(120));
        assert_eq!(names, [MANIFEST, "log/groups/g.json", long.as_str()]);
        let manifest: Value = serde_json::from_slice(&entries[0].1).unwrap();
        assert_eq!(manifest["bytes"], 9);
        assert_eq!(manifest["files"], 2);
        assert_eq!(entries[2].1, b"records");
    }
}

//! Online backups: a consistent copy of a log's files, taken while it
//! runs ([`crate::Log::backup`]).
//!
//! A backup lists files and how much of each to copy; copying them into
//! an empty directory gives a log that opens as the log was at one
//! instant while the backup was listed: every record durable before the
//! backup began is in it, nothing half-written (an active segment is
//! copied up to its durable end), every batch wholly or not at all
//! (across partitions too), and the consumer groups' offsets are those of
//! that instant (offsets committed with a batch exactly when the batch is
//! in the copy).

use std::path::PathBuf;

use crate::TopicInfo;

/// What to copy to restore a log (see the module documentation).
#[derive(Debug, Clone)]
pub struct Backup {
    /// The files, in the order to write them.
    pub files: Vec<BackupFile>,
    /// Each topic's partitions with the end offsets the copy holds.
    pub topics: Vec<TopicInfo>,
}

impl Backup {
    /// Bytes of all the files together.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(BackupFile::len).sum()
    }
}

/// One file of a [`Backup`].
#[derive(Debug, Clone)]
pub struct BackupFile {
    /// Its path in the copy, relative to the log's directory, with `/`
    /// between names.
    pub name: String,
    /// What it holds.
    pub source: BackupSource,
}

impl BackupFile {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match &self.source {
            BackupSource::Bytes(b) => b.len() as u64,
            BackupSource::File { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a [`BackupFile`]'s bytes are.
#[derive(Debug, Clone)]
pub enum BackupSource {
    /// These bytes (taken from memory when the backup was made).
    Bytes(Vec<u8>),
    /// The first `len` bytes of the file at `path`, which only ever grows
    /// past them (a reader must refuse a shorter one: the copy would not
    /// be the backup).
    File {
        /// The file.
        path: PathBuf,
        /// Bytes to copy from its start.
        len: u64,
    },
}

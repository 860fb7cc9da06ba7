//! The index's typed errors.

use std::path::PathBuf;

/// Result of an index operation.
pub type Result<T> = std::result::Result<T, IndexError>;

/// What can go wrong in the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The redb database failed (open, transaction, table or storage). Its
    /// message includes redb's. (No variant has a `source`: each message
    /// already says its cause, and an error chain would say it twice.)
    #[error("index database {path}: {error}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        error: Box<redb::Error>,
    },
    /// Reading the log failed.
    #[error("reading the log: {0}")]
    Log(#[from] cmdr_log::LogError),
    /// A stored index value could not be decoded (the index should be rebuilt).
    #[error("corrupt index value in table {table}: {error}")]
    Decode {
        /// Which table.
        table: &'static str,
        /// The decoding error.
        error: serde_json::Error,
    },
    /// Removing the index file (for a rebuild) failed.
    #[error("removing {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The indexer's thread could not be started.
    #[error("starting the indexer thread: {0}")]
    Thread(std::io::Error),
    /// The indexer task stopped (it failed earlier, or was shut down).
    #[error("the indexer is not running")]
    Stopped,
    /// The database panicked: its file is damaged. The next open rebuilds it
    /// (so does `cmdr reindex`).
    #[error(
        "the index database failed ({0}); its file may be damaged: `cmdr reindex` rebuilds it"
    )]
    Panicked(String),
}

impl IndexError {
    /// Whether the index file is damaged (the database said so, or a stored
    /// value does not decode): rebuilding it from the log repairs it.
    pub fn is_damage(&self) -> bool {
        match self {
            Self::Db { error, .. } => match &**error {
                // Stored table metadata that is not what this layout
                // writes: damage (or a file in another layout).
                redb::Error::Corrupted(_)
                | redb::Error::TableTypeMismatch { .. }
                | redb::Error::TypeDefinitionChanged { .. }
                | redb::Error::TableIsMultimap(_)
                | redb::Error::TableIsNotMultimap(_) => true,
                // A length or pointer that leads past the end of the file,
                // or a header that is not redb's.
                redb::Error::Io(e) => matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ),
                _ => false,
            },
            Self::Decode { .. } | Self::Panicked(_) => true,
            _ => false,
        }
    }

    /// Whether the index file is open in another process (or twice in this one).
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Db { error, .. } if matches!(**error, redb::Error::DatabaseAlreadyOpen))
    }
}

#[cfg(test)]
mod tests {
    use super::IndexError;

    fn db(error: redb::Error) -> IndexError {
        IndexError::Db {
            path: "index.redb".into(),
            error: Box::new(error),
        }
    }

    /// Damage met in the damaged-file test: a flipped byte in a table's
    /// stored type definition.
    #[test]
    fn stored_table_definitions_that_differ_are_damage() {
        let changed = db(redb::Error::TypeDefinitionChanged {
            name: redb::TypeName::new("u64"),
            alignment: 1,
            width: Some(452_984_840),
        });
        assert!(changed.is_damage());
        assert!(db(redb::Error::TableIsMultimap("meta".into())).is_damage());
        assert!(!db(redb::Error::DatabaseAlreadyOpen).is_damage());
    }
}

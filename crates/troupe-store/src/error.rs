//! The one error type of the store's API.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in [`Store`](crate::Store). Messages name the
/// file (and byte offset, for damaged data) so that an operator can act.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An operating-system call on `path` failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Durable data is damaged in a way that recovery must not paper over:
    /// the store refuses to open instead of dropping or changing anything.
    #[error(
        "corrupt store file {} at byte offset {offset}: {reason}; \
         the store refuses to open rather than lose data: restore the directory \
         from a replica or a backup, or move the damaged file aside to accept the loss",
        file.display()
    )]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset in `file` where the damage was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// `append` was given an index other than `last_index() + 1`.
    #[error("append out of order: the next index must be {expected}, got {got}")]
    OutOfOrder {
        /// The only index `append` accepts now.
        expected: u64,
        /// The index it was given.
        got: u64,
    },
    /// Another process (or another `Store` in this one) holds the directory.
    #[error(
        "store directory {} is in use: another process holds the lock on {}/LOCK (its pid is written in it)",
        dir.display(),
        dir.display()
    )]
    Locked {
        /// The store directory.
        dir: PathBuf,
    },
    /// `save_snapshot` was given an index outside `min..=max`: below the
    /// current snapshot, or beyond what `sync` has made durable.
    #[error(
        "snapshot index {index} is outside {min}..={max} (the current snapshot's index up to the synced index); \
         call sync() before snapshotting entries"
    )]
    SnapshotIndex {
        /// The index given.
        index: u64,
        /// The current snapshot's index.
        min: u64,
        /// `synced_index()`.
        max: u64,
    },
    /// A record or meta blob is larger than the format allows.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// "record" or "meta".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The options cannot work.
    #[error("invalid store options: {reason}")]
    Options {
        /// What is wrong with them.
        reason: String,
    },
    /// An earlier write or fsync failed, so what is on disk is unknown (after a
    /// failed fsync the kernel may have dropped the dirty pages). The store
    /// refuses further appends; drop it and open the directory again to recover
    /// exactly what is durable.
    #[error(
        "store at {} is unusable after an earlier failed write or fsync; \
         drop it and reopen the directory to recover what is durable",
        dir.display()
    )]
    Poisoned {
        /// The store directory.
        dir: PathBuf,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> StoreError {
        StoreError::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

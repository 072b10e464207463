//! [`StoreError`], and the one place where a rusqlite error becomes one.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use super::MessageId;
use crate::config::TeamName;

/// What went wrong with the store. Every variant that concerns the database file names it and
/// says what to do.
///
/// Fatal-error policy: `Open`, `Corrupt`, `NewerSchema` and `Locked` from [`Store::open`]
/// stop Iris at start-up with this message (a restart would fail the same way, so there is no
/// crash loop). At run time a failed write leaves the database as it was before that write
/// (each unit of work is one transaction); the caller reports the error for that message and
/// carries on.
///
/// [`Store::open`]: super::Store::open
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The file or its directory cannot be created, opened or read.
    #[error(
        "cannot open the Iris database at {path}: {message}; check that the path is a writable file in a writable directory, or set database.path"
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// What the operating system or SQLite said.
        message: String,
    },
    /// The file is not an SQLite database, is damaged, or belongs to another program: found
    /// when opening it or by `iris doctor`'s integrity check, never from a single failed
    /// statement of a running Iris (that is [`StoreError::Damaged`]).
    #[error(
        "{path} is not a valid Iris database ({message}); Iris did not modify it: move it aside to start fresh"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The file was written by a newer Iris whose schema this build does not know.
    #[error(
        "{path} was written by a newer Iris (schema {found}, this Iris knows up to {supported}); upgrade Iris or point database.path elsewhere"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// Another connection held the lock for longer than the busy timeout.
    #[error(
        "the Iris database at {path} is locked by another process (is another Iris running?); nothing was changed"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The disk, or the database's size limit, is full.
    #[error("the Iris database at {path}: disk or database full; the change was not saved")]
    DiskFull {
        /// The database file.
        path: PathBuf,
    },
    /// The operating system failed to read, write or sync a file of the database (EIO: a
    /// failing disk, a filesystem that went read-only or was shut down). The database is
    /// not known to be damaged.
    #[error(
        "I/O error on {path} during {operation}: {message}; the disk or filesystem failed (check `dmesg`, free space and the mount), the database itself is not known to be damaged: once the disk is healthy, restart Iris"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// What the system said.
        message: String,
    },
    /// A running Iris's statement found a page it could not use ("database disk image is
    /// malformed"). SQLite says the same after a failed read, so this alone does not mean
    /// the file is damaged: the advice is to check the disk and restart, and to let
    /// `iris doctor` check the file, never to move it aside. (After an I/O error the store
    /// reports this as [`StoreError::Io`].)
    #[error(
        "SQLite reported the Iris database at {path} as damaged during {operation} ({message}); a failing disk reads the same way, so the file may be intact: check the disk (`dmesg`, the mount), restart Iris, and if this persists run `iris doctor`, which checks the file without changing it; do not move or delete the file before that"
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// What SQLite said.
        message: String,
    },
    /// No session has this id.
    #[error("no session {session_id} in the Iris database")]
    SessionNotFound {
        /// The id asked for.
        session_id: uuid::Uuid,
    },
    /// The pair already has an active session; retire it before creating another.
    #[error(
        "pair {caller} -> {target} already has the active session {session_id}; retire it before creating a new one"
    )]
    ActiveSessionExists {
        /// The calling team.
        caller: TeamName,
        /// The target team.
        target: TeamName,
        /// The session that is active.
        session_id: uuid::Uuid,
    },
    /// No message has this id.
    #[error("no message {id} in the Iris database")]
    MessageNotFound {
        /// The id asked for.
        id: MessageId,
    },
    /// The call asked for something the store's rules do not allow (a programming error in
    /// the caller, such as finishing a message with a state that is not final).
    #[error("{operation}: {message}")]
    Invalid {
        /// The store method.
        operation: &'static str,
        /// Which rule was broken.
        message: String,
    },
    /// Any other SQLite failure, or a row that cannot be read back.
    #[error("database error during {operation}: {message}")]
    Sql {
        /// The store method that failed.
        operation: &'static str,
        /// What SQLite said.
        message: String,
    },
    /// The store's thread is gone (the store was closed, or the thread panicked).
    #[error("the Iris database is closed")]
    Closed,
}

/// The `path` shown in errors about an in-memory database.
pub(super) const IN_MEMORY: &str = ":memory:";

/// Classifies a rusqlite error met during `operation` on the database at `path`.
pub(super) fn classify(
    error: &rusqlite::Error,
    path: &Path,
    operation: &'static str,
) -> StoreError {
    let path = path.to_path_buf();
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { path },
        Some(ErrorCode::DiskFull) => StoreError::DiskFull { path },
        Some(ErrorCode::SystemIoFailure) => StoreError::Io {
            path,
            operation,
            message: error.to_string(),
        },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
            if matches!(operation, "open" | "migrate" | "inspect") =>
        {
            StoreError::Corrupt {
                path,
                message: error.to_string(),
            }
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Damaged {
            path,
            operation,
            message: error.to_string(),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            StoreError::Open {
                path,
                message: error.to_string(),
            }
        }
        _ => StoreError::Sql {
            operation,
            message: error.to_string(),
        },
    }
}

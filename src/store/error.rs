//! What can go wrong with the history database, typed so front ends can branch on it (a shell
//! that cannot log keeps chatting; a missing id is the user's typo, not a crash).
//!
//! Every message is one sentence that names the database file or the id and says what to do.
//! SQLite's own result codes are translated here, in one place, so no caller matches on them.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use super::{ConversationId, MessageId};

/// A failure of the history database, with the sentence the user sees.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or created.
    #[error("cannot open history database {}: {reason}: check that the folder exists and is writable", .path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The operating system's or SQLite's words.
        reason: String,
    },

    /// The file is not a database, or a damaged one.
    #[error("history database {} is corrupt ({reason}): move it aside and gemmactl will start a new one", .path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// SQLite's words.
        reason: String,
    },

    /// Another program holds the write lock longer than the busy timeout.
    #[error("history database {} is locked by another program: close it (or wait for the other gemmactl) and try again", .path.display())]
    Locked {
        /// The database file.
        path: PathBuf,
    },

    /// The disk holding it is full.
    #[error("cannot write history database {}: the disk is full: free some space and try again", .path.display())]
    DiskFull {
        /// The database file.
        path: PathBuf,
    },

    /// The file or its folder cannot be written.
    #[error("history database {} is read-only: make it and its folder writable", .path.display())]
    ReadOnly {
        /// The database file.
        path: PathBuf,
    },

    /// A newer gemmactl wrote it.
    #[error("history database {} has schema version {found}, newer than this gemmactl understands (up to {supported}): upgrade gemmactl, or set GEMMACTL_HOME to use another database", .path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },

    /// No conversation has this id.
    #[error("no conversation {0} in the history: `gemmactl history list` shows the ids")]
    ConversationNotFound(ConversationId),

    /// No message has this id.
    #[error(
        "no message {0} in the history: `gemmactl history show CONVERSATION` shows the message ids"
    )]
    MessageNotFound(MessageId),

    /// A message was used with a conversation it is not part of.
    #[error("message {message} belongs to conversation {actual}, not {expected}: pick a message of conversation {expected}")]
    WrongConversation {
        /// The message.
        message: MessageId,
        /// The conversation it was used with.
        expected: ConversationId,
        /// The conversation it belongs to.
        actual: ConversationId,
    },

    /// Only a reply that has not finished can be saved or finished.
    #[error("message {0} is not a reply in progress: only a reply started with start_reply can be finished")]
    NotAReply(MessageId),

    /// A search with nothing to search for.
    #[error("cannot search for {query:?}: {reason}: use plain words")]
    BadQuery {
        /// What the user typed.
        query: String,
        /// Why it cannot be searched.
        reason: String,
    },

    /// A line of an import is not what `history export --format jsonl` writes.
    #[error("line {line} of {source_name} is not a gemmactl history export: {reason}")]
    Import {
        /// The file (or stdin).
        source_name: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// An import could not be read.
    #[error("cannot import {source_name}: {reason}")]
    ImportRead {
        /// The file (or stdin).
        source_name: String,
        /// The operating system's words.
        reason: String,
    },

    /// Any other SQLite failure.
    #[error("history database {}: {reason}", .path.display())]
    Other {
        /// The database file.
        path: PathBuf,
        /// SQLite's words.
        reason: String,
    },
}

impl StoreError {
    /// Translates a SQLite failure on the database at `path` into the sentence a user can act on.
    pub(crate) fn from_sqlite(path: &Path, err: rusqlite::Error) -> StoreError {
        let path = path.to_path_buf();
        let reason = err.to_string();
        match err.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt { path, reason }
            }
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Locked { path }
            }
            Some(ErrorCode::DiskFull) => StoreError::DiskFull { path },
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { path },
            Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
                StoreError::Open { path, reason }
            }
            _ => StoreError::Other { path, reason },
        }
    }
}

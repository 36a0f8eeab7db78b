//! What can go wrong with the history database, typed so front ends can branch on it (a shell
//! that cannot log keeps chatting; a missing id is the user's typo, not a crash).
//!
//! Every message is one sentence that names the database file or the id and says what to do.
//! SQLite's own result codes are translated here, in one place, so no caller matches on them.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use super::{ConversationId, MessageId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open history database {}: {reason}: check that the folder exists and is writable", .path.display())]
    Open { path: PathBuf, reason: String },

    #[error("history database {} is corrupt ({reason}): move it aside and gemmactl will start a new one", .path.display())]
    Corrupt { path: PathBuf, reason: String },

    #[error("history database {} is locked by another program: close it (or wait for the other gemmactl) and try again", .path.display())]
    Locked { path: PathBuf },

    #[error("cannot write history database {}: the disk is full: free some space and try again", .path.display())]
    DiskFull { path: PathBuf },

    #[error("history database {} is read-only: make it and its folder writable", .path.display())]
    ReadOnly { path: PathBuf },

    #[error("history database {} has schema version {found}, newer than this gemmactl understands (up to {supported}): upgrade gemmactl, or set GEMMACTL_HOME to use another database", .path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("no conversation {0} in the history: `gemmactl history list` shows the ids")]
    ConversationNotFound(ConversationId),

    #[error(
        "no message {0} in the history: `gemmactl history show CONVERSATION` shows the message ids"
    )]
    MessageNotFound(MessageId),

    #[error("message {message} belongs to conversation {actual}, not {expected}: pick a message of conversation {expected}")]
    WrongConversation {
        message: MessageId,
        expected: ConversationId,
        actual: ConversationId,
    },

    #[error("message {0} is not a reply in progress: only a reply started with start_reply can be finished")]
    NotAReply(MessageId),

    #[error("cannot search for {query:?}: {reason}: use plain words")]
    BadQuery { query: String, reason: String },

    #[error("line {line} of {source_name} is not a gemmactl history export: {reason}")]
    Import {
        source_name: String,
        line: usize,
        reason: String,
    },

    #[error("cannot import {source_name}: {reason}")]
    ImportRead { source_name: String, reason: String },

    #[error("history database {}: {reason}", .path.display())]
    Other { path: PathBuf, reason: String },
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

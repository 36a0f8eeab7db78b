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
    #[error("cannot open history database {}: {reason}: check that the folder exists and is writable, or leave history off with --no-log", .path.display())]
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
    #[error("cannot write history database {}: the disk is full: free some space, or leave history off with --no-log (reading history still works)", .path.display())]
    DiskFull {
        /// The database file.
        path: PathBuf,
    },

    /// The file or its folder cannot be written (permissions, a read-only file system).
    #[error("cannot write history database {}: it or its folder is read-only: make both writable, or leave history off with --no-log (reading history still works)", .path.display())]
    ReadOnly {
        /// The database file.
        path: PathBuf,
    },

    /// The file was renamed or deleted while the database was open: writes would go nowhere.
    #[error("history database {} was moved or deleted while gemmactl had it open: nothing more is saved to it; start gemmactl again to use a new one (or leave history off with --no-log)", .path.display())]
    Moved {
        /// The database file, where it was.
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

    /// Only a user message can be marked refused.
    #[error("message {0} is not a user message: only what a user sent can be marked refused")]
    NotAUserMessage(MessageId),

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

    /// An image's copy could not be written to the history's image folder.
    #[error("cannot keep a copy of {label} in {}: {reason}: free some space or make the folder writable, or set copy_images = false in config.toml", .dir.display())]
    ImageCopy {
        /// The image, as people name it.
        label: String,
        /// The folder of copies.
        dir: PathBuf,
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
    ///
    /// A full disk rarely reaches SQLite as "database or disk is full": writing the log or the
    /// shared-memory file fails first, as a bare "disk I/O error" or "unable to open database
    /// file". So an I/O or open failure on a file system with no room left is called what it
    /// is, and so is one on a file system mounted read-only.
    pub(crate) fn from_sqlite(path: &Path, err: rusqlite::Error) -> StoreError {
        let reason = err.to_string();
        let code = err.sqlite_error_code();
        let path = path.to_path_buf();
        if matches!(
            code,
            Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen | ErrorCode::DiskFull)
        ) {
            match space(&path) {
                Some(Space::Full) => return StoreError::DiskFull { path },
                Some(Space::ReadOnly) => return StoreError::ReadOnly { path },
                _ => {}
            }
        }
        if let rusqlite::Error::SqliteFailure(e, _) = &err {
            if e.extended_code == rusqlite::ffi::SQLITE_READONLY_DBMOVED {
                return StoreError::Moved { path };
            }
        }
        match code {
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

    /// Whether the failure is that the database cannot be written (a full disk, a read-only
    /// file or folder, a file that cannot be opened for writing): reading may still work.
    pub fn is_unwritable(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::Open { .. }
                | StoreError::Moved { .. }
                | StoreError::ImageCopy { .. }
        )
    }
}

/// What the file system holding a database says about writing to it.
#[derive(Debug, PartialEq, Eq)]
enum Space {
    /// Less room left than SQLite needs for a page of log and its shared memory.
    Full,
    /// Mounted read-only.
    ReadOnly,
    Available,
}

/// Room below which a write failure is put down to a full disk.
const NEARLY_FULL_BYTES: u64 = 256 * 1024;

/// Asks the file system holding `path` (or its folder, before the file exists).
fn space(path: &Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt;
    let probe = if path.exists() { path } else { path.parent()? };
    let c_path = std::ffi::CString::new(probe.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated path and `stat` is a buffer of the right type that
    // statvfs(3) fills in completely when it returns 0, which is checked before it is read.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    if stat.f_flag & libc::ST_RDONLY != 0 {
        return Some(Space::ReadOnly);
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    Some(if free < NEARLY_FULL_BYTES {
        Space::Full
    } else {
        Space::Available
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_folder_has_room() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            space(&dir.path().join("history.db")),
            Some(Space::Available)
        );
        assert_eq!(space(Path::new("/nonexistent/folder/history.db")), None);
    }

    #[test]
    fn every_unwritable_kind_says_how_to_go_on() {
        for e in [
            StoreError::DiskFull {
                path: "/x/history.db".into(),
            },
            StoreError::ReadOnly {
                path: "/x/history.db".into(),
            },
        ] {
            let text = e.to_string();
            assert!(e.is_unwritable());
            assert!(
                text.contains("/x/history.db") && text.contains("--no-log"),
                "{text}"
            );
        }
        assert!(StoreError::DiskFull { path: "/x".into() }
            .to_string()
            .contains("disk is full"));
    }
}

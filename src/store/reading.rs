//! Opening the history only to read it (`history list`, `show`, `search`, `export`).
//!
//! Reading must work where writing cannot: on a full disk, in a read-only folder, on a database
//! another user owns. A normal open writes before it reads anything (WAL mode, migrations, and
//! SQLite's shared-memory file `history.db-shm` beside the database), so here:
//! - the database is opened read-only, and nothing is migrated when it is current;
//! - when SQLite cannot make its shared-memory file (a read-only folder, a full disk) and the
//!   write-ahead log holds nothing, the file is read as immutable, which needs no such file and
//!   is exact: with an empty log, the database file is the whole history;
//! - a database from an older gemmactl is upgraded as usual when it can be written, and otherwise
//!   copied into memory and upgraded there, leaving the file as it was;
//! - a database that does not exist yet is created when it can be, else read as empty.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{fail, migrations, Result, Store, StoreError, BUSY_TIMEOUT};
use crate::config::Paths;

impl Store {
    /// Opens the database in the user's data folder for reading (see the module notes).
    pub fn open_default_for_reading(paths: &Paths) -> Result<Store> {
        Store::open_for_reading(&paths.history_db())
    }

    /// Opens the database at `path` for reading; writing through the store may fail.
    pub fn open_for_reading(path: &Path) -> Result<Store> {
        if !path.exists() {
            return Store::open(path).or_else(|e| {
                if e.is_unwritable() {
                    in_memory(path, None)
                } else {
                    Err(e)
                }
            });
        }
        let conn = match read_only(path, false) {
            Ok(conn) => conn,
            Err(e) if e.is_unwritable() && log_is_empty(path) => read_only(path, true)?,
            Err(e) => return Err(e),
        };
        let found = migrations::user_version(&conn).map_err(fail(path))?;
        let supported = migrations::latest();
        if found > supported {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        if found == supported {
            return Ok(Store {
                conn,
                path: path.to_path_buf(),
                identity: None,
            });
        }
        match Store::open(path) {
            Ok(store) => Ok(store),
            Err(e) if e.is_unwritable() => in_memory(path, Some(&conn)),
            Err(e) => Err(e),
        }
    }
}

/// A read-only connection to `path` that has read the schema (so a file SQLite cannot open
/// fails here, not later). `immutable` reads the file alone, without the write-ahead log.
fn read_only(path: &Path, immutable: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let mut uri = format!("file:{}?mode=ro", uri_path(path));
    if immutable {
        uri.push_str("&immutable=1");
    }
    let conn = Connection::open_with_flags(&uri, flags).map_err(fail(path))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail(path))?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(fail(path))?;
    Ok(conn)
}

/// Whether the write-ahead log beside `path` is absent or empty: then the database file alone
/// holds everything committed.
fn log_is_empty(path: &Path) -> bool {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    std::fs::metadata(PathBuf::from(log)).map_or(true, |m| m.len() == 0)
}

/// An upgraded copy in memory of the database `from` reads (or an empty history), for reading
/// where the file cannot be written. Messages still name `path`.
fn in_memory(path: &Path, from: Option<&Connection>) -> Result<Store> {
    let mut conn = Connection::open_in_memory().map_err(fail(path))?;
    if let Some(from) = from {
        let backup = rusqlite::backup::Backup::new(from, &mut conn).map_err(fail(path))?;
        backup
            .run_to_completion(1024, Duration::from_millis(10), None)
            .map_err(fail(path))?;
    }
    migrations::apply(&mut conn).map_err(fail(path))?;
    Ok(Store {
        conn,
        path: path.to_path_buf(),
        identity: None,
    })
}

/// `path` as the path part of a `file:` URI: everything but unreserved characters and `/`
/// percent-encoded, so `?`, `#` and `%` in folder names stay part of the path.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::turn;

    #[test]
    fn uri_paths_keep_odd_characters_as_path() {
        assert_eq!(
            uri_path(Path::new("/a b/c?d#e%f/h.db")),
            "/a%20b/c%3Fd%23e%25f/h.db"
        );
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("we?ird #dir%");
        std::fs::create_dir(&odd).unwrap();
        let db = odd.join("history.db");
        let (c, _) = turn(&mut Store::open(&db).unwrap(), None, "hello", "hi");
        let store = Store::open_for_reading(&db).unwrap();
        assert_eq!(
            store.conversation(c).unwrap().title.as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn a_missing_database_is_created_like_any_other_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        let store = Store::open_for_reading(&db).unwrap();
        assert!(store.list_conversations(10, None).unwrap().is_empty());
        assert!(db.is_file());
    }

    #[test]
    fn an_older_database_is_upgraded_when_it_can_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        {
            let conn = Connection::open(&db).unwrap();
            for m in &migrations::MIGRATIONS[..2] {
                conn.execute_batch(m.sql).unwrap();
                conn.execute_batch(&format!("PRAGMA user_version = {}", m.version))
                    .unwrap();
            }
            conn.execute_batch(
                "INSERT INTO conversations (id, title) VALUES (1, 'old');
                 INSERT INTO messages (conversation_id, role, content) VALUES (1, 'user', '苹果和香蕉');",
            )
            .unwrap();
        }
        let store = Store::open_for_reading(&db).unwrap();
        assert_eq!(store.search("香蕉", 5).unwrap().len(), 1);
        let version: i64 = Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, migrations::latest());
    }
}

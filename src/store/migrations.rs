//! Schema migrations: plain SQL files in `migrations/`, compiled in, applied in order.
//!
//! The database's `PRAGMA user_version` is the number of the last migration applied. Each
//! migration runs in its own IMMEDIATE transaction together with the bump of that number, so a
//! crash mid-migration leaves the previous version intact, and two processes opening a new
//! database at once serialise instead of applying the same migration twice (the version is read
//! again inside the transaction). A database from a newer gemmactl is refused rather than
//! guessed at.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// One schema step: its number (the `NNNN` of its file name), its name and its SQL.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Numbers are contiguous from 1; a test checks it.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "0002_origin",
        sql: include_str!("migrations/0002_origin.sql"),
    },
    Migration {
        version: 3,
        name: "0003_context_refused_trigram",
        sql: include_str!("migrations/0003_context_refused_trigram.sql"),
    },
    Migration {
        version: 4,
        name: "0004_images",
        sql: include_str!("migrations/0004_images.sql"),
    },
];

/// The schema version this build writes.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// What `apply` found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The database is at [`latest`] now; `applied` migrations were run to get there.
    Current { applied: usize },
    /// The database was written by a newer gemmactl; nothing was changed.
    TooNew { found: i64 },
}

pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the schema up to date.
///
/// Foreign-key enforcement is off while migrations run (SQLite only changes that setting outside
/// a transaction), because a migration that rebuilds a table must drop the old one without its
/// deletes cascading; each migration checks every key itself before it commits, and the setting
/// is restored afterwards.
pub(crate) fn apply(conn: &mut Connection) -> rusqlite::Result<Outcome> {
    let found = user_version(conn)?;
    if found > latest() {
        return Ok(Outcome::TooNew { found });
    }
    if found == latest() {
        return Ok(Outcome::Current { applied: 0 });
    }
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", false)?;
    let outcome = apply_each(conn);
    conn.pragma_update(None, "foreign_keys", enforced)?;
    outcome
}

fn apply_each(conn: &mut Connection) -> rusqlite::Result<Outcome> {
    let found = user_version(conn)?;
    let mut applied = 0;
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the write lock.
        let now = user_version(&tx)?;
        if now > latest() {
            return Ok(Outcome::TooNew { found: now });
        }
        if now >= migration.version {
            continue;
        }
        tx.execute_batch(migration.sql)?;
        check_foreign_keys(&tx)?;
        // PRAGMA takes no bound parameters; the value is our own constant.
        tx.execute_batch(&format!("PRAGMA user_version = {}", migration.version))?;
        tx.commit()?;
        tracing::info!(migration = migration.name, "history database migrated");
        applied += 1;
    }
    Ok(Outcome::Current { applied })
}

/// Fails (rolling the migration back) if any row's foreign key points nowhere.
fn check_foreign_keys(conn: &Connection) -> rusqlite::Result<()> {
    let broken: Option<String> = conn
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .optional()?;
    match broken {
        None => Ok(()),
        Some(table) => Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
            Some(format!(
                "a migration left a broken reference in table {table}"
            )),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_contiguous_and_match_file_names() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
            assert!(!m.sql.trim().is_empty(), "{}", m.name);
        }
    }

    #[test]
    fn applies_from_empty_then_nothing_more() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            apply(&mut conn).unwrap(),
            Outcome::Current {
                applied: MIGRATIONS.len()
            }
        );
        assert_eq!(user_version(&conn).unwrap(), latest());
        assert_eq!(apply(&mut conn).unwrap(), Outcome::Current { applied: 0 });
    }

    /// A version-2 database with a little of everything the rebuild of `messages` must keep.
    fn version_2_database(dir: &std::path::Path) -> Connection {
        let mut conn = Connection::open(dir.join("history.db")).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        for m in &MIGRATIONS[..2] {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(m.sql).unwrap();
            tx.execute_batch(&format!("PRAGMA user_version = {}", m.version))
                .unwrap();
            tx.commit().unwrap();
        }
        conn.execute_batch(
            "INSERT INTO conversations (id, title, source) VALUES (1, 'fruit', 'chat');
             INSERT INTO messages (id, conversation_id, parent_id, role, content)
                 VALUES (1, 1, NULL, 'user', '我喜欢吃苹果和香蕉。');
             INSERT INTO messages (id, conversation_id, parent_id, role, content, finish_reason, prompt_tokens)
                 VALUES (2, 1, 1, 'assistant', 'Bananas are yellow.', 'length', 12);
             INSERT INTO messages (id, conversation_id, parent_id, role, content)
                 VALUES (3, 1, 2, 'user', 'gone soon');
             DELETE FROM messages WHERE id = 3;
             UPDATE conversations SET head_id = 2 WHERE id = 1;",
        )
        .unwrap();
        conn
    }

    #[test]
    fn version_2_is_rebuilt_keeping_rows_ids_heads_and_search() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = version_2_database(dir.path());
        // The old CHECK refuses the new reason: the rebuild is what makes it storable.
        assert!(conn
            .execute(
                "UPDATE messages SET finish_reason = 'context' WHERE id = 2",
                []
            )
            .is_err());
        // Version 3 (this rebuild) and every later migration.
        assert_eq!(
            apply(&mut conn).unwrap(),
            Outcome::Current {
                applied: (latest() - 2) as usize
            }
        );
        assert_eq!(user_version(&conn).unwrap(), latest());
        let enforced: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(enforced, "foreign keys are enforced again after migrating");
        /// id, parent_id, content, finish_reason, refused
        type Row = (i64, Option<i64>, String, Option<String>, i64);
        let rows: Vec<Row> = conn
            .prepare(
                "SELECT id, parent_id, content, finish_reason, refused FROM messages ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1],
            (
                2,
                Some(1),
                "Bananas are yellow.".into(),
                Some("length".into()),
                0
            )
        );
        let head: i64 = conn
            .query_row("SELECT head_id FROM conversations WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(head, 2, "the conversation's head survives the rebuild");
        conn.execute(
            "UPDATE messages SET finish_reason = 'context' WHERE id = 2",
            [],
        )
        .unwrap();
        // Deleted ids are still never reused.
        conn.execute(
            "INSERT INTO messages (conversation_id, parent_id, role, content) VALUES (1, 2, 'user', 'next')",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 4);
        let found = |table: &str, query: &str| -> i64 {
            conn.query_row(
                &format!("SELECT count(*) FROM {table} WHERE {table} MATCH ?1"),
                [query],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(
            found("messages_fts", "bananas"),
            1,
            "the word index still works"
        );
        assert_eq!(
            found("messages_trigram", "\"吃苹果\""),
            1,
            "old text is in the new index"
        );
        assert_eq!(
            found("messages_trigram", "next"),
            1,
            "new text reaches the new index"
        );
        // Cascades work again: deleting the conversation takes its messages and their index rows.
        conn.execute("DELETE FROM conversations WHERE id = 1", [])
            .unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        assert_eq!(found("messages_trigram", "\"吃苹果\""), 0);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn newer_schema_is_left_untouched() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", latest() + 1))
            .unwrap();
        assert_eq!(
            apply(&mut conn).unwrap(),
            Outcome::TooNew {
                found: latest() + 1
            }
        );
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }
}

//! Schema migrations: plain SQL files in `migrations/`, compiled in, applied in order.
//!
//! The database's `PRAGMA user_version` is the number of the last migration applied. Each
//! migration runs in its own IMMEDIATE transaction together with the bump of that number, so a
//! crash mid-migration leaves the previous version intact, and two processes opening a new
//! database at once serialise instead of applying the same migration twice (the version is read
//! again inside the transaction). A database from a newer gemmactl is refused rather than
//! guessed at.

use rusqlite::{Connection, TransactionBehavior};

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
pub(crate) fn apply(conn: &mut Connection) -> rusqlite::Result<Outcome> {
    let found = user_version(conn)?;
    if found > latest() {
        return Ok(Outcome::TooNew { found });
    }
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
        // PRAGMA takes no bound parameters; the value is our own constant.
        tx.execute_batch(&format!("PRAGMA user_version = {}", migration.version))?;
        tx.commit()?;
        tracing::info!(migration = migration.name, "history database migrated");
        applied += 1;
    }
    Ok(Outcome::Current { applied })
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

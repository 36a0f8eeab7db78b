//! The record a running `gemmactl serve` leaves in the state folder (`serve.json`), so the front
//! ends of the same home can find it and send their turns to it.
//!
//! It holds the server's pid, its URL and a random attach token: only someone who can read the
//! home's state folder (the file is private to its owner) can use the server's attach endpoints,
//! whatever its API key. The server removes the record on exit; a record whose process is gone
//! (killed with SIGKILL) is stale, and the next reader removes it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Paths;
use crate::supervisor::status::process_alive;

/// Where a running server can be reached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerRecord {
    /// The server's process id.
    pub pid: u32,
    /// Its base URL, e.g. `http://127.0.0.1:11435`.
    pub url: String,
    /// The secret attached front ends send as `Authorization: Bearer`.
    pub token: String,
    /// Unix seconds.
    pub started_at: u64,
}

/// What reading the record found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No server runs for this home.
    None,
    /// A record was left by a server that is gone; it has been removed.
    Stale {
        /// The dead server's pid.
        pid: u32,
    },
    /// A server's record, its process alive.
    Live(ServerRecord),
}

impl ServerRecord {
    /// A record for this process serving at `url`, with a fresh random token.
    pub fn new(url: String) -> std::io::Result<ServerRecord> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(ServerRecord {
            pid: std::process::id(),
            url,
            token: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            started_at: crate::supervisor::status::unix_now(),
        })
    }

    /// The record's file for `paths`' home.
    pub fn path(paths: &Paths) -> PathBuf {
        paths.state_dir.join("serve.json")
    }

    /// Writes the record, readable by its owner only, replacing any other atomically.
    pub fn write(&self, paths: &Paths) -> std::io::Result<()> {
        let path = Self::path(paths);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".serve.json.{}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Removes the record if it is still this process's.
    pub fn remove(paths: &Paths) {
        let path = Self::path(paths);
        let ours = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ServerRecord>(&b).ok())
            .is_some_and(|r| r.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The server recorded for this home, if its process is alive; a stale record is removed.
    pub fn find(paths: &Paths) -> Found {
        let path = Self::path(paths);
        let Ok(bytes) = std::fs::read(&path) else {
            return Found::None;
        };
        match serde_json::from_slice::<ServerRecord>(&bytes) {
            Ok(record) if process_alive(record.pid) => Found::Live(record),
            Ok(record) => {
                let _ = std::fs::remove_file(&path);
                Found::Stale { pid: record.pid }
            }
            Err(_) => {
                // Unreadable (a crash mid-write cannot do this: writes are atomic): not a server.
                let _ = std::fs::remove_file(&path);
                Found::Stale { pid: 0 }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            config_dir: dir.join("config"),
            data_dir: dir.join("data"),
            state_dir: dir.join("state"),
            cache_dir: dir.join("cache"),
        }
    }

    #[test]
    fn a_record_is_private_found_while_alive_and_stale_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        assert_eq!(ServerRecord::find(&paths), Found::None);
        let record = ServerRecord::new("http://127.0.0.1:1".into()).unwrap();
        assert_eq!(record.token.len(), 48);
        record.write(&paths).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ServerRecord::path(&paths))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(ServerRecord::find(&paths), Found::Live(record.clone()));
        // A record left by a process that no longer exists.
        let dead = ServerRecord {
            pid: 999_999_999,
            ..record
        };
        dead.write(&paths).unwrap();
        assert_eq!(
            ServerRecord::find(&paths),
            Found::Stale { pid: 999_999_999 }
        );
        assert!(!ServerRecord::path(&paths).exists());
        // Only the server's own record is removed by it.
        dead.write(&paths).unwrap();
        ServerRecord::remove(&paths);
        assert!(ServerRecord::path(&paths).exists());
    }
}

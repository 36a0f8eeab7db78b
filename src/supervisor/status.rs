//! What `gemmactl ps` reads: one small JSON file per running gemmactl process describing the
//! engines it holds, rewritten (atomically) on every lifecycle transition and removed on exit.
//!
//! Engines are children of one gemmactl process and cannot be seen from another, so the holder
//! publishes them. A file whose process died without cleaning up (SIGKILL) is recognised by its
//! dead pid and removed by the next reader.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lifecycle::Phase;
use crate::domain::{Backend, EngineKind};

/// One gemmactl process and the engines it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessStatus {
    /// The gemmactl process holding the engines.
    pub pid: u32,
    /// Its command line, e.g. `gemmactl run`.
    pub command: String,
    /// Unix seconds.
    pub started_at: u64,
    /// The engines it holds, one per model.
    pub engines: Vec<EngineStatus>,
}

/// One model's engine, as `ps` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineStatus {
    /// The model's name.
    pub model: String,
    /// The engine program.
    pub engine: EngineKind,
    /// Where the work runs, as the engine reports it; `None` while no engine runs.
    #[serde(with = "crate::domain::backend_label::option")]
    pub backend: Option<Backend>,
    /// The engine's lifecycle state.
    pub state: Phase,
    /// Why the engine is in this state (e.g. the failure).
    pub reason: Option<String>,
    /// The engine's process id.
    pub pid: Option<u32>,
    /// Its context length in tokens.
    pub context: Option<u32>,
    /// When it started (Unix seconds).
    pub started_at: Option<u64>,
    /// When it last served (Unix seconds).
    pub last_used_at: Option<u64>,
    /// Requests completed.
    pub requests_served: u64,
    /// Requests being decoded.
    pub active: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Why the engine is not on the GPU that was asked for or is present (see `hardware`).
    #[serde(default)]
    pub fallback: Option<String>,
    /// Engine starts (loads, reloads, restarts) since the holder started.
    #[serde(default)]
    pub loads: u64,
    /// Stops to make room for another model.
    #[serde(default)]
    pub evictions: u64,
    /// Failed starts and engine deaths.
    #[serde(default)]
    pub failures: u64,
}

/// This process's status file.
pub struct StatusFile {
    path: PathBuf,
}

impl StatusFile {
    /// The file of this process in `run_dir`.
    pub fn new(run_dir: &Path) -> StatusFile {
        StatusFile {
            path: run_dir.join(format!("{}.json", std::process::id())),
        }
    }

    /// Best effort: `ps` is informational, a failure to publish must not fail a request.
    pub fn write(&self, status: &ProcessStatus) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = self.path.with_extension("json.tmp");
        let Ok(body) = serde_json::to_vec_pretty(status) else {
            return;
        };
        if std::fs::write(&tmp, body).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }

    /// Removes the file (on exit).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// All live gemmactl processes' status; files of dead processes are deleted on the way.
pub fn read_all(run_dir: &Path) -> Vec<ProcessStatus> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Some(status) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ProcessStatus>(&b).ok())
        else {
            continue;
        };
        if !process_alive(status.pid) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        all.push(status);
    }
    all.sort_by_key(|s| s.pid);
    all
}

/// Whether a process with this id runs (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited; only its exit status remains to be collected.
        Ok(stat) => stat
            .rfind(')')
            .map(|i| !stat[i..].starts_with(") Z"))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Resident memory of a process in bytes (Linux `VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pid: u32) -> ProcessStatus {
        ProcessStatus {
            pid,
            command: "gemmactl run".into(),
            started_at: 0,
            engines: Vec::new(),
        }
    }

    #[test]
    fn written_files_are_read_back_and_dead_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = StatusFile::new(dir.path());
        file.write(&status(std::process::id()));
        // A file left by a process that no longer exists.
        let dead = dir.path().join("999999999.json");
        std::fs::write(&dead, serde_json::to_vec(&status(999_999_999)).unwrap()).unwrap();
        let all = read_all(dir.path());
        assert_eq!(all, vec![status(std::process::id())]);
        assert!(!dead.exists(), "stale status file was not cleaned up");
        file.remove();
        assert!(read_all(dir.path()).is_empty());
    }
}

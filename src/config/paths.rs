//! Where gemmactl keeps its files.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::env::non_empty_env;

/// The folders gemmactl reads and writes.
///
/// `GEMMACTL_HOME` moves config, data and state under one folder (tests and portable installs use
/// it). The download cache is separate (`GEMMACTL_CACHE`) so that several homes share one copy of
/// a 253 MB model.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `config.toml` and the model registry `models.toml`.
    pub config_dir: PathBuf,
    /// The history database.
    pub data_dir: PathBuf,
    /// Logs, input history, and the status files `gemmactl ps` reads.
    pub state_dir: PathBuf,
    /// Downloads (shared between homes).
    pub cache_dir: PathBuf,
}

impl Paths {
    /// The folders for this user: `GEMMACTL_HOME` and `GEMMACTL_CACHE` when set, else the
    /// platform's standard folders.
    pub fn discover() -> Result<Paths> {
        let dirs = directories::ProjectDirs::from("", "", "gemmactl");
        let cache_dir = match non_empty_env("GEMMACTL_CACHE") {
            Some(dir) => PathBuf::from(dir),
            None => match &dirs {
                Some(d) => d.cache_dir().to_path_buf(),
                None => bail!("cannot find a cache folder for downloads: set GEMMACTL_CACHE"),
            },
        };
        if let Some(home) = non_empty_env("GEMMACTL_HOME") {
            let home = PathBuf::from(home);
            return Ok(Paths {
                config_dir: home.join("config"),
                data_dir: home.join("data"),
                state_dir: home.join("state"),
                cache_dir,
            });
        }
        let Some(dirs) = dirs else {
            bail!("cannot find your home folder: set GEMMACTL_HOME to a folder gemmactl may use");
        };
        Ok(Paths {
            config_dir: dirs.config_dir().to_path_buf(),
            data_dir: dirs.data_dir().to_path_buf(),
            state_dir: dirs
                .state_dir()
                .unwrap_or(dirs.data_local_dir())
                .to_path_buf(),
            cache_dir,
        })
    }

    /// `config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The registry of named models.
    pub fn models_file(&self) -> PathBuf {
        self.config_dir.join("models.toml")
    }

    /// Where downloaded model files live (shared between homes).
    pub fn model_cache_dir(&self) -> PathBuf {
        self.cache_dir.join("models")
    }

    /// The history database (conversations and messages).
    pub fn history_db(&self) -> PathBuf {
        self.data_dir.join("history.db")
    }

    /// Log files.
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// One status file per running gemmactl process, read by `gemmactl ps`.
    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
    }
}

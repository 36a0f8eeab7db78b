//! Where gemmactl keeps its files, and the settings it reads from `config.toml`.
//!
//! Every setting has one precedence, applied in one place: command-line flag > environment
//! variable > config file > built-in default. Commands call [`Config::load`] (file + environment)
//! and then overlay their own flags, so no front end re-implements the order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The built-in default context length (tokens). Gemma 3 trains to 32k, but a 32k KV cache costs
/// more than the 270M model's weights; users raise it explicitly.
pub const DEFAULT_CONTEXT: u32 = 8192;
/// How many requests one gemma-engine decodes together (its sequence slots).
pub const DEFAULT_PARALLEL: u32 = 4;
/// How long an engine may take from spawn to its `ready` event.
pub const DEFAULT_LOAD_TIMEOUT_SECS: u64 = 120;
/// The catalogue entry used when neither `--model` nor the config names one.
pub const DEFAULT_MODEL: &str = "gemma3-270m";

/// The folders gemmactl reads and writes.
///
/// `GEMMACTL_HOME` moves config, data and state under one folder (tests and portable installs use
/// it). The download cache is separate (`GEMMACTL_CACHE`) so that several homes share one copy of
/// a 253 MB model.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
}

impl Paths {
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

    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// One status file per running gemmactl process, read by `gemmactl ps`.
    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
    }
}

/// Settings for the bundled engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Path of the `gemma-engine` binary; by default the one next to the `gemmactl` executable.
    pub path: Option<PathBuf>,
    /// Context length in tokens (shared by all requests one engine decodes at once).
    pub context: u32,
    /// CPU threads for decoding; by default the number of cores.
    pub threads: Option<u32>,
    /// Requests one engine decodes together.
    pub parallel: u32,
    /// Seconds an engine may take to load before it is stopped and reported.
    pub load_timeout_secs: u64,
    /// `auto`, `cpu`, `cuda`, `vulkan` or `openvino` (see `hardware::select`).
    pub backend: crate::hardware::BackendRequest,
    /// The order `auto` tries backends in.
    pub backend_order: Vec<crate::hardware::Backend>,
    /// `[engine.builds]`: GPU builds of gemma-engine kept elsewhere than next to gemmactl.
    pub builds: crate::hardware::EngineBuilds,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            path: None,
            context: DEFAULT_CONTEXT,
            threads: None,
            parallel: DEFAULT_PARALLEL,
            load_timeout_secs: DEFAULT_LOAD_TIMEOUT_SECS,
            backend: Default::default(),
            backend_order: crate::hardware::backend::default_order(),
            builds: Default::default(),
        }
    }
}

/// Settings for the supervisor: how many engines it keeps, for how long, and how it restarts them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorSettings {
    /// Models loaded at once, at most.
    pub max_models: u32,
    /// Memory the loaded models may use together, in MiB (estimated before loading); 0 = only
    /// what the machine has free.
    pub memory_budget_mib: u64,
    /// Seconds an idle engine stays loaded; 0 = until gemmactl exits.
    pub idle_ttl_secs: u64,
    /// Requests that may wait per model beyond those being decoded.
    pub queue_length: u32,
    /// Consecutive failed starts after which a model is marked failed instead of retried.
    pub max_start_failures: u32,
    /// First wait before restarting an engine that crashed or failed to start; doubles each
    /// time, up to 10 s, and resets after a success.
    pub restart_backoff_ms: u64,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            max_models: 3,
            memory_budget_mib: 0,
            idle_ttl_secs: 300,
            queue_length: 64,
            max_start_failures: 3,
            restart_backoff_ms: 250,
        }
    }
}

/// Settings for the engines other than the bundled one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EnginesSettings {
    pub gemma_cpp: GemmaCppSettings,
}

/// gemma.cpp's threading spin mode (`--spin`): spinning threads answer faster but burn the cores.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Spin {
    Auto,
    On,
    Off,
}

/// `[engines.gemma_cpp]`: how to run Google's gemma.cpp (`gemma` binary) for `.sbs` models.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GemmaCppSettings {
    /// Path of the `gemma` binary (after `GEMMA_BIN`, before `PATH`).
    pub binary: Option<PathBuf>,
    /// KV cache length in tokens (`--seq_len`); lowering it saves memory.
    pub seq_len: u32,
    /// Worker threads (`--num_threads`); by default gemma.cpp picks.
    pub threads: Option<u32>,
    /// `--spin`: `off` helps on a loaded or small machine.
    pub spin: Option<Spin>,
}

impl Default for GemmaCppSettings {
    fn default() -> Self {
        GemmaCppSettings {
            binary: None,
            seq_len: DEFAULT_CONTEXT,
            threads: None,
            spin: None,
        }
    }
}

/// Everything `config.toml` may say.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Model used when a command is given no `--model`.
    pub default_model: String,
    /// Store every conversation (chat, run) in the history database; `--no-log` turns it off
    /// for one command.
    pub history: bool,
    pub engine: EngineSettings,
    pub supervisor: SupervisorSettings,
    /// Settings for engines other than the bundled one (`[engines.gemma_cpp]`).
    #[serde(default)]
    pub engines: EnginesSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_model: DEFAULT_MODEL.to_string(),
            history: true,
            engine: EngineSettings::default(),
            supervisor: SupervisorSettings::default(),
            engines: EnginesSettings::default(),
        }
    }
}

impl Config {
    /// Reads `config.toml` (absent is fine: defaults) and applies environment overrides.
    pub fn load(paths: &Paths) -> Result<Config> {
        let mut config = Config::read_file(&paths.config_file())?;
        config.apply_env()?;
        Ok(config)
    }

    fn read_file(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read config file {}", path.display()))
            }
        };
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "config file {} is not valid: {} (fix or delete the file)",
                path.display(),
                e.message()
            )
        })
    }

    fn apply_env(&mut self) -> Result<()> {
        if let Some(v) = non_empty_env("GEMMACTL_MODEL") {
            self.default_model = v;
        }
        if let Some(v) = non_empty_env("GEMMACTL_ENGINE") {
            self.engine.path = Some(PathBuf::from(v));
        }
        if let Some(v) = parse_env::<u32>("GEMMACTL_CONTEXT")? {
            self.engine.context = v;
        }
        if let Some(v) = parse_env::<u32>("GEMMACTL_THREADS")? {
            self.engine.threads = Some(v);
        }
        if let Some(v) = parse_env::<u32>("GEMMACTL_PARALLEL")? {
            self.engine.parallel = v;
        }
        if let Some(v) = parse_env::<u64>("GEMMACTL_LOAD_TIMEOUT")? {
            self.engine.load_timeout_secs = v;
        }
        if let Some(v) = parse_env::<u32>("GEMMACTL_MAX_MODELS")? {
            self.supervisor.max_models = v;
        }
        if let Some(v) = parse_env::<u64>("GEMMACTL_MEMORY_BUDGET_MIB")? {
            self.supervisor.memory_budget_mib = v;
        }
        if let Some(v) = parse_env::<u64>("GEMMACTL_IDLE_TTL")? {
            self.supervisor.idle_ttl_secs = v;
        }
        if let Some(v) = parse_env::<u32>("GEMMACTL_QUEUE_LENGTH")? {
            self.supervisor.queue_length = v;
        }
        crate::hardware::backend::apply_env(&mut self.engine)?;
        Ok(())
    }

    /// Finds the `gemma-engine` binary: configured path, else next to our own executable.
    pub fn engine_binary(&self) -> Result<PathBuf> {
        if let Some(path) = &self.engine.path {
            if !path.is_file() {
                bail!(
                    "gemma-engine not found at {} (set by engine.path or GEMMACTL_ENGINE): fix the path or unset it",
                    path.display()
                );
            }
            return Ok(path.clone());
        }
        let exe = std::env::current_exe().context("cannot locate the gemmactl executable")?;
        let beside = exe.with_file_name(format!("gemma-engine{}", std::env::consts::EXE_SUFFIX));
        if beside.is_file() {
            return Ok(beside);
        }
        bail!(
            "gemma-engine not found next to {}: build it with `cargo build --workspace`, or set GEMMACTL_ENGINE to its path",
            exe.display()
        )
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_env<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match non_empty_env(name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            anyhow::anyhow!("environment variable {name}={v:?} is not a valid number")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::read_file(&dir.path().join("config.toml")).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn file_values_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "default_model = \"m\"\n[engine]\ncontext = 2048\nparallel = 8\n",
        )
        .unwrap();
        let config = Config::read_file(&file).unwrap();
        assert_eq!(config.default_model, "m");
        assert_eq!(config.engine.context, 2048);
        assert_eq!(config.engine.parallel, 8);
        assert_eq!(config.engine.load_timeout_secs, DEFAULT_LOAD_TIMEOUT_SECS);
    }

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("```toml\n")
            .expect("README has a config example")
            + 8;
        let end = start + readme[start..].find("```").unwrap();
        let config: Config =
            toml::from_str(&readme[start..end]).expect("README's config.toml example parses");
        assert_eq!(config.supervisor, SupervisorSettings::default());
        assert_eq!(config.engine.context, DEFAULT_CONTEXT);
    }

    #[test]
    fn malformed_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[engine\ncontext = ").unwrap();
        let err = Config::read_file(&file).unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
        std::fs::write(&file, "[engine]\ncontxt = 5\n").unwrap();
        let err = Config::read_file(&file).unwrap_err().to_string();
        assert!(err.contains("contxt"), "{err}");
    }
}

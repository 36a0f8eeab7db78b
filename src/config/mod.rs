//! Where gemmactl keeps its files, and every setting it reads: `config.toml`, the environment
//! (`env.rs` is the only code that reads environment variables), and the built-in defaults.
//!
//! Every setting has one precedence, applied in one place: command-line flag > environment
//! variable > config file > built-in default. Commands call [`Config::load`] (file + environment)
//! and then overlay their own flags (`cli::args`), so no front end re-implements the order.

pub mod backend;
mod bounds;
mod env;
pub mod flags;
mod paths;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use backend::{BackendRequest, EngineBuilds};
pub use env::Environment;
pub use paths::Paths;

/// The built-in default context length (tokens). Gemma 3 trains to 32k, but a 32k KV cache costs
/// more than the 270M model's weights; users raise it explicitly.
pub const DEFAULT_CONTEXT: u32 = 8192;
/// How many requests one gemma-engine decodes together (its sequence slots).
pub const DEFAULT_PARALLEL: u32 = 4;
/// How long an engine may take from spawn to its `ready` event.
pub const DEFAULT_LOAD_TIMEOUT_SECS: u64 = 120;
/// The catalogue entry used when neither `--model` nor the config names one.
pub const DEFAULT_MODEL: &str = "gemma3-270m";

/// Settings for the bundled engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Path of the `gemma-engine` binary; by default the one next to the `gemmactl` executable.
    pub path: Option<PathBuf>,
    /// Context length in tokens (shared by all requests one engine decodes at once).
    pub context: u32,
    /// CPU threads for decoding; by default gemma-engine uses the cores other programs leave
    /// idle, and gemma.cpp every core.
    pub threads: Option<u32>,
    /// Requests one engine decodes together.
    pub parallel: u32,
    /// Element type of gemma-engine's KV cache: `f16`, `q8_0` or `q4_0` (docs/tuning.md).
    pub kv_cache_type: crate::domain::KvCacheType,
    /// gemma-engine's flash attention: `auto`, `on` or `off` (a quantized KV cache needs it).
    pub flash_attention: crate::domain::FlashAttention,
    /// Seconds an engine may take to load before it is stopped and reported.
    pub load_timeout_secs: u64,
    /// `auto`, `cpu`, `cuda`, `vulkan` or `openvino` (see `hardware::select`).
    pub backend: BackendRequest,
    /// The order `auto` tries backends in.
    pub backend_order: Vec<crate::domain::Backend>,
    /// `[engine.builds]`: GPU builds of gemma-engine kept elsewhere than next to gemmactl.
    pub builds: EngineBuilds,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            path: None,
            context: DEFAULT_CONTEXT,
            threads: None,
            parallel: DEFAULT_PARALLEL,
            kv_cache_type: Default::default(),
            flash_attention: Default::default(),
            load_timeout_secs: DEFAULT_LOAD_TIMEOUT_SECS,
            backend: Default::default(),
            backend_order: backend::default_order(),
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
    /// `[engines.gemma_cpp]`.
    pub gemma_cpp: GemmaCppSettings,
    /// `[engines.remote]`: how remote models (OpenAI-compatible servers) are reached.
    pub remote: RemoteSettings,
}

/// `[engines.remote]`: timeouts and retries of remote engines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteSettings {
    /// Seconds to wait for a connection to a remote server.
    pub connect_timeout_secs: u64,
    /// Seconds a remote reply may stay silent (the first token included) before it fails.
    pub idle_timeout_secs: u64,
    /// Further tries of a request that failed before its first token (refused, 429, 502–504).
    pub retries: u32,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        RemoteSettings {
            connect_timeout_secs: 10,
            idle_timeout_secs: 300,
            retries: 2,
        }
    }
}

/// `[serve]`: `gemmactl serve`'s address, limits and security, and whether front ends attach.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSettings {
    /// Where `gemmactl serve` listens; loopback only unless an API key is configured.
    pub addr: String,
    /// A file holding the API key clients must send (`Authorization: Bearer KEY`).
    pub api_key_file: Option<PathBuf>,
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Longest prompt, in characters of message text (413 beyond).
    pub max_prompt_chars: usize,
    /// Seconds a client may take to send a request's headers (slow-loris connections closed).
    pub header_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit idle, or a body take to arrive.
    pub idle_timeout_secs: u64,
    /// Origins browsers may call the API from (CORS); empty = CORS off.
    pub cors_origins: Vec<String>,
    /// Store the HTTP API's exchanges in the history database (source `serve`).
    pub history: bool,
    /// Let API clients name images by local path or `file:` URL (read by the server). Off by
    /// default: a client on the network must not make the server read its files; data URLs
    /// always work.
    pub allow_local_images: bool,
    /// `run`, `chat` and the other front ends send their turns to a running `gemmactl serve` of
    /// this home; `false` (or `--local`) keeps them in-process.
    pub attach: bool,
}

/// The address `gemmactl serve` listens on unless told otherwise.
pub const DEFAULT_SERVE_ADDR: &str = "127.0.0.1:11435";

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            addr: DEFAULT_SERVE_ADDR.to_string(),
            api_key_file: None,
            max_body_bytes: 4 << 20,
            max_prompt_chars: 1 << 20,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            cors_origins: Vec::new(),
            history: false,
            allow_local_images: false,
            attach: true,
        }
    }
}

/// gemma.cpp's threading spin mode (`--spin`): spinning threads answer faster but burn the cores.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Spin {
    /// gemma.cpp decides (`--spin -1`).
    Auto,
    /// Threads spin while waiting (`--spin 1`).
    On,
    /// Threads sleep while waiting (`--spin 0`).
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

/// `[mcp]`: what `gemmactl mcp` lets its clients reach.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpSettings {
    /// Folders `analyze_image` may read images from (with everything below them). Empty: only
    /// the folder `gemmactl mcp` was started in. `--image-dir` adds to them.
    pub image_dirs: Vec<PathBuf>,
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
    /// Keep a copy of every image attached to a stored message in the data folder (`images/`,
    /// named by SHA-256, so the same image twice is kept once), so an export stays complete and
    /// a continued conversation shows the model the same image even after the original file
    /// moved or changed. Images given as bytes (HTTP, MCP, batch) are always copied: they have
    /// no file otherwise.
    pub copy_images: bool,
    /// `[engine]`: how the bundled gemma-engine is found and started.
    pub engine: EngineSettings,
    /// `[supervisor]`: how engine processes are pooled, queued and restarted.
    pub supervisor: SupervisorSettings,
    /// Settings for engines other than the bundled one (`[engines.gemma_cpp]`).
    #[serde(default)]
    pub engines: EnginesSettings,
    /// What `gemmactl mcp` lets its clients reach (`[mcp]`).
    #[serde(default)]
    pub mcp: McpSettings,
    /// `[serve]`: the resident server, and whether front ends attach to it.
    #[serde(default)]
    pub serve: ServeSettings,
    /// What only the environment says (tool paths, `NO_COLOR`, …); never read from the file.
    #[serde(skip)]
    pub env: Environment,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_model: DEFAULT_MODEL.to_string(),
            history: true,
            copy_images: true,
            engine: EngineSettings::default(),
            supervisor: SupervisorSettings::default(),
            engines: EnginesSettings::default(),
            mcp: McpSettings::default(),
            serve: ServeSettings::default(),
            env: Environment::default(),
        }
    }
}

impl Config {
    /// Reads `config.toml` (absent is fine: defaults) and applies environment overrides.
    pub fn load(paths: &Paths) -> Result<Config> {
        let mut config = Config::read_file(&paths.config_file())?;
        env::apply(&mut config)?;
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
        let config: Config = toml::from_str(&text).map_err(|e| {
            // The parser's message may span lines ("invalid table header\nexpected `.`, `]`"):
            // joined, so the error stays one line, with the line of the file it is about.
            let message: Vec<&str> = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let at = e
                .span()
                .and_then(|s| text.get(..s.start))
                .map(|before| format!(" at line {}", before.matches('\n').count() + 1))
                .unwrap_or_default();
            anyhow::anyhow!(
                "config file {} is not valid{at}: {} (fix or delete the file)",
                path.display(),
                message.join(", ")
            )
        })?;
        bounds::check_file(&config, path)?;
        Ok(config)
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

    /// Finds gemma.cpp's `gemma` binary: `GEMMA_BIN` or `engines.gemma_cpp.binary` (which must
    /// exist), else `gemma` on `PATH`. gemmactl never builds gemma.cpp itself.
    pub fn gemma_cpp_binary(&self) -> Result<PathBuf, String> {
        if let Some(path) = &self.engines.gemma_cpp.binary {
            if path.is_file() {
                return Ok(path.clone());
            }
            return Err(format!("{} does not exist (it was set by GEMMA_BIN or engines.gemma_cpp.binary in config.toml): fix the path, or build gemma.cpp per its README and point GEMMA_BIN at build/gemma", path.display()));
        }
        self.env
            .search_path
            .iter()
            .map(|d| d.join("gemma"))
            .find(|f| f.is_file())
            .ok_or_else(|| "gemma.cpp's `gemma` binary was not found (looked at GEMMA_BIN, engines.gemma_cpp.binary in config.toml, and PATH): build it per gemma.cpp's README (`cmake --preset make && cmake --build --preset make`) and set GEMMA_BIN to build/gemma".to_string())
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
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\n")
            .expect("README has a config example")
            + 8;
        let end = start + readme[start..].find("```").unwrap();
        let config: Config =
            toml::from_str(&readme[start..end]).expect("README's config.toml example parses");
        assert_eq!(config.supervisor, SupervisorSettings::default());
        assert_eq!(config.engine.context, DEFAULT_CONTEXT);
        assert_eq!(config.serve, ServeSettings::default());
        assert_eq!(config.engines.remote, RemoteSettings::default());
    }

    #[test]
    fn out_of_range_file_values_are_refused_before_any_engine_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        for (text, key) in [
            ("[engine]\ncontext = 0\n", "engine.context = 0"),
            ("[engine]\ncontext = 1\n", "engine.context = 1"),
            ("[engine]\nthreads = 0\n", "engine.threads = 0"),
            ("[engine]\nparallel = 0\n", "engine.parallel = 0"),
            ("[engine]\nparallel = 1000\n", "engine.parallel = 1000"),
            (
                "[engines.gemma_cpp]\nseq_len = 2\n",
                "engines.gemma_cpp.seq_len = 2",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = Config::read_file(&file).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("out of range"),
                "{text}: {err}"
            );
        }
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

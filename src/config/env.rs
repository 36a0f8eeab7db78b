//! Every environment variable gemmactl reads, read here and nowhere else.
//!
//! Variables that override a `config.toml` setting are applied by [`apply`] (environment beats
//! the file, a flag beats both); the others — tool locations and terminal conventions that have
//! no place in the file — are gathered into [`Environment`] once, when the configuration loads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};

use super::backend::{parse_order, BackendRequest};
use super::bounds;
use super::Config;

/// How long a hardware probe may take unless `GEMMACTL_PROBE_TIMEOUT` (seconds) says otherwise.
/// CUDA's first initialisation can take several seconds on a big GPU; a hang is far longer.
pub(super) const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings that only the environment gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    /// The Python that runs pip for model downloads (`GEMMACTL_PYTHON`, else `python3`).
    pub python: String,
    /// Longest a driver or engine probe may run (`GEMMACTL_PROBE_TIMEOUT`, seconds).
    pub probe_timeout: Duration,
    /// The `openvino` folder of OpenVINO's Python package (`OPENVINO_INSTALL_DIR`).
    pub openvino_dir: Option<PathBuf>,
    /// The log filter (`GEMMACTL_LOG`, e.g. `debug`; default `info`).
    pub log_filter: Option<String>,
    /// `NO_COLOR` is set: no colours anywhere.
    pub no_color: bool,
    /// The editor for `/edit` (`VISUAL`, then `EDITOR`).
    pub editor: Option<String>,
    /// The terminal's type (`TERM`): on a `dumb` one the shell reads plain lines.
    pub term: Option<String>,
    /// The folders of `PATH`, where `gemma` is looked for last.
    pub search_path: Vec<PathBuf>,
    /// `GEMMACTL_HOME`, when set: written into MCP client registrations so the client's
    /// server uses the same home.
    pub home: Option<PathBuf>,
    /// `GEMMACTL_CACHE`, when set (for the same reason).
    pub cache: Option<PathBuf>,
    /// `GEMMACTL_MCP_TOKEN`: the bearer token `gemmactl mcp --http` requires of every request
    /// (and needs before it serves anything but a loopback address).
    pub mcp_token: Option<String>,
    /// `GEMMACTL_TEST_PROBE_FAULT=KIND:crash|hang`: makes a driver probe misbehave, so tests can
    /// prove a broken driver cannot take gemmactl down. Only in builds for tests.
    #[cfg(feature = "test-support")]
    pub probe_fault: Option<String>,
}

impl Default for Environment {
    fn default() -> Self {
        Environment {
            python: "python3".into(),
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            openvino_dir: None,
            log_filter: None,
            no_color: false,
            editor: None,
            term: None,
            search_path: Vec::new(),
            home: None,
            cache: None,
            mcp_token: None,
            #[cfg(feature = "test-support")]
            probe_fault: None,
        }
    }
}

impl Environment {
    /// Reads the process environment.
    pub fn read() -> Environment {
        Environment {
            python: non_empty_env("GEMMACTL_PYTHON").unwrap_or_else(|| "python3".into()),
            probe_timeout: non_empty_env("GEMMACTL_PROBE_TIMEOUT")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| *s > 0.0 && s.is_finite())
                .map(Duration::from_secs_f64)
                .unwrap_or(DEFAULT_PROBE_TIMEOUT),
            openvino_dir: std::env::var_os("OPENVINO_INSTALL_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            log_filter: non_empty_env("GEMMACTL_LOG"),
            // The convention: set and not empty means no colour, whatever the value.
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            editor: non_empty_env("VISUAL").or_else(|| non_empty_env("EDITOR")),
            term: non_empty_env("TERM"),
            search_path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
            home: non_empty_env("GEMMACTL_HOME").map(PathBuf::from),
            cache: non_empty_env("GEMMACTL_CACHE").map(PathBuf::from),
            // A token is taken as given: surrounding spaces would never match a header.
            mcp_token: non_empty_env("GEMMACTL_MCP_TOKEN").map(|t| t.trim().to_string()),
            #[cfg(feature = "test-support")]
            probe_fault: non_empty_env("GEMMACTL_TEST_PROBE_FAULT"),
        }
    }

    /// The variable a remote model's `api-key-env` names, if set and not blank. Secrets are read
    /// when needed and never kept in the configuration (which may be logged).
    pub fn secret(&self, name: &str) -> Option<String> {
        non_empty_env(name)
    }

    /// The API key `gemmactl serve` requires when no key file is given (`GEMMACTL_API_KEY`).
    pub fn serve_api_key(&self) -> Option<String> {
        self.secret("GEMMACTL_API_KEY")
    }
}

/// Applies the variables that override `config.toml` settings.
pub(super) fn apply(config: &mut Config) -> Result<()> {
    if let Some(v) = non_empty_env("GEMMACTL_MODEL") {
        config.default_model = v;
    }
    if let Some(v) = non_empty_env("GEMMACTL_ENGINE") {
        config.engine.path = Some(PathBuf::from(v));
    }
    // Engine settings are checked against the same ranges as their flags and config keys.
    if let Some(v) = bounded_env(&bounds::CONTEXT)? {
        config.engine.context = v;
    }
    if let Some(v) = bounded_env(&bounds::THREADS)? {
        config.engine.threads = Some(v);
    }
    if let Some(v) = bounded_env(&bounds::PARALLEL)? {
        config.engine.parallel = v;
    }
    if let Some(v) = non_empty_env("GEMMACTL_KV_CACHE_TYPE") {
        config.engine.kv_cache_type = v
            .parse()
            .map_err(|why| anyhow!("environment variable GEMMACTL_KV_CACHE_TYPE: {why}"))?;
    }
    if let Some(v) = non_empty_env("GEMMACTL_FLASH_ATTENTION") {
        config.engine.flash_attention = v
            .parse()
            .map_err(|why| anyhow!("environment variable GEMMACTL_FLASH_ATTENTION: {why}"))?;
    }
    if let Some(v) = bounded_env(&bounds::LOAD_TIMEOUT)? {
        config.engine.load_timeout_secs = v;
    }
    if let Some(v) = bounded_env(&bounds::MAX_MODELS)? {
        config.supervisor.max_models = v;
    }
    if let Some(v) = parse_env::<u64>("GEMMACTL_MEMORY_BUDGET_MIB")? {
        config.supervisor.memory_budget_mib = v;
    }
    if let Some(v) = parse_env::<u64>("GEMMACTL_IDLE_TTL")? {
        config.supervisor.idle_ttl_secs = v;
    }
    if let Some(v) = parse_env::<u32>("GEMMACTL_QUEUE_LENGTH")? {
        config.supervisor.queue_length = v;
    }
    if let Some(v) = non_empty_env("GEMMACTL_BACKEND") {
        config.engine.backend = BackendRequest::parse(&v).ok_or_else(|| {
            anyhow!("environment variable GEMMACTL_BACKEND={v:?} is not a backend: use auto, cpu, cuda, vulkan or openvino")
        })?;
    }
    if let Some(v) = non_empty_env("GEMMACTL_BACKEND_ORDER") {
        config.engine.backend_order = parse_order(&v).ok_or_else(|| {
            anyhow!("environment variable GEMMACTL_BACKEND_ORDER={v:?} is not a list of backends: use e.g. \"cuda,vulkan,openvino,cpu\"")
        })?;
    }
    if let Some(v) = non_empty_env("GEMMACTL_ENGINE_CUDA") {
        config.engine.builds.cuda = Some(PathBuf::from(v));
    }
    if let Some(v) = non_empty_env("GEMMACTL_ENGINE_VULKAN") {
        config.engine.builds.vulkan = Some(PathBuf::from(v));
    }
    if let Some(v) = non_empty_env("GEMMACTL_ENGINE_OPENVINO") {
        config.engine.builds.openvino = Some(PathBuf::from(v));
    }
    if let Some(v) = non_empty_env("GEMMACTL_SERVE_ADDR") {
        config.serve.addr = v;
    }
    if let Some(v) = non_empty_env("GEMMACTL_API_KEY_FILE") {
        config.serve.api_key_file = Some(PathBuf::from(v));
    }
    if let Some(v) = non_empty_env("GEMMACTL_ATTACH") {
        config.serve.attach = match v.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                return Err(anyhow!(
                    "environment variable GEMMACTL_ATTACH={v:?} is not a yes or no: use 1 or 0"
                ))
            }
        };
    }
    if let Some(v) = non_empty_env("GEMMA_BIN") {
        config.engines.gemma_cpp.binary = Some(PathBuf::from(v));
    }
    config.env = Environment::read();
    Ok(())
}

/// A variable's value, if it is set and not blank.
pub(super) fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A numeric variable of `bound`, parsed and checked against its range.
fn bounded_env<T: TryFrom<u64>>(bound: &bounds::Bound) -> Result<Option<T>> {
    let Some(name) = bound.env else {
        return Ok(None);
    };
    let Some(value) = parse_env::<u64>(name)? else {
        return Ok(None);
    };
    bound.check_env(value)?;
    T::try_from(value)
        .map(Some)
        .map_err(|_| anyhow!("environment variable {name}={value} is too large"))
}

fn parse_env<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match non_empty_env(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow!("environment variable {name}={v:?} is not a whole number: use digits only, or unset it")),
    }
}

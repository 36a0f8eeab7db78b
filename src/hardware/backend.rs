//! The names of compute backends and the settings that pick one.
//!
//! `Backend` is what actually runs a model (one gemma-engine build per backend: `gemma-engine` is
//! the CPU build, `gemma-engine-cuda` the CUDA one, ...). `BackendRequest` is what the user asked
//! for (`auto` or one backend); `EngineBuilds` says where the GPU builds are when they are not next
//! to gemmactl. They live here rather than in `config` so that the hardware module owns its words.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::config::EngineSettings;

/// A compute backend of gemma-engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
    Vulkan,
    Openvino,
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::Cpu,
        Backend::Cuda,
        Backend::Vulkan,
        Backend::Openvino,
    ];
    pub const GPU: [Backend; 3] = [Backend::Cuda, Backend::Vulkan, Backend::Openvino];

    /// The lower-case name used in config, flags and file names.
    pub fn id(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Vulkan => "vulkan",
            Backend::Openvino => "openvino",
        }
    }

    /// The name llama.cpp gives the backend (what the engine's `ready` and `--probe` report).
    pub fn label(self) -> &'static str {
        match self {
            Backend::Cpu => "CPU",
            Backend::Cuda => "CUDA",
            Backend::Vulkan => "Vulkan",
            Backend::Openvino => "OpenVINO",
        }
    }

    /// The file name of this backend's gemma-engine build.
    pub fn binary_name(self) -> String {
        let stem = match self {
            Backend::Cpu => "gemma-engine".to_string(),
            other => format!("gemma-engine-{}", other.id()),
        };
        format!("{stem}{}", std::env::consts::EXE_SUFFIX)
    }

    /// Whether a backend name reported by llama.cpp (`CUDA`, `Vulkan`, `OPENVINO`, ...) is this one.
    pub fn matches(self, reported: &str) -> bool {
        reported.to_ascii_lowercase().starts_with(self.id())
    }

    pub fn parse(text: &str) -> Option<Backend> {
        Backend::ALL
            .into_iter()
            .find(|b| b.id().eq_ignore_ascii_case(text.trim()))
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What the user asked for: `auto` (the first usable backend of `backend_order`) or one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendRequest {
    #[default]
    Auto,
    Cpu,
    Cuda,
    Vulkan,
    Openvino,
}

impl BackendRequest {
    pub fn parse(text: &str) -> Option<BackendRequest> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(BackendRequest::Auto),
            other => Backend::parse(other).map(BackendRequest::from),
        }
    }

    /// The one backend asked for, or `None` for `auto`.
    pub fn backend(self) -> Option<Backend> {
        match self {
            BackendRequest::Auto => None,
            BackendRequest::Cpu => Some(Backend::Cpu),
            BackendRequest::Cuda => Some(Backend::Cuda),
            BackendRequest::Vulkan => Some(Backend::Vulkan),
            BackendRequest::Openvino => Some(Backend::Openvino),
        }
    }
}

impl From<Backend> for BackendRequest {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Cpu => BackendRequest::Cpu,
            Backend::Cuda => BackendRequest::Cuda,
            Backend::Vulkan => BackendRequest::Vulkan,
            Backend::Openvino => BackendRequest::Openvino,
        }
    }
}

/// The default preference order of `backend = "auto"`: the fastest first, the CPU last.
pub fn default_order() -> Vec<Backend> {
    vec![
        Backend::Cuda,
        Backend::Vulkan,
        Backend::Openvino,
        Backend::Cpu,
    ]
}

/// `[engine.builds]`: paths of GPU builds of gemma-engine that are not next to gemmactl.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineBuilds {
    pub cuda: Option<PathBuf>,
    pub vulkan: Option<PathBuf>,
    pub openvino: Option<PathBuf>,
}

impl EngineBuilds {
    pub fn get(&self, backend: Backend) -> Option<&PathBuf> {
        match backend {
            Backend::Cpu => None,
            Backend::Cuda => self.cuda.as_ref(),
            Backend::Vulkan => self.vulkan.as_ref(),
            Backend::Openvino => self.openvino.as_ref(),
        }
    }
}

/// Environment overrides of the backend settings, called from `Config::apply_env` so the one
/// precedence (flag > environment > file > default) holds.
pub fn apply_env(engine: &mut EngineSettings) -> Result<()> {
    if let Some(v) = env("GEMMACTL_BACKEND") {
        match BackendRequest::parse(&v) {
            Some(r) => engine.backend = r,
            None => bail!("environment variable GEMMACTL_BACKEND={v:?} is not a backend: use auto, cpu, cuda, vulkan or openvino"),
        }
    }
    if let Some(v) = env("GEMMACTL_BACKEND_ORDER") {
        engine.backend_order = parse_order(&v)
            .ok_or_else(|| anyhow::anyhow!("environment variable GEMMACTL_BACKEND_ORDER={v:?} is not a list of backends: use e.g. \"cuda,vulkan,openvino,cpu\""))?;
    }
    if let Some(v) = env("GEMMACTL_ENGINE_CUDA") {
        engine.builds.cuda = Some(PathBuf::from(v));
    }
    if let Some(v) = env("GEMMACTL_ENGINE_VULKAN") {
        engine.builds.vulkan = Some(PathBuf::from(v));
    }
    if let Some(v) = env("GEMMACTL_ENGINE_OPENVINO") {
        engine.builds.openvino = Some(PathBuf::from(v));
    }
    Ok(())
}

/// `cuda, vulkan ,cpu` → the backends in that order; `None` if a name is unknown or the list empty.
pub fn parse_order(text: &str) -> Option<Vec<Backend>> {
    let order: Option<Vec<Backend>> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Backend::parse)
        .collect();
    order.filter(|o| !o.is_empty())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_llama_cpp_labels() {
        for b in Backend::ALL {
            assert_eq!(Backend::parse(b.id()), Some(b));
            assert!(b.matches(b.label()), "{b:?}");
        }
        assert!(Backend::Openvino.matches("OPENVINO"));
        assert!(!Backend::Cuda.matches("CPU"));
        assert_eq!(BackendRequest::parse(" Auto "), Some(BackendRequest::Auto));
        assert_eq!(BackendRequest::parse("metal"), None);
    }

    #[test]
    fn order_lists_parse_and_bad_names_are_refused() {
        assert_eq!(
            parse_order("vulkan, cpu"),
            Some(vec![Backend::Vulkan, Backend::Cpu])
        );
        assert_eq!(parse_order("cuda,directml"), None);
        assert_eq!(parse_order(" , "), None);
    }
}

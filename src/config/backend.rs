//! The settings that pick a compute backend: what the user asked for (`auto` or one backend), the
//! order `auto` tries, and where GPU builds of gemma-engine live when not next to gemmactl.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::domain::Backend;

/// What the user asked for: `auto` (the first usable backend of `backend_order`) or one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendRequest {
    /// The first usable backend of `engine.backend_order`.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA (NVIDIA).
    Cuda,
    /// Vulkan.
    Vulkan,
    /// OpenVINO (Intel).
    Openvino,
}

impl BackendRequest {
    /// Reads `auto` or a backend's id, ignoring case.
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
            // Never parsed from a request (see `Backend::parse`): a remote model picks nothing.
            Backend::Remote => BackendRequest::Auto,
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
    /// `gemma-engine-cuda`.
    pub cuda: Option<PathBuf>,
    /// `gemma-engine-vulkan`.
    pub vulkan: Option<PathBuf>,
    /// `gemma-engine-openvino`.
    pub openvino: Option<PathBuf>,
}

impl EngineBuilds {
    /// The configured build of `backend`, if any.
    pub fn get(&self, backend: Backend) -> Option<&PathBuf> {
        match backend {
            Backend::Cpu | Backend::Remote => None,
            Backend::Cuda => self.cuda.as_ref(),
            Backend::Vulkan => self.vulkan.as_ref(),
            Backend::Openvino => self.openvino.as_ref(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(BackendRequest::parse(" Auto "), Some(BackendRequest::Auto));
        assert_eq!(BackendRequest::parse("CUDA"), Some(BackendRequest::Cuda));
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

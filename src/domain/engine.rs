//! Which engine runs a model, and what it reports about itself once loaded.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::backend::Backend;

// The KV cache's element type and the flash attention setting are named by the engine protocol,
// so gemma-engine, the config file and the flags cannot spell them differently.
pub use engine_protocol::{check_kv_settings, FlashAttention, KvCacheType};

/// Which program serves a model. One spelling everywhere: the registry, `ps`, `doctor`, JSON
/// output and the history database all write `gemma-engine`, `gemma.cpp` or `remote`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// The bundled llama.cpp engine (`gemma-engine`), for GGUF files.
    #[serde(rename = "gemma-engine")]
    GemmaEngine,
    /// Google's gemma.cpp (`gemma`), for `.sbs` files, driven through its terminal protocol.
    /// (`gemma-cpp` is read too: registries written before the spelling was unified use it.)
    #[serde(rename = "gemma.cpp", alias = "gemma-cpp")]
    GemmaCpp,
    /// An OpenAI-compatible server elsewhere (vLLM, llama.cpp's server, ollama, another
    /// `gemmactl serve`), reached over HTTP.
    #[serde(rename = "remote")]
    Remote,
}

impl EngineKind {
    /// The one spelling of the engine's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::GemmaEngine => "gemma-engine",
            EngineKind::GemmaCpp => "gemma.cpp",
            EngineKind::Remote => "remote",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a loaded model file says about itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelFacts {
    /// The model file.
    pub path: String,
    /// The name in the file's metadata, if any.
    pub name: Option<String>,
    /// The architecture (e.g. `gemma3`).
    pub architecture: Option<String>,
    /// Context length the model was trained for, in tokens.
    pub train_context: u32,
    /// Parameter count.
    pub parameters: u64,
    /// Transformer layers.
    pub layers: u32,
    /// File size in bytes.
    pub size_bytes: u64,
    /// The model file's own chat template, if any.
    pub chat_template: Option<String>,
    /// Sliding-window size of the local-attention layers in tokens (0 if none).
    pub sliding_window: u32,
    /// The vocabulary has fill-in-the-middle tokens (see [`super::PromptFormat::FillInMiddle`]).
    #[serde(default)]
    pub fill_in_middle: bool,
}

/// A compute device an engine uses, with its memory in bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Device {
    /// The device's short name (e.g. `CUDA0`).
    pub name: String,
    /// What the driver calls it (e.g. the GPU's model).
    pub description: String,
    /// The backend name the engine reports (e.g. `CUDA`).
    pub backend: String,
    /// `cpu`, `gpu`, `igpu`, `accel` or `unknown`.
    pub kind: String,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Free memory in bytes when the engine looked.
    pub memory_free: u64,
}

/// What runs where: reported by `run --stats` and `--json`, `ps`, `/show` and stored with replies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineDescription {
    /// The engine program.
    pub engine: EngineKind,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// The model it serves.
    pub model: ModelFacts,
    /// The backend doing the work, as the engine's own ready report says.
    #[serde(with = "super::backend::label")]
    pub backend: Backend,
    /// The devices holding the model's layers.
    pub devices: Vec<Device>,
    /// Layers offloaded to a GPU (0 on the CPU).
    pub gpu_layers: u32,
    /// Context length in tokens shared by all decode slots.
    pub context: u32,
    /// Requests decoded together at most (decode slots).
    pub parallel: u32,
    /// CPU threads.
    pub threads: u32,
    /// Element type of the KV cache, for engines that report one (gemma-engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_type: Option<KvCacheType>,
    /// Flash attention as the engine was asked for it, for engines that report it (gemma-engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_attention: Option<FlashAttention>,
    /// Load time in milliseconds.
    pub load_ms: u64,
    /// Why this engine runs on the CPU (or a lesser backend) although a GPU was asked for or is
    /// present; set by the supervisor's launcher.
    pub fallback: Option<String>,
}

impl EngineDescription {
    /// The backend as stored with a reply: where it really ran, and why if that was a fallback.
    pub fn backend_with_fallback(&self) -> String {
        match &self.fallback {
            Some(reason) => format!("{} (fallback: {reason})", self.backend),
            None => self.backend.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_and_the_old_one_still_reads() {
        for kind in [
            EngineKind::GemmaEngine,
            EngineKind::GemmaCpp,
            EngineKind::Remote,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<EngineKind>(&json).unwrap(), kind);
        }
        let old: EngineKind = serde_json::from_str("\"gemma-cpp\"").unwrap();
        assert_eq!(old, EngineKind::GemmaCpp);
    }
}

//! What a model costs in memory, estimated before it is loaded.

use serde::Serialize;

/// Bytes a loaded model is expected to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// The weights (the model file's size).
    pub weights: u64,
    /// The KV cache at the chosen context and slot count.
    pub kv_cache: u64,
    /// Compute buffers and runtime.
    pub compute: u64,
}

impl MemoryEstimate {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.compute
    }
}

/// What a model needs from the machine at one context and slot count: its memory and its layers
/// (for a GPU offload). Worked out once per launch; the pool and the backend choice share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelNeeds {
    /// Transformer layers (0 when unknown: then only a full offload is considered).
    pub layers: u32,
    /// The memory estimate.
    pub estimate: MemoryEstimate,
}

/// Bytes as whole MiB, for sentences.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", (bytes + (1 << 19)) >> 20)
}

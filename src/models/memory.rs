//! Memory planning before any load: what a model will cost, and what the machine has free.
//!
//! The estimate follows PRODUCT.md: weights = the file's size; KV cache = cells × layers × KV
//! heads × (key + value size) × the KV cache type's bytes per value (2 for f16, 34/32 for q8_0,
//! 18/32 for q4_0: ggml's block sizes), where gemma-engine's sliding-window layers only keep
//! their window per sequence; plus a compute margin measured on Gemma 3 270M (peak RSS 346
//! MiB at context 8192 for a 241 MiB file and ~39 MiB of KV: ~66 MiB of buffers and runtime).

use std::path::Path;

use gguf::GgufInfo;

use crate::domain::{KvCacheType, MemoryEstimate, ModelNeeds};

/// Buffers and runtime beyond weights and KV cache, measured (see module docs).
const COMPUTE_MARGIN: u64 = 64 << 20;
/// Per sequence slot: logits and sampling state.
const PER_SLOT_MARGIN: u64 = 4 << 20;
/// Tokens per prompt chunk, which the sliding-window cache keeps on top of its window.
const UBATCH: u64 = 512;

/// What gemma-engine will need for this GGUF at this context, slot count and KV cache type.
pub fn estimate_gguf(
    info: &GgufInfo,
    context: u32,
    parallel: u32,
    kv: KvCacheType,
) -> MemoryEstimate {
    let context = context as u64;
    let layers = info.block_count.unwrap_or(0);
    let heads = info.head_count.unwrap_or(1).max(1);
    let kv_heads = info.head_count_kv.unwrap_or(heads);
    let head_size = info.embedding_length.unwrap_or(0) / heads;
    let values_per_cell_per_layer =
        kv_heads * (info.key_length.unwrap_or(head_size) + info.value_length.unwrap_or(head_size));
    let (swa_layers, window) = match info.sliding_window {
        Some(w) if w > 0 => (sliding_layers(info.architecture.as_deref(), layers), w),
        _ => (0, 0),
    };
    let swa_cells = context.min(window * parallel as u64 + UBATCH);
    let cells = (layers - swa_layers) * context + swa_layers * swa_cells;
    MemoryEstimate {
        weights: info.file_size,
        kv_cache: cells * values_per_cell_per_layer * kv.bytes_per_32_values() / 32,
        compute: COMPUTE_MARGIN + PER_SLOT_MARGIN * parallel as u64,
    }
}

/// What a model file needs at this context, slot count and KV cache type: its layers (for GPU
/// offload) and its memory estimate. Read once per launch; both the pool and the backend choice
/// use the result.
pub fn needs(path: &Path, context: u32, parallel: u32, kv: KvCacheType) -> ModelNeeds {
    match super::headers::inspect(path) {
        Ok(info) => ModelNeeds {
            layers: info.block_count.unwrap_or(0) as u32,
            estimate: estimate_gguf(&info, context, parallel, kv),
        },
        Err(_) => ModelNeeds {
            layers: 0,
            estimate: estimate_opaque(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)),
        },
    }
}

/// For a model file whose layout we cannot read (e.g. gemma.cpp's `.sbs`): the file plus a third.
pub fn estimate_opaque(file_size: u64) -> MemoryEstimate {
    MemoryEstimate {
        weights: file_size,
        kv_cache: file_size / 3,
        compute: COMPUTE_MARGIN,
    }
}

/// How many of a model's layers use the sliding window.
fn sliding_layers(architecture: Option<&str>, layers: u64) -> u64 {
    match architecture {
        // Gemma 3: five local layers, then one global.
        Some(a) if a.starts_with("gemma3") => layers - layers / 6,
        // Gemma 2 alternates local and global.
        Some(a) if a.starts_with("gemma2") => layers / 2,
        // Unknown pattern: assume half, which errs towards more memory than fewer.
        _ => layers / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma3_270m() -> GgufInfo {
        GgufInfo {
            version: 3,
            tensor_count: 236,
            metadata_count: 33,
            architecture: Some("gemma3".into()),
            name: None,
            context_length: Some(32768),
            block_count: Some(18),
            embedding_length: Some(640),
            head_count: Some(4),
            head_count_kv: Some(1),
            key_length: Some(256),
            value_length: Some(256),
            sliding_window: Some(512),
            file_type: Some(15),
            chat_template: None,
            parameter_count: 268_098_176,
            file_size: 253_113_024,
            data_end: 253_113_024,
            projector: None,
        }
    }

    #[test]
    fn gemma3_270m_matches_what_was_measured() {
        let e = estimate_gguf(&gemma3_270m(), 8192, 1, KvCacheType::F16);
        // 3 global layers × 8192 cells + 15 local layers × 1024 cells, 1 KiB per cell and layer.
        assert_eq!(e.kv_cache, (3 * 8192 + 15 * 1024) * 1024);
        let total_mib = e.total() >> 20;
        // Measured peak RSS: 346 MiB. The estimate may be a little above, never far below.
        assert!((340..=400).contains(&total_mib), "{total_mib} MiB");
    }

    #[test]
    fn more_slots_and_context_cost_more() {
        let at = |context, parallel| {
            estimate_gguf(&gemma3_270m(), context, parallel, KvCacheType::F16).total()
        };
        let one = at(8192, 1);
        assert!(at(8192, 4) > one && at(32768, 1) > one);
    }

    #[test]
    fn a_quantized_kv_cache_is_estimated_at_its_block_size() {
        let kv = |t| estimate_gguf(&gemma3_270m(), 32768, 4, t).kv_cache;
        let f16 = kv(KvCacheType::F16);
        // ggml's blocks: 32 values in 34 bytes (q8_0) and in 18 (q4_0), against 64 for f16.
        assert_eq!(kv(KvCacheType::Q8_0), f16 * 34 / 64);
        assert_eq!(kv(KvCacheType::Q4_0), f16 * 18 / 64);
        assert!(kv(KvCacheType::Q4_0) < kv(KvCacheType::Q8_0));
    }
}

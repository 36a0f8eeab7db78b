//! The `config` blob of a single-file `.sbs`: gemma.cpp's serialized `ModelConfig` (facts from
//! gemma.cpp's `gemma/configs.h` at commit 3ed403e), in the fields format of `fields.rs`.
//!
//! The field order below is the file format: `visit` is used both to read a file's config and to
//! write one (`models import`). Besides decoding, [`ModelConfig::problems`] checks what gemma.cpp
//! asserts when it loads a config (a known model, a prompt wrapping, a weight type, head sizes it
//! supports) and the consistency a damaged config breaks (as many layer records and attention
//! windows as layers, every layer as wide as the model).
//!
//! No dependencies beyond `std` and the sibling `fields` module: gemma-engine includes it too.

use crate::fields::{self, FieldError, Fields, ReadSummary};

/// gemma.cpp's `Model` enum: value and model specifier prefix. Values 1, 2, 5, 6, 8 and 9 belong
/// to removed models (Gemma 1, RecurrentGemma) and are refused.
pub const MODELS: [(u32, &str); 12] = [
    (3, "9b"),
    (4, "27b"),
    (7, "gemma2-2b"),
    (10, "paligemma2-3b-224"),
    (11, "paligemma2-3b-448"),
    (12, "paligemma2-10b-224"),
    (13, "paligemma2-10b-448"),
    (14, "gemma3-4b"),
    (15, "gemma3-1b"),
    (16, "gemma3-12b"),
    (17, "gemma3-27b"),
    (18, "gemma3-270m"),
];
/// `Model::GEMMA3_1B`.
pub const MODEL_GEMMA3_1B: u32 = 15;
/// `Model::GEMMA3_270M`.
pub const MODEL_GEMMA3_270M: u32 = 18;

/// gemma.cpp's `Type` enum, in order, and the bits each element takes.
pub const TYPE_NAMES: [&str; 9] = [
    "unknown", "f32", "bf16", "sfp", "nuq", "f64", "u32", "u64", "i8",
];
/// Bits per element of each `Type`, indexed like [`TYPE_NAMES`] (0 for `unknown`).
pub const TYPE_BITS: [u32; 9] = [0, 32, 16, 8, 4, 64, 32, 64, 8];
/// `Type` value of f32.
pub const TYPE_F32: u32 = 1;
/// `Type` value of bf16.
pub const TYPE_BF16: u32 = 2;
/// `Type` value of NUQ (4-bit non-uniform quantization).
pub const TYPE_NUQ: u32 = 4;
/// `Type` value of i8.
pub const TYPE_I8: u32 = 8;

/// `PromptWrapping`: how gemma.cpp wraps a prompt; the suffix is the specifier's last part.
pub const WRAPPINGS: [(&str, &str); 4] = [
    ("-it", "Gemma chat template (instruct)"),
    ("-pt", "none (pretrained base model)"),
    ("-vlm", "Gemma chat template with images"),
    ("-pg", "PaliGemma"),
];
/// `PromptWrapping::GEMMA_IT`: the Gemma chat template (instruct models).
pub const WRAPPING_IT: u32 = 0;
/// `PromptWrapping::GEMMA_PT`: no wrapping (pretrained base models).
pub const WRAPPING_PT: u32 = 1;

/// `PostNormType::Scale`: layers with post-attention and post-FFN norms.
pub const POST_NORM_SCALE: u32 = 1;
/// `LayerAttentionType::kGemma`: a text transformer layer.
pub const LAYER_GEMMA: u32 = 0;
/// `LayerAttentionType::kVit`: a layer of the vision tower.
pub const LAYER_VIT: u32 = 1;
/// gemma.cpp refuses larger heads (`kMaxQKVDim`).
pub const MAX_QKV_DIM: u32 = 1024;

/// The specifier prefix of a `Model` value (e.g. `gemma3-270m` for 18); `None` for 0 and for
/// values gemma.cpp no longer knows.
pub fn model_prefix(model: u32) -> Option<&'static str> {
    MODELS.iter().find(|(m, _)| *m == model).map(|(_, p)| *p)
}

/// The name of a `Type` value (e.g. `bf16` for 2); `unknown` when out of range.
pub fn type_name(ty: u32) -> &'static str {
    TYPE_NAMES.get(ty as usize).copied().unwrap_or("unknown")
}

/// One transformer layer (`LayerConfig`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LayerConfig {
    /// Width of the layer's input and output (the model's `model_dim` for text layers).
    pub model_dim: u32,
    /// Formerly used for Griffin; kept for the field order.
    pub unused_griffin_dim: u32,
    /// Hidden width of the feed-forward network.
    pub ff_hidden_dim: u32,
    /// Number of query heads.
    pub heads: u32,
    /// Number of key/value heads (fewer than `heads` with grouped-query attention).
    pub kv_heads: u32,
    /// Length of each head's query, key and value vectors (the head size).
    pub qkv_dim: u32,
    /// Formerly used for Griffin; kept for the field order.
    pub unused_conv1d_width: u32,
    /// Whether the feed-forward network has biases (`ffw_gat_b`, `ffw_out_b`).
    pub ff_biases: bool,
    /// Formerly used for Griffin; kept for the field order.
    pub unused_softmax_attn_output_biases: bool,
    /// gemma.cpp's `optimized_gating` (set for Gemma 3 layers).
    pub optimized_gating: bool,
    /// `PostNormType`: [`POST_NORM_SCALE`] adds post-attention and post-FFN norms; 0 has none.
    pub post_norm: u32,
    /// `LayerAttentionType`: [`LAYER_GEMMA`] or [`LAYER_VIT`].
    pub attention_type: u32,
    /// `ActivationType`: 0 (GELU), the only value accepted.
    pub activation: u32,
    /// `PostQKType`: what is applied to queries and keys after projection (0: RoPE, 1: half RoPE).
    pub post_qk: u32,
    /// Whether queries and keys are normalized (`query_norm`, `key_norm`; Gemma 3).
    pub use_qk_norm: bool,
}

impl LayerConfig {
    /// A Gemma 3 text layer.
    pub fn gemma3(
        model_dim: u32,
        ff_hidden_dim: u32,
        heads: u32,
        kv_heads: u32,
        qkv_dim: u32,
    ) -> LayerConfig {
        LayerConfig {
            model_dim,
            ff_hidden_dim,
            heads,
            kv_heads,
            qkv_dim,
            optimized_gating: true,
            post_norm: POST_NORM_SCALE,
            use_qk_norm: true,
            ..LayerConfig::default()
        }
    }

    /// Reads or writes the layer's fields in gemma.cpp's order.
    pub fn visit(&mut self, f: &mut Fields) {
        f.u32("model_dim", &mut self.model_dim);
        f.u32("unused_griffin_dim", &mut self.unused_griffin_dim);
        f.u32("ff_hidden_dim", &mut self.ff_hidden_dim);
        f.u32("heads", &mut self.heads);
        f.u32("kv_heads", &mut self.kv_heads);
        f.u32("qkv_dim", &mut self.qkv_dim);
        f.u32("unused_conv1d_width", &mut self.unused_conv1d_width);
        f.bool("ff_biases", &mut self.ff_biases);
        f.bool(
            "unused_softmax_attn_output_biases",
            &mut self.unused_softmax_attn_output_biases,
        );
        f.bool("optimized_gating", &mut self.optimized_gating);
        f.enumeration("post_norm", &mut self.post_norm, |v| v < 2);
        f.enumeration("type", &mut self.attention_type, |v| v < 2);
        f.enumeration("activation", &mut self.activation, |v| v < 1);
        // gemma.cpp checks this one against PostNormType's range (2), which is also PostQKType's.
        f.enumeration("post_qk", &mut self.post_qk, |v| v < 2);
        f.bool("use_qk_norm", &mut self.use_qk_norm);
    }
}

/// A vector of nested layer records.
fn layers(f: &mut Fields, name: &str, layers: &mut Vec<LayerConfig>) {
    let Some(n) = f.count(name, layers.len()) else {
        return;
    };
    if f.is_reading() {
        layers.resize(n, LayerConfig::default());
    }
    for (i, layer) in layers.iter_mut().enumerate() {
        f.nested(&format!("{name}[{i}]"), |f| layer.visit(f));
    }
}

/// The vision tower (`VitConfig`); empty for text-only models.
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    /// Width of the vision tower's layers.
    pub model_dim: u32,
    /// Number of image patches, the rows of `img_pos_emb`.
    pub seq_len: u32,
    /// gemma.cpp's `num_scales` for the vision tower.
    pub num_scales: u32,
    /// Side of a square image patch, in pixels.
    pub patch_width: u32,
    /// Side of the square input image, in pixels.
    pub image_size: u32,
    /// The vision tower's layers.
    pub layer_configs: Vec<LayerConfig>,
    /// Pooling of image tokens (1: none).
    pub pool_dim: u32,
}

impl Default for VitConfig {
    fn default() -> VitConfig {
        VitConfig {
            model_dim: 0,
            seq_len: 0,
            num_scales: 0,
            patch_width: 14,
            image_size: 224,
            layer_configs: Vec::new(),
            pool_dim: 1,
        }
    }
}

impl VitConfig {
    /// Reads or writes the vision tower's fields in gemma.cpp's order.
    pub fn visit(&mut self, f: &mut Fields) {
        f.u32("model_dim", &mut self.model_dim);
        f.u32("seq_len", &mut self.seq_len);
        f.u32("num_scales", &mut self.num_scales);
        f.u32("patch_width", &mut self.patch_width);
        f.u32("image_size", &mut self.image_size);
        layers(f, "layer_configs", &mut self.layer_configs);
        f.u32("pool_dim", &mut self.pool_dim);
    }
}

/// gemma.cpp's `ModelConfig`, as stored in the `config` blob.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Major version of the model family, which gemma.cpp bumps for architecture changes.
    pub model_family_version: u32,
    /// For display only, e.g. `Gemma3_270M`.
    pub display_name: String,
    /// `Model` value, one of [`MODELS`] (0: unknown, which gemma.cpp refuses).
    pub model: u32,
    /// `PromptWrapping`, an index into [`WRAPPINGS`].
    pub wrapping: u32,
    /// Weight `Type`, an index into [`TYPE_NAMES`].
    pub weight: u32,
    /// Number of transformer layers.
    pub num_layers: u32,
    /// Width of a token's embedding and of the residual stream.
    pub model_dim: u32,
    /// Tokens in the vocabulary (rows of the embedding).
    pub vocab_size: u32,
    /// Longest context, in tokens; also the attention window of global layers.
    pub max_seq_len: u32,
    /// No longer set nor used by gemma.cpp; kept for the field order.
    pub unused_num_tensor_scales: u32,
    /// Soft cap on attention logits (0: none).
    pub att_cap: f32,
    /// Soft cap on the final logits (0: none).
    pub final_cap: f32,
    /// Whether absolute positional embeddings are used.
    pub absolute_pe: bool,
    /// Formerly used for Griffin; kept for the field order.
    pub unused_use_local_attention: bool,
    /// `QueryScaleType`: 0 scales queries by 1/sqrt(`qkv_dim`), 1 by 1/sqrt(`model_dim` / `heads`).
    pub query_scale: u32,
    /// One record per layer, `num_layers` of them.
    pub layer_configs: Vec<LayerConfig>,
    /// Attention window of each layer, in tokens (`max_seq_len` for a global layer).
    pub attention_window_sizes: Vec<u32>,
    /// gemma.cpp's `norm_num_groups` (1 by default).
    pub norm_num_groups: u32,
    /// The vision tower; empty for text-only models.
    pub vit_config: VitConfig,
    /// Pooling of image tokens (1: none); gemma.cpp uses it only for its copy of the ViT config.
    pub pool_dim: u32,
    /// End-of-sequence token id.
    pub eos_id: i32,
    /// A second token id that ends generation (Gemma 3: 106, `<end_of_turn>`).
    pub secondary_eos_id: i32,
    /// Base names (without a layer suffix) of the tensors a pre-2025 file's scales belong to.
    pub scale_base_names: Vec<String>,
}

impl Default for ModelConfig {
    /// gemma.cpp's defaults, which a reader keeps for fields an older file lacks.
    fn default() -> ModelConfig {
        ModelConfig {
            model_family_version: 1,
            display_name: String::new(),
            model: 0,
            wrapping: WRAPPING_PT,
            weight: 0,
            num_layers: 0,
            model_dim: 0,
            vocab_size: 0,
            max_seq_len: 0,
            unused_num_tensor_scales: 0,
            att_cap: 0.0,
            final_cap: 0.0,
            absolute_pe: false,
            unused_use_local_attention: false,
            query_scale: 0,
            layer_configs: Vec::new(),
            attention_window_sizes: Vec::new(),
            norm_num_groups: 1,
            vit_config: VitConfig::default(),
            pool_dim: 1,
            eos_id: 1,
            secondary_eos_id: 1,
            scale_base_names: Vec::new(),
        }
    }
}

/// Why a `config` blob cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Not a whole number of u32 words.
    Length(usize),
    /// A field gemma.cpp's reader refuses.
    Field(FieldError),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Length(n) => {
                write!(f, "is {n} bytes, not a whole number of 4-byte fields")
            }
            ConfigError::Field(e) => write!(f, "{e}"),
        }
    }
}

impl ModelConfig {
    /// Reads or writes the whole config, one structure, in gemma.cpp's order.
    pub fn visit(&mut self, f: &mut Fields) {
        f.nested("", |f| {
            f.u32("model_family_version", &mut self.model_family_version);
            f.string("display_name", &mut self.display_name);
            f.enumeration("model", &mut self.model, |m| {
                m == 0 || model_prefix(m).is_some()
            });
            f.enumeration("wrapping", &mut self.wrapping, |w| {
                (w as usize) < WRAPPINGS.len()
            });
            f.enumeration("weight", &mut self.weight, |t| {
                (t as usize) < TYPE_NAMES.len()
            });
            f.u32("num_layers", &mut self.num_layers);
            f.u32("model_dim", &mut self.model_dim);
            f.u32("vocab_size", &mut self.vocab_size);
            f.u32("max_seq_len", &mut self.max_seq_len);
            f.u32(
                "unused_num_tensor_scales",
                &mut self.unused_num_tensor_scales,
            );
            f.f32("att_cap", &mut self.att_cap);
            f.f32("final_cap", &mut self.final_cap);
            f.bool("absolute_pe", &mut self.absolute_pe);
            f.bool(
                "unused_use_local_attention",
                &mut self.unused_use_local_attention,
            );
            f.enumeration("query_scale", &mut self.query_scale, |q| q < 2);
            layers(f, "layer_configs", &mut self.layer_configs);
            f.u32_vec("attention_window_sizes", &mut self.attention_window_sizes);
            f.u32("norm_num_groups", &mut self.norm_num_groups);
            f.nested("vit_config", |f| self.vit_config.visit(f));
            f.u32("pool_dim", &mut self.pool_dim);
            f.i32("eos_id", &mut self.eos_id);
            f.i32("secondary_eos_id", &mut self.secondary_eos_id);
            f.string_vec("scale_base_names", &mut self.scale_base_names);
        });
    }

    /// Decodes a `config` blob.
    pub fn read(bytes: &[u8]) -> Result<(ModelConfig, ReadSummary), ConfigError> {
        let words = fields::words(bytes).ok_or(ConfigError::Length(bytes.len()))?;
        let mut config = ModelConfig::default();
        let mut f = Fields::reader(&words, 0);
        config.visit(&mut f);
        let summary = f.finish_read().map_err(ConfigError::Field)?;
        Ok((config, summary))
    }

    /// Encodes the config as a `config` blob.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FieldError> {
        let mut copy = self.clone();
        let mut f = Fields::writer();
        copy.visit(&mut f);
        f.finish_write().map(|w| fields::bytes(&w))
    }

    /// gemma.cpp's model specifier, e.g. `gemma3-270m-bf16-pt`.
    pub fn specifier(&self) -> String {
        format!(
            "{}-{}{}",
            model_prefix(self.model).unwrap_or("unknown"),
            type_name(self.weight),
            WRAPPINGS.get(self.wrapping as usize).map_or("-?", |w| w.0)
        )
    }

    /// Whether gemma.cpp wraps prompts in Gemma's chat template (instruct models).
    pub fn chat(&self) -> bool {
        self.wrapping != WRAPPING_PT
    }

    /// The model family prefix, e.g. `gemma3-270m`.
    pub fn family(&self) -> Option<&'static str> {
        model_prefix(self.model)
    }

    /// What is wrong with a decoded config, as clauses ("names model 0 (unknown)"); empty when
    /// gemma.cpp would accept it and it is consistent.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.model == 0 {
            out.push("names no model (model 0, which gemma.cpp refuses)".to_string());
        }
        if self.weight == 0 {
            out.push("names no weight type (type 0, which gemma.cpp refuses)".to_string());
        }
        if self.layer_configs.len() != self.num_layers as usize {
            out.push(format!(
                "says num_layers is {} but holds {} layer records",
                self.num_layers,
                self.layer_configs.len()
            ));
        }
        if self.attention_window_sizes.len() != self.layer_configs.len() {
            out.push(format!(
                "holds {} attention window sizes for {} layers",
                self.attention_window_sizes.len(),
                self.layer_configs.len()
            ));
        }
        if self.num_layers == 0
            || self.model_dim == 0
            || self.vocab_size == 0
            || self.max_seq_len == 0
        {
            out.push(format!(
                "has a zero dimension (num_layers {}, model_dim {}, vocab_size {}, max_seq_len {})",
                self.num_layers, self.model_dim, self.vocab_size, self.max_seq_len
            ));
        }
        for (i, w) in self.attention_window_sizes.iter().enumerate() {
            if *w == 0 || *w > self.max_seq_len {
                out.push(format!(
                    "has attention window {w} for layer {i}, outside 1..={} (max_seq_len)",
                    self.max_seq_len
                ));
                break;
            }
        }
        if let Some(odd) = odd_layer(&self.layer_configs) {
            out.push(odd);
        }
        for (i, l) in self.layer_configs.iter().enumerate() {
            if l.qkv_dim > MAX_QKV_DIM {
                out.push(format!(
                    "gives layer {i} a head size of {}, more than gemma.cpp's limit of {MAX_QKV_DIM}",
                    l.qkv_dim
                ));
                break;
            }
            if l.attention_type == LAYER_GEMMA && l.model_dim != self.model_dim {
                out.push(format!(
                    "gives layer {i} a width of {} in a model {} wide",
                    l.model_dim, self.model_dim
                ));
                break;
            }
            if l.heads == 0
                || l.kv_heads == 0
                || l.qkv_dim == 0
                || l.ff_hidden_dim == 0
                || l.kv_heads > l.heads
                || l.heads % l.kv_heads != 0
            {
                out.push(format!(
                    "gives layer {i} impossible attention or FFN sizes (heads {}, kv_heads {}, qkv_dim {}, ff_hidden_dim {})",
                    l.heads, l.kv_heads, l.qkv_dim, l.ff_hidden_dim
                ));
                break;
            }
        }
        for (name, id) in [
            ("eos_id", self.eos_id),
            ("secondary_eos_id", self.secondary_eos_id),
        ] {
            if id < 0 || id as u32 >= self.vocab_size.max(1) {
                out.push(format!(
                    "has {name} {id}, outside the vocabulary of {}",
                    self.vocab_size
                ));
            }
        }
        out
    }
}

/// Every model gemma.cpp knows builds its text layers from one `LayerConfig` (and its vision
/// layers from another), so a layer that differs from all the others of its kind was damaged.
/// Names the layer and the field.
fn odd_layer(layers: &[LayerConfig]) -> Option<String> {
    for kind in [LAYER_GEMMA, LAYER_VIT] {
        let same: Vec<(usize, &LayerConfig)> = layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.attention_type == kind)
            .collect();
        if same.len() < 3 {
            continue;
        }
        // The common layer: the one most others equal (two of the first three agree).
        let Some(&(_, common)) = same
            .iter()
            .take(3)
            .find(|(_, a)| same.iter().filter(|(_, b)| b == a).count() * 2 > same.len())
        else {
            continue;
        };
        let Some((i, odd)) = same.iter().find(|(_, l)| *l != common) else {
            continue;
        };
        let fields: [(&str, u64, u64); 9] = [
            ("model_dim", odd.model_dim.into(), common.model_dim.into()),
            (
                "ff_hidden_dim",
                odd.ff_hidden_dim.into(),
                common.ff_hidden_dim.into(),
            ),
            ("heads", odd.heads.into(), common.heads.into()),
            ("kv_heads", odd.kv_heads.into(), common.kv_heads.into()),
            ("qkv_dim", odd.qkv_dim.into(), common.qkv_dim.into()),
            ("post_norm", odd.post_norm.into(), common.post_norm.into()),
            (
                "activation",
                odd.activation.into(),
                common.activation.into(),
            ),
            ("post_qk", odd.post_qk.into(), common.post_qk.into()),
            (
                "use_qk_norm",
                u64::from(odd.use_qk_norm),
                u64::from(common.use_qk_norm),
            ),
        ];
        return Some(match fields.iter().find(|(_, a, b)| a != b) {
            Some((name, a, b)) => {
                format!("gives layer {i} {name} = {a} where every other layer has {b}")
            }
            None => format!("gives layer {i} settings no other layer has"),
        });
    }
    None
}

/// The config gemma.cpp ships for a Gemma 3 text model with these sizes (`configs.cc`), for
/// weights of type `weight`; `None` for sizes it has no text-only model for.
// The arguments are the sizes a GGUF header gives, one by one, as gemma.cpp's own config
// functions take them; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn gemma3_text(
    num_layers: u32,
    model_dim: u32,
    ff_hidden_dim: u32,
    heads: u32,
    kv_heads: u32,
    qkv_dim: u32,
    vocab_size: u32,
    max_seq_len: u32,
    sliding_window: u32,
    weight: u32,
    chat: bool,
) -> Option<ModelConfig> {
    let (model, display_name) = match (num_layers, model_dim) {
        (18, 640) => (MODEL_GEMMA3_270M, "Gemma3_270M"),
        (26, 1152) => (MODEL_GEMMA3_1B, "Gemma3_1B"),
        _ => return None,
    };
    let layer = LayerConfig::gemma3(model_dim, ff_hidden_dim, heads, kv_heads, qkv_dim);
    // Five sliding-window layers, then one global layer, repeated.
    let windows = (0..num_layers)
        .map(|i| {
            if i % 6 == 5 {
                max_seq_len
            } else {
                sliding_window
            }
        })
        .collect();
    Some(ModelConfig {
        display_name: display_name.to_string(),
        model,
        wrapping: if chat { WRAPPING_IT } else { WRAPPING_PT },
        weight,
        num_layers,
        model_dim,
        vocab_size,
        max_seq_len,
        layer_configs: vec![layer; num_layers as usize],
        attention_window_sizes: windows,
        eos_id: 1,
        secondary_eos_id: 106,
        scale_base_names: [
            "att_ein",
            "qkv_ein",
            "gr_lin_x_w",
            "gr_lin_y_w",
            "gr_lin_out_w",
            "gr_gate_w",
            "gating_ein",
            "linear_w",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..ModelConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g270m(chat: bool) -> ModelConfig {
        gemma3_text(
            18, 640, 2048, 4, 1, 256, 262144, 32768, 512, TYPE_BF16, chat,
        )
        .unwrap()
    }

    #[test]
    fn round_trips_and_names_the_model() {
        let c = g270m(false);
        let bytes = c.to_bytes().unwrap();
        let (back, summary) = ModelConfig::read(&bytes).unwrap();
        assert_eq!(back, c);
        assert_eq!((summary.missing, summary.extra), (0, 0));
        assert_eq!(back.specifier(), "gemma3-270m-bf16-pt");
        assert_eq!(g270m(true).specifier(), "gemma3-270m-bf16-it");
        assert!(back.problems().is_empty(), "{:?}", back.problems());
        assert_eq!(back.attention_window_sizes[5], 32768);
        assert_eq!(back.attention_window_sizes[4], 512);
    }

    #[test]
    fn damage_is_named() {
        let bytes = g270m(false).to_bytes().unwrap();
        let words = fields::words(&bytes).unwrap();
        // Word 6 is `model` (size, version, name length, 3 name words, model).
        assert_eq!(words[6], MODEL_GEMMA3_270M);
        let mut w = words.clone();
        w[6] = 1;
        let err = ModelConfig::read(&fields::bytes(&w))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "field model is 1, which is not one of its values");
        // A damaged layer is told apart from the others.
        let mut c = g270m(false);
        c.layer_configs[10].heads = 4294966016;
        assert_eq!(
            c.problems(),
            vec!["gives layer 10 heads = 4294966016 where every other layer has 4"]
        );
        let mut w = words.clone();
        w[9] = 17; // num_layers
        let (c, _) = ModelConfig::read(&fields::bytes(&w)).unwrap();
        assert_eq!(
            c.problems(),
            vec!["says num_layers is 17 but holds 18 layer records"]
        );
        assert!(ModelConfig::read(&bytes[..bytes.len() - 1]).is_err());
    }
}

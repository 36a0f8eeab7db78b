//! Cross-checks a single-file `.sbs`'s table of contents against its config and its blob
//! directory, the way gemma.cpp does when it loads one (`gemma/model_store.cc`,
//! `gemma/tensor_info.cc`, `gemma/weights.{h,cc}` at commit 3ed403e), so a damaged file is refused
//! before launch with the tensor and the field named, instead of an `Abort at ...` from the binary.
//!
//! What gemma.cpp refuses, and so is refused here: a toc record naming no blob; a tensor whose
//! shape differs from the one its config implies; a blob whose size is not the tensor's type ×
//! shape; a missing required tensor (embedding, final norm, per layer the norms its config asks
//! for, one of each alternative attention / QKV / FFN layout); a bias that is not f32; a smallest
//! tensor type other than the config's weight type. Also refused, as damage gemma.cpp would load
//! silently: element sizes and counts that disagree with the type, a stride that is not packed, a
//! non-positive scale or an f32/bf16 scale other than 1, duplicate records.

use std::collections::{HashMap, HashSet};

use crate::config::{
    type_name, LayerConfig, ModelConfig, LAYER_GEMMA, POST_NORM_SCALE, TYPE_BF16, TYPE_BITS,
    TYPE_F32,
};
use crate::toc::{element_bytes, num_elements, TocEntry};

/// Tensor types gemma.cpp stores weights in.
const WEIGHT_TYPES: [u32; 5] = [1, 2, 3, 4, 8];

/// What a name means to gemma.cpp: the (rows, cols) its config implies and whether it must be f32.
struct Expected {
    rows: u64,
    cols: u64,
    f32_only: bool,
}

fn shape(rows: u32, cols: u32) -> Option<Expected> {
    Some(Expected {
        rows: rows as u64,
        cols: cols as u64,
        f32_only: false,
    })
}

fn f32_shape(rows: u32, cols: u32) -> Option<Expected> {
    Some(Expected {
        rows: rows as u64,
        cols: cols as u64,
        f32_only: true,
    })
}

/// `name` split into its base and layer index (`qkv1_w_9` → `qkv1_w`, 9).
fn split_layer(name: &str) -> (&str, Option<usize>) {
    match name.rsplit_once('_') {
        Some((base, idx)) if !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) => {
            (base, idx.parse().ok())
        }
        _ => (name, None),
    }
}

/// The shape gemma.cpp's tensor registry gives `name` under `config`; `None` for names it does not
/// read (those are ignored, as gemma.cpp ignores them).
fn expected(config: &ModelConfig, name: &str) -> Option<Expected> {
    let md = config.model_dim;
    let vit = &config.vit_config;
    let vmd = vit.model_dim;
    match split_layer(name) {
        (base, None) => match base {
            "c_embedding" => shape(config.vocab_size, md),
            "c_final_norm" => shape(1, md),
            "enc_norm_bias" | "enc_norm_scale" | "mm_embed_norm" => shape(1, vmd),
            "img_emb_bias" => f32_shape(1, vmd),
            "img_emb_kernel" => shape(
                vmd,
                vit.patch_width
                    .wrapping_mul(vit.patch_width)
                    .wrapping_mul(3),
            ),
            "img_head_bias" => f32_shape(1, md),
            "img_head_kernel" => shape(md, vmd),
            "img_pos_emb" => shape(vit.seq_len, vmd),
            _ => None,
        },
        (base, Some(i)) => {
            if let Some(l) = vit.layer_configs.get(i) {
                let e = vit_layer(base, l, vmd);
                if e.is_some() {
                    return e;
                }
            }
            let l = config.layer_configs.get(i)?;
            let (h, kv, q, ff) = (l.heads, l.kv_heads, l.qkv_dim, l.ff_hidden_dim);
            match base {
                "key_norm" | "query_norm" => shape(1, q),
                "qkv1_w" => shape(h.wrapping_mul(q), md),
                "qkv2_w" => shape(2u32.wrapping_mul(kv).wrapping_mul(q), md),
                "qkv_ein" => shape(h.wrapping_add(kv.wrapping_mul(2)).wrapping_mul(q), md),
                "attn_ob" | "ffw_out_b" => f32_shape(1, md),
                "gating_ein" => shape(ff.wrapping_mul(2), md),
                "gating1_w" | "gating2_w" => shape(ff, md),
                "linear_w" => shape(md, ff),
                "pre_att_ns" | "pre_ff_ns" | "post_att_ns" | "post_ff_ns" => shape(1, md),
                "ffw_gat_b" => f32_shape(1, ff.wrapping_mul(2)),
                "att_ein" => shape(h.wrapping_mul(md), q),
                "att_w" => shape(md, h.wrapping_mul(q)),
                _ => None,
            }
        }
    }
}

fn vit_layer(base: &str, l: &LayerConfig, vmd: u32) -> Option<Expected> {
    let (h, kv, q, ff) = (l.heads, l.kv_heads, l.qkv_dim, l.ff_hidden_dim);
    match base {
        "attn_out_w" => shape(vmd, h.wrapping_mul(q)),
        "attn_out_b" | "linear_1_b" => f32_shape(1, vmd),
        "qkv_ein_w" => shape(h.wrapping_mul(3).wrapping_mul(q), vmd),
        "qkv_ein_b" => f32_shape(h.wrapping_add(kv.wrapping_mul(2)), q),
        "linear_0_w" => shape(ff, vmd),
        "linear_0_b" => f32_shape(1, ff),
        "linear_1_w" => shape(vmd, ff),
        "ln_0_bias" | "ln_0_scale" | "ln_1_bias" | "ln_1_scale" => shape(1, vmd),
        _ => None,
    }
}

/// Checks `toc` against `config` and the blob directory (`blobs`: key → size). Returns the first
/// problem as a clause that names the tensor, e.g. "records tensor qkv1_w_9 as 1024 × 4294966655
/// where the config calls for 1024 × 640".
pub fn check(
    config: &ModelConfig,
    toc: &[TocEntry],
    blobs: &HashMap<&str, u64>,
) -> Result<(), String> {
    if toc.is_empty() {
        return Err("lists no tensors".into());
    }
    let mut seen = HashSet::new();
    let mut min_bits: Option<(u32, u32)> = None;
    for e in toc {
        let n = &e.name;
        if !seen.insert(n.as_str()) {
            return Err(format!("lists tensor {n} twice"));
        }
        let Some(&size) = blobs.get(n.as_str()) else {
            return Err(format!(
                "lists tensor {n}, which is not in the file's blob directory"
            ));
        };
        if !WEIGHT_TYPES.contains(&e.ty) {
            return Err(format!(
                "gives tensor {n} type {} ({}), which gemma.cpp does not store weights in",
                e.ty,
                type_name(e.ty)
            ));
        }
        let bits = TYPE_BITS[e.ty as usize];
        if min_bits.is_none_or(|(b, _)| bits < b) {
            min_bits = Some((bits, e.ty));
        }
        if let Some(x) = expected(config, n) {
            if (e.rows as u64, e.cols as u64) != (x.rows, x.cols) {
                return Err(format!(
                    "records tensor {n} as {} × {} where the config calls for {} × {}",
                    e.rows, e.cols, x.rows, x.cols
                ));
            }
            if x.f32_only && e.ty != TYPE_F32 {
                return Err(format!(
                    "gives tensor {n} type {}, but gemma.cpp reads it only as f32",
                    type_name(e.ty)
                ));
            }
        }
        let want_bytes = element_bytes(e.ty);
        let want_elements = num_elements(e.ty, e.rows as u64 * e.cols as u64);
        if e.element_bytes != want_bytes || e.num_elements as u64 != want_elements {
            return Err(format!(
                "records tensor {n} ({} × {} {}) as {} elements of {} bytes, where that type and shape take {want_elements} of {want_bytes}",
                e.rows,
                e.cols,
                type_name(e.ty),
                e.num_elements,
                e.element_bytes
            ));
        }
        if e.stride != e.cols && e.rows > 1 {
            return Err(format!(
                "records tensor {n} with a row stride of {} for {} columns (gemma.cpp stores tensors packed)",
                e.stride, e.cols
            ));
        }
        // A NaN scale is refused too: it is not greater than 0.
        if e.scale.is_nan()
            || e.scale <= 0.0
            || ((e.ty == TYPE_F32 || e.ty == TYPE_BF16) && e.scale != 1.0)
        {
            return Err(format!(
                "gives tensor {n} a scale of {}, which its type {} cannot have",
                e.scale,
                type_name(e.ty)
            ));
        }
        if size != e.expected_bytes() {
            return Err(format!(
                "records tensor {n} as {} × {} {} ({} bytes) but its blob holds {size} bytes",
                e.rows,
                e.cols,
                type_name(e.ty),
                e.expected_bytes()
            ));
        }
    }
    if let Some((_, ty)) = min_bits {
        if ty != config.weight {
            return Err(format!(
                "holds {} tensors but the config says the weights are {}",
                type_name(ty),
                type_name(config.weight)
            ));
        }
    }
    required(config, &seen)
}

/// The tensors gemma.cpp cannot load the model without.
fn required(config: &ModelConfig, have: &HashSet<&str>) -> Result<(), String> {
    let missing = |name: String| Err(format!("lacks tensor {name}, which this model needs"));
    for name in ["c_embedding", "c_final_norm"] {
        if !have.contains(name) {
            return missing(name.to_string());
        }
    }
    let has = |base: &str, i: usize| have.contains(format!("{base}_{i}").as_str());
    for (i, l) in config.layer_configs.iter().enumerate() {
        if l.attention_type != LAYER_GEMMA {
            continue;
        }
        let mut needed = vec!["pre_att_ns", "pre_ff_ns", "linear_w"];
        if l.post_norm == POST_NORM_SCALE {
            needed.extend(["post_att_ns", "post_ff_ns"]);
        }
        if l.use_qk_norm {
            needed.extend(["key_norm", "query_norm"]);
        }
        if l.ff_biases {
            needed.extend(["ffw_gat_b", "ffw_out_b"]);
        }
        for base in needed {
            if !has(base, i) {
                return missing(format!("{base}_{i}"));
            }
        }
        // Each of these is stored one way or the other, never both.
        for (a, b) in [
            ("att_ein", "att_w"),
            ("qkv_ein", "qkv1_w"),
            ("gating_ein", "gating1_w"),
        ] {
            match (has(a, i), has(b, i)) {
                (false, false) => return missing(format!("{b}_{i}")),
                (true, true) => {
                    return Err(format!(
                        "holds both {a}_{i} and {b}_{i}, of which gemma.cpp takes exactly one"
                    ))
                }
                _ => {}
            }
        }
        if has("gating1_w", i) != has("gating2_w", i) {
            return missing(format!("gating2_w_{i}"));
        }
        if has("qkv1_w", i) && l.heads != l.kv_heads && !has("qkv2_w", i) {
            return missing(format!("qkv2_w_{i}"));
        }
    }
    if !config.vit_config.layer_configs.is_empty() {
        let mut model = vec![
            "enc_norm_bias",
            "enc_norm_scale",
            "img_emb_bias",
            "img_emb_kernel",
            "img_pos_emb",
            "img_head_bias",
            "img_head_kernel",
        ];
        if config.wrapping == 2 {
            model.push("mm_embed_norm");
        }
        for name in model {
            if !have.contains(name) {
                return missing(name.to_string());
            }
        }
        for i in 0..config.vit_config.layer_configs.len() {
            for base in [
                "attn_out_w",
                "attn_out_b",
                "qkv_ein_w",
                "qkv_ein_b",
                "linear_0_w",
                "linear_0_b",
                "linear_1_w",
                "linear_1_b",
                "ln_0_bias",
                "ln_0_scale",
                "ln_1_bias",
                "ln_1_scale",
            ] {
                if !has(base, i) {
                    return missing(format!("{base}_{i}"));
                }
            }
        }
    }
    Ok(())
}

/// The toc a Gemma 3 text model with `config` has, as gemma.cpp's converter lays it out: the
/// embedding and final norm, then per layer Q, KV, the attention output, the two FFN gates, the
/// FFN output and the six norms. Norms are f32 for f32 weights and otherwise bf16... as `ty`.
pub fn gemma3_layout(config: &ModelConfig, ty: u32) -> Vec<TocEntry> {
    let mut out = Vec::new();
    let mut add = |name: String| {
        if let Some(x) = expected(config, &name) {
            out.push(TocEntry::packed(&name, ty, x.rows as u32, x.cols as u32));
        }
    };
    add("c_embedding".into());
    add("c_final_norm".into());
    for i in 0..config.layer_configs.len() {
        for base in [
            "qkv1_w",
            "qkv2_w",
            "att_w",
            "gating1_w",
            "gating2_w",
            "linear_w",
            "pre_att_ns",
            "pre_ff_ns",
            "post_att_ns",
            "post_ff_ns",
            "query_norm",
            "key_norm",
        ] {
            add(format!("{base}_{i}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::gemma3_text;

    fn setup() -> (ModelConfig, Vec<TocEntry>) {
        let c = gemma3_text(
            18, 640, 2048, 4, 1, 256, 262144, 32768, 512, TYPE_BF16, false,
        )
        .unwrap();
        let toc = gemma3_layout(&c, TYPE_BF16);
        (c, toc)
    }

    fn dir(toc: &[TocEntry]) -> HashMap<&str, u64> {
        toc.iter()
            .map(|e| (e.name.as_str(), e.expected_bytes()))
            .collect()
    }

    #[test]
    fn the_converter_layout_passes() {
        let (c, toc) = setup();
        assert_eq!(toc.len(), 2 + 18 * 12);
        assert_eq!(check(&c, &toc, &dir(&toc)), Ok(()));
        let q = toc.iter().find(|e| e.name == "qkv1_w_9").unwrap();
        assert_eq!((q.rows, q.cols), (1024, 640));
    }

    #[test]
    fn damage_names_the_tensor() {
        let (c, toc) = setup();
        let at = toc.iter().position(|e| e.name == "qkv1_w_9").unwrap();
        let mut bad = toc.clone();
        bad[at].cols = 4294966655;
        assert_eq!(
            check(&c, &bad, &dir(&toc)).unwrap_err(),
            "records tensor qkv1_w_9 as 1024 × 4294966655 where the config calls for 1024 × 640"
        );
        let mut bad = toc.clone();
        bad[at].ty = TYPE_F32;
        assert!(
            check(&c, &bad, &dir(&toc))
                .unwrap_err()
                .contains("1024 × 640 f32 (2621440 bytes) but its blob holds 1310720 bytes")
                || check(&c, &bad, &dir(&toc))
                    .unwrap_err()
                    .contains("elements of 2 bytes")
        );
        let mut bad = toc.clone();
        bad.remove(at);
        assert_eq!(
            check(&c, &bad, &dir(&bad)).unwrap_err(),
            "lacks tensor qkv1_w_9, which this model needs"
        );
        let mut bad = toc.clone();
        bad[at].scale = 1.5;
        assert!(check(&c, &bad, &dir(&toc))
            .unwrap_err()
            .contains("scale of 1.5"));
        let mut c2 = c.clone();
        c2.weight = TYPE_F32;
        assert_eq!(
            check(&c2, &toc, &dir(&toc)).unwrap_err(),
            "holds bf16 tensors but the config says the weights are f32"
        );
    }
}

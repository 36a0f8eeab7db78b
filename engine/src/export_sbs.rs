//! `gemma-engine --export-sbs IN.gguf --out OUT.sbs [--type bf16|f32] [--kind base|instruct]`:
//! writes a gemma.cpp single-file `.sbs` from a Gemma 3 GGUF, for `gemmactl models import`.
//!
//! It lives in the engine because the engine links llama.cpp: the GGUF is read with ggml's own
//! GGUF reader and every tensor is dequantized with ggml's own type traits (`to_float` of the
//! tensor's type, `from_float_ref` of bf16), so any quantization llama.cpp can run converts
//! without a dequantizer of ours. gemmactl runs this mode as a child and reads its progress lines.
//!
//! The mapping (GGUF names as llama.cpp's converter writes Gemma 3):
//! - norms: llama.cpp stores Gemma's RMSNorm weights with 1 added, and gemma.cpp adds 1 itself,
//!   so 1 is subtracted from every norm;
//! - `attn_q` → `qkv1_w`; `attn_k` and `attn_v` → `qkv2_w`, per KV head its K rows then its V rows;
//! - `attn_output` → `att_w` (already `[model_dim, heads × head size]`);
//! - `ffn_gate` → `gating1_w`, `ffn_up` → `gating2_w`, `ffn_down` → `linear_w`;
//! - the config is gemma.cpp's own for the model size (`sbs/config.rs`), the toc lists every
//!   tensor (`sbs/tensors.rs`), the tokenizer is rebuilt from the vocabulary (`spm.rs`).
//!
//! Output goes to `OUT.part`, renamed to `OUT` only when complete, so a failed or killed export
//! never leaves a file that looks whole.

use std::ffi::{c_void, CStr, CString};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use llama_cpp_sys_2 as sys;

use crate::spm;
use engine_protocol::ErrorCode;
use sbs::config::{self, ModelConfig, TYPE_BF16, TYPE_F32};
use sbs::tensors;
use sbs::toc::{self, TocEntry};
use sbs::writer::BlobWriter;

/// Rows converted per step: bounded memory whatever the tensor (the embedding is 262144 rows).
const CHUNK_VALUES: usize = 1 << 20;

pub(crate) struct ExportArgs {
    pub input: PathBuf,
    pub output: PathBuf,
    /// `config::TYPE_BF16` or `config::TYPE_F32`.
    pub ty: u32,
    /// Instruct (chat template) or base; `None` = instruct when the GGUF has a chat template.
    pub chat: Option<bool>,
}

#[derive(Debug)]
pub(crate) struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

pub(crate) struct Exported {
    pub specifier: String,
    pub tensors: usize,
    pub bytes: u64,
}

/// One tensor's place in the GGUF.
#[derive(Clone, Copy)]
struct Source {
    ty: sys::ggml_type,
    cols: u64,
    rows: u64,
    offset: u64,
}

/// ggml's GGUF reader, metadata only (`no_alloc`): tensor data is read from the file as needed.
struct Gguf {
    ctx: *mut sys::gguf_context,
}

impl Drop for Gguf {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from gguf_init_from_file, is not null, and is freed only here.
        unsafe { sys::gguf_free(self.ctx) }
    }
}

impl Gguf {
    fn open(path: &Path) -> Option<Gguf> {
        let name = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
        let params = sys::gguf_init_params {
            no_alloc: true,
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: `name` is a NUL-terminated string that outlives the call; ggml copies what it
        // keeps, and a null result (any failure) is checked below.
        let ctx = unsafe { sys::gguf_init_from_file(name.as_ptr(), params) };
        (!ctx.is_null()).then_some(Gguf { ctx })
    }

    fn key(&self, key: &str) -> Option<i64> {
        let k = CString::new(key).ok()?;
        // SAFETY: `ctx` is a live gguf context; `k` is NUL-terminated and outlives the call.
        let id = unsafe { sys::gguf_find_key(self.ctx, k.as_ptr()) };
        (id >= 0).then_some(id)
    }

    /// An integer value of any integer type (ggml aborts on a getter of the wrong type).
    fn uint(&self, key: &str) -> Option<u64> {
        let id = self.key(key)?;
        // SAFETY: `id` is a key index gguf_find_key returned for this live context, and each
        // getter is called only for the type gguf_get_kv_type reports.
        unsafe {
            match sys::gguf_get_kv_type(self.ctx, id) {
                sys::GGUF_TYPE_UINT32 => Some(sys::gguf_get_val_u32(self.ctx, id) as u64),
                sys::GGUF_TYPE_INT32 => u64::try_from(sys::gguf_get_val_i32(self.ctx, id)).ok(),
                sys::GGUF_TYPE_UINT64 => Some(sys::gguf_get_val_u64(self.ctx, id)),
                sys::GGUF_TYPE_INT64 => u64::try_from(sys::gguf_get_val_i64(self.ctx, id)).ok(),
                sys::GGUF_TYPE_UINT16 => Some(sys::gguf_get_val_u16(self.ctx, id) as u64),
                _ => None,
            }
        }
    }

    fn bool(&self, key: &str) -> Option<bool> {
        let id = self.key(key)?;
        // SAFETY: `id` is a key of this live context; the value is read only when it is a bool.
        unsafe {
            (sys::gguf_get_kv_type(self.ctx, id) == sys::GGUF_TYPE_BOOL)
                .then(|| sys::gguf_get_val_bool(self.ctx, id))
        }
    }

    fn has(&self, key: &str) -> bool {
        self.key(key).is_some()
    }

    fn array(&self, key: &str, of: sys::gguf_type) -> Option<(i64, usize)> {
        let id = self.key(key)?;
        // SAFETY: `id` is a key of this live context; the array is inspected only when the key
        // holds one.
        unsafe {
            (sys::gguf_get_kv_type(self.ctx, id) == sys::GGUF_TYPE_ARRAY
                && sys::gguf_get_arr_type(self.ctx, id) == of)
                .then(|| (id, sys::gguf_get_arr_n(self.ctx, id)))
        }
    }

    fn strings(&self, key: &str) -> Option<Vec<String>> {
        let (id, n) = self.array(key, sys::GGUF_TYPE_STRING)?;
        (0..n)
            // SAFETY: `id` is a string array of this live context with `n` elements, so every
            // `i` is in range; the returned C string (checked for null) lives as long as `ctx`
            // and is copied at once.
            .map(|i| unsafe {
                let s = sys::gguf_get_arr_str(self.ctx, id, i);
                (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
            })
            .collect()
    }

    fn numbers<T: Copy>(&self, key: &str, of: sys::gguf_type) -> Option<Vec<T>> {
        let (id, n) = self.array(key, of)?;
        // SAFETY: `array` checked that the key holds `n` elements of type `of`, whose layout the
        // caller's `T` matches; the data (checked for null) is copied before `ctx` can go.
        unsafe {
            let data = sys::gguf_get_arr_data(self.ctx, id) as *const T;
            (!data.is_null()).then(|| std::slice::from_raw_parts(data, n).to_vec())
        }
    }

    fn tensor(&self, name: &str) -> Option<Source> {
        let n = CString::new(name).ok()?;
        // SAFETY: `n` is NUL-terminated; `id` is checked before use; ggml gives every tensor
        // exactly four dimensions (`ne`), read while `ctx` is alive.
        unsafe {
            let id = sys::gguf_find_tensor(self.ctx, n.as_ptr());
            if id < 0 {
                return None;
            }
            let ne = std::slice::from_raw_parts(sys::gguf_get_tensor_ne(self.ctx, id), 4);
            if ne[2] != 1 || ne[3] != 1 {
                return None;
            }
            Some(Source {
                ty: sys::gguf_get_tensor_type(self.ctx, id),
                cols: ne[0] as u64,
                rows: ne[1] as u64,
                offset: (sys::gguf_get_data_offset(self.ctx)
                    + sys::gguf_get_tensor_offset(self.ctx, id)) as u64,
            })
        }
    }
}

/// Writes the `.sbs`; `progress` hears the fraction done and the tensor being written.
pub(crate) fn export(
    args: &ExportArgs,
    mut progress: impl FnMut(f64, &str),
) -> Result<Exported, Failure> {
    let shown = args.input.display().to_string();
    // The same inspector gemmactl uses gives the sentences for a missing, unreadable or cut file.
    let info = gguf::inspect(&args.input).map_err(|e| fail(ErrorCode::NotGguf, e.to_string()))?;
    let arch = info
        .architecture
        .clone()
        .unwrap_or_else(|| "unknown".into());
    if arch != "gemma3" {
        return Err(fail(
            ErrorCode::UnsupportedArchitecture,
            format!("{shown} is a {arch} model: gemma.cpp runs only Gemma models, and import converts Gemma 3 GGUF files (270M and 1B)"),
        ));
    }
    let gguf = Gguf::open(&args.input).ok_or_else(|| {
        fail(ErrorCode::LoadFailed, format!("ggml could not read the GGUF file {shown}: check it with `gemmactl models check {shown}`"))
    })?;
    let meta = |k: &str| gguf.uint(&format!("gemma3.{k}"));
    let need = |k: &str| {
        meta(k).and_then(|v| u32::try_from(v).ok()).ok_or_else(|| {
            fail(ErrorCode::LoadFailed, format!("{shown} lacks the Gemma 3 setting gemma3.{k}, which the conversion needs: the file is not a complete llama.cpp Gemma 3 GGUF"))
        })
    };
    let (layers, width, ff) = (
        need("block_count")?,
        need("embedding_length")?,
        need("feed_forward_length")?,
    );
    let (heads, kv_heads, head_size) = (
        need("attention.head_count")?,
        need("attention.head_count_kv")?,
        need("attention.key_length")?,
    );
    let (window, context) = (need("attention.sliding_window")?, need("context_length")?);
    let vocab = read_vocabulary(&gguf, &shown)?;
    let chat = args
        .chat
        .unwrap_or_else(|| gguf.has("tokenizer.chat_template"));
    let Some(config) = config::gemma3_text(
        layers,
        width,
        ff,
        heads,
        kv_heads,
        head_size,
        vocab.tokens.len() as u32,
        context,
        window,
        args.ty,
        chat,
    ) else {
        return Err(fail(
            ErrorCode::UnsupportedArchitecture,
            format!("{shown} is a Gemma 3 with {layers} layers {width} wide: gemma.cpp's larger Gemma 3 models include a vision tower that GGUF files keep in a separate file, so import converts only Gemma 3 270M and 1B"),
        ));
    };
    if let Some(problem) = config.problems().into_iter().next() {
        return Err(fail(
            ErrorCode::LoadFailed,
            format!("{shown} gives a Gemma 3 config gemma.cpp cannot use: it {problem}"),
        ));
    }
    let layout = tensors::gemma3_layout(&config, args.ty);
    // Check every source before writing anything.
    let mut plan = Vec::with_capacity(layout.len());
    for entry in &layout {
        let parts = sources(&gguf, &entry.name, kv_heads, &shown)?;
        let rows: u64 = parts.iter().map(|p| p.rows).sum();
        if parts.iter().any(|p| p.cols != entry.cols as u64) || rows != entry.rows as u64 {
            return Err(fail(
                ErrorCode::LoadFailed,
                format!(
                    "{shown}: the tensors for {} are not {} × {} as its Gemma 3 settings say",
                    entry.name, entry.rows, entry.cols
                ),
            ));
        }
        for p in &parts {
            // SAFETY: ggml returns a pointer into its static table of type traits, valid for
            // every type id a tensor of a loaded GGUF can have.
            let traits = unsafe { &*sys::ggml_get_type_traits(p.ty) };
            if p.ty != sys::GGML_TYPE_F32 && traits.to_float.is_none() {
                return Err(fail(
                    ErrorCode::LoadFailed,
                    format!("{shown}: ggml cannot dequantize the type of {}", entry.name),
                ));
            }
        }
        plan.push((entry.clone(), parts));
    }

    let part = args.output.with_extension("sbs.part");
    let result = write(
        &args.input,
        &part,
        &config,
        &layout,
        &plan,
        &vocab,
        &mut progress,
    );
    match result {
        Ok(bytes) => {
            std::fs::rename(&part, &args.output).map_err(|e| {
                fail(
                    ErrorCode::LoadFailed,
                    format!(
                        "cannot move {} to {}: {e}",
                        part.display(),
                        args.output.display()
                    ),
                )
            })?;
            Ok(Exported {
                specifier: config.specifier(),
                tensors: layout.len(),
                bytes,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

fn read_vocabulary(gguf: &Gguf, shown: &str) -> Result<spm::Vocabulary, Failure> {
    let missing = |what: &str| {
        fail(
            ErrorCode::LoadFailed,
            format!("{shown} has no {what}, which gemma.cpp's tokenizer is built from"),
        )
    };
    let tokens = gguf
        .strings("tokenizer.ggml.tokens")
        .ok_or_else(|| missing("vocabulary (tokenizer.ggml.tokens)"))?;
    let scores: Vec<f32> = gguf
        .numbers("tokenizer.ggml.scores", sys::GGUF_TYPE_FLOAT32)
        .ok_or_else(|| missing("token scores (tokenizer.ggml.scores)"))?;
    let types: Vec<i32> = gguf
        .numbers("tokenizer.ggml.token_type", sys::GGUF_TYPE_INT32)
        .ok_or_else(|| missing("token types (tokenizer.ggml.token_type)"))?;
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(fail(
            ErrorCode::LoadFailed,
            format!("{shown}: its vocabulary, scores and token types differ in length"),
        ));
    }
    let id =
        |k: &str, default: u64| gguf.uint(&format!("tokenizer.ggml.{k}")).unwrap_or(default) as u32;
    Ok(spm::Vocabulary {
        bos: id("bos_token_id", 2),
        eos: id("eos_token_id", 1),
        unk: id("unknown_token_id", 3),
        pad: id("padding_token_id", 0),
        add_space_prefix: gguf
            .bool("tokenizer.ggml.add_space_prefix")
            .unwrap_or(false),
        tokens,
        scores,
        types,
    })
}

/// The GGUF tensors one `.sbs` tensor is made of, in row order.
fn sources(gguf: &Gguf, name: &str, kv_heads: u32, shown: &str) -> Result<Vec<Source>, Failure> {
    let get = |n: String| {
        gguf.tensor(&n).ok_or_else(|| {
            fail(ErrorCode::LoadFailed, format!("{shown} has no 2-D tensor {n}, which a Gemma 3 GGUF has: the file is incomplete or not from llama.cpp's converter"))
        })
    };
    let (base, layer) = match name.rsplit_once('_') {
        Some((b, i)) if i.bytes().all(|c| c.is_ascii_digit()) => (b, i),
        _ => (name, ""),
    };
    let blk = |t: &str| format!("blk.{layer}.{t}.weight");
    Ok(match base {
        "c_embedding" => vec![get("token_embd.weight".into())?],
        "c_final_norm" => vec![get("output_norm.weight".into())?],
        "qkv1_w" => vec![get(blk("attn_q"))?],
        "qkv2_w" => {
            // Per KV head: its K rows, then its V rows.
            let (k, v) = (get(blk("attn_k"))?, get(blk("attn_v"))?);
            let h = kv_heads.max(1) as u64;
            // SAFETY: ggml_row_size only computes a size from the type's block layout.
            let row_bytes = |s: &Source| unsafe { sys::ggml_row_size(s.ty, s.cols as i64) } as u64;
            let mut parts = Vec::new();
            for i in 0..h {
                for s in [k, v] {
                    let rows = s.rows / h;
                    parts.push(Source {
                        rows,
                        offset: s.offset + i * rows * row_bytes(&s),
                        ..s
                    });
                }
            }
            parts
        }
        "att_w" => vec![get(blk("attn_output"))?],
        "gating1_w" => vec![get(blk("ffn_gate"))?],
        "gating2_w" => vec![get(blk("ffn_up"))?],
        "linear_w" => vec![get(blk("ffn_down"))?],
        "pre_att_ns" => vec![get(blk("attn_norm"))?],
        "pre_ff_ns" => vec![get(blk("ffn_norm"))?],
        "post_att_ns" => vec![get(blk("post_attention_norm"))?],
        "post_ff_ns" => vec![get(blk("post_ffw_norm"))?],
        "query_norm" => vec![get(blk("attn_q_norm"))?],
        "key_norm" => vec![get(blk("attn_k_norm"))?],
        other => {
            return Err(fail(
                ErrorCode::LoadFailed,
                format!("no GGUF source is known for tensor {other}"),
            ))
        }
    })
}

fn is_norm(name: &str) -> bool {
    name.contains("_ns_") || name.contains("norm")
}

#[allow(clippy::too_many_arguments)]
fn write(
    input: &Path,
    part: &Path,
    config: &ModelConfig,
    layout: &[TocEntry],
    plan: &[(TocEntry, Vec<Source>)],
    vocab: &spm::Vocabulary,
    progress: &mut impl FnMut(f64, &str),
) -> Result<u64, Failure> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        fail(
            ErrorCode::LoadFailed,
            format!("cannot {what} {}: {e}", p.display()),
        )
    };
    let mut src = File::open(input).map_err(|e| io("read", input, e))?;
    let out = File::create(part).map_err(|e| io("create", part, e))?;
    let mut w = BlobWriter::new(BufWriter::with_capacity(1 << 20, out))
        .map_err(|e| io("write", part, e))?;
    let total: u64 = layout.iter().map(|e| e.expected_bytes()).sum();
    let mut done = 0u64;
    let mut raw = Vec::new();
    let mut values: Vec<f32> = Vec::new();
    let mut bytes_out: Vec<u8> = Vec::new();
    for (entry, parts) in plan {
        progress(done as f64 / total as f64, &entry.name);
        let subtract_one = is_norm(&entry.name);
        w.begin(&entry.name).map_err(|e| io("write", part, e))?;
        for p in parts {
            let cols = p.cols as usize;
            // SAFETY: ggml_row_size only computes a size from the type's block layout.
            let row_bytes = unsafe { sys::ggml_row_size(p.ty, p.cols as i64) };
            let rows_per_chunk = (CHUNK_VALUES / cols.max(1)).max(1);
            let mut row = 0u64;
            while row < p.rows {
                let n_rows = (rows_per_chunk as u64).min(p.rows - row) as usize;
                raw.resize(n_rows * row_bytes, 0);
                src.seek(SeekFrom::Start(p.offset + row * row_bytes as u64))
                    .and_then(|_| src.read_exact(&mut raw))
                    .map_err(|e| io("read", input, e))?;
                values.resize(n_rows * cols, 0.0);
                to_f32(p.ty, &raw, &mut values, n_rows, cols, row_bytes);
                if subtract_one {
                    values.iter_mut().for_each(|v| *v -= 1.0);
                }
                if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                    return Err(fail(
                        ErrorCode::LoadFailed,
                        format!(
                            "{}: tensor {} holds a non-finite value ({bad}): the GGUF is damaged",
                            input.display(),
                            entry.name
                        ),
                    ));
                }
                from_f32(entry.ty, &values, &mut bytes_out);
                w.write(&bytes_out).map_err(|e| io("write", part, e))?;
                row += n_rows as u64;
            }
        }
        w.end().map_err(|e| io("write", part, e))?;
        done += entry.expected_bytes();
    }
    let blob = |r: Result<Vec<u8>, sbs::fields::FieldError>| {
        r.map_err(|e| {
            fail(
                ErrorCode::LoadFailed,
                format!("the .sbs metadata cannot be written: {e}"),
            )
        })
    };
    w.add("config", &blob(config.to_bytes())?)
        .map_err(|e| io("write", part, e))?;
    w.add("tokenizer", &spm::serialize(vocab))
        .map_err(|e| io("write", part, e))?;
    w.add("toc", &blob(toc::to_bytes(layout))?)
        .map_err(|e| io("write", part, e))?;
    let (out, size) = w.finish().map_err(|e| io("write", part, e))?;
    let file = out
        .into_inner()
        .map_err(|e| io("write", part, e.into_error()))?;
    file.sync_all().map_err(|e| io("write", part, e))?;
    progress(1.0, "done");
    Ok(size)
}

/// Dequantizes rows with ggml's type traits (f32 is copied).
fn to_f32(
    ty: sys::ggml_type,
    raw: &[u8],
    out: &mut [f32],
    rows: usize,
    cols: usize,
    row_bytes: usize,
) {
    if ty == sys::GGML_TYPE_F32 {
        for (v, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        return;
    }
    // SAFETY: ggml returns a pointer into its static table of type traits.
    let traits = unsafe { &*sys::ggml_get_type_traits(ty) };
    let Some(to_float) = traits.to_float else {
        unreachable!("every source type is checked for a dequantizer before anything is written")
    };
    for r in 0..rows {
        // SAFETY: row `r` of `raw` holds `row_bytes` bytes of `cols` values of type `ty` (the
        // slices panic, safely, if not), and `out` has room for `cols` floats from `r * cols`.
        unsafe {
            to_float(
                raw[r * row_bytes..].as_ptr() as *const c_void,
                out[r * cols..].as_mut_ptr(),
                cols as i64,
            );
        }
    }
}

/// Encodes values as the `.sbs` type: f32 as is, bf16 with ggml's rounding.
fn from_f32(ty: u32, values: &[f32], out: &mut Vec<u8>) {
    out.clear();
    if ty == TYPE_F32 {
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        return;
    }
    debug_assert_eq!(ty, TYPE_BF16);
    out.resize(values.len() * 2, 0);
    // SAFETY: ggml returns a pointer into its static table of type traits.
    let traits = unsafe { &*sys::ggml_get_type_traits(sys::GGML_TYPE_BF16) };
    let Some(from_float) = traits.from_float_ref else {
        unreachable!("ggml always converts f32 to bf16")
    };
    // SAFETY: `out` was sized to two bytes per value above; both buffers outlive the call.
    unsafe {
        from_float(
            values.as_ptr(),
            out.as_mut_ptr() as *mut c_void,
            values.len() as i64,
        )
    };
}

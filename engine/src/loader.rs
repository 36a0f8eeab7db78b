//! Loading a model: a pre-flight look at the file, llama.cpp's load with progress events, and the
//! facts the `ready` event reports. Every way a load can fail becomes one typed error naming the
//! file and the fix.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::{list_llama_ggml_backend_devices, LlamaBackendDeviceType};

use crate::llama_log;
use crate::output::emit;
use crate::threads;
use engine_protocol::{Device, ErrorCode, Event, FlashAttention, KvCacheType, ModelFacts};
use gguf::GgufError;

/// Largest number of tokens handed to llama.cpp in one `decode` (its `n_batch`). Prompts longer
/// than this are fed in chunks, which is also where a cancel can cut in.
pub(crate) const BATCH_TOKENS: u32 = 512;

pub(crate) struct LoadError {
    pub code: ErrorCode,
    pub message: String,
}

pub(crate) struct EngineOptions {
    pub context: u32,
    pub parallel: u32,
    /// `None`: chosen from the machine's load (see `threads`).
    pub threads: Option<u32>,
    pub gpu_layers: Option<u32>,
    pub kv_cache_type: KvCacheType,
    pub flash_attention: FlashAttention,
}

pub(crate) struct Loaded {
    pub model: &'static LlamaModel,
    pub ctx: LlamaContext<'static>,
    pub facts: ModelFacts,
    pub devices: Vec<Device>,
    pub gpu_layers: u32,
    pub context: u32,
    /// CPU threads in force, and why.
    pub threads: threads::Decision,
    pub load_ms: u64,
}

/// llama.cpp's name for a KV cache element type.
fn kv_type(t: KvCacheType) -> llama_cpp_2::context::params::KvCacheType {
    use llama_cpp_2::context::params::KvCacheType as Llama;
    match t {
        KvCacheType::F16 => Llama::F16,
        KvCacheType::Q8_0 => Llama::Q8_0,
        KvCacheType::Q4_0 => Llama::Q4_0,
    }
}

/// llama.cpp's flash attention policy.
fn flash_policy(f: FlashAttention) -> llama_cpp_sys_2::llama_flash_attn_type {
    match f {
        FlashAttention::Auto => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
        FlashAttention::On => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        FlashAttention::Off => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }
}

/// Checks the file before llama.cpp sees it: llama.cpp reports every problem as a bare failure.
pub(crate) fn preflight(path: &Path) -> Result<gguf::GgufInfo, LoadError> {
    gguf::inspect(path).map_err(|e| {
        let code = match &e {
            GgufError::Missing { .. } => ErrorCode::ModelNotFound,
            GgufError::Io { .. } => ErrorCode::ModelUnreadable,
            GgufError::Truncated { .. } => ErrorCode::ModelTruncated,
            GgufError::NotGguf { .. }
            | GgufError::LfsPointer { .. }
            | GgufError::UnsupportedVersion { .. }
            | GgufError::Malformed { .. } => ErrorCode::NotGguf,
        };
        LoadError {
            code,
            message: e.to_string(),
        }
    })
}

pub(crate) fn load(
    backend: &LlamaBackend,
    path: &Path,
    opts: &EngineOptions,
) -> Result<Loaded, LoadError> {
    let started = Instant::now();
    let before_load = threads::sample();
    let info = preflight(path)?;
    let shown = path.display().to_string();

    let all_devices = list_devices();
    let has_gpu = all_devices
        .iter()
        .any(|d| d.kind == "gpu" || d.kind == "igpu");
    let requested_gpu_layers = opts
        .gpu_layers
        .unwrap_or(if has_gpu { u32::MAX } else { 0 });

    let mut last_reported = -1.0f32;
    let params = LlamaModelParams::default()
        .with_n_gpu_layers(if has_gpu {
            requested_gpu_layers.min(1000)
        } else {
            0
        })
        .with_progress_callback(move |progress| {
            // Throttled: the callback fires for every tensor.
            if progress >= 1.0 || progress - last_reported >= 0.05 {
                last_reported = progress;
                emit(&Event::Loading {
                    progress: progress.clamp(0.0, 1.0),
                });
            }
            true
        });
    let model = LlamaModel::load_from_file(backend, path, &params).map_err(|_| {
        let why = llama_log::last_complaint().unwrap_or_else(|| "no reason given".into());
        if why.contains("unknown model architecture") {
            let arch = info.architecture.clone().unwrap_or_else(|| "?".into());
            LoadError {
                code: ErrorCode::UnsupportedArchitecture,
                message: format!(
                    "{shown} uses the model architecture '{arch}', which this build of llama.cpp does not support: use a Gemma GGUF, or update gemmactl"
                ),
            }
        } else if why.contains("alloc") || why.contains("memory") {
            LoadError {
                code: ErrorCode::OutOfMemory,
                message: format!("not enough memory to load {shown} ({why}): free memory or use a smaller model"),
            }
        } else {
            LoadError {
                code: ErrorCode::LoadFailed,
                message: format!("llama.cpp could not load {shown}: {why}; check the file with `gemmactl models add` or download it again"),
            }
        }
    })?;
    // The model lives as long as the process; leaking it lets the context borrow it for 'static.
    let model: &'static LlamaModel = Box::leak(Box::new(model));

    let train_context = model.n_ctx_train();
    let context = opts.context.clamp(64, train_context.max(64));
    let decision = threads::decide(opts.threads, before_load);
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(context))
        .with_n_batch(BATCH_TOKENS)
        .with_n_ubatch(BATCH_TOKENS)
        .with_n_seq_max(opts.parallel)
        // One pool of cells shared by all sequences, so a single long conversation may use the
        // whole context while several short ones share it.
        .with_kv_unified(true)
        // Sliding-window layers keep only their window: ~4x less KV memory on Gemma 3. Cutting a
        // session back then needs the check in `scheduler::reuse_prefix`.
        .with_swa_full(false)
        .with_type_k(kv_type(opts.kv_cache_type))
        .with_type_v(kv_type(opts.kv_cache_type))
        .with_flash_attention_policy(flash_policy(opts.flash_attention))
        .with_n_threads(decision.threads as i32)
        .with_n_threads_batch(decision.threads as i32);
    let ctx = model.new_context(backend, ctx_params).map_err(|_| LoadError {
        code: ErrorCode::OutOfMemory,
        message: format!(
            "could not allocate the {} KV cache and compute buffers for a {context}-token context for {shown}: lower the context (--context){}, or free memory",
            opts.kv_cache_type,
            match opts.kv_cache_type {
                KvCacheType::F16 => ", use a smaller KV cache type (--kv-cache-type q8_0)",
                KvCacheType::Q8_0 => ", use a smaller KV cache type (--kv-cache-type q4_0)",
                KvCacheType::Q4_0 => "",
            }
        ),
    })?;

    let mut ctx = ctx;
    warm_up(model, &mut ctx);

    let gpu_layers = if has_gpu {
        requested_gpu_layers.min(model.n_layer() + 1)
    } else {
        0
    };
    let devices = all_devices
        .into_iter()
        .filter(|d| {
            if gpu_layers > 0 {
                true
            } else {
                d.kind == "cpu"
            }
        })
        .collect();
    let chat_template = model
        .chat_template(None)
        .ok()
        .and_then(|t| t.to_string().ok());
    let facts = ModelFacts {
        path: shown,
        name: info.name.clone(),
        architecture: info.architecture.clone(),
        train_context,
        parameters: model.n_params(),
        layers: model.n_layer(),
        size_bytes: info.file_size,
        chat_template,
        sliding_window: info.sliding_window.unwrap_or(0) as u32,
        fill_in_middle: crate::prompt::fim_tokens(model).is_some(),
    };
    Ok(Loaded {
        model,
        ctx,
        facts,
        devices,
        gpu_layers,
        context,
        threads: decision,
        load_ms: started.elapsed().as_millis() as u64,
    })
}

/// Tokens decoded by [`warm_up`]: enough for ggml to take its batched (prefill) path.
const WARM_UP_TOKENS: usize = 8;

/// Runs one small prefill before `ready` and forgets it, as llama.cpp's own tools do
/// (`common_init_from_params`'s warm-up, llama-bench's warm-up run).
///
/// Why: the first `decode` after loading pays once for what every later one finds ready — the
/// memory-mapped weights faulted into the process page by page, OpenMP's worker threads created,
/// the compute buffers touched. Measured here on Gemma 3 270M (2 threads, 52-token prompt), a
/// fresh engine's first request prefilled at 0.87× the speed of its later ones. Paying it during
/// loading moves it out of the first reply's time to first token. A failure is ignored: the
/// first real request then meets the same error and reports it.
fn warm_up(model: &LlamaModel, ctx: &mut LlamaContext<'static>) {
    let mut batch = LlamaBatch::new(WARM_UP_TOKENS, 1);
    let token = model.vocab().bos();
    for pos in 0..WARM_UP_TOKENS {
        if batch
            .add(token, pos as i32, &[0], pos + 1 == WARM_UP_TOKENS)
            .is_err()
        {
            return;
        }
    }
    let _ = ctx.decode(&mut batch);
    ctx.clear_kv_cache();
    ctx.reset_timings();
}

pub(crate) fn list_devices() -> Vec<Device> {
    list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| Device {
            name: d.name,
            description: d.description,
            backend: d.backend,
            kind: match d.device_type {
                LlamaBackendDeviceType::Cpu => "cpu",
                LlamaBackendDeviceType::Gpu => "gpu",
                LlamaBackendDeviceType::IntegratedGpu => "igpu",
                LlamaBackendDeviceType::Accelerator => "accel",
                LlamaBackendDeviceType::Unknown => "unknown",
            }
            .to_string(),
            memory_total: d.memory_total as u64,
            memory_free: d.memory_free as u64,
        })
        .collect()
}

/// Backend names compiled into this build, in llama.cpp's order, without repeats.
pub(crate) fn backends(devices: &[Device]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for d in devices {
        if !names.contains(&d.backend) {
            names.push(d.backend.clone());
        }
    }
    names
}

/// The CPU extensions llama.cpp was compiled for (ggml's own report of its build, so it is what
/// the binary will execute, whatever the build script was asked for). Empty in a
/// `dynamic-backends` build: there the CPU backend is a set of run-time modules, one per CPU
/// variant, chosen at start-up, and `ggml_cpu_has_*` are not linked into the engine.
#[cfg(feature = "dynamic-backends")]
pub(crate) fn cpu_features() -> Vec<String> {
    Vec::new()
}

/// The CPU extensions llama.cpp was compiled for (ggml's own report of its build, so it is what
/// the binary will execute, whatever the build script was asked for).
#[cfg(not(feature = "dynamic-backends"))]
pub(crate) fn cpu_features() -> Vec<String> {
    use llama_cpp_sys_2 as sys;
    // SAFETY: each ggml_cpu_has_* returns a constant fixed when ggml was compiled.
    let flags: [(&str, i32); 14] = unsafe {
        [
            ("SSE3", sys::ggml_cpu_has_sse3()),
            ("AVX", sys::ggml_cpu_has_avx()),
            ("AVX2", sys::ggml_cpu_has_avx2()),
            ("FMA", sys::ggml_cpu_has_fma()),
            ("F16C", sys::ggml_cpu_has_f16c()),
            ("BMI2", sys::ggml_cpu_has_bmi2()),
            ("AVX_VNNI", sys::ggml_cpu_has_avx_vnni()),
            ("AVX512", sys::ggml_cpu_has_avx512()),
            ("AVX512_VBMI", sys::ggml_cpu_has_avx512_vbmi()),
            ("AVX512_VNNI", sys::ggml_cpu_has_avx512_vnni()),
            ("AVX512_BF16", sys::ggml_cpu_has_avx512_bf16()),
            ("AMX_INT8", sys::ggml_cpu_has_amx_int8()),
            ("NEON", sys::ggml_cpu_has_neon()),
            ("SVE", sys::ggml_cpu_has_sve()),
        ]
    };
    flags
        .iter()
        .filter(|(_, on)| *on != 0)
        .map(|(name, _)| name.to_string())
        .collect()
}

pub(crate) fn features() -> Vec<String> {
    let mut f = Vec::new();
    if cfg!(feature = "cuda") {
        f.push("cuda".to_string());
    }
    if cfg!(feature = "vulkan") {
        f.push("vulkan".to_string());
    }
    // OpenVINO has no cargo feature: scripts/build-gpu.sh turns it on with GGML_OPENVINO=ON in
    // the build's environment, which llama-cpp-sys-2 hands to CMake.
    if matches!(option_env!("GGML_OPENVINO"), Some("ON" | "on" | "1")) {
        f.push("openvino".to_string());
    }
    f
}

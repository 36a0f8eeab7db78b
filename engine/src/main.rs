//! gemma-engine: gemmactl's bundled inference engine.
//!
//! One process serves one GGUF model through llama.cpp and speaks the engine protocol
//! (`protocol.rs`, documented in docs/engine-protocol.md): JSON commands on stdin, JSON events on
//! stdout, nothing else on stdout. It is meant to be run by gemmactl, but is usable by hand:
//!
//!     gemma-engine --model gemma-3-270m-q4_k_m.gguf
//!     {"op":"generate","id":"1","messages":[{"role":"user","content":"The capital of France is"}],"params":{"max_tokens":16}}

mod export_sbs;
mod llama_log;
mod loader;
mod output;
mod prompt;
mod sampling;
mod scheduler;
mod spm;
mod text;
mod threads;
mod vision;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

use llama_cpp_2::llama_backend::LlamaBackend;

use engine_protocol::{
    Command, ErrorCode, Event, FlashAttention, KvCacheType, ProbeInfo, ReadyInfo, PROTOCOL_VERSION,
};
use loader::EngineOptions;
use output::{emit, emit_error};
use scheduler::{Inbox, Scheduler};

/// Smallest context the engine runs with: less leaves no room for a prompt and a reply. Said, not
/// silently raised, so a caller learns that its value was not used.
const MIN_CONTEXT: u32 = 64;

/// Most sequences llama.cpp decodes together in one context.
const MAX_PARALLEL: u32 = 256;

const USAGE: &str = "usage: gemma-engine --model PATH [--mmproj PROJECTOR] [--context N] [--parallel N] [--threads N] [--gpu-layers N] [--kv-cache-type f16|q8_0|q4_0] [--flash-attention auto|on|off] [--verbose]
       gemma-engine --probe
       gemma-engine --export-sbs IN.gguf --out OUT.sbs [--type bf16|f32] [--kind base|instruct]";

struct Args {
    model: Option<PathBuf>,
    /// The vision projector GGUF loaded beside the model, so messages may hold images.
    mmproj: Option<PathBuf>,
    probe: bool,
    verbose: bool,
    options: EngineOptions,
    export: Option<export_sbs::ExportArgs>,
}

fn main() -> ExitCode {
    die_with_parent();
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(args) => args,
        Err(why) => {
            emit_error(
                None,
                ErrorCode::BadArguments,
                format!("{why}\n{USAGE}"),
                None,
            );
            return ExitCode::from(2);
        }
    };
    llama_log::install(args.verbose);
    #[cfg(feature = "dynamic-backends")]
    load_backend_modules();
    let backend = match LlamaBackend::init() {
        Ok(b) => b,
        Err(e) => {
            emit_error(
                None,
                ErrorCode::LoadFailed,
                format!("llama.cpp failed to start: {e}"),
                None,
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(export) = &args.export {
        return export_mode(export);
    }
    if args.probe {
        let devices = loader::list_devices();
        emit(&Event::Probe(ProbeInfo {
            protocol: PROTOCOL_VERSION,
            backends: loader::backends(&devices),
            devices,
            features: loader::features(),
            cpu_features: loader::cpu_features(),
            // llama.cpp's multimodal library is in every build: any engine can take --mmproj.
            vision: true,
        }));
        return ExitCode::SUCCESS;
    }
    let Some(path) = args.model else {
        emit_error(
            None,
            ErrorCode::BadArguments,
            format!("--model PATH is required (or --probe)\n{USAGE}"),
            None,
        );
        return ExitCode::from(2);
    };

    // Commands are read on their own thread from the start, so a `shutdown` or a closed stdin is
    // noticed while the model loads too.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || read_commands(tx));

    let loaded = match loader::load(&backend, &path, &args.options) {
        Ok(l) => l,
        Err(e) => {
            emit_error(None, e.code, e.message, Some(&path.display().to_string()));
            return ExitCode::FAILURE;
        }
    };
    let vision = match &args.mmproj {
        Some(projector) => match vision::Vision::load(
            loaded.model,
            projector,
            loaded.threads.threads,
            loaded.gpu_layers > 0,
        ) {
            Ok(v) => Some(v),
            Err(e) => {
                emit_error(
                    None,
                    e.code,
                    e.message,
                    Some(&projector.display().to_string()),
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let sliding_window = loaded.facts.sliding_window;
    let all_backends = loader::backends(&loader::list_devices());
    emit(&Event::Ready(ReadyInfo {
        protocol: PROTOCOL_VERSION,
        model: loaded.facts,
        backends: all_backends,
        devices: loaded.devices,
        gpu_layers: loaded.gpu_layers,
        context: loaded.context,
        parallel: args.options.parallel,
        threads: loaded.threads.threads,
        threads_reason: loaded.threads.reason,
        kv_cache_type: args.options.kv_cache_type,
        flash_attention: args.options.flash_attention,
        load_ms: loaded.load_ms,
        vision: vision.as_ref().map(|v| v.facts.clone()),
    }));
    Scheduler::new(
        loaded.model,
        loaded.ctx,
        args.options.parallel,
        loaded.context,
        sliding_window,
        vision,
    )
    .run(rx);
    ExitCode::SUCCESS
}

/// `--export-sbs`: progress lines, then one `exported` line or an error event.
fn export_mode(export: &export_sbs::ExportArgs) -> ExitCode {
    let mut last = -1.0;
    let outcome = export_sbs::export(export, |fraction, tensor| {
        if fraction - last >= 0.01 || fraction >= 1.0 {
            last = fraction;
            output::emit_value(&serde_json::json!({
                "event": "export_progress", "fraction": fraction, "tensor": tensor,
            }));
        }
    });
    match outcome {
        Ok(done) => {
            output::emit_value(&serde_json::json!({
                "event": "exported",
                "path": export.output.display().to_string(),
                "specifier": done.specifier,
                "tensors": done.tensors,
                "bytes": done.bytes,
            }));
            ExitCode::SUCCESS
        }
        Err(e) => {
            emit_error(
                None,
                e.code,
                e.message,
                Some(&export.input.display().to_string()),
            );
            ExitCode::FAILURE
        }
    }
}

/// Reads stdin line by line for the scheduler. A closed stdin means the supervisor is gone: the
/// scheduler then stops, and if it is stuck in a long load the process exits from here.
fn read_commands(tx: mpsc::Sender<Inbox>) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let message = match serde_json::from_str::<Command>(&line) {
            Ok(command) => Inbox::Command(command),
            Err(e) => Inbox::Malformed(format!("cannot read command line ({e}): send one JSON command per line, see docs/engine-protocol.md")),
        };
        if tx.send(message).is_err() {
            return;
        }
    }
    if tx.send(Inbox::Closed).is_err() {
        return;
    }
    // Give the scheduler a moment to end requests cleanly, then make sure we do not linger.
    std::thread::sleep(std::time::Duration::from_secs(5));
    std::process::exit(0);
}

/// With `dynamic-backends`, ggml's backends are modules: load them from `GEMMA_ENGINE_BACKENDS`,
/// else from the folder holding this executable (where scripts/gpu-pack.sh puts them).
#[cfg(feature = "dynamic-backends")]
fn load_backend_modules() {
    let dir = std::env::var_os("GEMMA_ENGINE_BACKENDS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|p| p.to_path_buf()))
        });
    match dir {
        Some(dir) => llama_cpp_2::llama_backend::load_backends_from_path(&dir),
        None => llama_cpp_2::llama_backend::load_backends(),
    }
}

/// Ask Linux to kill us when the process that started us dies, even by SIGKILL. gemmactl sets
/// the same before exec; doing it here too covers engines started by hand from a script.
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

fn parse_args(argv: Vec<String>) -> Result<Args, String> {
    let mut args = Args {
        model: None,
        mmproj: None,
        probe: false,
        verbose: false,
        options: EngineOptions {
            context: 8192,
            parallel: 4,
            threads: None,
            gpu_layers: None,
            kv_cache_type: KvCacheType::default(),
            flash_attention: FlashAttention::default(),
        },
        export: None,
    };
    let (mut out, mut ty, mut kind) = (None, sbs::config::TYPE_BF16, None);
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--model" => args.model = Some(PathBuf::from(value("--model")?)),
            "--mmproj" => args.mmproj = Some(PathBuf::from(value("--mmproj")?)),
            "--context" => {
                args.options.context = number(&value("--context")?, "--context", MIN_CONTEXT)?
            }
            "--parallel" => {
                args.options.parallel = number(&value("--parallel")?, "--parallel", 1)?;
                if args.options.parallel > MAX_PARALLEL {
                    return Err(format!(
                        "--parallel is at most {MAX_PARALLEL} (llama.cpp's sequence limit), got {}",
                        args.options.parallel
                    ));
                }
            }
            "--threads" => {
                args.options.threads = Some(number(&value("--threads")?, "--threads", 1)?)
            }
            "--gpu-layers" => {
                args.options.gpu_layers = Some(number(&value("--gpu-layers")?, "--gpu-layers", 0)?)
            }
            "--kv-cache-type" => {
                args.options.kv_cache_type = value("--kv-cache-type")?
                    .parse()
                    .map_err(|why| format!("--kv-cache-type: {why}"))?
            }
            "--flash-attention" => {
                args.options.flash_attention = value("--flash-attention")?
                    .parse()
                    .map_err(|why| format!("--flash-attention: {why}"))?
            }
            "--export-sbs" => {
                args.export = Some(export_sbs::ExportArgs {
                    input: PathBuf::from(value("--export-sbs")?),
                    output: PathBuf::new(),
                    ty: 0,
                    chat: None,
                })
            }
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--type" => {
                ty = match value("--type")?.as_str() {
                    "bf16" => sbs::config::TYPE_BF16,
                    "f32" => sbs::config::TYPE_F32,
                    other => return Err(format!("--type wants bf16 or f32, got {other:?}")),
                }
            }
            "--kind" => {
                kind = match value("--kind")?.as_str() {
                    "base" => Some(false),
                    "instruct" => Some(true),
                    other => return Err(format!("--kind wants base or instruct, got {other:?}")),
                }
            }
            "--probe" => args.probe = true,
            "--verbose" => args.verbose = true,
            "--help" | "-h" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(export) = &mut args.export {
        export.output = out.ok_or("--export-sbs needs --out OUT.sbs")?;
        export.ty = ty;
        export.chat = kind;
        return Ok(args);
    }
    if !args.probe && args.model.is_none() {
        return Err("--model PATH is required (or --probe)".into());
    }
    engine_protocol::check_kv_settings(args.options.kv_cache_type, args.options.flash_attention)?;
    Ok(args)
}

fn number(text: &str, flag: &str, min: u32) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("{flag} wants a whole number ≥ {min}, got {text:?}")),
    }
}

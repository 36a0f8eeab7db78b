//! The user's registry of named models: `models.toml` in the config folder.
//!
//! One `[models.NAME]` table per model. The file is small and rewritten whole; writes go to a
//! temporary file in the same folder that is synced and renamed over the old one, so a crash or
//! a full disk never leaves a half-written registry behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{EngineKind, ModelEntry, ModelError, ModelFormat, ModelKind, RemoteModel};
use crate::config::Paths;

/// How one entry is written: the name is the table key, so it is not repeated inside.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    path: PathBuf,
    #[serde(default = "default_engine")]
    engine: EngineKind,
    #[serde(default = "default_format")]
    format: ModelFormat,
    #[serde(default = "default_kind")]
    kind: ModelKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chat_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokenizer: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote: Option<RemoteModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mmproj: Option<PathBuf>,
}

fn default_engine() -> EngineKind {
    EngineKind::GemmaEngine
}
fn default_format() -> ModelFormat {
    ModelFormat::Gguf
}
fn default_kind() -> ModelKind {
    ModelKind::Base
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    models: BTreeMap<String, Stored>,
}

/// The named models, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    models: BTreeMap<String, ModelEntry>,
}

impl Registry {
    /// Reads `models.toml`; a missing file is an empty registry.
    pub fn load(paths: &Paths) -> Result<Registry, ModelError> {
        Registry::load_file(&paths.models_file())
    }

    fn load_file(path: &Path) -> Result<Registry, ModelError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(ModelError::io("read the model registry", path, e)),
        };
        let file: File = toml::from_str(&text).map_err(|e| {
            // toml's messages may span lines; the error must stay one sentence.
            let mut message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
            if let Some(span) = e.span() {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                let line = before.iter().filter(|b| **b == b'\n').count() + 1;
                message = format!("line {line}: {message}");
            }
            ModelError::RegistryInvalid {
                path: path.to_path_buf(),
                message,
            }
        })?;
        let models = file
            .models
            .into_iter()
            .map(|(name, s)| {
                let entry = ModelEntry {
                    name: name.clone(),
                    path: s.path,
                    engine: s.engine,
                    format: s.format,
                    kind: s.kind,
                    sha256: s.sha256,
                    chat_template: s.chat_template,
                    tokenizer: s.tokenizer,
                    remote: s.remote,
                    mmproj: s.mmproj,
                };
                (name, entry)
            })
            .collect();
        Ok(Registry { models })
    }

    /// The entry registered under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    /// Adds or replaces the entry with the same name.
    pub fn insert(&mut self, entry: ModelEntry) {
        self.models.insert(entry.name.clone(), entry);
    }

    /// Removes the entry registered under `name` and returns it, if there was one.
    pub fn remove(&mut self, name: &str) -> Option<ModelEntry> {
        self.models.remove(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    /// Registered entries, sorted by name.
    pub fn entries(&self) -> Vec<&ModelEntry> {
        self.models.values().collect()
    }

    /// Writes `models.toml` atomically, creating the config folder if needed.
    pub fn save(&self, paths: &Paths) -> Result<(), ModelError> {
        self.save_file(&paths.models_file())
    }

    fn save_file(&self, path: &Path) -> Result<(), ModelError> {
        let file = File {
            models: self
                .models
                .iter()
                .map(|(name, e)| {
                    let stored = Stored {
                        path: e.path.clone(),
                        engine: e.engine,
                        format: e.format,
                        kind: e.kind,
                        sha256: e.sha256.clone(),
                        chat_template: e.chat_template.clone(),
                        tokenizer: e.tokenizer.clone(),
                        remote: e.remote.clone(),
                        mmproj: e.mmproj.clone(),
                    };
                    (name.clone(), stored)
                })
                .collect(),
        };
        let text = format!(
            "# Models known to gemmactl by name; edited by `gemmactl models add|pull|rm`.\n\n{}",
            toml::to_string_pretty(&file).map_err(|e| ModelError::Io {
                action: "encode the model registry for",
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        );
        write_atomically(path, text.as_bytes())
    }
}

/// Replaces `path` with `bytes` so that readers see the old file or the new one, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io("create the folder", dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The process id keeps two gemmactl processes from writing the same temporary file.
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every platform can open a folder, so best effort.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::io("write the model registry", path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> ModelEntry {
        ModelEntry {
            name: name.to_string(),
            path: PathBuf::from(format!("/models/{name}.gguf")),
            engine: EngineKind::GemmaEngine,
            format: ModelFormat::Gguf,
            kind: ModelKind::Instruct,
            sha256: Some("ab".repeat(32)),
            chat_template: Some("gemma".into()),
            tokenizer: None,
            remote: None,
            mmproj: None,
        }
    }

    #[test]
    fn missing_file_is_empty_and_round_trip_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/models.toml");
        let mut reg = Registry::load_file(&file).unwrap();
        assert!(reg.names().is_empty());
        let mut vision = entry("zeta");
        vision.mmproj = Some(PathBuf::from("/models/zeta-mmproj.gguf"));
        reg.insert(vision);
        reg.insert(entry("alpha"));
        let mut plain = entry("plain");
        plain.sha256 = None;
        plain.chat_template = None;
        plain.kind = ModelKind::Base;
        reg.insert(plain);
        reg.save_file(&file).unwrap();
        let back = Registry::load_file(&file).unwrap();
        assert_eq!(back, reg);
        assert_eq!(back.names(), ["alpha", "plain", "zeta"]);
        assert_eq!(back.entries()[0].name, "alpha");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("[models.alpha]"), "{text}");
        assert!(text.contains("engine = \"gemma-engine\""), "{text}");
        assert!(
            text.contains("mmproj = \"/models/zeta-mmproj.gguf\""),
            "{text}"
        );
        // Only the registry itself is left in the folder: no temporary files.
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn names_with_dots_survive_as_toml_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("models.toml");
        let mut reg = Registry::default();
        reg.insert(entry("qwen2.5-coder-0.5b"));
        reg.save_file(&file).unwrap();
        let mut back = Registry::load_file(&file).unwrap();
        assert!(back.get("qwen2.5-coder-0.5b").is_some());
        assert!(back.remove("qwen2.5-coder-0.5b").is_some());
        assert!(back.names().is_empty());
    }

    #[test]
    fn defaults_fill_missing_fields_and_bad_files_name_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("models.toml");
        std::fs::write(&file, "[models.m]\npath = \"/x.gguf\"\n").unwrap();
        let reg = Registry::load_file(&file).unwrap();
        let m = reg.get("m").unwrap();
        assert_eq!(
            (m.engine, m.format, m.kind),
            (EngineKind::GemmaEngine, ModelFormat::Gguf, ModelKind::Base)
        );

        std::fs::write(&file, "[models.m\npath = ").unwrap();
        let err = Registry::load_file(&file).unwrap_err().to_string();
        assert!(
            err.contains("models.toml") && err.contains("fix or delete"),
            "{err}"
        );
        std::fs::write(&file, "[models.m]\nkind = \"chatty\"\npath = \"/x\"\n").unwrap();
        let err = Registry::load_file(&file).unwrap_err().to_string();
        assert!(err.contains("chatty") || err.contains("variant"), "{err}");
    }
}

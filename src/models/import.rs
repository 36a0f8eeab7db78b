//! `gemmactl models import NAME --from FILE.gguf --to sbs`: converts a Gemma 3 GGUF into a
//! gemma.cpp single-file `.sbs`, checks it, and registers it for gemma.cpp, so one set of weights
//! runs on both engines (and `gemmactl bench` can compare them).
//!
//! gemmactl does not link llama.cpp; gemma-engine does, so the conversion runs there
//! (`gemma-engine --export-sbs`, which dequantizes with ggml's own type traits) as a child
//! process whose JSON progress lines drive a bar here. The written file then passes the same
//! pre-flight as any other `.sbs` before it is registered.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{sbs, ModelKind};

/// The `.sbs` weight types a GGUF can be imported as (gemma.cpp's 8-bit `sfp` needs its own
/// compressor, which gemmactl does not have).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbsType {
    /// bfloat16: 2 bytes per weight.
    Bf16,
    /// 32-bit float: 4 bytes per weight.
    F32,
}

impl SbsType {
    /// The type's name, as `gemma-engine --export-sbs --type` takes it and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            SbsType::Bf16 => "bf16",
            SbsType::F32 => "f32",
        }
    }
}

/// Refuses what cannot be imported before any work: a file that is not a Gemma 3 GGUF.
pub fn check_source(from: &Path) -> Result<gguf::GgufInfo> {
    let info = gguf::inspect(from)?;
    match info.architecture.as_deref() {
        Some("gemma3") => Ok(info),
        other => bail!(
            "{} is a{} model, and import writes gemma.cpp files, which run only Gemma models: import a Gemma 3 GGUF (270M or 1B)",
            from.display(),
            match other {
                Some(a) => format!(" {a}"),
                None => "n unlabelled (no general.architecture)".to_string(),
            }
        ),
    }
}

/// Runs `engine --export-sbs` and waits for it; returns the written file's check.
pub fn export(
    engine: &Path,
    from: &Path,
    out: &Path,
    ty: SbsType,
    kind: Option<ModelKind>,
) -> Result<sbs::SbsInfo> {
    let mut cmd = Command::new(engine);
    cmd.arg("--export-sbs")
        .arg(from)
        .arg("--out")
        .arg(out)
        .args(["--type", ty.as_str()]);
    if let Some(k) = kind {
        cmd.args(["--kind", k.as_str()]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", engine.display()))?;
    // llama.cpp's log goes to stderr; keep it for an error report without blocking the child.
    let mut stderr = child
        .stderr
        .take()
        .context("gemma-engine's stderr was not piped")?;
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let bar = progress_bar();
    let mut error = None;
    let mut finished = false;
    for line in BufReader::new(
        child
            .stdout
            .take()
            .context("gemma-engine's stdout was not piped")?,
    )
    .lines()
    {
        let Ok(line) = line else { break };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match event["event"].as_str() {
            Some("export_progress") => {
                let fraction = event["fraction"].as_f64().unwrap_or(0.0);
                bar.set_position((fraction * 1000.0) as u64);
                if let Some(t) = event["tensor"].as_str() {
                    bar.set_message(t.to_string());
                }
            }
            Some("exported") => finished = true,
            Some("error") => error = event["message"].as_str().map(str::to_string),
            _ => {}
        }
    }
    bar.finish_and_clear();
    let status = child.wait()?;
    let logs = logs.join().unwrap_or_default();
    if let Some(message) = error {
        bail!("{message}");
    }
    if !status.success() || !finished {
        let tail: Vec<&str> = logs.lines().rev().take(3).collect();
        bail!(
            "gemma-engine {} while converting {}{}: run the import again; if it fails again, check the file with `gemmactl models check {}`",
            crate::isolation::ExitInfo::from_status(status),
            from.display(),
            if tail.is_empty() {
                String::new()
            } else {
                format!(" (its last words: {})", tail.into_iter().rev().collect::<Vec<_>>().join(" / "))
            },
            from.display()
        );
    }
    sbs::preflight(out, None).map_err(|e| {
        anyhow::anyhow!(
            "the converted file does not pass its own check, so it was not registered: {e}"
        )
    })
}

/// The default place for an imported model: gemmactl's model cache, named after the entry.
pub fn default_path(cache: &Path, name: &str, ty: SbsType) -> PathBuf {
    cache.join(format!("{name}.{}.sbs", ty.as_str()))
}

fn progress_bar() -> ProgressBar {
    use std::io::IsTerminal;
    // Progress only on a terminal: a script sees one line, the result (or one error).
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("converting [{bar:30}] {percent:>3}% {msg} ({elapsed})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

//! Which engine builds this machine has, and what each can use.
//!
//! A GPU build of gemma-engine is a separate binary (`gemma-engine-cuda`, `gemma-engine-vulkan`,
//! `gemma-engine-openvino`): configured in `[engine.builds]` (or `GEMMACTL_ENGINE_CUDA`, ...), or
//! found next to the CPU engine or next to gemmactl. What a build can use is asked of the build
//! itself (`--probe`: the backends llama.cpp registered and the devices they see, with free
//! memory), in a child bounded by a timeout — the most truthful answer, and a crash-proof one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::isolate;
use crate::config::Config;
use crate::domain::Backend;
use engine_protocol::{Event, ProbeInfo};

/// One GPU backend's build: where it is and what its probe said, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct BuildFinding {
    /// The GPU backend the build is for.
    pub backend: Backend,
    /// `Err` is the sentence saying why no build is there.
    #[serde(serialize_with = "ser_result")]
    pub found: Result<FoundBuild, String>,
}

/// A GPU build that exists, and what it said when probed.
#[derive(Debug, Clone, Serialize)]
pub struct FoundBuild {
    /// The build's binary.
    pub path: PathBuf,
    /// `configured` or `next to gemmactl`.
    pub source: String,
    /// Its `--probe` answer, or the sentence saying why the probe failed.
    #[serde(serialize_with = "ser_result")]
    pub probe: Result<ProbeInfo, String>,
}

/// Looks for every GPU build and probes the ones found.
pub fn find_gpu_builds(config: &Config, limit: Duration) -> Vec<BuildFinding> {
    Backend::GPU
        .into_iter()
        .map(|b| find_build(config, b, limit))
        .collect()
}

/// Looks for one GPU backend's build and probes it if found, within `limit`.
pub fn find_build(config: &Config, backend: Backend, limit: Duration) -> BuildFinding {
    let found = locate(config, backend).map(|(path, source)| {
        let probe = probe_engine(&path, limit);
        FoundBuild {
            path,
            source,
            probe,
        }
    });
    BuildFinding { backend, found }
}

/// Where a backend's build is: configured path, else next to the CPU engine, else next to us.
pub fn locate(config: &Config, backend: Backend) -> Result<(PathBuf, String), String> {
    let name = backend.binary_name();
    if let Some(path) = config.engine.builds.get(backend) {
        return if path.is_file() {
            Ok((path.clone(), "configured".into()))
        } else {
            Err(format!(
                "{name} is configured at {} (engine.builds.{} or GEMMACTL_ENGINE_{}) but that file does not exist: fix the path or build it with scripts/build-gpu.sh {}",
                path.display(),
                backend.id(),
                backend.id().to_uppercase(),
                backend.id()
            ))
        };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = config.engine.path.as_ref().and_then(|p| p.parent()) {
        dirs.push(dir.to_path_buf());
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for dir in &dirs {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            return Ok((candidate, "next to gemmactl".into()));
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "no {name} build found (looked in {}): build one with scripts/build-gpu.sh {}",
        looked.join(", "),
        backend.id()
    ))
}

/// Runs `ENGINE --probe` in a bounded child.
pub fn probe_engine(path: &Path, limit: Duration) -> Result<ProbeInfo, String> {
    let what = format!("{} --probe", path.display());
    match isolate::run_json::<Event>(path, &["--probe"], limit, &what)? {
        Event::Probe(info) => Ok(info),
        Event::Error(e) => Err(format!("{what} failed: {}", e.message)),
        other => Err(format!(
            "{what} answered with an unexpected event: {other:?}"
        )),
    }
}

/// The CPU engine (`gemma-engine`) and its probe.
#[derive(Debug, Clone, Serialize)]
pub struct CpuEngine {
    /// The binary gemmactl would run, or the sentence saying why there is none.
    #[serde(serialize_with = "ser_result")]
    pub path: Result<PathBuf, String>,
    /// Its `--probe` answer, or the sentence saying why there is none.
    #[serde(serialize_with = "ser_result")]
    pub probe: Result<ProbeInfo, String>,
}

/// Finds the CPU engine the configuration names and probes it, within `limit`.
pub fn cpu_engine(config: &Config, limit: Duration) -> CpuEngine {
    match config.engine_binary() {
        Ok(path) => {
            let probe = probe_engine(&path, limit);
            CpuEngine {
                path: Ok(path),
                probe,
            }
        }
        Err(e) => CpuEngine {
            path: Err(format!("{e:#}")),
            probe: Err("not probed: no binary".into()),
        },
    }
}

/// The gemma.cpp binary gemmactl would run (the engine's own lookup), or why there is none:
/// presence only, since gemma.cpp is CPU-only and has nothing to probe.
#[derive(Debug, Clone, Serialize)]
pub struct GemmaCppBinary {
    /// The `gemma` binary, or the sentence saying why there is none.
    #[serde(serialize_with = "ser_result")]
    pub path: Result<PathBuf, String>,
}

/// Looks up the gemma.cpp binary as the engine adapter would.
pub fn gemma_cpp(config: &Config) -> GemmaCppBinary {
    GemmaCppBinary {
        path: config.gemma_cpp_binary(),
    }
}

/// `Ok(x)` as `{"ok": x}`, `Err(why)` as `{"error": why}`, so `doctor --json` keeps both.
fn ser_result<T: Serialize, S: serde::Serializer>(
    value: &Result<T, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(1))?;
    match value {
        Ok(v) => map.serialize_entry("ok", v)?,
        Err(e) => map.serialize_entry("error", e)?,
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_build_that_is_missing_names_the_fix() {
        let mut config = Config::default();
        config.engine.builds.cuda = Some("/nonexistent/gemma-engine-cuda".into());
        let why = locate(&config, Backend::Cuda).unwrap_err();
        assert!(
            why.contains("/nonexistent/gemma-engine-cuda")
                && why.contains("scripts/build-gpu.sh cuda"),
            "{why}"
        );
    }

    #[test]
    fn a_probe_that_is_not_an_engine_is_refused() {
        let e = probe_engine(Path::new("/bin/true"), Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("no answer"), "{e}");
    }
}

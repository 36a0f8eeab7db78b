//! What a results file records besides the figures: the machine, the build and the model, so a
//! reader can tell whether two runs are comparable at all (same CPU, same weights) and which code
//! each one measured.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::results::{Build, EngineBuild, Machine, ModelFacts};
use crate::domain::EngineKind;
use crate::hardware;
use crate::models::ModelEntry;

/// The commit `build.rs` found, or `unknown`.
const GIT_COMMIT: &str = env!("GEMMACTL_GIT_COMMIT");

/// How long the engine's `--probe` may take before the build facts say it failed.
const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// This machine, through the same detection `doctor` uses.
pub(super) fn machine() -> Machine {
    let cpu = hardware::cpu::detect();
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok());
    Machine {
        cpu_model: cpu.model,
        arch: cpu.arch.to_string(),
        logical_cores: cpu.logical_cores,
        physical_cores: cpu.physical_cores,
        cpu_flags: cpu.simd,
        memory_bytes: hardware::memory::detect().total,
        os: std::env::consts::OS.to_string(),
        load_average,
    }
}

/// gemmactl's build and the engine binary that runs `model`.
pub(super) fn build(model: &ModelEntry, engine_bin: &Path) -> Build {
    let engine = match model.engine {
        EngineKind::GemmaCpp => EngineBuild {
            name: EngineKind::GemmaCpp.as_str().to_string(),
            path: engine_bin.display().to_string(),
            // The stock gemma binary has no probe and no build options gemmactl can see; it
            // only ever runs on the CPU.
            features: Vec::new(),
            backends: vec!["CPU".to_string()],
            probe_error: None,
        },
        _ => {
            let (features, backends, probe_error) =
                match hardware::engines::probe_engine(engine_bin, PROBE_LIMIT) {
                    Ok(p) => (p.features, p.backends, None),
                    Err(e) => (Vec::new(), Vec::new(), Some(e)),
                };
            EngineBuild {
                name: EngineKind::GemmaEngine.as_str().to_string(),
                path: engine_bin.display().to_string(),
                features,
                backends,
                probe_error,
            }
        }
    };
    Build {
        gemmactl_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: GIT_COMMIT.to_string(),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_string(),
        engine,
    }
}

/// The model's name, file and checksum: the registry's when a download was verified against one,
/// else the file hashed now (a second or so for a small model; the figures take minutes).
pub(super) fn model_facts(model: &ModelEntry) -> anyhow::Result<ModelFacts> {
    let (sha256, source) = match &model.sha256 {
        Some(sum) => (Some(sum.to_lowercase()), "registry"),
        None => (Some(sha256_of(&model.path)?), "computed"),
    };
    Ok(ModelFacts {
        name: model.name.clone(),
        path: model.path.display().to_string(),
        engine: model.engine.as_str().to_string(),
        format: model.format.as_str().to_string(),
        size_bytes: std::fs::metadata(&model.path).ok().map(|m| m.len()),
        sha256,
        sha256_source: source.to_string(),
    })
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot read {} to checksum it", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {} to checksum it", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_as_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello!").unwrap();
        assert_eq!(
            sha256_of(&path).unwrap(),
            "ce06092fb948d9ffac7d1a376e404b26b7575bcc11ee05a4615fef4fec3a308b"
        );
    }

    #[test]
    fn this_machine_and_build_are_described() {
        let m = machine();
        assert!(m.logical_cores >= 1 && !m.cpu_model.is_empty());
        // Built from this repository's checkout, build.rs found a commit.
        assert!(
            GIT_COMMIT == "unknown" || GIT_COMMIT.len() == 40,
            "{GIT_COMMIT}"
        );
    }
}

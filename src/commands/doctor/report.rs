//! Everything `gemmactl doctor` reports, gathered in one place.
//!
//! CPU and memory are read directly (files, no drivers). NVIDIA, Vulkan and OpenVINO are each
//! asked in their own child (`gemmactl doctor --probe-gpu KIND`, see `isolate`), so one broken
//! driver spoils only its own line. Engine builds answer through their `--probe`. The same
//! `select::choose` the supervisor uses then says, per registered model, which backend it would
//! run on and why.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::domain::{Backend, EngineKind};
use crate::hardware::cpu::{self, CpuInfo};
use crate::hardware::engines::{self, BuildFinding, CpuEngine, GemmaCppBinary};
use crate::hardware::isolate;
use crate::hardware::memory::{self, MemoryInfo};
use crate::hardware::nvidia::{self, NvidiaReport};
use crate::hardware::openvino::{self, OpenvinoReport};
use crate::hardware::select::{self, Inventory, Plan};
use crate::hardware::vulkan::{self, VulkanReport};
use crate::models::ModelEntry;

/// The driver probes, by the name the hidden `--probe-gpu` flag takes.
pub(super) const GPU_PROBES: [&str; 3] = ["nvidia", "vulkan", "openvino"];

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cpu: CpuInfo,
    /// Each x86 extension llama.cpp can use: advertised, enabled by the OS, seen to run.
    pub cpu_extensions: Vec<crate::hardware::cpu_usable::Extension>,
    pub memory: MemoryInfo,
    pub nvidia: NvidiaReport,
    pub vulkan: VulkanReport,
    pub openvino: OpenvinoReport,
    pub engines: EnginesReport,
    pub models: Vec<ModelChoice>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnginesReport {
    pub gemma_engine: CpuEngine,
    pub gpu_builds: Vec<BuildFinding>,
    pub gemma_cpp: GemmaCppBinary,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelChoice {
    pub model: String,
    pub engine: EngineKind,
    /// What the model needs in memory (bytes), as the supervisor estimates it.
    pub needs: Option<u64>,
    pub backend: Backend,
    pub gpu_layers: Option<u32>,
    pub reason: String,
    pub fallback: Option<String>,
}

/// Runs one driver probe in this process and returns its JSON: the body of the hidden child
/// command. `GEMMACTL_TEST_PROBE_FAULT=KIND:crash|hang` makes that probe misbehave, so tests can
/// prove a broken driver cannot take gemmactl down.
pub(super) fn probe_child(config: &Config, kind: &str) -> Result<String, String> {
    #[cfg(feature = "test-support")]
    if let Some(fault) = config
        .env
        .probe_fault
        .as_deref()
        .and_then(|f| f.strip_prefix(&format!("{kind}:")))
    {
        match fault {
            "crash" => std::process::abort(),
            "hang" => std::thread::sleep(Duration::from_secs(3600)),
            _ => {}
        }
    }
    #[cfg(not(feature = "test-support"))]
    let _ = config;
    let json = match kind {
        "nvidia" => serde_json::to_string(&nvidia::probe()),
        "vulkan" => serde_json::to_string(&vulkan::probe()),
        "openvino" => serde_json::to_string(&openvino::probe(config.env.openvino_dir.as_deref())),
        other => {
            return Err(format!(
                "unknown probe {other:?}: use one of {}",
                GPU_PROBES.join(", ")
            ))
        }
    };
    json.map_err(|e| format!("the {kind} probe's report could not be written as JSON: {e}"))
}

/// Gathers the whole report. Blocking (children, bounded by `isolate::timeout`).
pub(super) fn gather(config: &Config, models: &[ModelEntry]) -> Report {
    let limit = config.env.probe_timeout;
    let exe = std::env::current_exe().ok();
    // The three driver probes and the engine probes are independent: run them side by side so
    // a hung driver costs one timeout, not three.
    let (nvidia, vulkan, openvino, engines) = std::thread::scope(|s| {
        let probe = |kind: &'static str| {
            let exe = exe.clone();
            s.spawn(move || isolated_probe(exe.as_deref(), kind, limit))
        };
        let (n, v, o) = (probe("nvidia"), probe("vulkan"), probe("openvino"));
        let e = s.spawn(|| EnginesReport {
            gemma_engine: engines::cpu_engine(config, limit),
            gpu_builds: engines::find_gpu_builds(config, limit),
            gemma_cpp: engines::gemma_cpp(config),
        });
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<String, String>>| {
            h.join()
                .unwrap_or_else(|_| Err("the probe thread panicked".into()))
        };
        (
            join(n),
            join(v),
            join(o),
            e.join().unwrap_or_else(|_| EnginesReport {
                gemma_engine: engines::CpuEngine {
                    path: Err("the engine probe thread panicked".into()),
                    probe: Err("the engine probe thread panicked".into()),
                },
                gpu_builds: Vec::new(),
                gemma_cpp: engines::GemmaCppBinary {
                    path: Err("the engine probe thread panicked".into()),
                },
            }),
        )
    });
    let nvidia: NvidiaReport = decode(nvidia, "NVIDIA", |note| NvidiaReport {
        note: Some(note),
        ..Default::default()
    });
    let vulkan: VulkanReport = decode(vulkan, "Vulkan", |note| VulkanReport {
        note: Some(note),
        devices: Vec::new(),
    });
    let openvino: OpenvinoReport = decode(openvino, "OpenVINO", |note| OpenvinoReport {
        note: Some(note),
        devices: Vec::new(),
    });

    let inventory = Inventory {
        builds: engines.gpu_builds.clone(),
        hardware: hardware_seen(&nvidia, &vulkan, &openvino),
    };
    let models = models
        .iter()
        .map(|m| choice_for(config, &inventory, m))
        .collect();
    Report {
        cpu: cpu::detect(),
        cpu_extensions: crate::hardware::cpu_usable::judge(),
        memory: memory::detect(),
        nvidia,
        vulkan,
        openvino,
        engines,
        models,
    }
}

fn isolated_probe(exe: Option<&Path>, kind: &str, limit: Duration) -> Result<String, String> {
    let exe =
        exe.ok_or_else(|| "gemmactl cannot find its own executable to run the probe".to_string())?;
    isolate::run_json::<serde_json::Value>(
        exe,
        &["doctor", "--probe-gpu", kind],
        limit,
        &format!("the {kind} probe"),
    )
    .map(|v| v.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(
    answer: Result<String, String>,
    what: &str,
    failed: impl Fn(String) -> T,
) -> T {
    match answer {
        Ok(json) => serde_json::from_str(&json).unwrap_or_else(|e| {
            failed(format!(
                "the {what} probe answered in a form gemmactl does not understand ({e})"
            ))
        }),
        // A crash or hang is a fact about this machine's driver, reported like any other.
        Err(why) => failed(why),
    }
}

/// Real GPUs the drivers report, as hints for the policy ("a GPU is here but not used").
pub(super) fn hardware_seen(
    nvidia: &NvidiaReport,
    vulkan: &VulkanReport,
    openvino: &OpenvinoReport,
) -> Vec<(Backend, String)> {
    let mut seen = Vec::new();
    if let Some(gpu) = nvidia.gpus.first() {
        seen.push((Backend::Cuda, format!("an NVIDIA GPU ({})", gpu.name)));
    }
    if let Some(d) = vulkan.devices.iter().find(|d| d.is_gpu) {
        seen.push((Backend::Vulkan, format!("a Vulkan GPU ({})", d.name)));
    }
    if let Some(d) = openvino
        .devices
        .iter()
        .find(|d| d.name.starts_with("GPU") || d.name.starts_with("NPU"))
    {
        seen.push((Backend::Openvino, format!("an OpenVINO {} device", d.name)));
    }
    seen
}

fn choice_for(config: &Config, inventory: &Inventory, model: &ModelEntry) -> ModelChoice {
    if model.engine == EngineKind::Remote {
        return ModelChoice {
            model: model.name.clone(),
            engine: EngineKind::Remote,
            needs: None,
            backend: Backend::Remote,
            gpu_layers: None,
            reason: format!("remote: served by {}", model.location()),
            fallback: None,
        };
    }
    if model.engine == EngineKind::GemmaCpp {
        return ModelChoice {
            model: model.name.clone(),
            engine: EngineKind::GemmaCpp,
            needs: None,
            backend: Backend::Cpu,
            gpu_layers: None,
            reason: "CPU: gemma.cpp has no GPU code".into(),
            fallback: None,
        };
    }
    let needs = crate::models::memory::needs(
        &model.path,
        config.engine.context,
        config.engine.parallel.max(1),
        config.engine.kv_cache_type,
    );
    let plan: Plan = select::choose(
        config.engine.backend,
        &config.engine.backend_order,
        inventory,
        &needs,
    );
    ModelChoice {
        model: model.name.clone(),
        engine: EngineKind::GemmaEngine,
        needs: Some(needs.estimate.total()),
        backend: plan.backend,
        gpu_layers: plan.gpu_layers,
        reason: plan.reason,
        fallback: plan.fallback,
    }
}

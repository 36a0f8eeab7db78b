//! Starting gemma-engine on the chosen backend, with an honest fall back to the CPU.
//!
//! The supervisor hands over the launch it would do on the CPU; this module decides (through
//! [`select::choose`]) whether a GPU build should run instead, starts it, and if it fails to
//! start, times out or runs out of memory, starts the CPU engine and records why in the engine's
//! description (`fallback`), which `run --stats`, `run --json`, `ps` and `doctor` show. The backend
//! shown stays the one the engine's own `ready` event reports: a GPU build that ends up with no
//! layer on a GPU is reported as CPU, with the reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::backend::{Backend, BackendRequest};
use super::select::{self, Inventory, ModelNeeds, Plan};
use super::{engines, isolate, nvidia};
use crate::config::Config;
use crate::engines::gemma_engine::{GemmaEngine, LaunchSpec};
use crate::engines::{
    Engine, EngineDescription, EngineError, ExitInfo, GenerateRequest, ReplyStream,
};
#[cfg(doc)]
use crate::supervisor::memory;

/// Starts the model's engine: on a GPU build when the policy picks one, else (or after a failed
/// GPU start) on the CPU engine of `cpu`. `needs` is what the model needs at `cpu`'s context and
/// slot count ([`memory::needs`]), already worked out by the supervisor for its memory budget.
pub async fn start_gemma_engine(
    config: &Config,
    cpu: LaunchSpec,
    needs: ModelNeeds,
    mut progress: impl FnMut(f32) + Send,
) -> Result<Arc<dyn Engine>, EngineError> {
    let plan = if config.engine.backend == BackendRequest::Cpu {
        None
    } else {
        let config = config.clone();
        tokio::task::spawn_blocking(move || plan_for(&config, &needs))
            .await
            .ok()
    };
    let Some(plan) = plan else {
        return Ok(Arc::new(GemmaEngine::start(&cpu, progress).await?));
    };
    tracing::info!(backend = %plan.backend, "backend chosen: {}", plan.reason);

    let mut fallback = plan.fallback.clone();
    if let (Some(binary), Backend::Cuda | Backend::Vulkan | Backend::Openvino) =
        (plan.binary.clone(), plan.backend)
    {
        let gpu = LaunchSpec {
            binary: binary.clone(),
            gpu_layers: plan.gpu_layers,
            ..cpu.clone()
        };
        match GemmaEngine::start(&gpu, &mut progress).await {
            Ok(engine) => {
                let mut description = engine.describe();
                if description.gpu_layers == 0 || description.backend == Backend::Cpu.label() {
                    // The build started but put nothing on a GPU: say so rather than let "CUDA" stand.
                    description.fallback = Some(join(
                        fallback,
                        format!("{} started but reports no layer on a GPU (its ready event says {}), so the model runs on the CPU", binary.display(), description.backend),
                    ));
                } else {
                    description.fallback = fallback;
                }
                return Ok(Arc::new(Annotated {
                    inner: engine,
                    description,
                }));
            }
            Err(e) => {
                let why = one_line(&e.to_string());
                tracing::warn!(backend = %plan.backend, "GPU engine failed, falling back to the CPU: {why}");
                fallback = Some(join(
                    fallback,
                    format!(
                        "{} engine {} failed to start ({why}); running on the CPU instead",
                        plan.backend.label(),
                        binary.display()
                    ),
                ));
            }
        }
    }
    let engine = GemmaEngine::start(&cpu, progress).await?;
    let mut description = engine.describe();
    description.fallback = fallback;
    Ok(Arc::new(Annotated {
        inner: engine,
        description,
    }))
}

/// The plan for one launch: finds and probes GPU builds (bounded children) and asks the policy.
/// Blocking: call it off the async threads.
pub fn plan_for(config: &Config, needs: &ModelNeeds) -> Plan {
    let limit = isolate::timeout();
    let wanted: Vec<Backend> = match config.engine.backend.backend() {
        Some(b) => vec![b],
        None => config
            .engine
            .backend_order
            .iter()
            .copied()
            .filter(|b| *b != Backend::Cpu)
            .collect(),
    };
    let builds = wanted
        .iter()
        .map(|b| engines::find_build(config, *b, limit))
        .collect();
    let mut hardware = Vec::new();
    if let Some(driver) = nvidia::driver_present() {
        hardware.push((
            Backend::Cuda,
            format!(
                "an NVIDIA GPU ({})",
                driver
                    .split_whitespace()
                    .take(8)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ));
    }
    let inventory = Inventory { builds, hardware };
    select::choose(
        config.engine.backend,
        &config.engine.backend_order,
        &inventory,
        needs,
    )
}

fn join(first: Option<String>, then: String) -> String {
    match first {
        Some(f) => format!("{f}; {then}"),
        None => then,
    }
}

/// An engine error on one line (stderr tails come on several), kept short enough for a status line.
fn one_line(text: &str) -> String {
    let mut line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "last lines of its stderr:")
        .collect::<Vec<_>>()
        .join(" | ");
    if line.chars().count() > 400 {
        line = line.chars().take(400).collect::<String>() + "…";
    }
    line
}

/// A gemma-engine whose description carries what selection learned (the fallback).
struct Annotated {
    inner: GemmaEngine,
    description: EngineDescription,
}

impl Engine for Annotated {
    fn describe(&self) -> EngineDescription {
        self.description.clone()
    }
    fn generate(&self, request: GenerateRequest) -> Result<ReplyStream, EngineError> {
        self.inner.generate(request)
    }
    fn cancel(&self, id: &str) {
        self.inner.cancel(id)
    }
    fn exit_status(&self) -> Option<ExitInfo> {
        self.inner.exit_status()
    }
    fn stop(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.inner.stop(grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_become_one_short_line() {
        let text = "gemma-engine exited with status 1\n  last lines of its stderr:\n    CUDA error: out of memory\n";
        assert_eq!(
            one_line(text),
            "gemma-engine exited with status 1 | CUDA error: out of memory"
        );
        assert!(one_line(&"x".repeat(1000)).chars().count() <= 401);
    }
}

//! The one seam through which the supervisor starts engines.
//!
//! The supervisor decides *when* a model's engine starts and stops; a [`Launcher`] knows *how*:
//! what a model will cost, how much memory the machine has free, and how to start the right
//! engine for a model entry. [`ProcessLauncher`] is the real one: gemma-engine on the backend the
//! hardware policy picks (with an honest fall back to the CPU, whose reason travels with the
//! engine), and gemma.cpp after the `.sbs` pre-flight. Tests hand the supervisor a launcher of
//! in-memory engines instead, so the pool and lifecycle policy are tested without processes, the
//! way ollama's scheduler tests inject their runner constructor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::LoadOptions;
use crate::config::{BackendRequest, Config, Spin};
use crate::domain::{Backend, ErrorCode, MemoryEstimate, ModelFacts, ModelNeeds};
use crate::engines::gemma_cpp::{GemmaCpp, GemmaCppSpec};
use crate::engines::gemma_engine::{GemmaEngine, LaunchSpec};
use crate::engines::remote::{self, RemoteEngine, RemoteSpec};
use crate::engines::{Engine, EngineError};
use crate::hardware::select::{self, Inventory, Plan};
use crate::hardware::{engines, nvidia};
use crate::models::{EngineKind, ModelEntry, ModelKind};

/// Load progress, a fraction from 0 to 1.
pub type Progress<'a> = Box<dyn FnMut(f32) + Send + 'a>;

/// A boxed future, as the launcher's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A started engine, and why it is not on the GPU that was asked for or is present, if so.
pub struct Launched {
    /// The engine, ready for requests.
    pub engine: Arc<dyn Engine>,
    /// The fallback reason, shown by `run --stats`, `--json`, `ps` and stored with replies.
    pub fallback: Option<String>,
}

/// What the supervisor needs from the machine to run engines.
pub trait Launcher: Send + Sync + 'static {
    /// What `model` will need at `options`: its memory estimate and layers.
    fn needs(&self, model: &ModelEntry, options: &LoadOptions) -> ModelNeeds;
    /// Bytes of memory the machine has free now, if known.
    fn available_memory(&self) -> Option<u64>;
    /// Starts `model`'s engine and waits until it is ready.
    fn launch<'a>(
        &'a self,
        model: &'a ModelEntry,
        options: &'a LoadOptions,
        needs: ModelNeeds,
        progress: Progress<'a>,
    ) -> BoxFuture<'a, Result<Launched, EngineError>>;
}

/// Starts real engine processes.
pub struct ProcessLauncher {
    config: Config,
}

impl ProcessLauncher {
    /// A launcher for engines configured by `config`.
    pub fn new(config: Config) -> ProcessLauncher {
        ProcessLauncher { config }
    }

    async fn gemma_engine(
        &self,
        model: &ModelEntry,
        options: &LoadOptions,
        needs: ModelNeeds,
        progress: Progress<'_>,
    ) -> Result<Launched, EngineError> {
        let binary = self
            .config
            .engine_binary()
            .map_err(|e| EngineError::Spawn {
                binary: self
                    .config
                    .engine
                    .path
                    .clone()
                    .unwrap_or_else(|| "gemma-engine".into()),
                reason: format!("{e:#}"),
            })?;
        let cpu = LaunchSpec {
            binary,
            model_path: model.path.clone(),
            mmproj: model.mmproj.clone(),
            context: options.context,
            parallel: options.parallel,
            threads: options.threads,
            gpu_layers: None,
            kv_cache_type: options.kv_cache_type,
            flash_attention: options.flash_attention,
            load_timeout: Duration::from_secs(self.config.engine.load_timeout_secs),
        };
        start_on_backend(&self.config, cpu, needs, progress).await
    }

    async fn gemma_cpp(
        &self,
        model: &ModelEntry,
        options: &LoadOptions,
        mut progress: Progress<'_>,
    ) -> Result<Launched, EngineError> {
        // The .sbs pre-flight runs before every launch, restarts included.
        let info = crate::models::preflight_sbs(model).map_err(|e| EngineError::Load {
            code: ErrorCode::LoadFailed,
            message: e.to_string(),
            path: Some(model.path.display().to_string()),
        })?;
        let binary = self
            .config
            .gemma_cpp_binary()
            .map_err(|reason| EngineError::Spawn {
                binary: "gemma".into(),
                reason,
            })?;
        let settings = &self.config.engines.gemma_cpp;
        let mut spec = GemmaCppSpec::new(binary, model.path.clone());
        spec.facts = ModelFacts {
            path: model.path.display().to_string(),
            name: info.specifier.clone(),
            architecture: info.family.clone(),
            layers: info.layers.unwrap_or(0),
            size_bytes: info.file_size,
            ..ModelFacts::default()
        };
        spec.tokenizer = model.tokenizer.clone();
        // A single-file model's config decides the wrapping; older files follow the kind.
        spec.chat = info.instruct.unwrap_or(model.kind == ModelKind::Instruct);
        spec.seq_len = settings.seq_len;
        spec.threads = settings.threads.or(options.threads);
        spec.spin = settings.spin.map(|s| match s {
            Spin::Auto => -1,
            Spin::Off => 0,
            Spin::On => 1,
        });
        spec.load_timeout = Duration::from_secs(self.config.engine.load_timeout_secs);
        let engine = GemmaCpp::start(&spec, &mut progress).await?;
        Ok(Launched {
            engine: Arc::new(engine),
            fallback: None,
        })
    }
}

impl Launcher for ProcessLauncher {
    fn needs(&self, model: &ModelEntry, options: &LoadOptions) -> ModelNeeds {
        if model.engine == EngineKind::Remote {
            // Its memory is another machine's: it takes nothing from this one's budget.
            return ModelNeeds {
                layers: 0,
                estimate: MemoryEstimate {
                    weights: 0,
                    kv_cache: 0,
                    compute: 0,
                },
            };
        }
        let mut needs = crate::models::memory::needs(
            &model.path,
            options.context,
            options.parallel,
            options.kv_cache_type,
        );
        // A vision projector is loaded whole beside the model: its file counts as weights.
        if let Some(projector) = &model.mmproj {
            needs.estimate.weights += std::fs::metadata(projector).map(|m| m.len()).unwrap_or(0);
        }
        needs
    }

    fn available_memory(&self) -> Option<u64> {
        crate::hardware::memory::available()
    }

    fn launch<'a>(
        &'a self,
        model: &'a ModelEntry,
        options: &'a LoadOptions,
        needs: ModelNeeds,
        progress: Progress<'a>,
    ) -> BoxFuture<'a, Result<Launched, EngineError>> {
        Box::pin(async move {
            match model.engine {
                EngineKind::GemmaEngine => self.gemma_engine(model, options, needs, progress).await,
                EngineKind::GemmaCpp => self.gemma_cpp(model, options, progress).await,
                EngineKind::Remote => {
                    let spec = remote_spec(&self.config, model, options)?;
                    let engine = RemoteEngine::connect(spec).await?;
                    Ok(Launched {
                        engine: Arc::new(engine),
                        fallback: None,
                    })
                }
            }
        })
    }
}

/// Starts gemma-engine: on a GPU build when the policy picks one, else (or after a failed GPU
/// start) on the CPU engine of `cpu`. A GPU build that starts but puts no layer on a GPU is
/// reported as running on the CPU, with the reason.
async fn start_on_backend(
    config: &Config,
    cpu: LaunchSpec,
    needs: ModelNeeds,
    mut progress: Progress<'_>,
) -> Result<Launched, EngineError> {
    let plan = if config.engine.backend == BackendRequest::Cpu {
        None
    } else {
        let config = config.clone();
        tokio::task::spawn_blocking(move || plan_for(&config, &needs))
            .await
            .ok()
    };
    let Some(plan) = plan else {
        let engine = GemmaEngine::start(&cpu, progress).await?;
        return Ok(Launched {
            engine: Arc::new(engine),
            fallback: None,
        });
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
                let d = engine.describe();
                if d.gpu_layers == 0 || d.backend == Backend::Cpu {
                    // The build started but put nothing on a GPU: say so rather than let "CUDA" stand.
                    fallback = Some(join(
                        fallback,
                        format!("{} started but reports no layer on a GPU, so the model runs on the CPU", binary.display()),
                    ));
                }
                return Ok(Launched {
                    engine: Arc::new(engine),
                    fallback,
                });
            }
            Err(e) => {
                let why = e.summary();
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
    Ok(Launched {
        engine: Arc::new(engine),
        fallback,
    })
}

/// The plan for one launch: finds and probes GPU builds (bounded children) and asks the policy.
/// Blocking: call it off the async threads.
pub fn plan_for(config: &Config, needs: &ModelNeeds) -> Plan {
    let limit = config.env.probe_timeout;
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

/// How to reach a remote model: its registry entry, the configured timeouts, and the API key
/// read from the variable the entry names.
fn remote_spec(
    config: &Config,
    model: &ModelEntry,
    options: &LoadOptions,
) -> Result<RemoteSpec, EngineError> {
    let Some(r) = &model.remote else {
        return Err(EngineError::Load {
            code: ErrorCode::BadArguments,
            message: format!(
                "model {} is registered as remote but has no URL: register it again with `gemmactl models add {} --remote URL --force`",
                model.name, model.name
            ),
            path: None,
        });
    };
    let settings = &config.engines.remote;
    Ok(RemoteSpec {
        url: RemoteSpec::base_url(&r.url),
        model: r.model.clone().unwrap_or_else(|| model.name.clone()),
        api_key: r
            .api_key_env
            .as_deref()
            .and_then(|var| config.env.secret(var)),
        api_key_source: r.api_key_env.clone(),
        connect_timeout: Duration::from_secs(settings.connect_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(settings.idle_timeout_secs.max(1)),
        retries: settings.retries,
        parallel: options.parallel,
    })
}

/// What a remote model's server says: the models it serves, or one sentence saying why it could
/// not be asked (for `doctor` and `models add --remote`).
pub async fn probe_remote(config: &Config, model: &ModelEntry) -> Result<Vec<String>, String> {
    let spec =
        remote_spec(config, model, &LoadOptions::from_config(config)).map_err(|e| e.to_string())?;
    remote::list_models(&spec).await
}

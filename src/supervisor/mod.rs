//! The supervisor: the one owner of engine processes. Front ends (`run` today; the shell, batch
//! and MCP later) ask it for replies and never touch an engine themselves.
//!
//! This is the thin path `run` needs — start an engine for a model, wait for it to be ready,
//! send a request, stream the reply, stop everything on the way out. Every engine it starts is
//! stopped by [`Supervisor::shutdown`]; should gemmactl die instead, the engines die with it (see
//! `engines::child`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::config::Config;
use crate::engines::gemma_engine::{GemmaEngine, LaunchSpec};
use crate::engines::{Engine, EngineError, GenerateRequest, ReplyStream};
use crate::models::{EngineKind, ModelEntry};

/// How long an engine gets to exit after `shutdown` before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// What a caller hears while a model loads.
#[derive(Debug, Clone, Copy)]
pub enum LoadProgress {
    Starting,
    Loading(f32),
    Ready,
}

pub struct Supervisor {
    config: Config,
    engines: Mutex<HashMap<String, Arc<dyn Engine>>>,
    next_request: AtomicU64,
}

impl Supervisor {
    pub fn new(config: Config) -> Supervisor {
        Supervisor { config, engines: Mutex::new(HashMap::new()), next_request: AtomicU64::new(1) }
    }

    /// The engine serving `model`, started (and waited for) if it is not running.
    pub async fn engine_for(&self, model: &ModelEntry, mut progress: impl FnMut(LoadProgress) + Send) -> Result<Arc<dyn Engine>, EngineError> {
        let mut engines = self.engines.lock().await;
        if let Some(engine) = engines.get(&model.name) {
            if engine.exit_status().is_none() {
                return Ok(engine.clone());
            }
            tracing::info!(model = %model.name, "engine had exited; starting a new one");
            engines.remove(&model.name);
        }
        progress(LoadProgress::Starting);
        let engine: Arc<dyn Engine> = match model.engine {
            EngineKind::GemmaEngine => {
                let spec = self.launch_spec(model)?;
                Arc::new(GemmaEngine::start(&spec, |p| progress(LoadProgress::Loading(p))).await?)
            }
            EngineKind::GemmaCpp => {
                return Err(EngineError::Load {
                    code: crate::engines::ErrorCode::LoadFailed,
                    message: format!("model '{}' runs on gemma.cpp, which this version of gemmactl cannot drive yet: use a GGUF model", model.name),
                    path: Some(model.path.display().to_string()),
                })
            }
        };
        progress(LoadProgress::Ready);
        engines.insert(model.name.clone(), engine.clone());
        Ok(engine)
    }

    fn launch_spec(&self, model: &ModelEntry) -> Result<LaunchSpec, EngineError> {
        let binary = self.config.engine_binary().map_err(|e| EngineError::Spawn {
            binary: self.config.engine.path.clone().unwrap_or_else(|| "gemma-engine".into()),
            reason: format!("{e:#}"),
        })?;
        let settings = &self.config.engine;
        Ok(LaunchSpec {
            binary,
            model_path: model.path.clone(),
            context: settings.context,
            parallel: settings.parallel,
            threads: settings.threads,
            gpu_layers: None,
            load_timeout: Duration::from_secs(settings.load_timeout_secs),
        })
    }

    /// A request id unique within this gemmactl process.
    pub fn new_request_id(&self) -> String {
        format!("r{}", self.next_request.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends a request to the model's engine (starting it if needed) and returns its reply stream.
    pub async fn generate(
        &self,
        model: &ModelEntry,
        request: GenerateRequest,
        progress: impl FnMut(LoadProgress) + Send,
    ) -> Result<(Arc<dyn Engine>, ReplyStream), EngineError> {
        let engine = self.engine_for(model, progress).await?;
        let stream = engine.generate(request)?;
        Ok((engine, stream))
    }

    /// Stops every engine: gracefully, then by force after [`STOP_GRACE`].
    pub async fn shutdown(&self) {
        let engines: Vec<_> = self.engines.lock().await.drain().map(|(_, e)| e).collect();
        for engine in &engines {
            engine.stop(STOP_GRACE).await;
        }
    }
}

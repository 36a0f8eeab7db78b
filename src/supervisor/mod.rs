//! The supervisor: the one owner of engine processes. The turn service (and the operator tools
//! `bench` and `ps`) submit requests here and read a stream of [`SupervisorEvent`]s; they never
//! touch an engine themselves, and the supervisor never prints.
//!
//! Per model it keeps one engine with a checked lifecycle (`lifecycle.rs`), a bounded queue in
//! front of the engine's decode slots (`slot.rs`), crash restarts with backoff, and a pool policy
//! across models (`pool.rs`: count and memory budget, least recently used idle engine stopped
//! first; `housekeeping.rs`: idle engines stopped after a TTL). Engines are started through a
//! [`Launcher`] (`launch.rs`), the one seam between policy and processes. One request's life is
//! in `serve.rs`; starting, reloading and stopping an engine in `load.rs`.
//!
//! Shutdown is an object: one cancellation token every serve task listens to, and a task tracker
//! that [`Supervisor::shutdown`] waits on after stopping every engine concurrently. If gemmactl
//! dies instead, its engines die with it (see `crate::isolation`).

mod housekeeping;
pub mod launch;
pub mod lifecycle;
mod load;
pub mod pool;
mod serve;
mod slot;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Paths};
use crate::domain::{Completion, EngineDescription, FlashAttention, GenerateRequest, KvCacheType};
// Re-exported: callers above the supervisor build and match its errors without importing engines.
pub use crate::engines::EngineError;
use crate::models::ModelEntry;
pub use launch::{Launched, Launcher, ProcessLauncher};
pub use lifecycle::Phase;
use slot::ModelSlot;
use status::{ProcessStatus, StatusFile};

/// How long an engine gets to exit after `shutdown` before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Longest wait between restarts of an engine that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a caller hears about its request, in order: maybe `Queued`, maybe `Loading`/`Reloading`,
/// then `Started`, maybe `PromptProgress`, `Token`s, and exactly one `Finished` or `Failed`.
#[derive(Debug)]
pub enum SupervisorEvent {
    /// Waiting for a free decode slot.
    Queued {
        /// Requests ahead of this one.
        position: usize,
    },
    /// The model's engine is loading.
    Loading {
        /// Fraction from 0 to 1.
        progress: f32,
    },
    /// The engine is being restarted or reloaded, and why.
    Reloading {
        /// The reason, as a sentence.
        reason: String,
    },
    /// The request reached this engine.
    Started(EngineDescription),
    /// The engine is reading the prompt (prefill).
    PromptProgress {
        /// Prompt tokens read so far (cached ones included).
        done: u32,
        /// Prompt tokens in all.
        total: u32,
    },
    /// Generated text, in order.
    Token(String),
    /// The reply ended (possibly cut short or cancelled).
    Finished(Completion),
    /// The request failed.
    Failed(SupervisorError),
}

/// Why the supervisor could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SupervisorError {
    /// The engine failed or refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The pool has no room for the model.
    #[error(transparent)]
    Pool(#[from] pool::Refusal),
    /// The model's queue is full.
    #[error("model {model} has {queued} requests waiting already (supervisor.queue_length = {limit}); try again when some have finished, or raise the queue length")]
    QueueFull {
        /// The model.
        model: String,
        /// Requests waiting.
        queued: usize,
        /// The configured bound.
        limit: u32,
    },
    /// The model failed to start too often.
    #[error("model {model} failed to start {attempts} times in a row, so gemmactl stopped trying: {reason}")]
    ModelFailed {
        /// The model.
        model: String,
        /// Failed starts.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// An unload was asked for while the model serves.
    #[error("model {model} is serving {active} request(s); unload it when they have finished")]
    Busy {
        /// The model.
        model: String,
        /// Requests running or waiting.
        active: usize,
    },
    /// gemmactl is exiting.
    #[error("gemmactl is shutting down")]
    ShuttingDown,
}

impl SupervisorError {
    /// The engine's failure kind, where the engine said one.
    pub fn code(&self) -> Option<crate::domain::ErrorCode> {
        match self {
            SupervisorError::Engine(e) => e.code(),
            _ => None,
        }
    }
}

/// A request in flight: its events, and a way to stop it.
pub struct Reply {
    /// The request's id.
    pub id: String,
    events: mpsc::UnboundedReceiver<SupervisorEvent>,
    cancel: Canceller,
}

impl Reply {
    /// A reply whose events come from elsewhere — a `gemmactl serve` this process is attached
    /// to — rather than from one of this supervisor's engines. The sender feeds it; the
    /// receiver turns `true` when the caller cancels.
    pub fn relayed(
        id: String,
    ) -> (
        mpsc::UnboundedSender<SupervisorEvent>,
        watch::Receiver<bool>,
        Reply,
    ) {
        let (tx, events) = mpsc::unbounded_channel();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let reply = Reply {
            id,
            events,
            cancel: Canceller(Arc::new(cancel_tx)),
        };
        (tx, cancel_rx, reply)
    }

    /// The next event; `None` after the last one.
    pub async fn next(&mut self) -> Option<SupervisorEvent> {
        self.events.recv().await
    }

    /// A handle that cancels this request from elsewhere.
    pub fn canceller(&self) -> Canceller {
        self.cancel.clone()
    }

    /// Stops the request (see [`Canceller`]).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Stops a request wherever it is: a queued request leaves the queue at once, a running one ends
/// with `cancelled` at the engine's next decode step.
#[derive(Clone)]
pub struct Canceller(Arc<watch::Sender<bool>>);

impl Canceller {
    /// Stops the request.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

/// Engine settings a model is loaded with; a change needs a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Context length in tokens.
    pub context: u32,
    /// Decode slots.
    pub parallel: u32,
    /// CPU threads (`None`: the engine chooses, see gemma-engine's `threads` module).
    pub threads: Option<u32>,
    /// Element type of gemma-engine's KV cache.
    pub kv_cache_type: KvCacheType,
    /// gemma-engine's flash attention.
    pub flash_attention: FlashAttention,
}

impl LoadOptions {
    /// The settings `config` asks for.
    pub fn from_config(config: &Config) -> LoadOptions {
        LoadOptions {
            context: config.engine.context,
            parallel: config.engine.parallel.max(1),
            threads: config.engine.threads,
            kv_cache_type: config.engine.kv_cache_type,
            flash_attention: config.engine.flash_attention,
        }
    }

    /// What differs from `other`, as `context 2048 → 4096, …`, or `None` when nothing does.
    fn differences(&self, other: &LoadOptions) -> Option<String> {
        let mut d = Vec::new();
        if self.context != other.context {
            d.push(format!("context {} → {}", self.context, other.context));
        }
        if self.parallel != other.parallel {
            d.push(format!("parallel {} → {}", self.parallel, other.parallel));
        }
        if self.threads != other.threads {
            d.push(format!("threads {:?} → {:?}", self.threads, other.threads));
        }
        if self.kv_cache_type != other.kv_cache_type {
            d.push(format!(
                "KV cache type {} → {}",
                self.kv_cache_type, other.kv_cache_type
            ));
        }
        if self.flash_attention != other.flash_attention {
            d.push(format!(
                "flash attention {} → {}",
                self.flash_attention, other.flash_attention
            ));
        }
        (!d.is_empty()).then(|| d.join(", "))
    }
}

/// Owns every engine of one gemmactl process.
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    launcher: Arc<dyn Launcher>,
    models: Mutex<HashMap<String, Arc<ModelSlot>>>,
    next_request: AtomicU64,
    status_file: Option<StatusFile>,
    /// Who holds these engines, for `ps` (e.g. `gemmactl chat`).
    command: String,
    started_at: u64,
    /// Cancelled when the supervisor shuts down; every serve task listens.
    shutdown: CancellationToken,
    /// Every serve and housekeeping task, so shutdown can wait for them.
    tasks: TaskTracker,
}

/// Locks a mutex whose holder may have panicked: the data is still the best there is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Supervisor {
    /// A supervisor that starts real engines and publishes them for `gemmactl ps` under `paths`'
    /// state folder; `command` names the holder there (e.g. `gemmactl chat`).
    pub fn new(config: Config, paths: &Paths, command: &str) -> Supervisor {
        let launcher = Arc::new(ProcessLauncher::new(config.clone()));
        Supervisor::build(
            config,
            launcher,
            Some(StatusFile::new(&paths.run_dir())),
            command,
        )
    }

    /// A supervisor that starts real engines and publishes nothing (benchmarks, tests).
    pub fn unpublished(config: Config) -> Supervisor {
        let launcher = Arc::new(ProcessLauncher::new(config.clone()));
        Supervisor::build(config, launcher, None, "gemmactl")
    }

    /// A supervisor whose engines come from `launcher` (tests of the policy without processes).
    pub fn with_launcher(config: Config, launcher: Arc<dyn Launcher>) -> Supervisor {
        Supervisor::build(config, launcher, None, "gemmactl")
    }

    fn build(
        config: Config,
        launcher: Arc<dyn Launcher>,
        status_file: Option<StatusFile>,
        command: &str,
    ) -> Supervisor {
        let inner = Arc::new(Inner {
            config,
            launcher,
            models: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            status_file,
            command: command.to_string(),
            started_at: status::unix_now(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner.tasks.spawn(housekeeping::run(
            Arc::downgrade(&inner),
            inner.shutdown.clone(),
        ));
        Supervisor { inner }
    }

    /// A request id unique within this gemmactl process.
    pub fn new_request_id(&self) -> String {
        format!(
            "r{}",
            self.inner.next_request.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Queues a request for `model`'s engine (starting it if needed) and returns its reply.
    /// A full queue is refused at once, never a hang.
    pub fn submit(
        &self,
        model: &ModelEntry,
        request: GenerateRequest,
    ) -> Result<Reply, SupervisorError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(SupervisorError::ShuttingDown);
        }
        let slot = self.inner.slot(model);
        let (tx, events) = mpsc::unbounded_channel();
        slot.admit(self.inner.config.supervisor.queue_length, &tx)?;
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let id = request.id.clone();
        self.inner.tasks.spawn(serve::serve(
            self.inner.clone(),
            slot,
            request,
            tx,
            cancel_rx,
        ));
        Ok(Reply {
            id,
            events,
            cancel: Canceller(Arc::new(cancel_tx)),
        })
    }

    /// Loads a model ahead of use (e.g. while another model keeps serving), reporting progress.
    /// This is also the user's way to try a model that failed again.
    pub async fn preload(
        &self,
        model: &ModelEntry,
        mut progress: impl FnMut(f32) + Send,
    ) -> Result<EngineDescription, SupervisorError> {
        let slot = self.inner.slot(model);
        slot.forgive();
        // The load runs in its own task: a caller that stops waiting leaves it to finish.
        let running = load::spawn_load(&self.inner, &slot, true)
            .wait(|ev| {
                if let SupervisorEvent::Loading { progress: p } = ev {
                    progress(p)
                }
            })
            .await?;
        Ok(slot.describe(&running))
    }

    /// Stops a model's engine now; refused while it serves requests.
    pub async fn unload(&self, model_name: &str) -> Result<bool, SupervisorError> {
        let Some(slot) = lock(&self.inner.models).get(model_name).cloned() else {
            return Ok(false);
        };
        let _guard = slot.load_lock.lock().await;
        let busy = slot.in_use();
        if busy > 0 {
            return Err(SupervisorError::Busy {
                model: model_name.to_string(),
                active: busy,
            });
        }
        Ok(self
            .inner
            .stop_engine_locked(&slot, lifecycle::StopReason::Unloaded)
            .await)
    }

    /// Changes the settings a model's engine runs with. If its engine is loaded with others, the
    /// next request reloads it; the returned sentence says so, and why.
    pub fn set_options(&self, model: &ModelEntry, options: LoadOptions) -> Option<String> {
        self.inner.slot(model).set_options(options)
    }

    /// What each loaded model is doing (the data `gemmactl ps` shows).
    pub fn status(&self) -> ProcessStatus {
        self.inner.snapshot()
    }

    /// The description of a model's running engine, if any.
    pub fn engine_of(&self, model_name: &str) -> Option<EngineDescription> {
        let slot = lock(&self.inner.models).get(model_name).cloned()?;
        slot.running_description()
    }

    /// Stops every engine, all at once: gracefully, then by force after [`STOP_GRACE`].
    /// Requests still in flight end; new ones are refused.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let slots: Vec<Arc<ModelSlot>> = lock(&self.inner.models).values().cloned().collect();
        let mut stops = tokio::task::JoinSet::new();
        for slot in slots {
            let inner = self.inner.clone();
            stops.spawn(async move {
                inner
                    .stop_engine(&slot, lifecycle::StopReason::Shutdown)
                    .await;
            });
        }
        while stops.join_next().await.is_some() {}
        self.inner.tasks.close();
        // Serve tasks end as their engines go; the bound only guards against a bug.
        let _ = tokio::time::timeout(STOP_GRACE * 2, self.inner.tasks.wait()).await;
        if let Some(file) = &self.inner.status_file {
            file.remove();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
        if let Some(file) = &self.inner.status_file {
            file.remove();
        }
    }
}

impl Inner {
    /// The model's slot, created on first use with the configured settings.
    fn slot(&self, model: &ModelEntry) -> Arc<ModelSlot> {
        let mut models = lock(&self.models);
        if let Some(slot) = models.get(&model.name) {
            return slot.clone();
        }
        let slot = Arc::new(ModelSlot::new(
            model,
            LoadOptions::from_config(&self.config),
        ));
        models.insert(model.name.clone(), slot.clone());
        slot
    }

    fn snapshot(&self) -> ProcessStatus {
        let slots: Vec<Arc<ModelSlot>> = lock(&self.models).values().cloned().collect();
        let mut engines: Vec<_> = slots.iter().map(|slot| slot.status()).collect();
        engines.sort_by(|a, b| a.model.cmp(&b.model));
        ProcessStatus {
            pid: std::process::id(),
            command: self.command.clone(),
            started_at: self.started_at,
            engines,
        }
    }

    /// Rewrites the `ps` status file (best effort).
    fn publish(&self) {
        if let Some(file) = &self.status_file {
            if !self.shutdown.is_cancelled() {
                file.write(&self.snapshot());
            }
        }
    }
}

/// The wait before the next start after `failures` failures in a row: doubling from the
/// configured base, at most [`MAX_BACKOFF`].
fn backoff(config: &Config, failures: u32) -> Duration {
    let base = Duration::from_millis(config.supervisor.restart_backoff_ms);
    base.saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

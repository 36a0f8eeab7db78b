//! The supervisor: the one owner of engine processes. Front ends (`run`, the chat shell, batch,
//! MCP) submit requests here and read a stream of [`SupervisorEvent`]s; they never touch an
//! engine themselves, and the supervisor never prints.
//!
//! Per model it keeps one engine with an explicit lifecycle (`starting → ready → busy → stopping →
//! stopped`, or `failed` with the cause; every transition logged with its reason), a bounded
//! queue in front of the engine's decode slots, crash restarts with backoff, and a pool policy
//! across models (count and memory budget, least recently used idle engine stopped first, idle
//! engines stopped after a TTL). Everything it holds is stopped by [`Supervisor::shutdown`]; if
//! gemmactl dies instead, its engines die with it (see `engines::child`).

mod lifecycle;
pub mod memory;
pub mod pool;
pub mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, Paths};
use crate::engines::gemma_engine::LaunchSpec;
use crate::engines::{
    Completion, Engine, EngineDescription, EngineError, FinishReason, GenerateRequest, ReplyEvent,
    Timings, Usage,
};
use crate::hardware::select::ModelNeeds;
use crate::models::{EngineKind, ModelEntry};
pub use lifecycle::EngineState;
use memory::MemoryEstimate;
use status::{EngineStatus, ProcessStatus, StatusFile};

/// How long an engine gets to exit after `shutdown` before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Longest wait between restarts of an engine that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a caller hears about its request, in order: maybe `Queued`, maybe `Loading`/`Reloading`,
/// then `Started`, `Token`s, and exactly one `Finished` or `Failed`.
#[derive(Debug)]
pub enum SupervisorEvent {
    /// Waiting for a free decode slot; `position` requests are ahead.
    Queued {
        position: usize,
    },
    /// The model's engine is loading (fraction 0..1).
    Loading {
        progress: f32,
    },
    /// The engine is being restarted or reloaded, and why.
    Reloading {
        reason: String,
    },
    /// The request reached this engine.
    Started(EngineDescription),
    Token(String),
    Finished(Completion),
    Failed(SupervisorError),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Pool(#[from] pool::Refusal),
    #[error("model {model} has {queued} requests waiting already (supervisor.queue_length = {limit}); try again when some have finished, or raise the queue length")]
    QueueFull {
        model: String,
        queued: usize,
        limit: u32,
    },
    #[error("model {model} failed to start {attempts} times in a row, so gemmactl stopped trying: {reason}")]
    ModelFailed {
        model: String,
        attempts: u32,
        reason: String,
    },
    #[error("model {model} is serving {active} request(s); unload it when they have finished")]
    Busy { model: String, active: usize },
    #[error("gemmactl is shutting down")]
    ShuttingDown,
}

/// A request in flight: its events, and a way to stop it.
pub struct Reply {
    pub id: String,
    events: mpsc::UnboundedReceiver<SupervisorEvent>,
    cancel: Canceller,
}

impl Reply {
    pub async fn next(&mut self) -> Option<SupervisorEvent> {
        self.events.recv().await
    }

    pub fn canceller(&self) -> Canceller {
        self.cancel.clone()
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Stops a request wherever it is: a queued request leaves the queue at once, a running one ends
/// with `cancelled` at the engine's next decode step.
#[derive(Clone)]
pub struct Canceller(Arc<watch::Sender<bool>>);

impl Canceller {
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

/// Engine settings a model is loaded with; a change needs a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    pub context: u32,
    pub parallel: u32,
    pub threads: Option<u32>,
}

impl LoadOptions {
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
        (!d.is_empty()).then(|| d.join(", "))
    }
}

pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    models: Mutex<HashMap<String, Arc<ModelSlot>>>,
    next_request: AtomicU64,
    status_file: Option<StatusFile>,
    command: String,
    started_at: u64,
    shutting_down: watch::Sender<bool>,
}

/// One model's engine and the requests around it.
struct ModelSlot {
    entry: ModelEntry,
    /// Decode slots of the engine: requests beyond these wait here, in order (tokio's semaphore
    /// is fair), which is the model's queue.
    permits: Arc<Semaphore>,
    /// One start or stop at a time per model, so concurrent requests never load it twice.
    load_lock: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

struct SlotState {
    engine: Option<Arc<dyn Engine>>,
    lifecycle: EngineState,
    reason: Option<String>,
    options: LoadOptions,
    /// Options the next start will use, when they differ from the running engine's.
    wanted: Option<LoadOptions>,
    estimate: Option<MemoryEstimate>,
    last_used: Instant,
    started_at: Option<u64>,
    last_used_at: Option<u64>,
    served: u64,
    active: usize,
    queued: usize,
    /// Consecutive failed starts, and crashes since the last completed request.
    start_failures: u32,
    crashes: u32,
    retry_after: Option<Instant>,
    failed: Option<String>,
    /// Slots still to retire after `parallel` went down: held permits are forgotten on release.
    permit_debt: usize,
}

impl ModelSlot {
    /// Makes `options` the model's settings, and sizes its queue's slots to `options.parallel`.
    fn apply_options(&self, st: &mut SlotState, options: LoadOptions) {
        let (old, new) = (
            st.options.parallel.max(1) as usize,
            options.parallel.max(1) as usize,
        );
        if new > old {
            let owed = (new - old).min(st.permit_debt);
            st.permit_debt -= owed;
            self.permits.add_permits(new - old - owed);
        } else if new < old {
            let retired = self.permits.forget_permits(old - new);
            st.permit_debt += old - new - retired;
        }
        st.options = options;
    }
}

impl Supervisor {
    /// A supervisor that publishes its engines for `gemmactl ps` under `paths`' state folder.
    pub fn new(config: Config, paths: &Paths) -> Supervisor {
        Supervisor::build(config, Some(StatusFile::new(&paths.run_dir())))
    }

    /// A supervisor that publishes nothing (benchmarks, tests).
    pub fn unpublished(config: Config) -> Supervisor {
        Supervisor::build(config, None)
    }

    fn build(config: Config, status_file: Option<StatusFile>) -> Supervisor {
        let command = std::env::args().take(2).collect::<Vec<_>>().join(" ");
        let inner = Arc::new(Inner {
            config,
            models: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            status_file,
            command,
            started_at: status::unix_now(),
            shutting_down: watch::channel(false).0,
        });
        tokio::spawn(housekeeping(Arc::downgrade(&inner)));
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
        if *self.inner.shutting_down.borrow() {
            return Err(SupervisorError::ShuttingDown);
        }
        let slot = self.inner.slot(model);
        let (tx, events) = mpsc::unbounded_channel();
        {
            let mut st = slot.state.lock().unwrap();
            if let Some(reason) = &st.failed {
                return Err(SupervisorError::ModelFailed {
                    model: model.name.clone(),
                    attempts: st.start_failures,
                    reason: reason.clone(),
                });
            }
            // Counted here, synchronously, so the bound holds however fast requests arrive.
            let limit = self.inner.config.supervisor.queue_length;
            let ahead = st.active + st.queued;
            let slots = st.options.parallel as usize;
            if ahead >= slots + limit as usize {
                return Err(SupervisorError::QueueFull {
                    model: model.name.clone(),
                    queued: ahead.saturating_sub(slots),
                    limit,
                });
            }
            if ahead >= slots {
                let _ = tx.send(SupervisorEvent::Queued {
                    position: ahead - slots,
                });
            }
            st.queued += 1;
        }
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let id = request.id.clone();
        tokio::spawn(serve(self.inner.clone(), slot, request, tx, cancel_rx));
        Ok(Reply {
            id,
            events,
            cancel: Canceller(Arc::new(cancel_tx)),
        })
    }

    /// Loads a model ahead of use (e.g. while another model keeps serving), reporting progress.
    pub async fn preload(
        &self,
        model: &ModelEntry,
        mut progress: impl FnMut(f32) + Send,
    ) -> Result<EngineDescription, SupervisorError> {
        let slot = self.inner.slot(model);
        {
            // An explicit preload is the user's way to try a failed model again.
            let mut st = slot.state.lock().unwrap();
            st.failed = None;
            st.retry_after = None;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let loading = self.inner.ensure_engine(&slot, &tx);
        tokio::pin!(loading);
        loop {
            tokio::select! {
                done = &mut loading => return done.map(|e| e.describe()),
                Some(ev) = rx.recv() => if let SupervisorEvent::Loading { progress: p } = ev { progress(p) },
            }
        }
    }

    /// Stops a model's engine now; refused while it serves requests.
    pub async fn unload(&self, model_name: &str) -> Result<bool, SupervisorError> {
        let Some(slot) = self.inner.models.lock().unwrap().get(model_name).cloned() else {
            return Ok(false);
        };
        let _guard = slot.load_lock.lock().await;
        let busy = {
            let st = slot.state.lock().unwrap();
            st.active + st.queued
        };
        if busy > 0 {
            return Err(SupervisorError::Busy {
                model: model_name.to_string(),
                active: busy,
            });
        }
        Ok(self
            .inner
            .stop_engine_locked(&slot, "unloaded on request")
            .await)
    }

    /// Changes the settings a model's engine runs with. If its engine is loaded with others, the
    /// next request reloads it; the returned sentence says so, and why.
    pub fn set_options(&self, model: &ModelEntry, options: LoadOptions) -> Option<String> {
        let slot = self.inner.slot(model);
        let mut st = slot.state.lock().unwrap();
        let change = st.options.differences(&options);
        if st.engine.is_some() {
            let reason =
                change.map(|c| format!("{} will reload on its next request: {c}", model.name));
            st.wanted = Some(options);
            reason
        } else {
            slot.apply_options(&mut st, options);
            None
        }
    }

    /// What each loaded model is doing (the data `gemmactl ps` shows).
    pub fn status(&self) -> ProcessStatus {
        self.inner.snapshot()
    }

    /// The description of a model's running engine, if any.
    pub fn engine_of(&self, model_name: &str) -> Option<EngineDescription> {
        let slot = self.inner.models.lock().unwrap().get(model_name).cloned()?;
        let st = slot.state.lock().unwrap();
        st.engine
            .as_ref()
            .filter(|e| e.exit_status().is_none())
            .map(|e| e.describe())
    }

    /// Stops every engine: gracefully, then by force after [`STOP_GRACE`]. Requests still in
    /// flight end; new ones are refused.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.send_replace(true);
        let slots: Vec<Arc<ModelSlot>> = self
            .inner
            .models
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for slot in &slots {
            self.inner.stop_engine(slot, "gemmactl is exiting").await;
        }
        if let Some(file) = &self.inner.status_file {
            file.remove();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.inner.shutting_down.send_replace(true);
        if let Some(file) = &self.inner.status_file {
            file.remove();
        }
    }
}

/// Runs one request: queue, engine, stream, bookkeeping.
async fn serve(
    inner: Arc<Inner>,
    slot: Arc<ModelSlot>,
    request: GenerateRequest,
    tx: mpsc::UnboundedSender<SupervisorEvent>,
    mut cancel: watch::Receiver<bool>,
) {
    let permit: OwnedSemaphorePermit = tokio::select! {
        p = slot.permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        _ = cancel.wait_for(|c| *c) => {
            slot.state.lock().unwrap().queued -= 1;
            let _ = tx.send(SupervisorEvent::Finished(cancelled_before_start()));
            inner.publish();
            return;
        }
    };
    {
        let mut st = slot.state.lock().unwrap();
        st.queued -= 1;
        st.active += 1;
    }
    let (outcome, last_event) = run_on_engine(&inner, &slot, request, &tx, &mut cancel).await;
    {
        let mut st = slot.state.lock().unwrap();
        st.active -= 1;
        st.last_used = Instant::now();
        st.last_used_at = Some(status::unix_now());
        match &outcome {
            Outcome::Completed => {
                st.served += 1;
                st.crashes = 0;
            }
            Outcome::Crashed(exit) => {
                st.crashes += 1;
                st.retry_after = Some(Instant::now() + backoff(&inner.config, st.crashes));
                lifecycle::transition(
                    &slot.entry.name,
                    &mut st.lifecycle,
                    EngineState::Failed,
                    &format!("engine {exit} while serving"),
                );
                st.reason = Some(format!("engine {exit}"));
            }
            Outcome::Other => {}
        }
        if st.active == 0 && st.lifecycle == EngineState::Busy {
            lifecycle::transition(
                &slot.entry.name,
                &mut st.lifecycle,
                EngineState::Ready,
                "no request in flight",
            );
        }
        if st.permit_debt > 0 {
            // The model's slot count went down while this request held a slot: retire it.
            st.permit_debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }
    inner.publish();
    // Last, so a caller that sees its reply end finds the model's slot already free.
    let _ = tx.send(last_event);
}

enum Outcome {
    Completed,
    Crashed(String),
    Other,
}

async fn run_on_engine(
    inner: &Arc<Inner>,
    slot: &Arc<ModelSlot>,
    request: GenerateRequest,
    tx: &mpsc::UnboundedSender<SupervisorEvent>,
    cancel: &mut watch::Receiver<bool>,
) -> (Outcome, SupervisorEvent) {
    let engine = tokio::select! {
        e = inner.ensure_engine(slot, tx) => e,
        _ = cancel.wait_for(|c| *c) => {
            return (Outcome::Other, SupervisorEvent::Finished(cancelled_before_start()));
        }
    };
    let engine = match engine {
        Ok(e) => e,
        Err(e) => return (Outcome::Other, SupervisorEvent::Failed(e)),
    };
    {
        let mut st = slot.state.lock().unwrap();
        if st.lifecycle == EngineState::Ready {
            lifecycle::transition(
                &slot.entry.name,
                &mut st.lifecycle,
                EngineState::Busy,
                "serving a request",
            );
        }
    }
    inner.publish();
    let _ = tx.send(SupervisorEvent::Started(engine.describe()));
    let id = request.id.clone();
    let mut stream = match engine.generate(request) {
        Ok(s) => s,
        Err(e) => {
            let crashed = matches!(e, EngineError::Died { .. }).then(|| died_summary(&e));
            return (
                crashed.map(Outcome::Crashed).unwrap_or(Outcome::Other),
                SupervisorEvent::Failed(e.into()),
            );
        }
    };
    let mut cancel_sent = false;
    loop {
        let event = tokio::select! {
            ev = stream.recv() => ev,
            _ = cancel.wait_for(|c| *c), if !cancel_sent => {
                cancel_sent = true;
                engine.cancel(&id);
                continue;
            }
        };
        match event {
            Some(ReplyEvent::Token(t)) => {
                let _ = tx.send(SupervisorEvent::Token(t));
            }
            Some(ReplyEvent::Finished(done)) => {
                return (Outcome::Completed, SupervisorEvent::Finished(done))
            }
            Some(ReplyEvent::Failed(e)) => {
                let crashed = matches!(e, EngineError::Died { .. }).then(|| died_summary(&e));
                return (
                    crashed.map(Outcome::Crashed).unwrap_or(Outcome::Other),
                    SupervisorEvent::Failed(e.into()),
                );
            }
            None => {
                let e =
                    EngineError::Protocol("the engine stopped answering without a reason".into());
                return (Outcome::Other, SupervisorEvent::Failed(e.into()));
            }
        }
    }
}

fn died_summary(e: &EngineError) -> String {
    match e {
        EngineError::Died { exit, .. } => exit.to_string(),
        other => other.to_string(),
    }
}

impl Inner {
    fn slot(&self, model: &ModelEntry) -> Arc<ModelSlot> {
        let mut models = self.models.lock().unwrap();
        if let Some(slot) = models.get(&model.name) {
            return slot.clone();
        }
        let options = LoadOptions {
            context: self.config.engine.context,
            parallel: self.config.engine.parallel.max(1),
            threads: self.config.engine.threads,
        };
        let slot = Arc::new(ModelSlot {
            entry: model.clone(),
            permits: Arc::new(Semaphore::new(options.parallel as usize)),
            load_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(SlotState {
                engine: None,
                lifecycle: EngineState::Stopped,
                reason: None,
                options,
                wanted: None,
                estimate: None,
                last_used: Instant::now(),
                started_at: None,
                last_used_at: None,
                served: 0,
                active: 0,
                queued: 0,
                start_failures: 0,
                crashes: 0,
                retry_after: None,
                failed: None,
                permit_debt: 0,
            }),
        });
        models.insert(model.name.clone(), slot.clone());
        slot
    }

    /// The model's running engine, started (after making room in the pool) if there is none.
    async fn ensure_engine(
        &self,
        slot: &Arc<ModelSlot>,
        tx: &mpsc::UnboundedSender<SupervisorEvent>,
    ) -> Result<Arc<dyn Engine>, SupervisorError> {
        let _guard = slot.load_lock.lock().await;
        let name = slot.entry.name.clone();
        let (wait, reload_reason) = {
            let mut st = slot.state.lock().unwrap();
            if let Some(reason) = &st.failed {
                return Err(SupervisorError::ModelFailed {
                    model: name,
                    attempts: st.start_failures,
                    reason: reason.clone(),
                });
            }
            let running = st
                .engine
                .as_ref()
                .filter(|e| e.exit_status().is_none())
                .cloned();
            let reload = match (&running, &st.wanted) {
                // A reload waits until nobody else uses the old engine (we are the one active request).
                (Some(_), Some(wanted)) if st.active <= 1 => st.options.differences(wanted),
                _ => None,
            };
            match (running, reload) {
                (Some(engine), None) => return Ok(engine),
                (Some(_), Some(reason)) => (None, Some(format!("reloading {name}: {reason}"))),
                (None, _) => {
                    let reason = st
                        .engine
                        .as_ref()
                        .and_then(|e| e.exit_status())
                        .map(|exit| format!("restarting {name}: its engine {exit}"));
                    if let Some(exit_reason) = &reason {
                        if st.lifecycle != EngineState::Failed {
                            lifecycle::transition(
                                &name,
                                &mut st.lifecycle,
                                EngineState::Failed,
                                exit_reason,
                            );
                        }
                    }
                    st.engine = None;
                    (
                        st.retry_after
                            .map(|t| t.saturating_duration_since(Instant::now())),
                        reason,
                    )
                }
            }
        };
        if let Some(reason) = &reload_reason {
            tracing::info!(model = %name, "{reason}");
            let _ = tx.send(SupervisorEvent::Reloading {
                reason: reason.clone(),
            });
            if reason.starts_with("reloading") {
                self.stop_engine_locked(slot, reason).await;
                let mut st = slot.state.lock().unwrap();
                if let Some(wanted) = st.wanted.take() {
                    slot.apply_options(&mut st, wanted);
                }
            }
        }
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            tracing::info!(model = %name, "waiting {:?} before restarting (backoff)", wait);
            tokio::time::sleep(wait).await;
        }
        // Options asked for while no engine ran take effect now, before the memory estimate.
        let options = {
            let mut st = slot.state.lock().unwrap();
            if let Some(wanted) = st.wanted.take() {
                slot.apply_options(&mut st, wanted);
            }
            st.options.clone()
        };
        let needs = self.make_room(slot, &options).await?;
        let estimate = Some(needs.estimate);
        {
            let mut st = slot.state.lock().unwrap();
            lifecycle::transition(
                &name,
                &mut st.lifecycle,
                EngineState::Starting,
                reload_reason.as_deref().unwrap_or("a request needs it"),
            );
        }
        self.publish();
        let started = self.start_engine(&slot.entry, &options, needs, tx).await;
        let mut st = slot.state.lock().unwrap();
        match started {
            Ok(engine) => {
                let d = engine.describe();
                lifecycle::transition(
                    &name,
                    &mut st.lifecycle,
                    EngineState::Ready,
                    &format!("loaded in {} ms on {}", d.load_ms, d.backend),
                );
                st.engine = Some(engine.clone());
                st.reason = None;
                st.start_failures = 0;
                st.retry_after = None;
                st.started_at = Some(status::unix_now());
                st.estimate = estimate;
                drop(st);
                self.publish();
                Ok(engine)
            }
            Err(e) => {
                st.start_failures += 1;
                let reason = e.to_string();
                st.retry_after = Some(Instant::now() + backoff(&self.config, st.start_failures));
                let limit = self.config.supervisor.max_start_failures.max(1);
                if st.start_failures >= limit {
                    st.failed = Some(reason.clone());
                }
                lifecycle::transition(&name, &mut st.lifecycle, EngineState::Failed, &reason);
                st.reason = Some(reason.clone());
                let failed = st.failed.is_some();
                let attempts = st.start_failures;
                drop(st);
                self.publish();
                if failed && attempts > 1 {
                    return Err(SupervisorError::ModelFailed {
                        model: name,
                        attempts,
                        reason,
                    });
                }
                Err(SupervisorError::Engine(e))
            }
        }
    }

    async fn start_engine(
        &self,
        model: &ModelEntry,
        options: &LoadOptions,
        needs: ModelNeeds,
        tx: &mpsc::UnboundedSender<SupervisorEvent>,
    ) -> Result<Arc<dyn Engine>, EngineError> {
        let progress = |p: f32| {
            let _ = tx.send(SupervisorEvent::Loading { progress: p });
        };
        match model.engine {
            EngineKind::GemmaEngine => {
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
                let spec = LaunchSpec {
                    binary,
                    model_path: model.path.clone(),
                    context: options.context,
                    parallel: options.parallel,
                    threads: options.threads,
                    gpu_layers: None,
                    load_timeout: Duration::from_secs(self.config.engine.load_timeout_secs),
                };
                // The backend (CPU or a GPU build) is chosen there, with a fall back to the CPU.
                crate::hardware::launch::start_gemma_engine(&self.config, spec, needs, progress)
                    .await
            }
            EngineKind::GemmaCpp => {
                use crate::engines::gemma_cpp::{find_binary, GemmaCpp, GemmaCppSpec};
                // The .sbs pre-flight runs before every launch, restarts included.
                let info = crate::models::preflight_sbs(model).map_err(|e| EngineError::Load {
                    code: crate::engines::ErrorCode::LoadFailed,
                    message: e.to_string(),
                    path: Some(model.path.display().to_string()),
                })?;
                let settings = &self.config.engines.gemma_cpp;
                let mut spec =
                    GemmaCppSpec::new(find_binary(None, &self.config)?, model.path.clone());
                spec.tokenizer = model.tokenizer.clone();
                // A single-file model's config decides the wrapping; older files follow the kind.
                spec.chat = info
                    .instruct
                    .unwrap_or(model.kind == crate::models::ModelKind::Instruct);
                spec.seq_len = settings.seq_len;
                spec.threads = settings.threads.or(options.threads);
                spec.spin = settings.spin;
                spec.load_timeout = Duration::from_secs(self.config.engine.load_timeout_secs);
                Ok(Arc::new(GemmaCpp::start(&spec, progress).await?))
            }
        }
    }

    /// Stops least recently used idle engines of other models until this one fits at `options`.
    /// Returns what the model needs, read from its file once for this launch.
    async fn make_room(
        &self,
        slot: &Arc<ModelSlot>,
        options: &LoadOptions,
    ) -> Result<ModelNeeds, SupervisorError> {
        let needs = memory::needs(&slot.entry.path, options.context, options.parallel);
        slot.state.lock().unwrap().estimate = Some(needs.estimate);
        let estimate = needs.estimate.total();
        let others: Vec<Arc<ModelSlot>> = self
            .models
            .lock()
            .unwrap()
            .values()
            .filter(|s| !Arc::ptr_eq(s, slot))
            .cloned()
            .collect();
        let residents: Vec<pool::Resident> = others
            .iter()
            .filter_map(|s| {
                let st = s.state.lock().unwrap();
                st.engine.as_ref().filter(|e| e.exit_status().is_none())?;
                Some(pool::Resident {
                    model: s.entry.name.clone(),
                    last_used: st.last_used,
                    busy: st.active + st.queued > 0,
                    estimate: st.estimate.map(|e| e.total()).unwrap_or(0),
                })
            })
            .collect();
        let budget = self.config.supervisor.memory_budget_mib;
        let limits = pool::Limits {
            max_models: self.config.supervisor.max_models,
            budget: (budget > 0).then_some(budget << 20),
            available: crate::hardware::memory::available(),
        };
        let evict = pool::plan(&slot.entry.name, estimate, &residents, &limits)?;
        for name in evict {
            if let Some(victim) = others.iter().find(|s| s.entry.name == name) {
                let _guard = victim.load_lock.lock().await;
                let still_idle = {
                    let st = victim.state.lock().unwrap();
                    st.active + st.queued == 0
                };
                if still_idle {
                    self.stop_engine_locked(
                        victim,
                        &format!(
                            "evicted (least recently used) to make room for {}",
                            slot.entry.name
                        ),
                    )
                    .await;
                }
            }
        }
        Ok(needs)
    }

    /// Stops a model's engine, taking its load lock first.
    async fn stop_engine(&self, slot: &Arc<ModelSlot>, reason: &str) -> bool {
        let _guard = slot.load_lock.lock().await;
        self.stop_engine_locked(slot, reason).await
    }

    /// Stops a model's engine; the caller holds its load lock.
    async fn stop_engine_locked(&self, slot: &Arc<ModelSlot>, reason: &str) -> bool {
        let engine = {
            let mut st = slot.state.lock().unwrap();
            let Some(engine) = st.engine.take() else {
                return false;
            };
            lifecycle::transition(
                &slot.entry.name,
                &mut st.lifecycle,
                EngineState::Stopping,
                reason,
            );
            engine
        };
        self.publish();
        engine.stop(STOP_GRACE).await;
        {
            let mut st = slot.state.lock().unwrap();
            lifecycle::transition(
                &slot.entry.name,
                &mut st.lifecycle,
                EngineState::Stopped,
                reason,
            );
            st.reason = Some(reason.to_string());
        }
        self.publish();
        true
    }

    fn snapshot(&self) -> ProcessStatus {
        let slots: Vec<Arc<ModelSlot>> = self.models.lock().unwrap().values().cloned().collect();
        let mut engines: Vec<EngineStatus> = slots
            .iter()
            .map(|slot| {
                let st = slot.state.lock().unwrap();
                let d = st.engine.as_ref().map(|e| e.describe());
                EngineStatus {
                    model: slot.entry.name.clone(),
                    engine: d
                        .as_ref()
                        .map(|d| d.engine.to_string())
                        .unwrap_or_else(|| slot.entry.engine.as_str().to_string()),
                    backend: d
                        .as_ref()
                        .map(|d| d.backend.clone())
                        .unwrap_or_else(|| "-".into()),
                    state: st.lifecycle.to_string(),
                    reason: st.reason.clone(),
                    pid: d.as_ref().and_then(|d| d.pid),
                    context: d.as_ref().map(|d| d.context),
                    started_at: st.started_at,
                    last_used_at: st.last_used_at,
                    requests_served: st.served,
                    active: st.active,
                    queued: st.queued,
                    fallback: d.as_ref().and_then(|d| d.fallback.clone()),
                }
            })
            .collect();
        engines.sort_by(|a, b| a.model.cmp(&b.model));
        ProcessStatus {
            pid: std::process::id(),
            command: self.command.clone(),
            started_at: self.started_at,
            engines,
        }
    }

    fn publish(&self) {
        if let Some(file) = &self.status_file {
            if !*self.shutting_down.borrow() {
                file.write(&self.snapshot());
            }
        }
    }

    /// Stops engines idle past the TTL.
    async fn expire_idle(&self) {
        let ttl = self.config.supervisor.idle_ttl_secs;
        if ttl == 0 {
            return;
        }
        let slots: Vec<Arc<ModelSlot>> = self.models.lock().unwrap().values().cloned().collect();
        for slot in slots {
            let expired = {
                let st = slot.state.lock().unwrap();
                st.engine.is_some()
                    && st.active + st.queued == 0
                    && st.last_used.elapsed() >= Duration::from_secs(ttl)
            };
            if !expired {
                continue;
            }
            // Never block housekeeping behind a load; check again under the lock.
            let Ok(_guard) = slot.load_lock.try_lock() else {
                continue;
            };
            let still = {
                let st = slot.state.lock().unwrap();
                st.active + st.queued == 0 && st.last_used.elapsed() >= Duration::from_secs(ttl)
            };
            if still {
                self.stop_engine_locked(
                    &slot,
                    &format!("idle for {ttl} s (supervisor.idle_ttl_secs)"),
                )
                .await;
            }
        }
    }
}

/// Background work: idle TTL and keeping the `ps` file current. Ends with the supervisor.
async fn housekeeping(inner: Weak<Inner>) {
    let tick = match inner.upgrade().map(|i| i.config.supervisor.idle_ttl_secs) {
        Some(ttl) if ttl > 0 && ttl < 4 => Duration::from_millis(250),
        _ => Duration::from_secs(1),
    };
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = inner.upgrade() else { return };
        if *inner.shutting_down.borrow() {
            return;
        }
        inner.expire_idle().await;
    }
}

fn backoff(config: &Config, failures: u32) -> Duration {
    let base = Duration::from_millis(config.supervisor.restart_backoff_ms);
    base.saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

fn cancelled_before_start() -> Completion {
    Completion {
        finish_reason: FinishReason::Cancelled,
        usage: Usage::default(),
        timings: Timings::default(),
    }
}

//! The supervisor's pool and lifecycle policy, tested without processes: a launcher of in-memory
//! engines stands in for the real one (the seam ollama's scheduler tests use). What these engines
//! do is scripted per test — how many tokens, whether a request is held until released, whether a
//! start fails or an engine dies — so every policy case is deterministic. Real engines are tested
//! end to end in `tests/supervisor.rs`.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};

use super::launch::{BoxFuture, Launched, Launcher, Progress};
use super::*;
use crate::domain::{
    Backend, Completion, EngineDescription, EngineKind, FinishReason, MemoryEstimate, ModelFacts,
    ModelNeeds, Timings, Usage,
};
use crate::engines::{Engine, EngineError, ExitInfo, ReplyEvent, ReplyStream};
use crate::models::{ModelFormat, ModelKind};

/// Generous bound on every wait: a hang fails the test.
const WAIT: Duration = Duration::from_secs(10);

/// What every fake engine shares with its test.
#[derive(Default)]
struct Script {
    /// Each request holds a permit while it generates; with none available, requests wait
    /// until the test releases some.
    gate: Option<Arc<Semaphore>>,
    /// Starts that fail (counting down) before one succeeds; `usize::MAX` = always.
    failing_starts: AtomicUsize,
    /// The launches made, by model, with the context each was launched with.
    launches: Mutex<Vec<(String, u32)>>,
    /// Engines alive now, by model.
    engines: Mutex<HashMap<String, Arc<FakeEngine>>>,
    /// Stops started and not yet finished; `stop_barrier` makes each stop wait until this many
    /// have started.
    stops_started: AtomicUsize,
    stop_barrier: Option<usize>,
}

struct FakeLauncher {
    script: Arc<Script>,
    /// Estimated bytes per model.
    sizes: HashMap<String, u64>,
}

impl Launcher for FakeLauncher {
    fn needs(&self, model: &ModelEntry, _: &LoadOptions) -> ModelNeeds {
        ModelNeeds {
            layers: 18,
            estimate: MemoryEstimate {
                weights: self.sizes.get(&model.name).copied().unwrap_or(300 << 20),
                kv_cache: 0,
                compute: 0,
            },
        }
    }

    fn available_memory(&self) -> Option<u64> {
        None
    }

    fn launch<'a>(
        &'a self,
        model: &'a ModelEntry,
        options: &'a LoadOptions,
        _: ModelNeeds,
        mut progress: Progress<'a>,
    ) -> BoxFuture<'a, Result<Launched, EngineError>> {
        Box::pin(async move {
            lock(&self.script.launches).push((model.name.clone(), options.context));
            progress(0.5);
            let failing = self.script.failing_starts.load(Ordering::SeqCst);
            if failing > 0 {
                if failing != usize::MAX {
                    self.script.failing_starts.fetch_sub(1, Ordering::SeqCst);
                }
                return Err(EngineError::Load {
                    code: crate::domain::ErrorCode::LoadFailed,
                    message: format!("{} is broken", model.name),
                    path: None,
                });
            }
            progress(1.0);
            let engine = Arc::new(FakeEngine::new(&model.name, options, self.script.clone()));
            lock(&self.script.engines).insert(model.name.clone(), engine.clone());
            Ok(Launched {
                engine,
                fallback: None,
            })
        })
    }
}

struct FakeEngine {
    description: EngineDescription,
    script: Arc<Script>,
    exit: watch::Sender<Option<ExitInfo>>,
    cancels: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl FakeEngine {
    fn new(model: &str, options: &LoadOptions, script: Arc<Script>) -> FakeEngine {
        FakeEngine {
            description: EngineDescription {
                engine: EngineKind::GemmaEngine,
                pid: None,
                model: ModelFacts {
                    path: format!("/models/{model}.gguf"),
                    ..ModelFacts::default()
                },
                backend: Backend::Cpu,
                devices: Vec::new(),
                gpu_layers: 0,
                context: options.context,
                parallel: options.parallel,
                threads: 2,
                kv_cache_type: None,
                flash_attention: None,
                load_ms: 1,
                fallback: None,
            },
            script,
            exit: watch::channel(None).0,
            cancels: Mutex::new(HashMap::new()),
        }
    }

    /// The engine dies as if killed by the kernel.
    fn crash(&self) {
        self.exit.send_replace(Some(ExitInfo {
            code: None,
            signal: Some(libc::SIGKILL),
        }));
    }
}

impl Engine for FakeEngine {
    fn describe(&self) -> EngineDescription {
        self.description.clone()
    }

    fn generate(&self, request: GenerateRequest) -> Result<ReplyStream, EngineError> {
        if let Some(exit) = *self.exit.borrow() {
            return Err(EngineError::Died {
                engine: EngineKind::GemmaEngine,
                exit,
                stderr_tail: Vec::new(),
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (cancel_tx, mut cancel) = watch::channel(false);
        lock(&self.cancels).insert(request.id.clone(), cancel_tx);
        let gate = self.script.gate.clone();
        let mut exit = self.exit.subscribe();
        let tokens = request.params.max_tokens.unwrap_or(3);
        tokio::spawn(async move {
            let _permit = match &gate {
                Some(g) => tokio::select! {
                    p = g.clone().acquire_owned() => p.ok(),
                    _ = cancel.wait_for(|c| *c) => None,
                    _ = exit.wait_for(Option::is_some) => None,
                },
                None => None,
            };
            let end = |reason, n| {
                ReplyEvent::Finished(Completion {
                    finish_reason: reason,
                    usage: Usage {
                        prompt_tokens: 4,
                        cached_tokens: 0,
                        completion_tokens: n,
                    },
                    timings: Timings::default(),
                })
            };
            for n in 0..tokens {
                if let Some(exit) = *exit.borrow() {
                    let _ = tx.send(ReplyEvent::Failed(EngineError::Died {
                        engine: EngineKind::GemmaEngine,
                        exit,
                        stderr_tail: Vec::new(),
                    }));
                    return;
                }
                if *cancel.borrow() {
                    let _ = tx.send(end(FinishReason::Cancelled, n));
                    return;
                }
                let _ = tx.send(ReplyEvent::Token(format!("t{n} ")));
                tokio::task::yield_now().await;
            }
            let _ = tx.send(end(FinishReason::Length, tokens));
        });
        Ok(rx)
    }

    fn cancel(&self, id: &str) {
        if let Some(c) = lock(&self.cancels).get(id) {
            c.send_replace(true);
        }
    }

    fn exit_status(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    fn stop(&self, _grace: Duration) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let started = self.script.stops_started.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(all) = self.script.stop_barrier {
                // Each stop waits until every stop has begun: only concurrent stops finish.
                let mut waited = Duration::ZERO;
                let mut seen = started;
                while seen < all && waited < WAIT {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    waited += Duration::from_millis(5);
                    seen = self.script.stops_started.load(Ordering::SeqCst);
                }
            }
            self.exit.send_replace(Some(ExitInfo {
                code: Some(0),
                signal: None,
            }));
        })
    }
}

fn model(name: &str) -> ModelEntry {
    ModelEntry {
        name: name.to_string(),
        path: PathBuf::from(format!("/models/{name}.gguf")),
        engine: EngineKind::GemmaEngine,
        format: ModelFormat::Gguf,
        kind: ModelKind::Base,
        chat_template: None,
        tokenizer: None,
        remote: None,
        sha256: None,
        mmproj: None,
    }
}

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.supervisor.idle_ttl_secs = 0;
    c.supervisor.restart_backoff_ms = 1;
    c.engine.parallel = 1;
    edit(&mut c);
    c
}

fn supervisor(config: Config, script: Script) -> (Supervisor, Arc<Script>) {
    let script = Arc::new(script);
    let launcher = FakeLauncher {
        script: script.clone(),
        sizes: HashMap::new(),
    };
    (
        Supervisor::with_launcher(config, Arc::new(launcher)),
        script,
    )
}

fn request(s: &Supervisor, tokens: u32) -> GenerateRequest {
    GenerateRequest::greedy_completion(s.new_request_id(), "hello", tokens)
}

/// Every event of a reply, up to and including its last.
async fn events(mut reply: Reply) -> Vec<SupervisorEvent> {
    let mut all = Vec::new();
    loop {
        let ev = tokio::time::timeout(WAIT, reply.next())
            .await
            .expect("the reply hung");
        let Some(ev) = ev else { return all };
        let last = matches!(
            ev,
            SupervisorEvent::Finished(_) | SupervisorEvent::Failed(_)
        );
        all.push(ev);
        if last {
            return all;
        }
    }
}

fn last(events: &[SupervisorEvent]) -> &SupervisorEvent {
    events.last().expect("at least one event")
}

fn phase_of(s: &Supervisor, name: &str) -> Option<Phase> {
    s.status()
        .engines
        .into_iter()
        .find(|e| e.model == name)
        .map(|e| e.state)
}

async fn until(mut check: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "condition not reached within {WAIT:?}");
}

#[tokio::test]
async fn concurrent_requests_load_a_model_once() {
    let (s, script) = supervisor(config(|c| c.engine.parallel = 4), Script::default());
    let m = model("a");
    let replies: Vec<Reply> = (0..4)
        .map(|_| s.submit(&m, request(&s, 2)).unwrap())
        .collect();
    for r in replies {
        let ev = events(r).await;
        assert!(matches!(last(&ev), SupervisorEvent::Finished(_)));
        assert!(ev
            .iter()
            .any(|e| matches!(e, SupervisorEvent::Started(d) if d.context == 8192)));
    }
    assert_eq!(lock(&script.launches).len(), 1);
    assert_eq!(phase_of(&s, "a"), Some(Phase::Ready));
}

#[tokio::test]
async fn the_least_recently_used_idle_engine_makes_room() {
    let (s, script) = supervisor(config(|c| c.supervisor.max_models = 2), Script::default());
    for name in ["a", "b"] {
        events(s.submit(&model(name), request(&s, 1)).unwrap()).await;
    }
    // `a` used again: `b` is now the least recently used.
    events(s.submit(&model("a"), request(&s, 1)).unwrap()).await;
    events(s.submit(&model("c"), request(&s, 1)).unwrap()).await;
    assert_eq!(phase_of(&s, "b"), Some(Phase::Stopped));
    assert_eq!(phase_of(&s, "a"), Some(Phase::Ready));
    let reason = s
        .status()
        .engines
        .into_iter()
        .find(|e| e.model == "b")
        .and_then(|e| e.reason);
    assert_eq!(
        reason.as_deref(),
        Some("evicted (least recently used) to make room for c")
    );
    assert_eq!(lock(&script.launches).len(), 3);
}

#[tokio::test]
async fn a_busy_engine_is_never_evicted_even_when_used_longest_ago() {
    let gate = Arc::new(Semaphore::new(0));
    let (s, _script) = supervisor(
        config(|c| c.supervisor.max_models = 2),
        Script {
            gate: Some(gate.clone()),
            ..Script::default()
        },
    );
    let held = s.submit(&model("a"), request(&s, 1)).unwrap();
    until(|| phase_of(&s, "a") == Some(Phase::Busy)).await;
    // `b` is loaded after `a` started serving, so `a` is the least recently used.
    s.preload(&model("b"), |_| {}).await.unwrap();
    s.preload(&model("c"), |_| {}).await.unwrap();
    assert_eq!(phase_of(&s, "a"), Some(Phase::Busy));
    assert_eq!(phase_of(&s, "b"), Some(Phase::Stopped));
    assert_eq!(phase_of(&s, "c"), Some(Phase::Ready));
    gate.add_permits(1);
    assert!(matches!(
        last(&events(held).await),
        SupervisorEvent::Finished(_)
    ));
}

#[tokio::test]
async fn a_pool_of_busy_engines_refuses_with_a_sentence_naming_them() {
    let gate = Arc::new(Semaphore::new(0));
    let (s, _script) = supervisor(
        config(|c| c.supervisor.max_models = 1),
        Script {
            gate: Some(gate.clone()),
            ..Script::default()
        },
    );
    let held = s.submit(&model("a"), request(&s, 1)).unwrap();
    until(|| phase_of(&s, "a") == Some(Phase::Busy)).await;
    let refused = events(s.submit(&model("b"), request(&s, 1)).unwrap()).await;
    match last(&refused) {
        SupervisorEvent::Failed(SupervisorError::Pool(pool::Refusal::PoolFull {
            serving, ..
        })) => assert_eq!(serving, "a"),
        other => panic!("expected a full pool, got {other:?}"),
    }
    gate.add_permits(1);
    assert!(matches!(
        last(&events(held).await),
        SupervisorEvent::Finished(_)
    ));
}

#[tokio::test]
async fn a_crashed_engine_is_restarted_on_the_next_request_with_the_reason() {
    let gate = Arc::new(Semaphore::new(0));
    let (s, script) = supervisor(
        config(|_| {}),
        Script {
            gate: Some(gate.clone()),
            ..Script::default()
        },
    );
    let m = model("a");
    let reply = s.submit(&m, request(&s, 3)).unwrap();
    until(|| phase_of(&s, "a") == Some(Phase::Busy)).await;
    let engine = lock(&script.engines).get("a").cloned().unwrap();
    engine.crash();
    let ev = events(reply).await;
    match last(&ev) {
        SupervisorEvent::Failed(SupervisorError::Engine(EngineError::Died { .. })) => {}
        other => panic!("expected the engine's death, got {other:?}"),
    }
    assert_eq!(phase_of(&s, "a"), Some(Phase::Failed));
    gate.add_permits(10);
    let ev = events(s.submit(&m, request(&s, 1)).unwrap()).await;
    assert!(
        ev.iter().any(|e| matches!(e, SupervisorEvent::Reloading { reason } if reason.contains("restarting a: its engine was killed by signal 9"))),
        "{ev:?}"
    );
    assert!(matches!(last(&ev), SupervisorEvent::Finished(_)));
    assert_eq!(lock(&script.launches).len(), 2);
}

#[tokio::test]
async fn a_model_that_keeps_failing_to_start_is_marked_failed_until_preloaded() {
    let script = Script::default();
    script.failing_starts.store(usize::MAX, Ordering::SeqCst);
    let (s, script) = supervisor(config(|c| c.supervisor.max_start_failures = 2), script);
    let m = model("broken");
    let first = events(s.submit(&m, request(&s, 1)).unwrap()).await;
    assert!(
        matches!(last(&first), SupervisorEvent::Failed(SupervisorError::Engine(e)) if e.to_string() == "broken is broken")
    );
    let second = events(s.submit(&m, request(&s, 1)).unwrap()).await;
    assert!(matches!(
        last(&second),
        SupervisorEvent::Failed(SupervisorError::ModelFailed { attempts: 2, .. })
    ));
    // Refused at once now, without another launch.
    assert!(matches!(
        s.submit(&m, request(&s, 1)),
        Err(SupervisorError::ModelFailed { .. })
    ));
    assert_eq!(lock(&script.launches).len(), 2);
    // An explicit preload forgives and tries again.
    script.failing_starts.store(0, Ordering::SeqCst);
    s.preload(&m, |_| {}).await.unwrap();
    assert_eq!(phase_of(&s, "broken"), Some(Phase::Ready));
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_a_queued_cancel_leaves_it() {
    let gate = Arc::new(Semaphore::new(0));
    let (s, _script) = supervisor(
        config(|c| c.supervisor.queue_length = 1),
        Script {
            gate: Some(gate.clone()),
            ..Script::default()
        },
    );
    let m = model("a");
    let running = s.submit(&m, request(&s, 1)).unwrap();
    let mut queued = s.submit(&m, request(&s, 1)).unwrap();
    match tokio::time::timeout(WAIT, queued.next()).await.unwrap() {
        Some(SupervisorEvent::Queued { position: 0 }) => {}
        other => panic!("expected a queue position, got {other:?}"),
    }
    match s.submit(&m, request(&s, 1)) {
        Err(SupervisorError::QueueFull {
            queued: 1,
            limit: 1,
            ..
        }) => {}
        other => panic!("expected a full queue, got {:?}", other.map(|r| r.id)),
    }
    queued.cancel();
    let ev = events(queued).await;
    assert!(matches!(
        last(&ev),
        SupervisorEvent::Finished(c) if c.finish_reason == FinishReason::Cancelled
    ));
    // Its place is free again.
    let again = s.submit(&m, request(&s, 1)).unwrap();
    gate.add_permits(10);
    for r in [running, again] {
        assert!(matches!(
            last(&events(r).await),
            SupervisorEvent::Finished(_)
        ));
    }
}

#[tokio::test]
async fn changed_settings_reload_the_engine_on_its_next_request() {
    let (s, script) = supervisor(config(|_| {}), Script::default());
    let m = model("a");
    events(s.submit(&m, request(&s, 1)).unwrap()).await;
    let said = s.set_options(
        &m,
        LoadOptions {
            context: 2048,
            parallel: 1,
            threads: None,
            kv_cache_type: Default::default(),
            flash_attention: Default::default(),
        },
    );
    assert_eq!(
        said.as_deref(),
        Some("a will reload on its next request: context 8192 → 2048")
    );
    let ev = events(s.submit(&m, request(&s, 1)).unwrap()).await;
    assert!(ev.iter().any(
        |e| matches!(e, SupervisorEvent::Reloading { reason } if reason == "reloading a: context 8192 → 2048")
    ));
    assert_eq!(
        *lock(&script.launches),
        vec![("a".to_string(), 8192), ("a".to_string(), 2048)]
    );
}

#[tokio::test]
async fn an_idle_engine_stops_after_the_ttl() {
    let (s, _script) = supervisor(
        config(|c| c.supervisor.idle_ttl_secs = 1),
        Script::default(),
    );
    events(s.submit(&model("a"), request(&s, 1)).unwrap()).await;
    until(|| phase_of(&s, "a") == Some(Phase::Stopped)).await;
    let e = s.status().engines.remove(0);
    assert_eq!(
        e.reason.as_deref(),
        Some("idle for 1 s (supervisor.idle_ttl_secs)")
    );
}

#[tokio::test]
async fn shutdown_stops_every_engine_at_once() {
    let (s, script) = supervisor(
        config(|c| c.supervisor.max_models = 3),
        Script {
            // Each stop finishes only once all three have begun: stopped one after another,
            // the first would wait out the bound and the test would see the third still alive.
            stop_barrier: Some(3),
            ..Script::default()
        },
    );
    for name in ["a", "b", "c"] {
        events(s.submit(&model(name), request(&s, 1)).unwrap()).await;
    }
    tokio::time::timeout(WAIT, s.shutdown())
        .await
        .expect("shutdown hung");
    assert_eq!(script.stops_started.load(Ordering::SeqCst), 3);
    for e in s.status().engines {
        assert_eq!(e.state, Phase::Stopped, "{}", e.model);
    }
    assert!(matches!(
        s.submit(&model("a"), request(&s, 1)),
        Err(SupervisorError::ShuttingDown)
    ));
}

#[tokio::test]
async fn the_states_a_request_passes_through_are_reported() {
    let gate = Arc::new(Semaphore::new(0));
    let (s, _script) = supervisor(
        config(|_| {}),
        Script {
            gate: Some(gate.clone()),
            ..Script::default()
        },
    );
    assert_eq!(phase_of(&s, "a"), None);
    let reply = s.submit(&model("a"), request(&s, 1)).unwrap();
    until(|| phase_of(&s, "a") == Some(Phase::Busy)).await;
    gate.add_permits(1);
    events(reply).await;
    assert_eq!(phase_of(&s, "a"), Some(Phase::Ready));
    assert!(s.unload("a").await.unwrap());
    assert_eq!(phase_of(&s, "a"), Some(Phase::Stopped));
    let e = s.status().engines.remove(0);
    assert_eq!(e.reason.as_deref(), Some("unloaded on request"));
    assert_eq!(e.requests_served, 1);
}

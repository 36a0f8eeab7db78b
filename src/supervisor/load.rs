//! Starting, reloading, restarting and stopping one model's engine, and making room for it in
//! the pool. Every start and stop holds the model's load lock, so concurrent requests never load
//! a model twice, and goes through the lifecycle's checked transitions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::lifecycle::{EngineState, Running, StartReason, StopReason};
use super::slot::{alive, ModelSlot};
use super::{
    backoff, lock, pool, Inner, LoadOptions, SupervisorError, SupervisorEvent, STOP_GRACE,
};
use crate::domain::ModelNeeds;

/// What `ensure_engine` found it has to do.
enum Decision {
    /// The engine runs with the right settings.
    Running(Running),
    /// Its settings changed: stop it and start it again.
    Reload(String),
    /// None runs: start one (after `wait`, the backoff left).
    Start(StartReason, Option<Duration>),
}

/// A load running in its own task: the reply's wait for it can be cancelled without cancelling
/// the load (a half-done start would leave the lifecycle in `starting` with no one to finish it).
pub(super) struct Load {
    pub(super) done: tokio::task::JoinHandle<Result<Running, SupervisorError>>,
    /// `Loading` and `Reloading` events of this load.
    pub(super) events: mpsc::UnboundedReceiver<SupervisorEvent>,
}

/// Starts `ensure_engine` in a task of the supervisor's tracker.
pub(super) fn spawn_load(inner: &Arc<Inner>, slot: &Arc<ModelSlot>, preload: bool) -> Load {
    let (tx, events) = mpsc::unbounded_channel();
    let (inner2, slot) = (inner.clone(), slot.clone());
    let done = inner
        .tasks
        .spawn(async move { inner2.ensure_engine(&slot, &tx, preload).await });
    Load { done, events }
}

impl Load {
    /// Waits for the load, handing each progress event to `on_event`.
    pub(super) async fn wait(
        mut self,
        mut on_event: impl FnMut(SupervisorEvent),
    ) -> Result<Running, SupervisorError> {
        loop {
            tokio::select! {
                done = &mut self.done => {
                    while let Ok(ev) = self.events.try_recv() {
                        on_event(ev);
                    }
                    return done.unwrap_or(Err(SupervisorError::ShuttingDown));
                }
                Some(ev) = self.events.recv() => on_event(ev),
            }
        }
    }
}

impl Inner {
    /// The model's running engine, started (after making room in the pool) if there is none,
    /// reloaded if its settings changed, restarted (after the backoff) if it died.
    async fn ensure_engine(
        &self,
        slot: &Arc<ModelSlot>,
        tx: &mpsc::UnboundedSender<SupervisorEvent>,
        preload: bool,
    ) -> Result<Running, SupervisorError> {
        let _guard = slot.load_lock.lock().await;
        let name = slot.entry.name.clone();
        let (why, wait) = match self.decide(slot, preload)? {
            Decision::Running(running) => return Ok(running),
            Decision::Reload(changes) => {
                let reason = format!("reloading {name}: {changes}");
                tracing::info!(model = %name, "{reason}");
                let _ = tx.send(SupervisorEvent::Reloading { reason });
                let why = StopReason::Reload {
                    changes: changes.clone(),
                };
                self.stop_engine_locked(slot, why).await;
                (StartReason::Reload { changes }, None)
            }
            Decision::Start(why, wait) => {
                if let StartReason::Restart { exit } = &why {
                    let reason = format!("restarting {name}: its engine {exit}");
                    tracing::info!(model = %name, "{reason}");
                    let _ = tx.send(SupervisorEvent::Reloading { reason });
                }
                (why, wait)
            }
        };
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            tracing::info!(model = %name, "waiting {wait:?} before starting again (backoff)");
            tokio::time::sleep(wait).await;
        }
        // Options asked for while no engine ran take effect now, before the memory estimate.
        let options = {
            let mut st = slot.state();
            if let Some(wanted) = st.wanted.take() {
                slot.apply_options(&mut st, wanted);
            }
            st.options.clone()
        };
        let needs = self.make_room(slot, &options).await?;
        self.start(slot, why, &options, needs, tx).await
    }

    /// Looks at the model's state (under its lock) and decides what `ensure_engine` must do.
    fn decide(&self, slot: &ModelSlot, preload: bool) -> Result<Decision, SupervisorError> {
        let mut st = slot.state();
        if let Some(reason) = &st.failed {
            return Err(SupervisorError::ModelFailed {
                model: slot.entry.name.clone(),
                attempts: st.start_failures,
                reason: reason.clone(),
            });
        }
        let running = alive(st.lifecycle.state());
        // A reload waits until nobody else uses the old engine (we are the one active request).
        let reload = match (&running, &st.wanted) {
            (Some(_), Some(wanted)) if st.active <= 1 => st.options.differences(wanted),
            _ => None,
        };
        match (running, reload) {
            (Some(r), None) => return Ok(Decision::Running(r)),
            (Some(_), Some(changes)) => return Ok(Decision::Reload(changes)),
            (None, _) => {}
        }
        // An engine that died while idle is noticed here.
        let dead = st
            .lifecycle
            .state()
            .running()
            .and_then(|r| r.engine.exit_status());
        if let Some(exit) = dead {
            let _ = st.lifecycle.go(EngineState::Failed {
                cause: format!("its engine {exit}"),
                exit: Some(exit),
            });
        }
        let why = match st.lifecycle.state() {
            EngineState::Failed {
                exit: Some(exit), ..
            } => StartReason::Restart { exit: *exit },
            EngineState::Failed { exit: None, .. } => StartReason::Retry {
                attempt: st.start_failures + 1,
            },
            _ if preload => StartReason::Preload,
            _ => StartReason::Needed,
        };
        let wait = st
            .retry_after
            .map(|t| t.saturating_duration_since(Instant::now()));
        Ok(Decision::Start(why, wait))
    }

    /// Starts the engine through the launcher and records how that went.
    async fn start(
        &self,
        slot: &ModelSlot,
        why: StartReason,
        options: &LoadOptions,
        needs: ModelNeeds,
        tx: &mpsc::UnboundedSender<SupervisorEvent>,
    ) -> Result<Running, SupervisorError> {
        if slot
            .state()
            .lifecycle
            .go(EngineState::Starting { why })
            .is_err()
        {
            return Err(SupervisorError::ShuttingDown);
        }
        self.publish();
        // Said before the engine reports anything, so every caller hears that a load began,
        // however quickly it then finishes.
        let _ = tx.send(SupervisorEvent::Loading { progress: 0.0 });
        let progress_tx = tx.clone();
        let progress = Box::new(move |p: f32| {
            let _ = progress_tx.send(SupervisorEvent::Loading { progress: p });
        });
        let started = self
            .launcher
            .launch(&slot.entry, options, needs, progress)
            .await;
        let outcome = match started {
            Ok(launched) => {
                let running = Running {
                    engine: launched.engine,
                    fallback: launched.fallback,
                };
                let mut st = slot.state();
                let _ = st.lifecycle.go(EngineState::Ready(running.clone()));
                st.start_failures = 0;
                st.retry_after = None;
                st.started_at = Some(super::status::unix_now());
                st.estimate = Some(needs.estimate);
                Ok(running)
            }
            Err(e) => Err(self.record_failed_start(slot, e)),
        };
        self.publish();
        outcome
    }

    /// Counts a failed start, schedules the next try, and marks the model failed after too many.
    fn record_failed_start(
        &self,
        slot: &ModelSlot,
        e: crate::engines::EngineError,
    ) -> SupervisorError {
        let mut st = slot.state();
        st.start_failures += 1;
        let reason = e.to_string();
        st.retry_after = Some(Instant::now() + backoff(&self.config, st.start_failures));
        let limit = self.config.supervisor.max_start_failures.max(1);
        if st.start_failures >= limit {
            st.failed = Some(reason.clone());
        }
        let _ = st.lifecycle.go(EngineState::Failed {
            cause: reason.clone(),
            exit: None,
        });
        if st.failed.is_some() && st.start_failures > 1 {
            return SupervisorError::ModelFailed {
                model: slot.entry.name.clone(),
                attempts: st.start_failures,
                reason,
            };
        }
        SupervisorError::Engine(e)
    }

    /// Stops least recently used idle engines of other models until this one fits at `options`.
    /// Returns what the model needs, worked out once for this launch.
    async fn make_room(
        &self,
        slot: &Arc<ModelSlot>,
        options: &LoadOptions,
    ) -> Result<ModelNeeds, SupervisorError> {
        let needs = self.launcher.needs(&slot.entry, options);
        slot.state().estimate = Some(needs.estimate);
        let others: Vec<Arc<ModelSlot>> = lock(&self.models)
            .values()
            .filter(|s| !Arc::ptr_eq(s, slot))
            .cloned()
            .collect();
        let residents: Vec<pool::Resident> = others
            .iter()
            .filter_map(|s| {
                let st = s.state();
                alive(st.lifecycle.state())?;
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
            available: self.launcher.available_memory(),
        };
        let evict = pool::plan(
            &slot.entry.name,
            needs.estimate.total(),
            &residents,
            &limits,
        )?;
        for name in evict {
            let Some(victim) = others.iter().find(|s| s.entry.name == name) else {
                continue;
            };
            // A victim that is loading or stopping right now is not idle; never wait on it (two
            // models evicting each other would wait forever).
            let Ok(_guard) = victim.load_lock.try_lock() else {
                continue;
            };
            if victim.in_use() == 0 {
                self.stop_engine_locked(
                    victim,
                    StopReason::Evicted {
                        for_model: slot.entry.name.clone(),
                    },
                )
                .await;
            }
        }
        Ok(needs)
    }

    /// Stops a model's engine, taking its load lock first.
    pub(super) async fn stop_engine(&self, slot: &Arc<ModelSlot>, why: StopReason) -> bool {
        let _guard = slot.load_lock.lock().await;
        self.stop_engine_locked(slot, why).await
    }

    /// Stops a model's engine; the caller holds its load lock. Returns whether one was running.
    pub(super) async fn stop_engine_locked(&self, slot: &Arc<ModelSlot>, why: StopReason) -> bool {
        let running = {
            let mut st = slot.state();
            let Some(running) = st.lifecycle.state().running().cloned() else {
                // A dead engine has nothing to stop; it is simply not running any more.
                if st.lifecycle.phase() == super::Phase::Failed {
                    let _ = st.lifecycle.go(EngineState::Stopped { why: Some(why) });
                }
                return false;
            };
            let _ = st.lifecycle.go(EngineState::Stopping { why: why.clone() });
            running
        };
        self.publish();
        running.engine.stop(STOP_GRACE).await;
        {
            let mut st = slot.state();
            let _ = st.lifecycle.go(EngineState::Stopped { why: Some(why) });
        }
        self.publish();
        true
    }
}

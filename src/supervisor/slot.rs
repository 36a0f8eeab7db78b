//! One model's place in the supervisor: its engine's lifecycle, the queue in front of the
//! engine's decode slots, and the counters `ps` shows.
//!
//! The queue is a fair semaphore with one permit per decode slot: requests beyond them wait in
//! arrival order. Its bound is checked synchronously in [`ModelSlot::admit`], so it holds however
//! fast requests arrive.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{mpsc, Semaphore};

use super::lifecycle::{EngineState, Lifecycle, Running};
use super::status::{self, EngineStatus};
use super::{LoadOptions, SupervisorError, SupervisorEvent};
use crate::domain::{EngineDescription, MemoryEstimate};
use crate::models::ModelEntry;

pub(super) struct ModelSlot {
    pub(super) entry: ModelEntry,
    /// Decode slots of the engine: requests beyond these wait here, in order.
    pub(super) permits: Arc<Semaphore>,
    /// One start or stop at a time per model, so concurrent requests never load it twice.
    pub(super) load_lock: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

pub(super) struct SlotState {
    pub(super) lifecycle: Lifecycle,
    pub(super) options: LoadOptions,
    /// Options the next start will use, when they differ from the running engine's.
    pub(super) wanted: Option<LoadOptions>,
    pub(super) estimate: Option<MemoryEstimate>,
    pub(super) last_used: Instant,
    pub(super) started_at: Option<u64>,
    pub(super) last_used_at: Option<u64>,
    pub(super) served: u64,
    pub(super) active: usize,
    pub(super) queued: usize,
    /// Consecutive failed starts, and crashes since the last completed request.
    pub(super) start_failures: u32,
    pub(super) crashes: u32,
    pub(super) retry_after: Option<Instant>,
    /// Set when the model failed to start too often: requests are refused with this reason.
    pub(super) failed: Option<String>,
    /// Slots still to retire after `parallel` went down: held permits are forgotten on release.
    pub(super) permit_debt: usize,
}

impl ModelSlot {
    pub(super) fn new(model: &ModelEntry, options: LoadOptions) -> ModelSlot {
        ModelSlot {
            entry: model.clone(),
            permits: Arc::new(Semaphore::new(options.parallel.max(1) as usize)),
            load_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(SlotState {
                lifecycle: Lifecycle::new(&model.name),
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
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, SlotState> {
        super::lock(&self.state)
    }

    /// Takes a new request into the queue, or refuses it: the model failed for good, or its
    /// queue is full. Tells the caller its place when it has to wait.
    pub(super) fn admit(
        &self,
        limit: u32,
        tx: &mpsc::UnboundedSender<SupervisorEvent>,
    ) -> Result<(), SupervisorError> {
        let mut st = self.state();
        if let Some(reason) = &st.failed {
            return Err(SupervisorError::ModelFailed {
                model: self.entry.name.clone(),
                attempts: st.start_failures,
                reason: reason.clone(),
            });
        }
        let ahead = st.active + st.queued;
        let slots = st.options.parallel as usize;
        if ahead >= slots + limit as usize {
            return Err(SupervisorError::QueueFull {
                model: self.entry.name.clone(),
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
        Ok(())
    }

    /// Clears a failed mark, so the next start is tried at once.
    pub(super) fn forgive(&self) {
        let mut st = self.state();
        st.failed = None;
        st.retry_after = None;
    }

    /// Requests running or waiting.
    pub(super) fn in_use(&self) -> usize {
        let st = self.state();
        st.active + st.queued
    }

    /// Applies new engine settings now if no engine runs, else at the next request (a reload);
    /// says so when that will happen.
    pub(super) fn set_options(&self, options: LoadOptions) -> Option<String> {
        let mut st = self.state();
        let change = st.options.differences(&options);
        if st.lifecycle.state().running().is_some() {
            st.wanted = Some(options);
            change.map(|c| format!("{} will reload on its next request: {c}", self.entry.name))
        } else {
            self.apply_options(&mut st, options);
            None
        }
    }

    /// Makes `options` the model's settings, and sizes its queue's slots to `options.parallel`.
    pub(super) fn apply_options(&self, st: &mut SlotState, options: LoadOptions) {
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

    /// A running engine's description, with the fallback the launcher recorded.
    pub(super) fn describe(&self, running: &Running) -> EngineDescription {
        EngineDescription {
            fallback: running.fallback.clone(),
            ..running.engine.describe()
        }
    }

    /// The description of the engine serving now, if it still runs.
    pub(super) fn running_description(&self) -> Option<EngineDescription> {
        let running = self.state().lifecycle.state().running().cloned()?;
        if running.engine.exit_status().is_some() {
            return None;
        }
        Some(self.describe(&running))
    }

    /// The line `ps` shows for this model.
    pub(super) fn status(&self) -> EngineStatus {
        let st = self.state();
        let state = st.lifecycle.state();
        let d = state.running().map(|r| self.describe(r));
        EngineStatus {
            model: self.entry.name.clone(),
            engine: d.as_ref().map(|d| d.engine).unwrap_or(self.entry.engine),
            backend: d.as_ref().map(|d| d.backend),
            state: state.phase(),
            reason: state.reason(),
            pid: d.as_ref().and_then(|d| d.pid),
            context: d.as_ref().map(|d| d.context),
            started_at: st.started_at,
            last_used_at: st.last_used_at,
            requests_served: st.served,
            active: st.active,
            queued: st.queued,
            fallback: d.as_ref().and_then(|d| d.fallback.clone()),
            loads: st.lifecycle.counts().loads,
            evictions: st.lifecycle.counts().evictions,
            failures: st.lifecycle.counts().failures,
        }
    }

    /// Marks the model used now.
    pub(super) fn touch(st: &mut SlotState) {
        st.last_used = Instant::now();
        st.last_used_at = Some(status::unix_now());
    }
}

/// Whether `state` holds an engine that has not exited.
pub(super) fn alive(state: &EngineState) -> Option<Running> {
    state
        .running()
        .filter(|r| r.engine.exit_status().is_none())
        .cloned()
}

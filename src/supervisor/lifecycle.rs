//! The states an engine process goes through, and the one place transitions happen, so every
//! transition is logged with its reason.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineState {
    /// Spawned, loading the model; ends with the engine's own ready event or a failure.
    Starting,
    /// Loaded, serving nothing.
    Ready,
    /// Serving at least one request.
    Busy,
    /// Asked to exit (shutdown, eviction, idle TTL, reload).
    Stopping,
    /// Not running (never started, or stopped on purpose).
    Stopped,
    /// Failed to start, or died; the reason is kept beside the state.
    Failed,
}

impl fmt::Display for EngineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineState::Starting => "starting",
            EngineState::Ready => "ready",
            EngineState::Busy => "busy",
            EngineState::Stopping => "stopping",
            EngineState::Stopped => "stopped",
            EngineState::Failed => "failed",
        })
    }
}

/// Moves `state` to `to`, logging the transition and why.
pub fn transition(model: &str, state: &mut EngineState, to: EngineState, reason: &str) {
    if *state == to {
        return;
    }
    if to == EngineState::Failed {
        tracing::warn!(model, from = %state, to = %to, "engine {state} → {to}: {reason}");
    } else {
        tracing::info!(model, from = %state, to = %to, "engine {state} → {to}: {reason}");
    }
    *state = to;
}

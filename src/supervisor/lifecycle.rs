//! The states one model's engine goes through, as a checked state machine.
//!
//! Each state carries what is true only in it: a running engine exists exactly in `Ready` and
//! `Busy`, a cause exactly in `Failed`. Every change goes through [`Lifecycle::go`], which checks
//! it against one transition table, logs it with its reason, and refuses (and logs loudly) a
//! transition the table does not allow, so a supervisor bug shows up as a log line instead of an
//! engine that is silently lost or started twice. The shape follows llama-swap's
//! `swapState(expected, new)`; unlike it, reasons are typed ([`StartReason`], [`StopReason`]).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engines::{Engine, ExitInfo};

/// Why an engine is (re)started.
#[derive(Debug, Clone, PartialEq)]
pub enum StartReason {
    /// A request needs the model and no engine serves it.
    Needed,
    /// Loaded ahead of use (`/model`, a preload).
    Preload,
    /// The previous engine ended by itself.
    Restart {
        /// How it ended.
        exit: ExitInfo,
    },
    /// The engine settings changed (`context 2048 → 4096`).
    Reload {
        /// What changed.
        changes: String,
    },
    /// The last start failed; this is the next attempt.
    Retry {
        /// Attempts so far.
        attempt: u32,
    },
}

impl fmt::Display for StartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartReason::Needed => f.write_str("a request needs it"),
            StartReason::Preload => f.write_str("loaded ahead of use"),
            StartReason::Restart { exit } => write!(f, "restarting: its engine {exit}"),
            StartReason::Reload { changes } => write!(f, "reloading: {changes}"),
            StartReason::Retry { attempt } => write!(f, "trying again (attempt {attempt})"),
        }
    }
}

/// Why an engine is stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// gemmactl is exiting.
    Shutdown,
    /// Stopped (least recently used) to make room for another model.
    Evicted {
        /// The model that needed the room.
        for_model: String,
    },
    /// Idle past the TTL.
    Idle {
        /// The TTL in seconds.
        ttl_secs: u64,
    },
    /// Unloaded on request.
    Unloaded,
    /// Stopped to start again with other settings.
    Reload {
        /// What changed.
        changes: String,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Shutdown => f.write_str("gemmactl is exiting"),
            StopReason::Evicted { for_model } => {
                write!(
                    f,
                    "evicted (least recently used) to make room for {for_model}"
                )
            }
            StopReason::Idle { ttl_secs } => {
                write!(f, "idle for {ttl_secs} s (supervisor.idle_ttl_secs)")
            }
            StopReason::Unloaded => f.write_str("unloaded on request"),
            StopReason::Reload { changes } => write!(f, "reloading: {changes}"),
        }
    }
}

/// A model's engine state, with the data that belongs to it.
#[derive(Clone)]
pub enum EngineState {
    /// Not running: never started, or stopped on purpose.
    Stopped {
        /// Why, once it was stopped.
        why: Option<StopReason>,
    },
    /// Spawned, loading the model; ends with the engine's own ready event or a failure.
    Starting {
        /// Why it is being started.
        why: StartReason,
    },
    /// Loaded, serving nothing.
    Ready(Running),
    /// Serving at least one request.
    Busy(Running),
    /// Asked to exit.
    Stopping {
        /// Why.
        why: StopReason,
    },
    /// Failed to start, or died.
    Failed {
        /// What happened, in a sentence.
        cause: String,
        /// How the engine ended, when it died after a start (the next start is a restart).
        exit: Option<ExitInfo>,
    },
}

/// A running engine and what the launcher learned starting it.
#[derive(Clone)]
pub struct Running {
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// Why it is not on the GPU that was asked for or is present, if so.
    pub fallback: Option<String>,
}

/// The name of a state, without its data: what the transition table and `ps` speak of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Not running.
    Stopped,
    /// Loading.
    Starting,
    /// Loaded and idle.
    Ready,
    /// Serving.
    Busy,
    /// Exiting.
    Stopping,
    /// Failed to start, or died.
    Failed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Busy => "busy",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        })
    }
}

impl EngineState {
    /// The state's name.
    pub fn phase(&self) -> Phase {
        match self {
            EngineState::Stopped { .. } => Phase::Stopped,
            EngineState::Starting { .. } => Phase::Starting,
            EngineState::Ready(_) => Phase::Ready,
            EngineState::Busy(_) => Phase::Busy,
            EngineState::Stopping { .. } => Phase::Stopping,
            EngineState::Failed { .. } => Phase::Failed,
        }
    }

    /// The running engine, in `Ready` and `Busy`.
    pub fn running(&self) -> Option<&Running> {
        match self {
            EngineState::Ready(r) | EngineState::Busy(r) => Some(r),
            _ => None,
        }
    }

    /// Why the engine is in this state, for `ps`.
    pub fn reason(&self) -> Option<String> {
        match self {
            EngineState::Stopped { why } => why.as_ref().map(ToString::to_string),
            EngineState::Starting { why } => Some(why.to_string()),
            EngineState::Stopping { why } => Some(why.to_string()),
            EngineState::Failed { cause, .. } => Some(cause.clone()),
            EngineState::Ready(_) | EngineState::Busy(_) => None,
        }
    }
}

/// Whether the table allows going from `from` to `to`.
pub fn allowed(from: Phase, to: Phase) -> bool {
    use Phase::*;
    matches!(
        (from, to),
        (Stopped, Starting)
            | (Starting, Ready)
            | (Starting, Failed)
            | (Ready, Busy)
            | (Ready, Stopping)
            | (Ready, Failed)
            | (Busy, Ready)
            | (Busy, Stopping)
            | (Busy, Failed)
            | (Stopping, Stopped)
            | (Failed, Starting)
            | (Failed, Stopped)
    )
}

/// A transition the table refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal engine transition {from} → {to} for {model}")]
pub struct IllegalTransition {
    /// The model.
    pub model: String,
    /// Where it was.
    pub from: Phase,
    /// Where it was asked to go.
    pub to: Phase,
}

/// One model's engine state and the one way to change it.
pub struct Lifecycle {
    model: String,
    state: EngineState,
    counts: Transitions,
}

/// How often a model's engine went through the transitions operators watch (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transitions {
    /// Starts: first loads, reloads and restarts.
    pub loads: u64,
    /// Stops to make room for another model (swaps).
    pub evictions: u64,
    /// Failed starts and deaths.
    pub failures: u64,
}

impl Lifecycle {
    /// A model with no engine yet.
    pub fn new(model: &str) -> Lifecycle {
        Lifecycle {
            model: model.to_string(),
            state: EngineState::Stopped { why: None },
            counts: Transitions::default(),
        }
    }

    /// The transitions counted so far.
    pub fn counts(&self) -> Transitions {
        self.counts
    }

    /// The current state.
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// The current state's name.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// Moves to `to`, logging the transition and why; an illegal one is refused and logged as
    /// an error, and the state stays as it was.
    pub fn go(&mut self, to: EngineState) -> Result<(), IllegalTransition> {
        let (from, next) = (self.state.phase(), to.phase());
        if !allowed(from, next) {
            let err = IllegalTransition {
                model: self.model.clone(),
                from,
                to: next,
            };
            tracing::error!(model = %self.model, %from, to = %next, "{err} (refused)");
            return Err(err);
        }
        let why = to.reason().unwrap_or_else(|| match next {
            Phase::Busy => "serving a request".into(),
            _ => "no request in flight".into(),
        });
        if next == Phase::Failed {
            tracing::warn!(model = %self.model, %from, to = %next, "engine {from} → {next}: {why}");
        } else {
            tracing::info!(model = %self.model, %from, to = %next, "engine {from} → {next}: {why}");
        }
        match &to {
            EngineState::Starting { .. } => self.counts.loads += 1,
            EngineState::Failed { .. } => self.counts.failures += 1,
            EngineState::Stopping {
                why: StopReason::Evicted { .. },
            } => self.counts.evictions += 1,
            _ => {}
        }
        self.state = to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Phase; 6] = [
        Phase::Stopped,
        Phase::Starting,
        Phase::Ready,
        Phase::Busy,
        Phase::Stopping,
        Phase::Failed,
    ];

    #[test]
    fn the_table_allows_exactly_the_documented_paths() {
        let allowed_pairs: Vec<(Phase, Phase)> = ALL
            .iter()
            .flat_map(|a| ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| allowed(*a, *b))
            .collect();
        assert_eq!(allowed_pairs.len(), 12);
        // Nothing skips loading, and nothing is served by an engine that is going away.
        assert!(!allowed(Phase::Stopped, Phase::Ready));
        assert!(!allowed(Phase::Stopped, Phase::Busy));
        assert!(!allowed(Phase::Stopping, Phase::Busy));
        assert!(!allowed(Phase::Stopping, Phase::Starting));
        assert!(!allowed(Phase::Starting, Phase::Busy));
        assert!(!allowed(Phase::Failed, Phase::Ready));
        // No state transitions to itself (a repeated event is a bug, not a no-op).
        for p in ALL {
            assert!(!allowed(p, p), "{p}");
        }
    }

    #[test]
    fn an_illegal_transition_is_refused_and_changes_nothing() {
        let mut l = Lifecycle::new("m");
        let err = l
            .go(EngineState::Stopping {
                why: StopReason::Shutdown,
            })
            .unwrap_err();
        assert_eq!(err.from, Phase::Stopped);
        assert_eq!(err.to, Phase::Stopping);
        assert_eq!(l.phase(), Phase::Stopped);
        l.go(EngineState::Starting {
            why: StartReason::Needed,
        })
        .unwrap();
        assert_eq!(l.phase(), Phase::Starting);
        l.go(EngineState::Failed {
            cause: "no such file".into(),
            exit: None,
        })
        .unwrap();
        assert_eq!(l.state().reason().as_deref(), Some("no such file"));
        l.go(EngineState::Starting {
            why: StartReason::Retry { attempt: 2 },
        })
        .unwrap();
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            StopReason::Evicted {
                for_model: "b".into()
            }
            .to_string(),
            "evicted (least recently used) to make room for b"
        );
        let exit = ExitInfo {
            code: None,
            signal: Some(9),
        };
        assert_eq!(
            StartReason::Restart { exit }.to_string(),
            "restarting: its engine was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            StartReason::Reload {
                changes: "context 512 → 1024".into()
            }
            .to_string(),
            "reloading: context 512 → 1024"
        );
    }
}

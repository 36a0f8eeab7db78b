//! Running the lines: up to `--parallel` in flight at once (the engine decodes them together),
//! lines for different models on their own engines but never more models at once than the pool
//! holds, and Ctrl-C: the first stops taking new lines, the second cancels those in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::job::{ErrorKind, LineError};
use super::line::{self, Outcome, Shared, Work};

/// How long lines cancelled by a second Ctrl-C get to report before they are dropped.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// How far past a line whose model cannot start yet the dispatcher looks for one that can.
const LOOKAHEAD: usize = 4096;

/// How many lines and models at once.
pub(super) struct Limits {
    /// Lines in flight, in all.
    pub(super) parallel: usize,
    /// Models serving at once (`supervisor.max_models`).
    pub(super) max_models: usize,
}

/// What the dispatcher tells its caller.
pub(super) trait Report {
    /// A line ended; `false` stops the batch (the output cannot be written).
    fn finished(&mut self, seq: usize, outcome: Outcome) -> bool;
    /// Called a few times a second.
    fn tick(&mut self);
    /// Something to tell the user.
    fn note(&mut self, text: &str);
}

/// How a run ended before its last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// The output could not be written.
    Output,
}

/// Runs `work` to its end, or until stopped (and why).
pub(super) async fn run(
    work: Vec<Work>,
    shared: Arc<Shared>,
    limits: Limits,
    report: &mut dyn Report,
) -> Result<Option<Stopped>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut pending: VecDeque<Work> = work.into();
    // Lines in flight per model.
    let mut models: HashMap<String, usize> = HashMap::new();
    let mut running: HashMap<tokio::task::Id, (usize, usize, String)> = HashMap::new();
    let mut set: JoinSet<Outcome> = JoinSet::new();
    let mut stopped: Option<Stopped> = None;
    let mut cancel_deadline: Option<Instant> = None;
    let mut aborted = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let parallel = limits.parallel.max(1);
    let max_models = limits.max_models.max(1);
    loop {
        // A line the pool refused waits for the others to drain: start nothing meanwhile.
        while stopped.is_none()
            && set.len() < parallel
            && shared.pool_waiting.load(Ordering::SeqCst) == 0
        {
            let Some(i) = startable(&pending, &models, max_models) else {
                break;
            };
            let Some(w) = pending.remove(i) else { break };
            *models.entry(w.model.name.clone()).or_default() += 1;
            shared.in_flight.fetch_add(1, Ordering::SeqCst);
            let info = (w.seq, w.line_number, w.model.name.clone());
            let handle = set.spawn(line::run(w, shared.clone()));
            running.insert(handle.id(), info);
        }
        if set.is_empty() {
            break;
        }
        let deadline = cancel_deadline.unwrap_or_else(Instant::now);
        tokio::select! {
            joined = set.join_next_with_id() => {
                let Some(joined) = joined else { continue };
                let (id, outcome) = match joined {
                    Ok((id, outcome)) => (id, outcome),
                    Err(e) if e.is_cancelled() => (e.id(), Outcome::Cancelled),
                    Err(e) => (e.id(), Outcome::Failed(LineError::new(ErrorKind::EngineFailed, 0, format!("gemmactl failed on it: {e}")))),
                };
                let Some((seq, number, model)) = running.remove(&id) else { continue };
                if let Some(n) = models.get_mut(&model) {
                    *n -= 1;
                    if *n == 0 {
                        models.remove(&model);
                    }
                }
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                shared.finished.notify_waiters();
                let outcome = match outcome {
                    // A panic has no line number of its own.
                    Outcome::Failed(mut e) if e.message.starts_with("line 0:") => {
                        e.message = e.message.replacen("line 0:", &format!("line {number}:"), 1);
                        Outcome::Failed(e)
                    }
                    o => o,
                };
                if !report.finished(seq, outcome) && cancel_deadline.is_none() {
                    stopped.get_or_insert(Stopped::Output);
                    shared.cancel.cancel();
                    cancel_deadline = Some(Instant::now() + CANCEL_WAIT);
                }
            }
            _ = interrupt.recv() => {
                if stopped.is_none() {
                    stopped = Some(Stopped::Interrupt);
                    report.note(&format!(
                        "stopping: taking no new lines, finishing the {} in flight (Ctrl-C again to cancel them; --resume runs the rest later)",
                        set.len()
                    ));
                } else if cancel_deadline.is_none() {
                    report.note(&format!("cancelling the {} lines in flight", set.len()));
                    shared.cancel.cancel();
                    cancel_deadline = Some(Instant::now() + CANCEL_WAIT);
                }
            }
            _ = terminate.recv(), if cancel_deadline.is_none() => {
                stopped.get_or_insert(Stopped::Terminate);
                shared.cancel.cancel();
                cancel_deadline = Some(Instant::now() + CANCEL_WAIT);
            }
            _ = ticker.tick() => report.tick(),
            _ = tokio::time::sleep_until(deadline), if cancel_deadline.is_some() && !aborted => {
                // Dropping a line's turn records it as cancelled in the history.
                aborted = true;
                set.abort_all();
            }
        }
    }
    Ok(stopped)
}

/// The first pending line that may start now: its model is serving already, or another model
/// fits under the pool's count.
fn startable(
    pending: &VecDeque<Work>,
    models: &HashMap<String, usize>,
    max_models: usize,
) -> Option<usize> {
    pending
        .iter()
        .take(LOOKAHEAD)
        .position(|w| models.contains_key(&w.model.name) || models.len() < max_models)
}

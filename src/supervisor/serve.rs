//! The life of one request: wait for a decode slot, make sure the engine runs, stream the reply,
//! and do the bookkeeping (counts, crash backoff, `Busy` ↔ `Ready`) before the last event goes
//! out, so a caller that sees its reply end finds the model's slot already free.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use super::lifecycle::{EngineState, Running};
use super::slot::ModelSlot;
use super::{backoff, Inner, Phase, SupervisorError, SupervisorEvent};
use crate::domain::{Completion, GenerateRequest};
use crate::engines::{EngineError, ReplyEvent};

/// How a request's time on the engine ended, for the bookkeeping.
enum Outcome {
    Completed,
    Crashed(String),
    Other,
}

/// Runs one request: queue, engine, stream, bookkeeping.
pub(super) async fn serve(
    inner: Arc<Inner>,
    slot: Arc<ModelSlot>,
    request: GenerateRequest,
    tx: mpsc::UnboundedSender<SupervisorEvent>,
    mut cancel: watch::Receiver<bool>,
) {
    let shutdown = inner.shutdown.clone();
    let permit: OwnedSemaphorePermit = tokio::select! {
        p = slot.permits.clone().acquire_owned() => match p {
            Ok(p) => p,
            // The semaphore is never closed; should it be, the request cannot be served.
            Err(_) => {
                slot.state().queued -= 1;
                let _ = tx.send(SupervisorEvent::Failed(SupervisorError::ShuttingDown));
                return;
            }
        },
        _ = cancel.wait_for(|c| *c) => {
            slot.state().queued -= 1;
            let _ = tx.send(SupervisorEvent::Finished(Completion::cancelled_before_start()));
            inner.publish();
            return;
        }
        _ = shutdown.cancelled() => {
            slot.state().queued -= 1;
            let _ = tx.send(SupervisorEvent::Failed(SupervisorError::ShuttingDown));
            return;
        }
    };
    {
        let mut st = slot.state();
        st.queued -= 1;
        st.active += 1;
    }
    let (outcome, last_event) = run_on_engine(&inner, &slot, request, &tx, &mut cancel).await;
    {
        let mut st = slot.state();
        st.active -= 1;
        ModelSlot::touch(&mut st);
        match &outcome {
            Outcome::Completed => {
                st.served += 1;
                st.crashes = 0;
            }
            Outcome::Crashed(exit) => {
                st.crashes += 1;
                st.retry_after = Some(Instant::now() + backoff(&inner.config, st.crashes));
                // Several requests may learn of one crash; the first one records it.
                if matches!(st.lifecycle.phase(), Phase::Busy | Phase::Ready) {
                    let exit_info = st
                        .lifecycle
                        .state()
                        .running()
                        .and_then(|r| r.engine.exit_status());
                    let _ = st.lifecycle.go(EngineState::Failed {
                        cause: format!("engine {exit} while serving"),
                        exit: exit_info,
                    });
                }
            }
            Outcome::Other => {}
        }
        if st.active == 0 {
            if let EngineState::Busy(running) = st.lifecycle.state().clone() {
                let _ = st.lifecycle.go(EngineState::Ready(running));
            }
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

async fn run_on_engine(
    inner: &Arc<Inner>,
    slot: &Arc<ModelSlot>,
    request: GenerateRequest,
    tx: &mpsc::UnboundedSender<SupervisorEvent>,
    cancel: &mut watch::Receiver<bool>,
) -> (Outcome, SupervisorEvent) {
    // A cancel while the engine loads ends this request; the load itself finishes in the
    // background, so the engine is ready for the next one.
    let load = super::load::spawn_load(inner, slot, false);
    let running: Running = tokio::select! {
        r = load.wait(|ev| { let _ = tx.send(ev); }) => match r {
            Ok(r) => r,
            Err(e) => return (Outcome::Other, SupervisorEvent::Failed(e)),
        },
        _ = cancel.wait_for(|c| *c) => {
            return (Outcome::Other, SupervisorEvent::Finished(Completion::cancelled_before_start()));
        }
    };
    {
        let mut st = slot.state();
        if let EngineState::Ready(r) = st.lifecycle.state().clone() {
            let _ = st.lifecycle.go(EngineState::Busy(r));
        }
    }
    inner.publish();
    let _ = tx.send(SupervisorEvent::Started(slot.describe(&running)));
    let engine = running.engine;
    let id = request.id.clone();
    let mut stream = match engine.generate(request) {
        Ok(s) => s,
        Err(e) => return failed(e),
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
            Some(ReplyEvent::PromptProgress { done, total }) => {
                let _ = tx.send(SupervisorEvent::PromptProgress { done, total });
            }
            Some(ReplyEvent::Finished(done)) => {
                return (Outcome::Completed, SupervisorEvent::Finished(done))
            }
            Some(ReplyEvent::Failed(e)) => return failed(e),
            None => {
                let e =
                    EngineError::Protocol("the engine stopped answering without a reason".into());
                return (Outcome::Other, SupervisorEvent::Failed(e.into()));
            }
        }
    }
}

/// A failed request's outcome: a dead engine counts as a crash.
fn failed(e: EngineError) -> (Outcome, SupervisorEvent) {
    let outcome = match &e {
        EngineError::Died { exit, .. } => Outcome::Crashed(exit.to_string()),
        _ => Outcome::Other,
    };
    (outcome, SupervisorEvent::Failed(e.into()))
}

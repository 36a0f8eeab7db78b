//! One line through the turn service: a [`Thread`] of its own, tagged with the batch and the
//! line's id, seeded with the line's conversation, and one turn rendered into an outcome.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::job::{Ask, ErrorKind, LineError};
use crate::chat::{Notice, PromptStyle, Thread, TurnEvent, TurnService};
use crate::domain::{
    BatchLine, Completion, ErrorCode, FinishReason, Origin, SamplingParams, Source,
};
use crate::models::ModelEntry;
use crate::supervisor::SupervisorError;

/// Everything one line needs to run.
pub(super) struct Work {
    /// Where its result goes among the results of this run (input order).
    pub(super) seq: usize,
    pub(super) line_number: usize,
    pub(super) line_id: String,
    pub(super) ask: Ask,
    pub(super) model: ModelEntry,
    pub(super) system: Option<String>,
    pub(super) params: SamplingParams,
}

/// A line's answer.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    /// The model that wrote it (the name it was asked for by).
    pub(super) model: String,
    pub(super) text: String,
    pub(super) completion: Completion,
    /// Oldest messages of the line's conversation left out because it outgrew the context.
    pub(super) dropped: usize,
}

/// How a line ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Answered(Answer),
    Failed(LineError),
    /// Stopped by a second Ctrl-C before its end: not written, so `--resume` runs it again.
    Cancelled,
}

/// What the lines in flight share.
pub(super) struct Shared {
    pub(super) service: TurnService,
    /// The batch's id, for the history (`None`: `--no-log`).
    pub(super) batch_id: Option<String>,
    /// Cancelled by a second Ctrl-C: every line in flight stops.
    pub(super) cancel: CancellationToken,
    /// Lines in flight now.
    pub(super) in_flight: AtomicUsize,
    /// Lines in flight that the pool refused and that wait for others to finish; while there
    /// are any, no new line starts, so the engines they wait on become idle.
    pub(super) pool_waiting: AtomicUsize,
    /// Told each time a line finishes (a line the pool refused waits for it).
    pub(super) finished: Notify,
}

/// Runs one line to its end.
pub(super) async fn run(work: Work, shared: Arc<Shared>) -> Outcome {
    let style = match work.ask {
        Ask::Prompt(_) => PromptStyle::OneShot,
        Ask::Messages(_) => PromptStyle::Conversation,
    };
    let mut thread = Thread::new(
        &shared.service,
        work.model.clone(),
        work.system.clone(),
        work.params.clone(),
        style,
    );
    if let Some(batch_id) = &shared.batch_id {
        thread.set_origin(Origin {
            source: Source::Batch,
            client: None,
            batch: Some(BatchLine {
                batch_id: batch_id.clone(),
                line_id: work.line_id.clone(),
            }),
        });
    }
    let (text, images) = match &work.ask {
        Ask::Prompt(p) => (p.clone(), Vec::new()),
        Ask::Messages(all) => {
            let (last, earlier) = match all.split_last() {
                Some(split) => split,
                None => return invalid(&work, "has no messages"),
            };
            if let Err(e) = thread.seed(earlier) {
                return invalid(&work, e);
            }
            (last.content.clone(), last.images.clone())
        }
    };
    let mut attempt = 0;
    loop {
        let turn = if attempt == 0 {
            thread.send_with_images(&text, images.clone())
        } else {
            thread.retry()
        };
        let result = match turn {
            Ok(mut turn) => {
                let mut dropped = 0;
                let mut cancelled = false;
                loop {
                    let event = tokio::select! {
                        e = turn.next() => e,
                        _ = shared.cancel.cancelled(), if !cancelled => {
                            cancelled = true;
                            turn.cancel();
                            continue;
                        }
                    };
                    match event {
                        Some(TurnEvent::Notice(Notice::ContextTrimmed { dropped: d })) => {
                            dropped = d
                        }
                        Some(TurnEvent::Ended(end)) => {
                            break end.result.map(|c| Answer {
                                model: work.model.name.clone(),
                                text: end.text,
                                completion: c,
                                dropped,
                            })
                        }
                        Some(_) => {}
                        None => break Err(SupervisorError::ShuttingDown),
                    }
                }
            }
            Err(e) => match e.downcast::<SupervisorError>() {
                Ok(e) => Err(e),
                Err(e) => return failed(&work, ErrorKind::EngineFailed, e),
            },
        };
        match result {
            Ok(a) if a.completion.finish_reason == FinishReason::Cancelled => {
                return Outcome::Cancelled
            }
            Ok(a) => return Outcome::Answered(a),
            Err(SupervisorError::ShuttingDown) => return Outcome::Cancelled,
            Err(SupervisorError::Pool(e)) => {
                // Refused while other lines' engines hold the pool: wait for one of those lines
                // to finish (no new line starts meanwhile, so their engines become idle and can
                // be stopped), then try again. Listening starts before the count is read, so a
                // line finishing in between is not missed.
                let finished = shared.finished.notified();
                tokio::pin!(finished);
                finished.as_mut().enable();
                let waiting = shared.pool_waiting.fetch_add(1, Ordering::SeqCst) + 1;
                let others = shared.in_flight.load(Ordering::SeqCst) > waiting;
                if !others || shared.cancel.is_cancelled() {
                    // Nothing else holds the pool: the refusal stands.
                    shared.pool_waiting.fetch_sub(1, Ordering::SeqCst);
                    return failed(&work, ErrorKind::EngineFailed, e);
                }
                attempt += 1;
                let cancelled = tokio::select! {
                    _ = finished => false,
                    _ = shared.cancel.cancelled() => true,
                };
                shared.pool_waiting.fetch_sub(1, Ordering::SeqCst);
                if cancelled {
                    return Outcome::Cancelled;
                }
                continue;
            }
            Err(e) => {
                let kind = match e.code() {
                    Some(ErrorCode::ContextOverflow) => ErrorKind::ContextOverflow,
                    Some(ErrorCode::BadRequest) => ErrorKind::InvalidRequest,
                    _ => ErrorKind::EngineFailed,
                };
                return failed(&work, kind, e);
            }
        }
    }
}

fn invalid(work: &Work, what: impl std::fmt::Display) -> Outcome {
    Outcome::Failed(LineError::field(work.line_number, "messages", what))
}

fn failed(work: &Work, kind: ErrorKind, what: impl std::fmt::Display) -> Outcome {
    Outcome::Failed(LineError::new(kind, work.line_number, what))
}

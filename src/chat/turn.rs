//! One reply being generated: the stream of events a front end renders, and everything the
//! turn stores along the way.
//!
//! [`Turn::next`] drives the supervisor's reply and does the bookkeeping inline, so nothing
//! depends on a front end remembering to: the partial reply is saved at least every
//! [`PARTIAL_SAVE_INTERVAL`] while text arrives (so what a terminal showed before gemmactl was
//! killed is in the database, less at most that interval), a conversation that outgrew the
//! context loses its oldest exchanges and is sent again (said once, in a [`Notice`]), and the
//! finish — reason, token counts, timings, engine and backend — is recorded before the last
//! event is handed out. A turn dropped before its end is recorded as cancelled.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::request::RequestParts;
use super::thread::Thread;
use crate::domain::{Completion, EngineDescription, ErrorCode, FinishReason, GenerateRequest};
use crate::store::{MessageId, ReplyEnd};
use crate::supervisor::{Canceller, EngineError, Reply, SupervisorError, SupervisorEvent};

/// Longest a streamed piece of a reply stays unsaved.
pub const PARTIAL_SAVE_INTERVAL: Duration = Duration::from_millis(250);

/// Something a front end should tell the user about a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The conversation is longer than the context: its oldest `dropped` messages are no
    /// longer sent (the system prompt is kept).
    ContextTrimmed {
        /// Messages left out, in all.
        dropped: usize,
    },
    /// The message alone is longer than the context, so the model refused it. It is kept (in
    /// the history, marked refused) but left out of every later request, so the conversation
    /// goes on without it.
    Refused,
    /// The history could not be written (the reason names the database and the fix): the turn
    /// went on, but what it says is missing from the history.
    NotSaved {
        /// The store's sentence.
        reason: String,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::ContextTrimmed { dropped } => write!(
                f,
                "the conversation is longer than the context: the oldest {dropped} messages are no longer sent"
            ),
            Notice::Refused => f.write_str(
                "the message alone is longer than the context: it is kept in the history, marked refused, and left out of what is sent from now on, so the conversation goes on without it",
            ),
            Notice::NotSaved { reason } => write!(f, "not saved to history: {reason}"),
        }
    }
}

/// What a front end hears about a turn, in order, ending with exactly one `Ended`.
#[derive(Debug)]
pub enum TurnEvent {
    /// Waiting for a free decode slot.
    Queued {
        /// Requests ahead.
        position: usize,
    },
    /// The model's engine is loading (fraction 0..1).
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
    /// The engine is reading the prompt.
    PromptProgress {
        /// Prompt tokens read (cached ones included).
        done: u32,
        /// Prompt tokens in all.
        total: u32,
    },
    /// Something to tell the user.
    Notice(Notice),
    /// Reply text to show, in order.
    Token(String),
    /// The turn is over and recorded.
    Ended(TurnEnd),
}

/// How a turn ended, as recorded.
#[derive(Debug)]
pub struct TurnEnd {
    /// The reply as stored (possibly partial).
    pub text: String,
    /// The engine's report, or why the turn failed.
    pub result: Result<Completion, SupervisorError>,
    /// The engine that served it, if it reached one.
    pub engine: Option<EngineDescription>,
    /// The reply's id in the store, when history is on.
    pub reply_id: Option<MessageId>,
}

impl TurnEnd {
    /// How the reply ended: the engine's reason, or `error`.
    pub fn finish_reason(&self) -> FinishReason {
        match &self.result {
            Ok(done) => done.finish_reason,
            Err(_) => FinishReason::Error,
        }
    }

    /// When the context window cut the reply short (not the token limit), the sentence to tell
    /// the user.
    pub fn cut_by_context(&self) -> Option<String> {
        if self.finish_reason() != FinishReason::Context {
            return None;
        }
        let size = self
            .engine
            .as_ref()
            .map(|d| format!("{}-token ", d.context))
            .unwrap_or_default();
        Some(format!(
            "the reply was cut short: the conversation filled the {size}context window; raise the context (--context) or start a new conversation"
        ))
    }
}

/// One reply being generated.
pub struct Turn<'a> {
    thread: &'a mut Thread,
    reply: Reply,
    parts: RequestParts,
    reply_id: Option<MessageId>,
    /// The reply's text as generated.
    text: String,
    engine: Option<EngineDescription>,
    /// Text generated since the last save.
    dirty: bool,
    last_save: Instant,
    /// Notices wait to be shown with the turn's first text (or its end), each once.
    notices: VecDeque<Notice>,
    /// Messages the thread left out before this turn trimmed any (restored if the message
    /// being answered is refused).
    dropped_before: usize,
    /// Events decided but not yet handed out.
    outbox: VecDeque<TurnEvent>,
    cancelled: bool,
    ended: bool,
}

impl<'a> Turn<'a> {
    pub(super) fn start(thread: &'a mut Thread, reply_id: Option<MessageId>) -> Result<Turn<'a>> {
        let notices: VecDeque<Notice> = thread
            .not_saved
            .take()
            .map(|reason| Notice::NotSaved { reason })
            .into_iter()
            .collect();
        let dropped_before = thread.dropped;
        let (request, parts) = thread.request();
        let submitted = submit(thread, request);
        let reply = match submitted {
            Ok(reply) => reply,
            Err(e) => {
                // Refused before it started (queue full, model failed): the reply row says so.
                let end = ReplyEnd {
                    text: String::new(),
                    finish_reason: FinishReason::Error,
                    usage: None,
                    timings: None,
                    engine: None,
                    backend: None,
                    error: Some(e.to_string()),
                };
                if let (Some(mut store), Some(id)) = (thread.service.store(), reply_id) {
                    let _ = store.finish_reply(id, &end);
                }
                return Err(e.into());
            }
        };
        Ok(Turn {
            thread,
            reply,
            parts,
            reply_id,
            text: String::new(),
            engine: None,
            dirty: false,
            last_save: Instant::now(),
            notices,
            dropped_before,
            outbox: VecDeque::new(),
            cancelled: false,
            ended: false,
        })
    }

    /// Stops the reply: queued, it leaves the queue; running, the engine stops at its next
    /// decode step. The turn then ends as `cancelled`, keeping what was written.
    pub fn cancel(&mut self) {
        self.cancelled = true;
        self.reply.cancel();
    }

    /// A handle that cancels this turn from elsewhere (a signal handler, a closed client).
    pub fn canceller(&self) -> Canceller {
        self.reply.canceller()
    }

    /// The next event; `None` after `Ended`.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        if let Some(event) = self.outbox.pop_front() {
            return Some(event);
        }
        if self.ended {
            return None;
        }
        loop {
            let event = if self.dirty {
                let deadline = self.last_save + PARTIAL_SAVE_INTERVAL;
                tokio::select! {
                    e = self.reply.next() => e,
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        self.save_partial();
                        continue;
                    }
                }
            } else {
                self.reply.next().await
            };
            match event {
                Some(SupervisorEvent::Queued { position }) => {
                    return Some(TurnEvent::Queued { position })
                }
                Some(SupervisorEvent::Loading { progress }) => {
                    return Some(TurnEvent::Loading { progress })
                }
                Some(SupervisorEvent::Reloading { reason }) => {
                    return Some(TurnEvent::Reloading { reason })
                }
                Some(SupervisorEvent::Started(d)) => {
                    self.engine = Some(d.clone());
                    return Some(TurnEvent::Started(d));
                }
                Some(SupervisorEvent::PromptProgress { done, total }) => {
                    return Some(TurnEvent::PromptProgress { done, total })
                }
                Some(SupervisorEvent::Token(piece)) => {
                    let shown = self.push_text(&piece);
                    if !shown.is_empty() {
                        return Some(self.after_notice(TurnEvent::Token(shown)));
                    }
                }
                Some(SupervisorEvent::Finished(done)) => {
                    let end = self.end(Ok(done));
                    return Some(self.after_notice(end));
                }
                Some(SupervisorEvent::Failed(e)) => {
                    let e = cannot_see(e, &self.thread.model().name);
                    // The images of the message being answered were refused: it stays stored and
                    // shown, marked refused, and is left out of later requests, or every later
                    // turn would replay them and be refused too. The error sentence says what
                    // happened; no second line. (Images of older messages, seen by a model that
                    // could, keep the conversation on such a model.)
                    if e.code() == Some(ErrorCode::NoVision)
                        && self.text.is_empty()
                        && self.thread.last_shows_images()
                    {
                        self.thread.refuse_last(self.dropped_before);
                    }
                    if self.should_trim(&e) {
                        if self.thread.drop_oldest() {
                            let (request, parts) = self.thread.request();
                            match submit(self.thread, request) {
                                Ok(reply) => {
                                    self.reply = reply;
                                    self.parts = parts;
                                    self.notices
                                        .retain(|n| !matches!(n, Notice::ContextTrimmed { .. }));
                                    self.notices.push_back(Notice::ContextTrimmed {
                                        dropped: self.thread.dropped,
                                    });
                                    continue;
                                }
                                Err(e) => {
                                    let end = self.end(Err(e));
                                    return Some(self.after_notice(end));
                                }
                            }
                        }
                        // Only the message being answered is left, and alone it is too long:
                        // keep it out of the turns to come, or it would fail every one of them.
                        self.notices
                            .retain(|n| !matches!(n, Notice::ContextTrimmed { .. }));
                        if self.thread.refuse_last(self.dropped_before) {
                            self.notices.push_back(Notice::Refused);
                        }
                    }
                    let end = self.end(Err(e));
                    return Some(self.after_notice(end));
                }
                // The supervisor ends every reply with one last event unless it is going away.
                None => return Some(self.end(Err(SupervisorError::ShuttingDown))),
            }
        }
    }

    /// `event`, preceded by the pending notices if there are any (each said once per turn).
    fn after_notice(&mut self, event: TurnEvent) -> TurnEvent {
        match self.notices.pop_front() {
            Some(notice) => {
                self.outbox
                    .extend(self.notices.drain(..).map(TurnEvent::Notice));
                self.outbox.push_back(event);
                TurnEvent::Notice(notice)
            }
            None => event,
        }
    }

    /// Adds a generated piece; returns what to show of it. A transcript reply's leading
    /// whitespace (after `Assistant:`) is not the model's text.
    fn push_text(&mut self, piece: &str) -> String {
        let shown = if self.parts.transcript && self.text.trim().is_empty() {
            piece.trim_start().to_string()
        } else {
            piece.to_string()
        };
        self.text.push_str(piece);
        self.dirty = true;
        if self.last_save.elapsed() >= PARTIAL_SAVE_INTERVAL {
            self.save_partial();
        }
        shown
    }

    fn save_partial(&mut self) {
        if let (Some(mut store), Some(id)) = (self.thread.service.store(), self.reply_id) {
            // Best effort while streaming; the finish is recorded (and reported) at the end.
            let _ = store.save_partial_reply(id, &self.tidy());
        }
        self.dirty = false;
        self.last_save = Instant::now();
    }

    /// A conversation too long for the context, with nothing generated yet, is trimmed and sent
    /// again (unless the user stopped it).
    fn should_trim(&self, e: &SupervisorError) -> bool {
        !self.cancelled && self.text.is_empty() && e.code() == Some(ErrorCode::ContextOverflow)
    }

    /// The reply as stored and shown in full.
    fn tidy(&self) -> String {
        if self.parts.transcript {
            self.text.trim().to_string()
        } else {
            self.text.clone()
        }
    }

    /// Records how the turn ended and adds the reply to the thread's branch.
    fn end(&mut self, result: Result<Completion, SupervisorError>) -> TurnEvent {
        self.ended = true;
        let text = self.tidy();
        let (finish_reason, usage, timings, error) = match &result {
            Ok(done) => (
                done.finish_reason,
                Some(done.usage.clone()),
                Some(done.timings.clone()),
                None,
            ),
            Err(e) => (FinishReason::Error, None, None, Some(e.to_string())),
        };
        let engine = self.engine.as_ref();
        let end = ReplyEnd {
            text: text.clone(),
            finish_reason,
            usage,
            timings,
            engine: engine.map(|d| d.engine.to_string()),
            backend: engine.map(EngineDescription::backend_with_fallback),
            error,
        };
        let stored = match (self.thread.service.store(), self.reply_id) {
            (Some(mut store), Some(id)) => store.finish_reply(id, &end).map_err(|e| e.to_string()),
            _ => Ok(()),
        };
        if let Err(reason) = stored {
            tracing::warn!("the reply could not be saved to history: {reason}");
            self.notices.push_back(Notice::NotSaved { reason });
        }
        if matches!(&result, Ok(done) if done.finish_reason != FinishReason::Cancelled) {
            self.thread.accept_last();
        }
        if !(text.is_empty() && finish_reason == FinishReason::Error) {
            self.thread.push_reply(self.reply_id, text.clone());
        }
        TurnEvent::Ended(TurnEnd {
            text,
            result,
            engine: self.engine.clone(),
            reply_id: self.reply_id,
        })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.ended {
            // Abandoned mid-way (the front end returned early): stop the engine's work and keep
            // what was written, marked cancelled.
            self.reply.cancel();
            let _ = self.end(Ok(Completion::cancelled_before_start()));
        }
    }
}

/// An engine's `no_vision` as the user reads it: which model cannot see, and what to do. The
/// engine only knows its file; the turn knows the name the user registered it under.
fn cannot_see(e: SupervisorError, model: &str) -> SupervisorError {
    if e.code() != Some(ErrorCode::NoVision) {
        return e;
    }
    SupervisorError::Engine(EngineError::Request {
        code: ErrorCode::NoVision,
        message: crate::domain::cannot_see(model),
    })
}

fn submit(thread: &Thread, request: GenerateRequest) -> Result<Reply, SupervisorError> {
    thread.service.generator().submit(thread.model(), request)
}

//! One tool call's turn, rendered for an MCP client: progress notifications while the model
//! loads, waits, reads the prompt and writes, and the call's cancellation passed on to the turn.
//!
//! MCP has no token streaming; `notifications/progress` is the one channel for partial output,
//! and the one thing that keeps a client's request timer from running out on a long call. So a
//! call with a progress token hears something at least every [`HEARTBEAT`], even when nothing
//! new came: the loading percentage, its place in the queue, or just a higher `progress`.
//! New text is sent as the notification's `message` (batched every [`FLUSH_EVERY`], so 32
//! concurrent calls do not mean one notification per token each); `progress` counts tokens and
//! `total` is the call's `max_tokens`. The full text is always in the result.
//!
//! `progress` must grow with every notification. Before the first token it stays below 1 (the
//! load fraction, then the share of the prompt read); from then on it is the token count; a
//! heartbeat adds a ten-thousandth to the last value.
//!
//! Cancellation (`notifications/cancelled`, or the client going away) cancels the turn: the
//! engine stops at its next decode step and frees its slot, the turn stores what was written as
//! cancelled, and nothing more is sent for the call.

use std::time::{Duration, Instant};

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RequestContext};
use rmcp::RoleServer;
use tokio_util::sync::CancellationToken;

use crate::chat::{Notice, Turn, TurnEnd, TurnEvent};

/// Longest silence towards a client waiting with a progress token. Clients that reset their
/// time-out on progress time out after tens of seconds at the least; the issue asks for 2 s.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often new text is sent: often enough to watch, rarely enough to batch tokens.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How long a cancelled turn may take to report its end before it is dropped (and so recorded
/// as cancelled with what it had).
const STOP_WAIT: Duration = Duration::from_secs(5);
/// What a heartbeat adds to `progress`.
const STEP: f64 = 1e-4;

/// What a call is waiting for before its text, or that it is writing. Each phase's first
/// status is sent at once; further statuses of the same phase wait for a tick.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Queued,
    Loading,
    Reloading,
    /// The engine reads the prompt.
    Prefill,
    Notice,
    Decode,
}

/// The parts of a tool call its rendering needs.
pub(super) struct Call {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
    cancelled: CancellationToken,
    /// The client's name (`clientInfo.name`), for the history.
    pub(super) client: Option<String>,
}

impl Call {
    /// The call `context` belongs to.
    pub(super) fn new(context: &RequestContext<RoleServer>) -> Call {
        Call {
            peer: context.peer.clone(),
            token: context.meta.get_progress_token(),
            cancelled: context.ct.clone(),
            client: context.client_info().map(|i| i.name),
        }
    }

    /// Cancelled by the client (or its going away).
    pub(super) fn cancellation(&self) -> &CancellationToken {
        &self.cancelled
    }
}

/// Why a rendered turn gave no result.
#[derive(Debug)]
pub(super) enum Stopped {
    /// The client cancelled the call: nothing is to be sent.
    Cancelled,
}

/// The `progress` values of one call: each higher than the one before.
#[derive(Debug, Default)]
struct Values {
    last: Option<f64>,
}

impl Values {
    /// The value to send for `natural` (where the call really is).
    fn next(&mut self, natural: f64) -> f64 {
        let value = match self.last {
            None => natural,
            Some(last) => natural.max(last + STEP),
        };
        self.last = Some(value);
        value
    }
}

/// One notification: the `progress` value and the message.
#[derive(Debug, Clone, PartialEq)]
struct Note {
    progress: f64,
    message: Option<String>,
}

/// What a call's notifications say and when, apart from sending them: the turn's events go in,
/// notes come out. Kept apart from [`Reporter`] so the rules can be tested without a client.
#[derive(Debug)]
struct Plan {
    total: f64,
    tokens: u32,
    /// Text generated since the last notification.
    pending: String,
    /// What the call waits for, before its first token.
    status: Option<String>,
    status_changed: bool,
    /// The phase `status` belongs to; a new phase is due at once (see [`Plan::phase_note`]).
    phase: Option<Phase>,
    phase_began: bool,
    /// `progress` of the current phase before the first token (below 1).
    before_text: f64,
    values: Values,
    last_sent: Option<Instant>,
}

impl Plan {
    fn new(total: u32) -> Plan {
        Plan {
            total: f64::from(total),
            tokens: 0,
            pending: String::new(),
            status: None,
            status_changed: false,
            phase: None,
            phase_began: false,
            before_text: 0.0,
            values: Values::default(),
            last_sent: None,
        }
    }

    /// The model loads (fraction 0..1).
    fn loading(&mut self, model: &str, fraction: f32) {
        let pct = (fraction.clamp(0.0, 1.0) * 100.0).round();
        self.set_status(
            Phase::Loading,
            format!("loading model {model}: {pct}%"),
            f64::from(fraction.clamp(0.0, 1.0)) * 0.5,
        );
    }

    fn set_status(&mut self, phase: Phase, status: String, value: f64) {
        // Every notice is news of its own (a trimmed context, a refused message).
        if self.phase != Some(phase) || phase == Phase::Notice {
            self.phase = Some(phase);
            self.phase_began = true;
        }
        if self.status.as_deref() != Some(&status) {
            self.status = Some(status);
            self.status_changed = true;
        }
        self.before_text = value.min(0.99);
    }

    /// An event of the turn.
    fn event(&mut self, model: &str, event: &TurnEvent) {
        match event {
            TurnEvent::Queued { position } => self.set_status(
                Phase::Queued,
                format!("waiting for a free decode slot: {position} request(s) ahead"),
                self.before_text,
            ),
            TurnEvent::Loading { progress } => self.loading(model, *progress),
            TurnEvent::Reloading { reason } => {
                self.set_status(Phase::Reloading, reason.clone(), self.before_text)
            }
            TurnEvent::Started(_) => self.set_status(
                Phase::Prefill,
                format!("{model} is reading the prompt"),
                0.5,
            ),
            TurnEvent::PromptProgress { done, total } => self.set_status(
                Phase::Prefill,
                format!("{model} is reading the prompt: {done} of {total} tokens"),
                0.5 + 0.49 * f64::from(*done) / f64::from((*total).max(1)),
            ),
            TurnEvent::Notice(Notice::ContextTrimmed { dropped }) => self.set_status(
                Phase::Notice,
                format!("the conversation is longer than the context: its oldest {dropped} messages are left out"),
                self.before_text,
            ),
            // A refused message or history that cannot be written: the client sees the sentence.
            TurnEvent::Notice(notice) => {
                self.set_status(Phase::Notice, notice.to_string(), self.before_text)
            }
            TurnEvent::Token(text) => {
                self.tokens += 1;
                self.pending.push_str(text);
                self.status = None;
                self.phase = Some(Phase::Decode);
                self.phase_began = false;
            }
            TurnEvent::Ended(_) => {}
        }
    }

    /// The status of a phase that has just begun, due without waiting for the next tick: a
    /// load or a prefill can be over within one [`FLUSH_EVERY`], and the client should still
    /// hear that it happened (a cold start is why a first call is slow). Updates within a
    /// phase (the load's percentage) are still batched by [`Plan::due`].
    fn phase_note(&mut self, now: Instant) -> Option<Note> {
        if !std::mem::take(&mut self.phase_began) {
            return None;
        }
        self.status_changed = false;
        let status = self.status.clone();
        Some(self.note(now, self.before_text, status))
    }

    /// What is due at a tick: new text, a changed status, or a heartbeat.
    fn due(&mut self, now: Instant) -> Option<Note> {
        let natural = if self.tokens > 0 {
            f64::from(self.tokens)
        } else {
            self.before_text
        };
        if !self.pending.is_empty() {
            let text = std::mem::take(&mut self.pending);
            Some(self.note(now, natural, Some(text)))
        } else if self.status_changed {
            self.status_changed = false;
            let status = self.status.clone();
            Some(self.note(now, natural, status))
        } else if self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= HEARTBEAT)
        {
            let status = self.status.clone();
            Some(self.note(now, natural, status))
        } else {
            None
        }
    }

    fn note(&mut self, now: Instant, natural: f64, message: Option<String>) -> Note {
        self.last_sent = Some(now);
        Note {
            progress: self.values.next(natural),
            message,
        }
    }
}

/// Sends a call's progress notifications, as its [`Plan`] says.
pub(super) struct Reporter<'a> {
    call: &'a Call,
    plan: Plan,
    silent: bool,
}

impl<'a> Reporter<'a> {
    /// Progress of `call` towards `total` tokens.
    pub(super) fn new(call: &'a Call, total: u32) -> Reporter<'a> {
        Reporter {
            call,
            plan: Plan::new(total),
            silent: call.token.is_none(),
        }
    }

    /// The model loads (fraction 0..1).
    pub(super) fn loading(&mut self, model: &str, fraction: f32) {
        self.plan.loading(model, fraction);
    }

    /// An event of the turn.
    fn event(&mut self, model: &str, event: &TurnEvent) {
        self.plan.event(model, event);
    }

    /// Sends the status of a phase that has just begun (see [`Plan::phase_note`]).
    pub(super) async fn flush_phase(&mut self) {
        if self.silent {
            return;
        }
        if let Some(note) = self.plan.phase_note(Instant::now()) {
            self.send(note).await;
        }
    }

    /// Sends what is due: new text, a changed status, or a heartbeat.
    pub(super) async fn tick(&mut self) {
        if self.silent {
            return;
        }
        if let Some(note) = self.plan.due(Instant::now()) {
            self.send(note).await;
        }
    }

    async fn send(&mut self, note: Note) {
        let Some(token) = self.call.token.clone() else {
            return;
        };
        let mut param =
            ProgressNotificationParam::new(token, note.progress).with_total(self.plan.total);
        if let Some(m) = note.message {
            param = param.with_message(m);
        }
        if let Err(e) = self.call.peer.notify_progress(param).await {
            // The client is gone; the call's cancellation follows.
            tracing::debug!("progress notification not sent: {e}");
            self.silent = true;
        }
    }

    /// Nothing more is sent (the call was cancelled).
    pub(super) fn silence(&mut self) {
        self.silent = true;
    }
}

/// Renders `turn` for `call` until it ends, and returns how it ended. `cut` sees the text so
/// far after each token and may end the turn early (where `complete_code` found the end of
/// the block): the engine stops and the turn ends as cancelled, with the text it had.
pub(super) async fn render(
    turn: &mut Turn<'_>,
    call: &Call,
    model: &str,
    max_tokens: u32,
    mut cut: impl FnMut(&str) -> bool,
) -> Result<(TurnEnd, bool), Stopped> {
    let mut reporter = Reporter::new(call, max_tokens);
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut text = String::new();
    let mut was_cut = false;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = call.cancelled.cancelled(), if stop_deadline.is_none() => {
                turn.cancel();
                reporter.silence();
                stop_deadline = Some(tokio::time::Instant::now() + STOP_WAIT);
            }
            _ = sleep_until(stop_deadline), if stop_deadline.is_some() => {
                // Dropping the turn (by returning) records it as cancelled.
                return Err(Stopped::Cancelled);
            }
            event = turn.next() => {
                let Some(event) = event else {
                    return Err(Stopped::Cancelled);
                };
                if let TurnEvent::Ended(end) = event {
                    if stop_deadline.is_some() {
                        return Err(Stopped::Cancelled);
                    }
                    reporter.tick().await;
                    return Ok((end, was_cut));
                }
                if let TurnEvent::Token(piece) = &event {
                    text.push_str(piece);
                    if !was_cut && cut(&text) {
                        was_cut = true;
                        turn.cancel();
                    }
                }
                reporter.event(model, &event);
                reporter.flush_phase().await;
            }
            _ = ticker.tick() => reporter.tick().await,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A load, a prefill and a notice that all pass between two ticks, then the first token:
    /// each is still told (the first status of each phase is due at once), the load's own
    /// percentages wait for a tick, and `progress` grows through all of it.
    #[test]
    fn a_phase_over_before_the_next_tick_is_still_told() {
        let now = Instant::now();
        let mut plan = Plan::new(16);
        let events = [
            TurnEvent::Loading { progress: 0.0 },
            TurnEvent::Loading { progress: 0.4 },
            TurnEvent::Loading { progress: 1.0 },
            TurnEvent::PromptProgress { done: 1, total: 5 },
            TurnEvent::PromptProgress { done: 5, total: 5 },
            TurnEvent::Notice(Notice::ContextTrimmed { dropped: 2 }),
            TurnEvent::Notice(Notice::ContextTrimmed { dropped: 3 }),
            TurnEvent::Token("Hi".into()),
        ];
        let mut notes = Vec::new();
        for event in &events {
            plan.event("m", event);
            notes.extend(plan.phase_note(now));
        }
        let messages: Vec<&str> = notes.iter().filter_map(|n| n.message.as_deref()).collect();
        assert_eq!(
            messages,
            [
                "loading model m: 0%",
                "m is reading the prompt: 1 of 5 tokens",
                "the conversation is longer than the context: its oldest 2 messages are left out",
                "the conversation is longer than the context: its oldest 3 messages are left out",
            ]
        );
        // The tick after them sends the text, at the token count.
        let text = plan.due(now).unwrap();
        assert_eq!(text.message.as_deref(), Some("Hi"));
        assert_eq!(text.progress, 1.0);
        notes.push(text);
        assert!(
            notes.windows(2).all(|w| w[1].progress > w[0].progress),
            "{notes:?}"
        );
        assert!(notes.iter().take(4).all(|n| n.progress < 1.0), "{notes:?}");
        // Nothing more is due until the heartbeat.
        assert_eq!(plan.due(now + FLUSH_EVERY), None);
        assert!(plan.due(now + HEARTBEAT).is_some());
    }

    /// Without a phase change, status updates are batched: a tick sends only the latest.
    #[test]
    fn updates_within_a_phase_wait_for_the_tick() {
        let now = Instant::now();
        let mut plan = Plan::new(16);
        plan.event("m", &TurnEvent::Loading { progress: 0.0 });
        assert!(plan.phase_note(now).is_some());
        for p in [0.2, 0.5, 0.7] {
            plan.event("m", &TurnEvent::Loading { progress: p });
            assert_eq!(plan.phase_note(now), None);
        }
        let note = plan.due(now).unwrap();
        assert_eq!(note.message.as_deref(), Some("loading model m: 70%"));
        assert!((note.progress - 0.35).abs() < 1e-6, "{note:?}");
    }

    #[test]
    fn progress_grows_with_every_notification() {
        let mut v = Values::default();
        // Loading, a heartbeat while nothing moves, a phase that starts lower, then tokens.
        let sent: Vec<f64> = [0.2, 0.2, 0.1, 0.5, 1.0, 1.0, 2.0]
            .into_iter()
            .map(|n| v.next(n))
            .collect();
        assert!(sent.windows(2).all(|w| w[1] > w[0]), "{sent:?}");
        assert_eq!(sent[0], 0.2);
        assert_eq!(sent[4], 1.0);
        assert_eq!(sent[6], 2.0);
    }
}

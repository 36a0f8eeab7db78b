//! What an attached front end and `gemmactl serve` say to each other: one JSON object per line
//! (`application/x-ndjson`) on the attach endpoints.
//!
//! It is the supervisor's event stream put on the wire, so an attached `run` or `chat` renders
//! exactly what it would render in-process — queue position, load progress, the engine that
//! served, tokens, the finish with its counts and timings — and the conversation stays the
//! front end's to store. It is gemmactl's own and versioned with gemmactl (both sides are the
//! same binary); the OpenAI-compatible endpoints are for everyone else.

use serde::{Deserialize, Serialize};

use crate::domain::{
    Completion, EngineDescription, ErrorCode, GenerateRequest, Message, PromptFormat,
    SamplingParams,
};
use crate::models::ModelEntry;
use crate::supervisor::EngineError;
use crate::supervisor::{SupervisorError, SupervisorEvent};

/// Paths of the attach endpoints.
pub const GENERATE_PATH: &str = "/gemmactl/v1/generate";
/// Loads a model ahead of use, streaming its progress.
pub const LOAD_PATH: &str = "/gemmactl/v1/load";
/// Answers when the token is right: how a front end checks a record before attaching.
pub const HELLO_PATH: &str = "/gemmactl/v1/hello";

/// `POST` [`GENERATE_PATH`]: one request for one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateBody {
    /// The model, as the front end resolved it.
    pub model: ModelEntry,
    /// The request's id (the front end's).
    pub id: String,
    /// The whole conversation.
    pub messages: Vec<Message>,
    /// The engine session to reuse.
    pub session: Option<String>,
    /// How the conversation becomes a prompt.
    pub prompt: PromptFormat,
    /// How to sample.
    pub params: SamplingParams,
}

impl GenerateBody {
    /// The body for `request` to `model`.
    pub fn new(model: &ModelEntry, request: GenerateRequest) -> GenerateBody {
        GenerateBody {
            model: model.clone(),
            id: request.id,
            messages: request.messages,
            session: request.session,
            prompt: request.prompt,
            params: request.params,
        }
    }

    /// The request, with the id the server gives it.
    pub fn into_request(self, id: String) -> (ModelEntry, GenerateRequest) {
        (
            self.model,
            GenerateRequest {
                id,
                messages: self.messages,
                // Sessions are per front end process; the server's engines keep them apart.
                session: self.session,
                prompt: self.prompt,
                params: self.params,
            },
        )
    }
}

/// `POST` [`LOAD_PATH`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadBody {
    /// The model to load.
    pub model: ModelEntry,
}

/// A failure, as the server put it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireError {
    /// The sentence the front end shows.
    pub message: String,
    /// The engine's failure kind, when it said one (a context overflow makes the turn trim).
    pub code: Option<ErrorCode>,
}

impl WireError {
    /// `e` on the wire.
    pub fn from_error(e: &SupervisorError) -> WireError {
        WireError {
            message: e.to_string(),
            code: e.code(),
        }
    }

    /// Back into the supervisor's error type, keeping the sentence and the kind.
    pub fn into_error(self) -> SupervisorError {
        SupervisorError::Engine(EngineError::Request {
            code: self.code.unwrap_or(ErrorCode::Unavailable),
            message: self.message,
        })
    }
}

/// One line of an attach stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireEvent {
    /// Waiting for a decode slot.
    Queued {
        /// Requests ahead.
        position: usize,
    },
    /// The engine is loading.
    Loading {
        /// Fraction from 0 to 1.
        progress: f32,
    },
    /// The engine is being restarted or reloaded.
    Reloading {
        /// Why.
        reason: String,
    },
    /// The request reached this engine.
    Started(Box<EngineDescription>),
    /// Prompt processing advanced.
    PromptProgress {
        /// Tokens read.
        done: u32,
        /// Tokens in all.
        total: u32,
    },
    /// Generated text.
    Token(String),
    /// The reply ended.
    Finished(Completion),
    /// The request failed.
    Failed(WireError),
    /// A load asked for with [`LOAD_PATH`] finished.
    Loaded(Box<EngineDescription>),
}

impl WireEvent {
    /// A supervisor event on the wire.
    pub fn from_event(event: SupervisorEvent) -> WireEvent {
        match event {
            SupervisorEvent::Queued { position } => WireEvent::Queued { position },
            SupervisorEvent::Loading { progress } => WireEvent::Loading { progress },
            SupervisorEvent::Reloading { reason } => WireEvent::Reloading { reason },
            SupervisorEvent::Started(d) => WireEvent::Started(Box::new(d)),
            SupervisorEvent::PromptProgress { done, total } => {
                WireEvent::PromptProgress { done, total }
            }
            SupervisorEvent::Token(t) => WireEvent::Token(t),
            SupervisorEvent::Finished(c) => WireEvent::Finished(c),
            SupervisorEvent::Failed(e) => WireEvent::Failed(WireError::from_error(&e)),
        }
    }

    /// Back into a supervisor event (`Loaded` is not one: `None`).
    pub fn into_event(self) -> Option<SupervisorEvent> {
        Some(match self {
            WireEvent::Queued { position } => SupervisorEvent::Queued { position },
            WireEvent::Loading { progress } => SupervisorEvent::Loading { progress },
            WireEvent::Reloading { reason } => SupervisorEvent::Reloading { reason },
            WireEvent::Started(d) => SupervisorEvent::Started(*d),
            WireEvent::PromptProgress { done, total } => {
                SupervisorEvent::PromptProgress { done, total }
            }
            WireEvent::Token(t) => SupervisorEvent::Token(t),
            WireEvent::Finished(c) => SupervisorEvent::Finished(c),
            WireEvent::Failed(e) => SupervisorEvent::Failed(e.into_error()),
            WireEvent::Loaded(_) => return None,
        })
    }

    /// The event as one line of the stream.
    pub fn line(&self) -> String {
        let mut text = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"failed":{{"message":"gemmactl could not encode an event: {e}","code":null}}}}"#)
        });
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FinishReason;

    #[test]
    fn events_survive_the_wire_with_their_kind() {
        let overflow = SupervisorError::Engine(EngineError::Request {
            code: ErrorCode::ContextOverflow,
            message: "too long".into(),
        });
        let line = WireEvent::from_event(SupervisorEvent::Failed(overflow)).line();
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let back: WireEvent = serde_json::from_str(&line).unwrap();
        match back.into_event() {
            Some(SupervisorEvent::Failed(e)) => {
                assert_eq!(e.code(), Some(ErrorCode::ContextOverflow));
                assert_eq!(e.to_string(), "too long");
            }
            other => panic!("{other:?}"),
        }
        let done = WireEvent::from_event(SupervisorEvent::Finished(
            Completion::cancelled_before_start(),
        ));
        let back: WireEvent = serde_json::from_str(&done.line()).unwrap();
        assert!(matches!(
            back.into_event(),
            Some(SupervisorEvent::Finished(c)) if c.finish_reason == FinishReason::Cancelled
        ));
    }
}

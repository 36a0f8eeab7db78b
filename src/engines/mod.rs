//! The engine interface: the one contract every inference engine meets, whatever runs inside.
//!
//! A request carries the whole conversation (the caller owns the history; an engine's session is
//! only a cache), so replaying a conversation into another engine is just sending it the same
//! request. Replies arrive as a stream of [`ReplyEvent`]s ending in exactly one `Finished` or
//! `Failed`. The supervisor is the only user of this trait; front ends go through it.
//!
//! Adapters speak gemmactl's domain types (`crate::domain`) and map them onto their engine's own
//! wire format: `gemma_engine` onto the engine protocol crate, `gemma_cpp` onto gemma.cpp's
//! terminal protocol, `remote` onto the OpenAI-compatible HTTP API of a server elsewhere. Each takes a plain launch spec; finding binaries and reading model files is
//! the supervisor's launcher's job.

pub mod child;
pub mod gemma_cpp;
pub mod gemma_engine;
pub mod remote;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::domain::{Completion, EngineDescription, EngineKind, ErrorCode, GenerateRequest};
pub use child::ExitInfo;

/// One step of a reply.
#[derive(Debug)]
pub enum ReplyEvent {
    /// Prompt processing (prefill) advanced: `done` of `total` prompt tokens are in the cache.
    PromptProgress {
        /// Prompt tokens read so far (cached ones included).
        done: u32,
        /// Prompt tokens in all.
        total: u32,
    },
    /// Generated text, in order.
    Token(String),
    /// The last event of a reply that ended normally (possibly cut short).
    Finished(Completion),
    /// The last event of a reply that failed.
    Failed(EngineError),
}

/// The events of one request.
pub type ReplyStream = mpsc::UnboundedReceiver<ReplyEvent>;

/// Everything that can go wrong with an engine, typed so callers can branch on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The engine could not load the model.
    #[error("{message}")]
    Load {
        /// What kind of failure.
        code: ErrorCode,
        /// One sentence naming the thing and the fix.
        message: String,
        /// The file involved.
        path: Option<String>,
    },
    /// The engine refused or failed one request; it keeps serving others.
    #[error("{message}")]
    Request {
        /// What kind of failure.
        code: ErrorCode,
        /// One sentence naming the thing and the fix.
        message: String,
    },
    /// The engine process ended while it was needed.
    #[error("{}", died_message(.engine, .exit, .stderr_tail))]
    Died {
        /// Which engine.
        engine: EngineKind,
        /// How it ended.
        exit: ExitInfo,
        /// The last lines it wrote to stderr.
        stderr_tail: Vec<String>,
    },
    /// The engine's program could not be started.
    #[error("cannot start {}: {reason}", .binary.display())]
    Spawn {
        /// The program.
        binary: std::path::PathBuf,
        /// Why (the operating system's words, or what is missing).
        reason: String,
    },
    /// The engine did not report ready in time.
    #[error("the engine did not finish loading {model} within {secs} s: raise the load timeout (GEMMACTL_LOAD_TIMEOUT or engine.load_timeout_secs) or check the machine's load")]
    LoadTimeout {
        /// The model file.
        model: String,
        /// The limit, in seconds.
        secs: u64,
    },
    /// The engine wrote something that is not the protocol.
    #[error("the engine broke the protocol: {0}")]
    Protocol(String),
    /// The engine was stopped on purpose while the request was in flight.
    #[error("the engine was stopped before the reply finished")]
    Stopped,
}

impl EngineError {
    /// The error on one line, with the engine's own last words when it died (for a status line
    /// or a fallback reason), at most 400 characters.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        match self {
            EngineError::Died {
                engine,
                exit,
                stderr_tail,
            } => {
                let mut first = format!("{engine} {exit}");
                if let Some(cause) = exit.cause() {
                    first.push_str(": ");
                    first.push_str(cause);
                }
                parts.push(first);
                let shown = &stderr_tail[stderr_tail.len().saturating_sub(5)..];
                parts.extend(shown.iter().map(|l| l.trim().to_string()));
            }
            other => parts.extend(other.to_string().lines().map(|l| l.trim().to_string())),
        }
        let mut line = parts
            .into_iter()
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        if line.chars().count() > 400 {
            line = line.chars().take(400).collect::<String>() + "…";
        }
        line
    }

    /// The failure's kind, where the engine said one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            EngineError::Load { code, .. } | EngineError::Request { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn died_message(engine: &EngineKind, exit: &ExitInfo, tail: &[String]) -> String {
    let mut msg = format!("{engine} {exit}");
    if let Some(cause) = exit.cause() {
        msg.push_str(": ");
        msg.push_str(cause);
    }
    msg.push_str(&stderr_excerpt(tail));
    msg
}

/// The last few lines an engine wrote to stderr, indented under an error sentence.
pub fn stderr_excerpt(tail: &[String]) -> String {
    let shown = &tail[tail.len().saturating_sub(5)..];
    let mut text = String::new();
    if !shown.is_empty() {
        text.push_str("\n  last lines of its stderr:");
        for line in shown {
            text.push_str("\n    ");
            text.push_str(line);
        }
    }
    text
}

/// An engine process serving one model.
pub trait Engine: Send + Sync {
    /// What runs, as of now (gemma.cpp's pid changes when a cancel restarts its process).
    fn describe(&self) -> EngineDescription;
    /// Starts a request; its events arrive on the returned stream.
    fn generate(&self, request: GenerateRequest) -> Result<ReplyStream, EngineError>;
    /// Asks for a request to stop; it then finishes with `cancelled`.
    fn cancel(&self, id: &str);
    /// `Some` once the process has ended.
    fn exit_status(&self) -> Option<ExitInfo>;
    /// Stops the process: gracefully, then by force after `grace`.
    fn stop(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_death_becomes_one_short_line_with_the_engine_s_last_words() {
        let e = EngineError::Died {
            engine: EngineKind::GemmaEngine,
            exit: ExitInfo {
                code: Some(1),
                signal: None,
            },
            stderr_tail: vec!["loading".into(), "  CUDA error: out of memory ".into()],
        };
        assert_eq!(
            e.summary(),
            "gemma-engine exited with status 1 | loading | CUDA error: out of memory"
        );
        let long = EngineError::Protocol("x".repeat(1000));
        assert!(long.summary().chars().count() <= 401);
    }
}

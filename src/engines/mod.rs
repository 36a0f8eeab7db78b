//! The engine interface: the one contract every inference engine meets, whatever runs inside.
//!
//! A request carries the whole conversation (the caller owns the history; an engine's session is
//! only a cache), so replaying a conversation into another engine is just sending it the same
//! request. Replies arrive as a stream of [`ReplyEvent`]s ending in exactly one `Finished` or
//! `Failed`. The supervisor is the only user of this trait; front ends go through it.

pub mod child;
pub mod gemma_cpp;
pub mod gemma_engine;
#[path = "../../engine/src/protocol.rs"]
#[allow(dead_code)]
pub mod protocol;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

pub use child::ExitInfo;
pub use protocol::{
    Device, ErrorCode, FinishReason, Message, ModelFacts, PromptFormat, Role, SamplingParams,
    Timings, Usage,
};

/// What a caller asks an engine for.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Unique among the requests in flight on one engine.
    pub id: String,
    pub messages: Vec<Message>,
    /// Names the conversation so an engine can keep its cache between turns.
    pub session: Option<String>,
    pub prompt: PromptFormat,
    pub params: SamplingParams,
}

impl GenerateRequest {
    /// One user message continued as plain text, greedily, for at most `max_tokens`: the
    /// reproducible request benchmarks and tests send.
    pub fn greedy_completion(id: String, text: &str, max_tokens: u32) -> GenerateRequest {
        GenerateRequest {
            id,
            messages: vec![Message {
                role: Role::User,
                content: text.to_string(),
            }],
            session: None,
            prompt: PromptFormat::Completion,
            params: SamplingParams {
                max_tokens: Some(max_tokens),
                temperature: 0.0,
                ..SamplingParams::default()
            },
        }
    }
}

/// How a reply ended.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub timings: Timings,
}

/// One step of a reply.
#[derive(Debug)]
pub enum ReplyEvent {
    Token(String),
    Finished(Completion),
    Failed(EngineError),
}

pub type ReplyStream = mpsc::UnboundedReceiver<ReplyEvent>;

/// Which program an engine is.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EngineName {
    GemmaEngine,
    /// Google's gemma.cpp, driven through its interactive terminal protocol.
    GemmaCpp,
}

impl std::fmt::Display for EngineName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineName::GemmaEngine => "gemma-engine",
            EngineName::GemmaCpp => "gemma.cpp",
        })
    }
}

/// What runs where: reported by `run --stats`, `--json` and later `ps`.
#[derive(Debug, Clone, Serialize)]
pub struct EngineDescription {
    pub engine: EngineName,
    pub pid: Option<u32>,
    pub model: ModelFacts,
    /// The backend doing the work ("CPU", "CUDA", ...), as the engine itself reports it.
    pub backend: String,
    pub devices: Vec<Device>,
    pub gpu_layers: u32,
    pub context: u32,
    pub parallel: u32,
    pub threads: u32,
    pub load_ms: u64,
    /// Why this engine runs on the CPU (or a lesser backend) although a GPU was asked for or is
    /// present: set by `hardware::launch`, shown by `run --stats`, `--json`, `ps` and `doctor`.
    pub fallback: Option<String>,
}

/// Everything that can go wrong with an engine, typed so callers can branch on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The engine could not load the model.
    #[error("{message}")]
    Load {
        code: ErrorCode,
        message: String,
        path: Option<String>,
    },
    /// The engine refused or failed one request; it keeps serving others.
    #[error("{message}")]
    Request { code: ErrorCode, message: String },
    /// The engine process ended while it was needed.
    #[error("{}", died_message(.engine, .exit, .stderr_tail))]
    Died {
        engine: EngineName,
        exit: ExitInfo,
        stderr_tail: Vec<String>,
    },
    #[error("cannot start {}: {reason}", .binary.display())]
    Spawn {
        binary: std::path::PathBuf,
        reason: String,
    },
    #[error("the engine did not finish loading {model} within {secs} s: raise the load timeout (GEMMACTL_LOAD_TIMEOUT or engine.load_timeout_secs) or check the machine's load")]
    LoadTimeout { model: String, secs: u64 },
    /// The engine wrote something that is not the protocol.
    #[error("the engine broke the protocol: {0}")]
    Protocol(String),
    /// The engine was stopped on purpose while the request was in flight.
    #[error("the engine was stopped before the reply finished")]
    Stopped,
}

fn died_message(engine: &EngineName, exit: &ExitInfo, tail: &[String]) -> String {
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

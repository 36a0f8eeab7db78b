//! How a reply ended: its finish reason, token counts and timings, and the kinds of failure an
//! engine reports.

use serde::{Deserialize, Serialize};

/// Why a reply ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn (end-of-sequence token) or a stop string was met.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The context window filled up: the reply was cut with no room for another token (not a
    /// limit the caller set, so front ends say so).
    Context,
    /// Stopped on request (Ctrl-C, a cancel, a closed client).
    Cancelled,
    /// Cut short by a failure.
    Error,
}

impl FinishReason {
    /// The reason as the history database and JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Context => "context",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
        }
    }

    /// Reads [`FinishReason::as_str`] back.
    pub fn parse(text: &str) -> Option<FinishReason> {
        Some(match text {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "context" => FinishReason::Context,
            "cancelled" => FinishReason::Cancelled,
            "error" => FinishReason::Error,
            _ => return None,
        })
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token counts of one reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    /// Tokens of the whole prompt (the conversation after templating).
    pub prompt_tokens: u32,
    /// Prompt tokens found in the engine's session cache and not read again.
    pub cached_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// Timings of one reply, in milliseconds and tokens per second.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timings {
    /// Time spent waiting for a free decode slot before work started.
    pub queue_ms: f64,
    /// From the request's arrival to its first generated token (time to first token).
    pub ttft_ms: f64,
    /// Prompt tokens read per second (excluding cached ones).
    pub prefill_tokens_per_s: f64,
    /// Generated tokens per second after the first one.
    pub decode_tokens_per_s: f64,
    /// From arrival to the end.
    pub total_ms: f64,
}

/// How a reply ended, as an engine reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Completion {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Its token counts.
    pub usage: Usage,
    /// Its timings.
    pub timings: Timings,
}

impl Completion {
    /// A request that ended before it reached an engine (cancelled while queued or loading).
    pub fn cancelled_before_start() -> Completion {
        Completion {
            finish_reason: FinishReason::Cancelled,
            usage: Usage::default(),
            timings: Timings::default(),
        }
    }
}

/// The kinds of failure an engine reports, so callers can branch on them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The model file does not exist.
    ModelNotFound,
    /// The model file exists but cannot be read.
    ModelUnreadable,
    /// The file is not in the engine's format.
    NotGguf,
    /// The model file is shorter than its header says.
    ModelTruncated,
    /// The engine does not know the model's architecture.
    UnsupportedArchitecture,
    /// The engine refused the file for another reason (the message carries its words).
    LoadFailed,
    /// Memory for the weights, the KV cache or the compute buffers could not be had.
    OutOfMemory,
    /// The conversation does not fit in the context.
    ContextOverflow,
    /// The engine could not read a command.
    BadCommand,
    /// A well-formed request the engine cannot serve.
    BadRequest,
    /// A cancel named no request in flight.
    UnknownRequest,
    /// The engine failed while decoding.
    DecodeFailed,
    /// The engine's command-line arguments are wrong.
    BadArguments,
    /// An image of the request cannot be used (not an image, cut short, unsupported, too large).
    BadImage,
    /// The request holds an image and the model cannot see images.
    NoVision,
    /// The engine could not be reached, or its server refused the request (remote engines).
    Unavailable,
}

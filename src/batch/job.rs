//! One line of the input as read: what to ask, of which model, with which parameters — or why
//! it cannot be run. Both input formats are read into these types, and every result is written
//! back in the format its line came in.

use serde_json::Value;

use crate::domain::{Constraint, Message, SamplingParams};

/// The format a line came in, which its result goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// `{"id": …, "prompt": …}` or `{"id": …, "messages": […]}`, with optional parameters.
    Simple,
    /// The OpenAI batch file format (`custom_id`, `method`, `url`, `body`).
    OpenAi(Endpoint),
}

/// The OpenAI endpoints a batch line may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `/v1/chat/completions`: messages in, a chat completion out.
    Chat,
    /// `/v1/completions`: a prompt in, a text completion out.
    Completions,
}

impl Endpoint {
    pub(super) fn url(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
        }
    }
}

/// A line's id: as written (kept as is in the output), and as compared (`7` and `"7"` are the
/// same id).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LineId {
    pub(super) value: Value,
    pub(super) key: String,
}

impl LineId {
    /// An id from a JSON string or integer; anything else is not an id.
    pub(super) fn from_value(value: &Value) -> Option<LineId> {
        let key = match value {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => return None,
        };
        Some(LineId {
            value: value.clone(),
            key,
        })
    }
}

/// What a line asks.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ask {
    /// A prompt continued or answered on its own.
    Prompt(String),
    /// A conversation whose last message is the user's.
    Messages(Vec<Message>),
}

/// A line's own sampling parameters; each beats the command line's.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Overrides {
    pub(super) max_tokens: Option<u32>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) top_k: Option<u32>,
    pub(super) seed: Option<u32>,
    pub(super) stop: Option<Vec<String>>,
    /// The line's own schema or grammar (beats `--json-schema`/`--grammar`).
    pub(super) constraint: Option<Constraint>,
}

impl Overrides {
    /// `base` (from the command line) with this line's values on top.
    pub(super) fn apply(&self, base: &SamplingParams) -> SamplingParams {
        let mut p = base.clone();
        if let Some(v) = self.max_tokens {
            p.max_tokens = Some(v);
        }
        if let Some(v) = self.temperature {
            p.temperature = v;
        }
        if let Some(v) = self.top_p {
            p.top_p = Some(v);
        }
        if let Some(v) = self.top_k {
            p.top_k = v;
        }
        if let Some(v) = self.seed {
            p.seed = Some(v);
        }
        if let Some(v) = &self.stop {
            p.stop = v.clone();
        }
        if let Some(c) = &self.constraint {
            p.constraint = Some(c.clone());
        }
        p
    }
}

/// A well-formed line: everything needed to run it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Request {
    /// The model the line names, if any.
    pub(super) model: Option<String>,
    pub(super) ask: Ask,
    /// The line's own system prompt (beats `--system`).
    pub(super) system: Option<String>,
    pub(super) overrides: Overrides,
    /// OpenAI body fields gemmactl does not use, by name (said once on stderr).
    pub(super) ignored: Vec<String>,
}

/// What went wrong with a line, for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ErrorKind {
    /// Not JSON, not UTF-8, or not an object.
    InvalidJson,
    /// A missing or malformed field, or a parameter out of range.
    InvalidRequest,
    /// The line names a model that cannot be used.
    ModelNotFound,
    /// The prompt does not fit in the context.
    ContextOverflow,
    /// The engine or the supervisor failed while serving the line.
    EngineFailed,
}

impl ErrorKind {
    /// The error's code in the output.
    pub(super) fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::ContextOverflow => "context_length_exceeded",
            ErrorKind::EngineFailed => "engine_error",
        }
    }

    /// The HTTP status a hosted API would have answered with (OpenAI output format).
    pub(super) fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidJson | ErrorKind::InvalidRequest | ErrorKind::ContextOverflow => 400,
            ErrorKind::ModelNotFound => 404,
            ErrorKind::EngineFailed => 500,
        }
    }
}

/// Why a line was not answered: a kind for programs, one sentence (naming the line) for people.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LineError {
    pub(super) kind: ErrorKind,
    pub(super) message: String,
    /// The field at fault, when one is.
    pub(super) param: Option<String>,
}

impl LineError {
    pub(super) fn new(kind: ErrorKind, line: usize, what: impl std::fmt::Display) -> LineError {
        LineError {
            kind,
            message: format!("line {line}: {what}"),
            param: None,
        }
    }

    /// A malformed field `param`.
    pub(super) fn field(line: usize, param: &str, what: impl std::fmt::Display) -> LineError {
        LineError {
            kind: ErrorKind::InvalidRequest,
            message: format!("line {line}: {what}"),
            param: Some(param.to_string()),
        }
    }
}

/// One line of the input as read.
#[derive(Debug, Clone)]
pub(super) struct Line {
    /// 1-based, counting every line of the file (blank ones too), as an editor shows it.
    pub(super) number: usize,
    /// The line's id, when it has a usable one.
    pub(super) id: Option<LineId>,
    pub(super) format: Format,
    pub(super) request: Result<Request, LineError>,
}

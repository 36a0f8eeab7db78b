//! Where a conversation came from: which front end, which client, which batch line.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The front end that started a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The interactive shell.
    Chat,
    /// `gemmactl run`.
    Run,
    /// An MCP client through `gemmactl mcp`.
    Mcp,
    /// A line of `gemmactl batch`.
    Batch,
    /// An HTTP client of `gemmactl serve`.
    Serve,
}

impl Source {
    /// The source as the history database and JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Chat => "chat",
            Source::Run => "run",
            Source::Mcp => "mcp",
            Source::Batch => "batch",
            Source::Serve => "serve",
        }
    }

    /// Reads [`Source::as_str`] back.
    pub fn parse(text: &str) -> Option<Source> {
        [
            Source::Chat,
            Source::Run,
            Source::Mcp,
            Source::Batch,
            Source::Serve,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a conversation came from, stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The front end.
    pub source: Source,
    /// The program on the other side, when there is one (an MCP client's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The `gemmactl batch` run and the id of its line, for a batch line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchLine>,
}

/// One line of a batch run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchLine {
    /// The batch run's id.
    pub batch_id: String,
    /// The line's own id (`id` or `custom_id` in the input).
    pub line_id: String,
}

impl Origin {
    /// A conversation started by `source`, with no client or batch.
    pub fn new(source: Source) -> Origin {
        Origin {
            source,
            client: None,
            batch: None,
        }
    }
}

//! One turn of a conversation.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model; Gemma has no system role, so engines put it before the first
    /// user turn.
    System,
    /// The person (or program) asking.
    User,
    /// The model (`model` is accepted as an alias, as Gemma names it).
    #[serde(alias = "model")]
    Assistant,
}

impl Role {
    /// The role as the history database and the JSON exports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// Reads [`Role::as_str`] back.
    pub fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" | "model" => Role::Assistant,
            _ => return None,
        })
    }
}

/// A message as an engine request carries it: who wrote it and what it says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
}

impl Message {
    /// A message from `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }
}

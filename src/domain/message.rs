//! One turn of a conversation.

use serde::{Deserialize, Serialize};

use super::image::Image;

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

/// A message as an engine request carries it: who wrote it, what it says, and the images it
/// shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// Its images, in order of [`Image::at`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
}

impl Message {
    /// A message from `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            images: Vec::new(),
        }
    }

    /// The message with `images` attached (each already placed in the text).
    pub fn with_images(mut self, images: Vec<Image>) -> Message {
        self.images = images;
        self
    }
}

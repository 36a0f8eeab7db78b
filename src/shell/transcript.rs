//! How a conversation is put to a model: instruct models get their chat template (the engine
//! applies it); base models, which have none — the default Gemma 3 270M is one — get a plain
//! completion-style transcript so the shell still works:
//!
//! ```text
//! {system prompt}
//!
//! User: {first message}
//! Assistant: {first reply}
//! User: {second message}
//! Assistant:
//! ```
//!
//! The reply is cut at the model's next `User:` or `Assistant:` line (stop strings), so it does
//! not write the user's side of the dialogue too.

use crate::engines::{Message, PromptFormat, Role, SamplingParams};
use crate::models::{ModelEntry, ModelKind};

/// The messages and format of a request for `model`, given the conversation so far.
pub fn request_parts(
    model: &ModelEntry,
    system: Option<&str>,
    turns: &[Message],
    params: &SamplingParams,
) -> (Vec<Message>, PromptFormat, SamplingParams) {
    match model.kind {
        ModelKind::Instruct => {
            let mut messages = Vec::with_capacity(turns.len() + 1);
            if let Some(system) = system {
                messages.push(Message {
                    role: Role::System,
                    content: system.to_string(),
                });
            }
            messages.extend_from_slice(turns);
            (
                messages,
                PromptFormat::Chat {
                    template: model.chat_template.clone(),
                },
                params.clone(),
            )
        }
        ModelKind::Base => {
            let mut params = params.clone();
            params.stop = vec!["\nUser:".into(), "\nAssistant:".into()];
            let text = transcript(system, turns);
            (
                vec![Message {
                    role: Role::User,
                    content: text,
                }],
                PromptFormat::Completion,
                params,
            )
        }
    }
}

pub fn transcript(system: Option<&str>, turns: &[Message]) -> String {
    let mut text = String::new();
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        text.push_str(system.trim());
        text.push_str("\n\n");
    }
    for m in turns {
        let who = match m.role {
            Role::User => "User",
            Role::Assistant => "Assistant",
            // A system message inside the turns is shown as such.
            Role::System => "System",
        };
        text.push_str(who);
        text.push_str(": ");
        text.push_str(m.content.trim());
        text.push('\n');
    }
    text.push_str("Assistant:");
    text
}

/// A base model's reply as stored: without the space that follows `Assistant:`.
pub fn tidy_reply(model: &ModelEntry, text: &str) -> String {
    match model.kind {
        ModelKind::Base => text.trim().to_string(),
        ModelKind::Instruct => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn transcript_has_the_documented_shape() {
        let turns = [
            m(Role::User, "Hi"),
            m(Role::Assistant, " Hello! "),
            m(Role::User, "Capital of France?"),
        ];
        assert_eq!(
            transcript(Some("Be brief."), &turns),
            "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Capital of France?\nAssistant:"
        );
        assert_eq!(transcript(None, &turns[..1]), "User: Hi\nAssistant:");
    }
}

//! Turns a request's conversation into prompt tokens.
//!
//! Instruct models get a chat template (the file's own, or one of llama.cpp's built-in ones by
//! name); base models, like the default Gemma 3 270M, get plain completion. The rules are in
//! docs/engine-protocol.md under "Prompt formats".

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use engine_protocol::{Message, PromptFormat, Role};

pub(crate) fn tokens(
    model: &LlamaModel,
    messages: &[Message],
    format: &PromptFormat,
) -> Result<Vec<LlamaToken>, String> {
    if messages.is_empty() {
        return Err("the request has no messages: send at least one user message".into());
    }
    let chat_template = match format {
        PromptFormat::Completion => None,
        PromptFormat::Chat { template: Some(name) } => Some(
            LlamaChatTemplate::new(name).map_err(|_| format!("chat template name {name:?} contains a NUL byte"))?,
        ),
        PromptFormat::Chat { template: None } => Some(model.chat_template(None).map_err(|_| {
            "the model file has no chat template: use the completion format, or name a built-in template such as \"gemma\"".to_string()
        })?),
        PromptFormat::Auto => model.chat_template(None).ok(),
    };
    let (text, parse_special) = match chat_template {
        Some(template) => (apply_template(model, &template, messages)?, true),
        // User text must not be able to smuggle in control tokens when no template is used.
        None => (completion_text(messages), false),
    };
    let tokens = model.vocab().tokenize(text.as_bytes(), true, parse_special);
    if tokens.is_empty() {
        return Err("the prompt is empty after tokenizing".into());
    }
    Ok(tokens)
}

fn apply_template(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[Message],
) -> Result<String, String> {
    let chat = messages
        .iter()
        .map(|m| LlamaChatMessage::new(role_name(m.role).to_string(), m.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            "a message contains a NUL byte, which no chat template can carry".to_string()
        })?;
    let add_assistant_turn = messages.last().map(|m| m.role) != Some(Role::Assistant);
    model.apply_chat_template(template, &chat, add_assistant_turn).map_err(|e| {
        let name = template.to_str().unwrap_or("?");
        let shown = if name.len() > 40 { "the model's template" } else { name };
        format!("chat template {shown:?} could not be applied ({e}): use a built-in name such as \"gemma\" or \"chatml\"")
    })
}

/// Plain completion: texts in order; a system message is set off by a blank line.
pub(crate) fn completion_text(messages: &[Message]) -> String {
    let mut text = String::new();
    for m in messages {
        text.push_str(&m.content);
        if m.role == Role::System && !m.content.is_empty() {
            text.push_str("\n\n");
        }
    }
    text
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn completion_is_plain_text_with_system_set_off() {
        let text = completion_text(&[
            msg(Role::System, "Be brief."),
            msg(Role::User, "The capital of France is"),
        ]);
        assert_eq!(text, "Be brief.\n\nThe capital of France is");
        assert_eq!(completion_text(&[msg(Role::User, "abc")]), "abc");
    }
}

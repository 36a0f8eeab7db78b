//! Turns a request's conversation into prompt tokens.
//!
//! Instruct models get a chat template (the file's own, or one of llama.cpp's built-in ones by
//! name); base models, like the default Gemma 3 270M, get plain completion; code models with
//! fill-in-the-middle tokens can be asked to write what goes between a prefix and a suffix. The
//! rules are in docs/engine-protocol.md under "Prompt formats".

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
        PromptFormat::FillInMiddle { suffix } => return fill_in_middle(model, messages, suffix),
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

/// The vocabulary's fill-in-the-middle tokens (prefix, suffix, middle), if it has all three.
/// llama.cpp finds them in the GGUF's `tokenizer.ggml.fim_*_token_id` keys, or by their usual
/// texts (`<|fim_prefix|>`, `<fim-prefix>`, …) when the keys are missing.
pub(crate) fn fim_tokens(model: &LlamaModel) -> Option<[LlamaToken; 3]> {
    let vocab = model.vocab();
    let tokens = [vocab.fim_pre(), vocab.fim_suf(), vocab.fim_mid()];
    // llama.cpp says "none" with a negative id.
    tokens.iter().all(|t| t.0 >= 0).then_some(tokens)
}

/// `<prefix token> prefix <suffix token> suffix <middle token>`: the prefix-suffix-middle order
/// the code models with these tokens are trained on (and llama.cpp's server sends). The texts
/// are code the user gave, so they are tokenized without parsing special tokens.
fn fill_in_middle(
    model: &LlamaModel,
    messages: &[Message],
    suffix: &str,
) -> Result<Vec<LlamaToken>, String> {
    let Some([pre, suf, mid]) = fim_tokens(model) else {
        return Err("the model's vocabulary has no fill-in-the-middle tokens: send the code before the cursor with the completion format, or use a code model that has them (e.g. Qwen2.5-Coder)".into());
    };
    let vocab = model.vocab();
    let prefix = completion_text(messages);
    let mut tokens = Vec::new();
    if vocab.should_add_bos() {
        tokens.push(vocab.bos());
    }
    tokens.push(pre);
    tokens.extend(vocab.tokenize(prefix.as_bytes(), false, false));
    tokens.push(suf);
    tokens.extend(vocab.tokenize(suffix.as_bytes(), false, false));
    tokens.push(mid);
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

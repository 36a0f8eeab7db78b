//! How a conversation is put to a model: instruct models get their chat template (the engine
//! applies it); base models, which have none — the default Gemma 3 270M is one — get a plain
//! completion-style transcript so a conversation still works:
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
//!
//! One exception keeps `gemmactl run "The capital of France is"` a plain completion: a lone prompt
//! in a one-shot thread, or any prompt with `--raw`, is continued as text, without transcript or
//! template.

use crate::domain::{Message, PromptFormat, Role, SamplingParams};
use crate::models::{ModelEntry, ModelKind};

/// How a request puts the conversation to the model.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RequestParts {
    pub(super) messages: Vec<Message>,
    pub(super) prompt: PromptFormat,
    pub(super) params: SamplingParams,
    /// The reply follows `Assistant:` in a transcript: its leading space is not the model's text.
    pub(super) transcript: bool,
}

/// How a thread's first prompt is sent when there is nothing before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptStyle {
    /// Always as a conversation (the chat shell): a base model gets the transcript.
    Conversation,
    /// A lone prompt to a base model is continued as plain text (`run`, `generate_text`).
    OneShot,
    /// Every request is plain text, never a template or transcript (`run --raw`).
    Raw,
}

/// The messages, format and parameters of a request for `model`, given the conversation so far.
pub(super) fn request_parts(
    model: &ModelEntry,
    style: PromptStyle,
    system: Option<&str>,
    turns: &[Message],
    params: &SamplingParams,
) -> RequestParts {
    let lone = turns.len() == 1;
    let plain = match style {
        PromptStyle::Raw => lone,
        PromptStyle::OneShot => lone && model.kind == ModelKind::Base,
        PromptStyle::Conversation => false,
    };
    if plain {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
            messages.push(Message::new(Role::System, system));
        }
        messages.extend_from_slice(turns);
        return RequestParts {
            messages,
            prompt: PromptFormat::Completion,
            params: params.clone(),
            transcript: false,
        };
    }
    match model.kind {
        ModelKind::Instruct => {
            let mut messages = Vec::with_capacity(turns.len() + 1);
            if let Some(system) = system {
                messages.push(Message::new(Role::System, system));
            }
            messages.extend_from_slice(turns);
            RequestParts {
                messages,
                prompt: PromptFormat::Chat {
                    template: model.chat_template.clone(),
                },
                params: params.clone(),
                transcript: false,
            }
        }
        ModelKind::Base => {
            let mut params = params.clone();
            // The caller's own stop strings still apply, besides the transcript's. A reply held
            // to a schema or grammar ends where that is complete, and a transcript stop could
            // only cut it short of parsing.
            let transcript_stops = if params.constraint.is_some() {
                &[][..]
            } else {
                &TRANSCRIPT_STOPS[..]
            };
            for stop in transcript_stops {
                if !params.stop.iter().any(|s| s == stop) {
                    params.stop.push(stop.to_string());
                }
            }
            RequestParts {
                messages: vec![transcript(system, turns)],
                prompt: PromptFormat::Completion,
                params,
                transcript: true,
            }
        }
    }
}

/// A fill-in-the-middle request: the message being answered is the code before the cursor,
/// `suffix` the code after it. There is no place for a system prompt or earlier turns in such a
/// prompt, so only the last message goes.
pub(super) fn infill_parts(
    turns: &[Message],
    suffix: &str,
    params: &SamplingParams,
) -> RequestParts {
    RequestParts {
        messages: turns.last().cloned().into_iter().collect(),
        prompt: PromptFormat::FillInMiddle {
            suffix: suffix.to_string(),
        },
        params: params.clone(),
        transcript: false,
    }
}

/// Where a transcript reply ends: the model starting the next speaker's line.
const TRANSCRIPT_STOPS: [&str; 2] = ["\nUser:", "\nAssistant:"];

/// The base-model transcript of `turns` after `system`, ending in `Assistant:`, as one message
/// that keeps every turn's images where they stood in its text.
fn transcript(system: Option<&str>, turns: &[Message]) -> Message {
    let mut text = String::new();
    let mut images = Vec::new();
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
        let trimmed = m.content.trim();
        let lead = m.content.len() - m.content.trim_start().len();
        for image in &m.images {
            let at = image.at.saturating_sub(lead).min(trimmed.len());
            images.push(image.clone().placed(text.len() + at));
        }
        text.push_str(trimmed);
        text.push('\n');
    }
    text.push_str("Assistant:");
    Message::new(Role::User, text).with_images(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role, content: &str) -> Message {
        Message::new(role, content)
    }

    #[test]
    fn transcript_has_the_documented_shape() {
        let turns = [
            m(Role::User, "Hi"),
            m(Role::Assistant, " Hello! "),
            m(Role::User, "Capital of France?"),
        ];
        assert_eq!(
            transcript(Some("Be brief."), &turns).content,
            "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Capital of France?\nAssistant:"
        );
        assert_eq!(
            transcript(None, &turns[..1]).content,
            "User: Hi\nAssistant:"
        );
    }

    /// A base model's transcript keeps each turn's images where they stood in its text, so a
    /// continued conversation shows them again.
    #[test]
    fn a_transcript_keeps_the_images_in_place() {
        let png = {
            let mut out = std::io::Cursor::new(Vec::new());
            ::image::RgbImage::from_pixel(2, 2, ::image::Rgb([1, 2, 3]))
                .write_to(&mut out, ::image::ImageFormat::Png)
                .unwrap();
            out.into_inner()
        };
        let image = crate::domain::Image::from_bytes(png, "image").unwrap();
        let turns = [
            m(Role::User, "  Look: this").with_images(vec![image.clone().placed(8)]),
            m(Role::Assistant, "A square."),
            m(Role::User, "Again?"),
        ];
        let t = transcript(None, &turns);
        assert_eq!(t.images.len(), 1);
        assert_eq!(&t.content[..t.images[0].at], "User: Look: ");
    }

    fn entry(kind: ModelKind) -> ModelEntry {
        ModelEntry {
            name: "m".into(),
            path: "/m.gguf".into(),
            engine: crate::domain::EngineKind::GemmaEngine,
            format: crate::models::ModelFormat::Gguf,
            kind,
            sha256: None,
            chat_template: Some("gemma".into()),
            tokenizer: None,
            remote: None,
            mmproj: None,
        }
    }

    #[test]
    fn an_infill_request_carries_the_prefix_and_the_suffix() {
        let turns = [m(Role::User, "def add(a, b):\n    ")];
        let parts = infill_parts(&turns, "\n\nprint(add(1, 2))\n", &SamplingParams::default());
        assert_eq!(parts.messages, turns.to_vec());
        assert_eq!(
            parts.prompt,
            PromptFormat::FillInMiddle {
                suffix: "\n\nprint(add(1, 2))\n".into()
            }
        );
        assert!(!parts.transcript);
    }

    #[test]
    fn each_style_puts_a_lone_prompt_as_documented() {
        let turns = [m(Role::User, "The capital of France is")];
        let params = SamplingParams::default();
        let base = entry(ModelKind::Base);
        let one_shot = request_parts(&base, PromptStyle::OneShot, None, &turns, &params);
        assert_eq!(one_shot.prompt, PromptFormat::Completion);
        assert_eq!(one_shot.messages, turns.to_vec());
        assert!(!one_shot.transcript && one_shot.params.stop.is_empty());
        let shell = request_parts(&base, PromptStyle::Conversation, None, &turns, &params);
        assert!(shell.transcript);
        assert_eq!(
            shell.messages[0].content,
            "User: The capital of France is\nAssistant:"
        );
        assert_eq!(shell.params.stop, ["\nUser:", "\nAssistant:"]);
        let own = SamplingParams {
            stop: vec!["\n\n".into()],
            ..SamplingParams::default()
        };
        let shell = request_parts(&base, PromptStyle::Conversation, None, &turns, &own);
        assert_eq!(shell.params.stop, ["\n\n", "\nUser:", "\nAssistant:"]);

        let instruct = entry(ModelKind::Instruct);
        let chat = request_parts(
            &instruct,
            PromptStyle::OneShot,
            Some("Be brief."),
            &turns,
            &params,
        );
        assert_eq!(
            chat.prompt,
            PromptFormat::Chat {
                template: Some("gemma".into())
            }
        );
        assert_eq!(chat.messages[0], m(Role::System, "Be brief."));
        let raw = request_parts(
            &instruct,
            PromptStyle::Raw,
            Some("Be brief."),
            &turns,
            &params,
        );
        assert_eq!(raw.prompt, PromptFormat::Completion);
        assert_eq!(raw.messages.len(), 2);
    }
}

//! What an engine is asked for: the conversation, how to turn it into a prompt, and how to
//! sample the reply.

use serde::{Deserialize, Serialize};

use super::message::{Message, Role};

/// How a conversation becomes the model's input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum PromptFormat {
    /// The chat template when the model file has one, plain completion otherwise.
    #[default]
    Auto,
    /// A chat template: `template` names a built-in one (e.g. `gemma`); absent means the model
    /// file's own.
    Chat {
        /// A built-in template's name, or `None` for the model file's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
    },
    /// No template: the texts are continued as plain text.
    Completion,
    /// Fill in the middle: the texts are the code before the cursor, `suffix` the code after
    /// it; the model writes what goes between, prompted with its vocabulary's fill-in-the-middle
    /// tokens (see [`super::ModelFacts::fill_in_middle`]). Engines without them refuse it.
    FillInMiddle {
        /// The code after the cursor (may be empty).
        suffix: String,
    },
}

/// How to sample a reply. The numbers are `f64` so that a value keeps one representation from
/// the command line to the history database and every export (`0.8` stays `0.8`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SamplingParams {
    /// Most tokens to generate; `None` means until end of sequence or the context is full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// 0 means greedy.
    pub temperature: f64,
    /// 0 disables top-k.
    pub top_k: u32,
    /// Nucleus sampling; `None` means the engine's default (0.95), 1.0 disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Seed of the sampler's random numbers; `None` is a new one per reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
    /// Generation stops before the first occurrence of any of these strings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

/// The sampling defaults every front end starts from.
impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: None,
            temperature: SamplingParams::DEFAULT_TEMPERATURE,
            top_k: SamplingParams::DEFAULT_TOP_K,
            top_p: None,
            seed: None,
            stop: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Temperature when none is asked for.
    pub const DEFAULT_TEMPERATURE: f64 = 0.8;
    /// Top-k when none is asked for.
    pub const DEFAULT_TOP_K: u32 = 40;
    /// Top-p engines use when none is asked for.
    pub const DEFAULT_TOP_P: f64 = 0.95;

    /// Checks every value, so a bad one is refused with a sentence before anything is loaded.
    /// `flag` formats a parameter's name as the caller's user knows it (`--top-p`, `top_p`).
    pub fn check(&self, flag: impl Fn(&str) -> String) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "{} {} is not valid: use a number ≥ 0 (0 = greedy)",
                flag("temperature"),
                self.temperature
            ));
        }
        if let Some(p) = self
            .top_p
            .filter(|p| !(p.is_finite() && *p > 0.0 && *p <= 1.0))
        {
            return Err(format!(
                "{} {p} is not valid: use a number greater than 0 and at most 1 (1 = off)",
                flag("top_p")
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(format!(
                "{} 0 asks for nothing: use at least 1",
                flag("max_tokens")
            ));
        }
        Ok(())
    }
}

/// What a caller asks an engine for.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Unique among the requests in flight on one engine.
    pub id: String,
    /// The whole conversation, oldest first: the engine keeps nothing but a cache.
    pub messages: Vec<Message>,
    /// Names the conversation so an engine can keep its cache between turns.
    pub session: Option<String>,
    /// How the messages become the prompt.
    pub prompt: PromptFormat,
    /// How to sample.
    pub params: SamplingParams,
}

impl GenerateRequest {
    /// One user message continued as plain text, greedily, for at most `max_tokens`: the
    /// reproducible request benchmarks and tests send.
    pub fn greedy_completion(id: String, text: &str, max_tokens: u32) -> GenerateRequest {
        GenerateRequest {
            id,
            messages: vec![Message::new(Role::User, text)],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_sentences_naming_the_flag() {
        let flag = |n: &str| format!("--{}", n.replace('_', "-"));
        let p = SamplingParams {
            temperature: -1.0,
            ..SamplingParams::default()
        };
        assert!(p.check(flag).unwrap_err().starts_with("--temperature -1"));
        let p = SamplingParams {
            top_p: Some(1.5),
            ..SamplingParams::default()
        };
        assert!(p.check(flag).unwrap_err().contains("--top-p 1.5"));
        let p = SamplingParams {
            max_tokens: Some(0),
            ..SamplingParams::default()
        };
        assert!(p
            .check(|n: &str| n.to_string())
            .unwrap_err()
            .starts_with("max_tokens 0"));
        assert!(SamplingParams::default().check(flag).is_ok());
    }

    #[test]
    fn a_temperature_keeps_its_decimal_form() {
        let p = SamplingParams::default();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["temperature"].to_string(), "0.8");
    }
}

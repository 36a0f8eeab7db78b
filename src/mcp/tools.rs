//! The tools' arguments and results as MCP clients see them: each type's doc comments become the
//! descriptions of its JSON Schema (`inputSchema`, `outputSchema`), so this file is the tools'
//! documentation. Defaults and bounds are in the schemas and checked again here, because a
//! client may send anything: a bad value is one sentence naming the argument (a tool error the
//! calling model can correct), never a protocol error.
//!
//! These are the MCP wire contract, deliberately not gemmactl's domain types, so a change inside
//! gemmactl is never a change of what agents were told.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::flags::DEFAULT_MAX_TOKENS;
use crate::domain::{Completion, Constraint, EngineDescription, SamplingParams};

/// Most tokens one call may ask for.
pub(super) const MAX_TOKENS_LIMIT: u32 = 32_768;
/// Tokens `complete_code` writes unless told otherwise: a block, not a file.
pub(super) const CODE_MAX_TOKENS: u32 = 256;

fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}
fn default_code_max_tokens() -> u32 {
    CODE_MAX_TOKENS
}
fn default_temperature() -> f64 {
    SamplingParams::DEFAULT_TEMPERATURE
}
fn default_top_p() -> f64 {
    SamplingParams::DEFAULT_TOP_P
}
fn default_top_k() -> u32 {
    SamplingParams::DEFAULT_TOP_K
}

/// Optional arguments without a default value (`seed`, `model`) would show `"default": null`
/// beside a non-null type; clients read that as a contradiction, so it goes.
fn no_null_defaults(schema: &mut schemars::Schema) {
    if let Some(props) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        for prop in props.values_mut() {
            if let Some(p) = prop.as_object_mut() {
                if p.get("default").is_some_and(serde_json::Value::is_null) {
                    p.remove("default");
                }
            }
        }
    }
}

/// Reads a tool's arguments. A missing or ill-typed argument is a sentence naming it.
pub(super) fn parse<T: DeserializeOwned>(
    tool: &str,
    arguments: rmcp::model::JsonObject,
) -> Result<T, String> {
    let value = serde_json::Value::Object(arguments);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("{tool}: {inner}: see the tool's input schema")
        } else {
            format!("{tool}: argument `{path}`: {inner}: see the tool's input schema")
        }
    })
}

/// `generate_text`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = no_null_defaults)]
pub(super) struct GenerateTextArgs {
    /// The text to answer or continue. Base models (the default Gemma 3 270M) continue it as
    /// plain text; instruction-tuned models answer it as a user message.
    pub(super) prompt: String,
    /// Instructions put before the prompt (Gemma has no system role: they open the first turn).
    #[serde(default)]
    pub(super) system: String,
    /// Most tokens to generate.
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1, max = 32768))]
    pub(super) max_tokens: u32,
    /// Sampling temperature; 0 is greedy (the same output every time).
    #[serde(default = "default_temperature")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub(super) temperature: f64,
    /// Nucleus sampling: sample from the smallest set of tokens whose probability reaches this;
    /// 1 turns it off.
    #[serde(default = "default_top_p")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub(super) top_p: f64,
    /// Sample from the K most likely tokens only; 0 turns it off.
    #[serde(default = "default_top_k")]
    pub(super) top_k: u32,
    /// Seed of the sampler, for reproducible output; a new one per call when absent.
    #[serde(default)]
    #[schemars(with = "u32")]
    pub(super) seed: Option<u32>,
    /// Generation stops before the first occurrence of any of these strings.
    #[serde(default)]
    pub(super) stop: Vec<String>,
    /// A JSON Schema the reply must satisfy: the text is then one JSON value of that shape,
    /// which parses whenever the reply ends by itself (not cut by `max_tokens`). llama.cpp's
    /// subset of JSON Schema: type, properties, required, items, enum, const, anyOf/oneOf,
    /// $ref to $defs, min/max items and length, pattern. GGUF models only.
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub(super) schema: Option<serde_json::Value>,
    /// The model: a name from `list_models`, or a path to a GGUF file. Absent: the server's
    /// default model.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) model: Option<String>,
}

impl GenerateTextArgs {
    /// The sampling parameters, checked.
    pub(super) fn params(&self) -> Result<SamplingParams, String> {
        let params = SamplingParams {
            max_tokens: Some(self.max_tokens),
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: Some(self.top_p),
            seed: self.seed,
            stop: self
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            constraint: self.schema.clone().map(Constraint::JsonSchema),
        };
        if let Some(c) = &params.constraint {
            c.check()
                .map_err(|why| format!("argument `schema`: {why}"))?;
        }
        check_max_tokens(self.max_tokens)?;
        params.check(|name| format!("argument `{name}`"))?;
        Ok(params)
    }
}

/// Refuses `max_tokens` beyond the bound every schema states.
pub(super) fn check_max_tokens(n: u32) -> Result<(), String> {
    if n == 0 || n > MAX_TOKENS_LIMIT {
        return Err(format!(
            "argument `max_tokens` {n} is out of range: use 1 to {MAX_TOKENS_LIMIT}"
        ));
    }
    Ok(())
}

/// Token counts of one call.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct UsageOut {
    /// Tokens of the whole prompt as the model read it.
    pub(super) prompt_tokens: u32,
    /// Prompt tokens found in the engine's cache and not read again.
    pub(super) cached_tokens: u32,
    /// Tokens generated.
    pub(super) completion_tokens: u32,
}

/// How long one call took, measured by the engine.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct TimingsOut {
    /// Waiting for a free decode slot.
    pub(super) queue_ms: f64,
    /// From the request's arrival at the engine to its first generated token.
    pub(super) ttft_ms: f64,
    /// Prompt tokens read per second (prefill).
    pub(super) prefill_tokens_per_s: f64,
    /// Tokens generated per second after the first (decode).
    pub(super) decode_tokens_per_s: f64,
    /// The whole request on the engine.
    pub(super) total_ms: f64,
}

impl From<&Completion> for UsageOut {
    fn from(c: &Completion) -> Self {
        UsageOut {
            prompt_tokens: c.usage.prompt_tokens,
            cached_tokens: c.usage.cached_tokens,
            completion_tokens: c.usage.completion_tokens,
        }
    }
}

impl From<&Completion> for TimingsOut {
    fn from(c: &Completion) -> Self {
        let t = &c.timings;
        TimingsOut {
            queue_ms: t.queue_ms,
            ttft_ms: t.ttft_ms,
            prefill_tokens_per_s: t.prefill_tokens_per_s,
            decode_tokens_per_s: t.decode_tokens_per_s,
            total_ms: t.total_ms,
        }
    }
}

/// `generate_text`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct GenerateTextOutput {
    /// The generated text, whole.
    pub(super) text: String,
    /// Why generation ended: `stop` (the model finished, or a stop string came), `length`
    /// (`max_tokens` reached, or the context is full) or `cancelled`.
    pub(super) finish_reason: String,
    /// Token counts.
    pub(super) usage: UsageOut,
    /// Timings.
    pub(super) timings: TimingsOut,
    /// The model that answered.
    pub(super) model: String,
    /// The engine program that ran it (`gemma-engine` or `gemma.cpp`).
    pub(super) engine: String,
    /// Where it ran (`cpu`, `cuda`, …; with the reason when a GPU was wanted and not used).
    pub(super) backend: String,
}

/// The engine and backend of a served call, as the results spell them.
pub(super) fn engine_and_backend(engine: Option<&EngineDescription>) -> (String, String) {
    match engine {
        Some(d) => (d.engine.to_string(), d.backend_with_fallback()),
        None => (String::new(), String::new()),
    }
}

/// `complete_code`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = no_null_defaults)]
pub(super) struct CompleteCodeArgs {
    /// The code before the cursor (up to where the completion goes).
    pub(super) prefix: String,
    /// The code after the cursor, if any. A model with fill-in-the-middle tokens writes what
    /// fits between; others stop before the suffix's first line.
    #[serde(default)]
    pub(super) suffix: String,
    /// The language (e.g. `python`, `rust`), to read fenced answers by; guessed from the code
    /// when absent.
    #[serde(default)]
    pub(super) language: String,
    /// Most tokens to generate.
    #[serde(default = "default_code_max_tokens")]
    #[schemars(range(min = 1, max = 32768))]
    pub(super) max_tokens: u32,
    /// The model: a name from `list_models` or a GGUF path. Absent: the server's default
    /// model. A code model with fill-in-the-middle tokens (e.g. `qwen2.5-coder-0.5b`) uses the
    /// suffix; others only continue the prefix.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) model: Option<String>,
}

/// `complete_code`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct CompleteCodeOutput {
    /// Only the code to insert at the cursor, between `prefix` and `suffix`.
    pub(super) code: String,
    /// `fill_in_middle` (the model's own tokens for it, seeing the suffix) or `completion`
    /// (the prefix continued, cut at the end of the block or before the suffix's first line).
    pub(super) method: String,
    /// `stop` (the completion ended at a sensible boundary), `length` (`max_tokens` reached)
    /// or `cancelled`.
    pub(super) finish_reason: String,
    /// The model that wrote it.
    pub(super) model: String,
    /// Token counts.
    pub(super) usage: UsageOut,
}

/// `chat`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = no_null_defaults)]
pub(super) struct ChatArgs {
    /// The next user message.
    pub(super) message: String,
    /// A conversation to continue: the `conversation_id` of an earlier `chat` result, or any
    /// id from `gemmactl history list` (conversations of `gemmactl chat` included). Absent:
    /// a new conversation.
    #[serde(default)]
    #[schemars(with = "i64")]
    pub(super) conversation_id: Option<i64>,
    /// The system prompt; for an existing conversation it replaces the stored one from this
    /// turn on. Absent: the stored one (or none).
    #[serde(default)]
    pub(super) system: String,
    /// The model. Absent: the one the conversation last used, else the server's default.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) model: Option<String>,
    /// Most tokens in the reply.
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1, max = 32768))]
    pub(super) max_tokens: u32,
}

/// `chat`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct ChatOutput {
    /// The model's reply, whole.
    pub(super) reply: String,
    /// Pass this back as `conversation_id` to continue the conversation (also
    /// `gemmactl chat --resume ID`). 0 when the server keeps no history (`--no-log`).
    pub(super) conversation_id: i64,
    /// `stop`, `length` or `cancelled`.
    pub(super) finish_reason: String,
    /// The model that answered.
    pub(super) model: String,
}

/// `analyze_image`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = no_null_defaults)]
pub(super) struct AnalyzeImageArgs {
    /// Path of the image file (PNG, JPEG, WebP, GIF, BMP, PNM, TIFF), absolute or relative to
    /// the server's working folder. It must lie in a folder the user allowed (by default the
    /// server's working folder); symbolic links are followed before that is checked. Give this
    /// or `image_data`.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) image_path: Option<String>,
    /// The image's bytes, base64 (or a `data:image/png;base64,…` URL). Give this or
    /// `image_path`.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) image_data: Option<String>,
    /// What to do with the image (e.g. "Describe this screenshot").
    pub(super) prompt: String,
    /// A vision-capable model (registered with its projector: `gemmactl models add NAME
    /// MODEL.gguf --mmproj PROJECTOR.gguf`). Absent: the server's default model.
    #[serde(default)]
    #[schemars(with = "String")]
    pub(super) model: Option<String>,
    /// Most tokens in the answer.
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1, max = 32768))]
    pub(super) max_tokens: u32,
}

/// `analyze_image`'s result.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct AnalyzeImageOutput {
    /// The model's answer.
    pub(super) text: String,
    /// The model that answered.
    pub(super) model: String,
    /// `stop`, `length` or `cancelled`.
    pub(super) finish_reason: String,
}

/// `list_models`' result.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct ListModelsOutput {
    /// Every registered model, then those of the catalogue that can still be downloaded.
    pub(super) models: Vec<ModelInfo>,
    /// The model tools use when they name none.
    pub(super) default_model: String,
}

/// One model.
#[derive(Debug, Serialize, JsonSchema)]
pub(super) struct ModelInfo {
    /// The name to pass as `model`.
    pub(super) name: String,
    /// The engine program that runs it (`gemma-engine` or `gemma.cpp`).
    pub(super) engine: String,
    /// Where it runs now (`cpu`, `cuda`, …), or `not loaded`.
    pub(super) backend: String,
    /// `loaded` (its engine is serving calls now), `idle` (its engine is up and waiting; it
    /// stops after the idle time-out), `loading`, `failed`, `not loaded`, or `not downloaded`
    /// (`gemmactl models pull NAME` fetches it).
    pub(super) state: String,
    /// Context length in tokens: the running engine's, else what it would be started with.
    pub(super) context_length: u32,
    /// Whether it reads images.
    pub(super) vision: bool,
    /// `base` (continues text) or `instruct` (follows instructions, chats).
    pub(super) kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::handler::server::common::{schema_for_input, schema_for_output};

    fn object(v: serde_json::Value) -> rmcp::model::JsonObject {
        match v {
            serde_json::Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn every_schema_is_an_object_with_its_bounds_and_defaults() {
        let schema = schema_for_input::<GenerateTextArgs>().unwrap();
        let props = &schema["properties"];
        assert_eq!(props["max_tokens"]["maximum"], 32768);
        assert_eq!(props["max_tokens"]["default"], DEFAULT_MAX_TOKENS);
        assert_eq!(props["temperature"]["default"], 0.8);
        // Optional values are plain types, not `["integer", "null"]`.
        assert_eq!(props["seed"]["type"], "integer");
        assert_eq!(props["model"]["type"], "string");
        assert!(props["model"].get("default").is_none());
        assert_eq!(schema["required"], serde_json::json!(["prompt"]));
        for s in [
            schema_for_input::<CompleteCodeArgs>(),
            schema_for_input::<ChatArgs>(),
            schema_for_input::<AnalyzeImageArgs>(),
        ] {
            assert_eq!(s.unwrap()["type"], "object");
        }
        for s in [
            schema_for_output::<GenerateTextOutput>(),
            schema_for_output::<CompleteCodeOutput>(),
            schema_for_output::<ChatOutput>(),
            schema_for_output::<ListModelsOutput>(),
        ] {
            assert_eq!(s["type"], "object");
        }
    }

    #[test]
    fn a_wrong_argument_is_named() {
        let err = parse::<GenerateTextArgs>(
            "generate_text",
            object(serde_json::json!({"prompt": "hi", "max_tokens": "many"})),
        )
        .unwrap_err();
        assert!(err.contains("`max_tokens`"), "{err}");
        let err =
            parse::<GenerateTextArgs>("generate_text", object(serde_json::json!({}))).unwrap_err();
        assert!(err.contains("prompt"), "{err}");
        let err = parse::<GenerateTextArgs>(
            "generate_text",
            object(serde_json::json!({"prompt": "hi", "max_token": 3})),
        )
        .unwrap_err();
        assert!(err.contains("max_token"), "{err}");
        let args = parse::<GenerateTextArgs>(
            "generate_text",
            object(serde_json::json!({"prompt": "hi", "temperature": -1})),
        )
        .unwrap();
        assert!(args.params().unwrap_err().contains("`temperature`"));
        let args = parse::<GenerateTextArgs>(
            "generate_text",
            object(serde_json::json!({"prompt": "hi", "max_tokens": 100000})),
        )
        .unwrap();
        assert!(args.params().unwrap_err().contains("1 to 32768"));
    }
}

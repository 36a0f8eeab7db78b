//! The OpenAI-compatible HTTP API's JSON bodies: requests, replies, stream chunks and errors of
//! `/v1/models`, `/v1/chat/completions` and `/v1/completions`.
//!
//! One definition serves both directions: `gemmactl serve` reads requests and writes replies
//! with these types, and gemmactl's remote engine writes requests and reads replies from other
//! servers (vLLM, llama.cpp's server, ollama, another `gemmactl serve`). Every field a server may
//! leave out has a default, and fields gemmactl does not know are kept in `other` so the server
//! can refuse those that would change the reply rather than ignore them. Only serde is used.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamOptions {
    /// Send one last chunk with the token counts (and no choices).
    #[serde(default)]
    pub include_usage: bool,
}

/// A message's `content`: text, or a list of typed parts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (`{"type": "text", "text": …}`, images, …).
    Parts(Vec<Value>),
}

/// One message of a chat request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text (absent on an assistant message that only calls tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Anything else the client sent (`name`, `tool_calls`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl ChatMessage {
    /// A text message.
    pub fn text(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.to_string(),
            content: Some(Content::Text(content.to_string())),
            other: Map::new(),
        }
    }
}

/// The sampling fields chat and text completions share.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sampling {
    /// Most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens` (chat only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Random seed for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Where to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Choices to generate (gemmactl makes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stream the reply as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Stream settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletionRequest {
    /// The model's id (see `/v1/models`).
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// How to sample.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Fields gemmactl does not read (`response_format`, `tools`, `user`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `response_format`: the form a reply must take.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// `{"type": "text"}`: free text (the default).
    Text,
    /// `{"type": "json_object"}`: any JSON object.
    JsonObject,
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}`:
    /// JSON that satisfies `schema`.
    JsonSchema {
        /// The schema's name (`name`); OpenAI requires one, gemmactl does not need it.
        name: Option<String>,
        /// The JSON Schema itself.
        schema: Value,
    },
}

impl ResponseFormat {
    /// Reads a request's `response_format`, or says in one sentence what is wrong with it.
    /// Read by hand rather than derived so that each mistake gets its own sentence.
    pub fn from_value(value: &Value) -> Result<ResponseFormat, String> {
        let Some(kind) = value.get("type") else {
            return Err(
                "response_format must be an object with a \"type\": use {\"type\": \"json_object\"}, {\"type\": \"json_schema\", \"json_schema\": {\"name\": …, \"schema\": {…}}} or {\"type\": \"text\"}"
                    .into(),
            );
        };
        match kind.as_str() {
            Some("text") => Ok(ResponseFormat::Text),
            Some("json_object") => Ok(ResponseFormat::JsonObject),
            Some("json_schema") => {
                let Some(spec) = value.get("json_schema").filter(|v| v.is_object()) else {
                    return Err("response_format json_schema needs a \"json_schema\" object holding the \"schema\": add {\"json_schema\": {\"name\": …, \"schema\": {…}}}".into());
                };
                let name = spec.get("name").and_then(Value::as_str).map(str::to_string);
                let Some(schema) = spec.get("schema") else {
                    return Err("response_format json_schema has no json_schema.schema: add the JSON Schema of the reply there".into());
                };
                Ok(ResponseFormat::JsonSchema {
                    name,
                    schema: schema.clone(),
                })
            }
            _ => Err(format!(
                "response_format type {kind} is not supported: use \"text\", \"json_object\" or \"json_schema\""
            )),
        }
    }

    /// The value a client sends for this format.
    pub fn to_value(&self) -> Value {
        match self {
            ResponseFormat::Text => serde_json::json!({"type": "text"}),
            ResponseFormat::JsonObject => serde_json::json!({"type": "json_object"}),
            ResponseFormat::JsonSchema { name, schema } => serde_json::json!({
                "type": "json_schema",
                "json_schema": {
                    "name": name.as_deref().unwrap_or("reply"),
                    "schema": schema,
                    "strict": true,
                },
            }),
        }
    }
}

/// `prompt`: one string, or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    One(String),
    /// Several prompts (gemmactl answers one).
    Many(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionRequest {
    /// The model's id.
    pub model: String,
    /// The text to continue.
    pub prompt: Prompt,
    /// How to sample.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Fields gemmactl does not read (`echo`, `suffix`, `logprobs`, …).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Token counts of a reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u32,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u32,
    /// How many prompt tokens came from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

impl Usage {
    /// Counts with their total, and the cached prompt tokens when there were any.
    pub fn new(prompt: u32, completion: u32, cached: u32) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: cached,
            }),
        }
    }
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PromptTokensDetails {
    /// Prompt tokens reused from the cache.
    #[serde(default)]
    pub cached_tokens: u32,
}

/// The assistant's message in a chat reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AssistantMessage {
    /// Always `assistant` in a reply; in a stream only on the first delta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a chat reply (or of a stream chunk, where `delta` replaces `message`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChatChoice {
    /// Always 0 here.
    #[serde(default)]
    pub index: u32,
    /// The whole reply (not streaming).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<AssistantMessage>,
    /// The next piece (streaming).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<AssistantMessage>,
    /// `stop` or `length` once the reply ends, else null.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Always null: gemmactl returns no log-probabilities.
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// A chat reply (`object` = `chat.completion`) or stream chunk (`chat.completion.chunk`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletion {
    /// The reply's id (`chatcmpl-…`), the same on every chunk.
    #[serde(default)]
    pub id: String,
    /// What this object is.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model's id.
    #[serde(default)]
    pub model: String,
    /// One choice (none on the last, usage-only chunk).
    #[serde(default)]
    pub choices: Vec<ChatChoice>,
    /// Token counts: on a reply, and on the last chunk when asked for.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One choice of a text completion (or of a stream chunk).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TextChoice {
    /// Always 0 here.
    #[serde(default)]
    pub index: u32,
    /// The text (a piece of it, streaming).
    #[serde(default)]
    pub text: String,
    /// `stop` or `length` once the reply ends, else null.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Always null.
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// A text completion (`object` = `text_completion`), whole or a stream chunk.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TextCompletion {
    /// The reply's id (`cmpl-…`).
    #[serde(default)]
    pub id: String,
    /// What this object is.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model's id.
    #[serde(default)]
    pub model: String,
    /// One choice (none on the last, usage-only chunk).
    #[serde(default)]
    pub choices: Vec<TextChoice>,
    /// Token counts.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One model of `GET /v1/models`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Model {
    /// The id to put in requests.
    pub id: String,
    /// Always `model`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Who provides it.
    #[serde(default)]
    pub owned_by: String,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelList {
    /// Always `list`.
    #[serde(default)]
    pub object: String,
    /// The models.
    #[serde(default)]
    pub data: Vec<Model>,
}

/// The body of every error reply: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, as one sentence and a kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    /// One sentence naming the thing and the fix.
    #[serde(default)]
    pub message: String,
    /// The error's family (`invalid_request_error`, `server_error`, …).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The request field at fault, if one is.
    #[serde(default)]
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, …).
    #[serde(default)]
    pub code: Option<Value>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn response_formats_read_in_openais_three_shapes() {
        let read = |v: Value| ResponseFormat::from_value(&v);
        assert_eq!(
            read(serde_json::json!({"type": "text"})),
            Ok(ResponseFormat::Text)
        );
        assert_eq!(
            read(serde_json::json!({"type": "json_object"})),
            Ok(ResponseFormat::JsonObject)
        );
        let f = read(serde_json::json!({"type": "json_schema", "json_schema": {"name": "mood", "schema": {"type": "string"}, "strict": true}})).unwrap();
        assert_eq!(
            f,
            ResponseFormat::JsonSchema {
                name: Some("mood".into()),
                schema: serde_json::json!({"type": "string"})
            }
        );
        assert_eq!(ResponseFormat::from_value(&f.to_value()), Ok(f));
        assert!(read(serde_json::json!({"type": "xml"}))
            .unwrap_err()
            .contains("\"xml\" is not supported"));
        assert!(read(serde_json::json!({"type": "json_schema"}))
            .unwrap_err()
            .contains("needs a \"json_schema\" object"));
        assert!(
            read(serde_json::json!({"type": "json_schema", "json_schema": {"name": "x"}}))
                .unwrap_err()
                .contains("json_schema.schema")
        );
        assert!(read(serde_json::json!("json_object"))
            .unwrap_err()
            .contains("must be an object"));
    }

    #[test]
    fn a_chat_request_reads_the_shapes_clients_send() {
        let body = r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi"}]}],
            "max_completion_tokens":5,"stop":"\n","stream":true,
            "stream_options":{"include_usage":true},"user":"me"}"#;
        let r: ChatCompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.sampling.max_completion_tokens, Some(5));
        assert_eq!(r.sampling.stop.clone().unwrap().into_vec(), ["\n"]);
        assert!(r.sampling.stream && r.sampling.stream_options.unwrap().include_usage);
        assert_eq!(r.other.get("user"), Some(&Value::from("me")));
        // What the sampling fields took is not left over for `other` too.
        assert!(
            !r.other.contains_key("max_completion_tokens"),
            "{:?}",
            r.other
        );
        assert!(matches!(r.messages[1].content, Some(Content::Parts(_))));
        let c: CompletionRequest =
            serde_json::from_str(r#"{"model":"m","prompt":["a"],"stop":["x","y"]}"#).unwrap();
        assert_eq!(c.prompt, Prompt::Many(vec!["a".into()]));
        assert!(!c.sampling.stream);
    }

    #[test]
    fn replies_leave_out_what_is_absent_and_read_back() {
        let reply = ChatCompletion {
            id: "chatcmpl-1".into(),
            object: "chat.completion.chunk".into(),
            choices: vec![ChatChoice {
                delta: Some(AssistantMessage {
                    role: None,
                    content: Some("Hi".into()),
                }),
                ..ChatChoice::default()
            }],
            ..ChatCompletion::default()
        };
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(
            json["choices"][0]["delta"],
            serde_json::json!({"content": "Hi"})
        );
        assert!(json["choices"][0]["finish_reason"].is_null());
        let back: ChatCompletion = serde_json::from_value(json).unwrap();
        assert_eq!(back, reply);
        let err: ErrorBody =
            serde_json::from_str(r#"{"error":{"message":"no","type":"x","code":404}}"#).unwrap();
        assert_eq!(err.error.code, Some(Value::from(404)));
    }
}

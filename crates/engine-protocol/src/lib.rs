//! The engine protocol, version 4: the JSON lines gemma-engine reads on stdin and writes on stdout.
//!
//! This crate is the single definition of the wire format: gemma-engine writes it and gemmactl's
//! engine adapter reads it, so the two sides cannot drift apart. gemmactl maps these types onto
//! its own domain types at the adapter, so a change here is never a change of the history
//! database. `docs/engine-protocol.md` describes every field with examples. Only serde is used (and
//! serde_json, for the JSON Schema a request may carry).

use serde::{Deserialize, Serialize};

/// Bumped whenever a change would break an existing reader or writer.
/// Version 2 added the finish reason `context`; version 3 added `params.grammar`, which an older
/// engine would skip as an unknown field and so generate free text where a form was asked for;
/// version 4 lets a message's `content` be a list of text and image parts, which an older engine
/// would refuse as a malformed command.
pub const PROTOCOL_VERSION: u32 = 4;

/// One line on the engine's stdin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Start generating a reply to a whole conversation.
    Generate(GenerateCommand),
    /// Stop a request: it ends with finish reason `cancelled` between two decode steps.
    Cancel {
        /// The `id` of the `generate` command to stop.
        id: String,
    },
    /// Forget a session's cached tokens and KV cache.
    DropSession {
        /// The session name that `generate` commands gave.
        session: String,
    },
    /// Finish nothing more and exit 0 (requests in flight end as `cancelled`).
    Shutdown,
}

/// A `generate` command: the conversation to answer, how to prompt the model and how to sample.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerateCommand {
    /// Chosen by the caller; echoed on every event of this request. Must be unique among the
    /// requests in flight.
    pub id: String,
    /// The whole conversation, oldest first. The engine keeps nothing but a cache.
    pub messages: Vec<Message>,
    /// Requests naming the same session reuse the KV cache of that session's previous request
    /// for the longest common prefix of tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// How the messages become the model's input (default: `auto`).
    #[serde(default)]
    pub prompt: PromptFormat,
    /// Sampling settings and limits for this request.
    #[serde(default)]
    pub params: SamplingParams,
}

/// One turn of the conversation sent to the engine.
///
/// On the wire `content` is either a string (every version) or, since version 4, a list of parts:
/// `{"type":"text","text":…}` and `{"type":"image","path":…}` / `{"type":"image","data":…}`.
/// Here the text parts are joined into [`Message::content`] and each image remembers the byte
/// offset of `content` it stood at, so the order of text and images survives a round trip and
/// text-only code keeps reading one string. A message without images is written as a string, as
/// version 3 wrote it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(into = "WireMessage", try_from = "WireMessage")]
pub struct Message {
    /// Who spoke the turn.
    pub role: Role,
    /// The turn's text, untemplated (all its text parts, in order).
    pub content: String,
    /// The turn's images, in order, each with its place in `content`.
    pub images: Vec<PlacedImage>,
}

impl Message {
    /// A text-only message.
    pub fn text(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            images: Vec::new(),
        }
    }

    /// The message as its parts, in order: text pieces and images. Empty text pieces are left
    /// out.
    pub fn parts(&self) -> Vec<Part> {
        let mut parts = Vec::new();
        let mut from = 0;
        for placed in &self.images {
            let at = placed.at.clamp(from, self.content.len());
            if at > from {
                parts.push(Part::Text {
                    text: self.content[from..at].to_string(),
                });
            }
            parts.push(Part::Image(placed.image.clone()));
            from = at;
        }
        if from < self.content.len() || parts.is_empty() {
            parts.push(Part::Text {
                text: self.content[from..].to_string(),
            });
        }
        parts
    }

    /// Joins parts back into a message (the inverse of [`Message::parts`]).
    pub fn from_parts(role: Role, parts: Vec<Part>) -> Message {
        let mut message = Message::text(role, String::new());
        for part in parts {
            match part {
                Part::Text { text } => message.content.push_str(&text),
                Part::Image(image) => message.images.push(PlacedImage {
                    at: message.content.len(),
                    image,
                }),
            }
        }
        message
    }
}

/// An image of a message and where it stands in the message's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedImage {
    /// Byte offset into [`Message::content`] (on a character boundary, at most its length): the
    /// image comes after `content[..at]`.
    pub at: usize,
    /// Where the image's bytes are.
    pub image: ImageSource,
}

/// Where an image's bytes come from: a file the engine reads, or the bytes themselves.
///
/// Either way they are an encoded image file (PNG, JPEG, WebP, GIF, BMP, PNM…); the engine
/// decodes them itself, refusing what is not an image, is cut short, or is larger than it allows
/// (error code `bad_image`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ImageSource {
    /// A file the engine may read: an absolute path.
    Path {
        /// The file.
        path: String,
    },
    /// The file's bytes, base64 (RFC 4648, standard alphabet, padded).
    Data {
        /// The base64 text.
        data: String,
    },
}

/// One part of a message's content on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// A piece of text.
    Text {
        /// The text.
        text: String,
    },
    /// An image.
    Image(ImageSource),
}

/// A message as JSON spells it: content as a string or as parts.
#[derive(Serialize, Deserialize)]
struct WireMessage {
    role: Role,
    content: WireContent,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<Part>),
}

impl From<Message> for WireMessage {
    fn from(message: Message) -> WireMessage {
        let content = if message.images.is_empty() {
            WireContent::Text(message.content)
        } else {
            WireContent::Parts(message.parts())
        };
        WireMessage {
            role: message.role,
            content,
        }
    }
}

impl TryFrom<WireMessage> for Message {
    type Error = String;

    fn try_from(wire: WireMessage) -> Result<Message, String> {
        Ok(match wire.content {
            WireContent::Text(text) => Message::text(wire.role, text),
            WireContent::Parts(parts) => Message::from_parts(wire.role, parts),
        })
    }
}

/// Who spoke a message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person's turns.
    User,
    /// The model's own turns (`model` is accepted as an alias, as Gemma names it).
    #[serde(alias = "model")]
    Assistant,
}

/// How the conversation becomes the model's input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum PromptFormat {
    /// The chat template when the model file has one, plain completion otherwise.
    #[default]
    Auto,
    /// A chat template: `template` names one of llama.cpp's built-in templates (e.g. `gemma`);
    /// absent means the model file's own (an error if it has none).
    Chat {
        /// A llama.cpp built-in template name; absent means the model file's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
    },
    /// No template: message texts are concatenated in order (a system message is followed by a
    /// blank line) and continued as plain text.
    Completion,
    /// Fill in the middle: the message texts (as for `completion`) are the code before the
    /// cursor, `suffix` the code after it, and the reply is what goes between. The prompt is the
    /// vocabulary's own fill-in-the-middle tokens around the two texts; a model whose vocabulary
    /// has none is refused (`bad_request`). `ready.model.fill_in_middle` says which models can.
    FillInMiddle {
        /// The code after the cursor (may be empty).
        #[serde(default)]
        suffix: String,
    },
}

/// How tokens are chosen and when generation stops; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SamplingParams {
    /// Most tokens to generate; absent means until end of sequence or the context is full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (default 0.8); 0 means greedy.
    pub temperature: f32,
    /// Candidates kept for top-k sampling (default 40); 0 disables top-k.
    pub top_k: u32,
    /// Nucleus sampling; absent means the engine's default (gemma-engine: 0.95), 1.0 disables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Random seed, for reproducible sampling; absent means a time-based seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
    /// Generation stops before the first occurrence of any of these strings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The form the reply must take (structured output); absent means free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grammar: Option<Grammar>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: None,
            temperature: 0.8,
            top_k: 40,
            top_p: None,
            seed: None,
            stop: Vec::new(),
            grammar: None,
        }
    }
}

/// A constraint on the form of a reply: only tokens that keep the reply inside it are sampled,
/// and the reply can end only where it is complete. A constraint the engine cannot use is refused
/// with `bad_request` before anything is generated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Grammar {
    /// A JSON Schema: the reply is one JSON value that satisfies it, as far as llama.cpp's
    /// schema-to-grammar converter enforces its keywords.
    JsonSchema(serde_json::Value),
    /// A grammar in llama.cpp's GBNF notation; the reply matches its `root` rule.
    Gbnf(String),
}

/// One line on the engine's stdout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Model loading progress, a fraction from 0 to 1 (weighted by bytes read).
    Loading {
        /// Fraction of the model read, 0 to 1.
        progress: f32,
    },
    /// The model is loaded and requests are accepted. Sent exactly once.
    Ready(ReadyInfo),
    /// The answer to `--probe`: what this build can use, with no model loaded.
    Probe(ProbeInfo),
    /// Prompt processing (prefill) of one request advanced: `done` of its `total` prompt tokens
    /// are in the KV cache (cached ones included). Sent after each prompt chunk, so front ends can
    /// show progress while a long conversation is read.
    Progress {
        /// The request.
        id: String,
        /// Prompt tokens in the cache so far.
        done: u32,
        /// Prompt tokens in all.
        total: u32,
    },
    /// Generated text of one request, in order. Concatenated, the pieces are the reply.
    Token {
        /// The request.
        id: String,
        /// The next piece of the reply.
        text: String,
    },
    /// The last event of a request that produced a reply (possibly empty or cut short).
    Done(DoneInfo),
    /// A failure. With an `id`, the last event of that request; without, it concerns the engine
    /// (a malformed command line, or a load failure after which the engine exits 1).
    Error(ErrorInfo),
}

/// The `ready` event: the loaded model and the settings in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReadyInfo {
    /// The protocol version the engine speaks ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// What the engine learned about the loaded model.
    pub model: ModelFacts,
    /// Backends compiled into this build (e.g. `["CPU"]`, `["CUDA", "CPU"]`).
    pub backends: Vec<String>,
    /// Devices holding this model's layers.
    pub devices: Vec<Device>,
    /// Layers offloaded to a GPU device (0 on a CPU-only run).
    pub gpu_layers: u32,
    /// Context length in tokens shared by all sequences.
    pub context: u32,
    /// Requests decoded together at most; more wait in the engine's queue.
    pub parallel: u32,
    /// CPU threads used for prefill and decode.
    pub threads: u32,
    /// Why that many threads, when the engine chose them (no `--threads` given): absent from
    /// engines before this field, and when the count was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_reason: Option<String>,
    /// Element type of the KV cache's keys and values (`--kv-cache-type`); engines before this
    /// field always used `f16`.
    #[serde(default)]
    pub kv_cache_type: KvCacheType,
    /// Flash attention as asked (`--flash-attention`); engines before this field used `auto`.
    #[serde(default)]
    pub flash_attention: FlashAttention,
    /// Milliseconds from the start of loading to ready.
    pub load_ms: u64,
    /// The vision projector loaded beside the model (`--mmproj`), so messages may hold images;
    /// absent when none was given, and from engines before version 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<VisionFacts>,
}

/// What the engine learned about the vision projector it loaded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VisionFacts {
    /// The projector file.
    pub path: String,
    /// The projector's type from its metadata (`clip.projector_type`, e.g. `gemma3`).
    pub projector_type: Option<String>,
    /// Side of the square the encoder sees, in pixels: images are resized to it.
    pub image_size: u32,
    /// Tokens one image takes in the context.
    pub tokens_per_image: u32,
    /// Width of the embeddings the projector writes; equals the model's embedding length.
    pub embedding_length: u32,
}

/// Element type of the KV cache's keys and values: llama.cpp's `type_k` and `type_v`, set alike.
///
/// The quantized types are ggml's block formats (`ggml/src/ggml-common.h`): `q8_0` stores 32
/// values in 34 bytes, `q4_0` in 18, against 64 for `f16`. A quantized V cache needs flash
/// attention (llama.cpp refuses the context otherwise), so [`FlashAttention::Off`] goes with `f16`
/// only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub enum KvCacheType {
    /// Half precision: llama.cpp's default, exact.
    #[default]
    #[serde(rename = "f16")]
    F16,
    /// 8-bit blocks: about half the memory of `f16`.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit blocks: about a quarter.
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl KvCacheType {
    /// Every type, in the order help texts list them.
    pub const ALL: [KvCacheType; 3] = [KvCacheType::F16, KvCacheType::Q8_0, KvCacheType::Q4_0];

    /// The name flags, config files and the protocol use.
    pub fn as_str(self) -> &'static str {
        match self {
            KvCacheType::F16 => "f16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q4_0 => "q4_0",
        }
    }

    /// Bytes one block of 32 values takes (ggml's block sizes).
    pub fn bytes_per_32_values(self) -> u64 {
        match self {
            KvCacheType::F16 => 64,
            KvCacheType::Q8_0 => 34,
            KvCacheType::Q4_0 => 18,
        }
    }

    /// Whether llama.cpp needs flash attention for this type in the V cache.
    pub fn needs_flash_attention(self) -> bool {
        self != KvCacheType::F16
    }
}

impl std::fmt::Display for KvCacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KvCacheType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        KvCacheType::ALL
            .into_iter()
            .find(|t| t.as_str() == wanted)
            .ok_or_else(|| format!("{text:?} is not a KV cache type: use f16, q8_0 or q4_0"))
    }
}

/// Flash attention: llama.cpp's fused attention kernel, which also lets the V cache be quantized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttention {
    /// llama.cpp decides: on where every device holding the model supports it.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl FlashAttention {
    /// Every setting, in the order help texts list them.
    pub const ALL: [FlashAttention; 3] = [
        FlashAttention::Auto,
        FlashAttention::On,
        FlashAttention::Off,
    ];

    /// The name flags, config files and the protocol use.
    pub fn as_str(self) -> &'static str {
        match self {
            FlashAttention::Auto => "auto",
            FlashAttention::On => "on",
            FlashAttention::Off => "off",
        }
    }
}

impl std::fmt::Display for FlashAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FlashAttention {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        FlashAttention::ALL
            .into_iter()
            .find(|t| t.as_str() == wanted)
            .ok_or_else(|| {
                format!("{text:?} is not a flash attention setting: use auto, on or off")
            })
    }
}

// Read through `FromStr`, so a config file, an environment variable and a flag accept the same
// spellings (case and surrounding spaces ignored) and are refused with the same sentence.
impl<'de> Deserialize<'de> for KvCacheType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for FlashAttention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The one combination llama.cpp refuses: a quantized V cache without flash attention. The
/// sentence names both settings and the fix.
pub fn check_kv_settings(kv: KvCacheType, flash: FlashAttention) -> Result<(), String> {
    if kv.needs_flash_attention() && flash == FlashAttention::Off {
        return Err(format!(
            "a {kv} KV cache needs flash attention: set flash attention to auto or on, or use the f16 KV cache"
        ));
    }
    Ok(())
}

/// Facts about the loaded model, read from its GGUF file by llama.cpp.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelFacts {
    /// The model file the engine loaded.
    pub path: String,
    /// The model's name from its metadata (`general.name`), if it has one.
    pub name: Option<String>,
    /// The model's architecture from its metadata (e.g. `gemma3`), if it has one.
    pub architecture: Option<String>,
    /// Context length the model was trained for, in tokens.
    pub train_context: u32,
    /// Number of weights (parameters) in the model.
    pub parameters: u64,
    /// Transformer layers (blocks) in the model.
    pub layers: u32,
    /// Size of the model file in bytes.
    pub size_bytes: u64,
    /// The model file's own chat template, if any.
    pub chat_template: Option<String>,
    /// Sliding-window size of the model's local-attention layers in tokens (0 if none).
    pub sliding_window: u32,
    /// The vocabulary has fill-in-the-middle tokens (prefix, suffix, middle), so the
    /// `fill_in_middle` prompt format can be used. Absent (false) from engines before it existed.
    #[serde(default)]
    pub fill_in_middle: bool,
}

/// The `probe` event: what this engine build can use, with no model loaded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeInfo {
    /// The protocol version the engine speaks ([`PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// Backends compiled into this build (e.g. `["CPU"]`, `["CUDA", "CPU"]`).
    pub backends: Vec<String>,
    /// Every device those backends can see.
    pub devices: Vec<Device>,
    /// Cargo features this engine was built with (`cuda`, `vulkan`, ...).
    pub features: Vec<String>,
    /// CPU extensions llama.cpp's CPU backend was compiled for, by ggml's names (`AVX2`,
    /// `AVX512`, `AVX512_VNNI`, `AMX_INT8`, …; ggml's `ggml_cpu_has_*`). A CPU, or an OS, that
    /// cannot run one of them ends the engine with SIGILL. Absent from engines older than this
    /// field: empty.
    #[serde(default)]
    pub cpu_features: Vec<String>,
    /// This build can load a vision projector (`--mmproj`: llama.cpp's multimodal library is
    /// compiled in). Absent (false) from engines before version 4.
    #[serde(default)]
    pub vision: bool,
}

/// A compute device as llama.cpp's backend registry reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Device {
    /// The backend's short name for it (e.g. `CPU`, `CUDA0`).
    pub name: String,
    /// A longer, human description (e.g. the CPU or GPU model).
    pub description: String,
    /// The backend that drives it (e.g. `CPU`, `CUDA`, `Vulkan`).
    pub backend: String,
    /// `cpu`, `gpu`, `igpu`, `accel` or `unknown`.
    pub kind: String,
    /// The device's memory in bytes.
    pub memory_total: u64,
    /// The device's free memory in bytes, when the event was written.
    pub memory_free: u64,
}

/// Why a reply ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn (end-of-sequence token) or a stop string was met.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context is full: no room for another token (the reply is cut, not finished).
    Context,
    /// A `cancel` command (or `shutdown`) stopped it.
    Cancelled,
    /// Used by gemmactl for replies cut short by a failure; the engine itself sends `error`.
    Error,
}

/// Token counts of one request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    /// Tokens of the whole prompt (the conversation after templating).
    pub prompt_tokens: u32,
    /// Prompt tokens found in the session's cache and not read again.
    pub cached_tokens: u32,
    /// Tokens generated (an end-of-sequence token is not counted).
    pub completion_tokens: u32,
    /// Of `prompt_tokens`, those standing for images. Absent (0) from engines before version 4.
    #[serde(default)]
    pub image_tokens: u32,
}

/// How long one request took, and how fast it went.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timings {
    /// Milliseconds spent waiting for a free sequence slot before work started.
    pub queue_ms: f64,
    /// Time to first token: milliseconds from the request's arrival to its first generated token.
    pub ttft_ms: f64,
    /// Prompt tokens read per second (excluding cached ones).
    pub prefill_tokens_per_s: f64,
    /// Generated tokens per second after the first one.
    pub decode_tokens_per_s: f64,
    /// Milliseconds from the request's arrival to its `done` event.
    pub total_ms: f64,
}

/// The `done` event: how a request's reply ended, with its counts and timings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DoneInfo {
    /// The request.
    pub id: String,
    /// Why the reply ended.
    pub finish_reason: FinishReason,
    /// Token counts of the request.
    pub usage: Usage,
    /// Timings of the request.
    pub timings: Timings,
}

/// The `error` event: what failed, as a code to branch on and a sentence to show.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorInfo {
    /// The request that failed; absent when the failure concerns the engine itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The kind of failure.
    pub code: ErrorCode,
    /// One sentence naming the thing and the fix.
    pub message: String,
    /// The file concerned, for failures to load a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The kind of an `error` event, for callers that branch on it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The model file does not exist.
    ModelNotFound,
    /// The model file exists but cannot be read (permissions, I/O error).
    ModelUnreadable,
    /// The file is not a GGUF model (or is a GGUF version this engine cannot read).
    NotGguf,
    /// The GGUF file is shorter than its header says.
    ModelTruncated,
    /// llama.cpp does not know the model's architecture.
    UnsupportedArchitecture,
    /// llama.cpp refused the file for another reason (the message carries its words).
    LoadFailed,
    /// Memory for the weights, the KV cache or the compute buffers could not be had.
    OutOfMemory,
    /// The conversation does not fit in the context.
    ContextOverflow,
    /// A command line that is not valid JSON or not a known command.
    BadCommand,
    /// A well-formed request the engine cannot serve (empty conversation, duplicate id, no
    /// chat template, bad parameter).
    BadRequest,
    /// `cancel` named no request in flight.
    UnknownRequest,
    /// llama.cpp failed while decoding.
    DecodeFailed,
    /// The engine's command-line arguments are wrong.
    BadArguments,
    /// An image of the request cannot be used: unreadable, not an image, cut short, an
    /// unsupported format, or larger than the engine allows.
    BadImage,
    /// The request holds an image and no vision projector is loaded (or this build has none).
    NoVision,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_as_a_string_or_as_parts_and_keeps_its_order() {
        let old: Message = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(old, Message::text(Role::User, "hi"));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"role":"user","content":"hi"}"#
        );

        let json = r#"{"role":"user","content":[{"type":"text","text":"Compare "},{"type":"image","path":"/a.png"},{"type":"text","text":" with "},{"type":"image","data":"iVBO"}]}"#;
        let m: Message = serde_json::from_str(json).unwrap();
        assert_eq!(m.content, "Compare  with ");
        assert_eq!(m.images.len(), 2);
        assert_eq!(m.images[0].at, 8);
        assert_eq!(m.images[1].at, 14);
        assert_eq!(
            m.images[1].image,
            ImageSource::Data {
                data: "iVBO".into()
            }
        );
        assert_eq!(serde_json::to_string(&m).unwrap(), json);

        // An image first, and one last, with no text beside them.
        let m: Message =
            serde_json::from_str(r#"{"role":"user","content":[{"type":"image","path":"/a.png"}]}"#)
                .unwrap();
        assert_eq!((m.content.as_str(), m.images[0].at), ("", 0));
        assert_eq!(m.parts().len(), 1);

        let bad = serde_json::from_str::<Message>(
            r#"{"role":"user","content":[{"type":"audio","path":"/a.wav"}]}"#,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn kv_settings_read_as_they_are_written_and_in_any_case() {
        for t in KvCacheType::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<KvCacheType>(&json).unwrap(), t);
        }
        for f in FlashAttention::ALL {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<FlashAttention>(&json).unwrap(), f);
        }
        assert_eq!(" Q8_0 ".parse::<KvCacheType>(), Ok(KvCacheType::Q8_0));
        assert_eq!("ON".parse::<FlashAttention>(), Ok(FlashAttention::On));
        let err = serde_json::from_str::<KvCacheType>("\"q5_1\"").unwrap_err();
        assert!(err.to_string().contains("is not a KV cache type"), "{err}");
    }

    #[test]
    fn only_a_quantized_cache_without_flash_attention_is_refused() {
        for t in KvCacheType::ALL {
            for f in FlashAttention::ALL {
                let refused = check_kv_settings(t, f).is_err();
                assert_eq!(
                    refused,
                    t != KvCacheType::F16 && f == FlashAttention::Off,
                    "{t}/{f}"
                );
            }
        }
    }
}

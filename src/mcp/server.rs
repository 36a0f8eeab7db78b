//! The MCP server: the tools, each one call on the turn service.
//!
//! Every tool call is its own [`Thread`] on the one [`TurnService`] of the process (one
//! supervisor: engines stay warm between calls, concurrent calls are queued and batched by it,
//! and its queue bound refuses what does not fit). The thread is tagged with the client's name,
//! so every call lands in the history as `mcp` from that client (unless `--no-log`). What the
//! turn yields is rendered by `progress.rs`.
//!
//! Failures a calling model can act on — a bad value, an unknown or missing model, a full
//! queue, a context overflow, an image outside the allowed folders — are tool results with
//! `isError: true` and one sentence; rmcp answers protocol failures (an unknown tool, a
//! malformed request) with JSON-RPC errors itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::handler::server::common::{schema_for_empty_input, schema_for_input};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{Implementation, JsonObject, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, Json, RoleServer, ServerHandler};
use schemars::JsonSchema;

use super::code::{tidy, Boundary};
use super::images::ImagePolicy;
use super::progress::{render, Call, Reporter, Stopped, FLUSH_EVERY};
use super::tools::*;
use crate::chat::{PromptStyle, Thread, TurnEnd, TurnService};
use crate::domain::{Completion, FinishReason, Image, Origin, SamplingParams, Source};
use crate::models::{self, ModelEntry};
use crate::store::ConversationId;
use crate::supervisor::status::{self, EngineStatus};
use crate::supervisor::Phase;

// A tool's result is structured output, or one sentence for the calling model. Tools return
// `Result<Json<T>, String>` spelled out: rmcp's `#[tool]` macro derives the published
// `outputSchema` from that exact return type, and a type alias hides it.

/// Bytes of prompt per token of context beyond which a prompt cannot fit, whatever its
/// tokens: a refusal before 10 MB are stored and tokenized only to be refused by the engine.
const MAX_BYTES_PER_TOKEN: usize = 32;

/// The server: the tools and what they share.
#[derive(Clone)]
pub(crate) struct GemmaServer {
    state: Arc<State>,
    tool_router: ToolRouter<GemmaServer>,
}

struct State {
    service: TurnService,
    /// The model a call gets when it names none.
    default_model: String,
    images: ImagePolicy,
    /// One turn at a time per stored conversation, so two `chat` calls on one conversation
    /// answer in order instead of forking it.
    conversations: Mutex<HashMap<ConversationId, Arc<tokio::sync::Mutex<()>>>>,
}

/// A tool's input schema from its argument type.
fn input_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    // Every argument type is an object (a unit test checks), so the fallback is never taken.
    schema_for_input::<T>().unwrap_or_else(|_| schema_for_empty_input())
}

fn finish_name(reason: FinishReason) -> String {
    reason.to_string()
}

impl GemmaServer {
    /// A server whose calls run on `service`.
    pub(crate) fn new(service: TurnService, default_model: String, images: ImagePolicy) -> Self {
        GemmaServer {
            state: Arc::new(State {
                service,
                default_model,
                images,
                conversations: Mutex::default(),
            }),
            tool_router: Self::tool_router(),
        }
    }

    fn service(&self) -> &TurnService {
        &self.state.service
    }

    fn origin(&self, call: &Call) -> Origin {
        Origin {
            source: Source::Mcp,
            client: call.client.clone(),
            batch: None,
        }
    }

    /// The model a call names, else the default; a sentence if it cannot be used.
    fn model(&self, name: Option<&str>) -> Result<ModelEntry, String> {
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.state.default_model);
        models::resolve(self.service().paths(), name).map_err(|e| e.to_string())
    }

    /// The context a model runs (or would run) with.
    fn context_of(&self, model: &ModelEntry) -> u32 {
        self.service()
            .supervisor()
            .and_then(|s| s.engine_of(&model.name))
            .map(|d| d.context)
            .unwrap_or(self.service().config().engine.context)
    }

    /// Refuses a text that cannot fit the model's context whatever it says.
    fn check_size(&self, what: &str, text: &str, model: &ModelEntry) -> Result<(), String> {
        let context = self.context_of(model) as usize;
        let limit = context * MAX_BYTES_PER_TOKEN;
        if text.len() > limit {
            return Err(format!(
                "argument `{what}` is {} bytes, far more than the {context}-token context of model {} can hold: send at most about {} KB, or raise the context (--context, engine.context)",
                text.len(),
                model.name,
                limit / 1024 / 8
            ));
        }
        Ok(())
    }

    /// The end of a rendered turn as a result, or the sentence saying why it failed.
    fn completion(end: &TurnEnd) -> Result<&Completion, String> {
        end.result.as_ref().map_err(|e| e.to_string())
    }

    /// Runs a turn of `thread` on `text`, rendering it for `call`.
    async fn turn(
        thread: &mut Thread,
        call: &Call,
        text: &str,
        max_tokens: u32,
        cut: impl FnMut(&str) -> bool,
    ) -> Result<(TurnEnd, bool), String> {
        let model = thread.model().name.clone();
        // A full queue is refused here, at once.
        let mut turn = thread.send(text).map_err(|e| format!("{e:#}"))?;
        match render(&mut turn, call, &model, max_tokens, cut).await {
            Ok(ended) => Ok(ended),
            // Nothing reaches the client for a cancelled call; the turn is stored as cancelled.
            Err(Stopped::Cancelled) => Err("the call was cancelled".into()),
        }
    }
}

#[allow(unreachable_pub)]
#[tool_router]
impl GemmaServer {
    #[tool(
        description = "Generate text with a local Gemma model that gemmactl keeps loaded: continue a text (base models) or answer a prompt (instruction-tuned models). Returns the whole text, why it ended, token counts, timings, the model and where it ran. Sends progress notifications (the new text) while the model loads and writes.",
        input_schema = input_schema::<GenerateTextArgs>()
    )]
    async fn generate_text(
        &self,
        arguments: JsonObject,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<GenerateTextOutput>, String> {
        let args: GenerateTextArgs = parse("generate_text", arguments)?;
        let params = args.params()?;
        if args.prompt.trim().is_empty() {
            return Err("argument `prompt` is empty: give the text to answer or continue".into());
        }
        let model = self.model(args.model.as_deref())?;
        self.check_size("prompt", &args.prompt, &model)?;
        let call = Call::new(&context);
        let system = Some(args.system).filter(|s| !s.trim().is_empty());
        let mut thread = Thread::new(self.service(), model, system, params, PromptStyle::OneShot);
        thread.set_origin(self.origin(&call));
        let (end, _) =
            Self::turn(&mut thread, &call, &args.prompt, args.max_tokens, |_| false).await?;
        let done = Self::completion(&end)?;
        let (engine, backend) = engine_and_backend(end.engine.as_ref());
        Ok(Json(GenerateTextOutput {
            finish_reason: finish_name(done.finish_reason),
            usage: done.into(),
            timings: done.into(),
            text: end.text.clone(),
            model: thread.model().name.clone(),
            engine,
            backend,
        }))
    }

    #[tool(
        description = "Complete code at a cursor with a local model: give the code before the cursor (prefix) and, if any, after it (suffix); returns only the code to insert. Code models with fill-in-the-middle tokens (e.g. qwen2.5-coder-0.5b) see the suffix; others continue the prefix and stop at the end of the block or before the suffix's first line. Fences and chatter are removed.",
        input_schema = input_schema::<CompleteCodeArgs>()
    )]
    async fn complete_code(
        &self,
        arguments: JsonObject,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<CompleteCodeOutput>, String> {
        let args: CompleteCodeArgs = parse("complete_code", arguments)?;
        check_max_tokens(args.max_tokens)?;
        if args.prefix.trim().is_empty() && args.suffix.trim().is_empty() {
            return Err("arguments `prefix` and `suffix` are both empty: give the code before the cursor (and after it, if any)".into());
        }
        let model = self.model(args.model.as_deref())?;
        self.check_size("prefix", &format!("{}{}", args.prefix, args.suffix), &model)?;
        let call = Call::new(&context);
        let fim = self.fill_in_middle(&model, &call, args.max_tokens).await?;
        if !fim && args.prefix.trim().is_empty() {
            return Err(format!("argument `prefix` is empty, and model {} has no fill-in-the-middle tokens to write code before a suffix: give the code before the cursor, or use a code model such as qwen2.5-coder-0.5b", model.name));
        }
        let boundary = Boundary::new(&args.prefix, &args.suffix, !fim);
        let params = SamplingParams {
            max_tokens: Some(args.max_tokens),
            // Code is wanted as the model thinks most likely, the same each time.
            temperature: 0.0,
            stop: boundary.stop_strings(),
            ..SamplingParams::default()
        };
        let mut thread = Thread::new(self.service(), model, None, params, PromptStyle::Raw);
        thread.set_origin(self.origin(&call));
        if fim {
            thread.fill_in_middle(args.suffix.clone());
        }
        let (end, was_cut) =
            Self::turn(&mut thread, &call, &args.prefix, args.max_tokens, |text| {
                boundary.find(text).is_some()
            })
            .await?;
        let done = Self::completion(&end)?;
        let finish = if was_cut {
            FinishReason::Stop
        } else {
            done.finish_reason
        };
        Ok(Json(CompleteCodeOutput {
            code: tidy(
                &end.text,
                &args.prefix,
                &args.suffix,
                &args.language,
                &boundary,
            ),
            method: if fim { "fill_in_middle" } else { "completion" }.into(),
            finish_reason: finish_name(finish),
            model: thread.model().name.clone(),
            usage: done.into(),
        }))
    }

    #[tool(
        description = "Chat with a local model, keeping the conversation: returns the reply and a conversation_id; pass it back to continue (the model sees the earlier turns). Conversations are stored in gemmactl's history and can also be continued with `gemmactl chat --resume ID`; conversations of `gemmactl chat` can be continued here.",
        input_schema = input_schema::<ChatArgs>()
    )]
    async fn chat(
        &self,
        arguments: JsonObject,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ChatOutput>, String> {
        let args: ChatArgs = parse("chat", arguments)?;
        check_max_tokens(args.max_tokens)?;
        if args.message.trim().is_empty() {
            return Err("argument `message` is empty: give the next user message".into());
        }
        let resume = args.conversation_id.map(ConversationId);
        let stored_model = match resume {
            Some(id) => {
                let Some(store) = self.service().store() else {
                    return Err("this server keeps no history (--no-log), so conversation_id cannot be used: leave it out to start a new conversation".into());
                };
                store.conversation(id).map_err(|e| e.to_string())?.model
            }
            None => None,
        };
        let model = self.model(args.model.as_deref().or(stored_model.as_deref()))?;
        self.check_size("message", &args.message, &model)?;
        let call = Call::new(&context);
        let _turn_lock = match resume {
            Some(id) => Some(self.conversation_lock(id).lock_owned().await),
            None => None,
        };
        let params = SamplingParams {
            max_tokens: Some(args.max_tokens),
            ..SamplingParams::default()
        };
        let system = Some(args.system).filter(|s| !s.trim().is_empty());
        let mut thread = Thread::new(
            self.service(),
            model,
            system.clone(),
            params,
            PromptStyle::Conversation,
        );
        thread.set_origin(self.origin(&call));
        if let Some(id) = resume {
            thread.resume(id, system).map_err(|e| format!("{e:#}"))?;
        }
        let (end, _) = Self::turn(&mut thread, &call, &args.message, args.max_tokens, |_| {
            false
        })
        .await?;
        let done = Self::completion(&end)?;
        Ok(Json(ChatOutput {
            reply: end.text.clone(),
            conversation_id: thread.id().map_or(0, |id| id.0),
            finish_reason: finish_name(done.finish_reason),
            model: thread.model().name.clone(),
        }))
    }

    #[tool(
        description = "Answer a prompt about an image file with a vision-capable local model. The image must lie in a folder the user allowed (by default the server's working folder).",
        input_schema = input_schema::<AnalyzeImageArgs>()
    )]
    async fn analyze_image(
        &self,
        arguments: JsonObject,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<AnalyzeImageOutput>, String> {
        let args: AnalyzeImageArgs = parse("analyze_image", arguments)?;
        check_max_tokens(args.max_tokens)?;
        // The image is checked (and, for a path, its folder) before anything is stored.
        let image = match (&args.image_path, &args.image_data) {
            (Some(path), None) => {
                let real = self.state.images.check(path)?;
                Image::from_file(&real).map_err(|e| e.to_string())?
            }
            (None, Some(data)) => {
                Image::from_base64(data, "argument `image_data`").map_err(|e| e.to_string())?
            }
            (Some(_), Some(_)) => {
                return Err("arguments `image_path` and `image_data` are both given: give one image, as a file or as base64".into())
            }
            (None, None) => {
                return Err("no image given: pass `image_path` (a file) or `image_data` (base64, or a data: URL)".into())
            }
        };
        if args.prompt.trim().is_empty() {
            return Err("argument `prompt` is empty: say what to do with the image".into());
        }
        let model = self.model(args.model.as_deref())?;
        self.check_size("prompt", &args.prompt, &model)?;
        let call = Call::new(&context);
        let params = SamplingParams {
            max_tokens: Some(args.max_tokens),
            ..SamplingParams::default()
        };
        let mut thread = Thread::new(self.service(), model, None, params, PromptStyle::OneShot);
        thread.set_origin(self.origin(&call));
        let model_name = thread.model().name.clone();
        // The image comes before the prompt's text, as a question about it reads.
        let mut turn = thread
            .send_with_images(&args.prompt, vec![image.placed(0)])
            .map_err(|e| format!("{e:#}"))?;
        let end = match render(&mut turn, &call, &model_name, args.max_tokens, |_| false).await {
            Ok((end, _)) => end,
            Err(Stopped::Cancelled) => return Err("the call was cancelled".into()),
        };
        drop(turn);
        let done = Self::completion(&end)?;
        Ok(Json(AnalyzeImageOutput {
            text: end.text.clone(),
            model: model_name,
            finish_reason: finish_name(done.finish_reason),
        }))
    }

    #[tool(
        description = "List the local models gemmactl can run: name, engine, backend, state (loaded, idle, not loaded, …), context length, vision yes/no, and kind (base or instruct).",
        input_schema = schema_for_empty_input()
    )]
    async fn list_models(&self) -> Result<Json<ListModelsOutput>, String> {
        let listed = models::listing(self.service().paths()).map_err(|e| e.to_string())?;
        let engines: Vec<EngineStatus> = match self.service().supervisor() {
            Some(supervisor) => supervisor.status().engines,
            // Attached to a `gemmactl serve`: its engines, as it publishes them for `ps`.
            None => status::read_all(&self.service().paths().run_dir())
                .into_iter()
                .flat_map(|p| p.engines)
                .collect(),
        };
        let config = self.service().config();
        let models = listed
            .into_iter()
            .map(|m| {
                let running = engines.iter().find(|e| e.model == m.name);
                let state = match running.map(|e| e.state) {
                    _ if !m.registered => "not downloaded",
                    Some(Phase::Busy) => "loaded",
                    Some(Phase::Ready) => "idle",
                    Some(Phase::Starting) => "loading",
                    Some(Phase::Failed) => "failed",
                    _ => "not loaded",
                };
                let trained = (m.registered && m.format == models::ModelFormat::Gguf)
                    .then(|| trained_context(self.service().paths(), &m.name))
                    .flatten();
                let context_length =
                    running
                        .and_then(|e| e.context)
                        .unwrap_or_else(|| match trained {
                            Some(t) => t.min(config.engine.context),
                            None => config.engine.context,
                        });
                ModelInfo {
                    engine: m.engine.to_string(),
                    backend: running
                        .and_then(|e| e.backend)
                        .map(|b| b.label().to_string())
                        .unwrap_or_else(|| "not loaded".into()),
                    state: state.into(),
                    context_length,
                    vision: false,
                    kind: m.kind.as_str().into(),
                    name: m.name,
                }
            })
            .collect();
        Ok(Json(ListModelsOutput {
            models,
            default_model: self.state.default_model.clone(),
        }))
    }
}

/// The context length a registered GGUF model was trained for, from its file's header.
fn trained_context(paths: &crate::config::Paths, name: &str) -> Option<u32> {
    let entry = models::lookup(paths, name).ok()?;
    let info = models::preflight(&entry).ok()?;
    info.context_length
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
}

impl GemmaServer {
    /// The lock that keeps one conversation's turns in order.
    fn conversation_lock(&self, id: ConversationId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .state
            .conversations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Locks nobody holds or waits for are forgotten, so the map stays small.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(id).or_default().clone()
    }

    /// Whether `model`'s vocabulary has fill-in-the-middle tokens. Only its engine knows, so
    /// the model is loaded first (with progress for `call`) when it is not running.
    async fn fill_in_middle(
        &self,
        model: &ModelEntry,
        call: &Call,
        max_tokens: u32,
    ) -> Result<bool, String> {
        let Some(supervisor) = self.service().supervisor() else {
            // Attached to a `gemmactl serve`, whose engines this process cannot ask: the prefix
            // is continued instead (`gemmactl mcp --local` asks the model itself).
            return Ok(false);
        };
        if let Some(d) = supervisor.engine_of(&model.name) {
            return Ok(d.model.fill_in_middle);
        }
        let (tx, mut loading) = tokio::sync::mpsc::unbounded_channel();
        let load = supervisor.preload(model, move |p| {
            let _ = tx.send(p);
        });
        tokio::pin!(load);
        let mut reporter = Reporter::new(call, max_tokens);
        let mut ticker = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                loaded = &mut load => {
                    return loaded.map(|d| d.model.fill_in_middle).map_err(|e| e.to_string());
                }
                Some(p) = loading.recv() => {
                    reporter.loading(&model.name, p);
                    reporter.flush_phase().await;
                }
                _ = ticker.tick() => reporter.tick().await,
                // The load goes on in the supervisor, for the next call.
                _ = call.cancellation().cancelled() => return Err("the call was cancelled".into()),
            }
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for GemmaServer {
    fn get_info(&self) -> ServerConfig {
        let mut info = Implementation::new("gemmactl", env!("CARGO_PKG_VERSION"));
        info.title = Some("gemmactl: local Gemma models".into());
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(info)
            .with_instructions(
                "Local Gemma models run by gemmactl, kept loaded between calls. Use generate_text \
                 for text, complete_code for code at a cursor, chat for a conversation you want to \
                 continue (pass conversation_id back), list_models to see what can run. Long calls \
                 send progress notifications; cancelling a call stops the model at once.",
            )
    }
}

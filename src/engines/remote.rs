//! The adapter for remote engines: an OpenAI-compatible server elsewhere (vLLM across GPUs and
//! nodes, llama.cpp's server, ollama, another `gemmactl serve`), driven over HTTP.
//!
//! There is no process to supervise: "starting" the engine is checking that the server answers
//! and serves the model (`list_models`), and each request is one streamed HTTP request
//! (`stream: true`, server-sent events). Cancelling a request closes its connection, which is
//! how OpenAI-compatible servers learn that a client went away. A request is retried only while
//! it is idempotent — before its first token arrived — and only for failures that another try
//! may fix (refused connection, 429, 502–504). Every failure is one sentence naming the URL.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use openai_protocol as api;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError, ExitInfo, ReplyEvent, ReplyStream};
use crate::domain::{
    Backend, Completion, Constraint, EngineDescription, EngineKind, ErrorCode, FinishReason,
    GenerateRequest, Message, ModelFacts, PromptFormat, Role, Timings, Usage,
};

/// How to reach one model on a remote server.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    /// The server's base URL, up to and including `/v1` (e.g. `http://gpu-box:8000/v1`).
    pub url: String,
    /// The model's id on that server.
    pub model: String,
    /// The API key sent as `Authorization: Bearer`, if the server needs one.
    pub api_key: Option<String>,
    /// Where the key comes from (an environment variable), for sentences about a refused key.
    pub api_key_source: Option<String>,
    /// Longest wait to connect.
    pub connect_timeout: Duration,
    /// Longest silence while waiting for the reply's next piece (the first one included).
    pub idle_timeout: Duration,
    /// Further tries of a request that failed before its first token.
    pub retries: u32,
    /// Requests the supervisor lets through at once.
    pub parallel: u32,
}

impl RemoteSpec {
    /// `url` without a trailing slash, and `/v1` added when the user gave only the host.
    pub fn base_url(url: &str) -> String {
        let trimmed = url.trim().trim_end_matches('/');
        if trimmed.ends_with("/v1") || trimmed.contains("/v1/") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/v1")
        }
    }
}

/// Builds the HTTP client a remote engine (or a probe) uses.
fn client(spec: &RemoteSpec) -> Result<reqwest::Client, EngineError> {
    reqwest::Client::builder()
        .connect_timeout(spec.connect_timeout)
        .read_timeout(spec.idle_timeout)
        .build()
        .map_err(|e| EngineError::Load {
            code: ErrorCode::Unavailable,
            message: format!("cannot make an HTTP client for {}: {e}", spec.url),
            path: Some(spec.url.clone()),
        })
}

/// The ids of the models the server at `spec.url` serves (`GET /models`), or one sentence
/// saying why it could not be asked.
pub async fn list_models(spec: &RemoteSpec) -> Result<Vec<String>, String> {
    let client = client(spec).map_err(|e| e.to_string())?;
    let url = format!("{}/models", spec.url);
    let mut req = client.get(&url).timeout(spec.connect_timeout * 3);
    if let Some(key) = &spec.api_key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.map_err(|e| transport_sentence(spec, &e))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(status_sentence(spec, status.as_u16(), &body));
    }
    let list: api::ModelList = resp.json().await.map_err(|e| {
        format!(
            "the server at {} answered GET /models with something that is not an OpenAI model list ({e}): is the URL the API's base (usually ending in /v1)?",
            spec.url
        )
    })?;
    Ok(list.data.into_iter().map(|m| m.id).collect())
}

type Inflight = Arc<Mutex<HashMap<String, CancellationToken>>>;

/// A model on a remote server.
pub struct RemoteEngine {
    spec: RemoteSpec,
    client: reqwest::Client,
    inflight: Inflight,
    /// Cancelled by `stop`: every request in flight ends.
    stopped: CancellationToken,
    load_ms: u64,
}

impl RemoteEngine {
    /// An engine for `spec`, after checking that the server answers and serves the model.
    pub async fn connect(spec: RemoteSpec) -> Result<RemoteEngine, EngineError> {
        let started = Instant::now();
        let client = client(&spec)?;
        let models = list_models(&spec)
            .await
            .map_err(|message| EngineError::Load {
                code: ErrorCode::Unavailable,
                message,
                path: Some(spec.url.clone()),
            })?;
        // Some servers list one model whatever they were asked to load (llama.cpp's server lists
        // its file name): a model missing from the list is refused only when there is a choice.
        if models.len() > 1 && !models.iter().any(|m| m == &spec.model) {
            return Err(EngineError::Load {
                code: ErrorCode::ModelNotFound,
                message: format!(
                    "the server at {} does not serve model {:?} (it serves {}): fix --remote-model with `gemmactl models add NAME --remote URL --remote-model ID --force`",
                    spec.url,
                    spec.model,
                    models.join(", ")
                ),
                path: Some(spec.url.clone()),
            });
        }
        Ok(RemoteEngine {
            spec,
            client,
            inflight: Arc::default(),
            stopped: CancellationToken::new(),
            load_ms: started.elapsed().as_millis() as u64,
        })
    }
}

impl Engine for RemoteEngine {
    fn describe(&self) -> EngineDescription {
        EngineDescription {
            engine: EngineKind::Remote,
            pid: None,
            model: ModelFacts {
                path: self.spec.url.clone(),
                name: Some(self.spec.model.clone()),
                ..ModelFacts::default()
            },
            backend: Backend::Remote,
            devices: Vec::new(),
            gpu_layers: 0,
            context: 0,
            parallel: self.spec.parallel,
            threads: 0,
            kv_cache_type: None,
            flash_attention: None,
            load_ms: self.load_ms,
            fallback: None,
        }
    }

    fn generate(&self, request: GenerateRequest) -> Result<ReplyStream, EngineError> {
        if self.stopped.is_cancelled() {
            return Err(EngineError::Stopped);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = self.stopped.child_token();
        lock(&self.inflight).insert(request.id.clone(), cancel.clone());
        let call = Call {
            spec: self.spec.clone(),
            client: self.client.clone(),
            cancel,
        };
        let inflight = self.inflight.clone();
        tokio::spawn(async move {
            let id = request.id.clone();
            let last = call.run(&request, &tx).await;
            lock(&inflight).remove(&id);
            let _ = tx.send(last);
        });
        Ok(rx)
    }

    fn cancel(&self, id: &str) {
        if let Some(token) = lock(&self.inflight).get(id) {
            token.cancel();
        }
    }

    fn exit_status(&self) -> Option<ExitInfo> {
        // No process of ours: a server that went away fails requests, one sentence each.
        None
    }

    fn stop(&self, _grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.stopped.cancel();
        Box::pin(async {})
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One request to the server.
struct Call {
    spec: RemoteSpec,
    client: reqwest::Client,
    cancel: CancellationToken,
}

/// How one try ended when it did not end the request.
enum TryFailure {
    /// Worth another try (nothing was generated yet).
    Retry(String, Option<Duration>),
    /// The request is over.
    Final(ReplyEvent),
}

/// What streaming a reply has produced so far.
#[derive(Default)]
struct Progress {
    completion_tokens: u32,
    first_token: Option<Instant>,
    usage: Option<api::Usage>,
    finish_reason: Option<String>,
}

impl Call {
    async fn run(
        &self,
        request: &GenerateRequest,
        tx: &mpsc::UnboundedSender<ReplyEvent>,
    ) -> ReplyEvent {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            match self.try_once(request, tx, started).await {
                Ok(event) => return event,
                Err(TryFailure::Final(event)) => return event,
                Err(TryFailure::Retry(why, wait)) => {
                    if attempt >= self.spec.retries {
                        return failed(ErrorCode::Unavailable, why);
                    }
                    attempt += 1;
                    let wait = wait.unwrap_or(Duration::from_millis(250 << attempt));
                    tracing::info!(url = %self.spec.url, attempt, "retrying a remote request that failed before its first token: {why}");
                    tokio::select! {
                        _ = tokio::time::sleep(wait.min(Duration::from_secs(5))) => {}
                        _ = self.cancel.cancelled() => return cancelled(&Progress::default(), started),
                    }
                }
            }
        }
    }

    async fn try_once(
        &self,
        request: &GenerateRequest,
        tx: &mpsc::UnboundedSender<ReplyEvent>,
        started: Instant,
    ) -> Result<ReplyEvent, TryFailure> {
        let (path, body) = match body(&self.spec.model, request) {
            Ok(b) => b,
            Err(message) => return Ok(failed(ErrorCode::BadImage, message)),
        };
        let mut req = self
            .client
            .post(format!("{}/{path}", self.spec.url))
            .json(&body);
        if let Some(key) = &self.spec.api_key {
            req = req.bearer_auth(key);
        }
        let send = tokio::select! {
            r = tokio::time::timeout(self.spec.idle_timeout, req.send()) => r,
            _ = self.cancel.cancelled() => return Ok(cancelled(&Progress::default(), started)),
        };
        let resp = match send {
            Err(_) => {
                return Err(TryFailure::Retry(
                    format!(
                        "the remote engine at {} did not answer within {} s",
                        self.spec.url,
                        self.spec.idle_timeout.as_secs()
                    ),
                    None,
                ))
            }
            Ok(Err(e)) => {
                let why = transport_sentence(&self.spec, &e);
                return Err(if e.is_connect() {
                    TryFailure::Retry(why, None)
                } else {
                    TryFailure::Final(failed(ErrorCode::Unavailable, why))
                });
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status().as_u16();
        if status != 200 {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = resp.text().await.unwrap_or_default();
            let why = status_sentence(&self.spec, status, &text);
            return Err(match status {
                429 | 502..=504 => TryFailure::Retry(why, retry_after),
                _ => TryFailure::Final(failed(error_code(status, &text), why)),
            });
        }
        let mut events = resp.bytes_stream().eventsource();
        let mut progress = Progress::default();
        loop {
            let next = tokio::select! {
                e = events.next() => e,
                // Dropping the stream closes the connection: the server stops generating.
                _ = self.cancel.cancelled() => return Ok(cancelled(&progress, started)),
            };
            let event = match next {
                None => break,
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    let why = format!(
                        "the connection to the remote engine at {} broke mid-reply: {}",
                        self.spec.url,
                        error_chain(&e)
                    );
                    // Nothing generated yet: asking again is still safe.
                    return Err(if progress.first_token.is_none() {
                        TryFailure::Retry(why, None)
                    } else {
                        TryFailure::Final(failed(ErrorCode::Unavailable, why))
                    });
                }
            };
            if event.data.trim() == "[DONE]" {
                break;
            }
            match chunk(&event.data) {
                Ok(Chunk { text, finish, usage }) => {
                    if let Some(text) = text.filter(|t| !t.is_empty()) {
                        progress.first_token.get_or_insert_with(Instant::now);
                        progress.completion_tokens += 1;
                        let _ = tx.send(ReplyEvent::Token(text));
                    }
                    if finish.is_some() {
                        progress.finish_reason = finish;
                    }
                    if usage.is_some() {
                        progress.usage = usage;
                    }
                }
                Err(ChunkError::Server(message)) => {
                    return Err(TryFailure::Final(failed(
                        error_code(500, &message),
                        format!("the remote engine at {} failed mid-reply: {message}", self.spec.url),
                    )))
                }
                Err(ChunkError::Unreadable(e)) => {
                    return Err(TryFailure::Final(failed(
                        ErrorCode::BadRequest,
                        format!(
                            "the remote engine at {} sent a stream chunk that is not OpenAI's ({e}): is it an OpenAI-compatible server?",
                            self.spec.url
                        ),
                    )))
                }
            }
        }
        if progress.finish_reason.is_none() && progress.usage.is_none() {
            // The stream ended without saying how: the server (or the network) went away.
            let why = format!(
                "the remote engine at {} closed the reply before it finished",
                self.spec.url
            );
            return Err(if progress.first_token.is_none() {
                TryFailure::Retry(why, None)
            } else {
                TryFailure::Final(failed(ErrorCode::Unavailable, why))
            });
        }
        let reason = match progress.finish_reason.as_deref() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        Ok(ReplyEvent::Finished(completion(reason, &progress, started)))
    }
}

/// The endpoint and body for `request`: chat completions for a conversation, text completions
/// for a plain prompt.
/// The endpoint and JSON body of `request`; `Err` (a sentence) when an image cannot be sent.
fn body(
    model: &str,
    request: &GenerateRequest,
) -> Result<(&'static str, serde_json::Value), String> {
    let p = &request.params;
    let sampling = api::Sampling {
        max_tokens: p.max_tokens,
        max_completion_tokens: None,
        temperature: Some(p.temperature),
        top_p: p.top_p,
        seed: p.seed.map(i64::from),
        stop: (!p.stop.is_empty()).then(|| api::Stop::Many(p.stop.clone())),
        n: None,
        stream: true,
        stream_options: Some(api::StreamOptions {
            include_usage: true,
        }),
    };
    // top_k is no OpenAI field, but vLLM, llama.cpp's server, ollama and gemmactl read it.
    let mut other = serde_json::Map::new();
    if p.top_k > 0 {
        other.insert("top_k".into(), p.top_k.into());
    }
    // Fill-in-the-middle goes to the completions endpoint with the OpenAI API's `suffix` field
    // (servers that lack it continue the prefix; gemmactl only asks when the model reports FIM).
    if let PromptFormat::FillInMiddle { suffix } = &request.prompt {
        other.insert("suffix".into(), suffix.clone().into());
    }
    // A schema goes in OpenAI's own field; a grammar in `grammar`, the field llama.cpp's server
    // and `gemmactl serve` read (the README says which servers honour what).
    match &p.constraint {
        Some(Constraint::JsonSchema(schema)) => {
            let format = api::ResponseFormat::JsonSchema {
                name: None,
                schema: schema.clone(),
            };
            other.insert("response_format".into(), format.to_value());
        }
        Some(Constraint::Grammar(gbnf)) => {
            other.insert("grammar".into(), gbnf.clone().into());
        }
        None => {}
    }
    let value = match request.prompt {
        PromptFormat::Completion | PromptFormat::FillInMiddle { .. } => {
            if request.messages.iter().any(|m| !m.images.is_empty()) {
                return Err("a plain-text (completion) prompt cannot carry images to a remote engine: use an instruct model, whose chat request carries them".into());
            }
            // As gemma-engine reads a plain prompt: a system message is followed by a blank line.
            let mut prompt = String::new();
            for m in &request.messages {
                prompt.push_str(&m.content);
                if m.role == Role::System && !m.content.is_empty() {
                    prompt.push_str("\n\n");
                }
            }
            let body = api::CompletionRequest {
                model: model.to_string(),
                prompt: api::Prompt::One(prompt),
                sampling,
                other,
            };
            return Ok((
                "completions",
                serde_json::to_value(body).unwrap_or_default(),
            ));
        }
        PromptFormat::Chat { .. } | PromptFormat::Auto => {
            let body = api::ChatCompletionRequest {
                model: model.to_string(),
                messages: request
                    .messages
                    .iter()
                    .map(chat_message)
                    .collect::<Result<_, _>>()?,
                sampling,
                other,
            };
            serde_json::to_value(body).unwrap_or_default()
        }
    };
    Ok(("chat/completions", value))
}

/// A message in OpenAI's terms: its text, or — when it shows images — text and `image_url`
/// parts in order, each image as a data URL (the remote server cannot read this machine's files).
fn chat_message(m: &Message) -> Result<api::ChatMessage, String> {
    use base64::Engine as _;
    if m.images.is_empty() {
        return Ok(api::ChatMessage::text(m.role.as_str(), &m.content));
    }
    let mut parts = Vec::new();
    let mut from = 0;
    for image in &m.images {
        let at = image.at.clamp(from, m.content.len());
        if at > from {
            parts.push(serde_json::json!({"type": "text", "text": &m.content[from..at]}));
        }
        let bytes = image.bytes().map_err(|e| {
            format!(
                "image {} cannot be read to send it to the remote engine ({e}): attach it again",
                image.label()
            )
        })?;
        let url = format!(
            "data:{};base64,{}",
            image.media_type,
            base64::engine::general_purpose::STANDARD.encode(&bytes[..])
        );
        parts.push(serde_json::json!({"type": "image_url", "image_url": {"url": url}}));
        from = at;
    }
    if from < m.content.len() {
        parts.push(serde_json::json!({"type": "text", "text": &m.content[from..]}));
    }
    Ok(api::ChatMessage {
        role: m.role.as_str().to_string(),
        content: Some(api::Content::Parts(parts)),
        other: serde_json::Map::new(),
    })
}

/// What one stream chunk carries.
struct Chunk {
    text: Option<String>,
    finish: Option<String>,
    usage: Option<api::Usage>,
}

enum ChunkError {
    /// The server sent an error object in the stream.
    Server(String),
    /// Not JSON of either completion shape.
    Unreadable(String),
}

/// Reads one `data:` payload, chat or text completion alike.
fn chunk(data: &str) -> Result<Chunk, ChunkError> {
    let value: serde_json::Value =
        serde_json::from_str(data).map_err(|e| ChunkError::Unreadable(e.to_string()))?;
    if let Some(error) = value.get("error") {
        let detail: api::ErrorDetail = serde_json::from_value(error.clone()).unwrap_or_default();
        return Err(ChunkError::Server(if detail.message.is_empty() {
            error.to_string()
        } else {
            detail.message
        }));
    }
    let usage = value
        .get("usage")
        .filter(|u| !u.is_null())
        .and_then(|u| serde_json::from_value(u.clone()).ok());
    let first = value.get("choices").and_then(|c| c.get(0));
    let Some(choice) = first else {
        return Ok(Chunk {
            text: None,
            finish: None,
            usage,
        });
    };
    let text = choice
        .get("delta")
        .and_then(|d| d.get("content"))
        .or_else(|| choice.get("text"))
        .and_then(|t| t.as_str())
        .map(str::to_string);
    let finish = choice
        .get("finish_reason")
        .and_then(|f| f.as_str())
        .map(str::to_string);
    Ok(Chunk {
        text,
        finish,
        usage,
    })
}

fn completion(reason: FinishReason, progress: &Progress, started: Instant) -> Completion {
    let total = started.elapsed();
    let (prompt_tokens, completion_tokens, cached) = match &progress.usage {
        Some(u) => (
            u.prompt_tokens,
            u.completion_tokens,
            u.prompt_tokens_details
                .as_ref()
                .map(|d| d.cached_tokens)
                .unwrap_or(0),
        ),
        None => (0, progress.completion_tokens, 0),
    };
    let ttft = progress
        .first_token
        .map(|t| t.duration_since(started))
        .unwrap_or(total);
    let decode_secs = total.saturating_sub(ttft).as_secs_f64();
    let per_s = |n: u32, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    Completion {
        finish_reason: reason,
        usage: Usage {
            prompt_tokens,
            cached_tokens: cached,
            completion_tokens,
        },
        timings: Timings {
            queue_ms: 0.0,
            ttft_ms: ttft.as_secs_f64() * 1000.0,
            prefill_tokens_per_s: per_s(prompt_tokens, ttft.as_secs_f64()),
            decode_tokens_per_s: per_s(completion_tokens.saturating_sub(1), decode_secs),
            total_ms: total.as_secs_f64() * 1000.0,
        },
    }
}

fn cancelled(progress: &Progress, started: Instant) -> ReplyEvent {
    ReplyEvent::Finished(completion(FinishReason::Cancelled, progress, started))
}

fn failed(code: ErrorCode, message: String) -> ReplyEvent {
    ReplyEvent::Failed(EngineError::Request { code, message })
}

/// The failure kind of an HTTP error answer.
fn error_code(status: u16, body: &str) -> ErrorCode {
    if body.contains("context_length_exceeded") || body.contains("context length") {
        return ErrorCode::ContextOverflow;
    }
    match status {
        400 | 413 | 422 => ErrorCode::BadRequest,
        404 => ErrorCode::ModelNotFound,
        _ => ErrorCode::Unavailable,
    }
}

/// A transport failure (nothing answered) as one sentence naming the URL.
fn transport_sentence(spec: &RemoteSpec, e: &reqwest::Error) -> String {
    let url = &spec.url;
    if e.is_connect() {
        format!(
            "the remote engine at {url} could not be reached ({}): is its server running, and is the URL right?",
            error_chain(e)
        )
    } else if e.is_timeout() {
        format!(
            "the remote engine at {url} did not answer in time: check the server and the network"
        )
    } else {
        format!(
            "the request to the remote engine at {url} failed: {}",
            error_chain(e)
        )
    }
}

/// An HTTP error answer as one sentence naming the URL and the fix.
fn status_sentence(spec: &RemoteSpec, status: u16, body: &str) -> String {
    let url = &spec.url;
    let said = server_message(body);
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(" ({said})")
    };
    match status {
        401 | 403 => {
            let fix = match &spec.api_key_source {
                Some(var) if spec.api_key.is_some() => format!("check the key in {var}"),
                Some(var) => format!("set {var} to the server's API key"),
                None => "register the model with --api-key-env VAR naming a variable that holds the key".to_string(),
            };
            format!("the remote engine at {url} refused the API key (HTTP {status}){said}: {fix}")
        }
        404 => format!(
            "the remote engine at {url} has no model {:?} (HTTP 404){said}: `gemmactl doctor` lists the models it serves",
            spec.model
        ),
        429 => format!("the remote engine at {url} is busy (HTTP 429){said}: try again in a moment"),
        _ => format!("the remote engine at {url} answered HTTP {status}{said}"),
    }
}

/// The `error.message` of an OpenAI-shaped error body, else its first line (at most 300
/// characters).
fn server_message(body: &str) -> String {
    let parsed = serde_json::from_str::<api::ErrorBody>(body)
        .map(|b| b.error.message)
        .ok()
        .filter(|m| !m.is_empty());
    let text = parsed.unwrap_or_else(|| body.lines().next().unwrap_or("").trim().to_string());
    text.chars().take(300).collect()
}

/// An error with its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SamplingParams;

    fn spec() -> RemoteSpec {
        RemoteSpec {
            url: "http://127.0.0.1:9/v1".into(),
            model: "m".into(),
            api_key: None,
            api_key_source: Some("MY_KEY".into()),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            retries: 0,
            parallel: 1,
        }
    }

    #[test]
    fn base_urls_end_in_v1() {
        assert_eq!(RemoteSpec::base_url("http://h:8000"), "http://h:8000/v1");
        assert_eq!(
            RemoteSpec::base_url("http://h:8000/v1/"),
            "http://h:8000/v1"
        );
    }

    #[test]
    fn requests_map_onto_the_two_endpoints() {
        let mut r = GenerateRequest {
            id: "r1".into(),
            messages: vec![
                Message::new(Role::System, "Be brief."),
                Message::new(Role::User, "Hi"),
            ],
            session: None,
            prompt: PromptFormat::Chat { template: None },
            params: SamplingParams {
                max_tokens: Some(5),
                seed: Some(7),
                stop: vec!["\n".into()],
                ..SamplingParams::default()
            },
        };
        let (path, body) = body("m", &r).unwrap();
        assert_eq!(path, "chat/completions");
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["max_tokens"], 5);
        assert_eq!(body["seed"], 7);
        assert_eq!(body["stop"], serde_json::json!(["\n"]));
        assert_eq!(body["stream_options"]["include_usage"], true);
        r.prompt = PromptFormat::Completion;
        let (path, body) = super::body("m", &r).unwrap();
        assert_eq!(path, "completions");
        assert_eq!(body["prompt"], "Be brief.\n\nHi");
        assert!(body.get("response_format").is_none());
    }

    /// Images go to a remote engine as data URLs among the text parts, in order; a plain-text
    /// prompt cannot carry them and says so.
    #[test]
    fn images_travel_as_data_urls_in_content_parts() {
        use base64::Engine as _;
        let png = {
            let mut out = std::io::Cursor::new(Vec::new());
            ::image::RgbImage::from_pixel(2, 2, ::image::Rgb([1, 2, 3]))
                .write_to(&mut out, ::image::ImageFormat::Png)
                .unwrap();
            out.into_inner()
        };
        let image = crate::domain::Image::from_bytes(png.clone(), "image")
            .unwrap()
            .placed(5);
        let mut r = GenerateRequest {
            id: "r1".into(),
            messages: vec![Message::new(Role::User, "Look:  What is it?").with_images(vec![image])],
            session: None,
            prompt: PromptFormat::Chat { template: None },
            params: SamplingParams::default(),
        };
        let (_, body) = body("m", &r).unwrap();
        let url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png)
        );
        assert_eq!(
            body["messages"][0]["content"],
            serde_json::json!([
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "  What is it?"},
            ])
        );
        r.prompt = PromptFormat::Completion;
        let err = super::body("m", &r).unwrap_err();
        assert!(err.contains("cannot carry images"), "{err}");
    }

    #[test]
    fn a_constraint_travels_as_response_format_or_grammar() {
        let mut r = GenerateRequest::greedy_completion("r1".into(), "Hi", 5);
        r.prompt = PromptFormat::Auto;
        r.params.constraint = Some(Constraint::JsonSchema(
            serde_json::json!({"type": "object"}),
        ));
        let (_, body) = body("m", &r).unwrap();
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(
            body["response_format"]["json_schema"]["schema"],
            serde_json::json!({"type": "object"})
        );
        r.params.constraint = Some(Constraint::Grammar("root ::= \"a\"".into()));
        let (_, body) = super::body("m", &r).unwrap();
        assert_eq!(body["grammar"], "root ::= \"a\"");
        assert!(body.get("response_format").is_none());
    }

    #[test]
    fn chunks_of_both_shapes_and_errors_read() {
        let c = chunk(r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#)
            .ok()
            .unwrap();
        assert_eq!(c.text.as_deref(), Some("Hi"));
        let c = chunk(r#"{"choices":[{"text":" a","finish_reason":"length"}],"usage":null}"#)
            .ok()
            .unwrap();
        assert_eq!(
            (c.text.as_deref(), c.finish.as_deref()),
            (Some(" a"), Some("length"))
        );
        let c = chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        )
        .ok()
        .unwrap();
        assert_eq!(c.usage.unwrap().completion_tokens, 2);
        assert!(
            matches!(chunk(r#"{"error":{"message":"boom"}}"#), Err(ChunkError::Server(m)) if m == "boom")
        );
        assert!(matches!(chunk("nope"), Err(ChunkError::Unreadable(_))));
    }

    #[test]
    fn http_errors_are_one_sentence_naming_the_url_and_the_fix() {
        let s = spec();
        let m = status_sentence(&s, 401, r#"{"error":{"message":"bad key"}}"#);
        assert!(
            m.contains("http://127.0.0.1:9/v1")
                && m.contains("bad key")
                && m.contains("set MY_KEY"),
            "{m}"
        );
        let m = status_sentence(&s, 404, "not found");
        assert!(m.contains("no model \"m\"") && m.contains("doctor"), "{m}");
        assert_eq!(
            error_code(400, r#"{"error":{"code":"context_length_exceeded"}}"#),
            ErrorCode::ContextOverflow
        );
        assert!(!m.contains('\n'));
    }
}

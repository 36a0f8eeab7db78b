//! `POST /v1/chat/completions` and `POST /v1/completions`: an OpenAI request becomes a
//! [`Thread`] of the turn service — the request's messages seeded, its last user message sent —
//! and the turn's events become one JSON reply or a stream of server-sent events.
//!
//! Request fields that map onto gemmactl's parameters are honoured (`max_tokens` or
//! `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stop`, `response_format`, and
//! `top_k` and `grammar` as llama.cpp's server reads them); those that would change the reply and
//! cannot be honoured (`n` > 1, tools, log-probabilities, penalties) are refused with a 400
//! naming the field, never silently dropped. A schema or grammar that cannot be used is a 400
//! too, before anything is generated.
//!
//! A streaming client that goes away cancels the turn at once: the task relaying the turn sees
//! its channel close (the response body was dropped with the connection) and cancels the engine's
//! work, which ends at its next decode step and frees the slot.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openai_protocol as api;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::app::{now, AppState, Peer, Shared};
use super::errors::ApiError;
use crate::chat::content::{self, LocalFiles};
use crate::chat::{PromptStyle, Thread, TurnEnd, TurnEvent};
use crate::domain::{
    Completion, Constraint, FinishReason, Image, Message, Origin, Role, SamplingParams, Source,
};
use crate::models::ModelEntry;
use crate::supervisor::SupervisorError;

/// How long a silent stream waits before a keep-alive comment (which also finds out whether the
/// client is still there while the engine reads a long prompt).
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// A request header with which a client asks not to wait for a model to load (503 instead).
pub(super) const NO_WAIT_HEADER: &str = "x-gemmactl-wait";

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Text,
}

/// A request, checked and put in gemmactl's terms.
struct Prepared {
    model: ModelEntry,
    /// The model's id as the client named it (echoed in replies).
    model_id: String,
    system: Option<String>,
    /// Earlier turns, sent to the model as context.
    earlier: Vec<Message>,
    /// The text the reply answers (the last user message, or the prompt).
    last: String,
    /// The last user message's images.
    last_images: Vec<Image>,
    params: SamplingParams,
    stream: bool,
    include_usage: bool,
}

pub(super) async fn chat_completions(
    State(state): State<Shared>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared =
        parse::<api::ChatCompletionRequest>(&state, body).and_then(|r| prepare_chat(&state, r));
    respond(state, peer, headers, prepared, Endpoint::Chat).await
}

pub(super) async fn completions(
    State(state): State<Shared>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared =
        parse::<api::CompletionRequest>(&state, body).and_then(|r| prepare_text(&state, r));
    respond(state, peer, headers, prepared, Endpoint::Text).await
}

/// Reads the body as JSON of `T`, or says what is wrong with it.
pub(super) fn parse<T: DeserializeOwned>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the request body is larger than {} bytes (serve.max_body_bytes): send less, or raise the limit on the server",
                state.config.serve.max_body_bytes
            ))
        } else {
            ApiError::bad_request(None, format!("the request body could not be read ({}): send it whole, in time", r.body_text()))
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            None,
            format!("the request body is not a valid request: {e}"),
        )
    })
}

fn prepare_chat(state: &AppState, r: api::ChatCompletionRequest) -> Result<Prepared, ApiError> {
    refuse_unsupported(&r.other, Endpoint::Chat)?;
    let params = sampling(&r.sampling, &r.other)?;
    let mut system = Vec::new();
    let mut turns = Vec::new();
    let files = if state.config.serve.allow_local_images {
        LocalFiles::Allowed
    } else {
        LocalFiles::Refused {
            how: "start the server with --allow-local-images (serve.allow_local_images) if its clients may read its files",
        }
    };
    for (i, m) in r.messages.into_iter().enumerate() {
        let (text, images) = content(m.content, i, files)?;
        if !images.is_empty() && m.role != "user" {
            return Err(ApiError::bad_request(
                Some("messages"),
                format!("messages[{i}] holds an image but is not the user's: only user messages show images"),
            ));
        }
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" => turns.push(Message::new(Role::User, text).with_images(images)),
            "assistant" => turns.push(Message::new(Role::Assistant, text)),
            other => {
                return Err(ApiError::bad_request(
                    Some("messages"),
                    format!("messages[{i}] has role {other:?}: gemmactl reads system, developer, user and assistant messages (no tools)"),
                ))
            }
        }
    }
    let Some(last) = turns.pop() else {
        return Err(ApiError::bad_request(
            Some("messages"),
            "messages has no user message: send at least one",
        ));
    };
    if last.role != Role::User {
        return Err(ApiError::bad_request(
            Some("messages"),
            "the last message is not the user's: gemmactl replies to a user message, so end with one",
        ));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let size = system.as_ref().map_or(0, |s| s.chars().count())
        + turns
            .iter()
            .map(|m| m.content.chars().count())
            .sum::<usize>()
        + last.content.chars().count();
    check_size(state, size)?;
    Ok(Prepared {
        model: state.model(&r.model)?,
        model_id: r.model,
        system,
        earlier: turns,
        last: last.content,
        last_images: last.images,
        stream: r.sampling.stream,
        include_usage: r.sampling.stream_options.is_some_and(|o| o.include_usage),
        params,
    })
}

fn prepare_text(state: &AppState, r: api::CompletionRequest) -> Result<Prepared, ApiError> {
    refuse_unsupported(&r.other, Endpoint::Text)?;
    let params = sampling(&r.sampling, &r.other)?;
    let prompt = match r.prompt {
        api::Prompt::One(p) => p,
        api::Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
        api::Prompt::Many(v) => {
            return Err(ApiError::bad_request(
                Some("prompt"),
                format!("prompt is a list of {} prompts: gemmactl answers one per request, so send them separately", v.len()),
            ))
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request(
            Some("prompt"),
            "prompt is empty: give some text to continue",
        ));
    }
    check_size(state, prompt.chars().count())?;
    Ok(Prepared {
        model: state.model(&r.model)?,
        model_id: r.model,
        system: None,
        earlier: Vec::new(),
        last: prompt,
        last_images: Vec::new(),
        stream: r.sampling.stream,
        include_usage: r.sampling.stream_options.is_some_and(|o| o.include_usage),
        params,
    })
}

fn check_size(state: &AppState, chars: usize) -> Result<(), ApiError> {
    let limit = state.config.serve.max_prompt_chars;
    if chars > limit {
        return Err(ApiError::too_large(format!(
            "the prompt has {chars} characters, more than this server takes ({limit}, serve.max_prompt_chars): send less"
        )));
    }
    Ok(())
}

/// A message's content: a string, or its parts — text parts joined by line breaks, images
/// (`image_url`: data URLs; local files only if the server allows them) placed among them.
/// A bad image is a 400 with its sentence.
fn content(
    content: Option<api::Content>,
    i: usize,
    files: LocalFiles,
) -> Result<(String, Vec<Image>), ApiError> {
    match content {
        None => Ok((String::new(), Vec::new())),
        Some(api::Content::Text(t)) => Ok((t, Vec::new())),
        Some(api::Content::Parts(parts)) => {
            content::from_parts(&parts, &format!("messages[{i}]"), files, "\n")
                .map_err(|e| ApiError::bad_request(Some("messages"), e))
        }
    }
}

/// Refuses the fields that would change the reply and that gemmactl cannot honour.
fn refuse_unsupported(other: &Map<String, Value>, endpoint: Endpoint) -> Result<(), ApiError> {
    let set = |k: &str| other.get(k).filter(|v| !v.is_null());
    for field in ["tools", "functions", "tool_choice", "function_call"] {
        if set(field).is_some_and(|v| !(v.as_array().is_some_and(Vec::is_empty) || v == "none")) {
            return Err(ApiError::bad_request(Some(field), format!("{field} is not supported: gemmactl's models are served without tool calling, so leave it out")));
        }
    }
    if set("logprobs").is_some_and(|v| v != &Value::Bool(false) && v != &Value::from(0))
        || set("top_logprobs").is_some()
    {
        return Err(ApiError::bad_request(
            Some("logprobs"),
            "log-probabilities are not supported: leave logprobs out",
        ));
    }
    for field in ["presence_penalty", "frequency_penalty"] {
        if set(field).and_then(Value::as_f64).is_some_and(|v| v != 0.0) {
            return Err(ApiError::bad_request(Some(field), format!("{field} is not supported: gemmactl's engines have no penalties, so leave it out or send 0")));
        }
    }
    if set("logit_bias").is_some_and(|v| v.as_object().is_some_and(|m| !m.is_empty())) {
        return Err(ApiError::bad_request(
            Some("logit_bias"),
            "logit_bias is not supported: leave it out",
        ));
    }
    if endpoint == Endpoint::Text {
        if set("echo").is_some_and(|v| v == &Value::Bool(true)) {
            return Err(ApiError::bad_request(
                Some("echo"),
                "echo is not supported: the reply holds the new text only",
            ));
        }
        if set("suffix").is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty())) {
            return Err(ApiError::bad_request(
                Some("suffix"),
                "suffix (fill-in-the-middle) is not supported: leave it out",
            ));
        }
        if set("best_of")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 1)
        {
            return Err(ApiError::bad_request(
                Some("best_of"),
                "best_of > 1 is not supported: gemmactl generates one choice",
            ));
        }
    }
    Ok(())
}

/// The request's sampling fields as gemmactl's parameters, checked.
fn sampling(s: &api::Sampling, other: &Map<String, Value>) -> Result<SamplingParams, ApiError> {
    if let Some(n) = s.n.filter(|n| *n != 1) {
        return Err(ApiError::bad_request(
            Some("n"),
            format!("n = {n} is not supported: gemmactl generates one choice per request, so send n = 1 (or several requests)"),
        ));
    }
    let top_k = match other.get("top_k").filter(|v| !v.is_null()) {
        None => SamplingParams::DEFAULT_TOP_K,
        Some(v) => v
            .as_u64()
            .and_then(|k| u32::try_from(k).ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    Some("top_k"),
                    format!("top_k {v} is not valid: use a whole number ≥ 0 (0 = off)"),
                )
            })?,
    };
    let params = SamplingParams {
        max_tokens: s.max_completion_tokens.or(s.max_tokens),
        temperature: s.temperature.unwrap_or(SamplingParams::DEFAULT_TEMPERATURE),
        top_k,
        top_p: s.top_p,
        // OpenAI seeds are 64-bit; the engines take 32 bits, and the same seed maps the same way.
        seed: s.seed.map(|v| v as u64 as u32),
        stop: s
            .stop
            .clone()
            .map(api::Stop::into_vec)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
        constraint: constraint(other)?,
    };
    params.check(|name| name.to_string()).map_err(|message| {
        let param = ["temperature", "top_p", "max_tokens"]
            .into_iter()
            .find(|p| message.starts_with(p));
        ApiError::bad_request(param, message)
    })?;
    Ok(params)
}

/// `response_format` in OpenAI's shapes, or `grammar` (GBNF text) as llama.cpp's server reads
/// it, checked; a mistake is a 400 naming the field.
fn constraint(other: &Map<String, Value>) -> Result<Option<Constraint>, ApiError> {
    let set = |k: &str| other.get(k).filter(|v| !v.is_null());
    let bad = |field: &'static str, why: String| ApiError::bad_request(Some(field), why);
    let format = match set("response_format") {
        None => None,
        Some(v) => match api::ResponseFormat::from_value(v)
            .map_err(|why| bad("response_format", why))?
        {
            api::ResponseFormat::Text => None,
            api::ResponseFormat::JsonObject => Some(Constraint::any_json_object()),
            api::ResponseFormat::JsonSchema { schema, .. } => Some(Constraint::JsonSchema(schema)),
        },
    };
    let (field, c) = match (format, set("grammar")) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(bad(
                "grammar",
                "grammar and a JSON response_format were both given: send one of them".into(),
            ))
        }
        (Some(c), None) => ("response_format", c),
        (None, Some(Value::String(g))) => ("grammar", Constraint::Grammar(g.clone())),
        (None, Some(_)) => {
            return Err(bad(
                "grammar",
                "grammar must be a string of GBNF rules (llama.cpp's notation)".into(),
            ))
        }
    };
    c.check()
        .map_err(|why| bad(field, format!("{field}: {why}")))?;
    Ok(Some(c))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn reply_id(endpoint: Endpoint) -> String {
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Text => "cmpl",
    };
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a prepared request and answers it.
async fn respond(
    state: Shared,
    peer: Peer,
    headers: HeaderMap,
    prepared: Result<Prepared, ApiError>,
    endpoint: Endpoint,
) -> Response {
    let p = match prepared {
        Ok(p) => p,
        Err(e) => return state.error_for(peer, e).into_response(),
    };
    let no_wait = headers
        .get(NO_WAIT_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim(), "no" | "false" | "0"));
    if no_wait && state.service.generator().engine_of(&p.model.name).is_none() {
        // Start the load for the client's next try, and tell it when to come back.
        let service = state.service.clone();
        let model = p.model.clone();
        tokio::spawn(async move {
            let _ = service.generator().preload(&model, |_| {}).await;
        });
        let e = ApiError::loading(format!(
            "model {} is loading: try again in a few seconds (or drop the {NO_WAIT_HEADER} header to wait for it)",
            p.model.name
        ));
        return state.error_for(peer, e).into_response();
    }
    let client = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(200).collect::<String>());
    let style = match endpoint {
        Endpoint::Chat => PromptStyle::Conversation,
        Endpoint::Text => PromptStyle::Raw,
    };
    let mut thread = Thread::new(
        &state.service,
        p.model.clone(),
        p.system.clone(),
        p.params.clone(),
        style,
    );
    thread.set_origin(Origin {
        source: Source::Serve,
        client,
        batch: None,
    });
    thread.carry_on_from(p.earlier.clone());
    let id = reply_id(endpoint);
    if p.stream {
        stream(state, peer, thread, p, id, endpoint).await
    } else {
        whole(&state, peer, &mut thread, &p, &id, endpoint).await
    }
}

/// A failed `send` (refused before it started) as an API error.
fn send_error(e: anyhow::Error) -> ApiError {
    match e.downcast_ref::<SupervisorError>() {
        Some(s) => ApiError::from_supervisor(s),
        None => ApiError::internal(format!("{e:#}")),
    }
}

fn finish_reason(reason: FinishReason) -> String {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
    .to_string()
}

fn usage(done: &Completion) -> api::Usage {
    api::Usage::new(
        done.usage.prompt_tokens,
        done.usage.completion_tokens,
        done.usage.cached_tokens,
    )
}

/// Runs the turn to its end and answers with one JSON object.
async fn whole(
    state: &AppState,
    peer: Peer,
    thread: &mut Thread,
    p: &Prepared,
    id: &str,
    endpoint: Endpoint,
) -> Response {
    let mut turn = match thread.send_with_images(&p.last, p.last_images.clone()) {
        Ok(t) => t,
        Err(e) => return state.error_for(peer, send_error(e)).into_response(),
    };
    // If the client goes away, the handler is dropped with the turn, which cancels the work.
    let end: Option<TurnEnd> = loop {
        match turn.next().await {
            Some(TurnEvent::Ended(end)) => break Some(end),
            Some(_) => {}
            None => break None,
        }
    };
    let Some(end) = end else {
        return state
            .error_for(peer, ApiError::internal("the reply ended without a result"))
            .into_response();
    };
    let done = match &end.result {
        Ok(done) => done,
        Err(e) => {
            return state
                .error_for(peer, ApiError::from_supervisor(e))
                .into_response()
        }
    };
    state.metrics.tokens(&p.model.name, &done.usage);
    let reason = Some(finish_reason(done.finish_reason));
    match endpoint {
        Endpoint::Chat => Json(api::ChatCompletion {
            id: id.to_string(),
            object: "chat.completion".into(),
            created: now(),
            model: p.model_id.clone(),
            choices: vec![api::ChatChoice {
                index: 0,
                message: Some(api::AssistantMessage {
                    role: Some("assistant".into()),
                    content: Some(end.text.clone()),
                }),
                delta: None,
                finish_reason: reason,
                logprobs: None,
            }],
            usage: Some(usage(done)),
        })
        .into_response(),
        Endpoint::Text => Json(api::TextCompletion {
            id: id.to_string(),
            object: "text_completion".into(),
            created: now(),
            model: p.model_id.clone(),
            choices: vec![api::TextChoice {
                index: 0,
                text: end.text.clone(),
                finish_reason: reason,
                logprobs: None,
            }],
            usage: Some(usage(done)),
        })
        .into_response(),
    }
}

/// Builds the stream's chunks.
struct Chunks {
    id: String,
    model: String,
    created: u64,
    endpoint: Endpoint,
    include_usage: bool,
}

impl Chunks {
    fn event(&self, value: &impl serde::Serialize) -> Event {
        Event::default().data(serde_json::to_string(value).unwrap_or_default())
    }

    /// A piece of text (or, for chat, the opening role chunk when `role` is set).
    fn piece(&self, text: &str, role: bool, finish: Option<String>) -> Event {
        match self.endpoint {
            Endpoint::Chat => self.event(&api::ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![api::ChatChoice {
                    index: 0,
                    message: None,
                    delta: Some(api::AssistantMessage {
                        role: role.then(|| "assistant".to_string()),
                        content: (finish.is_none()).then(|| text.to_string()),
                    }),
                    finish_reason: finish,
                    logprobs: None,
                }],
                usage: None,
            }),
            Endpoint::Text => self.event(&api::TextCompletion {
                id: self.id.clone(),
                object: "text_completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![api::TextChoice {
                    index: 0,
                    text: text.to_string(),
                    finish_reason: finish,
                    logprobs: None,
                }],
                usage: None,
            }),
        }
    }

    /// The last chunk, with the token counts and no choices.
    fn usage(&self, done: &Completion) -> Event {
        match self.endpoint {
            Endpoint::Chat => self.event(&api::ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(usage(done)),
            }),
            Endpoint::Text => self.event(&api::TextCompletion {
                id: self.id.clone(),
                object: "text_completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(usage(done)),
            }),
        }
    }
}

/// Starts the turn and answers with its server-sent events. A refusal before the turn starts
/// (queue full, model failed) is still an HTTP error with its status.
async fn stream(
    state: Shared,
    peer: Peer,
    mut thread: Thread,
    p: Prepared,
    id: String,
    endpoint: Endpoint,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(64);
    let (started_tx, started) = oneshot::channel::<Result<(), ApiError>>();
    let chunks = Chunks {
        id,
        model: p.model_id.clone(),
        created: now(),
        endpoint,
        include_usage: p.include_usage,
    };
    let task_state = state.clone();
    tokio::spawn(async move {
        let state = task_state;
        let mut turn = match thread.send_with_images(&p.last, p.last_images.clone()) {
            Ok(t) => t,
            Err(e) => {
                let _ = started_tx.send(Err(send_error(e)));
                return;
            }
        };
        let _ = started_tx.send(Ok(()));
        if endpoint == Endpoint::Chat {
            let _ = tx.send(chunks.piece("", true, None)).await;
        }
        let mut gone = false;
        loop {
            let event = tokio::select! {
                e = turn.next() => e,
                _ = tx.closed(), if !gone => {
                    // The client went away: stop the engine's work now; the turn ends as cancelled.
                    gone = true;
                    turn.cancel();
                    continue;
                }
            };
            match event {
                Some(TurnEvent::Token(text)) if !gone => {
                    let _ = tx.send(chunks.piece(&text, false, None)).await;
                }
                Some(TurnEvent::Ended(end)) => {
                    match &end.result {
                        Ok(done) => {
                            state.metrics.tokens(&p.model.name, &done.usage);
                            let _ = tx
                                .send(chunks.piece(
                                    "",
                                    false,
                                    Some(finish_reason(done.finish_reason)),
                                ))
                                .await;
                            if chunks.include_usage {
                                let _ = tx.send(chunks.usage(done)).await;
                            }
                            let _ = tx.send(Event::default().data("[DONE]")).await;
                        }
                        Err(e) => {
                            let error = state.error_for(peer, ApiError::from_supervisor(e));
                            let _ = tx.send(chunks.event(&error.body())).await;
                        }
                    }
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
    });
    match started.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return state.error_for(peer, e).into_response(),
        Err(_) => return ApiError::internal("the reply could not be started").into_response(),
    }
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<Event, Infallible>(e), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_format_and_grammar_become_a_constraint() {
        let other = |v: Value| v.as_object().cloned().unwrap_or_default();
        let read = |v: Value| constraint(&other(v));
        assert_eq!(read(serde_json::json!({})).ok().flatten(), None);
        assert_eq!(
            read(serde_json::json!({"response_format": {"type": "text"}}))
                .ok()
                .flatten(),
            None
        );
        assert_eq!(
            read(serde_json::json!({"response_format": {"type": "json_object"}}))
                .ok()
                .flatten(),
            Some(Constraint::any_json_object())
        );
        assert_eq!(
            read(serde_json::json!({"grammar": "root ::= \"a\""}))
                .ok()
                .flatten(),
            Some(Constraint::Grammar("root ::= \"a\"".into()))
        );
        let e = read(serde_json::json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 3}}}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format"));
        let e = read(serde_json::json!({"grammar": ["x"]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("grammar"));
    }

    #[test]
    fn fields_that_would_change_the_reply_are_refused_by_name() {
        let other = |v: Value| v.as_object().cloned().unwrap_or_default();
        let e = refuse_unsupported(
            &other(serde_json::json!({"tools": [{"type": "function"}]})),
            Endpoint::Chat,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools"));
        assert!(refuse_unsupported(
            &other(
                serde_json::json!({"response_format": {"type": "text"}, "user": "x", "tools": []})
            ),
            Endpoint::Chat
        )
        .is_ok());
        let e = refuse_unsupported(&other(serde_json::json!({"echo": true})), Endpoint::Text)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("echo"));
        let s = api::Sampling {
            n: Some(2),
            ..Default::default()
        };
        assert_eq!(
            sampling(&s, &Map::new()).unwrap_err().param.as_deref(),
            Some("n")
        );
        let s = api::Sampling {
            temperature: Some(-1.0),
            ..Default::default()
        };
        assert_eq!(
            sampling(&s, &Map::new()).unwrap_err().param.as_deref(),
            Some("temperature")
        );
        let s = api::Sampling {
            max_tokens: Some(3),
            max_completion_tokens: Some(5),
            seed: Some(-1),
            ..Default::default()
        };
        let p = sampling(&s, &other(serde_json::json!({"top_k": 1}))).unwrap();
        assert_eq!(
            (p.max_tokens, p.top_k, p.seed),
            (Some(5), 1, Some(u32::MAX))
        );
    }

    #[test]
    fn content_parts_are_read_and_local_images_refused_by_default() {
        let refused = LocalFiles::Refused {
            how: "start the server with --allow-local-images",
        };
        let parts = api::Content::Parts(vec![
            serde_json::json!({"type": "text", "text": "a"}),
            serde_json::json!({"type": "text", "text": "b"}),
        ]);
        assert_eq!(content(Some(parts), 0, refused).unwrap().0, "a\nb");
        let local = api::Content::Parts(vec![
            serde_json::json!({"type": "image_url", "image_url": {"url": "/etc/hostname"}}),
        ]);
        let e = content(Some(local), 1, refused).unwrap_err().message;
        assert!(
            e.starts_with("image 1 of messages[1] names a local file (/etc/hostname)"),
            "{e}"
        );
        let bad = api::Content::Parts(vec![
            serde_json::json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}),
        ]);
        let e = content(Some(bad), 0, refused).unwrap_err().message;
        assert!(e.contains("is not an image"), "{e}");
    }
}

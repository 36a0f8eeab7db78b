//! The adapter for gemma-engine, the bundled engine: spawns the process, waits for its `ready`
//! event, and turns its JSON-lines protocol into [`ReplyStream`]s.
//!
//! Three tasks serve one process: a writer (commands to stdin), a reader (events from stdout,
//! routed to the request they belong to) and a waiter (reaps the process and records how it
//! ended). When stdout closes, every request still in flight ends with a `Died` error carrying the
//! exit status, signal and the last stderr lines — an engine crash is noticed at once.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use engine_protocol::{self as protocol, Event};

use super::child::{self, ChildProcess, ExitInfo, StderrTail};
use super::{Engine, EngineError, ReplyEvent, ReplyStream};
use crate::domain::{
    Backend, Completion, Constraint, Device, EngineDescription, EngineKind, ErrorCode,
    FinishReason, FlashAttention, GenerateRequest, KvCacheType, Message, ModelFacts, PromptFormat,
    Role, SamplingParams, Timings, Usage,
};

/// How to launch one gemma-engine.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The gemma-engine build to run (the CPU one, or a GPU build).
    pub binary: PathBuf,
    /// The GGUF file.
    pub model_path: PathBuf,
    /// The vision projector GGUF loaded beside it (`--mmproj`), if the model sees images.
    pub mmproj: Option<PathBuf>,
    /// Context length in tokens, shared by all decode slots.
    pub context: u32,
    /// Decode slots: requests decoded together.
    pub parallel: u32,
    /// CPU threads; `None` lets the engine choose from the machine's load at its start.
    pub threads: Option<u32>,
    /// Layers to put on a GPU; `None` on the CPU.
    pub gpu_layers: Option<u32>,
    /// Element type of the KV cache.
    pub kv_cache_type: KvCacheType,
    /// Flash attention.
    pub flash_attention: FlashAttention,
    /// Longest wait for the engine's ready event.
    pub load_timeout: Duration,
}

type Inflight = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ReplyEvent>>>>;

/// A running gemma-engine process.
pub struct GemmaEngine {
    description: EngineDescription,
    process: ChildProcess,
    commands: mpsc::UnboundedSender<String>,
    inflight: Inflight,
}

impl GemmaEngine {
    /// Starts the engine and waits for its `ready` event, reporting load progress (0..1).
    pub async fn start(
        spec: &LaunchSpec,
        on_progress: impl FnMut(f32) + Send,
    ) -> Result<GemmaEngine, EngineError> {
        let Spawned {
            process,
            mut stdin,
            mut events,
            stderr_tail,
        } = spawn(spec)?;
        let pid = process.pid();
        let waiting = wait_ready(&mut events, &process, &stderr_tail, on_progress);
        let ready = match tokio::time::timeout(spec.load_timeout, waiting).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(EngineError::Load {
                code: ErrorCode::BadArguments,
                message,
                path,
            })) => {
                process.kill();
                return Err(EngineError::Load {
                    code: ErrorCode::BadArguments,
                    message: refused_arguments(&spec.binary, &message),
                    path,
                });
            }
            Ok(Err(e)) => {
                process.kill();
                return Err(e);
            }
            Err(_) => {
                process.kill();
                return Err(EngineError::LoadTimeout {
                    model: spec.model_path.display().to_string(),
                    secs: spec.load_timeout.as_secs(),
                });
            }
        };
        if ready.protocol != protocol::PROTOCOL_VERSION {
            process.kill();
            return Err(EngineError::Protocol(format!(
                "{} speaks protocol {} but gemmactl needs {}: rebuild both from the same checkout",
                spec.binary.display(),
                ready.protocol,
                protocol::PROTOCOL_VERSION
            )));
        }
        tracing::info!(?pid, load_ms = ready.load_ms, "engine ready");

        let (commands, mut outgoing) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(mut line) = outgoing.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes it: the engine's signal to finish and exit.
        });
        let inflight: Inflight = Arc::default();
        tokio::spawn(route_events(
            events,
            inflight.clone(),
            process.clone(),
            stderr_tail,
        ));
        Ok(GemmaEngine {
            description: describe(ready, pid),
            process,
            commands,
            inflight,
        })
    }

    fn send(&self, command: &protocol::Command) -> bool {
        match serde_json::to_string(command) {
            Ok(line) => self.commands.send(line).is_ok(),
            Err(e) => {
                tracing::error!("a command could not be written as JSON: {e}");
                false
            }
        }
    }
}

/// A just-spawned engine and its streams.
struct Spawned {
    process: ChildProcess,
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
    stderr_tail: StderrTail,
}

/// Starts the engine process for `spec`, isolated, with its streams piped.
fn spawn(spec: &LaunchSpec) -> Result<Spawned, EngineError> {
    let mut cmd = Command::new(&spec.binary);
    cmd.arg("--model").arg(&spec.model_path);
    if let Some(projector) = &spec.mmproj {
        cmd.arg("--mmproj").arg(projector);
    }
    cmd.args(["--context", &spec.context.to_string()])
        .args(["--parallel", &spec.parallel.to_string()]);
    if let Some(t) = spec.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    if let Some(n) = spec.gpu_layers {
        cmd.args(["--gpu-layers", &n.to_string()]);
    }
    // Given only when not the default, so an engine from before these flags still starts.
    if spec.kv_cache_type != KvCacheType::default() {
        cmd.args(["--kv-cache-type", spec.kv_cache_type.as_str()]);
    }
    if spec.flash_attention != FlashAttention::default() {
        cmd.args(["--flash-attention", spec.flash_attention.as_str()]);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_failed = |reason: String| EngineError::Spawn {
        binary: spec.binary.clone(),
        reason,
    };
    let mut proc = child::spawn(&mut cmd).map_err(|e| spawn_failed(e.to_string()))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (proc.stdin.take(), proc.stdout.take(), proc.stderr.take())
    else {
        return Err(spawn_failed(
            "its standard streams could not be connected".into(),
        ));
    };
    let process = ChildProcess::watch(proc, "gemma-engine");
    let pid = process.pid();
    tracing::info!(?pid, model = %spec.model_path.display(), "engine starting");
    Ok(Spawned {
        stderr_tail: StderrTail::collect(stderr, format!("gemma-engine[{pid:?}]")),
        process,
        stdin,
        events: BufReader::new(stdout).lines(),
    })
}

/// Reads events until `ready`, reporting load progress; a load error, a broken protocol or the
/// process's death end the wait with the reason.
async fn wait_ready(
    events: &mut Lines<BufReader<ChildStdout>>,
    process: &ChildProcess,
    stderr_tail: &StderrTail,
    mut on_progress: impl FnMut(f32) + Send,
) -> Result<protocol::ReadyInfo, EngineError> {
    loop {
        match next_event(events).await {
            Some(Ok(Event::Loading { progress })) => on_progress(progress),
            Some(Ok(Event::Ready(ready))) => {
                // A busy machine gets fewer threads than cores; the log says why.
                if let Some(reason) = &ready.threads_reason {
                    tracing::info!(threads = ready.threads, "engine threads chosen: {reason}");
                }
                return Ok(ready);
            }
            Some(Ok(Event::Error(e))) => {
                return Err(EngineError::Load {
                    code: error_code(e.code),
                    message: e.message,
                    path: e.path,
                });
            }
            Some(Ok(other)) => {
                return Err(EngineError::Protocol(format!(
                    "unexpected event before ready: {other:?}"
                )))
            }
            Some(Err(e)) => return Err(e),
            None => {
                let exit = process.wait_exit().await;
                return Err(EngineError::Died {
                    engine: EngineKind::GemmaEngine,
                    exit,
                    stderr_tail: stderr_tail.at_end().await,
                });
            }
        }
    }
}

/// The sentence for an engine that refused its command line. gemmactl checks every setting
/// before starting an engine, so this means a gemma-engine from another version; the engine's
/// usage text (the lines after the first) is for someone running it by hand, never shown here.
fn refused_arguments(binary: &std::path::Path, message: &str) -> String {
    let why = message.lines().next().unwrap_or("").trim();
    format!(
        "{} refused the settings gemmactl started it with ({why}): it is probably from another version of gemmactl; rebuild both with `cargo build --workspace`, or point GEMMACTL_ENGINE at the matching gemma-engine",
        binary.display()
    )
}

/// The engine's ready report in gemmactl's terms. The backend is where the layers really are:
/// a GPU build that put none on its GPU is reported as CPU.
fn describe(ready: protocol::ReadyInfo, pid: Option<u32>) -> EngineDescription {
    let backend = ready
        .devices
        .iter()
        .find(|d| d.kind != "cpu")
        .filter(|_| ready.gpu_layers > 0)
        .and_then(|d| Backend::ALL.into_iter().find(|b| b.matches(&d.backend)))
        .unwrap_or(Backend::Cpu);
    let m = ready.model;
    EngineDescription {
        engine: EngineKind::GemmaEngine,
        pid,
        model: ModelFacts {
            path: m.path,
            name: m.name,
            architecture: m.architecture,
            train_context: m.train_context,
            parameters: m.parameters,
            layers: m.layers,
            size_bytes: m.size_bytes,
            chat_template: m.chat_template,
            sliding_window: m.sliding_window,
            fill_in_middle: m.fill_in_middle,
        },
        backend,
        devices: ready.devices.into_iter().map(device).collect(),
        gpu_layers: ready.gpu_layers,
        context: ready.context,
        parallel: ready.parallel,
        threads: ready.threads,
        kv_cache_type: Some(ready.kv_cache_type),
        flash_attention: Some(ready.flash_attention),
        load_ms: ready.load_ms,
        fallback: None,
    }
}

/// A device as the engine protocol reports it, in gemmactl's terms.
pub fn device(d: protocol::Device) -> Device {
    Device {
        name: d.name,
        description: d.description,
        backend: d.backend,
        kind: d.kind,
        memory_total: d.memory_total,
        memory_free: d.memory_free,
    }
}

/// The protocol's error kinds in gemmactl's terms.
fn error_code(code: protocol::ErrorCode) -> ErrorCode {
    use protocol::ErrorCode as W;
    match code {
        W::ModelNotFound => ErrorCode::ModelNotFound,
        W::ModelUnreadable => ErrorCode::ModelUnreadable,
        W::NotGguf => ErrorCode::NotGguf,
        W::ModelTruncated => ErrorCode::ModelTruncated,
        W::UnsupportedArchitecture => ErrorCode::UnsupportedArchitecture,
        W::LoadFailed => ErrorCode::LoadFailed,
        W::OutOfMemory => ErrorCode::OutOfMemory,
        W::ContextOverflow => ErrorCode::ContextOverflow,
        W::BadCommand => ErrorCode::BadCommand,
        W::BadRequest => ErrorCode::BadRequest,
        W::UnknownRequest => ErrorCode::UnknownRequest,
        W::DecodeFailed => ErrorCode::DecodeFailed,
        W::BadArguments => ErrorCode::BadArguments,
        W::BadImage => ErrorCode::BadImage,
        W::NoVision => ErrorCode::NoVision,
    }
}

fn finish_reason(reason: protocol::FinishReason) -> FinishReason {
    match reason {
        protocol::FinishReason::Stop => FinishReason::Stop,
        protocol::FinishReason::Length => FinishReason::Length,
        protocol::FinishReason::Context => FinishReason::Context,
        protocol::FinishReason::Cancelled => FinishReason::Cancelled,
        protocol::FinishReason::Error => FinishReason::Error,
    }
}

/// A message in the protocol's terms: each image as the absolute path of its file (the
/// history's copy, else the user's file), or, when it is only in memory, its bytes as base64.
fn wire_message(role: protocol::Role, m: Message) -> protocol::Message {
    use base64::Engine as _;
    let images = m
        .images
        .into_iter()
        .map(|image| protocol::PlacedImage {
            at: image.at,
            image: match (image.file(), &image.data) {
                (Some(file), _) => protocol::ImageSource::Path {
                    path: file.to_string_lossy().into_owned(),
                },
                (None, Some(data)) => protocol::ImageSource::Data {
                    data: base64::engine::general_purpose::STANDARD.encode(&data[..]),
                },
                // Images are made from a file or from bytes, so one or the other is there; an
                // empty path makes the engine refuse it by name rather than lose it silently.
                (None, None) => protocol::ImageSource::Path {
                    path: String::new(),
                },
            },
        })
        .collect();
    protocol::Message {
        role,
        content: m.content,
        images,
    }
}

/// A request in the protocol's terms.
fn command(request: GenerateRequest) -> protocol::GenerateCommand {
    let role = |r: Role| match r {
        Role::System => protocol::Role::System,
        Role::User => protocol::Role::User,
        Role::Assistant => protocol::Role::Assistant,
    };
    let p: SamplingParams = request.params;
    protocol::GenerateCommand {
        id: request.id,
        messages: request
            .messages
            .into_iter()
            .map(|m: Message| wire_message(role(m.role), m))
            .collect(),
        session: request.session,
        prompt: match request.prompt {
            PromptFormat::Auto => protocol::PromptFormat::Auto,
            PromptFormat::Chat { template } => protocol::PromptFormat::Chat { template },
            PromptFormat::Completion => protocol::PromptFormat::Completion,
            PromptFormat::FillInMiddle { suffix } => {
                protocol::PromptFormat::FillInMiddle { suffix }
            }
        },
        // The wire carries single precision; the domain keeps the decimal the user gave.
        params: protocol::SamplingParams {
            max_tokens: p.max_tokens,
            temperature: p.temperature as f32,
            top_k: p.top_k,
            top_p: p.top_p.map(|v| v as f32),
            seed: p.seed,
            stop: p.stop,
            grammar: p.constraint.map(|c| match c {
                Constraint::JsonSchema(schema) => protocol::Grammar::JsonSchema(schema),
                Constraint::Grammar(gbnf) => protocol::Grammar::Gbnf(gbnf),
            }),
        },
    }
}

/// Reads events after `ready` and hands each to the request it names.
async fn route_events(
    mut events: Lines<BufReader<ChildStdout>>,
    inflight: Inflight,
    process: ChildProcess,
    tail: StderrTail,
) {
    while let Some(event) = next_event(&mut events).await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let (id, reply, last) = match event {
            Event::Token { id, text } => (id, ReplyEvent::Token(text), false),
            Event::Progress { id, done, total } => {
                (id, ReplyEvent::PromptProgress { done, total }, false)
            }
            Event::Done(done) => (
                done.id,
                ReplyEvent::Finished(Completion {
                    finish_reason: finish_reason(done.finish_reason),
                    usage: Usage {
                        prompt_tokens: done.usage.prompt_tokens,
                        cached_tokens: done.usage.cached_tokens,
                        completion_tokens: done.usage.completion_tokens,
                    },
                    timings: Timings {
                        queue_ms: done.timings.queue_ms,
                        ttft_ms: done.timings.ttft_ms,
                        prefill_tokens_per_s: done.timings.prefill_tokens_per_s,
                        decode_tokens_per_s: done.timings.decode_tokens_per_s,
                        total_ms: done.timings.total_ms,
                    },
                }),
                true,
            ),
            Event::Error(e) => match e.id {
                Some(id) => (
                    id,
                    ReplyEvent::Failed(EngineError::Request {
                        code: error_code(e.code),
                        message: e.message,
                    }),
                    true,
                ),
                None => {
                    tracing::warn!(code = ?e.code, "engine error: {}", e.message);
                    continue;
                }
            },
            other => {
                tracing::warn!("unexpected engine event after ready: {other:?}");
                continue;
            }
        };
        let mut map = inflight.lock().unwrap_or_else(|p| p.into_inner());
        let sender = if last {
            map.remove(&id)
        } else {
            map.get(&id).cloned()
        };
        if let Some(sender) = sender {
            let _ = sender.send(reply);
        }
    }
    // stdout closed: the process is gone or going. Everyone still waiting learns why.
    let exit = process.wait_exit().await;
    let error = EngineError::Died {
        engine: EngineKind::GemmaEngine,
        exit,
        stderr_tail: tail.at_end().await,
    };
    let waiting: Vec<_> = inflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    for (_, sender) in waiting {
        let _ = sender.send(ReplyEvent::Failed(error.clone()));
    }
}

async fn next_event(
    events: &mut Lines<BufReader<ChildStdout>>,
) -> Option<Result<Event, EngineError>> {
    match events.next_line().await {
        Ok(Some(line)) => {
            Some(serde_json::from_str(&line).map_err(|e| {
                EngineError::Protocol(format!("cannot read engine event {line:?}: {e}"))
            }))
        }
        Ok(None) | Err(_) => None,
    }
}

impl Engine for GemmaEngine {
    fn describe(&self) -> EngineDescription {
        self.description.clone()
    }

    fn generate(&self, request: GenerateRequest) -> Result<ReplyStream, EngineError> {
        if let Some(exit) = self.exit_status() {
            return Err(EngineError::Died {
                engine: EngineKind::GemmaEngine,
                exit,
                stderr_tail: Vec::new(),
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // Registered before sending, so no event can arrive for an unknown id.
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.id.clone(), tx);
        let id = request.id.clone();
        let command = protocol::Command::Generate(command(request));
        if !self.send(&command) {
            self.inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(EngineError::Stopped);
        }
        Ok(rx)
    }

    fn cancel(&self, id: &str) {
        self.send(&protocol::Command::Cancel { id: id.to_string() });
    }

    fn exit_status(&self) -> Option<ExitInfo> {
        self.process.exit_status()
    }

    fn stop(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if self.exit_status().is_some() {
                return;
            }
            let pid = self.process.pid();
            tracing::info!(?pid, "engine stopping");
            self.send(&protocol::Command::Shutdown);
            if !self.process.exited_within(grace).await {
                tracing::warn!(?pid, "engine did not stop within {grace:?}; killing it");
                self.process.kill();
                self.process.exited_within(Duration::from_secs(5)).await;
            }
        })
    }
}

impl Drop for GemmaEngine {
    fn drop(&mut self) {
        // Never leave an engine behind, whatever path dropped it.
        self.process.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engines_usage_text_never_reaches_the_user() {
        let said = "--context wants a whole number ≥ 64, got \"0\"\nusage: gemma-engine --model PATH [--context N]\n       gemma-engine --probe";
        let shown = refused_arguments(std::path::Path::new("/opt/gemma-engine"), said);
        assert!(!shown.contains("usage") && !shown.contains('\n'), "{shown}");
        assert!(
            shown.contains("/opt/gemma-engine") && shown.contains("--context wants"),
            "{shown}"
        );
    }

    /// What the adapter writes for a message with two images — one from a file, one given as
    /// bytes — is protocol version 4's parts, in order, and reads back to the same message.
    #[test]
    fn a_message_with_two_images_goes_out_as_parts_in_order() {
        use base64::Engine as _;
        let png = {
            let mut out = std::io::Cursor::new(Vec::new());
            ::image::RgbImage::from_pixel(3, 2, ::image::Rgb([10, 20, 30]))
                .write_to(&mut out, ::image::ImageFormat::Png)
                .unwrap();
            out.into_inner()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("first.png");
        std::fs::write(&file, &png).unwrap();
        let text = "Compare  and .";
        let images = vec![
            crate::domain::Image::from_file(&file).unwrap().placed(8),
            crate::domain::Image::from_bytes(png.clone(), "image 2")
                .unwrap()
                .placed(13),
        ];
        let request = GenerateRequest {
            id: "r1".into(),
            messages: vec![Message::new(Role::User, text).with_images(images)],
            session: None,
            prompt: PromptFormat::Auto,
            params: SamplingParams::default(),
        };
        let wire = serde_json::to_value(protocol::Command::Generate(command(request))).unwrap();
        let content = &wire["messages"][0]["content"];
        assert_eq!(
            content,
            &serde_json::json!([
                {"type": "text", "text": "Compare "},
                {"type": "image", "path": file.to_string_lossy()},
                {"type": "text", "text": " and "},
                {"type": "image", "data": base64::engine::general_purpose::STANDARD.encode(&png)},
                {"type": "text", "text": "."},
            ]),
            "{wire}"
        );
        let back: protocol::Message = serde_json::from_value(wire["messages"][0].clone()).unwrap();
        assert_eq!(back.content, text);
        assert_eq!(
            back.images.iter().map(|p| p.at).collect::<Vec<_>>(),
            [8, 13]
        );
    }
}

//! The adapter for Google's gemma.cpp: drives the stock `gemma` binary through its interactive
//! terminal protocol (facts in `shared/reference/gemma-cpp-cli.md`) behind the [`Engine`] trait,
//! so `run` and every later front end use gemma.cpp models unchanged.
//!
//! One process holds one conversation and decodes one request at a time, so requests wait in a
//! FIFO queue served by one driver task that owns the process. The binary is started with
//! `--verbosity 1 --multiturn 1 --eot_line <random sentinel>`; a turn is over by the two-condition
//! rule (see `process.rs`), its reply is read as the binary flushes it (`turn.rs`), and what to
//! type — only the new user turn, or `%c` and a replay of the whole conversation — is decided by
//! `conversation.rs`, which also keeps the KV cache from wrapping around `seq_len`.
//!
//! gemma.cpp cannot be interrupted: stopping a reply kills the process and starts a new one, and
//! the next request replays its conversation into it. That costs a model load (about a second
//! for Gemma 3 270M, more for larger files) plus re-reading the conversation. Sampling flags
//! (token limit, temperature, top-k) are fixed per process, so a request that changes them also
//! restarts it (logged with the reason). Failures are translated by `failure.rs`.

mod conversation;
mod failure;
mod image;
mod process;
mod stop;
mod turn;

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::child::{ChildProcess, ExitInfo};
use super::{Engine, EngineError, ReplyEvent, ReplyStream};
use crate::domain::{
    Backend, Completion, EngineDescription, EngineKind, ErrorCode, FinishReason, GenerateRequest,
    Image, ModelFacts, PromptFormat, Role, Timings, Usage,
};
use conversation::{Conversation, Turn};
use process::{Launch, NotReady, Process, Sampling, TurnEnd};

/// Most tokens per reply a process starts with (`--max_generated_tokens`). This and the two
/// sampling flags below match `gemmactl run`'s defaults, so a plain `run` never restarts the
/// engine.
pub const DEFAULT_MAX_GENERATED_TOKENS: u32 = 512;
/// Sampling temperature a process starts with (`--temperature`).
pub const DEFAULT_TEMPERATURE: f32 = 0.8;
/// Top-k a process starts with (`--top_k`).
pub const DEFAULT_TOP_K: u32 = 40;
/// gemma.cpp's own default KV cache length (`--seq_len`).
const DEFAULT_SEQ_LEN: u32 = 8192;
/// How long a start may take when the spec does not say.
const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `%c` may take to show the next prompt marker.
const RESET_TIMEOUT: Duration = Duration::from_secs(30);

/// How to launch gemma.cpp for one model.
#[derive(Debug, Clone)]
pub struct GemmaCppSpec {
    /// gemma.cpp's `gemma` binary.
    pub binary: PathBuf,
    /// The `.sbs` weights.
    pub weights: PathBuf,
    /// What the weights file says about the model (read by the launcher's pre-flight).
    pub facts: ModelFacts,
    /// Only for pre-2025 multi-file weights.
    pub tokenizer: Option<PathBuf>,
    /// Whether gemma.cpp wraps prompts in the chat template (instruct models). Pre-2025 base
    /// models are started with `--wrapping 0`.
    pub chat: bool,
    /// KV cache length (`--seq_len`).
    pub seq_len: u32,
    /// Worker threads (`--num_threads`); `None` lets gemma.cpp pick.
    pub threads: Option<u32>,
    /// `--spin`: -1 auto, 0 off, 1 on.
    pub spin: Option<i8>,
    /// Initial sampling flags; a request asking for others restarts the process.
    pub max_generated_tokens: u32,
    /// Initial `--temperature`.
    pub temperature: f32,
    /// Initial `--top_k`.
    pub top_k: u32,
    /// Longest wait for the first prompt marker.
    pub load_timeout: Duration,
}

impl GemmaCppSpec {
    /// A spec with gemmactl's defaults for everything but the two paths.
    pub fn new(binary: PathBuf, weights: PathBuf) -> GemmaCppSpec {
        GemmaCppSpec {
            facts: ModelFacts {
                path: weights.display().to_string(),
                ..ModelFacts::default()
            },
            binary,
            weights,
            tokenizer: None,
            chat: true,
            seq_len: DEFAULT_SEQ_LEN,
            threads: None,
            spin: None,
            max_generated_tokens: DEFAULT_MAX_GENERATED_TOKENS,
            temperature: DEFAULT_TEMPERATURE,
            top_k: DEFAULT_TOP_K,
            load_timeout: DEFAULT_LOAD_TIMEOUT,
        }
    }
}

/// Per request in the queue or in flight: its cancel switch, its event stream (so a request
/// still queued can be answered at once), and whether the driver has taken it up.
struct Pending {
    cancel: watch::Sender<bool>,
    events: mpsc::UnboundedSender<ReplyEvent>,
    started: bool,
}

type Cancels = Arc<Mutex<HashMap<String, Pending>>>;

struct Job {
    id: String,
    conversation: Conversation,
    max_tokens: Option<u32>,
    temperature: f32,
    top_k: u32,
    /// Stop strings, watched for in the streamed reply (`stop.rs`).
    stop: Vec<String>,
    /// The conversation's image (one at most: `image.rs`).
    image: Option<Image>,
    events: mpsc::UnboundedSender<ReplyEvent>,
    cancel: watch::Receiver<bool>,
    received: Instant,
}

/// A running gemma.cpp engine (one process at a time, replaced on cancel).
pub struct GemmaCpp {
    description: EngineDescription,
    chat: bool,
    weights: PathBuf,
    jobs: mpsc::UnboundedSender<Job>,
    cancels: Cancels,
    /// Set once the engine is finished for good: crashed, failed to restart, or stopped.
    exit: watch::Receiver<Option<ExitInfo>>,
    stopping: watch::Sender<Option<Duration>>,
    /// The process serving now (it changes when a cancel restarts gemma.cpp).
    current: Current,
    last_tail: Arc<Mutex<Vec<String>>>,
}

/// The process serving now, shared by the engine handle and its driver task.
type Current = Arc<Mutex<Option<ChildProcess>>>;

impl GemmaCpp {
    /// Starts gemma.cpp and waits for its prompt marker. gemma.cpp reports no load progress, so
    /// `on_progress` hears 0 at the start and 1 when it is ready.
    pub async fn start(
        spec: &GemmaCppSpec,
        mut on_progress: impl FnMut(f32) + Send,
    ) -> Result<GemmaCpp, EngineError> {
        on_progress(0.0);
        let started = Instant::now();
        let launch = Launch {
            binary: spec.binary.clone(),
            weights: spec.weights.clone(),
            tokenizer: spec.tokenizer.clone(),
            wrapping: (spec.tokenizer.is_some() && !spec.chat).then_some(false),
            seq_len: spec.seq_len,
            threads: spec.threads,
            spin: spec.spin,
            sampling: Sampling {
                max_generated_tokens: spec.max_generated_tokens,
                temperature: spec.temperature,
                top_k: spec.top_k,
            },
            sentinel: sentinel(),
            image_file: None,
        };
        let process = launch_process(launch, spec.load_timeout).await?;
        on_progress(1.0);
        let load_ms = started.elapsed().as_millis() as u64;
        tracing::info!(pid = ?process.child.pid(), load_ms, model = ?process.model_line, "gemma.cpp ready");

        let description = EngineDescription {
            engine: EngineKind::GemmaCpp,
            pid: process.child.pid(),
            model: ModelFacts {
                name: process.model_line.clone().or(spec.facts.name.clone()),
                train_context: spec.seq_len,
                chat_template: spec.chat.then(|| "gemma".to_string()),
                ..spec.facts.clone()
            },
            backend: Backend::Cpu,
            devices: Vec::new(),
            gpu_layers: 0,
            context: spec.seq_len,
            parallel: 1,
            threads: spec.threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1)
            }),
            kv_cache_type: None,
            flash_attention: None,
            load_ms,
            fallback: None,
        };

        let (jobs, queue) = mpsc::unbounded_channel();
        let (exit_tx, exit) = watch::channel(None);
        let (stopping, stop_rx) = watch::channel(None);
        let cancels: Cancels = Arc::default();
        let current: Current = Arc::new(Mutex::new(Some(process.child.clone())));
        let last_tail = Arc::new(Mutex::new(Vec::new()));
        let driver = Driver {
            spec: spec.clone(),
            process: Some(process),
            held: Conversation::default(),
            pos: 0,
            current: current.clone(),
            exit: exit_tx,
            cancels: cancels.clone(),
            last_tail: last_tail.clone(),
            dead: None,
            image: None,
        };
        tokio::spawn(driver.run(queue, stop_rx));
        Ok(GemmaCpp {
            description,
            chat: spec.chat,
            weights: spec.weights.clone(),
            jobs,
            cancels,
            exit,
            stopping,
            current,
            last_tail,
        })
    }

    /// The conversation's image, refused when the model cannot see (`no_vision`) or when there
    /// are two different ones.
    fn image_of(&self, request: &GenerateRequest) -> Result<Option<Image>, EngineError> {
        let image =
            image::of_conversation(&request.messages).map_err(|message| EngineError::Request {
                code: ErrorCode::BadRequest,
                message,
            })?;
        let model = self.description.model.name.as_deref().unwrap_or("");
        if image.is_some() && !image::sees(model) {
            return Err(EngineError::Request {
                code: ErrorCode::NoVision,
                message: crate::domain::cannot_see(&self.weights.display().to_string()),
            });
        }
        Ok(image)
    }

    /// Refuses what gemma.cpp cannot do, with the sentence the caller shows.
    fn check(&self, request: &GenerateRequest) -> Result<Conversation, String> {
        let p = &request.params;
        let w = self.weights.display();
        if p.seed.is_some() {
            return Err("gemma.cpp has no seed setting (its only choice is a fixed or a random key): leave the seed out, or use a GGUF model on gemma-engine".into());
        }
        if p.top_p.is_some_and(|t| t < 1.0) {
            return Err("gemma.cpp has no top-p (nucleus) sampling: leave top-p out (or set it to 1) and use top-k instead".into());
        }
        if let Some(c) = &p.constraint {
            return Err(format!("gemma.cpp cannot hold a reply to a {} (it has no constrained sampling): leave the {} out, or use a GGUF model on gemma-engine", c.kind(), c.kind()));
        }
        if !(p.temperature.is_finite() && p.temperature >= 0.0) {
            return Err(format!(
                "temperature {} is not valid: use a number ≥ 0 (0 = greedy)",
                p.temperature
            ));
        }
        if p.top_k == 0 && p.temperature > 0.0 {
            return Err(
                "gemma.cpp cannot turn top-k off: give a top-k of 1 or more (1 = greedy)".into(),
            );
        }
        if p.max_tokens == Some(0) {
            return Err("max tokens 0 asks for nothing: use at least 1".into());
        }
        match (&request.prompt, self.chat) {
            (PromptFormat::FillInMiddle { .. }, _) => {
                return Err(format!("gemma.cpp has no fill-in-the-middle prompt, so {w} cannot complete code between a prefix and a suffix: send the code before the cursor as plain text, or use a GGUF code model with fill-in-the-middle tokens (e.g. qwen2.5-coder-0.5b) on gemma-engine"))
            }
            (PromptFormat::Completion, true) => {
                return Err(format!("{w} is a chat model that gemma.cpp always wraps in its chat template, so a raw (completion) prompt cannot be sent to it: leave out --raw, or use a pretrained (-pt) file"))
            }
            (PromptFormat::Chat { template: Some(t) }, true) if t != "gemma" => {
                return Err(format!("gemma.cpp always uses Gemma's own chat template, not '{t}': leave the template out"))
            }
            (PromptFormat::Chat { .. }, false) => {
                return Err(format!("{w} is a pretrained (-pt) model, which gemma.cpp runs without a chat template: send the prompt as plain text (--raw)"))
            }
            _ => {}
        }
        Conversation::from_messages(&request.messages)
    }
}

/// The statistics of a stopped reply. gemma.cpp prints its Generate line only when a reply ends,
/// so decode speed is measured from the arrival of the reply's text (one delivery per flushed
/// token), the way a client sees it; the Prefill line, printed with the first token, gives
/// prefill speed and time to first token when it came.
fn stopped_timings(p: &process::Partial, queue_ms: f64, total_ms: f64) -> Timings {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let decode_tokens_per_s = match (p.first, p.last) {
        (Some(first), Some(last)) if p.pieces > 1 && last > first => {
            (p.pieces - 1) as f64 / last.duration_since(first).as_secs_f64()
        }
        _ => 0.0,
    };
    // gemma.cpp prints whole milliseconds: a 0 there is below its resolution, not a measure.
    let ttft_ms = match (p.prefill.filter(|pf| pf.ttft_ms > 0.0), p.first) {
        (Some(prefill), _) => queue_ms + prefill.ttft_ms,
        (None, Some(first)) => queue_ms + ms(first.duration_since(p.sent)),
        (None, None) => 0.0,
    };
    Timings {
        queue_ms,
        ttft_ms,
        prefill_tokens_per_s: p.prefill.map_or(0.0, |pf| pf.tokens_per_s),
        decode_tokens_per_s,
        total_ms,
    }
}

/// An `--eot_line` terminator no user line can be: 128 random bits (std's randomly keyed
/// hasher, seeded per process) mixed with the time and pid.
fn sentinel() -> String {
    let mut words = [0u64; 2];
    for w in &mut words {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        *w = h.finish();
    }
    format!(
        "<<gemmactl-end-of-prompt-{:016x}{:016x}>>",
        words[0], words[1]
    )
}

/// Spawns a process and waits for it to be ready, translating every failure.
async fn launch_process(launch: Launch, load_timeout: Duration) -> Result<Process, EngineError> {
    let (binary, weights, tokenizer) = (
        launch.binary.clone(),
        launch.weights.clone(),
        launch.tokenizer.clone(),
    );
    let mut process = Process::spawn(launch)?;
    match process.wait_ready(load_timeout).await {
        Ok(()) => Ok(process),
        Err(NotReady::Exited(exit)) => {
            // The stderr reader may still be delivering the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(failure::startup(
                &binary,
                &weights,
                tokenizer.as_deref(),
                exit,
                &process.tail.lines(),
            ))
        }
        Err(NotReady::Timeout) => {
            process.kill().await;
            Err(EngineError::LoadTimeout {
                model: weights.display().to_string(),
                secs: load_timeout.as_secs(),
            })
        }
    }
}

/// The task that owns the process and serves requests one at a time.
struct Driver {
    spec: GemmaCppSpec,
    process: Option<Process>,
    /// The caller's conversation the process holds (replies included).
    held: Conversation,
    /// KV positions in use (an upper bound: the dots plus the Generate line's tokens).
    pos: u64,
    current: Current,
    exit: watch::Sender<Option<ExitInfo>>,
    cancels: Cancels,
    last_tail: Arc<Mutex<Vec<String>>>,
    /// Why the engine is finished, once it is.
    dead: Option<EngineError>,
    /// The image the running process was started with (`--image_file`).
    image: Option<image::PpmFile>,
}

impl Driver {
    async fn run(
        mut self,
        mut queue: mpsc::UnboundedReceiver<Job>,
        mut stopping: watch::Receiver<Option<Duration>>,
    ) {
        loop {
            let job = tokio::select! {
                job = queue.recv() => job,
                _ = stopping.wait_for(Option::is_some) => None,
            };
            let Some(job) = job else { break };
            let id = job.id.clone();
            // A request cancelled while it waited was answered by `cancel` already.
            let waiting_cancelled = {
                let mut cancels = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
                match cancels.get_mut(&id) {
                    Some(p) if *p.cancel.borrow() => true,
                    Some(p) => {
                        p.started = true;
                        false
                    }
                    None => true,
                }
            };
            if waiting_cancelled {
                self.cancels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                continue;
            }
            match &self.dead {
                Some(e) => {
                    let _ = job.events.send(ReplyEvent::Failed(e.clone()));
                }
                None => self.serve(job, &stopping).await,
            }
            self.cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
        // Stopped (or every handle dropped): end the process and everyone still waiting.
        let grace = (*stopping.borrow()).unwrap_or(Duration::from_secs(3));
        let exit = match self.process.take() {
            Some(mut p) => {
                p.stop(grace).await;
                p.wait_exit().await
            }
            None => ExitInfo {
                code: None,
                signal: None,
            },
        };
        queue.close();
        while let Ok(job) = queue.try_recv() {
            // Those flagged were answered by `cancel` or `stop` already.
            let answered = self
                .cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&job.id)
                .is_some_and(|p| *p.cancel.borrow());
            if !answered {
                let _ = job.events.send(ReplyEvent::Failed(EngineError::Stopped));
            }
        }
        let _ = self.exit.send(Some(exit));
    }

    fn sampling_for(&self, job: &Job) -> Sampling {
        let current = self
            .process
            .as_ref()
            .map(|p| p.launch.sampling)
            .unwrap_or(Sampling {
                max_generated_tokens: self.spec.max_generated_tokens,
                temperature: self.spec.temperature,
                top_k: self.spec.top_k,
            });
        // Temperature 0 means greedy, which gemma.cpp does with top-k 1 (temperature then has no
        // effect, so the current one is kept rather than restarting for it).
        let (temperature, top_k) = if job.temperature == 0.0 {
            (current.temperature, 1)
        } else {
            (job.temperature, job.top_k)
        };
        Sampling {
            max_generated_tokens: job.max_tokens.unwrap_or(current.max_generated_tokens),
            temperature,
            top_k,
        }
    }

    async fn serve(&mut self, mut job: Job, stopping: &watch::Receiver<Option<Duration>>) {
        let queue_ms = job.received.elapsed().as_secs_f64() * 1000.0;
        let send = |e: ReplyEvent| {
            let _ = job.events.send(e);
        };
        let sampling = self.sampling_for(&job);
        let current = self.process.as_ref().map(|p| p.launch.sampling);
        let wanted = job.image.as_ref().map(|i| i.sha256.as_str());
        let image_changed = wanted != self.image.as_ref().map(|p| p.sha256.as_str());
        if image_changed {
            // gemma.cpp reads its image only when it starts.
            let reason = match &job.image {
                Some(i) => format!(
                    "request {} shows image {} (SHA-256 {}…), and gemma.cpp takes an image only when it starts",
                    job.id,
                    i.label(),
                    &i.sha256[..12]
                ),
                None => format!(
                    "request {} shows no image, and the running gemma.cpp was started with one",
                    job.id
                ),
            };
            self.image = match job.image.as_ref().map(image::PpmFile::write).transpose() {
                Ok(ppm) => ppm,
                Err(message) => {
                    send(ReplyEvent::Failed(EngineError::Request {
                        code: ErrorCode::BadImage,
                        message,
                    }));
                    return;
                }
            };
            if let Err(e) = self.restart(sampling, &reason).await {
                send(ReplyEvent::Failed(e));
                return;
            }
        } else if current != Some(sampling) {
            let reason = match current {
                Some(c) => format!(
                    "request {} needs other sampling flags (max_generated_tokens {} → {}, temperature {} → {}, top_k {} → {}), which gemma.cpp fixes per process",
                    job.id, c.max_generated_tokens, sampling.max_generated_tokens, c.temperature, sampling.temperature, c.top_k, sampling.top_k
                ),
                None => format!("request {} arrived and no gemma.cpp process is running", job.id),
            };
            if let Err(e) = self.restart(sampling, &reason).await {
                send(ReplyEvent::Failed(e));
                return;
            }
        }

        // What to type: the new user turn alone, or a reset and a (possibly trimmed) replay.
        let chat = self.spec.chat;
        let conv = job.conversation.clone();
        let seq_len = self.spec.seq_len as u64;
        // An image's tokens join the prompt at position 0 (a first turn or a replay).
        let reserve = sampling.max_generated_tokens as u64
            + job.image.as_ref().map_or(0, |_| {
                image::tokens_bound(self.spec.facts.name.as_deref().unwrap_or(""))
            });
        let newest = conv.newest();
        // An empty `held` with positions in use (a wrapped cache) is not extendable.
        let extendable = conv.extends(&self.held) && (self.pos == 0 || !self.held.turns.is_empty());
        let (text, reset) = if extendable
            && self.pos + conversation::turn_bound(&newest) + reserve <= seq_len
        {
            (newest, false)
        } else {
            let room = seq_len.saturating_sub(reserve);
            let Some(from) = conv.trim_to(room) else {
                send(ReplyEvent::Failed(EngineError::Request {
                    code: ErrorCode::ContextOverflow,
                    message: format!(
                        "the last message may need up to {} tokens and {reserve} are kept for the reply, more than gemma.cpp's seq_len of {seq_len}: raise engines.gemma_cpp.seq_len, lower the token limit, or shorten the message",
                        conv.replay_bound(conv.turns.len() - 1)
                    ),
                }));
                return;
            };
            if from > 0 {
                tracing::info!(id = %job.id, dropped_turns = from, seq_len, "conversation trimmed of its oldest turns to fit gemma.cpp's seq_len");
            }
            (conv.replay(from, chat), self.pos > 0)
        };
        let Some(process) = self.process.as_mut() else {
            send(ReplyEvent::Failed(
                self.dead.clone().unwrap_or(EngineError::Stopped),
            ));
            return;
        };
        if reset {
            if !process.reset(RESET_TIMEOUT).await {
                let e = self.crashed().await;
                send(ReplyEvent::Failed(e));
                return;
            }
            self.pos = 0;
            self.held = Conversation::default();
        }
        let Some(process) = self.process.as_mut() else {
            send(ReplyEvent::Failed(
                self.dead.clone().unwrap_or(EngineError::Stopped),
            ));
            return;
        };

        let before = self.pos;
        let mut pieces = 0u32;
        let events = job.events.clone();
        let mut filter = stop::StopFilter::new(&job.stop);
        let end = process
            .turn(&text, &mut job.cancel, |t| {
                // One delivery per flushed token, whether or not its text is shown yet.
                pieces += 1;
                let shown = filter.feed(&t);
                if !shown.is_empty() {
                    let _ = events.send(ReplyEvent::Token(shown));
                }
                !filter.hit()
            })
            .await;
        if !filter.hit() {
            let held = filter.finish();
            if !held.is_empty() {
                let _ = events.send(ReplyEvent::Token(held));
            }
        }
        let total_ms = || job.received.elapsed().as_secs_f64() * 1000.0;
        match end {
            TurnEnd::Done {
                dots,
                reply,
                prefill,
                generate,
            } => {
                self.pos = before + dots as u64 + generate.tokens as u64;
                if self.pos > seq_len {
                    // The bounds above should make this impossible; never extend a wrapped cache.
                    tracing::warn!(
                        pos = self.pos,
                        seq_len,
                        "gemma.cpp's KV cache wrapped around; the next request replays"
                    );
                    self.held = Conversation::default();
                } else if filter.hit() {
                    // The caller keeps the reply cut at its stop string, not what the process
                    // holds: the next request replays.
                    self.held = Conversation::default();
                } else {
                    let mut held = conv;
                    held.turns.push(Turn {
                        role: Role::Assistant,
                        text: reply,
                    });
                    self.held = held;
                }
                let limit = sampling.max_generated_tokens;
                let usage = Usage {
                    prompt_tokens: (before + dots as u64) as u32,
                    cached_tokens: before as u32,
                    completion_tokens: generate.tokens,
                };
                let timings = Timings {
                    queue_ms,
                    ttft_ms: queue_ms + prefill.map_or(generate.ms, |p| p.ttft_ms),
                    prefill_tokens_per_s: prefill.map_or(0.0, |p| p.tokens_per_s),
                    decode_tokens_per_s: generate.tokens_per_s,
                    total_ms: total_ms(),
                };
                // Never `context`: the room for `max_generated_tokens` is kept free in the KV
                // cache before every turn (above), so gemma.cpp's seq_len cannot cut a reply.
                let finish_reason = if filter.hit() {
                    FinishReason::Stop
                } else if generate.tokens >= limit {
                    FinishReason::Length
                } else {
                    FinishReason::Stop
                };
                send(ReplyEvent::Finished(Completion {
                    finish_reason,
                    usage,
                    timings,
                }));
            }
            TurnEnd::Stopped(partial) => {
                // A cancel, or a stop string: the only way to stop gemma.cpp mid-reply is to
                // kill it.
                let at_stop_string = filter.hit();
                let usage = Usage {
                    prompt_tokens: (before + partial.dots as u64) as u32,
                    cached_tokens: before as u32,
                    completion_tokens: pieces,
                };
                let timings = stopped_timings(&partial, queue_ms, total_ms());
                if let Some(mut p) = self.process.take() {
                    p.kill().await;
                }
                self.held = Conversation::default();
                self.pos = 0;
                send(ReplyEvent::Finished(Completion {
                    finish_reason: if at_stop_string {
                        FinishReason::Stop
                    } else {
                        FinishReason::Cancelled
                    },
                    usage,
                    timings,
                }));
                if stopping.borrow().is_none() {
                    let reason = format!(
                        "request {} {}, and gemma.cpp can only be stopped by killing it",
                        job.id,
                        if at_stop_string {
                            "reached a stop string"
                        } else {
                            "was cancelled"
                        }
                    );
                    if let Err(e) = self.restart(sampling, &reason).await {
                        tracing::warn!("gemma.cpp could not be restarted after a cancel: {e}");
                    }
                }
            }
            TurnEnd::Died => {
                let e = self.crashed().await;
                send(ReplyEvent::Failed(e));
            }
        }
    }

    /// The process died mid-request: a prompt too long for the cache is the request's fault
    /// (the engine restarts); anything else finishes the engine, so the supervisor replaces it.
    async fn crashed(&mut self) -> EngineError {
        let Some(p) = self.process.take() else {
            return EngineError::Stopped;
        };
        let exit = p.wait_exit().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tail = p.tail.lines();
        let error = failure::mid_run(exit, tail.clone());
        self.held = Conversation::default();
        self.pos = 0;
        if matches!(error, EngineError::Request { .. }) {
            let sampling = p.launch.sampling;
            if let Err(e) = self
                .restart(
                    sampling,
                    "the previous prompt was too long for gemma.cpp's KV cache",
                )
                .await
            {
                tracing::warn!("gemma.cpp could not be restarted: {e}");
            }
        } else {
            *self.last_tail.lock().unwrap_or_else(|p| p.into_inner()) = tail;
            self.dead = Some(error.clone());
            let _ = self.exit.send(Some(exit));
        }
        error
    }

    async fn restart(&mut self, sampling: Sampling, reason: &str) -> Result<(), EngineError> {
        tracing::info!(reason, "restarting gemma.cpp");
        let mut launch = match self.process.take() {
            Some(mut p) => {
                p.kill().await;
                Launch {
                    sampling,
                    ..p.launch.clone()
                }
            }
            None => Launch {
                binary: self.spec.binary.clone(),
                weights: self.spec.weights.clone(),
                tokenizer: self.spec.tokenizer.clone(),
                wrapping: (self.spec.tokenizer.is_some() && !self.spec.chat).then_some(false),
                seq_len: self.spec.seq_len,
                threads: self.spec.threads,
                spin: self.spec.spin,
                sampling,
                sentinel: sentinel(),
                image_file: None,
            },
        };
        launch.image_file = self.image.as_ref().map(|p| p.path().to_path_buf());
        self.held = Conversation::default();
        self.pos = 0;
        match launch_process(launch, self.spec.load_timeout).await {
            Ok(p) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(p.child.clone());
                self.process = Some(p);
                Ok(())
            }
            Err(e) => {
                tracing::warn!("gemma.cpp failed to restart: {e}");
                self.dead = Some(e.clone());
                let _ = self.exit.send(Some(ExitInfo {
                    code: None,
                    signal: None,
                }));
                Err(e)
            }
        }
    }
}

impl Engine for GemmaCpp {
    fn describe(&self) -> EngineDescription {
        let pid = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(ChildProcess::pid);
        EngineDescription {
            pid,
            ..self.description.clone()
        }
    }

    fn generate(&self, request: GenerateRequest) -> Result<ReplyStream, EngineError> {
        if let Some(exit) = self.exit_status() {
            let stderr_tail = self
                .last_tail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(EngineError::Died {
                engine: EngineKind::GemmaCpp,
                exit,
                stderr_tail,
            });
        }
        let image = self.image_of(&request)?;
        let conversation = self
            .check(&request)
            .map_err(|message| EngineError::Request {
                code: ErrorCode::BadRequest,
                message,
            })?;
        let (events, stream) = mpsc::unbounded_channel();
        let (cancel_tx, cancel) = watch::channel(false);
        {
            let mut cancels = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
            if cancels.contains_key(&request.id) {
                return Err(EngineError::Request {
                    code: ErrorCode::BadRequest,
                    message: format!(
                        "request id '{}' is already in use: give each request its own id",
                        request.id
                    ),
                });
            }
            cancels.insert(
                request.id.clone(),
                Pending {
                    cancel: cancel_tx,
                    events: events.clone(),
                    started: false,
                },
            );
        }
        let job = Job {
            id: request.id.clone(),
            conversation,
            max_tokens: request.params.max_tokens,
            // gemma.cpp's flag is single precision.
            temperature: request.params.temperature as f32,
            top_k: request.params.top_k,
            stop: request.params.stop.clone(),
            image,
            events,
            cancel,
            received: Instant::now(),
        };
        if self.jobs.send(job).is_err() {
            self.cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&request.id);
            return Err(EngineError::Stopped);
        }
        Ok(stream)
    }

    fn cancel(&self, id: &str) {
        if let Some(p) = self
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            if !*p.cancel.borrow() && !p.started {
                // Still queued: it leaves the queue now, without waiting for the request ahead.
                let done = Completion {
                    finish_reason: FinishReason::Cancelled,
                    usage: Usage::default(),
                    timings: Timings::default(),
                };
                let _ = p.events.send(ReplyEvent::Finished(done));
            }
            let _ = p.cancel.send(true);
        }
    }

    fn exit_status(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    fn stop(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if self.exit_status().is_some() {
                return;
            }
            tracing::info!("gemma.cpp stopping");
            let _ = self.stopping.send(Some(grace));
            for p in self
                .cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
            {
                if !*p.cancel.borrow() && !p.started {
                    let _ = p.events.send(ReplyEvent::Failed(EngineError::Stopped));
                }
                let _ = p.cancel.send(true);
            }
            let mut exit = self.exit.clone();
            let _ = tokio::time::timeout(
                grace + Duration::from_secs(15),
                exit.wait_for(Option::is_some),
            )
            .await;
        })
    }
}

impl Drop for GemmaCpp {
    fn drop(&mut self) {
        // Never leave gemma.cpp behind, whatever path dropped the engine.
        if let Some(child) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            child.kill();
        }
    }
}

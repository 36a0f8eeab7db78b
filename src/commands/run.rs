//! `gemmactl run`: one prompt in, one streamed reply out.
//!
//! The reply goes to stdout as it is generated and nothing else does; loading progress, stats and
//! errors go to stderr. Ctrl-C or SIGTERM cancels the reply and stops the engine before exiting,
//! so no engine outlives the command.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, Paths};
use crate::engines::{
    Completion, EngineDescription, FinishReason, GenerateRequest, Message, PromptFormat, Role,
    SamplingParams,
};
use crate::models::{self, ModelEntry, ModelKind};
use crate::store::{ConversationId, MessageId, ReplyEnd, Store};
use crate::supervisor::{Supervisor, SupervisorEvent};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model name from `gemmactl models list`, or a path to a GGUF file [default: config's default_model, else gemma3-270m]
    #[arg(short, long, value_name = "NAME|PATH")]
    model: Option<String>,
    /// The prompt; `-` (or no prompt with stdin not a terminal) reads it from stdin
    #[arg(value_name = "PROMPT|-")]
    prompt: Vec<String>,
    /// Most tokens to generate
    #[arg(long, default_value_t = 512, value_name = "N")]
    max_tokens: u32,
    /// Sampling temperature; 0 = greedy (deterministic)
    #[arg(
        long,
        default_value_t = 0.8,
        value_name = "T",
        allow_negative_numbers = true
    )]
    temperature: f32,
    /// Sample from the K most likely tokens only; 0 = off
    #[arg(long, default_value_t = 40, value_name = "K")]
    top_k: u32,
    /// Sample from the smallest set of tokens whose probability reaches P; 1 = off [default: 0.95]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Random seed, for reproducible sampling
    #[arg(long, value_name = "N")]
    seed: Option<u32>,
    /// System prompt (Gemma has no system role: it is prepended to the first user turn)
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Send the prompt as plain text, without the model's chat template
    #[arg(long)]
    raw: bool,
    /// Print timings and token counts to stderr after the reply
    #[arg(long)]
    stats: bool,
    /// Print one JSON object (text, finish reason, usage, timings, engine) instead of streaming
    #[arg(long)]
    json: bool,
    /// Context length in tokens [env: GEMMACTL_CONTEXT; config: engine.context; default 8192]
    #[arg(long, value_name = "N")]
    context: Option<u32>,
    /// CPU threads for the engine [env: GEMMACTL_THREADS; config: engine.threads; default: all cores]
    #[arg(long, value_name = "N")]
    threads: Option<u32>,
    /// Do not store this prompt and reply in the history database
    #[arg(long)]
    no_log: bool,
    /// Continue the most recent conversation (the model sees its earlier turns)
    #[arg(long = "continue", short = 'c', conflicts_with = "conversation")]
    continue_last: bool,
    /// Continue conversation ID (see `gemmactl history list`)
    #[arg(long, value_name = "ID")]
    conversation: Option<ConversationId>,
    /// Path to the gemma-engine binary [env: GEMMACTL_ENGINE; config: engine.path]
    #[arg(long, value_name = "PATH")]
    engine: Option<PathBuf>,
    /// Where to run: auto picks the first usable of engine.backend_order [env: GEMMACTL_BACKEND; config: engine.backend; default: auto]
    #[arg(long, value_name = "BACKEND")]
    backend: Option<crate::hardware::BackendRequest>,
}

pub async fn run(args: RunArgs, paths: &Paths, mut config: Config) -> Result<ExitCode> {
    // Flags sit on top of environment and file (Config::load applied those).
    if let Some(n) = args.context {
        config.engine.context = n;
    }
    if let Some(n) = args.threads {
        config.engine.threads = Some(n);
    }
    if let Some(p) = &args.engine {
        config.engine.path = Some(p.clone());
    }
    if let Some(b) = args.backend {
        config.engine.backend = b;
    }
    // One request: no need for more sequence slots than that.
    config.engine.parallel = 1;
    check_params(&args)?;
    let model_name = args
        .model
        .clone()
        .unwrap_or_else(|| config.default_model.clone());
    let model = models::resolve(paths, &model_name)?;
    let prompt = read_prompt(&args.prompt)?;

    let params = SamplingParams {
        max_tokens: Some(args.max_tokens),
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        stop: Vec::new(),
    };
    let continuing = args.continue_last || args.conversation.is_some();
    let mut log = if args.no_log || !config.history {
        if continuing {
            bail!("--continue and --conversation need the history database: drop --no-log (or turn history on in config.toml)");
        }
        None
    } else {
        Some(RunLog::begin(paths, &args, &prompt, &model, &params)?)
    };
    let earlier = log.as_ref().map(|l| l.earlier.clone()).unwrap_or_default();
    let system = log
        .as_ref()
        .and_then(|l| l.system.clone())
        .or_else(|| args.system.clone());
    let (messages, format, params) = if earlier.is_empty() {
        (
            conversation(system.as_deref(), prompt),
            prompt_format(&model, args.raw),
            params,
        )
    } else {
        // A continued conversation is put to the model the way the chat shell does.
        let mut turns = earlier;
        turns.push(Message {
            role: Role::User,
            content: prompt,
        });
        crate::shell::request_parts(&model, system.as_deref(), &turns, &params)
    };

    let supervisor = Supervisor::new(config, paths);
    let request = GenerateRequest {
        id: supervisor.new_request_id(),
        messages,
        session: None,
        prompt: format,
        params,
    };

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let bar = load_bar(&model);
    let mut reply = supervisor.submit(&model, request)?;
    let mut out = Output::new(args.json);
    let mut description: Option<EngineDescription> = None;
    let outcome: Result<Completion> = loop {
        let event = tokio::select! {
            e = reply.next() => e,
            _ = interrupt.recv() => { reply.cancel(); out.end(); log_end(&mut log, &out.text, Ending::Cancelled, description.as_ref()); return stop(&supervisor, &bar, 130).await }
            _ = terminate.recv() => { reply.cancel(); out.end(); log_end(&mut log, &out.text, Ending::Cancelled, description.as_ref()); return stop(&supervisor, &bar, 143).await }
        };
        match event {
            Some(SupervisorEvent::Queued { .. }) => {}
            Some(SupervisorEvent::Loading { progress }) => {
                bar.set_position((progress * 100.0) as u64)
            }
            Some(SupervisorEvent::Reloading { reason }) => bar.set_message(reason),
            Some(SupervisorEvent::Started(d)) => {
                bar.finish_and_clear();
                description = Some(d);
            }
            Some(SupervisorEvent::Token(text)) => {
                if out.write(&text).is_err() {
                    // stdout closed (e.g. piped into `head`): nobody is listening any more.
                    reply.cancel();
                    log_end(&mut log, &out.text, Ending::Cancelled, description.as_ref());
                    supervisor.shutdown().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Some(SupervisorEvent::Finished(done)) => break Ok(done),
            Some(SupervisorEvent::Failed(e)) => break Err(e.into()),
            None => {
                break Err(anyhow::anyhow!(
                    "the supervisor stopped answering without saying why"
                ))
            }
        }
    };
    bar.finish_and_clear();
    // The reply is complete for the reader before the engine is stopped.
    out.end();
    let ending = match &outcome {
        Ok(done) => Ending::Done(done),
        Err(e) => Ending::Failed(format!("{e:#}")),
    };
    log_end(&mut log, &out.text, ending, description.as_ref());
    supervisor.shutdown().await;
    let done = outcome?;
    let description = description.context("the reply finished before reaching an engine")?;
    if args.json {
        let value = json!({
            "model": model.name,
            "text": out.text,
            "finish_reason": done.finish_reason,
            "usage": done.usage,
            "timings": done.timings,
            "engine": engine_summary(&description),
        });
        println!("{value}");
    }
    if args.stats {
        eprintln!("{}", stats_line(&done, &description));
    }
    Ok(ExitCode::SUCCESS)
}

fn check_params(args: &RunArgs) -> Result<()> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        bail!(
            "--temperature {} is not valid: use a number ≥ 0 (0 = greedy)",
            args.temperature
        );
    }
    if let Some(p) = args.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        bail!("--top-p {p} is not valid: use a number greater than 0 and at most 1");
    }
    if args.max_tokens == 0 {
        bail!("--max-tokens 0 asks for nothing: use at least 1");
    }
    Ok(())
}

async fn stop(supervisor: &Supervisor, bar: &ProgressBar, code: u8) -> Result<ExitCode> {
    bar.finish_and_clear();
    supervisor.shutdown().await;
    eprintln!("interrupted");
    Ok(ExitCode::from(code))
}

/// The prompt from the arguments, or from stdin for `-` or when stdin is piped.
fn read_prompt(words: &[String]) -> Result<String> {
    let from_stdin = match words {
        [one] if one == "-" => true,
        [] => {
            if std::io::stdin().is_terminal() {
                bail!("no prompt given: pass it as an argument (gemmactl run \"...\") or pipe it on stdin");
            }
            true
        }
        _ => false,
    };
    let prompt = if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the prompt from stdin")?;
        // `echo text | gemmactl run` should not make the model continue after a line break.
        let kept = text.trim_end_matches(['\n', '\r']).len();
        text.truncate(kept);
        text
    } else {
        words.join(" ")
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty: give some text to continue or answer");
    }
    Ok(prompt)
}

pub fn conversation(system: Option<&str>, prompt: String) -> Vec<Message> {
    let mut messages = Vec::new();
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        messages.push(Message {
            role: Role::System,
            content: system.to_string(),
        });
    }
    messages.push(Message {
        role: Role::User,
        content: prompt,
    });
    messages
}

/// Base models continue plain text; instruct models get their chat template.
pub fn prompt_format(model: &ModelEntry, raw: bool) -> PromptFormat {
    match (raw, model.kind) {
        (true, _) | (false, ModelKind::Base) => PromptFormat::Completion,
        (false, ModelKind::Instruct) => PromptFormat::Chat {
            template: model.chat_template.clone(),
        },
    }
}

fn load_bar(model: &ModelEntry) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {percent:>3}%")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("loading {}", model.name));
    bar
}

/// Streams text to stdout (or collects it for `--json`).
struct Output {
    json: bool,
    text: String,
}

impl Output {
    fn new(json: bool) -> Output {
        Output {
            json,
            text: String::new(),
        }
    }

    fn write(&mut self, piece: &str) -> std::io::Result<()> {
        self.text.push_str(piece);
        if self.json {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(piece.as_bytes())?;
        stdout.flush()
    }

    /// Ends streamed text with a newline, as a terminal and line-based tools expect.
    fn end(&mut self) {
        if !self.json && !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
            let _ = writeln!(std::io::stdout());
        }
    }
}

fn engine_summary(d: &EngineDescription) -> serde_json::Value {
    json!({
        "name": d.engine,
        "backend": d.backend,
        "devices": d.devices.iter().map(|dev| dev.name.clone()).collect::<Vec<_>>(),
        "gpu_layers": d.gpu_layers,
        "context": d.context,
        "threads": d.threads,
        "load_ms": d.load_ms,
        "fallback": d.fallback,
    })
}

pub fn stats_line(done: &Completion, d: &EngineDescription) -> String {
    let u = &done.usage;
    let t = &done.timings;
    format!(
        "{} tokens, {:.1} tok/s decode · prompt {} tokens ({} cached), {:.0} tok/s prefill · first token {:.0} ms · total {:.0} ms · finish {} · {} on {} ({} threads), loaded in {} ms",
        u.completion_tokens,
        t.decode_tokens_per_s,
        u.prompt_tokens,
        u.cached_tokens,
        t.prefill_tokens_per_s,
        t.ttft_ms,
        t.total_ms,
        serde_json::to_value(done.finish_reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        d.engine,
        d.backend,
        d.threads,
        d.load_ms,
    ) + &d.fallback.as_ref().map(|f| format!(" · fallback: {f}")).unwrap_or_default()
}

/// The history record of one `run`: the user's message is committed before generation starts,
/// the reply row is completed (or marked cancelled or failed) when it ends.
struct RunLog {
    store: Store,
    reply: MessageId,
    /// The conversation's earlier turns when continuing one.
    earlier: Vec<Message>,
    system: Option<String>,
}

enum Ending<'a> {
    Done(&'a Completion),
    Cancelled,
    Failed(String),
}

impl RunLog {
    fn begin(
        paths: &Paths,
        args: &RunArgs,
        prompt: &str,
        model: &ModelEntry,
        params: &SamplingParams,
    ) -> Result<RunLog> {
        let mut store = Store::open_default(paths)?;
        let existing = match (args.conversation, args.continue_last) {
            (Some(id), _) => Some(store.conversation(id)?),
            (None, true) => {
                let latest = store.latest_conversation()?;
                if latest.is_none() {
                    eprintln!("no earlier conversation to continue: starting a new one");
                }
                latest
            }
            _ => None,
        };
        let (conversation, head, system, earlier) = match existing {
            Some(conv) => {
                let path = match conv.head {
                    Some(head) => store.path_to(head)?,
                    None => Vec::new(),
                };
                let earlier = path
                    .iter()
                    .filter(|m| !(m.role == Role::Assistant && m.content.is_empty()))
                    .map(|m| m.message())
                    .collect();
                let system = args.system.clone().or(conv.system.clone());
                (conv.id, conv.head, system, earlier)
            }
            None => (
                store.create_conversation(args.system.as_deref())?,
                None,
                args.system.clone(),
                Vec::new(),
            ),
        };
        let user = store.add_user_message(conversation, head, prompt, &model.name, params)?;
        let reply = store.start_reply(user, &model.name, params)?;
        Ok(RunLog {
            store,
            reply,
            earlier,
            system,
        })
    }
}

/// Completes the history record, if there is one. A failure to write it is reported, not fatal:
/// the reply has already reached the user.
fn log_end(
    log: &mut Option<RunLog>,
    text: &str,
    ending: Ending,
    engine: Option<&EngineDescription>,
) {
    let Some(log) = log.take() else { return };
    let RunLog {
        mut store, reply, ..
    } = log;
    let (finish_reason, usage, timings, error) = match ending {
        Ending::Done(done) => (
            done.finish_reason,
            Some(done.usage.clone()),
            Some(done.timings.clone()),
            None,
        ),
        Ending::Cancelled => (FinishReason::Cancelled, None, None, None),
        Ending::Failed(e) => (FinishReason::Error, None, None, Some(e)),
    };
    let end = ReplyEnd {
        text: text.trim_end_matches('\n').to_string(),
        finish_reason,
        usage,
        timings,
        engine: engine.map(|d| d.engine.to_string()),
        backend: engine.map(crate::shell::backend_with_fallback),
        error,
    };
    if let Err(e) = store.finish_reply(reply, &end) {
        eprintln!("warning: the reply could not be saved to history: {e}");
    }
}

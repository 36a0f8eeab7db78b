//! `gemmactl run`: one prompt in, one streamed reply out.
//!
//! A renderer of one turn of the turn service: the reply goes to stdout as it is generated and
//! nothing else does; loading progress, `--stats` and errors go to stderr. Ctrl-C or SIGTERM
//! cancels the reply — the engine stops and the reply is stored as cancelled with its counts —
//! and stops the engine before exiting, so no engine outlives the command.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::chat::{Notice, PromptStyle, Thread, TurnEnd, TurnEvent, TurnService};
use crate::config::flags::{EngineFlags, LocalFlag, LogFlag, ModelFlag, SamplingFlags};
use crate::config::{Config, Paths};
use crate::domain::{utf8, EngineDescription, FinishReason, Image, Source};
use crate::models;
use crate::store::{ConversationId, Store};
use crate::ui;

/// How long a stopped reply may take to report its counts before gemmactl exits anyway.
const STOP_REPORT_WAIT: Duration = Duration::from_secs(5);

/// `gemmactl run`'s arguments.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelFlag,
    /// The prompt; `-` (or no prompt with stdin not a terminal) reads it from stdin
    #[arg(value_name = "PROMPT|-")]
    prompt: Vec<String>,
    #[command(flatten)]
    sampling: SamplingFlags,
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
    #[command(flatten)]
    engine: EngineFlags,
    #[command(flatten)]
    local: LocalFlag,
    #[command(flatten)]
    log: LogFlag,
    /// Continue the most recent conversation (the model sees its earlier turns)
    #[arg(long = "continue", short = 'c', conflicts_with = "conversation")]
    continue_last: bool,
    /// Continue conversation ID (see `gemmactl history list`)
    #[arg(long, value_name = "ID")]
    conversation: Option<ConversationId>,
    /// Show the model an image with the prompt (PNG, JPEG, WebP, GIF, BMP, PNM, TIFF); repeat
    /// for more. The model must see images (a vision model registered with --mmproj)
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<std::path::PathBuf>,
}

/// Runs `gemmactl run`.
pub async fn run(args: RunArgs, paths: &Paths, mut config: Config) -> Result<ExitCode> {
    args.engine.apply(&mut config)?;
    // One request: no need for more decode slots than that.
    config.engine.parallel = 1;
    let params = args.sampling.params()?;
    let model = models::resolve(paths, &args.model.name_or_default(&config))?;
    let prompt = read_prompt(&args.prompt)?;
    // Checked before anything is stored or an engine started. They come before the prompt's
    // text, in the order given: a question about an image reads after it.
    let images = args
        .images
        .iter()
        .map(|path| Image::from_file(path).map(|i| i.placed(0)))
        .collect::<Result<Vec<_>, _>>()?;
    let continuing = args.continue_last || args.conversation.is_some();
    let store = if args.log.logs(&config) {
        Some(Store::open_default(paths)?)
    } else if continuing {
        bail!("--continue and --conversation need the history database: drop --no-log (or turn history on in config.toml)");
    } else {
        None
    };
    let resume = match (args.conversation, args.continue_last, &store) {
        (Some(id), _, _) => Some(id),
        (None, true, Some(store)) => {
            let latest = store.latest_conversation()?.map(|c| c.id);
            if latest.is_none() {
                eprintln!("no earlier conversation to continue: starting a new one");
            }
            latest
        }
        _ => None,
    };
    let service = TurnService::start(
        store,
        Source::Run,
        paths,
        &config,
        "gemmactl run",
        args.local.local(&args.engine),
    )
    .await;
    let style = if args.raw {
        PromptStyle::Raw
    } else {
        PromptStyle::OneShot
    };
    let mut thread = Thread::new(&service, model, args.system.clone(), params, style);
    if let Some(id) = resume {
        thread.resume(id, args.system.clone())?;
    }
    let outcome = stream(&mut thread, &prompt, images, args.json).await;
    service.shutdown().await;
    let (end, code) = outcome?;
    if let Some(code) = code {
        eprintln!("interrupted");
        return Ok(ExitCode::from(code));
    }
    if let Some(note) = end.cut_by_context() {
        eprintln!("note: {note}");
    }
    let done = end.result.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.json {
        let value = json!({
            "model": thread.model().name,
            "text": end.text,
            "finish_reason": done.finish_reason,
            "usage": done.usage,
            "timings": done.timings,
            "engine": end.engine.as_ref().map(engine_summary),
        });
        println!("{value}");
    }
    if args.stats {
        eprintln!("{}", ui::stats_line(done, end.engine.as_ref()));
    }
    // A reply held to a schema or grammar parses only when it ended by itself; one cut by the
    // token limit is printed as it is, but a script piping it on must be told it is incomplete.
    if let Some(c) = &thread.params().constraint {
        if done.finish_reason == FinishReason::Length {
            bail!(
                "the reply reached --max-tokens before its {} was complete, so it is cut short and does not parse: raise --max-tokens",
                c.kind()
            );
        }
        if done.finish_reason == FinishReason::Context {
            bail!(
                "the reply filled the context before its {} was complete, so it is cut short and does not parse: raise --context",
                c.kind()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams one turn to stdout. Returns how it ended, and the exit code when a signal stopped it.
async fn stream(
    thread: &mut Thread,
    prompt: &str,
    images: Vec<Image>,
    json: bool,
) -> Result<(TurnEnd, Option<u8>)> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let bar = ui::load_bar(&thread.model().name);
    let mut out = Output::new(json);
    let mut turn = thread.send_with_images(prompt, images)?;
    let mut stopped_by: Option<u8> = None;
    loop {
        let event = tokio::select! {
            e = turn.next() => e,
            _ = interrupt.recv(), if stopped_by.is_none() => { turn.cancel(); stopped_by = Some(130); continue; }
            _ = terminate.recv(), if stopped_by.is_none() => { turn.cancel(); stopped_by = Some(143); continue; }
            // A stopped reply reports its counts within a moment; never wait on it for long.
            _ = tokio::time::sleep(STOP_REPORT_WAIT), if stopped_by.is_some() => None,
        };
        let Some(event) = event else {
            bar.finish_and_clear();
            out.end();
            // Dropping the turn records it as cancelled with what was written.
            drop(turn);
            bail!("the reply did not finish within {STOP_REPORT_WAIT:?} of being stopped");
        };
        match event {
            TurnEvent::Loading { progress } => bar.set_position((progress * 100.0) as u64),
            TurnEvent::Reloading { reason } => bar.set_message(reason),
            TurnEvent::Started(_) => bar.finish_and_clear(),
            TurnEvent::Notice(Notice::ContextTrimmed { dropped }) => eprintln!("(the conversation is longer than the context: the oldest {dropped} messages are no longer sent)"),
            TurnEvent::Notice(notice) => bar.suspend(|| eprintln!("({notice})")),
            TurnEvent::Queued { .. } | TurnEvent::PromptProgress { .. } => {}
            TurnEvent::Token(text) => {
                if out.write(&text).is_err() && stopped_by.is_none() {
                    // stdout closed (e.g. piped into `head`): nobody is listening any more.
                    turn.cancel();
                    stopped_by = Some(0);
                }
            }
            TurnEvent::Ended(end) => {
                bar.finish_and_clear();
                // The reply is complete for the reader before the engine is stopped.
                out.end();
                return Ok((end, stopped_by.filter(|c| *c != 0)));
            }
        }
    }
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
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the prompt from stdin")?;
        let mut text = utf8::decode(bytes, "the prompt on stdin").map_err(anyhow::Error::msg)?;
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

/// Streams text to stdout (or collects it for `--json`).
struct Output {
    json: bool,
    written: bool,
    ends_with_newline: bool,
    /// stdout is a terminal: the model's control characters are shown, not obeyed (a pipe gets
    /// the text exactly as generated).
    terminal: bool,
}

impl Output {
    fn new(json: bool) -> Output {
        Output {
            json,
            written: false,
            ends_with_newline: false,
            terminal: std::io::stdout().is_terminal(),
        }
    }

    fn write(&mut self, piece: &str) -> std::io::Result<()> {
        if self.json || piece.is_empty() {
            return Ok(());
        }
        self.written = true;
        self.ends_with_newline = piece.ends_with('\n');
        let shown = if self.terminal {
            ui::text::printable_block(piece)
        } else {
            piece.to_string()
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(shown.as_bytes())?;
        stdout.flush()
    }

    /// Ends streamed text with a newline, as a terminal and line-based tools expect.
    fn end(&mut self) {
        if self.written && !self.ends_with_newline {
            self.ends_with_newline = true;
            let _ = writeln!(std::io::stdout());
        }
    }
}

fn engine_summary(d: &EngineDescription) -> serde_json::Value {
    json!({
        "name": d.engine,
        "backend": d.backend.label(),
        "devices": d.devices.iter().map(|dev| dev.name.clone()).collect::<Vec<_>>(),
        "gpu_layers": d.gpu_layers,
        "context": d.context,
        "threads": d.threads,
        "kv_cache_type": d.kv_cache_type,
        "flash_attention": d.flash_attention,
        "load_ms": d.load_ms,
        "fallback": d.fallback,
    })
}

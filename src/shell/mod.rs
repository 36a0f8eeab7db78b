//! `gemmactl chat`: the interactive shell.
//!
//! A rustyline loop on the main thread renders turns of the turn service on the tokio runtime:
//! the conversation, its storage and every request live in a [`Thread`]; this module reads
//! lines, runs slash commands (`actions.rs`, one method each) and shows the event stream of each
//! turn. Ctrl-C during a reply stops only the reply; the shell stays.

mod actions;
mod command;
mod complete;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config as EditorConfig, Editor};

use crate::chat::{Notice, PromptStyle, Thread, TurnEvent, TurnService};
use crate::config::flags::{EngineFlags, LocalFlag, LogFlag, ModelFlag, DEFAULT_MAX_TOKENS};
use crate::config::{Config, Paths};
use crate::domain::{FinishReason, SamplingParams, Source};
use crate::models;
use crate::store::{ConversationId, Store};
use crate::ui::{self, Style};
use complete::ShellHelper;

/// `gemmactl chat`'s arguments.
#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelFlag,
    /// Continue conversation ID (see `gemmactl history list`)
    #[arg(long, value_name = "ID", conflicts_with = "continue_last")]
    resume: Option<ConversationId>,
    /// Continue the most recent conversation
    #[arg(long = "continue", short = 'c')]
    continue_last: bool,
    /// System prompt for a new conversation
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    #[command(flatten)]
    engine: EngineFlags,
    #[command(flatten)]
    local: LocalFlag,
    #[command(flatten)]
    log: LogFlag,
}

struct Shell {
    rt: tokio::runtime::Runtime,
    /// SIGINT, listened to from the start: a Ctrl-C while a reply streams must cancel it, never
    /// kill the shell. (While rustyline reads a line the terminal is raw and Ctrl-C is a key.)
    interrupt: tokio::signal::unix::Signal,
    service: TurnService,
    thread: Thread,
    config: Config,
    show_stats: bool,
    style: Style,
}

/// What the loop does after a line.
enum Flow {
    Continue,
    Quit,
}

/// Runs `gemmactl chat`.
pub fn run(args: ChatArgs, paths: &Paths, mut config: Config) -> Result<ExitCode> {
    args.engine.apply(&mut config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = if args.log.logs(&config) {
        Some(Store::open_default(paths)?)
    } else {
        None
    };
    let resumed = match (&store, args.resume, args.continue_last) {
        (None, Some(_), _) | (None, _, true) => bail!("--resume and --continue need the history database: drop --no-log (or turn history on in config.toml)"),
        (Some(s), Some(id), _) => Some(s.conversation(id)?),
        (Some(s), None, true) => {
            let latest = s.latest_conversation()?;
            if latest.is_none() {
                eprintln!("no earlier conversation to continue: starting a new one");
            }
            latest
        }
        _ => None,
    };
    let model_name = args
        .model
        .model
        .clone()
        .or_else(|| resumed.as_ref().and_then(|c| c.model.clone()))
        .unwrap_or_else(|| config.default_model.clone());
    let model = models::resolve(paths, &model_name)?;
    let service = rt.block_on(TurnService::start(
        store,
        Source::Chat,
        paths,
        &config,
        "gemmactl chat",
        args.local.local(&args.engine),
    ));
    let interrupt = {
        let _guard = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?
    };
    let params = SamplingParams {
        max_tokens: Some(DEFAULT_MAX_TOKENS),
        ..SamplingParams::default()
    };
    let thread = Thread::new(
        &service,
        model,
        args.system.clone(),
        params,
        PromptStyle::Conversation,
    );
    let mut shell = Shell {
        rt,
        interrupt,
        service,
        thread,
        style: Style::for_stdout(&config),
        config,
        show_stats: true,
    };
    if let Some(conv) = resumed {
        shell.open_conversation(conv.id)?;
    }
    let outcome = shell.repl();
    shell.rt.block_on(shell.service.shutdown());
    outcome?;
    Ok(ExitCode::SUCCESS)
}

impl Shell {
    fn repl(&mut self) -> Result<()> {
        let config = EditorConfig::builder()
            .auto_add_history(false)
            .bracketed_paste(true)
            .build();
        let mut editor: Editor<ShellHelper, DefaultHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(ShellHelper {
            models: actions::model_names(self.service.paths()),
        }));
        let state_dir = self.service.paths().state_dir.clone();
        let history_file = state_dir.join("chat_history");
        let _ = std::fs::create_dir_all(&state_dir);
        let _ = editor.load_history(&history_file);
        let model = self.thread.model();
        println!(
            "{}",
            self.style.dim(&format!(
                "gemmactl chat — {} ({}). /help for commands, Ctrl-C stops a reply, Ctrl-D leaves.{}",
                model.name,
                model.kind.as_str(),
                if self.service.logs() { "" } else { " History is off." }
            ))
        );
        loop {
            let line = match editor.readline(&self.style.prompt()) {
                Ok(line) => line,
                Err(ReadlineError::Interrupted) => {
                    println!(
                        "{}",
                        self.style
                            .dim("(nothing to stop: type /quit or press Ctrl-D to leave)")
                    );
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            let input = if line.trim_start().starts_with("\"\"\"") {
                match read_block(&mut editor, &line) {
                    Some(text) => text,
                    None => continue,
                }
            } else {
                line
            };
            if input.trim().is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(input.as_str());
            let flow = if input.trim_start().starts_with('/') {
                match command::parse(&input) {
                    Ok(cmd) => self.command(cmd, &mut editor),
                    Err(hint) => {
                        eprintln!("{}", self.style.error(&hint));
                        Ok(Flow::Continue)
                    }
                }
            } else {
                self.send(&input).map(|_| Flow::Continue)
            };
            match flow {
                Ok(Flow::Quit) => break,
                Ok(Flow::Continue) => {}
                // A failed command or turn is reported; the shell carries on.
                Err(e) => eprintln!("{}", self.style.error(&format!("error: {e:#}"))),
            }
        }
        let _ = editor.save_history(&history_file);
        Ok(())
    }

    /// Continues a stored conversation and says where it stands.
    fn open_conversation(&mut self, id: ConversationId) -> Result<()> {
        self.thread.resume(id, None)?;
        let title = self
            .service
            .store()
            .and_then(|s| s.conversation(id).ok())
            .and_then(|c| c.title);
        println!(
            "{}",
            self.style.dim(&format!(
                "conversation #{} — {} ({} messages on this branch)",
                id,
                title.as_deref().unwrap_or("untitled"),
                self.thread.len()
            ))
        );
        if let Some(last) = self.thread.last_reply() {
            println!(
                "{}",
                self.style
                    .dim(&format!("last reply: {}", ui::text::ellipsis(last, 200)))
            );
        }
        Ok(())
    }

    /// Sends a user message and shows the reply.
    fn send(&mut self, text: &str) -> Result<()> {
        self.render(|thread| thread.send(text))
    }

    /// Starts a turn with `start` and shows it: a spinner while it waits, the text as it comes,
    /// Ctrl-C to stop it, then the stats line.
    fn render<'t>(
        &'t mut self,
        start: impl FnOnce(&'t mut Thread) -> Result<crate::chat::Turn<'t>>,
    ) -> Result<()> {
        let Shell {
            rt,
            interrupt,
            thread,
            style,
            show_stats,
            ..
        } = self;
        let model_name = thread.model().name.clone();
        // Starting a turn spawns its tasks (the supervisor's, or an attached server's client):
        // they need the runtime's context, which this thread only has inside `block_on`.
        let mut turn = {
            let _context = rt.enter();
            start(thread)?
        };
        let spinner = ui::spinner(&format!("waiting for {model_name}"));
        let end = rt.block_on(async {
            drain(interrupt).await;
            let mut cancelled = false;
            let mut stdout = std::io::stdout();
            let mut wrote = false;
            loop {
                let event = tokio::select! {
                    e = turn.next() => e,
                    _ = interrupt.recv(), if !cancelled => {
                        cancelled = true;
                        turn.cancel();
                        continue;
                    }
                };
                match event {
                    Some(TurnEvent::Queued { position }) => {
                        spinner.set_message(format!("waiting in the queue ({position} ahead)"))
                    }
                    Some(TurnEvent::Loading { progress }) => spinner.set_message(format!(
                        "loading {model_name} {:.0}%",
                        progress * 100.0
                    )),
                    Some(TurnEvent::Reloading { reason }) => spinner.set_message(reason),
                    Some(TurnEvent::Started(_)) => spinner.finish_and_clear(),
                    Some(TurnEvent::PromptProgress { .. }) => {}
                    Some(TurnEvent::Notice(Notice::ContextTrimmed { dropped })) => println!(
                        "{}",
                        style.dim(&format!("(the conversation is longer than the context: the oldest {dropped} messages are no longer sent; the system prompt is kept)"))
                    ),
                    Some(TurnEvent::Token(t)) => {
                        wrote = true;
                        let _ = stdout.write_all(t.as_bytes());
                        let _ = stdout.flush();
                    }
                    Some(TurnEvent::Ended(end)) => {
                        spinner.finish_and_clear();
                        if wrote {
                            println!();
                        }
                        return Some(end);
                    }
                    None => return None,
                }
            }
        });
        let Some(end) = end else { return Ok(()) };
        match end.result {
            Ok(done) => {
                if done.finish_reason == FinishReason::Cancelled {
                    let note = if end.text.is_empty() {
                        "(reply stopped before it began)"
                    } else {
                        "(reply stopped; what was written is kept)"
                    };
                    println!("{}", style.dim(note));
                }
                if *show_stats {
                    println!(
                        "{}",
                        style.dim(&format!("[{}]", ui::stats_line(&done, end.engine.as_ref())))
                    );
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Forgets Ctrl-Cs pressed while nothing was running, so they cannot cancel the next reply.
async fn drain(interrupt: &mut tokio::signal::unix::Signal) {
    while let Ok(Some(())) = tokio::time::timeout(Duration::ZERO, interrupt.recv()).await {}
}

/// Reads a `"""` block: lines until one ending in `"""`. `None` if abandoned (Ctrl-C, Ctrl-D).
fn read_block(editor: &mut Editor<ShellHelper, DefaultHistory>, first: &str) -> Option<String> {
    let opening = first.trim_start().trim_start_matches("\"\"\"");
    if let Some(inner) = opening.strip_suffix("\"\"\"") {
        return Some(inner.to_string());
    }
    let mut lines = vec![opening.to_string()];
    loop {
        match editor.readline("... ") {
            Ok(line) => {
                if let Some(last) = line.trim_end().strip_suffix("\"\"\"") {
                    lines.push(last.to_string());
                    let text = lines.join("\n");
                    return Some(text.trim_matches('\n').to_string());
                }
                lines.push(line);
            }
            Err(_) => return None,
        }
    }
}

//! `gemmactl chat`: the interactive shell.
//!
//! A rustyline loop on the main thread renders turns of the turn service on the tokio runtime:
//! the conversation, its storage and every request live in a [`Thread`]; this module reads
//! lines, runs slash commands (`actions.rs`, one method each) and shows the event stream of each
//! turn. Ctrl-C during a reply stops only the reply; the shell stays.
//!
//! What a line is (command or message) is decided in `input.rs`; what the terminal does with
//! keys typed while a reply streams, in `terminal.rs`; leaving on SIGTERM or SIGHUP, in
//! `leave.rs`. Lines that arrive together (a script, `expect`, a terminal without bracketed
//! paste) stay in rustyline's buffer between prompts and are taken one by one, each as if typed.

mod actions;
mod command;
mod complete;
mod input;
mod leave;
mod terminal;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config as EditorConfig, Editor, EventHandler, KeyCode, KeyEvent, Modifiers};

use crate::chat::{Notice, PromptStyle, Thread, TurnEnd, TurnEvent, TurnService};
use crate::config::flags::{EngineFlags, LocalFlag, LogFlag, ModelFlag, DEFAULT_MAX_TOKENS};
use crate::config::{Config, Paths};
use crate::domain::{FinishReason, SamplingParams, Source};
use crate::models;
use crate::store::{ConversationId, Store};
use crate::ui::{self, Style};
use complete::ShellHelper;
use input::{Input, PasteWatch};
use leave::{Busy, LeaveSignals};
use terminal::Terminal;

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
    /// SIGTERM and SIGHUP while a reply streams: stop it (so all of it is stored), then leave.
    leave: LeaveSignals,
    /// Set while a reply is shown, so the idle watcher leaves the signals to it.
    busy: Busy,
    /// The signal the shell is leaving on, once one came.
    leaving: Option<i32>,
    terminal: Terminal,
    service: TurnService,
    thread: Thread,
    config: Config,
    show_stats: bool,
    style: Style,
    /// Images attached with `/image`, sent with the next message.
    attached: Vec<crate::domain::Image>,
}

/// What the loop does after a line.
enum Flow {
    Continue,
    Quit,
}

/// Runs `gemmactl chat`.
pub fn run(args: ChatArgs, paths: &Paths, mut config: Config) -> Result<ExitCode> {
    args.engine.apply(&mut config)?;
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
    let (interrupt, leave) = {
        let _guard = rt.enter();
        (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
            LeaveSignals::new()?,
        )
    };
    let terminal = Terminal::new(config.env.term.as_deref());
    let busy = Busy::default();
    leave::watch_idle(&rt, busy.clone(), service.clone(), terminal.original())?;
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
        leave,
        busy,
        leaving: None,
        terminal,
        service,
        thread,
        style: Style::for_stdout(&config),
        config,
        show_stats: true,
        attached: Vec::new(),
    };
    if let Some(conv) = resumed {
        shell.open_conversation(conv.id)?;
    }
    let outcome = shell.repl();
    shell.terminal.restore();
    shell.rt.block_on(shell.service.shutdown());
    if let Some(sig) = shell.leaving {
        // Leaving on a signal: the reply is stored; say how the shell ended, as the signal would.
        return Ok(ExitCode::from(128 + sig as u8));
    }
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
        editor.set_helper(Some(ShellHelper::new(actions::model_names(
            self.service.paths(),
        ))));
        let paste = PasteWatch::default();
        editor.bind_sequence(
            KeyEvent(KeyCode::BracketedPasteStart, Modifiers::NONE),
            EventHandler::Conditional(Box::new(paste.clone())),
        );
        let state_dir = self.service.paths().state_dir.clone();
        let history_file = state_dir.join("chat_history");
        let _ = std::fs::create_dir_all(&state_dir);
        let _ = editor.load_history(&history_file);
        let model = self.thread.model();
        let banner =
            format!(
            "gemmactl chat — {} ({}). /help for commands, Ctrl-C stops a reply, Ctrl-D leaves.{}",
            model.name,
            model.kind.as_str(),
            if self.service.logs() { "" } else { " History is off." }
        );
        println!(
            "{}",
            self.style
                .dim(&ui::text::wrap(&banner, ui::table::terminal_width()))
        );
        loop {
            self.terminal.quiet();
            paste.reset();
            if let Some(h) = editor.helper() {
                h.start_line();
            }
            let read = editor.readline(&self.style.prompt());
            self.terminal.quiet();
            let line = match read {
                Ok(line) => line,
                Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    let typed = editor.helper().map(ShellHelper::typed).unwrap_or_default();
                    eprintln!("{}", self.style.error(&not_utf8(&typed.0, typed.1)));
                    discard_typed_input();
                    continue;
                }
                Err(ReadlineError::Interrupted) => {
                    println!(
                        "{}",
                        self.style
                            .dim("(nothing to stop: type /quit or press Ctrl-D to leave)")
                    );
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                // The terminal is gone (hung up): leave as at Ctrl-D; the hangup's own handler
                // may be ending the process meanwhile.
                Err(ReadlineError::Errno(nix::errno::Errno::EIO)) => break,
                Err(ReadlineError::Io(e)) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) => return Err(e.into()),
            };
            let input = match input::classify(&line, paste.began_with_paste()) {
                Input::Empty => continue,
                Input::Block(first) => match read_block(&mut editor, &first) {
                    Some(text) if !text.trim().is_empty() => Input::Message(text),
                    _ => continue,
                },
                other => other,
            };
            // Appended at once, so other shells' lines and this one's survive a kill.
            let _ = editor.add_history_entry(input::recall_form(&input));
            let _ = editor.append_history(&history_file);
            self.terminal.quiet();
            let flow = match input {
                Input::Command(text) => match command::parse(&text) {
                    Ok(cmd) => self.command(cmd, &mut editor),
                    Err(hint) => {
                        eprintln!("{}", self.style.error(&hint));
                        Ok(Flow::Continue)
                    }
                },
                Input::Message(text) => self.send(&text).map(|_| Flow::Continue),
                Input::Empty | Input::Block(_) => Ok(Flow::Continue),
            };
            if self.leaving.is_some() {
                break;
            }
            match flow {
                Ok(Flow::Quit) => break,
                Ok(Flow::Continue) => {}
                // A failed command or turn is reported; the shell carries on.
                Err(e) => eprintln!("{}", self.style.error(&format!("error: {e:#}"))),
            }
        }
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
                "conversation #{} — {} ({} on this branch)",
                id,
                ui::text::printable_line(title.as_deref().unwrap_or("untitled")),
                ui::text::count(self.thread.len(), "message")
            ))
        );
        if let Some(last) = self.thread.last_reply() {
            println!(
                "{}",
                self.style.dim(&format!(
                    "last reply: {}",
                    ui::text::printable_line(&ui::text::ellipsis(last, 200))
                ))
            );
        }
        Ok(())
    }

    /// Sends a user message and shows the reply.
    fn send(&mut self, text: &str) -> Result<()> {
        // The attachments go with this message (before its text), and only with it.
        let images = std::mem::take(&mut self.attached);
        self.render(|thread| thread.send_with_images(text, images))
    }

    /// Starts a turn with `start` and shows it: a spinner while it waits and while the model
    /// reads the prompt, the text as it comes, Ctrl-C to stop it, then the stats line.
    fn render<'t>(
        &'t mut self,
        start: impl FnOnce(&'t mut Thread) -> Result<crate::chat::Turn<'t>>,
    ) -> Result<()> {
        let Shell {
            rt,
            interrupt,
            leave,
            busy,
            leaving,
            thread,
            style,
            show_stats,
            ..
        } = self;
        let model_name = thread.model().name.clone();
        busy.set(true);
        // Submitting spawns the request's task: it needs the runtime's context.
        let entered = rt.enter();
        let started = start(thread);
        drop(entered);
        let end = started.map(|mut turn| {
            rt.block_on(show_turn(
                &mut turn,
                &model_name,
                interrupt,
                leave,
                leaving,
                style,
            ))
        });
        busy.set(false);
        let Some(end) = end? else { return Ok(()) };
        if leaving.is_some() {
            // Stopped to leave: stored; the terminal may be gone, so nothing more is printed.
            return Ok(());
        }
        if let Some(note) = end.cut_by_context() {
            println!("{}", style.dim(&format!("({note})")));
        }
        let mut stdout = std::io::stdout();
        match end.result {
            Ok(done) => {
                if done.finish_reason == FinishReason::Cancelled {
                    let note = if end.text.is_empty() {
                        "(reply stopped before it began)"
                    } else {
                        "(reply stopped; what was written is kept)"
                    };
                    let _ = writeln!(stdout, "{}", style.dim(note));
                }
                if *show_stats {
                    let stats = format!("[{}]", ui::stats_line(&done, end.engine.as_ref()));
                    let _ = writeln!(
                        stdout,
                        "{}",
                        style.dim(&ui::text::wrap(&stats, ui::table::terminal_width()))
                    );
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The line for input that is not UTF-8: where it came (after `line[..pos]`, the text before
/// the cursor) and what to do. The line is not sent.
fn not_utf8(line: &str, pos: usize) -> String {
    let before = line.get(..pos).unwrap_or(line);
    let chars: Vec<char> = before.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(20)..].iter().collect();
    let place = if before.is_empty() {
        "at the start of the line".to_string()
    } else {
        format!("at byte {} of the line, after {tail:?},", before.len())
    };
    format!("input is not valid UTF-8: a byte {place} is not part of a UTF-8 character; the line was not sent: type it again, and check that the terminal uses UTF-8 (e.g. LANG=C.UTF-8)")
}

/// Drops what else was typed on the line that was not UTF-8 (still waiting in the terminal),
/// so its rest is not taken for a new message.
fn discard_typed_input() {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        // SAFETY: tcflush only discards the terminal's pending input on a descriptor we own.
        unsafe {
            libc::tcflush(libc::STDIN_FILENO, libc::TCIFLUSH);
        }
    }
}

/// Shows one turn's events until it ends: the spinner's status while nothing is written, then
/// the reply's text. Ctrl-C cancels the turn; SIGTERM or SIGHUP cancel it and set `leaving`.
/// Writes to the terminal ignore errors: after a hangup there is no terminal, and the turn must
/// still end and be recorded.
async fn show_turn(
    turn: &mut crate::chat::Turn<'_>,
    model_name: &str,
    interrupt: &mut tokio::signal::unix::Signal,
    leave: &mut LeaveSignals,
    leaving: &mut Option<i32>,
    style: &Style,
) -> Option<TurnEnd> {
    drain(interrupt).await;
    let spinner = ui::spinner(&format!("waiting for {model_name}"));
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
            sig = leave.recv(), if leaving.is_none() => {
                *leaving = Some(sig);
                cancelled = true;
                turn.cancel();
                continue;
            }
        };
        match event {
            Some(TurnEvent::Queued { position }) => spinner.set_message(queued(position)),
            Some(TurnEvent::Loading { progress }) => {
                spinner.set_message(format!("loading {model_name} {:.0}%", progress * 100.0))
            }
            Some(TurnEvent::Reloading { reason }) => spinner.set_message(reason),
            Some(TurnEvent::Started(_)) => spinner.set_message(reading_prompt(None)),
            Some(TurnEvent::PromptProgress { done, total }) => {
                spinner.set_message(reading_prompt(Some((done, total))))
            }
            Some(TurnEvent::Notice(Notice::ContextTrimmed { dropped })) => {
                spinner.finish_and_clear();
                let _ = writeln!(
                    stdout,
                    "{}",
                    style.dim(&format!(
                        "(the conversation is longer than the context: the oldest {} are no longer sent; the system prompt is kept)",
                        ui::text::count(dropped, "message")
                    ))
                );
            }
            Some(TurnEvent::Notice(notice)) => spinner.suspend(|| {
                let _ = writeln!(std::io::stdout(), "{}", style.dim(&format!("({notice})")));
            }),
            Some(TurnEvent::Token(t)) => {
                if !wrote {
                    spinner.finish_and_clear();
                }
                wrote = true;
                // The model's text may hold escape sequences; only line breaks and tabs of it
                // reach the terminal as such.
                let t = ui::text::printable_block(&t);
                let _ = stdout.write_all(t.as_bytes());
                let _ = stdout.flush();
            }
            Some(TurnEvent::Ended(end)) => {
                spinner.finish_and_clear();
                if wrote {
                    let _ = writeln!(stdout);
                }
                return Some(end);
            }
            None => return None,
        }
    }
}

/// The spinner's status while the request waits for a decode slot.
fn queued(ahead: usize) -> String {
    match ahead {
        0 => "waiting in the queue: next".to_string(),
        n => format!(
            "waiting in the queue: {} ahead",
            ui::text::count(n, "request")
        ),
    }
}

/// The spinner's status while the engine reads the prompt (`done` of `total` tokens).
fn reading_prompt(progress: Option<(u32, u32)>) -> String {
    match progress {
        Some((done, total)) if total > 0 => format!(
            "reading the prompt: {done} of {} ({}%)",
            ui::text::count(total as usize, "token"),
            u64::from(done.min(total)) * 100 / u64::from(total)
        ),
        _ => "reading the prompt".to_string(),
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
        if let Some(h) = editor.helper() {
            h.start_line();
        }
        match editor.readline("... ") {
            Ok(line) => {
                if let Some(last) = line.trim_end().strip_suffix("\"\"\"") {
                    lines.push(last.to_string());
                    let text = lines.join("\n");
                    return Some(text.trim_matches('\n').to_string());
                }
                lines.push(line);
            }
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                let (line, pos) = editor.helper().map(ShellHelper::typed).unwrap_or_default();
                eprintln!("{} (the whole block was dropped)", not_utf8(&line, pos));
                discard_typed_input();
                return None;
            }
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_that_is_not_utf8_is_placed_in_the_line() {
        let said = not_utf8("Caf", 3);
        assert!(
            said.contains("at byte 3 of the line, after \"Caf\""),
            "{said}"
        );
        assert!(
            said.contains("not sent") && said.contains("UTF-8"),
            "{said}"
        );
        assert!(not_utf8("", 0).contains("at the start of the line"));
        // The cursor may be inside the line: the byte came where the cursor was.
        assert!(not_utf8("héllo", 3).contains("after \"hé\""));
    }

    #[test]
    fn the_status_names_the_queue_and_the_prompt_read_so_far() {
        assert_eq!(queued(0), "waiting in the queue: next");
        assert_eq!(queued(1), "waiting in the queue: 1 request ahead");
        assert_eq!(queued(3), "waiting in the queue: 3 requests ahead");
        assert_eq!(reading_prompt(None), "reading the prompt");
        assert_eq!(
            reading_prompt(Some((384, 1536))),
            "reading the prompt: 384 of 1536 tokens (25%)"
        );
        assert_eq!(reading_prompt(Some((0, 0))), "reading the prompt");
    }
}

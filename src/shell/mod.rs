//! `gemmactl chat`: the interactive shell.
//!
//! A rustyline loop on the main thread; each turn is handed to the supervisor and streamed back
//! on the tokio runtime. The conversation lives in the store (unless `--no-log`): the user's
//! message is committed before generation starts, the reply row exists from its first token and
//! is completed — or marked cancelled or failed — when it ends, so nothing typed is ever lost.
//! Ctrl-C during a reply stops only the reply; the shell stays.

mod command;
mod complete;
mod transcript;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config as EditorConfig, Editor};

use crate::config::{Config, Paths};
use crate::engines::{
    Completion, EngineDescription, EngineError, ErrorCode, FinishReason, GenerateRequest, Message,
    Role, SamplingParams,
};
use crate::models::{self, ModelEntry};
use crate::store::{ConversationId, MessageId, ReplyEnd, Store};
use crate::supervisor::{Supervisor, SupervisorError, SupervisorEvent};
use command::{Command, ExportFormat, Setting, SystemChange};
use complete::ShellHelper;
pub use transcript::{request_parts, tidy_reply};

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Model to chat with [default: the resumed conversation's, else config's default_model]
    #[arg(short, long, value_name = "NAME|PATH")]
    model: Option<String>,
    /// Continue conversation ID (see `gemmactl history list`)
    #[arg(long, value_name = "ID", conflicts_with = "continue_last")]
    resume: Option<ConversationId>,
    /// Continue the most recent conversation
    #[arg(long = "continue", short = 'c')]
    continue_last: bool,
    /// System prompt for a new conversation
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Do not store this session in the history database
    #[arg(long)]
    no_log: bool,
}

/// A message on the current branch, with its id in the store when it is stored.
#[derive(Debug, Clone)]
struct Turn {
    id: Option<MessageId>,
    message: Message,
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
    fn error(&self, text: &str) -> String {
        self.paint("31", text)
    }
    fn prompt(&self) -> String {
        self.paint("1;32", ">>> ")
    }
}

struct Shell {
    rt: tokio::runtime::Runtime,
    /// SIGINT, listened to from the start: a Ctrl-C while a reply streams must cancel it, never
    /// kill the shell. (While rustyline reads a line the terminal is raw and Ctrl-C is a key.)
    interrupt: tokio::signal::unix::Signal,
    supervisor: Supervisor,
    paths: Paths,
    config: Config,
    store: Option<Store>,
    model: ModelEntry,
    params: SamplingParams,
    system: Option<String>,
    conversation: Option<ConversationId>,
    branch: Vec<Turn>,
    /// Oldest turns left out of requests because the conversation outgrew the context.
    dropped: usize,
    session: String,
    sessions_started: u32,
    show_stats: bool,
    style: Style,
}

enum Flow {
    Continue,
    Quit,
}

pub fn run(args: ChatArgs, paths: &Paths, config: Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (supervisor, interrupt) = {
        let _guard = rt.enter();
        (
            Supervisor::new(config.clone(), paths),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        )
    };
    let store = if args.no_log || !config.history {
        None
    } else {
        Some(Store::open_default(paths)?)
    };
    let style = Style {
        color: std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal(),
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
        .clone()
        .or_else(|| resumed.as_ref().and_then(|c| c.model.clone()))
        .unwrap_or_else(|| config.default_model.clone());
    let model = models::resolve(paths, &model_name)?;

    let mut shell = Shell {
        rt,
        interrupt,
        supervisor,
        paths: paths.clone(),
        config,
        store,
        model,
        params: SamplingParams {
            max_tokens: Some(512),
            ..SamplingParams::default()
        },
        system: args.system.clone(),
        conversation: None,
        branch: Vec::new(),
        dropped: 0,
        session: String::new(),
        sessions_started: 0,
        show_stats: true,
        style,
    };
    shell.new_session();
    if let Some(conv) = resumed {
        shell.open_conversation(conv.id)?;
    }
    let outcome = shell.repl();
    shell.rt.block_on(shell.supervisor.shutdown());
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
            models: model_names(&self.paths),
        }));
        let history_file = self.paths.state_dir.join("chat_history");
        let _ = std::fs::create_dir_all(&self.paths.state_dir);
        let _ = editor.load_history(&history_file);
        println!(
            "{}",
            self.style.dim(&format!(
                "gemmactl chat — {} ({}). /help for commands, Ctrl-C stops a reply, Ctrl-D leaves.{}",
                self.model.name,
                self.model.kind.as_str(),
                if self.store.is_some() { "" } else { " History is off." }
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

    fn new_session(&mut self) {
        self.sessions_started += 1;
        self.session = format!("chat-{}-{}", std::process::id(), self.sessions_started);
    }

    fn open_conversation(&mut self, id: ConversationId) -> Result<()> {
        let store = self
            .store
            .as_ref()
            .context("history is off in this shell")?;
        let conv = store.conversation(id)?;
        let path = match conv.head {
            Some(head) => store.path_to(head)?,
            None => Vec::new(),
        };
        self.branch = path
            .into_iter()
            .filter(|m| !(m.role == Role::Assistant && m.content.is_empty()))
            .map(|m| Turn {
                id: Some(m.id),
                message: m.message(),
            })
            .collect();
        self.conversation = Some(conv.id);
        self.system = conv.system.clone();
        self.dropped = 0;
        self.new_session();
        println!(
            "{}",
            self.style.dim(&format!(
                "conversation #{} — {} ({} messages on this branch)",
                conv.id,
                conv.title.as_deref().unwrap_or("untitled"),
                self.branch.len()
            ))
        );
        if let Some(last) = self
            .branch
            .iter()
            .rev()
            .find(|t| t.message.role == Role::Assistant)
        {
            println!(
                "{}",
                self.style.dim(&format!(
                    "last reply: {}",
                    ellipsis(&last.message.content, 200)
                ))
            );
        }
        Ok(())
    }

    /// Sends a user message and streams the reply.
    fn send(&mut self, text: &str) -> Result<()> {
        let parent = self.branch.last().and_then(|t| t.id);
        let id = self.store_user_message(parent, text)?;
        self.branch.push(Turn {
            id,
            message: Message {
                role: Role::User,
                content: text.to_string(),
            },
        });
        self.reply()
    }

    fn store_user_message(
        &mut self,
        parent: Option<MessageId>,
        text: &str,
    ) -> Result<Option<MessageId>> {
        let Some(store) = self.store.as_mut() else {
            return Ok(None);
        };
        let conv = match self.conversation {
            Some(c) => c,
            None => {
                let c = store.create_conversation(self.system.as_deref())?;
                self.conversation = Some(c);
                c
            }
        };
        Ok(Some(store.add_user_message(
            conv,
            parent,
            text,
            &self.model.name,
            &self.params,
        )?))
    }

    /// Generates the reply to the branch's last (user) message.
    fn reply(&mut self) -> Result<()> {
        let parent = self.branch.last().and_then(|t| t.id);
        let reply_id = match (self.store.as_mut(), parent) {
            (Some(store), Some(parent)) => {
                Some(store.start_reply(parent, &self.model.name, &self.params)?)
            }
            _ => None,
        };
        loop {
            let turns: Vec<Message> = self.branch[self.dropped..]
                .iter()
                .map(|t| t.message.clone())
                .collect();
            let (messages, prompt, params) =
                request_parts(&self.model, self.system.as_deref(), &turns, &self.params);
            let request = GenerateRequest {
                id: self.supervisor.new_request_id(),
                messages,
                session: Some(self.session.clone()),
                prompt,
                params,
            };
            let streamed = self.stream(request, reply_id);
            let overflow = matches!(
                &streamed.result,
                Err(SupervisorError::Engine(EngineError::Request {
                    code: ErrorCode::ContextOverflow,
                    ..
                }))
            );
            // Keep at least the message being answered; drop the oldest exchange and try again.
            if overflow && streamed.text.is_empty() && self.branch.len() - self.dropped > 2 {
                self.dropped += 2;
                println!("{}", self.style.dim(&format!("(the conversation is longer than the context: the oldest {} messages are no longer sent; the system prompt is kept)", self.dropped)));
                continue;
            }
            return self.record(streamed, reply_id);
        }
    }

    /// Stores how the reply ended and shows its stats line.
    fn record(&mut self, streamed: Streamed, reply_id: Option<MessageId>) -> Result<()> {
        let text = tidy_reply(&self.model, &streamed.text);
        let engine = streamed.engine.as_ref();
        let (finish, usage, timings, error) = match &streamed.result {
            Ok(done) => (
                done.finish_reason,
                Some(done.usage.clone()),
                Some(done.timings.clone()),
                None,
            ),
            Err(e) => (FinishReason::Error, None, None, Some(e.to_string())),
        };
        if let (Some(store), Some(id)) = (self.store.as_mut(), reply_id) {
            store.finish_reply(
                id,
                &ReplyEnd {
                    text: text.clone(),
                    finish_reason: finish,
                    usage: usage.clone(),
                    timings: timings.clone(),
                    engine: engine.map(|d| d.engine.to_string()),
                    backend: engine.map(backend_with_fallback),
                    error: error.clone(),
                },
            )?;
        }
        if !text.is_empty() || finish != FinishReason::Error {
            self.branch.push(Turn {
                id: reply_id,
                message: Message {
                    role: Role::Assistant,
                    content: text,
                },
            });
        }
        match streamed.result {
            Ok(done) => {
                if done.finish_reason == FinishReason::Cancelled {
                    println!(
                        "{}",
                        self.style.dim("(reply stopped; what was written is kept)")
                    );
                }
                if self.show_stats {
                    println!("{}", self.style.dim(&stats_line(&done, engine)));
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Streams one request to the terminal; Ctrl-C cancels it.
    fn stream(&mut self, request: GenerateRequest, reply_id: Option<MessageId>) -> Streamed {
        let spinner = spinner(&self.model.name);
        let base = self.model.kind == models::ModelKind::Base;
        let supervisor = &self.supervisor;
        let store = &mut self.store;
        let model = &self.model;
        let interrupt = &mut self.interrupt;
        self.rt.block_on(async {
            drain(interrupt).await;
            let mut out = Streamed {
                text: String::new(),
                engine: None,
                result: Err(SupervisorError::ShuttingDown),
            };
            let mut reply = match supervisor.submit(model, request) {
                Ok(r) => r,
                Err(e) => {
                    spinner.finish_and_clear();
                    out.result = Err(e);
                    return out;
                }
            };
            let mut last_save = Instant::now();
            let mut cancelled = false;
            let mut stdout = std::io::stdout();
            loop {
                let event = tokio::select! {
                    e = reply.next() => e,
                    _ = interrupt.recv(), if !cancelled => {
                        cancelled = true;
                        reply.cancel();
                        continue;
                    }
                };
                match event {
                    Some(SupervisorEvent::Queued { position }) => {
                        spinner.set_message(format!("waiting in the queue ({position} ahead)"))
                    }
                    Some(SupervisorEvent::Loading { progress }) => spinner.set_message(format!(
                        "loading {} {:.0}%",
                        model.name,
                        progress * 100.0
                    )),
                    Some(SupervisorEvent::Reloading { reason }) => spinner.set_message(reason),
                    Some(SupervisorEvent::Started(d)) => {
                        spinner.finish_and_clear();
                        out.engine = Some(d);
                    }
                    Some(SupervisorEvent::Token(t)) => {
                        // A base model's reply follows "Assistant:" and starts with a space.
                        let shown = if base && out.text.trim().is_empty() {
                            t.trim_start().to_string()
                        } else {
                            t.clone()
                        };
                        out.text.push_str(&t);
                        let _ = stdout.write_all(shown.as_bytes());
                        let _ = stdout.flush();
                        if last_save.elapsed() > Duration::from_secs(1) {
                            if let (Some(store), Some(id)) = (store.as_mut(), reply_id) {
                                let _ = store.save_partial_reply(id, &out.text);
                            }
                            last_save = Instant::now();
                        }
                    }
                    Some(SupervisorEvent::Finished(done)) => {
                        out.result = Ok(done);
                        break;
                    }
                    Some(SupervisorEvent::Failed(e)) => {
                        out.result = Err(e);
                        break;
                    }
                    None => break,
                }
            }
            spinner.finish_and_clear();
            if !out.text.trim().is_empty() {
                println!();
            }
            out
        })
    }

    fn command(
        &mut self,
        cmd: Command,
        editor: &mut Editor<ShellHelper, DefaultHistory>,
    ) -> Result<Flow> {
        match cmd {
            Command::Help => print!("{}", command::help_text()),
            Command::Quit => return Ok(Flow::Quit),
            Command::Model(None) => println!(
                "{} ({}, {})",
                self.model.name,
                self.model.kind.as_str(),
                self.model.path.display()
            ),
            Command::Model(Some(name)) => self.switch_model(&name)?,
            Command::Models => {
                crate::commands::models::run(
                    crate::commands::models::ModelsCommand::List { json: false },
                    &self.paths,
                    &self.config,
                )?;
                if let Some(h) = editor.helper_mut() {
                    h.models = model_names(&self.paths);
                }
            }
            Command::New => {
                self.conversation = None;
                self.branch.clear();
                self.dropped = 0;
                self.new_session();
                println!("{}", self.style.dim("new conversation"));
            }
            Command::History(n) => {
                let store = self
                    .store
                    .as_ref()
                    .context("history is off in this shell (--no-log)")?;
                let list = store.list_conversations(n, None)?;
                if list.is_empty() {
                    println!("no conversations yet");
                }
                for c in list {
                    let conv = &c.conversation;
                    println!(
                        "#{:<5} {:<24} {:>4} messages  {:<18} {}",
                        conv.id,
                        conv.updated_at
                            .get(..16)
                            .unwrap_or(&conv.updated_at)
                            .replace('T', " "),
                        c.messages,
                        conv.model.as_deref().unwrap_or("-"),
                        conv.title.as_deref().unwrap_or("untitled")
                    );
                }
            }
            Command::Resume(id) => self.open_conversation(id)?,
            Command::Search(text) => {
                let store = self
                    .store
                    .as_ref()
                    .context("history is off in this shell (--no-log)")?;
                let hits = store.search(&text, 20)?;
                if hits.is_empty() {
                    println!("nothing found for {text:?}");
                }
                for h in hits {
                    println!(
                        "#{} message {} ({}): {}",
                        h.conversation,
                        h.message,
                        role_name(h.role),
                        h.snippet.replace('\n', " ")
                    );
                }
            }
            Command::Retry => {
                match self.branch.last().map(|t| t.message.role) {
                    Some(Role::Assistant) => {
                        self.branch.pop();
                    }
                    Some(Role::User) => {}
                    _ => bail!("nothing to retry yet: send a message first"),
                }
                self.reply()?;
            }
            Command::Edit => self.edit_last()?,
            Command::Fork(at) => self.fork(at)?,
            Command::System(SystemChange::Show) => {
                println!("{}", self.system.as_deref().unwrap_or("(no system prompt)"))
            }
            Command::System(change) => {
                self.system = match change {
                    SystemChange::Set(text) => Some(text),
                    _ => None,
                };
                if let (Some(store), Some(conv)) = (self.store.as_mut(), self.conversation) {
                    store.set_system(conv, self.system.as_deref())?;
                }
                println!(
                    "{}",
                    self.style.dim(if self.system.is_some() {
                        "system prompt set"
                    } else {
                        "system prompt cleared"
                    })
                );
            }
            Command::Set(setting) => {
                match setting {
                    Setting::Temperature(t) => self.params.temperature = t,
                    Setting::TopK(k) => self.params.top_k = k,
                    Setting::TopP(p) => self.params.top_p = Some(p),
                    Setting::MaxTokens(n) => self.params.max_tokens = Some(n),
                    Setting::Seed(s) => self.params.seed = s,
                }
                println!("{}", self.style.dim(&params_line(&self.params)));
            }
            Command::Show => self.show(),
            Command::Stats => {
                self.show_stats = !self.show_stats;
                println!(
                    "{}",
                    self.style.dim(if self.show_stats {
                        "stats on"
                    } else {
                        "stats off"
                    })
                );
            }
            Command::Export(format, path) => self.export(format, path)?,
            Command::Ps => crate::commands::ps::show(&self.paths, false)?,
        }
        Ok(Flow::Continue)
    }

    fn switch_model(&mut self, name: &str) -> Result<()> {
        let model = models::resolve(&self.paths, name)?;
        let spinner = spinner(&model.name);
        let supervisor = &self.supervisor;
        let interrupt = &mut self.interrupt;
        let loaded = self.rt.block_on(async {
            drain(interrupt).await;
            tokio::select! {
                r = supervisor.preload(&model, |p| spinner.set_message(format!("loading {} {:.0}%", model.name, p * 100.0))) => Some(r),
                _ = interrupt.recv() => None,
            }
        });
        spinner.finish_and_clear();
        let Some(loaded) = loaded else {
            println!(
                "{}",
                self.style
                    .dim(&format!("switch cancelled; still on {}", self.model.name))
            );
            return Ok(());
        };
        let d = loaded?;
        self.model = model;
        // The new engine has not seen this conversation: a fresh session cache.
        self.new_session();
        println!(
            "{}",
            self.style.dim(&format!(
                "now on {} ({}, {} on {}); the conversation continues",
                self.model.name,
                self.model.kind.as_str(),
                d.engine,
                d.backend
            ))
        );
        Ok(())
    }

    fn edit_last(&mut self) -> Result<()> {
        let Some(at) = self
            .branch
            .iter()
            .rposition(|t| t.message.role == Role::User)
        else {
            bail!("nothing to edit yet: send a message first");
        };
        let old = self.branch[at].message.content.clone();
        let new = edit_in_editor(&old)?;
        if new.trim().is_empty() || new.trim() == old.trim() {
            println!("{}", self.style.dim("unchanged: nothing sent"));
            return Ok(());
        }
        self.branch.truncate(at);
        let text = new.trim_end().to_string();
        println!("{} {}", self.style.prompt(), text);
        self.send(&text)
    }

    fn fork(&mut self, at: Option<MessageId>) -> Result<()> {
        match at {
            Some(id) => {
                let store = self
                    .store
                    .as_mut()
                    .context("history is off in this shell (--no-log)")?;
                let conv = store.fork(id)?;
                self.open_conversation(conv)?;
                println!(
                    "{}",
                    self.style.dim(&format!(
                        "forked at message {id}: your next message starts a new branch"
                    ))
                );
            }
            None => {
                let Some(at) = self
                    .branch
                    .iter()
                    .rposition(|t| t.message.role == Role::User)
                else {
                    bail!("nothing to fork from yet");
                };
                self.branch.truncate(at);
                if let (Some(store), Some(parent)) =
                    (self.store.as_mut(), self.branch.last().and_then(|t| t.id))
                {
                    store.fork(parent)?;
                }
                self.dropped = self.dropped.min(self.branch.len());
                println!(
                    "{}",
                    self.style.dim(
                        "forked before your last message: your next message starts a new branch"
                    )
                );
            }
        }
        Ok(())
    }

    fn show(&self) {
        println!(
            "model:        {} ({}, {})",
            self.model.name,
            self.model.kind.as_str(),
            self.model.path.display()
        );
        match self.supervisor.engine_of(&self.model.name) {
            Some(d) => println!(
                "engine:       {} pid {} on {} ({} threads, context {}, {} slots), loaded in {} ms",
                d.engine,
                d.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                d.backend,
                d.threads,
                d.context,
                d.parallel,
                d.load_ms
            ),
            None => println!("engine:       not loaded yet (it starts with the next message)"),
        }
        if let Some(reason) = self
            .supervisor
            .engine_of(&self.model.name)
            .and_then(|d| d.fallback)
        {
            println!("fallback:     {reason}");
        }
        println!("parameters:   {}", params_line(&self.params));
        println!(
            "system:       {}",
            self.system.as_deref().unwrap_or("(none)")
        );
        println!(
            "conversation: {} ({} messages on this branch{})",
            self.conversation
                .map(|c| format!("#{c}"))
                .unwrap_or_else(|| "new".into()),
            self.branch.len(),
            if self.dropped > 0 {
                format!(", oldest {} not sent", self.dropped)
            } else {
                String::new()
            }
        );
        println!(
            "history:      {}",
            self.store
                .as_ref()
                .map(|s| s.path().display().to_string())
                .unwrap_or_else(|| "off".into())
        );
    }

    fn export(&self, format: ExportFormat, path: Option<PathBuf>) -> Result<()> {
        let store = self
            .store
            .as_ref()
            .context("history is off in this shell (--no-log): nothing is stored to export")?;
        let conv = self
            .conversation
            .context("nothing to export yet: send a message first")?;
        let text = match format {
            ExportFormat::Markdown => store.export_markdown(conv)?,
            ExportFormat::Jsonl => store.export_jsonl(conv)?,
        };
        match path {
            Some(path) => {
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!(
                    "{}",
                    self.style.dim(&format!(
                        "conversation #{conv} written to {}",
                        path.display()
                    ))
                );
            }
            None => print!("{text}"),
        }
        Ok(())
    }
}

struct Streamed {
    text: String,
    engine: Option<EngineDescription>,
    result: Result<Completion, SupervisorError>,
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

fn edit_in_editor(text: &str) -> Result<String> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let file = tempfile_path();
    std::fs::write(&file, text)?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?}: set $EDITOR"))?;
    let edited = std::fs::read_to_string(&file);
    let _ = std::fs::remove_file(&file);
    if !status.success() {
        bail!("the editor {editor:?} exited with {status}: nothing sent");
    }
    Ok(edited?)
}

fn tempfile_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "gemmactl-edit-{}-{}.txt",
        std::process::id(),
        crate::supervisor::status::unix_now()
    ))
}

fn spinner(model: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    bar.set_message(format!("waiting for {model}"));
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Registered and catalogue model names, for completion.
fn model_names(paths: &Paths) -> Vec<String> {
    let mut names = models::registry::Registry::load(paths)
        .map(|r| r.names())
        .unwrap_or_default();
    for entry in models::catalogue::all() {
        if !names.iter().any(|n| n == entry.name) {
            names.push(entry.name.to_string());
        }
    }
    names
}

fn params_line(p: &SamplingParams) -> String {
    format!(
        "temperature {} · top_k {} · top_p {} · max_tokens {} · seed {}",
        p.temperature,
        p.top_k,
        p.top_p
            .map(|v| v.to_string())
            .unwrap_or_else(|| "0.95".into()),
        p.max_tokens
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into()),
        p.seed
            .map(|v| v.to_string())
            .unwrap_or_else(|| "random".into())
    )
}

fn stats_line(done: &Completion, engine: Option<&EngineDescription>) -> String {
    let finish = serde_json::to_value(done.finish_reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    format!(
        "[{} tokens · {:.1} tok/s · first token {:.0} ms · prompt {} tokens ({} cached) · {}{}]",
        done.usage.completion_tokens,
        done.timings.decode_tokens_per_s,
        done.timings.ttft_ms,
        done.usage.prompt_tokens,
        done.usage.cached_tokens,
        finish,
        engine
            .map(|d| format!(" · {} on {}", d.engine, d.backend))
            .unwrap_or_default()
    )
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "you",
        Role::Assistant => "model",
        Role::System => "system",
    }
}

fn ellipsis(text: &str, max: usize) -> String {
    let flat = text.replace('\n', " ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// The backend as stored with a reply: where it really ran, and why if that was a fallback.
pub fn backend_with_fallback(d: &EngineDescription) -> String {
    match &d.fallback {
        Some(reason) => format!("{} (fallback: {reason})", d.backend),
        None => d.backend.clone(),
    }
}

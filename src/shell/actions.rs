//! What each slash command does: one method per command, each a few lines over the thread, the
//! store or the shared tables.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rustyline::history::DefaultHistory;
use rustyline::Editor;

use super::command::{self, Command, ExportFormat, ImageChange, Setting, SystemChange};
use super::complete::ShellHelper;
use super::{Flow, Shell};
use crate::chat::ForkPoint;
use crate::config::Paths;
use crate::domain::{Image, Role, SamplingParams};
use crate::models;
use crate::store::{ConversationId, MessageId};
use crate::supervisor::status;
use crate::ui;

impl Shell {
    /// Runs one slash command.
    pub(super) fn command(
        &mut self,
        cmd: Command,
        editor: &mut Editor<ShellHelper, DefaultHistory>,
    ) -> Result<Flow> {
        match cmd {
            Command::Help => print!("{}", command::help_text(ui::table::terminal_width())),
            Command::Quit => return Ok(Flow::Quit),
            Command::Model(None) => self.show_model(),
            Command::Model(Some(name)) => self.switch_model(&name)?,
            Command::Models => self.list_models(editor)?,
            Command::New => self.new_conversation(),
            Command::History(n) => self.history(n)?,
            Command::Resume(id) => self.open_conversation(id)?,
            Command::Search(text) => self.search(&text)?,
            Command::Retry => self.render(|thread| thread.retry())?,
            Command::Edit => self.edit_last()?,
            Command::Fork(at) => self.fork(at)?,
            Command::System(change) => self.system(change)?,
            Command::Set(setting) => self.set(setting),
            Command::Show => self.show(),
            Command::Stats => self.toggle_stats(),
            Command::Export(format, path) => self.export(format, path)?,
            Command::Image(change) => self.image(change)?,
            Command::Ps => self.ps(),
        }
        Ok(Flow::Continue)
    }

    fn show_model(&self) {
        let m = self.thread.model();
        println!("{} ({}, {})", m.name, m.kind.as_str(), m.location());
    }

    fn switch_model(&mut self, name: &str) -> Result<()> {
        let model = models::resolve(self.service.paths(), name)?;
        let spinner = ui::spinner(&format!("waiting for {}", model.name));
        let Shell {
            rt,
            interrupt,
            thread,
            ..
        } = self;
        let label = model.name.clone();
        let loaded = rt.block_on(async {
            super::drain(interrupt).await;
            tokio::select! {
                r = thread.switch_model(model, |p| spinner.set_message(format!("loading {label} {:.0}%", p * 100.0))) => Some(r),
                _ = interrupt.recv() => None,
            }
        });
        spinner.finish_and_clear();
        let Some(loaded) = loaded else {
            println!(
                "{}",
                self.style.dim(&format!(
                    "switch cancelled; still on {}",
                    self.thread.model().name
                ))
            );
            return Ok(());
        };
        let d = loaded?;
        let m = self.thread.model();
        println!(
            "{}",
            self.style.dim(&format!(
                "now on {} ({}, {} on {}); the conversation continues",
                m.name,
                m.kind.as_str(),
                d.engine,
                d.backend
            ))
        );
        Ok(())
    }

    fn list_models(&self, editor: &mut Editor<ShellHelper, DefaultHistory>) -> Result<()> {
        let rows = models::listing(self.service.paths())?;
        println!("{}", ui::table::models(&rows));
        if let Some(h) = editor.helper_mut() {
            h.models = model_names(self.service.paths());
        }
        Ok(())
    }

    /// `/image`: attachments for the next message, checked now so a bad file is named at once.
    fn image(&mut self, change: ImageChange) -> Result<()> {
        match change {
            ImageChange::Attach(path) => {
                let image = Image::from_file(&path)?;
                println!(
                    "{}",
                    self.style.dim(&format!(
                        "attached {} — sent with your next message (/image - clears)",
                        ui::text::printable_line(&image.summary())
                    ))
                );
                self.attached.push(image);
            }
            ImageChange::Clear => {
                let n = self.attached.len();
                self.attached.clear();
                println!(
                    "{}",
                    self.style
                        .dim(&format!("cleared {}", ui::text::count(n, "attached image")))
                );
            }
            ImageChange::Show if self.attached.is_empty() => {
                println!(
                    "{}",
                    self.style
                        .dim("no image attached: /image FILE attaches one")
                );
            }
            ImageChange::Show => {
                for image in &self.attached {
                    println!("attached: {}", ui::text::printable_line(&image.summary()));
                }
            }
        }
        Ok(())
    }

    fn new_conversation(&mut self) {
        self.thread.reset();
        println!("{}", self.style.dim("new conversation"));
    }

    fn history(&self, n: usize) -> Result<()> {
        let store = self
            .service
            .store()
            .context("history is off in this shell (--no-log)")?;
        let list = store.list_conversations(n, None)?;
        if list.is_empty() {
            println!("no conversations yet");
        } else {
            println!("{}", ui::table::conversations(&list));
        }
        Ok(())
    }

    fn search(&self, text: &str) -> Result<()> {
        let store = self
            .service
            .store()
            .context("history is off in this shell (--no-log)")?;
        let hits = store.search(text, 20)?;
        if hits.is_empty() {
            println!("nothing found for {text:?}");
        }
        for h in hits {
            println!(
                "#{} message {} ({}): {}",
                h.conversation,
                h.message,
                role_name(h.role),
                ui::text::printable_line(&h.snippet.replace('\n', " "))
            );
        }
        Ok(())
    }

    fn edit_last(&mut self) -> Result<()> {
        let Some(old) = self.thread.last_message().map(str::to_string) else {
            bail!("nothing to edit yet: send a message first");
        };
        // The editor reads the terminal itself: give it the terminal's own mode meanwhile.
        self.terminal.restore();
        let edited = edit_in_editor(&old, self.config.env.editor.as_deref());
        self.terminal.quiet();
        let new = edited?;
        let text = super::input::trim_blank_lines(&new).to_string();
        if text.trim().is_empty() {
            println!(
                "{}",
                self.style
                    .dim("the edited message is empty: nothing sent (your last message stays)")
            );
            return Ok(());
        }
        if text == super::input::trim_blank_lines(&old) {
            println!("{}", self.style.dim("unchanged: nothing sent"));
            return Ok(());
        }
        println!("{} {}", self.style.prompt(), text);
        self.render(|thread| thread.edit_last(&text))
    }

    fn fork(&mut self, at: Option<MessageId>) -> Result<()> {
        match at {
            Some(id) => {
                self.thread.fork(ForkPoint::After(id))?;
                let conv = self.thread.id().unwrap_or(ConversationId(0));
                println!(
                    "{}",
                    self.style.dim(&format!(
                        "conversation #{conv}: forked at message {id}: your next message starts a new branch"
                    ))
                );
            }
            None => {
                self.thread.fork(ForkPoint::BeforeLastMessage)?;
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

    fn system(&mut self, change: SystemChange) -> Result<()> {
        let text = match change {
            SystemChange::Show => {
                println!(
                    "{}",
                    ui::text::printable_block(self.thread.system().unwrap_or("(no system prompt)"))
                );
                return Ok(());
            }
            SystemChange::Set(text) => Some(text),
            SystemChange::Clear => None,
        };
        self.thread.set_system(text)?;
        println!(
            "{}",
            self.style.dim(if self.thread.system().is_some() {
                "system prompt set"
            } else {
                "system prompt cleared"
            })
        );
        Ok(())
    }

    fn set(&mut self, setting: Setting) {
        let p = self.thread.params_mut();
        match setting {
            Setting::Temperature(t) => p.temperature = t,
            Setting::TopK(k) => p.top_k = k,
            Setting::TopP(v) => p.top_p = Some(v),
            Setting::MaxTokens(n) => p.max_tokens = Some(n),
            Setting::Seed(s) => p.seed = s,
        }
        let line = ui::text::wrap(
            &params_line(self.thread.params()),
            ui::table::terminal_width(),
        );
        println!("{}", self.style.dim(&line));
    }

    fn show(&self) {
        let m = self.thread.model();
        println!(
            "model:        {} ({}, {})",
            m.name,
            m.kind.as_str(),
            m.location()
        );
        let engine = self.thread.engine();
        match &engine {
            Some(d) if d.engine == crate::domain::EngineKind::Remote => println!(
                "engine:       remote server {} (model {}, {} at once), reached in {} ms",
                d.model.path,
                d.model.name.as_deref().unwrap_or("-"),
                d.parallel,
                d.load_ms
            ),
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
        if let Some(reason) = engine.and_then(|d| d.fallback) {
            println!("fallback:     {reason}");
        }
        if let Some(url) = self.service.attached_to() {
            println!(
                "server:       attached to gemmactl serve at {url} (--local to run in-process)"
            );
        }
        println!("parameters:   {}", params_line(self.thread.params()));
        println!(
            "system:       {}",
            ui::text::printable_line(self.thread.system().unwrap_or("(none)"))
        );
        println!(
            "conversation: {} ({} on this branch{})",
            self.thread
                .id()
                .map(|c| format!("#{c}"))
                .unwrap_or_else(|| "new".into()),
            ui::text::count(self.thread.len(), "message"),
            if self.thread.dropped() > 0 {
                format!(", oldest {} not sent", self.thread.dropped())
            } else {
                String::new()
            }
        );
        println!(
            "history:      {}",
            self.service
                .store()
                .map(|s| s.path().display().to_string())
                .unwrap_or_else(|| "off".into())
        );
    }

    fn toggle_stats(&mut self) {
        self.show_stats = !self.show_stats;
        let note = if self.show_stats {
            "stats on"
        } else {
            "stats off"
        };
        println!("{}", self.style.dim(note));
    }

    fn export(&self, format: ExportFormat, path: Option<PathBuf>) -> Result<()> {
        let store = self
            .service
            .store()
            .context("history is off in this shell (--no-log): nothing is stored to export")?;
        let conv = self
            .thread
            .id()
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
            None => print!("{}", ui::text::printable_block(&text)),
        }
        Ok(())
    }

    fn ps(&self) {
        let processes = status::read_all(&self.service.paths().run_dir());
        if processes.iter().all(|p| p.engines.is_empty()) {
            println!("no engines running (no gemmactl process holds one)");
        } else {
            println!("{}", ui::table::processes(&processes, status::unix_now()));
        }
    }
}

/// Registered and catalogue model names, for completion.
pub(super) fn model_names(paths: &Paths) -> Vec<String> {
    models::listing(paths)
        .map(|rows| rows.into_iter().map(|r| r.name).collect())
        .unwrap_or_default()
}

fn params_line(p: &SamplingParams) -> String {
    format!(
        "temperature {} · top_k {} · top_p {} · max_tokens {} · seed {}",
        p.temperature,
        p.top_k,
        p.top_p.unwrap_or(SamplingParams::DEFAULT_TOP_P),
        p.max_tokens
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into()),
        p.seed
            .map(|v| v.to_string())
            .unwrap_or_else(|| "random".into())
    )
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "you",
        Role::Assistant => "model",
        Role::System => "system",
    }
}

/// Opens `text` in the user's editor (`VISUAL`, `EDITOR`, else `vi`) and returns what it saved.
fn edit_in_editor(text: &str, editor: Option<&str>) -> Result<String> {
    let editor = editor.unwrap_or("vi");
    let file = tempfile::Builder::new()
        .prefix("gemmactl-edit-")
        .suffix(".txt")
        .tempfile()
        .context("cannot create a temporary file to edit")?;
    std::fs::write(file.path(), text)?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .with_context(|| format!("cannot run the editor {editor:?}: set $EDITOR"))?;
    if !status.success() {
        bail!("the editor {editor:?} exited with {status}: nothing sent");
    }
    let bytes = std::fs::read(file.path())
        .with_context(|| format!("cannot read back {}", file.path().display()))?;
    crate::domain::utf8::decode(bytes, "the edited message").map_err(anyhow::Error::msg)
}

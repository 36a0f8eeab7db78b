//! `gemmactl history`: list, show, search, export and delete saved conversations.
//!
//! Everything goes through [`Store`]; this module only formats. Results go to stdout (a table,
//! a tree, or with `--json` a JSON document for scripts); notes and prompts go to stderr, so
//! `gemmactl history list --json | jq` always sees clean output. `import` is hidden from the help
//! (it exists to restore or move an `export --format jsonl`, and for tests) but documented in
//! `docs/history.md`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

use crate::config::Paths;
use crate::domain::Role;
use crate::store::export::{branch_label, message_facts};
use crate::store::tree::depth_first;
use crate::store::{Conversation, ConversationId, Store};
use crate::ui::say;
use crate::ui::text::{count, printable_block, printable_line, short_time};

/// `gemmactl history`'s subcommands.
#[derive(Subcommand, Debug)]
pub enum HistoryCommand {
    /// List conversations, most recently used first.
    List {
        /// How many to show [default: 20; with --batch, all].
        #[arg(long)]
        limit: Option<usize>,
        /// Only conversations in which this model was used.
        #[arg(long, value_name = "NAME", conflicts_with = "batch")]
        model: Option<String>,
        /// Only the lines of this `gemmactl batch` run, in the order they started.
        #[arg(long, value_name = "ID")]
        batch: Option<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a conversation with every branch, message ids, models and how each reply ended.
    Show {
        /// Conversation id [default: the most recently used].
        id: Option<ConversationId>,
        /// Print a JSON object: the conversation and a flat list of messages with parent ids.
        #[arg(long)]
        json: bool,
    },
    /// Find messages containing all the given words (a word also matches longer words it starts).
    Search {
        /// Words to find; quotes and operators are searched for as plain text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
        /// Most matches to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print a JSON array instead of snippets.
        #[arg(long)]
        json: bool,
    },
    /// Write a conversation as Markdown or JSONL (all branches, every stored field).
    Export {
        /// Conversation id [default: the most recently used].
        id: Option<ConversationId>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Md)]
        format: ExportFormat,
        /// Same as `--format jsonl`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Delete a conversation and all its messages.
    Rm {
        /// Conversation id (see `gemmactl history list`).
        id: ConversationId,
        /// Do not ask for confirmation (needed when stdin is not a terminal).
        #[arg(long, short)]
        yes: bool,
        /// Print a JSON object describing what was deleted.
        #[arg(long)]
        json: bool,
    },
    /// Import conversations from `history export --format jsonl` output ("-" reads stdin).
    #[command(hide = true)]
    Import {
        /// The JSONL file, or "-" for stdin.
        file: PathBuf,
        /// Print a JSON object: the new conversation ids and the number of messages.
        #[arg(long)]
        json: bool,
    },
}

/// `--format` of `history export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Markdown, for reading.
    Md,
    /// One JSON record a line, for keeping and importing.
    Jsonl,
}

/// Runs one `gemmactl history` subcommand against the default history database.
pub fn run(cmd: HistoryCommand, paths: &Paths) -> Result<()> {
    // Commands that only read open the database read-only, so they work on a full disk and in a
    // read-only folder too.
    let reading = || Store::open_default_for_reading(paths);
    match cmd {
        HistoryCommand::List {
            limit,
            batch: Some(batch),
            json,
            ..
        } => list_batch(&reading()?, &batch, limit.unwrap_or(usize::MAX), json),
        HistoryCommand::List {
            limit,
            model,
            batch: None,
            json,
        } => list(&reading()?, limit.unwrap_or(20), model.as_deref(), json),
        HistoryCommand::Show { id, json } => show(&reading()?, id, json),
        HistoryCommand::Search { text, limit, json } => {
            search(&reading()?, &text.join(" "), limit, json)
        }
        HistoryCommand::Export {
            id,
            format,
            json,
            output,
        } => {
            let format = if json { ExportFormat::Jsonl } else { format };
            export(&reading()?, id, format, output)
        }
        HistoryCommand::Rm { id, yes, json } => rm(&mut Store::open_default(paths)?, id, yes, json),
        HistoryCommand::Import { file, json } => {
            import(&mut Store::open_default(paths)?, &file, json)
        }
    }
}

/// The conversation named, or the most recently used one.
fn pick(store: &Store, id: Option<ConversationId>) -> Result<Conversation> {
    match id {
        Some(id) => Ok(store.conversation(id)?),
        None => store.latest_conversation()?.context(
            "there are no saved conversations yet: `gemmactl chat` or `gemmactl run` saves them",
        ),
    }
}

/// Prints the conversations, most recently used first, as a table or JSON.
fn list(store: &Store, limit: usize, model: Option<&str>, json: bool) -> Result<()> {
    let rows = store.list_conversations(limit, model)?;
    if json {
        say!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        match model {
            Some(m) => eprintln!("no saved conversation used model {m}"),
            None => eprintln!(
                "no saved conversations yet: `gemmactl chat` or `gemmactl run` saves them"
            ),
        }
        return Ok(());
    }
    say!("{}", crate::ui::table::conversations(&rows));
    Ok(())
}

fn list_batch(store: &Store, batch: &str, limit: usize, json: bool) -> Result<()> {
    let rows = store.batch_conversations(batch, limit)?;
    if json {
        say!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        bail!("no saved conversation belongs to batch {batch}: `gemmactl batch` prints its id when it starts (and stores nothing with --no-log)");
    }
    say!("{}", crate::ui::table::batch_lines(&rows));
    Ok(())
}

fn show(store: &Store, id: Option<ConversationId>, json: bool) -> Result<()> {
    let c = pick(store, id)?;
    let messages = store.messages(c.id)?;
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&json!({ "conversation": c, "messages": messages }))?
        );
        return Ok(());
    }
    // Stored text reaches the terminal only through `printable_*`: a title or a message holding
    // escape sequences is shown, not obeyed.
    say!(
        "conversation {} · {}",
        c.id,
        printable_line(c.title.as_deref().unwrap_or("(untitled)"))
    );
    let mut facts = format!(
        "created {} UTC · updated {} UTC · {}",
        short_time(&c.created_at),
        short_time(&c.updated_at),
        count(messages.len(), "message")
    );
    if let Some(model) = &c.model {
        facts.push_str(&format!(" · last model {}", printable_line(model)));
    }
    say!("{facts}");
    if let Some(system) = &c.system {
        say!(
            "system: {}",
            printable_block(system)
                .lines()
                .collect::<Vec<_>>()
                .join("\n        ")
        );
    }
    for visit in depth_first(&messages) {
        let m = visit.message;
        let indent = "  ".repeat(visit.depth);
        if let Some(branch) = &visit.branch {
            say!("{indent}({})", branch_label(branch));
        } else if visit.depth == 0 && m.parent.is_none() {
            say!("");
        }
        let mut header = format!(
            "{indent}[{}] {} · {}",
            m.id,
            role_name(m.role),
            short_time(&m.created_at)
        );
        for fact in message_facts(m) {
            header.push_str(" · ");
            header.push_str(&printable_line(&fact));
        }
        if c.head == Some(m.id) {
            header.push_str("  ← head");
        }
        say!("{header}");
        for image in &m.images {
            say!("{indent}    image: {}", printable_line(&image.summary()));
            say!(
                "{indent}           sha256 {}",
                printable_line(&image.sha256)
            );
            if let Some(file) = image.file() {
                say!(
                    "{indent}           {}",
                    printable_line(&file.to_string_lossy())
                );
            }
        }
        for line in printable_block(&m.content).lines() {
            say!("{indent}    {line}");
        }
        if let Some(error) = &m.error {
            say!("{indent}    error: {}", printable_line(error));
        }
    }
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::System => "system",
    }
}

fn search(store: &Store, text: &str, limit: usize, json: bool) -> Result<()> {
    let hits = store.search(text, limit)?;
    if json {
        say!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        eprintln!("no message matches {text:?}");
        return Ok(());
    }
    for h in &hits {
        let mut header = format!(
            "conversation {} · message {} · {}",
            h.conversation,
            h.message,
            role_name(h.role)
        );
        if let (Role::Assistant, Some(model)) = (h.role, &h.model) {
            header.push_str(&format!(" ({})", printable_line(model)));
        }
        header.push_str(&format!(" · {}", short_time(&h.created_at)));
        if let Some(title) = &h.title {
            header.push_str(&format!(" · {}", printable_line(title)));
        }
        say!("{header}");
        say!(
            "    {}",
            printable_line(&h.snippet.split_whitespace().collect::<Vec<_>>().join(" "))
        );
    }
    Ok(())
}

fn export(
    store: &Store,
    id: Option<ConversationId>,
    format: ExportFormat,
    output: Option<PathBuf>,
) -> Result<()> {
    let c = pick(store, id)?;
    let text = match format {
        ExportFormat::Md => store.export_markdown(c.id)?,
        ExportFormat::Jsonl => store.export_jsonl(c.id)?,
    };
    match output {
        Some(path) => {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote conversation {} to {}", c.id, path.display());
        }
        None => {
            use std::io::Write as _;
            // JSONL escapes everything itself; Markdown holds the texts as they are, which a
            // terminal must not obey (a file or a pipe gets them unchanged).
            let text = if format == ExportFormat::Md && std::io::stdout().is_terminal() {
                printable_block(&text)
            } else {
                text
            };
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(anyhow::Error::new(e).context("cannot write to stdout"));
                }
            }
        }
    }
    Ok(())
}

fn rm(store: &mut Store, id: ConversationId, yes: bool, json: bool) -> Result<()> {
    let c = store.conversation(id)?;
    let messages = store.messages(id)?.len();
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("not deleting conversation {id} without confirmation: add --yes");
        }
        eprint!(
            "delete conversation {id} \"{}\" and its {}? [y/N] ",
            printable_line(c.title.as_deref().unwrap_or("untitled")),
            count(messages, "message")
        );
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            bail!("conversation {id} was not deleted");
        }
    }
    store.delete_conversation(id)?;
    if json {
        say!("{}", json!({ "deleted": id, "messages": messages }));
    } else {
        say!("deleted conversation {id} ({})", count(messages, "message"));
    }
    Ok(())
}

fn import(store: &mut Store, file: &std::path::Path, json: bool) -> Result<()> {
    let summary = if file.as_os_str() == "-" {
        store.import_jsonl(std::io::stdin().lock(), "stdin")?
    } else {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        store.import_jsonl(std::io::BufReader::new(f), &file.display().to_string())?
    };
    if json {
        say!("{}", serde_json::to_string(&summary)?);
    } else {
        let ids: Vec<String> = summary
            .conversations
            .iter()
            .map(|c| c.to_string())
            .collect();
        say!(
            "imported {}, {}, as {}",
            count(summary.conversations.len(), "conversation"),
            count(summary.messages, "message"),
            ids.join(", ")
        );
    }
    Ok(())
}

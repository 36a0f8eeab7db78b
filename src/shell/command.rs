//! The shell's slash commands: their names, help, and parsing. Pure, so every bad input has a
//! tested one-line hint instead of a crash.

use std::path::PathBuf;

use crate::store::{ConversationId, MessageId};
use crate::ui;

/// Every command with its usage and a one-line description, in `/help` order. Completion uses
/// the names.
pub(super) const COMMANDS: &[(&str, &str, &str)] = &[
    ("/help", "/help", "this list"),
    (
        "/model",
        "/model [NAME]",
        "show the model, or switch to NAME (the conversation continues)",
    ),
    ("/models", "/models", "list the models you can switch to"),
    ("/new", "/new", "start a new conversation"),
    (
        "/history",
        "/history [N]",
        "list the N most recent conversations (default 10)",
    ),
    ("/resume", "/resume ID", "continue conversation ID"),
    (
        "/search",
        "/search TEXT",
        "find TEXT in every stored conversation",
    ),
    (
        "/retry",
        "/retry",
        "regenerate the last reply (kept as a sibling branch)",
    ),
    (
        "/edit",
        "/edit",
        "edit your last message in $EDITOR and send it again (as a branch)",
    ),
    (
        "/fork",
        "/fork [MESSAGE_ID]",
        "continue from an earlier message, starting a branch (default: before your last message)",
    ),
    (
        "/system",
        "/system [TEXT | -]",
        "show, set, or (with -) clear the system prompt",
    ),
    (
        "/set",
        "/set NAME VALUE",
        "change a sampling parameter: temperature, top_k, top_p, max_tokens or seed (`seed random` for a new seed each reply)",
    ),
    (
        "/show",
        "/show",
        "model, engine, backend, parameters and conversation",
    ),
    (
        "/stats",
        "/stats",
        "turn the stats line after each reply on or off",
    ),
    (
        "/export",
        "/export md|jsonl [PATH]",
        "write the conversation as Markdown or JSON lines (stdout without PATH)",
    ),
    (
        "/image",
        "/image [FILE | -]",
        "attach image FILE to your next message (repeat for more), show what is attached, or (with -) clear it",
    ),
    ("/ps", "/ps", "engines held by running gemmactl processes"),
    ("/quit", "/quit", "leave the shell (also /exit, Ctrl-D)"),
];

/// Names `/set` accepts.
pub(super) const PARAMETERS: &[&str] = &["temperature", "top_k", "top_p", "max_tokens", "seed"];

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Command {
    Help,
    Model(Option<String>),
    Models,
    New,
    History(usize),
    Resume(ConversationId),
    Search(String),
    Retry,
    Edit,
    Fork(Option<MessageId>),
    System(SystemChange),
    Set(Setting),
    Show,
    Stats,
    Export(ExportFormat, Option<PathBuf>),
    Image(ImageChange),
    Ps,
    Quit,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum SystemChange {
    Show,
    Set(String),
    Clear,
}

/// What `/image` does.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ImageChange {
    Show,
    /// Attach this file (the rest of the line: a path may hold spaces).
    Attach(PathBuf),
    Clear,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Setting {
    Temperature(f64),
    TopK(u32),
    TopP(f64),
    MaxTokens(u32),
    /// `None`: a new random seed for every reply.
    Seed(Option<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ExportFormat {
    Markdown,
    Jsonl,
}

/// Parses a line starting with `/`. The error is a one-line hint for the user.
pub(super) fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (name, rest) = match line.split_once(char::is_whitespace) {
        Some((n, r)) => (n, r.trim()),
        None => (line, ""),
    };
    let no_args = |cmd: Command| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("{name} takes no arguments"))
        }
    };
    match name {
        "/help" | "/?" => no_args(Command::Help),
        "/model" => Ok(Command::Model((!rest.is_empty()).then(|| rest.to_string()))),
        "/models" => no_args(Command::Models),
        "/new" => no_args(Command::New),
        "/history" => match rest {
            "" => Ok(Command::History(10)),
            n => n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .map(Command::History)
                .ok_or_else(|| format!("usage: /history [N] — N is a positive number, not {n:?}")),
        },
        "/resume" if rest.is_empty() => Err("usage: /resume ID — see /history for ids".into()),
        "/resume" => rest.parse().map(Command::Resume),
        "/search" if rest.is_empty() => Err("usage: /search TEXT".into()),
        "/search" => Ok(Command::Search(rest.to_string())),
        "/retry" => no_args(Command::Retry),
        "/edit" => no_args(Command::Edit),
        "/fork" if rest.is_empty() => Ok(Command::Fork(None)),
        "/fork" => rest.parse().map(|id| Command::Fork(Some(id))),
        "/system" => Ok(Command::System(match rest {
            "" => SystemChange::Show,
            "-" => SystemChange::Clear,
            text => SystemChange::Set(text.to_string()),
        })),
        "/set" => parse_setting(rest).map(Command::Set),
        "/show" => no_args(Command::Show),
        "/stats" => no_args(Command::Stats),
        "/export" => parse_export(rest),
        "/image" => Ok(Command::Image(match rest {
            "" => ImageChange::Show,
            "-" => ImageChange::Clear,
            path => ImageChange::Attach(typed_path(path)),
        })),
        "/ps" => no_args(Command::Ps),
        "/quit" | "/exit" | "/bye" => no_args(Command::Quit),
        other => Err(format!(
            "unknown command {other}: type /help for the list, or start the line with // to send it as a message"
        )),
    }
}

/// A path as typed after `/image`: as it stands if such a file exists, else read the way Tab
/// completion writes it (spaces and other specials escaped with `\`) or a shell would (in
/// quotes), with a leading `~/` for the home folder.
fn typed_path(text: &str) -> PathBuf {
    let literal = PathBuf::from(text);
    if literal.exists() {
        return literal;
    }
    let quoted = ['"', '\''].into_iter().find_map(|q| {
        text.strip_prefix(q)
            .and_then(|t| t.strip_suffix(q))
            .filter(|t| !t.is_empty())
    });
    let unescaped = match quoted {
        Some(inner) => inner.to_string(),
        None => {
            let mut out = String::with_capacity(text.len());
            let mut chars = text.chars();
            while let Some(c) = chars.next() {
                match (c, chars.clone().next()) {
                    ('\\', Some(next)) => {
                        out.push(next);
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            out
        }
    };
    match (
        unescaped.strip_prefix("~/"),
        std::env::var_os("HOME").filter(|h| !h.is_empty()),
    ) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(unescaped),
    }
}

fn parse_setting(rest: &str) -> Result<Setting, String> {
    let usage = "usage: /set temperature|top_k|top_p|max_tokens|seed VALUE";
    let (name, value) = rest
        .split_once(char::is_whitespace)
        .map(|(n, v)| (n, v.trim()))
        .ok_or_else(|| usage.to_string())?;
    let bad = |want: &str| format!("/set {name}: {value:?} is not {want}");
    match name {
        "temperature" => value
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(Setting::Temperature)
            .ok_or_else(|| bad("a number ≥ 0 (0 = greedy)")),
        "top_k" => value
            .parse()
            .map(Setting::TopK)
            .map_err(|_| bad("a whole number ≥ 0 (0 = off)")),
        "top_p" => value
            .parse::<f64>()
            .ok()
            .filter(|p| *p > 0.0 && *p <= 1.0)
            .map(Setting::TopP)
            .ok_or_else(|| bad("a number in (0, 1] (1 = off)")),
        "max_tokens" => value
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Setting::MaxTokens)
            .ok_or_else(|| bad("a whole number ≥ 1")),
        "seed" => match value {
            "random" | "none" => Ok(Setting::Seed(None)),
            v => v
                .parse()
                .map(|s| Setting::Seed(Some(s)))
                .map_err(|_| bad("a whole number, or `random`")),
        },
        other => Err(format!(
            "/set: unknown parameter {other:?}; one of {}",
            PARAMETERS.join(", ")
        )),
    }
}

fn parse_export(rest: &str) -> Result<Command, String> {
    let mut words = rest.split_whitespace();
    let format = match words.next() {
        Some("md") | Some("markdown") => ExportFormat::Markdown,
        Some("jsonl") | Some("json") => ExportFormat::Jsonl,
        _ => return Err("usage: /export md|jsonl [PATH]".into()),
    };
    let path = words.next().map(PathBuf::from);
    if words.next().is_some() {
        return Err("usage: /export md|jsonl [PATH] (a path with spaces is not supported here; use `gemmactl history export`)".into());
    }
    Ok(Command::Export(format, path))
}

/// How input works, under the list of commands in `/help`.
const NOTES: &[&str] = &[
    "Only a line you type that starts with / is a command. Start it with // (which stands for one /) or a space to send it as a message; pasted text and text of several lines are always messages.",
    "\"\"\" starts and ends a multi-line message. Lines typed while a reply streams wait for the next prompt.",
    "Ctrl-C stops a reply (it is kept, marked cancelled); Ctrl-D or /quit leaves.",
];

/// `/help`: the commands and how input works, laid out for `width` columns (`None`: not a
/// terminal, one line each).
pub(super) fn help_text(width: Option<u16>) -> String {
    let items: Vec<(&str, &str)> = COMMANDS
        .iter()
        .map(|(_, usage, what)| (*usage, *what))
        .collect();
    let mut text = ui::text::definitions(&items, width);
    for note in NOTES {
        text.push('\n');
        match width {
            Some(w) => text.push_str(&ui::text::fill(note, usize::from(w), "  ")),
            None => text.push_str(&format!("  {note}")),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_path_is_read_as_completion_or_a_shell_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("my cat (1).png");
        std::fs::write(&spaced, b"x").unwrap();
        let shown = spaced.display().to_string();
        // Typed as it is, escaped the way Tab completion writes it, and in quotes.
        let escaped = shown
            .replace(' ', "\\ ")
            .replace('(', "\\(")
            .replace(')', "\\)");
        for typed in [
            shown.clone(),
            escaped,
            format!("\"{shown}\""),
            format!("'{shown}'"),
        ] {
            assert_eq!(
                parse(&format!("/image {typed}")),
                Ok(Command::Image(ImageChange::Attach(spaced.clone()))),
                "{typed}"
            );
        }
        // The home folder, and a file that does not exist kept as typed for its sentence.
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap();
        assert_eq!(typed_path("~/a b.png"), home.join("a b.png"));
        assert_eq!(typed_path("nowhere.png"), PathBuf::from("nowhere.png"));
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse("/model"), Ok(Command::Model(None)));
        assert_eq!(
            parse("/model  gemma3-270m "),
            Ok(Command::Model(Some("gemma3-270m".into())))
        );
        assert_eq!(parse("/history"), Ok(Command::History(10)));
        assert_eq!(parse("/history 3"), Ok(Command::History(3)));
        assert_eq!(
            parse("/resume #12"),
            Ok(Command::Resume(ConversationId(12)))
        );
        assert_eq!(parse("/fork"), Ok(Command::Fork(None)));
        assert_eq!(parse("/fork 40"), Ok(Command::Fork(Some(MessageId(40)))));
        assert_eq!(
            parse("/set temperature 0"),
            Ok(Command::Set(Setting::Temperature(0.0)))
        );
        assert_eq!(
            parse("/set seed random"),
            Ok(Command::Set(Setting::Seed(None)))
        );
        assert_eq!(
            parse("/set max_tokens 64"),
            Ok(Command::Set(Setting::MaxTokens(64)))
        );
        assert_eq!(
            parse("/system Be brief."),
            Ok(Command::System(SystemChange::Set("Be brief.".into())))
        );
        assert_eq!(parse("/system -"), Ok(Command::System(SystemChange::Clear)));
        assert_eq!(
            parse("/export md out.md"),
            Ok(Command::Export(
                ExportFormat::Markdown,
                Some("out.md".into())
            ))
        );
        assert_eq!(parse("/exit"), Ok(Command::Quit));
    }

    #[test]
    fn bad_input_is_a_hint_not_a_crash() {
        for (line, hint) in [
            ("/frobnicate", "unknown command /frobnicate"),
            ("/history zero", "positive number"),
            ("/history 0", "positive number"),
            ("/resume", "usage: /resume"),
            ("/resume abc", "not a conversation id"),
            ("/fork -3", "not a message id"),
            ("/set", "usage: /set"),
            ("/set temperature hot", "not a number"),
            ("/set temperature -1", "not a number"),
            ("/set top_p 1.5", "(0, 1]"),
            ("/set max_tokens 0", "≥ 1"),
            ("/set colour blue", "unknown parameter"),
            ("/export pdf", "usage: /export"),
            ("/quit now", "takes no arguments"),
            ("/search", "usage: /search"),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(hint), "{line}: {err}");
            assert!(!err.contains('\n'), "hint must be one line: {err}");
        }
    }

    #[test]
    fn help_lists_every_command() {
        let help = help_text(None);
        for (name, _, _) in COMMANDS {
            assert!(help.contains(name));
        }
    }

    #[test]
    fn help_fits_the_terminal_and_breaks_lines_between_words() {
        let words = |text: &str| {
            text.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let whole = words(&help_text(None));
        for width in [40u16, 60, 80, 120] {
            let help = help_text(Some(width));
            for line in help.lines() {
                assert!(
                    console::measure_text_width(line) <= usize::from(width),
                    "{width} columns: {line:?}"
                );
            }
            // The same words in the same order: nothing was cut inside a word.
            assert_eq!(words(&help), whole, "{width} columns");
        }
    }
}

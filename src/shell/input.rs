//! What a line of input is: a slash command, a message, or the start of a `"""` block.
//!
//! Only a single line the user typed can be a command. Text that arrived in a bracketed paste,
//! or that spans lines, is always a message and is sent exactly as written (less its blank first
//! and last lines), so code that opens with a `//` comment or a path that starts with `/` is
//! never mistaken for a command. A typed line can still say "this is a message": `//` at its start
//! stands for one literal `/` (as in IRC clients), and a leading space is dropped.
//!
//! Whether a line began with pasted text is learnt from rustyline: [`PasteWatch`] is bound to
//! the terminal's paste-start key and notes a paste that begins at the start of the line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustyline::{Cmd, ConditionalEventHandler, Event, EventContext, RepeatCount};

/// What the shell does with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Input {
    /// Nothing to do (an empty or blank line).
    Empty,
    /// A slash command, to parse.
    Command(String),
    /// A message to send, as it is to be stored.
    Message(String),
    /// A typed `"""` line: a multi-line message follows (the text after the quotes).
    Block(String),
}

/// Classifies `line`; `pasted` says the line began with pasted text.
pub(super) fn classify(line: &str, pasted: bool) -> Input {
    let text = trim_blank_lines(line);
    if text.trim().is_empty() {
        return Input::Empty;
    }
    if pasted || text.contains('\n') {
        return Input::Message(text.to_string());
    }
    if let Some(rest) = text.strip_prefix("//") {
        return Input::Message(format!("/{rest}"));
    }
    if text.starts_with('/') {
        return Input::Command(text.to_string());
    }
    if text.starts_with(char::is_whitespace) && text.trim_start().starts_with('/') {
        return Input::Message(text.trim_start().to_string());
    }
    if text.trim_start().starts_with("\"\"\"") {
        return Input::Block(text.to_string());
    }
    Input::Message(text.to_string())
}

/// The form of an entry kept in the input history: recalled and sent again, it does the same
/// thing (a message that starts with `/` is kept with the `//` escape).
pub(super) fn recall_form(input: &Input) -> String {
    match input {
        Input::Message(text) if text.starts_with('/') && !text.contains('\n') => format!("/{text}"),
        Input::Command(text) | Input::Message(text) | Input::Block(text) => text.clone(),
        Input::Empty => String::new(),
    }
}

/// `text` without its leading and trailing blank lines (a paste's final newline, say); the
/// indentation of the first line with text is kept.
pub(super) fn trim_blank_lines(text: &str) -> &str {
    let end = text.trim_end().len();
    let text = &text[..end];
    let start = text
        .char_indices()
        .take_while(|(_, c)| c.is_whitespace())
        .filter(|(_, c)| *c == '\n')
        .last()
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    &text[start..]
}

/// Notes a bracketed paste that starts at the beginning of the line, then lets rustyline insert
/// the pasted text as it always does.
#[derive(Clone, Default)]
pub(super) struct PasteWatch {
    at_start: Arc<AtomicBool>,
}

impl PasteWatch {
    /// Forgets the last line's paste: called before each line is read.
    pub(super) fn reset(&self) {
        self.at_start.store(false, Ordering::Relaxed);
    }

    /// Whether the line just read began with pasted text.
    pub(super) fn began_with_paste(&self) -> bool {
        self.at_start.load(Ordering::Relaxed)
    }
}

impl ConditionalEventHandler for PasteWatch {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext<'_>) -> Option<Cmd> {
        if ctx.pos() == 0 {
            self.at_start.store(true, Ordering::Relaxed);
        }
        // `None`: rustyline's own handling reads the pasted text and inserts it.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Input {
        Input::Message(text.to_string())
    }

    #[test]
    fn only_a_typed_single_line_can_be_a_command() {
        assert_eq!(classify("/help", false), Input::Command("/help".into()));
        assert_eq!(
            classify("/set temperature 0\n", false),
            Input::Command("/set temperature 0".into())
        );
        // Pasted: a path, a comment, a command's text — all messages, sent as written.
        assert_eq!(classify("/help", true), message("/help"));
        assert_eq!(
            classify("/etc/hosts lists host names", true),
            message("/etc/hosts lists host names")
        );
        let code = "// add two numbers\nfn add(a: i32, b: i32) -> i32 {\n    a + b\n}\nExplain this code.\n";
        assert_eq!(classify(code, true), message(code.trim_end()));
        // Several lines are a message however they came.
        assert_eq!(
            classify("/model second\nhello", false),
            message("/model second\nhello")
        );
        assert_eq!(
            classify("# heading\n/tmp is full", false),
            message("# heading\n/tmp is full")
        );
    }

    #[test]
    fn a_typed_line_escapes_the_command_reading_with_a_double_slash_or_a_space() {
        assert_eq!(classify("//help", false), message("/help"));
        assert_eq!(
            classify("// add two numbers", false),
            message("/ add two numbers")
        );
        assert_eq!(classify(" /help", false), message("/help"));
        assert_eq!(classify("\t/usr/bin/env", false), message("/usr/bin/env"));
        // Other leading characters are ordinary messages, kept as typed.
        for line in ["hello", "?/help", "#/x", "  indented", "-/x", "\\/x"] {
            assert_eq!(classify(line, false), message(line), "{line}");
        }
    }

    #[test]
    fn blank_lines_around_text_are_not_part_of_it() {
        assert_eq!(classify("", false), Input::Empty);
        assert_eq!(classify("   \n\n ", true), Input::Empty);
        assert_eq!(classify("hello\n", true), message("hello"));
        assert_eq!(classify("hello\r\n\n", true), message("hello"));
        assert_eq!(
            classify("\n\n    indented code\n  more\n\n", true),
            message("    indented code\n  more")
        );
    }

    #[test]
    fn history_recalls_an_entry_as_the_same_kind() {
        for (line, pasted) in [
            ("/help", false),
            ("//help", false),
            (" /usr/bin/env", false),
            ("/etc/hosts", true),
            ("hello", false),
            ("// a\n// b", true),
        ] {
            let input = classify(line, pasted);
            assert_eq!(classify(&recall_form(&input), false), input, "{line}");
        }
    }

    #[test]
    fn quotes_open_a_block_only_when_typed() {
        assert_eq!(
            classify("\"\"\"first", false),
            Input::Block("\"\"\"first".into())
        );
        assert_eq!(
            classify("\"\"\"docstring\"\"\"", true),
            message("\"\"\"docstring\"\"\"")
        );
        assert_eq!(
            classify("\"\"\"\nline\n\"\"\"", false),
            message("\"\"\"\nline\n\"\"\"")
        );
    }
}

//! Tab completion for the shell: slash commands, model names after `/model`, parameter names
//! after `/set`, formats after `/export`, file paths after `/image`.

use std::cell::RefCell;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::command::{COMMANDS, PARAMETERS};

pub(super) struct ShellHelper {
    pub models: Vec<String>,
    /// The line being typed and the cursor's byte offset in it, as of the last key rustyline
    /// took. rustyline reports a byte that is not UTF-8 only as "invalid data", so this is how
    /// the shell can say where in the line it came.
    typed: RefCell<(String, usize)>,
}

impl ShellHelper {
    pub(super) fn new(models: Vec<String>) -> ShellHelper {
        ShellHelper {
            models,
            typed: RefCell::default(),
        }
    }

    /// Forgets the last line, before a new one is read.
    pub(super) fn start_line(&self) {
        *self.typed.borrow_mut() = (String::new(), 0);
    }

    /// The line typed so far and the cursor's byte offset.
    pub(super) fn typed(&self) -> (String, usize) {
        self.typed.borrow().clone()
    }

    /// Candidates for the word ending at `pos`, and where that word starts.
    pub(super) fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        if !before.starts_with('/') {
            return (pos, Vec::new());
        }
        let start = before.rfind(' ').map(|i| i + 1).unwrap_or(0);
        let word = &before[start..];
        let options: Vec<String> = if start == 0 {
            COMMANDS
                .iter()
                .map(|(name, _, _)| name.to_string())
                .collect()
        } else {
            match before.split_whitespace().next() {
                Some("/model") => self.models.clone(),
                Some("/set") if start == "/set ".len() => {
                    PARAMETERS.iter().map(|p| p.to_string()).collect()
                }
                Some("/export") if start == "/export ".len() => vec!["md".into(), "jsonl".into()],
                _ => Vec::new(),
            }
        };
        (
            start,
            options
                .into_iter()
                .filter(|o| o.starts_with(word))
                .collect(),
        )
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        if line[..pos].starts_with("/image ") {
            // rustyline's own file-name completion: `~`, quoting and folders with a `/`.
            return FilenameCompleter::new().complete_path(line, pos);
        }
        let (start, words) = self.candidates(line, pos);
        Ok((
            start,
            words
                .into_iter()
                .map(|w| Pair {
                    display: w.clone(),
                    replacement: w,
                })
                .collect(),
        ))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;

    /// Shows no hint; rustyline calls it after every change to the line, which is when the
    /// line is recorded.
    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        *self.typed.borrow_mut() = (line.to_string(), pos);
        None
    }
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_commands_models_and_parameters() {
        let h = ShellHelper::new(vec!["gemma3-270m".into(), "qwen2.5-coder-0.5b".into()]);
        assert_eq!(
            h.candidates("/mo", 3),
            (0, vec!["/model".to_string(), "/models".to_string()])
        );
        assert_eq!(
            h.candidates("/model g", 8),
            (7, vec!["gemma3-270m".to_string()])
        );
        assert_eq!(
            h.candidates("/set top", 8),
            (5, vec!["top_k".to_string(), "top_p".to_string()])
        );
        assert_eq!(h.candidates("hello", 5).1, Vec::<String>::new());
    }
}

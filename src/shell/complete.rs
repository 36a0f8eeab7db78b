//! Tab completion for the shell: slash commands, model names after `/model`, parameter names
//! after `/set`, formats after `/export`.

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::command::{COMMANDS, PARAMETERS};

pub(super) struct ShellHelper {
    pub models: Vec<String>,
}

impl ShellHelper {
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
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_commands_models_and_parameters() {
        let h = ShellHelper {
            models: vec!["gemma3-270m".into(), "qwen2.5-coder-0.5b".into()],
        };
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

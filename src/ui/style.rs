//! Colours, only when they can be seen: never with `NO_COLOR`, never into a pipe.

use std::io::IsTerminal;

use crate::config::Config;

/// How to paint text for stdout.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colours when stdout is a terminal and `NO_COLOR` is not set.
    pub fn for_stdout(config: &Config) -> Style {
        Style {
            color: !config.env.no_color && std::io::stdout().is_terminal(),
        }
    }

    /// No colours at all.
    pub fn plain() -> Style {
        Style { color: false }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Dim: notes and stats.
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Red: errors.
    pub fn error(&self, text: &str) -> String {
        self.paint("31", text)
    }

    /// The shell's input prompt.
    pub fn prompt(&self) -> String {
        self.paint("1;32", ">>> ")
    }
}

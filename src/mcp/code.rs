//! `complete_code`'s rules for where a completion ends and what of it is code.
//!
//! A model that only continues the prefix (no fill-in-the-middle tokens) does not know where to
//! stop: it finishes the block and goes on writing the rest of a file. So a completion ends at
//! a sensible boundary, found while it streams so the engine can stop at once:
//!
//! - the end of the block: a line indented no deeper than the line that opened the block (the
//!   prefix's last line ending in `:`, `{`, `(`, `[`, `=>` or `->`), or less deep than the
//!   prefix's last line otherwise; a closing bracket at that depth is kept when the suffix does
//!   not bring its own;
//! - the suffix's first line, when the model writes it out again.
//!
//! Models also wrap code in Markdown fences and chatter around them ("Here is the code:"); only
//! the fenced code is kept, and a repetition of the prefix's end at its start is dropped.

/// Where a completion of `prefix` (before `suffix`) ends.
#[derive(Debug, Clone)]
pub(super) struct Boundary {
    /// Lines indented this deep or less end the block (`None`: top-level code, no block end).
    end_at: Option<usize>,
    /// The suffix's first non-blank line, trimmed.
    suffix_line: Option<String>,
    /// The completion's first line continues the prefix's last one: its indentation means
    /// nothing.
    mid_line: bool,
    /// Whether block ends count (only when the model cannot see the suffix).
    blocks: bool,
}

/// Closing brackets (and words) a block may end with.
const CLOSERS: [&str; 4] = ["}", ")", "]", "end"];
/// Line endings that open a block.
const OPENERS: [&str; 6] = [":", "{", "(", "[", "=>", "->"];

fn indent(line: &str) -> usize {
    line.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

impl Boundary {
    /// The boundary for a completion between `prefix` and `suffix`. `blocks` is false when the
    /// model sees the suffix (fill-in-the-middle) and ends the middle itself.
    pub(super) fn new(prefix: &str, suffix: &str, blocks: bool) -> Boundary {
        let mid_line = !prefix.is_empty() && !prefix.ends_with('\n');
        let last = prefix.lines().rev().find(|l| !l.trim().is_empty());
        let end_at = last.and_then(|line| {
            let depth = indent(line);
            let code = line.trim_end();
            if OPENERS.iter().any(|o| code.ends_with(o)) {
                Some(depth)
            } else {
                depth.checked_sub(1)
            }
        });
        let suffix_line = suffix
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string);
        Boundary {
            end_at,
            suffix_line,
            mid_line,
            blocks,
        }
    }

    /// Stop strings for the engine: a closing fence ends a Markdown-wrapped answer (the
    /// boundary itself is watched as the text streams, see [`Boundary::find`]).
    pub(super) fn stop_strings(&self) -> Vec<String> {
        if self.blocks {
            vec!["\n```".to_string()]
        } else {
            Vec::new()
        }
    }

    /// Where in `text` (the completion so far) the boundary line starts, if it has come.
    pub(super) fn find(&self, text: &str) -> Option<usize> {
        let mut start = 0;
        for (n, line) in text.split_inclusive('\n').enumerate() {
            let at = start;
            start += line.len();
            let complete = line.ends_with('\n');
            let body = line.trim_end_matches(['\n', '\r']);
            if n == 0 && self.mid_line {
                continue;
            }
            if body.trim().is_empty() {
                continue;
            }
            if let Some(s) = &self.suffix_line {
                if complete && body.trim() == s {
                    return Some(at);
                }
            }
            if let (true, Some(end_at)) = (self.blocks, self.end_at) {
                // The line's depth is known once its first non-blank character is there.
                if indent(body) <= end_at {
                    return Some(at);
                }
            }
        }
        None
    }
}

/// The code to insert, from the model's `text`.
pub(super) fn tidy(
    text: &str,
    prefix: &str,
    suffix: &str,
    language: &str,
    boundary: &Boundary,
) -> String {
    let text = match unfence(text, language) {
        // A fenced answer is a rewrite more often than a continuation.
        Some(code) => drop_repeated_prefix(&code, prefix),
        None => text.to_string(),
    };
    let mut code = match boundary.find(&text) {
        Some(at) => {
            let (kept, rest) = text.split_at(at);
            let mut kept = kept.to_string();
            let closer = rest.lines().next().unwrap_or("").trim();
            let suffix_closes = suffix.trim_start().starts_with(closer);
            let closes = boundary.blocks && CLOSERS.iter().any(|c| closer.starts_with(c));
            if closes && !suffix_closes && boundary.suffix_line.as_deref() != Some(closer) {
                kept.push_str(rest.lines().next().unwrap_or(""));
            }
            kept
        }
        None => text,
    };
    // Trailing blank lines are the suffix's business; a line break the suffix needs is kept.
    let trimmed_len = code.trim_end().len();
    let had_break = code[trimmed_len..].contains('\n');
    code.truncate(trimmed_len);
    if had_break && !suffix.is_empty() && !suffix.starts_with(['\n', '\r']) {
        code.push('\n');
    }
    code
}

/// The code inside a fenced block, when the text has one: the first one tagged `language`,
/// else the first.
fn unfence(text: &str, language: &str) -> Option<String> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let (tag, body) = match after.find('\n') {
            Some(n) => (after[..n].trim(), &after[n + 1..]),
            None => (after.trim(), ""),
        };
        let (code, next) = match body.find("```") {
            Some(close) => (&body[..close], &body[close + 3..]),
            None => (body, ""),
        };
        blocks.push((tag, code));
        rest = next;
    }
    let language = language.trim();
    let chosen = blocks
        .iter()
        .find(|(tag, _)| !language.is_empty() && tag.eq_ignore_ascii_case(language))
        .or(blocks.first())?;
    Some(chosen.1.to_string())
}

/// Drops the start of `code` when it repeats whole lines from the end of `prefix` (a model
/// that rewrote the function it was given), and the line break after them.
fn drop_repeated_prefix(code: &str, prefix: &str) -> String {
    let line_starts = std::iter::once(0).chain(prefix.match_indices('\n').map(|(i, _)| i + 1));
    for start in line_starts {
        let tail = prefix[start..].trim_end();
        if tail.trim().is_empty() {
            continue;
        }
        for candidate in [tail, tail.trim_start()] {
            if let Some(rest) = code.strip_prefix(candidate) {
                return rest.strip_prefix('\n').unwrap_or(rest).to_string();
            }
        }
    }
    code.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_body_ends_where_the_next_definition_starts() {
        let prefix = "def add(a, b):\n    ";
        let b = Boundary::new(prefix, "", true);
        let text = "return a + b\n\n\ndef sub(a, b):\n    return a - b\n";
        assert_eq!(b.find(text), Some("return a + b\n\n\n".len()));
        assert_eq!(tidy(text, prefix, "", "", &b), "return a + b");
        // Not while the next line is still indented (or only whitespace so far).
        assert_eq!(b.find("return a + b\n    "), None);
    }

    #[test]
    fn a_brace_block_keeps_its_closing_brace_unless_the_suffix_has_it() {
        let prefix = "fn add(a: i32, b: i32) -> i32 {\n";
        let text = "    a + b\n}\n\nfn main() {}\n";
        let b = Boundary::new(prefix, "", true);
        assert_eq!(tidy(text, prefix, "", "", &b), "    a + b\n}");
        // The suffix's brace starts its own line, so the line break before it stays.
        let b = Boundary::new(prefix, "}\n", true);
        assert_eq!(tidy(text, prefix, "}\n", "", &b), "    a + b\n");
    }

    #[test]
    fn the_suffix_first_line_ends_the_completion() {
        let prefix = "x = 1\n";
        let suffix = "\nprint(x + y)\n";
        let b = Boundary::new(prefix, suffix, false);
        let text = "y = 2\nprint(x + y)\nprint(3)\n";
        assert_eq!(tidy(text, prefix, suffix, "", &b), "y = 2");
        // Written out only partly, it is not the suffix yet.
        assert_eq!(b.find("y = 2\nprint(x"), None);
    }

    #[test]
    fn without_block_rules_a_fill_in_the_middle_answer_is_kept_whole() {
        let prefix = "def f():\n    ";
        let b = Boundary::new(prefix, "\n\nprint(g())\n", false);
        let text = "return 1\n\ndef g():\n    return 2";
        assert_eq!(tidy(text, prefix, "\n\nprint(g())\n", "", &b), text);
    }

    #[test]
    fn fences_and_chatter_are_dropped() {
        let prefix = "def add(a, b):\n";
        let b = Boundary::new(prefix, "", true);
        let text =
            "Here is the code:\n```python\ndef add(a, b):\n    return a + b\n```\nHope it helps!";
        assert_eq!(tidy(text, prefix, "", "", &b), "    return a + b");
        let two = "```text\nnot this\n```\n```python\n    return a + b\n```";
        assert_eq!(tidy(two, prefix, "", "python", &b), "    return a + b");
        // Unfenced, the same words are a continuation and stay.
        let prefix = "x = compute(";
        let b = Boundary::new(prefix, ")", true);
        assert_eq!(tidy("compute(1)", prefix, ")", "", &b), "compute(1)");
    }

    #[test]
    fn a_mid_line_cursor_keeps_the_line_break_the_suffix_needs() {
        let prefix = "values = [1, 2, 3]\ntotal = ";
        let suffix = "print(total)\n";
        let b = Boundary::new(prefix, suffix, true);
        assert_eq!(
            tidy("sum(values)\n", prefix, suffix, "", &b),
            "sum(values)\n"
        );
        assert_eq!(tidy("sum(values)\n", prefix, "", "", &b), "sum(values)");
    }
}

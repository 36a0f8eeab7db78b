//! Small text helpers for terminal output.

/// The first `max` characters of `text` on one line, with `…` when cut.
pub fn ellipsis(text: &str, max: usize) -> String {
    let flat = text.replace('\n', " ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// `text` made safe to print on one line of a terminal (a table cell, a title, a snippet): no
/// character in it can move the cursor, clear the screen, ring the bell, change colours or
/// reorder the line. C0 controls and DEL are shown as their Unicode control pictures (`␛`, `␇`,
/// `␌`, `␊`…), a tab as a space, C1 controls and bidirectional overrides as `\u{…}`.
pub fn printable_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push(' '),
            c => push_printable(&mut out, c),
        }
    }
    out
}

/// `text` made safe to print as lines on a terminal (a reply, a message, a system prompt): like
/// [`printable_line`], but line breaks and tabs are kept (`\r\n` becomes `\n`).
pub fn printable_block(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' if chars.peek() == Some(&'\n') => {}
            c => push_printable(&mut out, c),
        }
    }
    out
}

fn push_printable(out: &mut String, c: char) {
    match c as u32 {
        // C0 controls: their control pictures, U+2400 to U+241F.
        code @ 0x00..=0x1F => out.push(char::from_u32(0x2400 + code).unwrap_or('\u{fffd}')),
        0x7F => out.push('\u{2421}'),
        // C1 controls (0x9B is CSI to some terminals) and bidirectional embeddings, overrides
        // and isolates (they make a line display in another order than it reads).
        code @ (0x80..=0x9F | 0x202A..=0x202E | 0x2066..=0x2069) => {
            out.push_str(&format!("\\u{{{code:x}}}"))
        }
        _ => out.push(c),
    }
}

/// A stored timestamp (`2025-03-01T10:00:01.123Z`) as `2025-03-01 10:00:01`.
pub fn short_time(ts: &str) -> String {
    match ts.get(..19) {
        Some(head) if ts.len() > 19 => head.replacen('T', " ", 1),
        _ => ts.to_string(),
    }
}

/// `1 token`, `2 tokens`: a count with its noun, singular or plural (nouns that take an `s`).
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `text` wrapped at word boundaries to `width` columns (a word longer than the line is cut);
/// with no width (output is not a terminal) it is left as it is. Existing line breaks are kept.
pub fn wrap(text: &str, width: Option<u16>) -> String {
    match width {
        Some(w) => textwrap::fill(text, options(usize::from(w.max(1)))),
        None => text.to_string(),
    }
}

/// A two-column list — a term, then what it means — indented by two spaces, wrapped at word
/// boundaries to `width`. Where the width leaves the second column too narrow to read, each
/// meaning goes on its own lines under its term instead. No width: one line per item.
pub fn definitions(items: &[(&str, &str)], width: Option<u16>) -> String {
    /// Narrower than this, a meaning reads better under its term than beside it.
    const MIN_MEANING: usize = 28;
    let term_width = items
        .iter()
        .map(|(term, _)| console::measure_text_width(term))
        .max()
        .unwrap_or(0);
    let beside = 2 + term_width + 2;
    let mut out = String::new();
    for (term, meaning) in items {
        let Some(width) = width.map(usize::from) else {
            out.push_str(&format!("  {term:<term_width$}  {meaning}\n"));
            continue;
        };
        let lines = if width >= beside + MIN_MEANING {
            let first = format!("  {term:<term_width$}  ");
            let rest = " ".repeat(beside);
            let layout = options(width)
                .initial_indent(&first)
                .subsequent_indent(&rest);
            textwrap::wrap(meaning, layout)
        } else {
            out.push_str(&fill(term, width, "  "));
            out.push('\n');
            let indent = "      ";
            let layout = options(width)
                .initial_indent(indent)
                .subsequent_indent(indent);
            textwrap::wrap(meaning, layout)
        };
        for line in lines {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// `text` as a paragraph indented by `indent`, wrapped to `width`.
pub fn fill(text: &str, width: usize, indent: &str) -> String {
    let layout = options(width)
        .initial_indent(indent)
        .subsequent_indent(indent);
    textwrap::fill(text, layout)
}

/// Wrapping at spaces only: `Ctrl-D` or `gemma3-270m` is never split at its hyphen.
fn options<'a>(width: usize) -> textwrap::Options<'a> {
    textwrap::Options::new(width).word_splitter(textwrap::WordSplitter::NoHyphenation)
}

/// A duration in seconds as `42s`, `3m05s`, `2h10m`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_time_drops_the_fraction_and_zone() {
        assert_eq!(
            short_time("2025-03-01T10:00:01.123Z"),
            "2025-03-01 10:00:01"
        );
        assert_eq!(short_time("garbage"), "garbage");
        assert_eq!(short_time("2025-01-31T12:34:56"), "2025-01-31T12:34:56");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        let title =
            "\u{1b}[2J\u{1b}]0;pwned\u{7}bell\u{c}feed\rback\u{7f}\u{9b}31m\u{202e}txt\tend";
        let line = printable_line(title);
        assert_eq!(
            line,
            "␛[2J␛]0;pwned␇bell␌feed␍back␡\\u{9b}31m\\u{202e}txt end"
        );
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert_eq!(printable_line("two\nlines"), "two␊lines");
        assert_eq!(
            printable_block("a reply\r\n\twith a tab\n\u{1b}[31mred"),
            "a reply\n\twith a tab\n␛[31mred"
        );
        assert_eq!(printable_block("日本語 é 🎉"), "日本語 é 🎉");
    }

    #[test]
    fn ellipsis_cuts_on_characters() {
        assert_eq!(ellipsis("héllo\nworld", 5), "héllo…");
        assert_eq!(ellipsis("short", 10), "short");
        assert_eq!(duration(65), "1m05s");
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(0, "token"), "0 tokens");
        assert_eq!(count(1, "token"), "1 token");
        assert_eq!(count(2, "message"), "2 messages");
    }

    #[test]
    fn wrapping_breaks_between_words_only() {
        let text = "gemmactl chat — gemma3-270m (base). /help for commands, Ctrl-C stops a reply, Ctrl-D leaves.";
        let wrapped = wrap(text, Some(40));
        assert!(
            wrapped.lines().all(|l| l.chars().count() <= 40),
            "{wrapped}"
        );
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>(),
            text.split_whitespace().collect::<Vec<_>>()
        );
        assert_eq!(wrap(text, None), text);
    }

    #[test]
    fn definitions_sit_beside_their_terms_or_under_them_when_narrow() {
        let items = [
            ("/a", "the first command, described in enough words to wrap"),
            ("/bee NAME", "the second"),
        ];
        assert_eq!(
            definitions(&items, None),
            "  /a         the first command, described in enough words to wrap\n  /bee NAME  the second\n"
        );
        let wide = definitions(&items, Some(50));
        assert_eq!(
            wide,
            "  /a         the first command, described in\n             enough words to wrap\n  /bee NAME  the second\n"
        );
        let narrow = definitions(&items, Some(30));
        assert_eq!(
            narrow,
            "  /a\n      the first command,\n      described in enough\n      words to wrap\n  /bee NAME\n      the second\n"
        );
    }
}

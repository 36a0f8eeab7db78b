//! Small text helpers for terminal output.

/// The first `max` characters of `text` on one line, with `…` when cut.
pub fn ellipsis(text: &str, max: usize) -> String {
    let flat = text.replace('\n', " ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
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

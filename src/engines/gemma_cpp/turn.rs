//! Reading one turn of gemma.cpp's terminal output: the dots, the reply, the Timing lines.
//!
//! A turn's stdout is `.` per prompt token, then (unless the first sampled token ended the
//! sequence) `"\n\n"` and the reply, then `"\n\n> "`. Replies may themselves contain `"\n\n> "`,
//! so the end of a turn is decided elsewhere (the Generate line on stderr *and* this suffix, see
//! `process.rs`); here the reply is the regex `^(\.*)(\n\n)?(.*)\n\n> $`'s group 3 once the turn
//! is over. While it runs, text is released as soon as it cannot be part of that final suffix,
//! so the caller sees each token when the binary flushes it.

const END: &[u8] = b"\n\n> ";

/// Accumulates one turn's stdout and releases reply text as it becomes certain.
#[derive(Debug, Default)]
pub(super) struct TurnParser {
    buf: Vec<u8>,
    dots: Option<usize>,
    /// Reply bytes already released.
    released: usize,
}

impl TurnParser {
    pub(super) fn new() -> TurnParser {
        TurnParser::default()
    }

    /// Prompt tokens read so far (all dots until the first other byte).
    pub(super) fn dots(&self) -> usize {
        self.dots.unwrap_or(self.buf.len())
    }

    /// Adds bytes from stdout; returns reply text that can be shown now (possibly empty).
    pub(super) fn feed(&mut self, bytes: &[u8]) -> String {
        self.buf.extend_from_slice(bytes);
        if self.dots.is_none() {
            match self.buf.iter().position(|b| *b != b'.') {
                Some(n) => self.dots = Some(n),
                None => return String::new(),
            }
        }
        let rest = &self.buf[self.dots.unwrap_or(0)..];
        if rest.len() < 2 || !rest.starts_with(b"\n\n") {
            return String::new();
        }
        // Hold back whatever could still turn out to be the final "\n\n> " (or the start of it),
        // and never the separator itself: "\n\n> " right after the dots is an empty reply.
        let hold = (0..=END.len())
            .rev()
            .find(|k| rest.ends_with(&END[..*k]))
            .unwrap_or(0);
        let certain = rest.len().saturating_sub(hold + 2);
        if certain <= self.released {
            return String::new();
        }
        let reply = &rest[2..2 + certain];
        let (text, used) = complete_utf8(&reply[self.released..]);
        self.released += used;
        text
    }

    /// Whether stdout shows the end-of-turn suffix.
    pub(super) fn at_prompt(&self) -> bool {
        self.buf.ends_with(END)
    }

    /// The whole reply and the text not yet released, once the turn is over.
    pub(super) fn finish(&self) -> (String, String) {
        let rest = &self.buf[self.dots().min(self.buf.len())..];
        let body = rest.strip_suffix(END).unwrap_or(rest);
        let reply: &[u8] = if rest.len() >= 6 && rest.starts_with(b"\n\n") {
            &body[2..]
        } else {
            body
        };
        let tail = reply.get(self.released..).unwrap_or_default();
        (
            String::from_utf8_lossy(reply).into_owned(),
            String::from_utf8_lossy(tail).into_owned(),
        )
    }
}

/// The longest prefix that is whole UTF-8 (a character split between two reads waits for the
/// rest); invalid bytes are passed on as U+FFFD rather than holding the stream up.
fn complete_utf8(bytes: &[u8]) -> (String, usize) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), bytes.len()),
        Err(e) if e.error_len().is_none() => {
            let n = e.valid_up_to();
            (String::from_utf8_lossy(&bytes[..n]).into_owned(), n)
        }
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), bytes.len()),
    }
}

/// `[ Timing info ] Prefill: <ms> ms for <n> prompt tokens (<f> tokens / sec); Time to first token: <ms> ms`
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Prefill {
    pub ms: f64,
    pub tokens: u32,
    pub tokens_per_s: f64,
    pub ttft_ms: f64,
}

/// `[ Timing info ] Generate: <ms> ms for <n> tokens (<f> tokens / sec)`
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Generate {
    pub ms: f64,
    pub tokens: u32,
    pub tokens_per_s: f64,
}

pub(super) fn parse_prefill(line: &str) -> Option<Prefill> {
    let n = numbers(line.split_once("[ Timing info ] Prefill:")?.1);
    Some(Prefill {
        ms: *n.first()?,
        tokens: *n.get(1)? as u32,
        tokens_per_s: n.get(2).copied().unwrap_or(0.0),
        ttft_ms: n.get(3).copied().unwrap_or(0.0),
    })
}

pub(super) fn parse_generate(line: &str) -> Option<Generate> {
    let n = numbers(line.split_once("[ Timing info ] Generate:")?.1);
    Some(Generate {
        ms: *n.first()?,
        tokens: *n.get(1)? as u32,
        tokens_per_s: n.get(2).copied().unwrap_or(0.0),
    })
}

/// The numbers in a line, in order (integers or decimals, as gemma.cpp prints either).
fn numbers(text: &str) -> Vec<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
        .filter_map(|w| w.trim_matches('.').parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (usize, String, String) {
        let mut p = TurnParser::new();
        let mut streamed = String::new();
        for c in chunks {
            streamed.push_str(&p.feed(c));
        }
        assert!(p.at_prompt());
        let (reply, tail) = p.finish();
        streamed.push_str(&tail);
        (p.dots(), reply, streamed)
    }

    #[test]
    fn replies_follow_the_regex() {
        assert_eq!(
            run(&[b"..........", b"\n\nHi", b" there", b"\n\n> "]),
            (10, "Hi there".into(), "Hi there".into())
        );
        // The first sampled token ended the sequence: no middle blank line.
        assert_eq!(
            run(&[b"....", b"\n\n> "]),
            (4, String::new(), String::new())
        );
        // A reply that contains the marker and ends in blank lines.
        let (_, reply, streamed) = run(&[b"..", b"\n\nQuote:\n\n", b">", b" to be\n\n", b"\n\n> "]);
        assert_eq!(reply, "Quote:\n\n> to be\n\n");
        assert_eq!(streamed, reply);
        // Byte by byte, a multi-byte character split across reads.
        let all = "...\n\nnaïve > ok\n\n> ".as_bytes();
        let chunks: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(run(&chunks).1, "naïve > ok");
    }

    #[test]
    fn text_is_released_before_the_turn_ends() {
        let mut p = TurnParser::new();
        assert_eq!(p.feed(b"...."), "");
        assert_eq!(p.feed(b"\n\n"), "");
        assert_eq!(p.feed(b"Hello"), "Hello");
        assert_eq!(p.feed(b"\n"), "");
        assert_eq!(p.feed(b"\n"), "");
        assert_eq!(p.feed(b">"), "");
        assert_eq!(p.feed(b" quoted"), "\n\n> quoted");
    }

    #[test]
    fn timing_lines_parse() {
        let p = parse_prefill("[ Timing info ] Prefill: 123 ms for 10 prompt tokens (81.30 tokens / sec); Time to first token: 140 ms").unwrap();
        assert_eq!(
            p,
            Prefill {
                ms: 123.0,
                tokens: 10,
                tokens_per_s: 81.3,
                ttft_ms: 140.0
            }
        );
        let g = parse_generate(
            "[ Timing info ] Generate: 2000.5 ms for 50 tokens (24.99 tokens / sec)",
        )
        .unwrap();
        assert_eq!(
            g,
            Generate {
                ms: 2000.5,
                tokens: 50,
                tokens_per_s: 24.99
            }
        );
        assert_eq!(parse_generate("[ Reading prompt ] "), None);
    }
}

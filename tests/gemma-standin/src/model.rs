//! The stand-in's "model": a SentencePiece-like tokenizer, a KV cache indexed modulo `seq_len`
//! like gemma.cpp's, and replies chosen by magic words so tests can provoke every awkward case.
//!
//! Tokens: the chat markers `<start_of_turn>` and `<end_of_turn>` are one token each (as they are
//! user-defined pieces in Gemma's tokenizer); otherwise a token is an optional single space
//! followed by a run of letters and digits, or any other single character. With BOS and the
//! template this gives the counts the facts file quotes: `Hello` is 10 prompt tokens, the
//! three-turn replay of it 25.
//!
//! Magic words, looked for in the newest user turn of the prompt only (so a replayed history does
//! not trigger them again):
//! - `EMPTY`: the first sampled token is end-of-sequence (empty reply);
//! - `BLANKS`: a reply that contains "\n\n> " and ends in blank lines;
//! - `ECHO`: the reply quotes the prompt exactly as received (Rust `{:?}` form);
//! - `CONTEXT`: the reply lists the user turns still in the KV cache, its token count and how
//!   many cache cells were overwritten by wrapping around `seq_len`;
//! - `COUNT n`: the reply `1 2 … n`;
//! - `SLOW`: 40 tokens, 50 ms apart (env `GEMMA_STANDIN_TOKEN_MS` changes the pause);
//! - `IMAGE`: the reply reports the `--image_file` the process holds (`image.rs`);
//! - `STANDIN_SIGILL`, `STANDIN_SIGKILL`, `STANDIN_ABORT`: die that way after reading the prompt.
//!
//! Any other prompt gets `Turn T: I read N prompt tokens at position P.`, whose first token
//! carries leading whitespace that the binary strips.

pub const BOS: &str = "<bos>";
pub const SOT: &str = "<start_of_turn>";
pub const EOT: &str = "<end_of_turn>";
pub const SOI: &str = "<start_of_image>";
pub const EOI: &str = "<end_of_image>";

pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(marker) = [SOT, EOT].into_iter().find(|m| rest.starts_with(m)) {
            out.push(marker.to_string());
            rest = &rest[marker.len()..];
            continue;
        }
        let word = |c: char| c.is_alphanumeric() || !c.is_ascii();
        let mut chars = rest.char_indices();
        let (_, first) = chars.next().unwrap_or((0, ' '));
        let mut end = first.len_utf8();
        let starts_word = if first == ' ' {
            rest[1..].chars().next().is_some_and(word)
        } else {
            word(first)
        };
        if starts_word {
            for (i, c) in rest.char_indices().skip(1) {
                if !word(c) {
                    break;
                }
                end = i + c.len_utf8();
            }
        }
        out.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    out
}

/// gemma.cpp's chat wrapping of one user turn at position `pos`.
pub fn wrap(prompt: &str, pos: usize, wrapping: bool) -> Vec<String> {
    let mut tokens = Vec::new();
    if pos == 0 {
        tokens.push(BOS.to_string());
    }
    if wrapping {
        let mut text = String::new();
        if pos > 0 {
            text.push_str(EOT);
            text.push('\n');
        }
        text.push_str(SOT);
        text.push_str("user\n");
        text.push_str(prompt);
        text.push_str(EOT);
        text.push('\n');
        text.push_str(SOT);
        text.push_str("model\n");
        tokens.extend(tokenize(&text));
    } else {
        tokens.extend(tokenize(prompt));
    }
    tokens
}

/// The KV cache: one cell per position, indexed modulo `seq_len`.
pub struct Cache {
    cells: Vec<Option<String>>,
    pub pos: usize,
    /// Cells whose older token was overwritten because positions wrapped around.
    pub overwritten: usize,
}

impl Cache {
    pub fn new(seq_len: usize) -> Cache {
        Cache {
            cells: vec![None; seq_len.max(1)],
            pos: 0,
            overwritten: 0,
        }
    }

    pub fn reset(&mut self) {
        self.cells.iter_mut().for_each(|c| *c = None);
        self.pos = 0;
        self.overwritten = 0;
    }

    pub fn push(&mut self, token: &str) {
        let len = self.cells.len();
        let cell = &mut self.cells[self.pos % len];
        if cell.is_some() && self.pos >= len {
            self.overwritten += 1;
        }
        *cell = Some(token.to_string());
        self.pos += 1;
    }

    /// The text of the surviving cells, oldest first (BOS left out).
    pub fn text(&self) -> String {
        let len = self.cells.len();
        let start = self.pos.saturating_sub(len);
        (start..self.pos)
            .filter_map(|p| self.cells[p % len].as_deref())
            .filter(|t| *t != BOS)
            .collect()
    }
}

/// What to answer, and how.
pub struct Reply {
    /// Token texts; empty means the first sampled token is end-of-sequence.
    pub tokens: Vec<String>,
    pub pause_ms: u64,
    pub fault: Option<&'static str>,
}

/// The newest user turn of a prompt: the only place magic words are looked for.
pub fn newest(prompt: &str) -> &str {
    prompt
        .rsplit(&format!("{SOT}user\n"))
        .next()
        .unwrap_or(prompt)
}

pub fn reply(prompt: &str, dots: usize, cache: &Cache) -> Reply {
    let newest = newest(prompt);
    let has = |w: &str| newest.contains(w);
    let mut pause_ms = 0;
    let mut fault = None;
    let text = if has("STANDIN_SIGILL") {
        fault = Some("sigill");
        String::new()
    } else if has("STANDIN_SIGKILL") {
        fault = Some("sigkill");
        String::new()
    } else if has("STANDIN_ABORT") {
        fault = Some("abort");
        String::new()
    } else if has("EMPTY") {
        String::new()
    } else if has("BLANKS") {
        "Quote:\n\n> to be or not\n\n".to_string()
    } else if has("ECHO") {
        format!("echo: {prompt:?}")
    } else if has("CONTEXT") {
        let text = cache.text();
        let turns: Vec<&str> = text
            .split(&format!("{SOT}user\n"))
            .skip(1)
            .map(|t| t.split(EOT).next().unwrap_or(""))
            .collect();
        format!(
            "context: {} tokens, {} user turns, overwritten {}: {turns:?}",
            cache.pos,
            turns.len(),
            cache.overwritten
        )
    } else if let Some(n) = newest
        .split("COUNT ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
    {
        (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
    } else if has("SLOW") {
        pause_ms = std::env::var("GEMMA_STANDIN_TOKEN_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        (1..=40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        let turns = cache.text().matches(&format!("{SOT}user")).count();
        format!(
            "Turn {turns}: I read {dots} prompt tokens at position {}.",
            cache.pos
        )
    };
    say_with(&text, pause_ms, fault)
}

/// A reply saying `text`.
pub fn say(text: &str) -> Reply {
    say_with(text, 0, None)
}

fn say_with(text: &str, pause_ms: u64, fault: Option<&'static str>) -> Reply {
    let mut tokens = tokenize(text);
    // Real first tokens often carry whitespace, which the binary strips.
    if let Some(first) = tokens.first_mut() {
        if !first.starts_with(char::is_whitespace) && !text.starts_with("Quote") {
            first.insert_str(0, " \t");
        }
    }
    Reply {
        tokens,
        pause_ms,
        fault,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_match_the_facts_file() {
        assert_eq!(wrap("Hello", 0, true).len(), 10);
        let replay = "Hello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nHow are you";
        assert_eq!(wrap(replay, 0, true).len(), 25);
    }

    #[test]
    fn the_cache_wraps_modulo_seq_len() {
        let mut cache = Cache::new(4);
        for t in ["a", "b", "c", "d", "e", "f"] {
            cache.push(t);
        }
        assert_eq!(cache.overwritten, 2);
        assert_eq!(cache.text(), "cdef");
    }
}

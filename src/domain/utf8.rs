//! Text comes into gemmactl as bytes (stdin, a terminal, a file, an argument) and is UTF-8 only
//! when it says so. Where it is not, the user is told where, in one sentence: the line, the byte
//! offset, the offending byte and the text just before it, so the fault can be found and fixed
//! (usually a file or terminal in another encoding, such as Latin-1).

/// `bytes` as text, or the sentence saying where `what` (e.g. "the prompt on stdin") stops being
/// UTF-8 and what to do.
pub fn decode(bytes: Vec<u8>, what: &str) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        format!(
            "{what} is not valid UTF-8: {}; convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or set the terminal to UTF-8",
            position(bytes, at)
        )
    })
}

/// Where the first invalid byte is: `byte 3 (0xE9, after "Caf")`, with the line when there are
/// several.
pub fn position(bytes: &[u8], at: usize) -> String {
    let line_start = bytes[..at]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
    let offset = at - line_start;
    // The text just before the fault, up to 20 characters of it, on one line.
    let before = String::from_utf8_lossy(&bytes[line_start..at]);
    let tail: String = {
        let chars: Vec<char> = before.chars().collect();
        chars[chars.len().saturating_sub(20)..].iter().collect()
    };
    let byte = bytes
        .get(at)
        .map_or(String::new(), |b| format!("0x{b:02X}, "));
    let after = if tail.is_empty() {
        "at the start".to_string()
    } else {
        format!("after {tail:?}")
    };
    let where_ = if line > 1 || bytes[at..].contains(&b'\n') {
        format!("line {line}, byte {offset}")
    } else {
        format!("byte {offset}")
    };
    format!("{where_} ({byte}{after}) is not part of a UTF-8 character")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_passes() {
        assert_eq!(
            decode("Café ☕".as_bytes().to_vec(), "x").unwrap(),
            "Café ☕"
        );
    }

    #[test]
    fn the_sentence_says_where_and_what_to_do() {
        let err = decode(b"Caf\xE9\n".to_vec(), "the prompt on stdin").unwrap_err();
        assert!(
            err.starts_with("the prompt on stdin is not valid UTF-8"),
            "{err}"
        );
        assert!(
            err.contains("line 1, byte 3 (0xE9, after \"Caf\")"),
            "{err}"
        );
        assert!(err.contains("iconv"), "{err}");
        let err = decode(b"ok\nsecond line \xFF".to_vec(), "the file").unwrap_err();
        assert!(
            err.contains("line 2, byte 12 (0xFF, after \"second line \")"),
            "{err}"
        );
        let err = decode(b"\x80".to_vec(), "it").unwrap_err();
        assert!(err.contains("byte 0 (0x80, at the start)"), "{err}");
        // A character cut off at the end is named too.
        let err = decode("é".as_bytes()[..1].to_vec(), "it").unwrap_err();
        assert!(err.contains("byte 0 (0xC3"), "{err}");
    }
}

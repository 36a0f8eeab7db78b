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
}

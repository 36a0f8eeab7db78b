//! Stop strings for gemma.cpp, which has none: the reply is watched as it streams, text that might
//! be the start of a stop string is held back until it is clear, and the reply ends where a stop
//! string begins (the string itself is not part of it). gemma.cpp cannot be told to stop, so the
//! adapter then ends the process as it does for a cancel; the chat shell's transcript of a base
//! model (cut at the model's next `User:` line) depends on this.
//!
//! The reply counts as starting on a new line: gemma.cpp separates the prompt's progress dots from
//! the reply with a blank line, and a reply that itself opens with line breaks cannot be told apart
//! from that separator (`turn.rs`), so a model that answers a transcript with `User:` at once has
//! lost the line break before it. A stop string that begins with a line break therefore also
//! matches at the very start of the reply.

/// Watches streamed text for the first of some stop strings.
#[derive(Debug, Default)]
pub(super) struct StopFilter {
    stops: Vec<String>,
    /// Text received but not yet released.
    pending: String,
    hit: bool,
    /// `pending` begins with a line break that stands for the reply's start, not text.
    virtual_break: bool,
    /// Nothing has been fed yet.
    fresh: bool,
}

impl StopFilter {
    pub(super) fn new(stops: &[String]) -> StopFilter {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
            hit: false,
            virtual_break: false,
            fresh: true,
        }
    }

    /// Releases `pending[..end]`, less the line break that only stands for the reply's start.
    fn release(&mut self, end: usize) -> String {
        let mut shown: String = self.pending.drain(..end).collect();
        if self.virtual_break && end > 0 {
            shown.remove(0);
            self.virtual_break = false;
        }
        shown
    }

    /// Whether a stop string has been seen: the reply is over.
    pub(super) fn hit(&self) -> bool {
        self.hit
    }

    /// Takes streamed text; returns what can be shown now.
    pub(super) fn feed(&mut self, text: &str) -> String {
        if self.hit {
            return String::new();
        }
        if self.stops.is_empty() {
            return text.to_string();
        }
        if std::mem::take(&mut self.fresh) && self.stops.iter().any(|s| s.starts_with('\n')) {
            self.pending.push('\n');
            self.virtual_break = true;
        }
        self.pending.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            self.hit = true;
            let shown = self.release(at);
            self.pending.clear();
            return shown;
        }
        // Hold back the longest end of the text that a stop string starts with.
        let hold = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .rev()
                    .find(|k| s.is_char_boundary(*k) && self.pending.ends_with(&s[..*k]))
            })
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        self.release(cut)
    }

    /// The reply ended by itself: what was held back is text after all.
    pub(super) fn finish(&mut self) -> String {
        let all = self.pending.len();
        self.release(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut shown = String::new();
        for p in pieces {
            shown.push_str(&f.feed(p));
        }
        if !f.hit() {
            shown.push_str(&f.finish());
        }
        (shown, f.hit())
    }

    #[test]
    fn cuts_at_the_first_stop_string_across_pieces() {
        assert_eq!(
            run(
                &["\nUser:", "\nAssistant:"],
                &[" Paris.", "\n", "Us", "er: and"]
            ),
            (" Paris.".to_string(), true)
        );
        // A near miss is released once it is clear.
        assert_eq!(
            run(&["\nUser:"], &["a\nUs", "e it"]),
            ("a\nUse it".to_string(), false)
        );
        // Held text at the very end is released.
        assert_eq!(run(&["\nUser:"], &["ok\nU"]), ("ok\nU".to_string(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".to_string(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "!x"]), ("caf".to_string(), true));
    }

    #[test]
    fn a_reply_that_opens_with_a_stop_string_is_cut_there() {
        // The line break before `User:` was taken for gemma.cpp's separator.
        assert_eq!(
            run(&["\nUser:", "\nAssistant:"], &["User", ": Tell me"]),
            (String::new(), true)
        );
        assert_eq!(
            run(&["\nAssistant:"], &["Assistant:"]),
            (String::new(), true)
        );
        // Otherwise the start of the reply is text as it came, a leading break included.
        assert_eq!(
            run(&["\nUser:"], &["Us", "ed"]),
            ("Used".to_string(), false)
        );
        assert_eq!(
            run(&["\nUser:"], &["\nHi", "\nUser:"]),
            ("\nHi".to_string(), true)
        );
        assert_eq!(run(&["\nUser:"], &["U"]), ("U".to_string(), false));
        assert_eq!(run(&["END"], &["ENDx"]), (String::new(), true));
    }

    #[test]
    fn nothing_is_released_before_it_is_clear() {
        let mut f = StopFilter::new(&["\nUser:".to_string()]);
        assert_eq!(f.feed("Hi\nUse"), "Hi");
        assert_eq!(f.feed("r"), "");
        assert_eq!(f.feed(":"), "");
        assert!(f.hit());
    }
}

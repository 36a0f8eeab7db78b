//! Turns a request's stream of token bytes into text events.
//!
//! Two things make this more than `String::from_utf8`: a token may end in the middle of a UTF-8
//! character (the rest comes with the next token), and text that might be the start of a stop
//! string must be held back until it is known not to be one, so a stop string never leaks.

pub(crate) struct TextStream {
    pending_bytes: Vec<u8>,
    held: String,
    stop: Vec<String>,
}

pub(crate) enum Step {
    /// Text that can be sent now (may be empty).
    Emit(String),
    /// A stop string was found: send this text, then finish with `stop`.
    Stopped(String),
}

impl TextStream {
    pub(crate) fn new(stop: Vec<String>) -> TextStream {
        TextStream {
            pending_bytes: Vec::new(),
            held: String::new(),
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Step {
        self.pending_bytes.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending_bytes) {
            Ok(s) => s.len(),
            // An invalid sequence (not just an unfinished one) is replaced rather than kept forever.
            Err(e) if e.error_len().is_some() => {
                let lossy = String::from_utf8_lossy(&self.pending_bytes).into_owned();
                self.pending_bytes.clear();
                self.held.push_str(&lossy);
                return self.release();
            }
            Err(e) => e.valid_up_to(),
        };
        let valid_bytes: Vec<u8> = self.pending_bytes.drain(..valid).collect();
        // `valid` bytes were just checked to be UTF-8, so the lossy path never replaces anything.
        let text = String::from_utf8_lossy(&valid_bytes).into_owned();
        self.held.push_str(&text);
        self.release()
    }

    /// What is left to send at the end of the reply. Text held back as the possible start of a
    /// stop string is dropped: the reply ended (token limit, end of sequence, cancel) in the
    /// middle of what was becoming a stop string, such as a base-model transcript's `\nUser`,
    /// which is never part of the reply. Only an unfinished UTF-8 character is released.
    pub(crate) fn finish(&mut self) -> String {
        self.held.clear();
        String::from_utf8_lossy(&std::mem::take(&mut self.pending_bytes)).into_owned()
    }

    fn release(&mut self) -> Step {
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
            self.held.clear();
            return Step::Stopped(out);
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let mut keep_from = self.held.len();
        for stop in &self.stop {
            for (i, _) in self.held.char_indices() {
                if i < keep_from && stop.starts_with(&self.held[i..]) {
                    keep_from = i;
                    break;
                }
            }
        }
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        Step::Emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(step: Step) -> String {
        match step {
            Step::Emit(s) => s,
            Step::Stopped(s) => panic!("unexpected stop after {s:?}"),
        }
    }

    #[test]
    fn split_utf8_character_waits_for_its_rest() {
        let mut t = TextStream::new(vec![]);
        let e = "é".as_bytes();
        assert_eq!(emitted(t.push(&e[..1])), "");
        assert_eq!(emitted(t.push(&e[1..])), "é");
    }

    #[test]
    fn stop_string_is_never_emitted() {
        let mut t = TextStream::new(vec!["\nUser:".into()]);
        assert_eq!(emitted(t.push(b"Hello")), "Hello");
        assert_eq!(emitted(t.push(b" there\nUs")), " there");
        match t.push(b"er: hi") {
            Step::Stopped(s) => assert_eq!(s, ""),
            Step::Emit(s) => panic!("stop missed, emitted {s:?}"),
        }
    }

    #[test]
    fn held_text_is_released_when_it_is_not_a_stop() {
        let mut t = TextStream::new(vec!["END".into()]);
        assert_eq!(emitted(t.push(b"the E")), "the ");
        assert_eq!(emitted(t.push(b"Nx, E")), "ENx, ");
    }

    #[test]
    fn finish_drops_a_partial_stop_string() {
        let mut t = TextStream::new(vec!["END".into()]);
        assert_eq!(emitted(t.push(b"abc EN")), "abc ");
        assert_eq!(t.finish(), "");
        // A transcript reply cut by the token limit inside the next speaker's marker.
        let mut t = TextStream::new(vec!["\nUser:".into(), "\nAssistant:".into()]);
        assert_eq!(emitted(t.push(b"Paris.")), "Paris.");
        assert_eq!(emitted(t.push(b"\nUser")), "");
        assert_eq!(t.finish(), "");
        // With no stop strings nothing is held, and an unfinished character is still released.
        let mut t = TextStream::new(vec![]);
        assert_eq!(emitted(t.push(b"ok \xc3")), "ok ");
        assert_eq!(t.finish(), "\u{fffd}");
    }

    #[test]
    fn invalid_bytes_are_replaced_not_stuck() {
        let mut t = TextStream::new(vec![]);
        assert_eq!(emitted(t.push(&[0xff, b'a'])), "\u{fffd}a");
    }
}

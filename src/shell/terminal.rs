//! The terminal between two prompts: keys typed while a reply streams are kept for the next
//! prompt, not echoed into the reply.
//!
//! rustyline owns the terminal while it reads a line and then gives it back in the mode it found
//! it in. In the terminal's ordinary (cooked) mode the kernel echoes every key as it arrives —
//! right into the middle of a streaming reply. The shell therefore keeps the terminal in a
//! *quiet* mode for its whole life, rustyline's raw mode aside: no echo, no line editing by the
//! kernel, so keys typed between two prompts (Enter, Backspace, arrows, a bracketed paste) wait
//! unprocessed and unseen until the next prompt, where rustyline reads them as if they were typed
//! there — the type-ahead of a Unix shell. Being quiet before rustyline starts leaves no moment
//! in cooked mode at all. Ctrl-C still reaches the shell as a signal (it stops the reply) and,
//! with `NOFLSH`, keeps both what was typed ahead and the reply text on its way to the screen.
//! Nothing changes when stdin is not a terminal or the terminal is one rustyline does not edit
//! on (`TERM=dumb`): there it reads plain lines in cooked mode.

use std::io::{IsTerminal, Write};

use nix::sys::termios::{
    tcgetattr, tcsetattr, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices, Termios,
};

/// Asks the terminal to mark pastes (`ESC [200~ … ESC [201~`), so one typed ahead during a reply
/// is still known for a paste at the next prompt.
const BRACKETED_PASTE_ON: &[u8] = b"\x1b[?2004h";
const BRACKETED_PASTE_OFF: &[u8] = b"\x1b[?2004l";

/// The shell's terminal modes: the one it started in and the quiet one between prompts.
pub(super) struct Terminal {
    /// The mode the shell started in; `None` when stdin is not a terminal.
    original: Option<Termios>,
    quiet: bool,
}

impl Terminal {
    /// Remembers the terminal's mode as it is now; `term` is its type (`TERM`).
    pub(super) fn new(term: Option<&str>) -> Terminal {
        // rustyline's own list of terminals it reads plain lines on.
        let edits = !matches!(term, Some("dumb" | "cons25" | "emacs"));
        Terminal {
            original: tcgetattr(std::io::stdin()).ok().filter(|_| edits),
            quiet: false,
        }
    }

    /// From now until [`Terminal::restore`], typed keys are neither echoed nor lost. Called
    /// before each prompt (rustyline gives the quiet mode back when it returns) and after it
    /// (rustyline also stops the terminal marking pastes).
    pub(super) fn quiet(&mut self) {
        let Some(original) = &self.original else {
            return;
        };
        if self.quiet {
            bracketed_paste(BRACKETED_PASTE_ON);
            return;
        }
        let mut mode = original.clone();
        mode.local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ICANON);
        mode.local_flags.insert(LocalFlags::NOFLSH);
        // Enter stays `\r`, as rustyline expects it from a key.
        mode.input_flags
            .remove(InputFlags::ICRNL | InputFlags::INLCR | InputFlags::IGNCR);
        mode.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        mode.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        if tcsetattr(std::io::stdin(), SetArg::TCSANOW, &mode).is_ok() {
            self.quiet = true;
            bracketed_paste(BRACKETED_PASTE_ON);
        }
    }

    /// Back to the mode the shell started in (for an editor, or leaving). Keys typed meanwhile
    /// stay queued for whoever reads next.
    pub(super) fn restore(&mut self) {
        if !self.quiet {
            return;
        }
        if let Some(original) = &self.original {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, original);
        }
        bracketed_paste(BRACKETED_PASTE_OFF);
        self.quiet = false;
    }

    /// The mode the shell started in, for a last restore from elsewhere (leaving on a signal).
    pub(super) fn original(&self) -> Option<Termios> {
        self.original.clone()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Puts the terminal back in `mode` and stops marking pastes: the last thing before exiting.
pub(super) fn reset(mode: &Termios) {
    let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, mode);
    bracketed_paste(BRACKETED_PASTE_OFF);
}

fn bracketed_paste(sequence: &[u8]) {
    let mut out = std::io::stdout();
    if !out.is_terminal() {
        return;
    }
    let _ = out.write_all(sequence);
    let _ = out.flush();
}

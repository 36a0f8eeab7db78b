//! `say!`: a line of results on stdout.

/// Prints a line of results on stdout. A reader that went away (`| head`) ends the output
/// quietly; other write errors return from the calling function with the error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(anyhow::Error::new(e).context("cannot write to stdout"));
            }
        }
    }};
}

pub(crate) use say;

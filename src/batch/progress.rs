//! Progress on stderr: an indicatif bar on a terminal (lines done of all, failures, generated
//! tokens per second, time left), otherwise a line every few seconds; and the final summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a progress line is written when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// Failures told one by one on stderr; beyond that only counted (the output has them all).
const ERRORS_SHOWN: usize = 20;

/// The counts of one run.
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    pub(super) succeeded: usize,
    pub(super) failed: usize,
    pub(super) cancelled: usize,
    pub(super) prompt_tokens: u64,
    pub(super) generated_tokens: u64,
    /// Lines refused before they ran: they took no time, so they do not count for the ETA.
    refused: usize,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Progress over `total` lines to run.
    pub(super) fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "[{bar:30}] {pos}/{len} lines · {msg} · {elapsed} (ETA {eta})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        let progress = Progress {
            bar,
            total,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            prompt_tokens: 0,
            generated_tokens: 0,
            refused: 0,
            started: now,
            last_line: now,
        };
        progress.update_bar();
        progress
    }

    /// Counts an answer.
    pub(super) fn answered(&mut self, prompt_tokens: u32, generated_tokens: u32) {
        self.succeeded += 1;
        self.prompt_tokens += u64::from(prompt_tokens);
        self.generated_tokens += u64::from(generated_tokens);
        self.update_bar();
    }

    /// Counts a failure and tells it (the first few); `ran` is false for a line refused before
    /// it reached an engine.
    pub(super) fn failed(&mut self, message: &str, ran: bool) {
        self.failed += 1;
        if !ran {
            self.refused += 1;
        }
        if self.failed <= ERRORS_SHOWN {
            self.note(message);
        } else if self.failed == ERRORS_SHOWN + 1 {
            self.note("(further failures are only counted: the output has each of them)");
        }
        self.update_bar();
    }

    /// Counts a line stopped before its end.
    pub(super) fn cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// A line on stderr that does not tear the bar.
    pub(super) fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Runs `f` (which writes to stdout) with the bar out of the way.
    pub(super) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Called often: without a terminal, writes a progress line every [`LINE_EVERY`].
    pub(super) fn tick(&mut self) {
        if self.bar.is_some() || self.last_line.elapsed() < LINE_EVERY {
            return;
        }
        self.last_line = Instant::now();
        let done = self.succeeded + self.failed;
        let left = match done - self.refused {
            0 => String::new(),
            ran => {
                let per_line = self.started.elapsed().as_secs_f64() / ran as f64;
                let secs = per_line * self.total.saturating_sub(done) as f64;
                format!(", about {} left", seconds(secs))
            }
        };
        eprintln!(
            "batch: {done}/{} lines, {} failed, {:.1} tokens/s{left}",
            self.total,
            self.failed,
            self.tokens_per_second()
        );
    }

    /// Removes the bar.
    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Generated tokens per second of wall time so far.
    pub(super) fn tokens_per_second(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.generated_tokens as f64 / secs
        } else {
            0.0
        }
    }

    /// The final summary: lines, succeeded, failed, skipped, tokens, wall time, tokens/s.
    pub(super) fn summary(&self, lines: usize, skipped: usize) -> String {
        format!(
            "{lines} lines: {} succeeded, {} failed, {skipped} skipped (done before); {} prompt + {} generated tokens in {}, {:.1} generated tokens/s",
            self.succeeded,
            self.failed,
            self.prompt_tokens,
            self.generated_tokens,
            seconds(self.started.elapsed().as_secs_f64()),
            self.tokens_per_second()
        )
    }

    fn update_bar(&self) {
        if let Some(bar) = &self.bar {
            bar.set_position((self.succeeded + self.failed) as u64);
            bar.set_message(format!(
                "{} failed · {:.1} tokens/s",
                self.failed,
                self.tokens_per_second()
            ));
        }
    }
}

/// `75.3` → `1m15s`, `4.2` → `4.2 s`.
fn seconds(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let s = secs.round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

//! One running `gemma` process and the terminal protocol spoken with it: spawning it with its
//! flags, waiting for the prompt marker, typing a prompt, and reading the turn back.
//!
//! stdout and stderr are read by two tasks into one channel, so a turn can wait for both halves
//! of the end-of-turn rule: stderr has shown one more `[ Timing info ] Generate:` line than before
//! the prompt was sent, and stdout ends with `"\n\n> "`. The binary writes the Generate line before
//! the final marker and then blocks on stdin, so model text containing `"\n\n> "` cannot end a turn
//! early. A third task reaps the process and records how it ended.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::{mpsc, watch};

use super::super::child::{self, ChildProcess, ExitInfo};
use super::super::EngineError;
use super::turn::{self, Generate, Prefill, TurnParser};

/// Lines of stderr kept for error reports.
const TAIL_LINES: usize = 20;
/// Longest stderr line kept (gemma.cpp's are short; a runaway one is cut).
const TAIL_LINE_CHARS: usize = 2000;

/// The flags that decide sampling; changing one means restarting the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Sampling {
    pub max_generated_tokens: u32,
    pub temperature: f32,
    pub top_k: u32,
}

/// Everything on the command line.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    pub binary: PathBuf,
    pub weights: PathBuf,
    pub tokenizer: Option<PathBuf>,
    /// `Some(false)` passes `--wrapping 0` (pre-2025 base models).
    pub wrapping: Option<bool>,
    pub seq_len: u32,
    pub threads: Option<u32>,
    pub spin: Option<i8>,
    pub sampling: Sampling,
    pub sentinel: String,
    /// `--image_file`: the PPM the model sees (gemma.cpp reads it once, at start).
    pub image_file: Option<PathBuf>,
}

impl Launch {
    pub(super) fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["--weights".into(), self.weights.display().to_string()];
        if let Some(t) = &self.tokenizer {
            args.extend(["--tokenizer".into(), t.display().to_string()]);
        }
        if self.wrapping == Some(false) {
            args.extend(["--wrapping".into(), "0".into()]);
        }
        let s = &self.sampling;
        for (name, value) in [
            ("verbosity", "1".to_string()),
            ("multiturn", "1".to_string()),
            ("seq_len", self.seq_len.to_string()),
            ("max_generated_tokens", s.max_generated_tokens.to_string()),
            ("temperature", s.temperature.to_string()),
            ("top_k", s.top_k.to_string()),
            ("eot_line", self.sentinel.clone()),
        ] {
            args.push(format!("--{name}"));
            args.push(value);
        }
        if let Some(n) = self.threads {
            args.extend(["--num_threads".into(), n.to_string()]);
        }
        if let Some(spin) = self.spin {
            args.extend(["--spin".into(), spin.to_string()]);
        }
        if let Some(image) = &self.image_file {
            args.extend(["--image_file".into(), image.display().to_string()]);
        }
        args
    }
}

/// The last lines of stderr, shared with the reader task.
#[derive(Clone, Default)]
pub(super) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if buf.len() == TAIL_LINES {
            buf.pop_front();
        }
        buf.push_back(line);
    }

    pub(super) fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| !l.trim().is_empty())
            .cloned()
            .collect()
    }
}

enum Output {
    Stdout(Vec<u8>),
    Stderr(String),
    StdoutClosed,
}

/// How a turn ended.
pub(super) enum TurnEnd {
    Done {
        dots: u32,
        reply: String,
        prefill: Option<Prefill>,
        generate: Generate,
    },
    /// Asked to stop; the process is still in the middle of the turn.
    Stopped(Partial),
    /// The process died (its exit and stderr are on the [`Process`]).
    Died,
}

/// What a stopped turn got as far as: gemma.cpp prints its Generate line only at the end, so a
/// stopped reply's speed is measured here, from when its text arrived.
#[derive(Debug, Clone, Copy)]
pub(super) struct Partial {
    pub dots: u32,
    /// The Prefill line, printed with the first token.
    pub prefill: Option<Prefill>,
    /// Reply text deliveries (gemma.cpp flushes each token, so one per token as a rule).
    pub pieces: u32,
    /// When the prompt was sent, and when the first and the latest reply text arrived.
    pub sent: Instant,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// Why the process did not become ready.
pub(super) enum NotReady {
    Exited(ExitInfo),
    Timeout,
}

pub(super) struct Process {
    /// The running child, owned: it is signalled only through this handle.
    pub child: ChildProcess,
    pub launch: Launch,
    stdin: Option<ChildStdin>,
    output: mpsc::UnboundedReceiver<Output>,
    pub tail: Tail,
    generate_lines: u64,
    prefill: Option<Prefill>,
    generate: Option<Generate>,
    /// The model specifier from the configuration's `Model` line.
    pub model_line: Option<String>,
}

impl Process {
    pub(super) fn spawn(launch: Launch) -> Result<Process, EngineError> {
        let mut cmd = Command::new(&launch.binary);
        cmd.args(launch.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = child::spawn(&mut cmd).map_err(|e| EngineError::Spawn {
            binary: launch.binary.clone(),
            reason: e.to_string(),
        })?;
        let pid = proc.id();
        let (Some(stdin), Some(mut stdout), Some(stderr)) =
            (proc.stdin.take(), proc.stdout.take(), proc.stderr.take())
        else {
            return Err(EngineError::Spawn {
                binary: launch.binary.clone(),
                reason: "its standard streams could not be connected".into(),
            });
        };
        tracing::info!(?pid, weights = %launch.weights.display(), "gemma.cpp starting");
        let (tx, output) = mpsc::unbounded_channel();
        let out_tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out_tx.send(Output::Stdout(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = out_tx.send(Output::StdoutClosed);
        });
        let tail = Tail::default();
        let kept = tail.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text: String = String::from_utf8_lossy(&line)
                            .trim_end_matches(['\n', '\r'])
                            .chars()
                            .take(TAIL_LINE_CHARS)
                            .collect();
                        tracing::debug!(target: "engine_stderr", engine = "gemma.cpp", ?pid, "{text}");
                        kept.push(text.clone());
                        // The driver may be gone (engine dropped); the tail is still kept.
                        let _ = tx.send(Output::Stderr(text));
                    }
                }
            }
        });
        let child = ChildProcess::watch(proc, "gemma.cpp");
        Ok(Process {
            child,
            launch,
            stdin: Some(stdin),
            output,
            tail,
            generate_lines: 0,
            prefill: None,
            generate: None,
            model_line: None,
        })
    }

    /// Waits for the prompt marker that ends startup (and briefly for the `Model` line, which
    /// travels on the other pipe).
    pub(super) async fn wait_ready(&mut self, limit: Duration) -> Result<(), NotReady> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.output.recv()).await {
                Err(_) => return Err(NotReady::Timeout),
                Ok(None) | Ok(Some(Output::StdoutClosed)) => {
                    return Err(NotReady::Exited(self.wait_exit().await))
                }
                Ok(Some(Output::Stderr(line))) => self.note(&line),
                Ok(Some(Output::Stdout(bytes))) => {
                    last.extend_from_slice(&bytes);
                    let keep = last.len().saturating_sub(8);
                    last.drain(..keep);
                    if last.ends_with(b"\n> ") {
                        break;
                    }
                }
            }
        }
        let grace = tokio::time::Instant::now() + Duration::from_millis(500);
        while self.model_line.is_none() {
            match tokio::time::timeout_at(grace, self.output.recv()).await {
                Ok(Some(Output::Stderr(line))) => self.note(&line),
                Ok(Some(Output::Stdout(_))) => {}
                _ => break,
            }
        }
        Ok(())
    }

    fn note(&mut self, line: &str) {
        if let Some(g) = turn::parse_generate(line) {
            self.generate_lines += 1;
            self.generate = Some(g);
        } else if let Some(p) = turn::parse_prefill(line) {
            self.prefill = Some(p);
        } else if let Some(rest) = line.strip_prefix("Model") {
            // `Model : gemma3-270m-bf16-pt, to_bf16 -1, mmap -1 => Read`: the specifier.
            if let Some((_, value)) = rest.split_once(':') {
                let specifier = value.split(',').next().unwrap_or(value);
                self.model_line = Some(specifier.trim().to_string());
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        stdin.write_all(bytes).await.is_ok() && stdin.flush().await.is_ok()
    }

    /// Types `text` as one prompt and reads the turn, passing reply text to `on_text` as the
    /// binary flushes it. `stop` turning true, or `on_text` answering false, abandons the turn
    /// (the caller then kills the process: gemma.cpp cannot be interrupted otherwise).
    pub(super) async fn turn(
        &mut self,
        text: &str,
        stop: &mut watch::Receiver<bool>,
        mut on_text: impl FnMut(String) -> bool,
    ) -> TurnEnd {
        let before = self.generate_lines;
        self.prefill = None;
        let mut parser = TurnParser::new();
        if !self
            .write(payload(text, &self.launch.sentinel).as_bytes())
            .await
        {
            return TurnEnd::Died;
        }
        let mut partial = Partial {
            dots: 0,
            prefill: None,
            pieces: 0,
            sent: Instant::now(),
            first: None,
            last: None,
        };
        while !(self.generate_lines > before && parser.at_prompt()) {
            tokio::select! {
                out = self.output.recv() => match out {
                    Some(Output::Stdout(bytes)) => {
                        let text = parser.feed(&bytes);
                        if !text.is_empty() {
                            let now = Instant::now();
                            partial.first.get_or_insert(now);
                            partial.last = Some(now);
                            partial.pieces += 1;
                            if !on_text(text) {
                                partial.dots = parser.dots() as u32;
                                partial.prefill = self.prefill.take();
                                return TurnEnd::Stopped(partial);
                            }
                        }
                    }
                    Some(Output::Stderr(line)) => self.note(&line),
                    Some(Output::StdoutClosed) | None => return TurnEnd::Died,
                },
                _ = stopped(stop) => {
                    partial.dots = parser.dots() as u32;
                    partial.prefill = self.prefill.take();
                    return TurnEnd::Stopped(partial);
                }
            }
        }
        let dots = |p: &TurnParser| p.dots() as u32;
        let (reply, rest) = parser.finish();
        if !rest.is_empty() {
            // The turn is over: the answer no longer matters.
            let _ = on_text(rest);
        }
        TurnEnd::Done {
            dots: dots(&parser),
            reply,
            prefill: self.prefill.take(),
            generate: self.generate.unwrap_or_default(),
        }
    }

    /// `%c`: gemma.cpp forgets the conversation (position 0) and shows a new prompt marker.
    pub(super) async fn reset(&mut self, limit: Duration) -> bool {
        let command = format!("%c\n{}\n", self.launch.sentinel);
        if !self.write(command.as_bytes()).await {
            return false;
        }
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while seen.as_slice() != b"> " {
            match tokio::time::timeout_at(deadline, self.output.recv()).await {
                Ok(Some(Output::Stdout(bytes))) => seen.extend_from_slice(&bytes),
                Ok(Some(Output::Stderr(line))) => self.note(&line),
                _ => return false,
            }
            if seen.len() > 2 {
                tracing::warn!(
                    pid = ?self.child.pid(),
                    "unexpected output after %c: {:?}",
                    String::from_utf8_lossy(&seen)
                );
                return false;
            }
        }
        true
    }

    /// The exit, once reaped (bounded: a process that will not die is reported as unknown).
    pub(super) async fn wait_exit(&self) -> ExitInfo {
        self.child.wait_exit().await
    }

    /// Kills the process and waits until it is reaped.
    pub(super) async fn kill(&mut self) -> ExitInfo {
        self.child.kill_and_wait().await
    }

    /// Closes stdin (gemma.cpp exits 0 on EOF), then kills after `grace`.
    pub(super) async fn stop(&mut self, grace: Duration) {
        self.stdin = None;
        if !self.child.exited_within(grace).await {
            tracing::warn!(
                pid = ?self.child.pid(),
                "gemma.cpp did not exit within {grace:?} of stdin closing; killing it"
            );
            self.kill().await;
        }
    }
}

/// Resolves once `stop` is true; never if its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The bytes that make gemma.cpp read `text` as one prompt in `--eot_line` mode. A prompt
/// starting with `%` gets an empty first line, so `%q`/`%c` at its start are text, not commands
/// (the model then sees one leading newline); every line reaches the model with its `"\n"`.
pub(super) fn payload(text: &str, sentinel: &str) -> String {
    let mut out = String::with_capacity(text.len() + sentinel.len() + 3);
    if text.starts_with('%') {
        out.push('\n');
    }
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(sentinel);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_never_start_with_a_command() {
        assert_eq!(payload("%q please", "END"), "\n%q please\nEND\n");
        assert_eq!(payload("two\nlines", "END"), "two\nlines\nEND\n");
        assert_eq!(payload("done\n", "END"), "done\nEND\n");
        assert_eq!(payload("%c", "END"), "\n%c\nEND\n");
    }
}

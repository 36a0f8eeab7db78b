//! gemma-engine driven directly over its protocol (docs/engine-protocol.md), as the engine tests
//! drive it: commands on stdin, events read on a thread so that every wait is bounded.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous bound on any single wait: a hang fails the test instead of stalling CI.
pub(crate) const WAIT: Duration = Duration::from_secs(120);

/// A running gemma-engine; killed when dropped.
pub(crate) struct Engine {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
}

impl Engine {
    /// gemma-engine on `model` with `extra` arguments.
    pub(crate) fn start(model: &Path, extra: &[&str]) -> Engine {
        let mut args: Vec<&OsStr> = vec!["--model".as_ref(), model.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        Engine::with_args(&args)
    }

    /// gemma-engine with exactly these arguments. Every stdout line must be protocol JSON.
    pub(crate) fn with_args(args: &[&OsStr]) -> Engine {
        let mut child = Command::new(super::engine_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Not read: a pipe nobody drains would stop a talkative engine once it filled.
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gemma-engine");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not protocol JSON ({e}): {line:?}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Engine {
            child,
            stdin: Some(stdin),
            events,
        }
    }

    /// The engine's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn send(&mut self, command: Value) {
        self.send_raw(&command.to_string());
    }

    pub(crate) fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to engine");
        stdin.flush().unwrap();
    }

    pub(crate) fn next(&self) -> Value {
        self.events
            .recv_timeout(WAIT)
            .expect("the engine sent no event in time (hang?)")
    }

    /// Events up to and including the first one matching `last`.
    pub(crate) fn until(&self, mut last: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let event = self.next();
            let done = last(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// The `ready` event, after at least one `loading` event.
    pub(crate) fn ready(&self) -> Value {
        let events = self.until(|e| e["event"] != "loading");
        let ready = events.last().unwrap().clone();
        assert_eq!(ready["event"], "ready", "expected ready, got {ready}");
        assert!(events.len() > 1, "no loading progress before ready");
        ready
    }

    /// Collects one request's text and its final event (`done` or `error`). Prompt progress
    /// must come before the first token, grow, never pass its total, and reach it.
    pub(crate) fn reply(&self, id: &str) -> (String, Value) {
        let mut text = String::new();
        let mut progress: Option<(u64, u64)> = None;
        loop {
            let event = self.next();
            if event["id"] != id {
                continue;
            }
            match event["event"].as_str() {
                Some("progress") => {
                    assert!(text.is_empty(), "progress after the first token: {event}");
                    let (done, total) = (
                        event["done"].as_u64().unwrap(),
                        event["total"].as_u64().unwrap(),
                    );
                    assert!(done <= total, "{event}");
                    if let Some((before, _)) = progress {
                        assert!(done > before, "progress went back: {event}");
                    }
                    progress = Some((done, total));
                }
                Some("token") => {
                    if text.is_empty() {
                        if let Some((done, total)) = progress {
                            assert_eq!(
                                done, total,
                                "the first token came before the prompt was read"
                            );
                        }
                    }
                    text.push_str(event["text"].as_str().unwrap())
                }
                Some("done") | Some("error") => return (text, event),
                other => panic!("unexpected event {other:?}: {event}"),
            }
        }
    }

    /// Sends `command` and returns its reply, which must end in `done`.
    pub(crate) fn ask(&mut self, command: Value) -> (String, Value) {
        let id = command["id"].as_str().unwrap().to_string();
        self.send(command);
        let (text, done) = self.reply(&id);
        assert_eq!(done["event"], "done", "{done}");
        (text, done)
    }

    /// Closes stdin and waits for the engine to exit.
    pub(crate) fn wait_exit(mut self) -> ExitStatus {
        self.stdin = None;
        self.exit_status()
    }

    /// Waits for the process to end on its own (stdin left open) and returns its status.
    pub(crate) fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the engine did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

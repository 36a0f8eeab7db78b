//! The adapter for gemma-engine, the bundled engine: spawns the process, waits for its `ready`
//! event, and turns its JSON-lines protocol into [`ReplyStream`]s.
//!
//! Three tasks serve one process: a writer (commands to stdin), a reader (events from stdout,
//! routed to the request they belong to) and a waiter (reaps the process and records how it
//! ended). When stdout closes, every request still in flight ends with a `Died` error carrying the
//! exit status, signal and the last stderr lines — an engine crash is noticed at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tokio::sync::{mpsc, watch};

use super::child::{self, ExitInfo, StderrTail};
use super::protocol::{self, Event};
use super::{
    Completion, Engine, EngineDescription, EngineError, EngineName, GenerateRequest, ReplyEvent,
    ReplyStream,
};

/// How to launch one gemma-engine.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub binary: PathBuf,
    pub model_path: PathBuf,
    pub context: u32,
    pub parallel: u32,
    pub threads: Option<u32>,
    pub gpu_layers: Option<u32>,
    pub load_timeout: Duration,
}

type Inflight = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ReplyEvent>>>>;

pub struct GemmaEngine {
    description: EngineDescription,
    pid: u32,
    commands: mpsc::UnboundedSender<String>,
    inflight: Inflight,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl GemmaEngine {
    /// Starts the engine and waits for its `ready` event, reporting load progress (0..1).
    pub async fn start(
        spec: &LaunchSpec,
        mut on_progress: impl FnMut(f32) + Send,
    ) -> Result<GemmaEngine, EngineError> {
        let mut cmd = Command::new(&spec.binary);
        cmd.arg("--model")
            .arg(&spec.model_path)
            .args(["--context", &spec.context.to_string()])
            .args(["--parallel", &spec.parallel.to_string()]);
        if let Some(t) = spec.threads {
            cmd.args(["--threads", &t.to_string()]);
        }
        if let Some(n) = spec.gpu_layers {
            cmd.args(["--gpu-layers", &n.to_string()]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        child::isolate(&mut cmd);
        let mut proc = cmd.spawn().map_err(|e| EngineError::Spawn {
            binary: spec.binary.clone(),
            reason: e.to_string(),
        })?;
        let pid = proc.id().unwrap_or(0);
        tracing::info!(pid, model = %spec.model_path.display(), "engine starting");

        let stderr_tail = StderrTail::collect(
            proc.stderr.take().expect("piped"),
            format!("gemma-engine[{pid}]"),
        );
        let mut stdin = proc.stdin.take().expect("piped");
        let mut events = BufReader::new(proc.stdout.take().expect("piped")).lines();

        let exit_rx = child::watch_exit(proc, "gemma-engine");

        let died = |exit: ExitInfo, tail: &StderrTail| EngineError::Died {
            engine: EngineName::GemmaEngine,
            exit,
            stderr_tail: tail.lines(),
        };
        let model = spec.model_path.display().to_string();
        let waiting = async {
            loop {
                match next_event(&mut events).await {
                    Some(Ok(Event::Loading { progress })) => on_progress(progress),
                    Some(Ok(Event::Ready(ready))) => return Ok(ready),
                    Some(Ok(Event::Error(e))) => {
                        return Err(EngineError::Load {
                            code: e.code,
                            message: e.message,
                            path: e.path,
                        });
                    }
                    Some(Ok(other)) => {
                        return Err(EngineError::Protocol(format!(
                            "unexpected event before ready: {other:?}"
                        )))
                    }
                    Some(Err(e)) => return Err(e),
                    None => {
                        let exit = wait_exit(exit_rx.clone()).await;
                        return Err(died(exit, &stderr_tail));
                    }
                }
            }
        };
        let ready = match tokio::time::timeout(spec.load_timeout, waiting).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                child::signal(pid, libc::SIGKILL);
                return Err(e);
            }
            Err(_) => {
                child::signal(pid, libc::SIGKILL);
                return Err(EngineError::LoadTimeout {
                    model,
                    secs: spec.load_timeout.as_secs(),
                });
            }
        };
        if ready.protocol != protocol::PROTOCOL_VERSION {
            child::signal(pid, libc::SIGKILL);
            return Err(EngineError::Protocol(format!(
                "{} speaks protocol {} but gemmactl needs {}: rebuild both from the same checkout",
                spec.binary.display(),
                ready.protocol,
                protocol::PROTOCOL_VERSION
            )));
        }
        tracing::info!(pid, load_ms = ready.load_ms, "engine ready");

        let (commands, mut outgoing) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(mut line) = outgoing.recv().await {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes it: the engine's signal to finish and exit.
        });

        let inflight: Inflight = Arc::default();
        tokio::spawn(route_events(
            events,
            inflight.clone(),
            exit_rx.clone(),
            stderr_tail,
        ));

        let backend = ready
            .devices
            .iter()
            .find(|d| d.kind != "cpu")
            .filter(|_| ready.gpu_layers > 0)
            .map(|d| d.backend.clone())
            .unwrap_or_else(|| "CPU".to_string());
        Ok(GemmaEngine {
            description: EngineDescription {
                engine: EngineName::GemmaEngine,
                pid: Some(pid),
                model: ready.model,
                backend,
                devices: ready.devices,
                gpu_layers: ready.gpu_layers,
                context: ready.context,
                parallel: ready.parallel,
                threads: ready.threads,
                load_ms: ready.load_ms,
                fallback: None,
            },
            pid,
            commands,
            inflight,
            exit: exit_rx,
        })
    }

    fn send(&self, command: &protocol::Command) -> bool {
        let line = serde_json::to_string(command).expect("commands always serialize");
        self.commands.send(line).is_ok()
    }
}

/// Reads events after `ready` and hands each to the request it names.
async fn route_events(
    mut events: Lines<BufReader<ChildStdout>>,
    inflight: Inflight,
    exit: watch::Receiver<Option<ExitInfo>>,
    tail: StderrTail,
) {
    while let Some(event) = next_event(&mut events).await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let (id, reply, last) = match event {
            Event::Token { id, text } => (id, ReplyEvent::Token(text), false),
            Event::Done(done) => (
                done.id,
                ReplyEvent::Finished(Completion {
                    finish_reason: done.finish_reason,
                    usage: done.usage,
                    timings: done.timings,
                }),
                true,
            ),
            Event::Error(e) => match e.id {
                Some(id) => (
                    id,
                    ReplyEvent::Failed(EngineError::Request {
                        code: e.code,
                        message: e.message,
                    }),
                    true,
                ),
                None => {
                    tracing::warn!(code = ?e.code, "engine error: {}", e.message);
                    continue;
                }
            },
            other => {
                tracing::warn!("unexpected engine event after ready: {other:?}");
                continue;
            }
        };
        let mut map = inflight.lock().unwrap_or_else(|p| p.into_inner());
        let sender = if last {
            map.remove(&id)
        } else {
            map.get(&id).cloned()
        };
        if let Some(sender) = sender {
            let _ = sender.send(reply);
        }
    }
    // stdout closed: the process is gone or going. Everyone still waiting learns why.
    let exit = wait_exit(exit).await;
    let error = EngineError::Died {
        engine: EngineName::GemmaEngine,
        exit,
        stderr_tail: tail.lines(),
    };
    let waiting: Vec<_> = inflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    for (_, sender) in waiting {
        let _ = sender.send(ReplyEvent::Failed(error.clone()));
    }
}

async fn next_event(
    events: &mut Lines<BufReader<ChildStdout>>,
) -> Option<Result<Event, EngineError>> {
    match events.next_line().await {
        Ok(Some(line)) => {
            Some(serde_json::from_str(&line).map_err(|e| {
                EngineError::Protocol(format!("cannot read engine event {line:?}: {e}"))
            }))
        }
        Ok(None) | Err(_) => None,
    }
}

async fn exited_within(mut exit: watch::Receiver<Option<ExitInfo>>, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, exit.wait_for(Option::is_some)).await,
        Ok(Ok(_))
    )
}

/// The process's exit, once the waiter task has reaped it.
async fn wait_exit(mut exit: watch::Receiver<Option<ExitInfo>>) -> ExitInfo {
    if exited_within(exit.clone(), Duration::from_secs(10)).await {
        if let Some(info) = *exit.borrow_and_update() {
            return info;
        }
    }
    ExitInfo {
        code: None,
        signal: None,
    }
}

impl Engine for GemmaEngine {
    fn describe(&self) -> EngineDescription {
        self.description.clone()
    }

    fn generate(&self, request: GenerateRequest) -> Result<ReplyStream, EngineError> {
        if let Some(exit) = self.exit_status() {
            return Err(EngineError::Died {
                engine: EngineName::GemmaEngine,
                exit,
                stderr_tail: Vec::new(),
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // Registered before sending, so no event can arrive for an unknown id.
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.id.clone(), tx);
        let command = protocol::Command::Generate(protocol::GenerateCommand {
            id: request.id.clone(),
            messages: request.messages,
            session: request.session,
            prompt: request.prompt,
            params: request.params,
        });
        if !self.send(&command) {
            self.inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&request.id);
            return Err(EngineError::Stopped);
        }
        Ok(rx)
    }

    fn cancel(&self, id: &str) {
        self.send(&protocol::Command::Cancel { id: id.to_string() });
    }

    fn exit_status(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    fn stop(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if self.exit_status().is_some() {
                return;
            }
            tracing::info!(pid = self.pid, "engine stopping");
            self.send(&protocol::Command::Shutdown);
            if !exited_within(self.exit.clone(), grace).await {
                tracing::warn!(
                    pid = self.pid,
                    "engine did not stop within {:?}; killing it",
                    grace
                );
                child::signal(self.pid, libc::SIGKILL);
                exited_within(self.exit.clone(), Duration::from_secs(5)).await;
            }
        })
    }
}

impl Drop for GemmaEngine {
    fn drop(&mut self) {
        // Never leave an engine behind, whatever path dropped it.
        if self.exit_status().is_none() {
            child::signal(self.pid, libc::SIGKILL);
        }
    }
}

use std::future::Future;
use std::pin::Pin;

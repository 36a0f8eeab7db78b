//! A front end's side of attaching: sends turns to a running `gemmactl serve` of the same home
//! and turns its event lines back into the supervisor's events, so a [`Turn`](crate::chat::Turn)
//! cannot tell an attached reply from an in-process one.
//!
//! Cancelling a reply closes its connection: the server sees the client go and stops the engine
//! at its next decode step, exactly as for an HTTP client that disconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::record::ServerRecord;
use super::wire::{self, GenerateBody, LoadBody, WireEvent};
use crate::domain::{Completion, EngineDescription, ErrorCode, GenerateRequest};
use crate::models::ModelEntry;
use crate::supervisor::{EngineError, Reply, SupervisorError, SupervisorEvent};

/// How long attaching may take before the front end runs its own engines instead.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to a running server.
pub struct Attached {
    record: ServerRecord,
    client: reqwest::Client,
    next_request: AtomicU64,
    /// The engine that last served each model here (for `/show`).
    engines: Mutex<HashMap<String, EngineDescription>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Attached {
    /// Attaches to the server of `record`, after checking that it answers to the record's token.
    pub async fn connect(record: ServerRecord) -> Result<Attached, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(HELLO_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let hello = client
            .get(format!("{}{}", record.url, wire::HELLO_PATH))
            .bearer_auth(&record.token)
            .timeout(HELLO_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("the gemmactl server at {} does not answer: {e}", record.url))?;
        if !hello.status().is_success() {
            return Err(format!(
                "the gemmactl server at {} refused to attach (HTTP {})",
                record.url,
                hello.status().as_u16()
            ));
        }
        Ok(Attached {
            record,
            client,
            next_request: AtomicU64::new(1),
            engines: Mutex::default(),
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.record.url
    }

    /// A request id unique within this front end.
    pub fn new_request_id(&self) -> String {
        format!("a{}", self.next_request.fetch_add(1, Ordering::Relaxed))
    }

    /// The engine that last served `model_name` for this front end.
    pub fn engine_of(&self, model_name: &str) -> Option<EngineDescription> {
        lock(&self.engines).get(model_name).cloned()
    }

    /// Sends a request to the server; its events arrive on the returned reply.
    pub fn submit(self: &Arc<Self>, model: &ModelEntry, request: GenerateRequest) -> Reply {
        let (tx, mut cancel, reply) = Reply::relayed(request.id.clone());
        let this = self.clone();
        let body = GenerateBody::new(model, request);
        let name = model.name.clone();
        tokio::spawn(async move {
            let send = this
                .client
                .post(format!("{}{}", this.record.url, wire::GENERATE_PATH))
                .bearer_auth(&this.record.token)
                .json(&body)
                .send();
            let resp = tokio::select! {
                r = send => r,
                _ = cancel.wait_for(|c| *c) => {
                    let _ = tx.send(SupervisorEvent::Finished(Completion::cancelled_before_start()));
                    return;
                }
            };
            let resp = match checked(&this.record.url, resp).await {
                Ok(resp) => resp,
                Err(e) => {
                    let _ = tx.send(SupervisorEvent::Failed(e));
                    return;
                }
            };
            let mut lines = Lines::new(resp);
            let mut tokens = 0u32;
            loop {
                let line = tokio::select! {
                    l = lines.next() => l,
                    _ = cancel.wait_for(|c| *c) => {
                        // Closing the connection is the cancel: the server stops the engine.
                        drop(lines);
                        let mut done = Completion::cancelled_before_start();
                        done.usage.completion_tokens = tokens;
                        let _ = tx.send(SupervisorEvent::Finished(done));
                        return;
                    }
                };
                let event = match line {
                    Ok(Some(event)) => event,
                    Ok(None) => {
                        let _ = tx.send(SupervisorEvent::Failed(gone(
                            &this.record.url,
                            "the reply ended before it finished",
                        )));
                        return;
                    }
                    Err(why) => {
                        let _ = tx.send(SupervisorEvent::Failed(gone(&this.record.url, &why)));
                        return;
                    }
                };
                let Some(event) = event.into_event() else {
                    continue;
                };
                let last = matches!(
                    event,
                    SupervisorEvent::Finished(_) | SupervisorEvent::Failed(_)
                );
                match &event {
                    SupervisorEvent::Started(d) => {
                        lock(&this.engines).insert(name.clone(), d.clone());
                    }
                    SupervisorEvent::Token(_) => tokens += 1,
                    _ => {}
                }
                let _ = tx.send(event);
                if last {
                    return;
                }
            }
        });
        reply
    }

    /// Has the server load `model`, reporting progress.
    pub async fn preload(
        &self,
        model: &ModelEntry,
        mut progress: impl FnMut(f32) + Send,
    ) -> Result<EngineDescription, SupervisorError> {
        let resp = self
            .client
            .post(format!("{}{}", self.record.url, wire::LOAD_PATH))
            .bearer_auth(&self.record.token)
            .json(&LoadBody {
                model: model.clone(),
            })
            .send()
            .await;
        let mut lines = Lines::new(checked(&self.record.url, resp).await?);
        loop {
            match lines.next().await {
                Ok(Some(WireEvent::Loading { progress: p })) => progress(p),
                Ok(Some(WireEvent::Loaded(d))) => {
                    lock(&self.engines).insert(model.name.clone(), (*d).clone());
                    return Ok(*d);
                }
                Ok(Some(WireEvent::Failed(e))) => return Err(e.into_error()),
                Ok(Some(_)) => {}
                Ok(None) => return Err(gone(&self.record.url, "the load ended without a word")),
                Err(why) => return Err(gone(&self.record.url, &why)),
            }
        }
    }
}

/// The response, or the server's refusal as one sentence.
async fn checked(
    url: &str,
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<reqwest::Response, SupervisorError> {
    let resp = resp.map_err(|e| gone(url, &e.to_string()))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<openai_protocol::ErrorBody>(&text)
        .map(|b| b.error.message)
        .unwrap_or(text);
    Err(SupervisorError::Engine(EngineError::Request {
        code: ErrorCode::Unavailable,
        message: format!(
            "the gemmactl server at {url} refused the request (HTTP {status}): {message}"
        ),
    }))
}

/// The server went away or broke the stream.
fn gone(url: &str, why: &str) -> SupervisorError {
    SupervisorError::Engine(EngineError::Request {
        code: ErrorCode::Unavailable,
        message: format!(
            "the gemmactl server at {url} stopped answering ({why}): what was written is kept; run again (without a server the command starts its own engine) or pass --local"
        ),
    })
}

/// Event lines of a streamed response.
struct Lines {
    body: reqwest::Response,
    buffer: Vec<u8>,
}

impl Lines {
    fn new(body: reqwest::Response) -> Lines {
        Lines {
            body,
            buffer: Vec::new(),
        }
    }

    /// The next event; `Ok(None)` at the end of the stream.
    async fn next(&mut self) -> Result<Option<WireEvent>, String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| format!("an event line could not be read: {e}"));
            }
            match self.body.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

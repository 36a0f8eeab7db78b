//! The attach endpoints: where `run`, `chat` and the other front ends of this home send their
//! turns when this server runs. The front end owns the conversation and stores it; the server
//! only generates (one writer per turn), so these endpoints use the turn service's
//! [`generate`](crate::chat::TurnService::generate), which stores nothing, and stream the
//! supervisor's events back as lines (see `chat::attach::wire`).
//!
//! A front end that cancels closes its connection; the relay task sees the stream's receiver
//! go and cancels the request, exactly as for an HTTP client that disconnects.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::mpsc;

use super::app::Shared;
use super::openai::parse;
use crate::chat::attach::wire::{GenerateBody, LoadBody, WireError, WireEvent};
use crate::supervisor::SupervisorEvent;

/// Answers a front end checking the record's token before it attaches.
pub(super) async fn hello(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(
        json!({"server": "gemmactl", "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id(), "started_at": state.started_at}),
    )
}

/// A stream of event lines fed by `rx`.
fn lines(rx: mpsc::Receiver<String>) -> Response {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|l| (Ok::<Bytes, Infallible>(Bytes::from(l)), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// One request of an attached front end.
pub(super) async fn generate(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body: GenerateBody = match parse(&state, body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let id = state.service.generator().new_request_id();
    let (model, request) = body.into_request(id);
    let (tx, rx) = mpsc::channel::<String>(64);
    let mut reply = match state.service.generate(&model, request) {
        Ok(reply) => reply,
        Err(e) => {
            let _ = tx.try_send(WireEvent::Failed(WireError::from_error(&e)).line());
            return lines(rx);
        }
    };
    tokio::spawn(async move {
        let mut gone = false;
        loop {
            let event = tokio::select! {
                e = reply.next() => e,
                _ = tx.closed(), if !gone => {
                    gone = true;
                    reply.cancel();
                    continue;
                }
            };
            let Some(event) = event else { break };
            let last = matches!(
                event,
                SupervisorEvent::Finished(_) | SupervisorEvent::Failed(_)
            );
            if let SupervisorEvent::Finished(done) = &event {
                state.metrics.tokens(&model.name, &done.usage);
            }
            if !gone {
                let _ = tx.send(WireEvent::from_event(event).line()).await;
            }
            if last {
                break;
            }
        }
    });
    lines(rx)
}

/// Loads a model for an attached front end (its `/load`), streaming progress.
pub(super) async fn load(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body: LoadBody = match parse(&state, body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let loaded = state
            .service
            .generator()
            .preload(&body.model, move |p| {
                let _ = progress_tx.try_send(WireEvent::Loading { progress: p }.line());
            })
            .await;
        let last = match loaded {
            Ok(d) => WireEvent::Loaded(Box::new(d)),
            Err(e) => WireEvent::Failed(WireError::from_error(&e)),
        };
        let _ = tx.send(last.line()).await;
    });
    lines(rx)
}

//! The routes and what every request shares: the turn service, the keys, the limits, the
//! metrics. Authentication is one middleware: the OpenAI routes and `/metrics` need the API key
//! when one is configured, the attach routes need the attach token of the server's record, and
//! `/health` needs nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::errors::ApiError;
use super::metrics::Metrics;
use super::{openai, relay};
use crate::chat::attach::wire;
use crate::chat::TurnService;
use crate::config::{Config, Paths};
use crate::models::{self, ModelEntry};
use crate::supervisor::status::{unix_now, ProcessStatus};

/// Where the server is with the models it loads at start (`/health`).
pub(super) const WARMING: u8 = 0;
/// Ready to serve.
pub(super) const READY: u8 = 1;

/// The address of the client of one connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer(pub(super) SocketAddr);

impl Peer {
    /// Whether the client is on this machine (it may see file paths in errors).
    pub(super) fn local(&self) -> bool {
        self.0.ip().is_loopback()
    }
}

/// What every request shares.
pub(super) struct AppState {
    pub(super) service: TurnService,
    pub(super) paths: Paths,
    pub(super) config: Config,
    /// The key OpenAI clients must send, if one is configured.
    pub(super) api_key: Option<String>,
    /// The attach token of the server's record.
    pub(super) token: String,
    pub(super) metrics: Metrics,
    /// [`WARMING`] until the models loaded at start are loaded.
    pub(super) health: AtomicU8,
    pub(super) started_at: u64,
}

pub(super) type Shared = Arc<AppState>;

impl AppState {
    /// `name` as a model this server serves: a registered or catalogue name, never a path (a
    /// client must not make the server open files).
    pub(super) fn model(&self, name: &str) -> Result<ModelEntry, ApiError> {
        let name = if name.trim().is_empty() {
            self.config.default_model.as_str()
        } else {
            name.trim()
        };
        let looks_like_path = name.contains('/')
            || name.contains('\\')
            || name.ends_with(".gguf")
            || name.ends_with(".sbs");
        if looks_like_path {
            return Err(ApiError::not_found(
                "model_not_found",
                format!("model {name:?} is not served here: name a model from GET /v1/models, not a file"),
            ));
        }
        models::resolve(&self.paths, name).map_err(|e| match e {
            models::ModelError::Unknown { .. } => ApiError::not_found(
                "model_not_found",
                format!("model {name:?} is not served here: GET /v1/models lists the models, and `gemmactl models add` registers others"),
            ),
            models::ModelError::NotDownloaded { .. } => ApiError::not_found(
                "model_not_found",
                format!("model {name:?} is in gemmactl's catalogue but not downloaded: run `gemmactl models pull {name}` on the server"),
            ),
            other => ApiError::internal(other.to_string()),
        })
    }

    /// The supervisor's status (for `/metrics` and `/health`).
    pub(super) fn status(&self) -> ProcessStatus {
        match self.service.supervisor() {
            Some(s) => s.status(),
            None => ProcessStatus {
                pid: std::process::id(),
                command: "gemmactl serve".into(),
                started_at: self.started_at,
                engines: Vec::new(),
            },
        }
    }

    /// An error for `peer`: file paths taken out unless it is on this machine.
    pub(super) fn error_for(&self, peer: Peer, e: ApiError) -> ApiError {
        if peer.local() {
            e
        } else {
            e.scrubbed()
        }
    }
}

/// Every route.
pub(super) fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), api_key));
    let attach = Router::new()
        .route(wire::HELLO_PATH, get(relay::hello))
        .route(wire::GENERATE_PATH, post(relay::generate))
        .route(wire::LOAD_PATH, post(relay::load))
        .route_layer(middleware::from_fn_with_state(state.clone(), attach_token));
    Router::new()
        .route("/health", get(health))
        .merge(api)
        .merge(attach)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn api_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        match bearer(req.headers()) {
            Some(sent) if same_secret(sent, key) => {}
            Some(_) => return ApiError::unauthorized(
                "the API key is not valid: send the server's key as `Authorization: Bearer KEY`",
            )
            .into_response(),
            None => {
                return ApiError::unauthorized(
                    "this server needs an API key: send it as `Authorization: Bearer KEY`",
                )
                .into_response()
            }
        }
    }
    next.run(req).await
}

async fn attach_token(State(state): State<Shared>, req: Request, next: Next) -> Response {
    match bearer(req.headers()) {
        Some(sent) if same_secret(sent, &state.token) => next.run(req).await,
        _ => ApiError::unauthorized(
            "attaching needs the token in this server's record (in the state folder of its home)",
        )
        .into_response(),
    }
}

/// Counts every answered request by route and status.
async fn count(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let endpoint = match req.uri().path() {
        p
        @ ("/health" | "/metrics" | "/v1/models" | "/v1/chat/completions" | "/v1/completions") => {
            p.to_string()
        }
        p if p.starts_with("/gemmactl/") => p.to_string(),
        _ => "other".to_string(),
    };
    let response = next.run(req).await;
    state.metrics.request(&endpoint, response.status().as_u16());
    response
}

async fn not_found(req: Request<Body>) -> ApiError {
    // The method and path only: they came from the client, nothing of the server's is echoed.
    let path: String = req.uri().path().chars().take(100).collect();
    ApiError::not_found(
        "not_found",
        format!("there is no {} {path} here: the API is under /v1 (models, chat/completions, completions)", req.method()),
    )
}

async fn health(State(state): State<Shared>) -> Response {
    if state.health.load(Ordering::Acquire) == READY {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading", "error": {"message": "the server is loading its first model", "type": "service_unavailable", "code": "model_loading"}})),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        r
    }
}

async fn list_models(
    State(state): State<Shared>,
) -> Result<Json<openai_protocol::ModelList>, ApiError> {
    let listed = models::listing(&state.paths).map_err(|e| ApiError::internal(e.to_string()))?;
    let data = listed
        .into_iter()
        .filter(|m| m.registered)
        .map(|m| openai_protocol::Model {
            id: m.name,
            object: "model".into(),
            created: state.started_at,
            owned_by: match m.engine {
                crate::domain::EngineKind::Remote => "remote".into(),
                _ => "gemmactl".into(),
            },
        })
        .collect();
    Ok(Json(openai_protocol::ModelList {
        object: "list".into(),
        data,
    }))
}

async fn metrics(State(state): State<Shared>) -> Response {
    let text = state.metrics.render(&state.status());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Unix seconds now (the `created` field).
pub(super) fn now() -> u64 {
    unix_now()
}

//! `gemmactl serve`: one long-lived process that owns a supervisor — the pool, the memory
//! budget, idle unloading, the queue and crash restarts, all as in any front end — and serves it
//! over HTTP:
//!
//! - the OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`, `/v1/completions`,
//!   streamed or not) for editors, agents and libraries (`openai.rs`);
//! - `/health` (503 until the models loaded at start are loaded) and `/metrics` (Prometheus
//!   text, `metrics.rs`);
//! - the attach endpoints through which `run`, `chat` and the other front ends of the same home
//!   use its warm engines (`relay.rs`), found through the record it keeps in the state folder
//!   (`chat::attach::record`).
//!
//! It is a front end on the turn service like any other: each API request is a `Thread` of its
//! own. Whether API requests are stored: not by default — an API client owns its conversation
//! and sends it whole with every request, so storing each would write the same history again and
//! again; `--log` (or `serve.history`) stores each request's new exchange, tagged `serve` with the
//! client's user agent. Attached front ends store their own turns; the server never does.
//!
//! Security by default (`security.rs`): loopback only unless an API key is configured; body,
//! prompt, header and idle limits (`http.rs`); file paths kept out of errors sent to other
//! machines; CORS off unless origins are configured.

mod app;
mod errors;
mod http;
mod metrics;
mod openai;
mod relay;
mod security;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::chat::attach::record::{Found, ServerRecord};
use crate::chat::TurnService;
use crate::config::flags::EngineFlags;
use crate::config::{Config, Paths};
use crate::domain::Source;
use crate::models;
use crate::store::Store;
use crate::supervisor::Supervisor;
use app::AppState;

/// `gemmactl serve`'s arguments.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one [env: GEMMACTL_SERVE_ADDR; config: serve.addr; default: 127.0.0.1:11435]
    #[arg(long, value_name = "ADDR")]
    addr: Option<String>,
    /// File holding the API key clients must send as `Authorization: Bearer KEY`; needed to
    /// listen beyond loopback [env: GEMMACTL_API_KEY_FILE, or the key itself in GEMMACTL_API_KEY; config: serve.api_key_file]
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// A browser origin allowed to call the API (CORS), e.g. http://localhost:5173; repeat for more [config: serve.cors_origins; default: none, CORS off]
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Models to load at start (repeat for several); /health is 503 until they are loaded [default: the default model]
    #[arg(long = "model", short = 'm', value_name = "NAME")]
    models: Vec<String>,
    /// Load nothing at start: each model loads on its first request
    #[arg(long, conflicts_with = "models")]
    no_preload: bool,
    /// Store each API request's exchange in the history database (source `serve`) [config: serve.history]
    #[arg(long)]
    log: bool,
    /// Let clients name images by local path or file: URL, which the server then reads (off by
    /// default: only data URLs) [config: serve.allow_local_images]
    #[arg(long)]
    allow_local_images: bool,
    #[command(flatten)]
    engine: EngineFlags,
}

/// Runs `gemmactl serve` until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs, paths: &Paths, mut config: Config) -> Result<ExitCode> {
    args.engine.apply(&mut config)?;
    if let Some(addr) = &args.addr {
        config.serve.addr = addr.clone();
    }
    if let Some(file) = &args.api_key_file {
        config.serve.api_key_file = Some(file.clone());
    }
    if !args.cors_origins.is_empty() {
        config.serve.cors_origins = args.cors_origins.clone();
    }
    if args.allow_local_images {
        config.serve.allow_local_images = true;
    }
    let api_key = security::api_key(&config)?;
    let addr = security::listen_addr(&config.serve.addr, api_key.is_some()).await?;
    let cors = security::cors(&config.serve.cors_origins)?;
    if let Found::Live(other) = ServerRecord::find(paths) {
        bail!(
            "a gemmactl serve already runs for this home at {} (pid {}): stop it first, or give this one another GEMMACTL_HOME",
            other.url,
            other.pid
        );
    }
    let preload: Vec<models::ModelEntry> = if args.no_preload {
        Vec::new()
    } else {
        let names = if args.models.is_empty() {
            vec![config.default_model.clone()]
        } else {
            args.models.clone()
        };
        names
            .iter()
            .map(|n| models::resolve(paths, n))
            .collect::<Result<_, _>>()?
    };
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}: is another program using it? pick another with --addr")
    })?;
    let local = listener.local_addr()?;
    let store = if args.log || config.serve.history {
        Some(Store::open_default(paths)?)
    } else {
        None
    };
    let service = TurnService::new(
        Supervisor::new(config.clone(), paths, "gemmactl serve"),
        store,
        Source::Serve,
        paths,
        &config,
    );
    // Front ends attach over loopback even when the server listens on every interface.
    let attach_url = if local.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", local.port())
    } else {
        format!("http://{local}")
    };
    let record = ServerRecord::new(attach_url.clone()).context("cannot make the attach token")?;
    record
        .write(paths)
        .with_context(|| format!("cannot write {}", ServerRecord::path(paths).display()))?;
    let state = Arc::new(AppState {
        service: service.clone(),
        paths: paths.clone(),
        config: config.clone(),
        api_key,
        token: record.token.clone(),
        metrics: metrics::Metrics::new(),
        health: AtomicU8::new(if preload.is_empty() {
            app::READY
        } else {
            app::WARMING
        }),
        started_at: record.started_at,
    });
    let router = security::layers(app::router(state.clone()), &config, cors);
    eprintln!(
        "gemmactl serve listening on http://{local} (OpenAI-compatible API at http://{local}/v1)"
    );
    if !local.ip().is_loopback() {
        eprintln!("reachable from other machines: every request needs the API key");
    }
    let warm = state.clone();
    tokio::spawn(async move {
        for model in preload {
            if let Err(e) = warm.service.generator().preload(&model, |_| {}).await {
                tracing::warn!(model = %model.name, "loading at start failed: {e}");
                eprintln!("loading {} failed: {e}", model.name);
            }
        }
        warm.health.store(app::READY, Ordering::Release);
    });
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        stop.cancel();
    });
    let timeouts = http::Timeouts {
        header: Duration::from_secs(config.serve.header_timeout_secs.max(1)),
        idle: Duration::from_secs(config.serve.idle_timeout_secs.max(1)),
    };
    http::serve(listener, router, timeouts, shutdown).await;
    // Front ends must not attach to a server that is going away.
    ServerRecord::remove(paths);
    service.shutdown().await;
    eprintln!("gemmactl serve stopped");
    Ok(ExitCode::SUCCESS)
}

//! `gemmactl mcp`: gemmactl as a tool for AI coding agents (Claude Code and other MCP clients).
//!
//! A front end like the shell: every tool call is a thread of the turn service, and this module
//! only turns MCP requests into turns and turn events into MCP messages. One process keeps one
//! [`TurnService`] — one supervisor — for all its clients and calls, so engines stay warm
//! between calls (until the idle time-out), concurrent calls are batched by one engine, and the
//! queue bound answers overflow with a tool error.
//!
//! - `server.rs`: the tools (`generate_text`, `complete_code`, `chat`, `analyze_image`,
//!   `list_models`) on rmcp's tool router;
//! - `tools.rs`: their arguments and results, whose doc comments are the published schemas;
//! - `progress.rs`: a turn rendered into progress notifications, and cancellation;
//! - `code.rs`: where a code completion ends and what of it is code;
//! - `images.rs`: which image files a client may name;
//! - `http.rs`: Streamable HTTP with its Origin, Host and bearer-token rules;
//! - `install.rs`: `gemmactl mcp install claude-code|claude-desktop`.
//!
//! On stdio nothing but protocol messages goes to stdout (logs go to stderr and the log file;
//! engines' stdout is piped), and the server exits when stdin closes, stopping its engines.

mod code;
mod http;
mod images;
mod install;
mod progress;
mod server;
mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use crate::chat::TurnService;
use crate::config::flags::{EngineFlags, LocalFlag, LogFlag, ModelFlag};
use crate::config::{Config, Paths};
use crate::domain::Source;
use crate::store::Store;
pub use install::InstallArgs;

/// `gemmactl mcp`'s arguments.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct McpArgs {
    #[command(subcommand)]
    command: Option<McpCommand>,
    /// Serve Streamable HTTP at ADDR (e.g. 127.0.0.1:8765, endpoint /mcp) instead of stdio.
    /// An address beyond loopback needs GEMMACTL_MCP_TOKEN (a bearer token clients must send)
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    #[command(flatten)]
    model: ModelFlag,
    #[command(flatten)]
    engine: EngineFlags,
    #[command(flatten)]
    log: LogFlag,
    #[command(flatten)]
    local: LocalFlag,
    /// A folder analyze_image may read images from (repeatable) [config: mcp.image_dirs;
    /// default: the folder gemmactl mcp starts in]
    #[arg(long = "image-dir", value_name = "DIR")]
    image_dirs: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum McpCommand {
    /// Register `gemmactl mcp` with Claude Code or Claude Desktop
    Install(InstallArgs),
}

/// Whether `gemmactl mcp` serves stdio (so its logs also go to stderr, never stdout).
pub fn serves(args: &McpArgs) -> bool {
    args.command.is_none()
}

/// Runs `gemmactl mcp`.
pub fn run(args: McpArgs, paths: &Paths, mut config: Config) -> Result<ExitCode> {
    if let Some(McpCommand::Install(install)) = args.command {
        return install::run(install, &config);
    }
    args.engine.apply(&mut config)?;
    if let Some(addr) = &args.http {
        http::check_address(addr, config.env.mcp_token.as_deref())?;
    }
    let mut image_dirs = config.mcp.image_dirs.clone();
    image_dirs.extend(args.image_dirs.iter().cloned());
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let images = images::ImagePolicy::new(&image_dirs, &cwd)?;
    let store = if args.log.logs(&config) {
        Some(Store::open_default(paths)?)
    } else {
        None
    };
    let default_model = args.model.name_or_default(&config);
    let local = args.local.local(&args.engine);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Attached to this home's `gemmactl serve` when one runs (its warm engines), else with
        // engines of its own.
        let service =
            TurnService::start(store, Source::Mcp, paths, &config, "gemmactl mcp", local).await;
        let server = server::GemmaServer::new(service.clone(), default_model, images);
        let served = match args.http {
            Some(addr) => serve_http(server, addr, config.env.mcp_token.clone()).await,
            None => serve_stdio(server).await,
        };
        service.shutdown().await;
        served
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Serves one client on stdin/stdout until stdin closes (or SIGTERM/SIGINT).
async fn serve_stdio(server: server::GemmaServer) -> Result<()> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP client on stdin did not start a session")?;
    let cancel = running.cancellation_token();
    tokio::select! {
        ended = running.waiting() => {
            ended.context("the MCP session failed")?;
        }
        _ = stop_signal() => cancel.cancel(),
    }
    Ok(())
}

async fn serve_http(
    server: server::GemmaServer,
    addr: SocketAddr,
    token: Option<String>,
) -> Result<()> {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop_signal().await;
        stop.cancel();
    });
    http::serve(server, addr, token, shutdown).await
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

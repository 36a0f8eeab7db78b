//! The command-line surface, defined once: every subcommand and flag with its help text. The
//! behaviour lives in `commands::*`; this module parses, sets up logging, and maps errors to a
//! one-line message and a non-zero exit.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::commands;
use crate::config::{Config, Paths};
use crate::mcp;

#[derive(Parser)]
#[command(
    name = "gemmactl",
    version,
    about = "Run Google's Gemma models locally: one-shot prompts, model management, supervised engines."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat with a model in an interactive shell (history saved and searchable).
    Chat(crate::shell::ChatArgs),
    /// Generate a reply to one prompt and stream it to stdout.
    Run(commands::run::RunArgs),
    /// Answer a file of prompts (JSONL in, JSONL out): parallel, resumable, OpenAI batch format.
    Batch(crate::batch::BatchArgs),
    /// Manage model files: list, pull, add, show, check, import, rm.
    #[command(subcommand)]
    Models(commands::models::ModelsCommand),
    /// Show the engines held by running gemmactl processes.
    Ps(commands::ps::PsArgs),
    /// Serve warm engines to every front end, and an OpenAI-compatible HTTP API.
    Serve(crate::serve::ServeArgs),
    /// Measure a model's speed directly and through gemmactl (medians over interleaved runs).
    Bench(commands::bench::BenchArgs),
    /// Serve the models to MCP clients (Claude Code, …) on stdio or HTTP, or register with one.
    Mcp(mcp::McpArgs),
    /// Saved conversations: list, show, search, export, rm.
    #[command(subcommand)]
    History(commands::history::HistoryCommand),
    /// Hardware, engine builds, and the backend each model would run on, and why.
    Doctor(commands::doctor::DoctorArgs),
    /// Print a shell completion script (e.g. `gemmactl completions bash > ~/.local/share/bash-completion/completions/gemmactl`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Parses the command line, runs the command, and turns an error into one line on stderr and a
/// non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "gemmactl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let outcome = (|| -> anyhow::Result<ExitCode> {
        let paths = Paths::discover()?;
        let config = Config::load(&paths)?;
        // An MCP server's stdout is the protocol: its logs also go to stderr, which clients
        // show as the server's log.
        let stderr_too = matches!(&cli.command, Command::Mcp(args) if mcp::serves(args));
        init_logging(&paths, &config, stderr_too);
        match cli.command {
            Command::Chat(args) => crate::shell::run(args, &paths, config),
            Command::Run(args) => runtime()?.block_on(commands::run::run(args, &paths, config)),
            Command::Batch(args) => runtime()?.block_on(crate::batch::run(args, &paths, config)),
            Command::Ps(args) => commands::ps::run(args, &paths).map(|_| ExitCode::SUCCESS),
            Command::Serve(args) => runtime()?.block_on(crate::serve::run(args, &paths, config)),
            Command::Bench(args) => runtime()?.block_on(commands::bench::run(args, &paths, config)),
            Command::Models(cmd) => {
                commands::models::run(cmd, &paths, &config).map(|_| ExitCode::SUCCESS)
            }
            Command::History(cmd) => commands::history::run(cmd, &paths).map(|_| ExitCode::SUCCESS),
            Command::Doctor(args) => commands::doctor::run(args, &paths, &config),
            Command::Mcp(args) => mcp::run(args, &paths, config),
            Command::Completions { .. } => Ok(ExitCode::SUCCESS),
        }
    })();
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Logs go to `<state>/logs/gemmactl.log`, never to the terminal, so they cannot mix into a
/// reply on stdout; `stderr_too` also sends them to stderr (`gemmactl mcp`). `GEMMACTL_LOG`
/// sets the filter (default `info`; the MCP library's own chatter only from `warn`).
fn init_logging(paths: &Paths, config: &Config, stderr_too: bool) {
    let dir = paths.log_dir();
    let file = std::fs::create_dir_all(&dir).and_then(|_| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gemmactl.log"))
    });
    let Ok(file) = file else { return };
    let filter = config
        .env
        .log_filter
        .as_deref()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let file = std::sync::Mutex::new(file);
    let _ = if stderr_too {
        use tracing_subscriber::fmt::writer::MakeWriterExt;
        builder.with_writer(file.and(std::io::stderr)).try_init()
    } else {
        builder.with_writer(file).try_init()
    };
}

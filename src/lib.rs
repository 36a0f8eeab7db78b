//! gemmactl: a supervisor for running Google's Gemma models locally.
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]. The modules are public so the end-to-end
//! tests in `tests/` can drive the supervisor and the turn service with real engines directly.
//!
//! Layers, top to bottom (each imports only from below it; `tests/layers.rs` checks it, and
//! `docs/ARCHITECTURE.md` walks through it):
//!
//! - `cli`: the command surface;
//! - front ends: `shell` (the chat REPL), `commands` (`run`, `models`, `history`, `ps`,
//!   `doctor`, `bench`), `mcp` (the MCP server), `batch` (a file of prompts) and `serve` (the
//!   HTTP server), which never import each other;
//! - `ui`: terminal rendering the front ends share;
//! - `chat`: the turn service — conversations, requests, storing turns;
//! - `supervisor`: engine processes, their lifecycle, the pool and the queue;
//! - `engines`: the adapters that speak each engine's protocol;
//! - beside them: `store` (history), `models` (files and registry), `hardware` (detection and
//!   backend choice), `config` (settings), and at the bottom `domain` (the shared vocabulary) and
//!   `isolation` (child processes that die with gemmactl).

pub mod batch;
pub mod chat;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod engines;
pub mod hardware;
pub mod isolation;
pub mod mcp;
pub mod models;
pub mod serve;
pub mod shell;
pub mod store;
pub mod supervisor;
pub mod ui;

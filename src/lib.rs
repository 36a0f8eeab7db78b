//! gemmactl: a supervisor for running Google's Gemma models locally.
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]. The modules are public so the end-to-end
//! tests in `tests/` can drive the supervisor with real engines directly.
//!
//! Data flows one way: front ends (`commands`) → `supervisor` → `engines`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod engines;
pub mod hardware;
pub mod models;
pub mod shell;
pub mod store;
pub mod supervisor;

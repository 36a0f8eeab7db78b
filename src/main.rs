//! gemmactl: a supervisor for running Google's Gemma models locally.
//!
//! `main` only parses the command line and hands over to the command that was asked for; the
//! behaviour lives in the modules below (see `cli` for the whole command surface).

mod cli;
mod commands;
mod config;
mod engines;
mod models;
mod supervisor;

fn main() -> std::process::ExitCode {
    cli::main()
}

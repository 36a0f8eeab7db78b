//! gemmactl: a supervisor for running Google's Gemma models locally.
//!
//! `main` only hands over to the command line; see `cli` for the whole command surface.

fn main() -> std::process::ExitCode {
    gemmactl::cli::main()
}

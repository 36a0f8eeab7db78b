//! One module per subcommand: each turns parsed flags into calls on the supervisor, the model
//! registry or the store, and prints the result. Nothing here talks to an engine process directly.

pub mod bench;
mod bench_gemma_cpp;
pub mod bench_supervisor;
pub mod doctor;
pub mod history;
pub mod models;
pub mod ps;
pub mod run;

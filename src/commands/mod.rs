//! One module per subcommand: each turns parsed flags into calls on the supervisor, the model
//! registry or the store, and prints the result. Nothing here talks to an engine process directly.

pub mod bench;
pub mod doctor;
pub mod history;
pub mod models;
pub mod ps;
mod remote;
pub mod run;

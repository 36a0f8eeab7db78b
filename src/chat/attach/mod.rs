//! Attaching to a running `gemmactl serve`: the record it leaves in the state folder
//! (`record.rs`), the lines attached front ends and the server exchange (`wire.rs`), and the
//! front end's client (`client.rs`).
//!
//! The turn service decides once, when it starts, whether its turns go to a server of the same
//! home or to an in-process supervisor (see [`crate::chat::Generator`]); nothing above it knows
//! which. The front end that owns a conversation still stores it: the server only generates.

pub mod client;
pub mod record;
pub mod wire;

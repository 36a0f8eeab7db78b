//! The turn service: the one place that turns "this conversation + this new message + these
//! parameters" into a stored, streamed turn. Every front end — `run`, the chat shell, and the
//! MCP, batch and HTTP front ends — goes through it and only renders what it yields.
//!
//! - [`TurnService`] holds the generator (the supervisor) and the history store, shared by every
//!   conversation of one gemmactl process.
//! - [`Thread`] (`thread.rs`) is one conversation being carried on: its stored id, system prompt,
//!   the branch it continues, the model and sampling parameters, and the operations on them
//!   (send, retry, edit, fork, switch model).
//! - [`Turn`] (`turn.rs`) is one reply being generated: a stream of [`TurnEvent`]s. It commits
//!   nothing the front end must remember: the user's message is committed before generation,
//!   the partial reply is saved while it streams, and the finish is recorded when it ends.
//! - `request.rs` puts a conversation to a model (chat template, or a transcript for base models).
//!
//! A front end never talks to the supervisor for a turn, never writes the store, and never
//! builds a request: that is why adding one is a matter of rendering events.

mod request;
mod thread;
mod turn;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{Config, Paths};
use crate::domain::Source;
use crate::store::Store;
use crate::supervisor::Supervisor;
pub use request::PromptStyle;
pub use thread::{ForkPoint, Thread};
pub use turn::{Notice, Turn, TurnEnd, TurnEvent, PARTIAL_SAVE_INTERVAL};

/// The supervisor and the history store, shared by every conversation of one process.
#[derive(Clone)]
pub struct TurnService {
    inner: Arc<Inner>,
}

struct Inner {
    supervisor: Supervisor,
    source: Source,
    store: Option<Mutex<Store>>,
    paths: Paths,
    config: Config,
}

impl TurnService {
    /// A service generating through `supervisor`, storing into `store` (`None`: `--no-log`).
    pub fn new(
        supervisor: Supervisor,
        store: Option<Store>,
        source: Source,
        paths: &Paths,
        config: &Config,
    ) -> TurnService {
        TurnService {
            inner: Arc::new(Inner {
                supervisor,
                source,
                store: store.map(Mutex::new),
                paths: paths.clone(),
                config: config.clone(),
            }),
        }
    }

    /// The supervisor (for what runs where: `/show`, `ps`).
    pub fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    /// The history store, locked, when history is on. Front ends read through it (lists,
    /// search, exports); turns are written by [`Turn`] alone.
    pub fn store(&self) -> Option<MutexGuard<'_, Store>> {
        self.inner
            .store
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The front end the service's conversations come from.
    pub fn source(&self) -> Source {
        self.inner.source
    }

    /// Whether turns are stored.
    pub fn logs(&self) -> bool {
        self.inner.store.is_some()
    }

    /// Where gemmactl keeps its files.
    pub fn paths(&self) -> &Paths {
        &self.inner.paths
    }

    /// The configuration the service was made with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Stops every engine (see [`Supervisor::shutdown`]).
    pub async fn shutdown(&self) {
        self.inner.supervisor.shutdown().await;
    }
}

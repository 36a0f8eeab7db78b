//! The turn service: the one place that turns "this conversation + this new message + these
//! parameters" into a stored, streamed turn. Every front end — `run`, the chat shell, and the
//! MCP, batch and HTTP front ends — goes through it and only renders what it yields.
//!
//! - [`TurnService`] holds the generator and the history store, shared by every conversation of
//!   one gemmactl process. The generator (`generator.rs`) is this process's supervisor, or — when
//!   a `gemmactl serve` runs for the same home — that server's warm engines (`attach/`); the
//!   front end cannot tell, and still stores its own conversations.
//! - [`Thread`] (`thread.rs`) is one conversation being carried on: its stored id, system prompt,
//!   the branch it continues, the model and sampling parameters, and the operations on them
//!   (send, retry, edit, fork, switch model).
//! - [`Turn`] (`turn.rs`) is one reply being generated: a stream of [`TurnEvent`]s. It commits
//!   nothing the front end must remember: the user's message is committed before generation,
//!   the partial reply is saved while it streams, and the finish is recorded when it ends.
//! - `request.rs` puts a conversation to a model (chat template, or a transcript for base models).
//! - `content.rs` reads a message given in OpenAI's content parts (text and images), for the
//!   front ends that take that format.
//!
//! A front end never talks to the supervisor for a turn, never writes the store, and never
//! builds a request: that is why adding one is a matter of rendering events.

pub mod attach;
pub mod content;
mod generator;
mod request;
mod thread;
mod turn;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{Config, Paths};
use crate::domain::{GenerateRequest, Source};
use crate::models::ModelEntry;
use crate::store::Store;
use crate::supervisor::{Reply, Supervisor, SupervisorError};
use attach::client::Attached;
use attach::record::{Found, ServerRecord};
pub use generator::Generator;
pub use request::PromptStyle;
pub use thread::{ForkPoint, Thread};
pub use turn::{Notice, Turn, TurnEnd, TurnEvent, PARTIAL_SAVE_INTERVAL};

/// The generator and the history store, shared by every conversation of one process.
#[derive(Clone)]
pub struct TurnService {
    inner: Arc<Inner>,
}

struct Inner {
    generator: Generator,
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
        TurnService::with_generator(Generator::Local(supervisor), store, source, paths, config)
    }

    /// A service for a front end: attached to the running `gemmactl serve` of this home when
    /// there is one (and neither `local` nor `serve.attach = false` says otherwise), else with
    /// its own supervisor, published for `ps` as `command`. A stale server record is removed,
    /// and a server that does not answer is passed over; both are logged.
    pub async fn start(
        store: Option<Store>,
        source: Source,
        paths: &Paths,
        config: &Config,
        command: &str,
        local: bool,
    ) -> TurnService {
        let attached = if local || !config.serve.attach {
            None
        } else {
            match ServerRecord::find(paths) {
                Found::Live(record) => match Attached::connect(record).await {
                    Ok(a) => {
                        tracing::info!(url = a.url(), "attached to gemmactl serve");
                        Some(a)
                    }
                    Err(why) => {
                        tracing::warn!("not attaching, running engines in-process: {why}");
                        None
                    }
                },
                Found::Stale { pid } => {
                    tracing::info!(pid, "removed the record of a gemmactl serve that is gone");
                    None
                }
                Found::None => None,
            }
        };
        let generator = match attached {
            Some(a) => Generator::Attached(Arc::new(a)),
            None => Generator::Local(Supervisor::new(config.clone(), paths, command)),
        };
        TurnService::with_generator(generator, store, source, paths, config)
    }

    fn with_generator(
        generator: Generator,
        store: Option<Store>,
        source: Source,
        paths: &Paths,
        config: &Config,
    ) -> TurnService {
        TurnService {
            inner: Arc::new(Inner {
                generator,
                source,
                store: store.map(Mutex::new),
                paths: paths.clone(),
                config: config.clone(),
            }),
        }
    }

    /// What generates the replies.
    pub fn generator(&self) -> &Generator {
        &self.inner.generator
    }

    /// This process's supervisor, when its engines run here (for `ps`-like reports).
    pub fn supervisor(&self) -> Option<&Supervisor> {
        match &self.inner.generator {
            Generator::Local(s) => Some(s),
            Generator::Attached(_) => None,
        }
    }

    /// The URL of the server this service is attached to, if it is.
    pub fn attached_to(&self) -> Option<&str> {
        match &self.inner.generator {
            Generator::Attached(a) => Some(a.url()),
            Generator::Local(_) => None,
        }
    }

    /// Generates `request` without storing anything: for a turn owned and stored by another
    /// process (a front end attached to this server). Every other turn goes through a
    /// [`Thread`].
    pub fn generate(
        &self,
        model: &ModelEntry,
        request: GenerateRequest,
    ) -> Result<Reply, SupervisorError> {
        self.inner.generator.submit(model, request)
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

    /// Stops every engine of this process (see [`Supervisor::shutdown`]).
    pub async fn shutdown(&self) {
        self.inner.generator.shutdown().await;
    }
}

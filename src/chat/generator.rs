//! The one seam between the turn service and whatever generates its replies: this process's own
//! supervisor, or a running `gemmactl serve` of the same home that the front end attached to.
//!
//! Both hand back the supervisor's [`Reply`] — a stream of [`SupervisorEvent`]s with a canceller
//! — so a [`Turn`](super::Turn) stores, trims and renders the same way whichever generates.
//!
//! [`SupervisorEvent`]: crate::supervisor::SupervisorEvent

use std::sync::Arc;

use super::attach::client::Attached;
use crate::domain::{EngineDescription, GenerateRequest};
use crate::models::ModelEntry;
use crate::supervisor::{Reply, Supervisor, SupervisorError};

/// What generates a turn service's replies.
pub enum Generator {
    /// Engines of this process.
    Local(Supervisor),
    /// The warm engines of a running server.
    Attached(Arc<Attached>),
}

impl Generator {
    /// Starts generating `request` with `model`.
    pub fn submit(
        &self,
        model: &ModelEntry,
        request: GenerateRequest,
    ) -> Result<Reply, SupervisorError> {
        match self {
            Generator::Local(s) => s.submit(model, request),
            Generator::Attached(a) => Ok(a.submit(model, request)),
        }
    }

    /// Loads `model` ahead of use, reporting progress.
    pub async fn preload(
        &self,
        model: &ModelEntry,
        progress: impl FnMut(f32) + Send,
    ) -> Result<EngineDescription, SupervisorError> {
        match self {
            Generator::Local(s) => s.preload(model, progress).await,
            Generator::Attached(a) => a.preload(model, progress).await,
        }
    }

    /// The engine serving `model_name` (attached: the one that last served it here).
    pub fn engine_of(&self, model_name: &str) -> Option<EngineDescription> {
        match self {
            Generator::Local(s) => s.engine_of(model_name),
            Generator::Attached(a) => a.engine_of(model_name),
        }
    }

    /// A request id unique within this process.
    pub fn new_request_id(&self) -> String {
        match self {
            Generator::Local(s) => s.new_request_id(),
            Generator::Attached(a) => a.new_request_id(),
        }
    }

    /// Stops this process's engines; an attached front end has none.
    pub async fn shutdown(&self) {
        if let Generator::Local(s) = self {
            s.shutdown().await;
        }
    }
}

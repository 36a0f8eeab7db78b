//! gemmactl's own vocabulary: the conversation, the request an engine is asked to serve, and how
//! a reply ended. Every layer speaks these types — the store saves them, the supervisor routes
//! them, front ends render them — and each engine adapter maps them onto its engine's wire format.
//!
//! They are deliberately not the engine protocol's types (`engine-protocol`): the wire format of
//! one engine can change without the history database or any front end noticing. This module is
//! the bottom layer; it imports nothing else from gemmactl.

mod backend;
mod engine;
mod image;
mod memory;
mod message;
mod origin;
mod outcome;
mod params;
pub mod utf8;

pub use backend::{label as backend_label, Backend};
pub use engine::{
    check_kv_settings, Device, EngineDescription, EngineKind, FlashAttention, KvCacheType,
    ModelFacts,
};
pub use image::{cannot_see, human_size, Image, ImageRefused};
pub use memory::{mib, MemoryEstimate, ModelNeeds};
pub use message::{Message, Role};
pub use origin::{BatchLine, Origin, Source};
pub use outcome::{Completion, ErrorCode, FinishReason, Timings, Usage};
pub use params::{Constraint, GenerateRequest, PromptFormat, SamplingParams};

//! Hardware detection and backend choice: what this machine has (CPU, memory, NVIDIA GPUs, Vulkan
//! and OpenVINO devices, engine builds), which backend each model would run on and why, and the
//! engine start that honours that choice with an honest fall back to the CPU.
//!
//! One file per concern: `cpu`, `memory`, `nvidia`, `vulkan`, `openvino` detect; `engines` finds
//! gemma-engine builds and asks each what it can use; `isolate` runs driver probes in bounded
//! child processes so no driver can crash or hang gemmactl; `select` is the pure policy; `launch`
//! is what the supervisor calls to start an engine; `report` gathers everything for `doctor`.

pub mod backend;
pub mod cpu;
pub mod engines;
pub mod isolate;
pub mod launch;
pub mod memory;
pub mod nvidia;
pub mod openvino;
pub mod report;
pub mod select;
pub mod vulkan;

pub use backend::{Backend, BackendRequest, EngineBuilds};

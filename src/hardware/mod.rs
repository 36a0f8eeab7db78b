//! Hardware detection and the backend choice: what this machine has (CPU, memory, NVIDIA GPUs,
//! Vulkan and OpenVINO devices, engine builds), and which backend a model would run on and why.
//!
//! One file per concern: `cpu`, `memory`, `nvidia`, `vulkan`, `openvino` detect; `engines` finds
//! gemma-engine builds and asks each what it can use; `isolate` runs driver probes in bounded
//! child processes so no driver can crash or hang gemmactl; `select` is the pure policy. The
//! supervisor's launcher (`supervisor::launch`) starts engines on the chosen backend, and
//! `doctor` gathers everything into its report.

pub mod cpu;
pub mod cpu_usable;
pub mod engines;
pub mod isolate;
pub mod memory;
pub mod nvidia;
pub mod openvino;
pub mod select;
pub mod vulkan;

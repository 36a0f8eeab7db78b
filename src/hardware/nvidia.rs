//! NVIDIA GPUs through NVML (`nvml-wrapper`), which loads `libnvidia-ml.so.1` at run time.
//!
//! A machine without the library or without the driver is an ordinary answer ("no NVIDIA driver
//! installed"), never an error. NVML talks to a kernel driver, so [`probe`] runs in a child
//! process (see `hardware::isolate`): a driver that hangs or crashes cannot take gemmactl with it.

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

/// What NVML says about this machine's NVIDIA driver and GPUs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NvidiaReport {
    /// Why no GPU could be listed (library missing, driver not loaded, ...), as a fact.
    pub note: Option<String>,
    /// The driver's version, e.g. "550.54.15".
    pub driver_version: Option<String>,
    /// The highest CUDA version the driver supports, e.g. "12.4".
    pub cuda_version: Option<String>,
    /// Every GPU NVML could open, in NVML's order.
    pub gpus: Vec<NvidiaGpu>,
}

/// One NVIDIA GPU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NvidiaGpu {
    /// NVML's index of the GPU (the CUDA device number unless `CUDA_VISIBLE_DEVICES` reorders).
    pub index: u32,
    /// The product name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// The GPU's memory in bytes (0 if NVML could not say).
    pub memory_total: u64,
    /// The GPU's free memory in bytes when probed (0 if NVML could not say).
    pub memory_free: u64,
    /// e.g. "9.0" for an H100.
    pub compute_capability: Option<String>,
}

/// Asks NVML. Only call this in the isolated child (`gemmactl doctor --probe-gpu nvidia`).
pub fn probe() -> NvidiaReport {
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            return NvidiaReport {
                note: Some(init_failure(&e)),
                ..Default::default()
            }
        }
    };
    let mut report = NvidiaReport {
        driver_version: nvml.sys_driver_version().ok(),
        cuda_version: nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        }),
        ..Default::default()
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => {
            report.note = Some(format!("NVML could not count GPUs: {e}"));
            return report;
        }
    };
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            report.note = Some(format!(
                "NVML could not open GPU {index} (permissions, or the GPU fell off the bus)"
            ));
            continue;
        };
        let memory = device.memory_info().ok();
        report.gpus.push(NvidiaGpu {
            index,
            name: device
                .name()
                .unwrap_or_else(|_| "unknown NVIDIA GPU".into()),
            memory_total: memory.as_ref().map(|m| m.total).unwrap_or(0),
            memory_free: memory.as_ref().map(|m| m.free).unwrap_or(0),
            compute_capability: device
                .cuda_compute_capability()
                .ok()
                .map(|c| format!("{}.{}", c.major, c.minor)),
        });
    }
    if count == 0 {
        report.note = Some("the NVIDIA driver is loaded but reports no GPU".into());
    }
    report
}

/// The sentence shown when NVML cannot start.
fn init_failure(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
            "NVML library (libnvidia-ml.so.1) not found: no NVIDIA driver is installed".into()
        }
        NvmlError::DriverNotLoaded => {
            "NVML is installed but the NVIDIA kernel driver is not loaded".into()
        }
        NvmlError::NoPermission => {
            "NVML refused access: this user may not query the NVIDIA driver".into()
        }
        other => format!("NVML could not start: {other}"),
    }
}

/// Cheap, crash-free sign of a loaded NVIDIA driver (a file read, no library): its version line.
/// Used at engine start, where running the NVML probe every time would cost too much.
pub fn driver_present() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    let line = text.lines().next()?.trim().to_string();
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_a_fact_not_an_error() {
        let why = init_failure(&NvmlError::LibraryNotFound);
        assert!(
            why.contains("libnvidia-ml.so.1") && why.contains("no NVIDIA driver"),
            "{why}"
        );
        assert!(init_failure(&NvmlError::DriverNotLoaded).contains("kernel driver is not loaded"));
    }
}

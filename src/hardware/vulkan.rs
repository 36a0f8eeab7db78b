//! Vulkan devices through `ash`, which loads the Vulkan loader (`libvulkan.so.1`) at run time.
//!
//! Headless machines with Mesa expose a *software* Vulkan device (llvmpipe/lavapipe, type CPU):
//! it is listed as what it is and never counted as a GPU, or gemmactl would "find a GPU" that is
//! the CPU in disguise. Like NVML, [`probe`] runs in an isolated child process.

use std::ffi::CStr;

use ash::vk;
use serde::{Deserialize, Serialize};

/// What the Vulkan loader says about this machine's devices.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VulkanReport {
    /// Why no device could be listed (no loader, no driver, ...), as a fact.
    pub note: Option<String>,
    /// Every physical device the loader lists, software ones included.
    pub devices: Vec<VulkanDevice>,
}

/// One Vulkan physical device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VulkanDevice {
    /// The driver's device name, e.g. "NVIDIA GeForce RTX 4090" or "llvmpipe (LLVM 15.0.6)".
    pub name: String,
    /// `discrete`, `integrated`, `virtual`, `software` or `other`.
    pub kind: String,
    /// Vulkan API version the driver offers, e.g. "1.3.255".
    pub api_version: String,
    /// Size of the device-local memory heaps, in bytes.
    pub memory: u64,
    /// True only for real GPUs: never for a software rasteriser.
    pub is_gpu: bool,
}

/// Names of software implementations that may not say so in their device type.
const SOFTWARE_NAMES: &[&str] = &["llvmpipe", "lavapipe", "swiftshader", "softpipe"];

/// Whether a device name is a software implementation (also used on llama.cpp's device list).
pub fn is_software_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SOFTWARE_NAMES.iter().any(|s| lower.contains(s))
}

/// What kind of device this is, from its Vulkan type and name. A CPU-type device, or one named
/// like a software rasteriser, is `software` whatever else it claims.
pub fn classify(device_type: vk::PhysicalDeviceType, name: &str) -> &'static str {
    if device_type == vk::PhysicalDeviceType::CPU || is_software_name(name) {
        return "software";
    }
    match device_type {
        vk::PhysicalDeviceType::DISCRETE_GPU => "discrete",
        vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated",
        vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual",
        _ => "other",
    }
}

/// Whether a device of this kind (from [`classify`]) is a real GPU.
pub fn counts_as_gpu(kind: &str) -> bool {
    matches!(kind, "discrete" | "integrated" | "virtual")
}

/// Asks the Vulkan loader. Only call this in the isolated child (`doctor --probe-gpu vulkan`).
pub fn probe() -> VulkanReport {
    // SAFETY: loading the loader library runs its initialisers; that is why this runs in a child.
    let entry = match unsafe { ash::Entry::load() } {
        Ok(e) => e,
        Err(_) => {
            return VulkanReport {
                note: Some("Vulkan loader (libvulkan.so.1) not found: install libvulkan1 and a Vulkan driver to use Vulkan".into()),
                devices: Vec::new(),
            }
        }
    };
    let app = vk::ApplicationInfo::default().api_version(vk::make_api_version(0, 1, 1, 0));
    let create = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: plain instance creation with no layers or extensions; destroyed below.
    let instance = match unsafe { entry.create_instance(&create, None) } {
        Ok(i) => i,
        Err(e) => {
            return VulkanReport {
                note: Some(format!("the Vulkan loader found no usable driver ({e})")),
                devices: Vec::new(),
            }
        }
    };
    let mut report = VulkanReport::default();
    // SAFETY: the instance is valid until destroy_instance below; handles are not kept.
    unsafe {
        match instance.enumerate_physical_devices() {
            Ok(list) => {
                for pd in list {
                    let props = instance.get_physical_device_properties(pd);
                    let name = props
                        .device_name_as_c_str()
                        .map(CStr::to_string_lossy)
                        .unwrap_or_default()
                        .into_owned();
                    let memory = instance.get_physical_device_memory_properties(pd);
                    let local: u64 = memory
                        .memory_heaps_as_slice()
                        .iter()
                        .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
                        .map(|h| h.size)
                        .sum();
                    let kind = classify(props.device_type, &name);
                    let v = props.api_version;
                    report.devices.push(VulkanDevice {
                        name,
                        kind: kind.to_string(),
                        api_version: format!(
                            "{}.{}.{}",
                            vk::api_version_major(v),
                            vk::api_version_minor(v),
                            vk::api_version_patch(v)
                        ),
                        memory: local,
                        is_gpu: counts_as_gpu(kind),
                    });
                }
            }
            Err(e) => report.note = Some(format!("Vulkan could not list devices ({e})")),
        }
        instance.destroy_instance(None);
    }
    if report.devices.is_empty() && report.note.is_none() {
        report.note = Some("the Vulkan loader is installed but no driver offers a device".into());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvmpipe_is_software_and_not_a_gpu() {
        let kind = classify(
            vk::PhysicalDeviceType::CPU,
            "llvmpipe (LLVM 15.0.6, 256 bits)",
        );
        assert_eq!(kind, "software");
        assert!(!counts_as_gpu(kind));
        // Even if a driver mislabels it, the name gives it away.
        assert_eq!(
            classify(vk::PhysicalDeviceType::INTEGRATED_GPU, "SwiftShader Device"),
            "software"
        );
    }

    #[test]
    fn real_gpus_count() {
        assert_eq!(
            classify(
                vk::PhysicalDeviceType::DISCRETE_GPU,
                "NVIDIA H100 80GB HBM3"
            ),
            "discrete"
        );
        assert_eq!(
            classify(
                vk::PhysicalDeviceType::INTEGRATED_GPU,
                "Intel(R) UHD Graphics 770"
            ),
            "integrated"
        );
        assert!(counts_as_gpu("discrete") && counts_as_gpu("integrated"));
    }
}

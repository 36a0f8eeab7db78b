//! OpenVINO devices (Intel CPU, GPU, NPU) through the `openvino` crate with runtime linking: the
//! crate builds without OpenVINO installed and looks for `libopenvino_c` only when asked
//! (`OPENVINO_INSTALL_DIR`, the library path, `/opt/intel/openvino`). Runs in an isolated child
//! like the other driver probes, since loading OpenVINO loads its device plugins.
//!
//! What this finds is the runtime, not a way to use it: llama.cpp's OpenVINO backend has no cargo
//! feature, so a `gemma-engine-openvino` build is needed before `auto` can choose OpenVINO.

use openvino::{Core, PropertyKey, SetupError};
use serde::{Deserialize, Serialize};

/// What the OpenVINO runtime says about this machine's devices.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OpenvinoReport {
    /// Why no device could be listed (runtime absent, ...), as a fact.
    pub note: Option<String>,
    /// Every device the runtime lists.
    pub devices: Vec<OpenvinoDevice>,
}

/// One OpenVINO device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenvinoDevice {
    /// OpenVINO's device name: `CPU`, `GPU`, `GPU.1`, `NPU`, ...
    pub name: String,
    /// Its full name (`FULL_DEVICE_NAME`, e.g. the CPU or GPU model), if the plugin says.
    pub full_name: Option<String>,
}

/// Asks OpenVINO. Only call this in the isolated child (`doctor --probe-gpu openvino`).
pub fn probe(install_dir: Option<&std::path::Path>) -> OpenvinoReport {
    if let Some(lib) = install_dir.and_then(wheel_library) {
        // Loaded here, Core::new() below uses it instead of searching.
        if let Err(e) = openvino_sys::library::load_from(&lib) {
            return OpenvinoReport {
                note: Some(format!(
                    "OpenVINO at {} could not be loaded: {e}",
                    lib.display()
                )),
                devices: Vec::new(),
            };
        }
    }
    let core = match Core::new() {
        Ok(c) => c,
        Err(SetupError::Loading(_)) => {
            return OpenvinoReport {
                note: Some("OpenVINO runtime (libopenvino_c) not found: install OpenVINO and set OPENVINO_INSTALL_DIR (an install folder, or the `openvino` folder of the Python package) to use Intel GPUs/NPUs".into()),
                devices: Vec::new(),
            }
        }
        Err(e) => return OpenvinoReport { note: Some(format!("OpenVINO could not start: {e}")), devices: Vec::new() },
    };
    let devices = match core.available_devices() {
        Ok(d) => d,
        Err(e) => {
            return OpenvinoReport {
                note: Some(format!("OpenVINO could not list devices: {e}")),
                devices: Vec::new(),
            }
        }
    };
    let devices = devices
        .iter()
        .map(|d| OpenvinoDevice {
            name: d.as_ref().to_string(),
            full_name: core.get_property(d, &PropertyKey::DeviceFullName).ok(),
        })
        .collect::<Vec<_>>();
    let note = devices
        .is_empty()
        .then(|| "the OpenVINO runtime is installed but lists no device".to_string());
    OpenvinoReport { note, devices }
}

/// `libopenvino_c` in the layout of the Python package (`openvino/libs/libopenvino_c.so.<N>`, no
/// unversioned name), which OpenVINO's own search does not know: `OPENVINO_INSTALL_DIR` pointing
/// at that `openvino` folder finds it (the newest, should there be several).
fn wheel_library(install_dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let dir = install_dir.join("libs");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libopenvino_c.so"))
        })
        .max()
}

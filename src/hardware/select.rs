//! Choosing the backend a model runs on, and saying why.
//!
//! A pure function over an inventory (the GPU builds found and what each one's probe reported,
//! plus signs of GPU hardware seen elsewhere), so every policy case is a unit test. The policy:
//! `cpu` runs on the CPU; one named backend is tried, else the CPU; `auto` takes the first backend
//! of `backend_order` whose build exists, sees a real device of its kind, and has enough free
//! device memory for the model (all layers, or at least a quarter of them with the rest on the
//! CPU). Whenever a GPU was asked for or is there but is not used, the plan carries a `fallback`
//! sentence so the user is told, never left to guess.

use serde::Serialize;

use super::engines::{BuildFinding, FoundBuild};
use super::vulkan::is_software_name;
use crate::config::BackendRequest;
use crate::domain::Backend;
use engine_protocol::{Device, ProbeInfo};

use crate::domain::ModelNeeds;

/// Memory a GPU keeps for itself beyond the model (driver context, fragmentation): at least this,
/// or 5% of what is free.
const DEVICE_RESERVE: u64 = 256 << 20;
/// Partial offload only when at least this share (1/N) of the layers fits on the device.
const MIN_PARTIAL_SHARE: u32 = 4;

/// What selection knows about the machine.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// One finding per GPU backend (absent backends count as "no build").
    pub builds: Vec<BuildFinding>,
    /// Signs of GPU hardware seen outside any build, e.g. (CUDA, "an NVIDIA GPU (driver 550.54)").
    pub hardware: Vec<(Backend, String)>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The backend the model will run on.
    pub backend: Backend,
    /// The GPU build to run; `None` means the CPU engine (`gemma-engine`).
    pub binary: Option<std::path::PathBuf>,
    /// `--gpu-layers` for the engine; `None` on the CPU.
    pub gpu_layers: Option<u32>,
    /// One sentence: the backend and why.
    pub reason: String,
    /// Set when a GPU was asked for, or is present, but is not used: why.
    pub fallback: Option<String>,
    /// Every backend tried and not taken, with why.
    pub rejected: Vec<Rejection>,
}

/// A backend that was tried and not taken.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// The backend.
    pub backend: Backend,
    /// One sentence saying why it was not taken (no build, no device, too little memory, …).
    pub why: String,
    /// Whether the user has reason to expect this backend (build present, hardware present, or
    /// asked for by name): only those make a `fallback`.
    pub expected: bool,
}

/// Chooses the backend for a model with `needs`: what the user asked for (`request`), tried in
/// `order` under `auto`, against what the machine has (`inventory`).
pub fn choose(
    request: BackendRequest,
    order: &[Backend],
    inventory: &Inventory,
    needs: &ModelNeeds,
) -> Plan {
    let explicit = request.backend();
    if explicit == Some(Backend::Cpu) {
        return cpu_plan("CPU: asked for (backend = cpu)".into(), None, Vec::new());
    }
    let candidates: Vec<Backend> = match explicit {
        Some(b) => vec![b],
        None => {
            let mut seen = Vec::new();
            for b in order.iter().copied().chain([Backend::Cpu]) {
                if !seen.contains(&b) {
                    seen.push(b);
                }
            }
            seen
        }
    };
    let mut rejected: Vec<Rejection> = Vec::new();
    for backend in candidates {
        if backend == Backend::Cpu {
            // `auto` reached the CPU in the order (last by default).
            break;
        }
        match evaluate(backend, inventory, needs) {
            Ok(mut plan) => {
                plan.fallback = fallback_sentence(&rejected);
                plan.rejected = rejected;
                return plan;
            }
            Err((why, build_found)) => {
                let hardware = inventory.hardware.iter().any(|(b, _)| *b == backend);
                rejected.push(Rejection {
                    backend,
                    why,
                    expected: explicit.is_some() || build_found || hardware,
                });
            }
        }
    }
    let reason = match (&explicit, rejected.as_slice()) {
        (Some(b), [r, ..]) => format!(
            "CPU: {} was asked for but cannot be used: {}",
            b.label(),
            r.why
        ),
        (None, []) => "CPU: first in backend_order".to_string(),
        (None, list) if list.iter().all(|r| !r.expected) => {
            "CPU: no GPU build of gemma-engine and no GPU found".to_string()
        }
        (None, list) => format!(
            "CPU: {}",
            list.iter()
                .filter(|r| r.expected)
                .map(|r| format!("{}: {}", r.backend.label(), r.why))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        (Some(_), []) => "CPU".to_string(),
    };
    let fallback = fallback_sentence(&rejected);
    cpu_plan(reason, fallback, rejected)
}

fn cpu_plan(reason: String, fallback: Option<String>, rejected: Vec<Rejection>) -> Plan {
    Plan {
        backend: Backend::Cpu,
        binary: None,
        gpu_layers: None,
        reason,
        fallback,
        rejected,
    }
}

fn fallback_sentence(rejected: &[Rejection]) -> Option<String> {
    let expected: Vec<String> = rejected
        .iter()
        .filter(|r| r.expected)
        .map(|r| format!("{} not used: {}", r.backend.label(), r.why))
        .collect();
    (!expected.is_empty()).then(|| expected.join("; "))
}

/// A plan on `backend`, or why not (and whether a build of it exists).
fn evaluate(
    backend: Backend,
    inventory: &Inventory,
    needs: &ModelNeeds,
) -> Result<Plan, (String, bool)> {
    let (build, probe) = usable_build(backend, inventory)?;
    let device = best_device(backend, probe)?;
    fit(backend, build, device, needs)
}

/// The backend's build and its probe, when the build exists, runs, and has the backend.
fn usable_build(
    backend: Backend,
    inventory: &Inventory,
) -> Result<(&FoundBuild, &ProbeInfo), (String, bool)> {
    let name = backend.binary_name();
    let finding = inventory.builds.iter().find(|f| f.backend == backend);
    let build = match finding.map(|f| &f.found) {
        Some(Ok(build)) => build,
        Some(Err(why)) => return Err((with_hardware(why.clone(), backend, inventory), false)),
        None => {
            return Err((
                with_hardware(
                    format!(
                        "no {name} build found: build one with scripts/build-gpu.sh {}",
                        backend.id()
                    ),
                    backend,
                    inventory,
                ),
                false,
            ))
        }
    };
    let probe = build
        .probe
        .as_ref()
        .map_err(|e| (format!("{name} cannot run here: {e}"), true))?;
    if !probe.backends.iter().any(|b| backend.matches(b)) {
        // A backend compiled in but absent at run time found no device: it registers nothing
        // without its driver (CUDA without libcuda, for one).
        let why = if probe.features.iter().any(|f| backend.matches(f)) {
            format!(
                "{name} ({}) has {label} compiled in, but {label} found no device here (no GPU, or its driver is not loaded); it reports only {}",
                build.path.display(),
                probe.backends.join(", "),
                label = backend.label(),
            )
        } else {
            format!(
                "{name} ({}) was built without the {} backend (it reports {})",
                build.path.display(),
                backend.label(),
                probe.backends.join(", ")
            )
        };
        return Err((with_hardware(why, backend, inventory), true));
    }
    Ok((build, probe))
}

/// The real device of the backend with the most free memory.
fn best_device(backend: Backend, probe: &ProbeInfo) -> Result<&Device, (String, bool)> {
    let name = backend.binary_name();
    let devices: Vec<&Device> = probe
        .devices
        .iter()
        .filter(|d| backend.matches(&d.backend) && is_real_device(d))
        .collect();
    let Some(device) = devices.iter().max_by_key(|d| d.memory_free).copied() else {
        let on_cpu = probe
            .devices
            .iter()
            .any(|d| backend.matches(&d.backend) && is_openvino_cpu(d));
        let why = if on_cpu {
            format!("{name}'s only OpenVINO device is OpenVINO's CPU plugin (GGML_OPENVINO_DEVICE=CPU), which is the CPU, not an accelerator: with an Intel GPU or NPU and its driver, set GGML_OPENVINO_DEVICE=GPU or NPU")
        } else {
            format!(
                "{name} finds no {} device on this machine (no GPU, or its driver is not loaded)",
                backend.label()
            )
        };
        return Err((why, true));
    };
    Ok(device)
}

/// How much of the model fits on `device`: all layers, enough of them, or none.
fn fit(
    backend: Backend,
    build: &FoundBuild,
    device: &Device,
    needs: &ModelNeeds,
) -> Result<Plan, (String, bool)> {
    let need = needs.estimate.total();
    let reserve = DEVICE_RESERVE.max(device.memory_free / 20);
    let usable = device.memory_free.saturating_sub(reserve);
    let shown = device_name(device);
    let base = Plan {
        backend,
        binary: Some(build.path.clone()),
        gpu_layers: None,
        reason: String::new(),
        fallback: None,
        rejected: Vec::new(),
    };
    if need <= usable {
        return Ok(Plan {
            gpu_layers: Some(if needs.layers > 0 {
                needs.layers + 1
            } else {
                999
            }),
            reason: format!(
                "{}: {shown} has {} free ≥ {} needed; all layers on the GPU",
                backend.label(),
                bytes(device.memory_free),
                bytes(need)
            ),
            ..base
        });
    }
    if needs.layers > 0 {
        let per_layer = (needs.estimate.weights + needs.estimate.kv_cache) / needs.layers as u64;
        let fit = usable.saturating_sub(needs.estimate.compute) / per_layer.max(1);
        let fit = fit.min(needs.layers as u64) as u32;
        if fit > 0 && fit * MIN_PARTIAL_SHARE >= needs.layers {
            return Ok(Plan {
                gpu_layers: Some(fit),
                reason: format!(
                    "{}: {fit} of {} layers on {shown} ({} free < {} needed for all), the rest on the CPU",
                    backend.label(),
                    needs.layers,
                    bytes(device.memory_free),
                    bytes(need)
                ),
                ..base
            });
        }
    }
    Err((
        format!(
            "{shown}: {} free < {} needed",
            bytes(device.memory_free),
            bytes(need)
        ),
        true,
    ))
}

/// A device of a GPU backend that is really a GPU: not the CPU, not a software rasteriser, not
/// OpenVINO's CPU plugin (which llama.cpp reports as a GPU-type device).
pub fn is_real_device(d: &Device) -> bool {
    d.kind != "cpu"
        && !is_software_name(&d.description)
        && !is_software_name(&d.name)
        && !is_openvino_cpu(d)
}

/// llama.cpp's OpenVINO backend offers the OpenVINO device chosen by `GGML_OPENVINO_DEVICE`
/// (default CPU) and describes it as "GGML_OPENVINO_DEVICE=CPU (selected) - <CPU name>".
fn is_openvino_cpu(d: &Device) -> bool {
    Backend::Openvino.matches(&d.backend)
        && d.description
            .strip_prefix("GGML_OPENVINO_DEVICE=")
            .is_some_and(|rest| rest.starts_with("CPU"))
}

fn device_name(d: &Device) -> String {
    if d.description.is_empty() {
        d.name.clone()
    } else {
        d.description.clone()
    }
}

fn with_hardware(why: String, backend: Backend, inventory: &Inventory) -> String {
    match inventory.hardware.iter().find(|(b, _)| *b == backend) {
        Some((_, what)) => format!("{what} is present, but {why}"),
        None => why,
    }
}

/// Bytes for people: "1.2 GiB", "380 MiB".
pub fn bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", (n + (1 << 19)) >> 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MemoryEstimate;

    const GIB: u64 = 1 << 30;

    fn needs(total_gib: f64) -> ModelNeeds {
        let total = (total_gib * GIB as f64) as u64;
        ModelNeeds {
            layers: 26,
            estimate: MemoryEstimate {
                weights: total * 8 / 10,
                kv_cache: total / 10,
                compute: total - total * 8 / 10 - total / 10,
            },
        }
    }

    fn device(backend: &str, name: &str, kind: &str, free: u64) -> Device {
        Device {
            name: name.into(),
            description: name.into(),
            backend: backend.into(),
            kind: kind.into(),
            memory_total: free * 2,
            memory_free: free,
        }
    }

    fn build(backend: Backend, backends: &[&str], devices: Vec<Device>) -> BuildFinding {
        BuildFinding {
            backend,
            found: Ok(FoundBuild {
                path: format!("/opt/{}", backend.binary_name()).into(),
                source: "configured".into(),
                probe: Ok(ProbeInfo {
                    protocol: 1,
                    backends: backends.iter().map(|s| s.to_string()).collect(),
                    devices,
                    features: vec![],
                    cpu_features: vec![],
                    vision: false,
                }),
            }),
        }
    }

    fn missing(backend: Backend) -> BuildFinding {
        BuildFinding {
            backend,
            found: Err(format!("no {} build found", backend.binary_name())),
        }
    }

    fn cuda_with_free(free: u64) -> Inventory {
        Inventory {
            builds: vec![build(
                Backend::Cuda,
                &["CUDA", "CPU"],
                vec![
                    device("CUDA", "NVIDIA H100", "gpu", free),
                    device("CPU", "CPU", "cpu", 64 * GIB),
                ],
            )],
            hardware: vec![],
        }
    }

    fn auto(inv: &Inventory, n: &ModelNeeds) -> Plan {
        choose(
            BackendRequest::Auto,
            &crate::config::backend::default_order(),
            inv,
            n,
        )
    }

    #[test]
    fn enough_memory_offloads_every_layer() {
        let plan = auto(&cuda_with_free(70 * GIB), &needs(5.1));
        assert_eq!(plan.backend, Backend::Cuda);
        assert_eq!(plan.gpu_layers, Some(27));
        assert_eq!(
            plan.binary.as_deref(),
            Some(std::path::Path::new("/opt/gemma-engine-cuda"))
        );
        assert!(
            plan.reason.contains("NVIDIA H100") && plan.reason.contains("all layers"),
            "{}",
            plan.reason
        );
        assert_eq!(plan.fallback, None);
    }

    #[test]
    fn too_little_memory_falls_back_to_the_cpu_with_the_figures() {
        let plan = auto(&cuda_with_free(GIB + GIB / 5), &needs(5.1));
        assert_eq!(plan.backend, Backend::Cpu);
        assert_eq!(plan.gpu_layers, None);
        let fallback = plan
            .fallback
            .expect("a GPU build was there: the user must be told");
        assert!(
            fallback.contains("CUDA") && fallback.contains("1.2 GiB free < 5.1 GiB needed"),
            "{fallback}"
        );
        assert!(
            plan.reason.contains("1.2 GiB free < 5.1 GiB needed"),
            "{}",
            plan.reason
        );
    }

    #[test]
    fn partial_fit_offloads_part_of_the_layers() {
        let plan = auto(&cuda_with_free(3 * GIB), &needs(5.1));
        assert_eq!(plan.backend, Backend::Cuda);
        let layers = plan.gpu_layers.unwrap();
        assert!((7..26).contains(&layers), "{layers}");
        assert!(
            plan.reason.contains(&format!("{layers} of 26 layers")),
            "{}",
            plan.reason
        );
    }

    #[test]
    fn no_builds_and_no_gpu_is_a_quiet_cpu_choice() {
        let inv = Inventory {
            builds: Backend::GPU.into_iter().map(missing).collect(),
            hardware: vec![],
        };
        let plan = auto(&inv, &needs(0.4));
        assert_eq!(plan.backend, Backend::Cpu);
        assert_eq!(
            plan.reason,
            "CPU: no GPU build of gemma-engine and no GPU found"
        );
        assert_eq!(plan.fallback, None);
        assert_eq!(plan.rejected.len(), 3);
    }

    #[test]
    fn a_gpu_without_its_build_is_a_fallback_with_the_fix() {
        let inv = Inventory {
            builds: Backend::GPU.into_iter().map(missing).collect(),
            hardware: vec![(Backend::Cuda, "an NVIDIA GPU".into())],
        };
        let plan = auto(&inv, &needs(0.4));
        assert_eq!(plan.backend, Backend::Cpu);
        let fallback = plan.fallback.unwrap();
        assert!(
            fallback.contains("an NVIDIA GPU is present, but no gemma-engine-cuda build found"),
            "{fallback}"
        );
    }

    #[test]
    fn a_build_without_its_backend_or_device_is_not_used() {
        // A CPU build configured as the CUDA one, e.g. by mistake.
        let inv = Inventory {
            builds: vec![build(
                Backend::Cuda,
                &["CPU"],
                vec![device("CPU", "CPU", "cpu", 64 * GIB)],
            )],
            hardware: vec![],
        };
        let plan = choose(BackendRequest::Cuda, &[], &inv, &needs(0.4));
        assert_eq!(plan.backend, Backend::Cpu);
        assert!(
            plan.reason.contains("built without the CUDA backend"),
            "{}",
            plan.reason
        );
        assert!(plan.fallback.unwrap().contains("CUDA not used"));
        // A CUDA build on a machine without an NVIDIA GPU.
        let inv = Inventory {
            builds: vec![build(
                Backend::Cuda,
                &["CUDA", "CPU"],
                vec![device("CPU", "CPU", "cpu", 64 * GIB)],
            )],
            hardware: vec![],
        };
        assert!(auto(&inv, &needs(0.4))
            .fallback
            .unwrap()
            .contains("finds no CUDA device"));
        // What a real CUDA build reports without the NVIDIA driver (measured here): CUDA compiled
        // in, no CUDA backend registered. That is no device, not a build without CUDA.
        let mut inv = Inventory {
            builds: vec![build(
                Backend::Cuda,
                &["CPU"],
                vec![device("CPU", "CPU", "cpu", 64 * GIB)],
            )],
            hardware: vec![],
        };
        if let Ok(FoundBuild { probe: Ok(p), .. }) = &mut inv.builds[0].found {
            p.features = vec!["cuda".into()];
        }
        let plan = choose(BackendRequest::Cuda, &[], &inv, &needs(0.4));
        assert_eq!(plan.backend, Backend::Cpu);
        assert!(
            plan.reason
                .contains("has CUDA compiled in, but CUDA found no device here"),
            "{}",
            plan.reason
        );
    }

    #[test]
    fn openvinos_cpu_plugin_is_never_the_gpu() {
        // What a real gemma-engine-openvino reports on a machine without an Intel GPU or NPU.
        let cpu_plugin = Device {
            name: "OPENVINO0".into(),
            description: "GGML_OPENVINO_DEVICE=CPU (selected) - Intel(R) Xeon(R) Processor".into(),
            backend: "OPENVINO".into(),
            kind: "gpu".into(),
            memory_total: 24 * GIB,
            memory_free: 24 * GIB,
        };
        let inv = Inventory {
            builds: vec![build(
                Backend::Openvino,
                &["OPENVINO", "CPU"],
                vec![cpu_plugin.clone(), device("CPU", "CPU", "cpu", 24 * GIB)],
            )],
            hardware: vec![],
        };
        let plan = auto(&inv, &needs(0.4));
        assert_eq!(plan.backend, Backend::Cpu);
        let plan = choose(BackendRequest::Openvino, &[], &inv, &needs(0.4));
        assert_eq!(plan.backend, Backend::Cpu);
        assert!(
            plan.reason.contains("OpenVINO's CPU plugin"),
            "{}",
            plan.reason
        );
        // The same build on a machine with an Intel GPU selected is used.
        let gpu = Device {
            description: "GGML_OPENVINO_DEVICE=GPU (selected) - Intel(R) Arc(TM) A770 Graphics"
                .into(),
            ..cpu_plugin
        };
        let inv = Inventory {
            builds: vec![build(Backend::Openvino, &["OPENVINO", "CPU"], vec![gpu])],
            hardware: vec![],
        };
        assert_eq!(auto(&inv, &needs(0.4)).backend, Backend::Openvino);
    }

    #[test]
    fn llvmpipe_in_a_vulkan_build_is_never_the_gpu() {
        let inv = Inventory {
            builds: vec![
                missing(Backend::Cuda),
                build(
                    Backend::Vulkan,
                    &["Vulkan", "CPU"],
                    vec![device(
                        "Vulkan",
                        "llvmpipe (LLVM 15.0.6, 256 bits)",
                        "gpu",
                        20 * GIB,
                    )],
                ),
            ],
            hardware: vec![],
        };
        let plan = auto(&inv, &needs(0.4));
        assert_eq!(plan.backend, Backend::Cpu);
        assert!(plan.fallback.unwrap().contains("finds no Vulkan device"));
    }

    #[test]
    fn order_is_respected_and_later_backends_are_tried() {
        let inv = Inventory {
            builds: vec![
                build(
                    Backend::Cuda,
                    &["CUDA", "CPU"],
                    vec![device("CUDA", "NVIDIA T4", "gpu", GIB / 2)],
                ),
                build(
                    Backend::Vulkan,
                    &["Vulkan", "CPU"],
                    vec![device("Vulkan", "AMD Radeon", "gpu", 16 * GIB)],
                ),
            ],
            hardware: vec![],
        };
        let plan = auto(&inv, &needs(2.0));
        assert_eq!(plan.backend, Backend::Vulkan);
        assert!(
            plan.fallback.unwrap().contains("CUDA not used"),
            "the skipped CUDA build is reported"
        );
        let cpu_first = choose(
            BackendRequest::Auto,
            &[Backend::Cpu, Backend::Cuda],
            &inv,
            &needs(2.0),
        );
        assert_eq!(cpu_first.backend, Backend::Cpu);
        assert_eq!(cpu_first.fallback, None);
        let vulkan_first = choose(
            BackendRequest::Auto,
            &[Backend::Vulkan, Backend::Cuda],
            &inv,
            &needs(2.0),
        );
        assert_eq!(
            (vulkan_first.backend, vulkan_first.fallback),
            (Backend::Vulkan, None)
        );
    }

    #[test]
    fn asking_for_cpu_probes_nothing_and_asking_for_a_missing_build_says_so() {
        let plan = choose(
            BackendRequest::Cpu,
            &[],
            &cuda_with_free(70 * GIB),
            &needs(0.4),
        );
        assert_eq!((plan.backend, plan.fallback), (Backend::Cpu, None));
        let plan = choose(
            BackendRequest::Vulkan,
            &[],
            &cuda_with_free(70 * GIB),
            &needs(0.4),
        );
        assert_eq!(plan.backend, Backend::Cpu);
        assert!(
            plan.reason.contains("Vulkan was asked for"),
            "{}",
            plan.reason
        );
        assert!(plan
            .fallback
            .unwrap()
            .contains("no gemma-engine-vulkan build found"));
    }

    #[test]
    fn a_build_that_cannot_run_is_reported() {
        let inv = Inventory {
            builds: vec![BuildFinding {
                backend: Backend::Cuda,
                found: Ok(FoundBuild {
                    path: "/opt/gemma-engine-cuda".into(),
                    source: "configured".into(),
                    probe: Err("exit status 127: libcuda.so.1: cannot open".into()),
                }),
            }],
            hardware: vec![],
        };
        let plan = auto(&inv, &needs(0.4));
        assert_eq!(plan.backend, Backend::Cpu);
        assert!(plan.fallback.unwrap().contains("libcuda.so.1"));
    }
}

//! `gemmactl doctor`: what this machine has, which engines are built, and on which backend each
//! registered model would run, and why.
//!
//! The gathering lives in `report.rs`; this module prints it (text or `--json`) and hosts the
//! hidden `--probe-gpu KIND` child that the report runs to ask one driver in isolation.

mod report;

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::config::{Config, Paths};
use crate::hardware::cpu_usable;
use crate::hardware::select::{bytes, is_real_device};
use crate::models::registry::Registry;
use report::Report;

/// `gemmactl doctor`'s arguments.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the whole report as one JSON object
    #[arg(long)]
    json: bool,
    /// Internal: run one driver probe (nvidia, vulkan, openvino) in this process and print JSON
    #[arg(long, hide = true, value_name = "KIND")]
    probe_gpu: Option<String>,
}

/// Runs `gemmactl doctor`: prints the report (or answers a `--probe-gpu` request as the child).
pub fn run(args: DoctorArgs, paths: &Paths, config: &Config) -> Result<ExitCode> {
    if let Some(kind) = &args.probe_gpu {
        println!(
            "{}",
            report::probe_child(config, kind).map_err(anyhow::Error::msg)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    // A broken registry is reported, not fatal: the hardware part is still worth having.
    let (models, registry_note) = match Registry::load(paths) {
        Ok(r) => (r.entries().into_iter().cloned().collect::<Vec<_>>(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let report = report::gather(config, &models);
    // Remote models: is each server reachable, and which models does it serve?
    let remotes: Vec<(String, String, super::remote::Reach)> = models
        .iter()
        .filter(|m| m.engine == crate::models::EngineKind::Remote)
        .map(|m| {
            (
                m.name.clone(),
                m.location(),
                super::remote::reach(config, m),
            )
        })
        .collect();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["remote_models"] = remotes
            .iter()
            .map(|(name, url, reach)| {
                serde_json::json!({
                    "model": name,
                    "url": url,
                    "remote_model": reach.id,
                    "reachable": reach.served.is_ok(),
                    "serves_model": reach.serves(),
                    "served_models": reach.served.as_ref().ok(),
                    "error": reach.served.as_ref().err(),
                })
            })
            .collect();
        value["backend"] = serde_json::to_value(config.engine.backend)?;
        value["backend_order"] = serde_json::to_value(&config.engine.backend_order)?;
        value["registry_error"] = serde_json::to_value(&registry_note)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&report, config, registry_note.as_deref()));
        for (name, url, reach) in &remotes {
            let state = match &reach.served {
                Ok(list) if reach.serves() => format!("reachable, serves {}", list.join(", ")),
                Ok(list) => format!(
                    "reachable, but serves no model {:?} (it serves {})",
                    reach.id,
                    list.join(", ")
                ),
                Err(why) => why.clone(),
            };
            println!("Remote    {name} at {url}: {state}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text report (a pure function of the report, so its wording is easy to check).
pub fn render(r: &Report, config: &Config, registry_note: Option<&str>) -> String {
    let mut out = Vec::new();
    render_machine(r, &mut out);
    render_gpus(r, &mut out);
    render_engines(r, &mut out);
    render_models(r, config, registry_note, &mut out);
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// CPU and memory.
fn render_machine(r: &Report, out: &mut Vec<String>) {
    let mut line = |s: String| out.push(s);
    let cores = match r.cpu.physical_cores {
        Some(p) => format!("{} threads, {p} cores", r.cpu.logical_cores),
        None => format!("{} threads", r.cpu.logical_cores),
    };
    let simd = if r.cpu.simd.is_empty() {
        "no SIMD extensions reported".to_string()
    } else {
        r.cpu.simd.join(" ")
    };
    line(format!(
        "CPU       {} · {} · {cores} · {simd}",
        r.cpu.model, r.cpu.arch
    ));
    if !r.cpu_extensions.is_empty() {
        let usable: Vec<&str> = r
            .cpu_extensions
            .iter()
            .filter(|e| e.usable())
            .map(|e| e.name)
            .collect();
        // Advertised by CPUID but refused by the OS or the hypervisor: the case a build that
        // trusted CPUID would die on.
        let refused: Vec<String> = r
            .cpu_extensions
            .iter()
            .filter(|e| e.advertised && !e.usable())
            .map(|e| {
                let why = if !e.os_enabled {
                    "not enabled by the OS"
                } else {
                    "did not run"
                };
                format!("{} ({why})", e.name)
            })
            .collect();
        let refused = if refused.is_empty() {
            String::new()
        } else {
            format!(" · advertised but not usable: {}", refused.join(", "))
        };
        line(format!(
            "          usable for llama.cpp (checked by running them): {}{refused}",
            usable.join(" ")
        ));
    }
    let opt = |v: Option<u64>| v.map(bytes).unwrap_or_else(|| "?".into());
    line(format!(
        "Memory    {} total, {} available",
        opt(r.memory.total),
        opt(r.memory.available)
    ));
}

/// What each GPU driver reports.
fn render_gpus(r: &Report, out: &mut Vec<String>) {
    let mut line = |s: String| out.push(s);
    match (&r.nvidia.note, r.nvidia.gpus.is_empty()) {
        (Some(note), true) => line(format!("NVIDIA    none: {note}")),
        _ => {
            let versions = format!(
                "driver {} · CUDA {}",
                r.nvidia.driver_version.as_deref().unwrap_or("?"),
                r.nvidia.cuda_version.as_deref().unwrap_or("?")
            );
            line(format!(
                "NVIDIA    {} GPU(s) · {versions}",
                r.nvidia.gpus.len()
            ));
            for g in &r.nvidia.gpus {
                line(format!(
                    "          GPU {}: {} · {} free of {} · compute capability {}",
                    g.index,
                    g.name,
                    bytes(g.memory_free),
                    bytes(g.memory_total),
                    g.compute_capability.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    if r.vulkan.devices.is_empty() {
        line(format!(
            "Vulkan    none: {}",
            r.vulkan.note.as_deref().unwrap_or("no device")
        ));
    } else {
        let gpus = r.vulkan.devices.iter().filter(|d| d.is_gpu).count();
        line(format!(
            "Vulkan    {} device(s), {gpus} GPU(s)",
            r.vulkan.devices.len()
        ));
        for d in &r.vulkan.devices {
            let what = if d.is_gpu {
                format!("{} GPU", d.kind)
            } else {
                format!("{}, not a GPU", d.kind)
            };
            line(format!(
                "          {} · {what} · Vulkan {} · {} device memory",
                d.name,
                d.api_version,
                bytes(d.memory)
            ));
        }
    }
    if r.openvino.devices.is_empty() {
        line(format!(
            "OpenVINO  none: {}",
            r.openvino.note.as_deref().unwrap_or("no device")
        ));
    } else {
        let list: Vec<String> = r
            .openvino
            .devices
            .iter()
            .map(|d| match &d.full_name {
                Some(f) => format!("{} ({f})", d.name),
                None => d.name.clone(),
            })
            .collect();
        line(format!("OpenVINO  {}", list.join(", ")));
    }
}

/// The engine builds and gemma.cpp.
fn render_engines(r: &Report, out: &mut Vec<String>) {
    let mut line = |s: String| out.push(s);
    line("Engines".into());
    let e = &r.engines;
    match (&e.gemma_engine.path, &e.gemma_engine.probe) {
        (Ok(path), Ok(p)) => {
            let built_for = if p.cpu_features.is_empty() {
                String::new()
            } else {
                format!(" · built for {}", p.cpu_features.join(" "))
            };
            line(format!(
                "  {:<22} {} · backends: {}{built_for}",
                "gemma-engine",
                path.display(),
                p.backends.join(", ")
            ));
            for l in build_fit_lines(&p.cpu_features, &r.cpu_extensions) {
                line(l);
            }
        }
        (Ok(path), Err(why)) => line(format!(
            "  {:<22} {} · probe failed: {why}",
            "gemma-engine",
            path.display()
        )),
        (Err(why), _) => line(format!("  {:<22} missing: {why}", "gemma-engine")),
    }
    for b in &e.gpu_builds {
        let name = b.backend.binary_name();
        match &b.found {
            Err(why) => line(format!("  {name:<22} {why}")),
            Ok(found) => match &found.probe {
                Ok(p) => {
                    let devices: Vec<String> = p
                        .devices
                        .iter()
                        .filter(|d| d.kind != "cpu")
                        .map(|d| {
                            let what = if is_real_device(d) {
                                format!("{} free", bytes(d.memory_free))
                            } else {
                                "the CPU or a software device, not counted as a GPU".to_string()
                            };
                            format!("{} ({what})", d.description)
                        })
                        .collect();
                    let devices = if devices.is_empty() {
                        "no GPU device".to_string()
                    } else {
                        devices.join(", ")
                    };
                    // Compiled-in features and the backends that came up can differ: a CUDA
                    // build on a machine without the driver registers only the CPU.
                    let built_with = if p.features.is_empty() {
                        String::new()
                    } else {
                        format!(" · built with {}", p.features.join(", "))
                    };
                    line(format!(
                        "  {name:<22} {} ({}){built_with} · backends: {} · {devices}",
                        found.path.display(),
                        found.source,
                        p.backends.join(", ")
                    ));
                }
                Err(why) => line(format!(
                    "  {name:<22} {} ({}) · cannot run: {why}",
                    found.path.display(),
                    found.source
                )),
            },
        }
    }
    match &e.gemma_cpp.path {
        Ok(p) => line(format!("  {:<22} {} · CPU only", "gemma.cpp", p.display())),
        Err(why) => line(format!("  {:<22} {why}", "gemma.cpp")),
    }
}

/// What doctor says under the gemma-engine line about its CPU extensions against this machine's:
/// a warning for one it was built for and cannot run here, a note for usable ones it leaves idle.
/// Nothing for an engine too old to report what it was built for.
fn build_fit_lines(built_for: &[String], here: &[cpu_usable::Extension]) -> Vec<String> {
    if built_for.is_empty() {
        return Vec::new();
    }
    let fit = cpu_usable::fit(built_for, here);
    let mut out = Vec::new();
    if !fit.unusable.is_empty() {
        out.push(format!(
            "  {:<22} warning: built for {}, which this CPU or OS cannot run: it will die with SIGILL; rebuild with ./scripts/setup.sh (it builds for what runs here)",
            "",
            fit.unusable.join(" ")
        ));
    }
    if !fit.unused.is_empty() {
        out.push(format!(
            "  {:<22} note: not built for {}, which this CPU can run: a portable build, or left off by scripts/setup.sh, which says why (a compiler that cannot build it correctly)",
            "",
            fit.unused.join(" ")
        ));
    }
    out
}

/// Where each registered model would run, and why.
fn render_models(r: &Report, config: &Config, registry_note: Option<&str>, out: &mut Vec<String>) {
    let mut line = |s: String| out.push(s);
    let order: Vec<&str> = config.engine.backend_order.iter().map(|b| b.id()).collect();
    let asked = serde_json::to_value(config.engine.backend)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    line(format!(
        "Models    (backend = {asked}, backend_order = {})",
        order.join(", ")
    ));
    if let Some(note) = registry_note {
        line(format!("  cannot read the model registry: {note}"));
    } else if r.models.is_empty() {
        line("  no models registered: `gemmactl models pull` adds the default one".into());
    }
    for m in &r.models {
        let layers = m
            .gpu_layers
            .map(|n| format!(" ({n} GPU layers)"))
            .unwrap_or_default();
        let needs = m
            .needs
            .map(|n| format!(" · needs {}", bytes(n)))
            .unwrap_or_default();
        line(format!(
            "  {:<22} {}{layers}{needs} · {}",
            m.model,
            m.backend.label(),
            m.reason
        ));
        if let Some(f) = &m.fallback {
            line(format!("  {:<22} └ fallback: {f}", ""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build_fit_lines;
    use crate::hardware::cpu_usable::Extension;

    fn here(name: &'static str, usable: bool) -> Extension {
        Extension {
            name,
            ggml_options: &[],
            advertised: true,
            os_enabled: true,
            runs: Some(usable),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_build_this_machine_cannot_run_is_a_warning_and_idle_extensions_a_note() {
        let machine = [
            here("AVX2", true),
            here("AVX512", true),
            here("AMX_INT8", false),
        ];
        // Built for what runs: nothing to say.
        assert!(build_fit_lines(&names(&["AVX2", "AVX512"]), &machine).is_empty());
        // Built for AMX the OS refuses: the SIGILL warning, naming the rebuild.
        let lines = build_fit_lines(&names(&["AVX2", "AVX512", "AMX_INT8"]), &machine);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("warning: built for AMX_INT8")
                && lines[0].contains("SIGILL")
                && lines[0].contains("./scripts/setup.sh"),
            "{lines:?}"
        );
        // A portable build on an AVX-512 machine: the note, no warning.
        let lines = build_fit_lines(&names(&["AVX2"]), &machine);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("note: not built for AVX512"), "{lines:?}");
        // An engine that reports nothing (older than the field): nothing.
        assert!(build_fit_lines(&[], &machine).is_empty());
    }
}

//! `gemmactl doctor` on this GPU-less machine: missing drivers are facts, Mesa's software Vulkan
//! device is not a GPU, the CPU is chosen with its reason, and a driver probe that crashes or
//! hangs is reported instead of taking gemmactl down.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{stderr, stdout, Home};

fn registered_home() -> Home {
    let home = Home::new();
    let model = common::default_model();
    let out = home.run(&["models", "add", "gemma3-270m", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    home
}

fn doctor_json(home: &Home, env: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = home.cmd();
    cmd.env_remove("GEMMACTL_BACKEND")
        .env_remove("GEMMACTL_ENGINE_CUDA")
        .env_remove("GEMMACTL_TEST_PROBE_FAULT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .args(["doctor", "--json"])
        .output()
        .expect("spawn gemmactl");
    assert!(out.status.success(), "doctor failed: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("doctor --json is one JSON object")
}

fn nvidia_driver_here() -> bool {
    Path::new("/proc/driver/nvidia/version").exists()
}

#[test]
fn missing_nvidia_driver_is_a_fact_and_the_cpu_is_chosen_with_its_reason() {
    let home = registered_home();
    let v = doctor_json(&home, &[]);
    if !nvidia_driver_here() {
        assert_eq!(v["nvidia"]["gpus"], serde_json::json!([]));
        let note = v["nvidia"]["note"].as_str().unwrap();
        assert!(
            note.contains("libnvidia-ml.so.1") || note.contains("driver"),
            "{note}"
        );
    }
    assert!(v["cpu"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(v["memory"]["total"].as_u64().unwrap() > 0);
    assert_eq!(
        v["engines"]["gemma_engine"]["probe"]["ok"]["backends"],
        serde_json::json!(["CPU"])
    );
    let models = v["models"].as_array().unwrap();
    let m = models
        .iter()
        .find(|m| m["model"] == "gemma3-270m")
        .expect("the registered model is listed");
    assert_eq!(m["backend"], "cpu");
    assert!(m["gpu_layers"].is_null());
    let reason = m["reason"].as_str().unwrap();
    assert!(reason.starts_with("CPU: "), "{reason}");
    assert!(
        m["needs"].as_u64().unwrap() > 200 << 20,
        "the memory estimate is shown: {m}"
    );
}

#[test]
fn llvmpipe_is_listed_as_software_and_never_counted_as_a_gpu() {
    let has_lavapipe = std::fs::read_dir("/usr/share/vulkan/icd.d")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
        })
        .unwrap_or(false);
    let home = Home::new();
    let v = doctor_json(&home, &[]);
    let devices = v["vulkan"]["devices"].as_array().unwrap();
    let llvmpipe: Vec<_> = devices
        .iter()
        .filter(|d| d["name"].as_str().unwrap_or("").contains("llvmpipe"))
        .collect();
    if has_lavapipe {
        assert!(
            !llvmpipe.is_empty(),
            "Mesa's lavapipe is installed (scripts/setup.sh) but doctor did not list it: {}",
            v["vulkan"]
        );
    }
    for d in llvmpipe {
        assert_eq!(d["kind"], "software");
        assert_eq!(d["is_gpu"], false);
    }
    let out = home.run(&["doctor"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    if has_lavapipe {
        assert!(
            text.contains("llvmpipe")
                && text.contains("software, not a GPU")
                && text.contains("0 GPU(s)"),
            "{text}"
        );
    }
    for part in [
        "CPU ",
        "Memory ",
        "NVIDIA ",
        "Vulkan ",
        "OpenVINO ",
        "Engines",
        "gemma-engine-cuda",
        "Models ",
    ] {
        assert!(
            text.contains(part),
            "the text report lacks {part:?}:\n{text}"
        );
    }
}

#[test]
fn a_crashing_or_hanging_driver_probe_is_reported_not_fatal() {
    let home = Home::new();
    let v = doctor_json(&home, &[("GEMMACTL_TEST_PROBE_FAULT", "nvidia:crash")]);
    let note = v["nvidia"]["note"].as_str().unwrap();
    assert!(note.contains("nvidia probe crashed (signal 6"), "{note}");
    assert!(
        v["cpu"]["logical_cores"].as_u64().unwrap() >= 1,
        "the rest of the report is there"
    );

    let started = Instant::now();
    let v = doctor_json(
        &home,
        &[
            ("GEMMACTL_TEST_PROBE_FAULT", "vulkan:hang"),
            ("GEMMACTL_PROBE_TIMEOUT", "1"),
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a hung probe held doctor for {:?}",
        started.elapsed()
    );
    let note = v["vulkan"]["note"].as_str().unwrap();
    assert!(note.contains("did not answer within 1 s"), "{note}");
    assert!(
        v["openvino"]["note"].is_string(),
        "other probes still answered"
    );
}

#[test]
fn a_gpu_build_that_cannot_run_is_shown_with_the_cpu_fallback() {
    let home = registered_home();
    let fake = home.path().join("gemma-engine-cuda");
    std::fs::write(&fake, "#!/bin/sh\necho 'error while loading shared libraries: libcuda.so.1: cannot open shared object file' >&2\nexit 127\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let v = doctor_json(&home, &[("GEMMACTL_ENGINE_CUDA", fake.to_str().unwrap())]);
    let cuda = v["engines"]["gpu_builds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == "cuda")
        .unwrap()
        .clone();
    assert!(
        cuda["found"]["ok"]["probe"]["error"]
            .as_str()
            .unwrap()
            .contains("libcuda.so.1"),
        "{cuda}"
    );
    let m = &v["models"][0];
    assert_eq!(m["backend"], "cpu");
    let fallback = m["fallback"].as_str().unwrap();
    assert!(
        fallback.contains("CUDA not used")
            && fallback.contains("cannot run here")
            && fallback.contains("libcuda.so.1"),
        "{fallback}"
    );
}

#[test]
fn openvino_in_the_python_package_layout_is_looked_for_and_a_broken_one_is_a_fact() {
    // The wheel's layout: openvino/libs/libopenvino_c.so.<N>, no unversioned name. A file that
    // is not a library there must be reported, not crash doctor.
    let home = Home::new();
    let package = home.path().join("site-packages").join("openvino");
    std::fs::create_dir_all(package.join("libs")).unwrap();
    std::fs::write(
        package.join("libs").join("libopenvino_c.so.2641"),
        "not an ELF file",
    )
    .unwrap();
    let v = doctor_json(
        &home,
        &[("OPENVINO_INSTALL_DIR", package.to_str().unwrap())],
    );
    let note = v["openvino"]["note"].as_str().unwrap();
    assert!(
        note.contains("libopenvino_c.so.2641") && note.contains("could not be loaded"),
        "{note}"
    );
    assert_eq!(v["openvino"]["devices"], serde_json::json!([]));
}

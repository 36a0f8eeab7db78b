//! Backend choice with real engines: a GPU build that fails to start, hangs, or lacks its backend
//! must leave the model running on the CPU, and every report (`run --stats`, `run --json`, the
//! supervisor's status for `ps`) must say so with the reason. This machine has no GPU, so the
//! "GPU builds" here are a shell script standing in for a broken build, and the real CPU engine
//! configured as if it were the CUDA build.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{stderr, stdout, Home};
use gemmactl::config::BackendRequest;
use gemmactl::config::Config;
use gemmactl::domain::{Backend, GenerateRequest};
use gemmactl::supervisor::{Supervisor, SupervisorEvent};

/// What a CUDA build's `--probe` would print on a machine with a big NVIDIA GPU.
const CUDA_PROBE: &str = r#"{"event":"probe","protocol":1,"backends":["CUDA","CPU"],"devices":[{"name":"CUDA0","description":"NVIDIA H100 80GB HBM3","backend":"CUDA","kind":"gpu","memory_total":85899345920,"memory_free":84000000000},{"name":"CPU","description":"CPU","backend":"CPU","kind":"cpu","memory_total":1,"memory_free":1}],"features":["cuda"]}"#;

/// A fake `gemma-engine-cuda`: answers `--probe` like a CUDA build, and does `on_start` when
/// asked to load a model. Every call is recorded in `calls.log` next to it.
fn fake_cuda_build(dir: &Path, on_start: &str) -> PathBuf {
    let path = dir.join("gemma-engine-cuda");
    let log = dir.join("calls.log");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\nif [ \"$1\" = --probe ]; then echo '{CUDA_PROBE}'; exit 0; fi\n{on_start}\n",
        log.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn run_json(
    home: &Home,
    cuda: &Path,
    extra_env: &[(&str, &str)],
    args: &[&str],
) -> (serde_json::Value, String) {
    let model = common::default_model();
    let mut cmd = home.cmd();
    cmd.env("GEMMACTL_ENGINE_CUDA", cuda)
        .env_remove("GEMMACTL_BACKEND")
        .env_remove("GEMMACTL_BACKEND_ORDER");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.args([
        "run",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "--stats",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
    ])
    .args(args);
    cmd.arg("The capital of France is");
    let out = common::run_bounded(cmd);
    assert!(
        out.status.success(),
        "gemmactl run failed: {}",
        stderr(&out)
    );
    let v: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("run --json prints one JSON object");
    (v, stderr(&out))
}

#[test]
fn a_cuda_engine_that_fails_to_start_falls_back_to_the_cpu_and_says_why() {
    let home = Home::new();
    let cuda = fake_cuda_build(
        home.path(),
        "echo 'CUDA error: out of memory (cudaMalloc failed)' >&2\nexit 1",
    );
    for mode in [&["--backend", "cuda"][..], &[][..]] {
        let (v, err) = run_json(&home, &cuda, &[], mode);
        let engine = &v["engine"];
        assert_eq!(engine["backend"], "CPU", "{mode:?}: {v}");
        assert_eq!(engine["gpu_layers"], 0);
        let fallback = engine["fallback"]
            .as_str()
            .unwrap_or_else(|| panic!("{mode:?}: no fallback in {v}"));
        assert!(
            fallback.contains("CUDA engine") && fallback.contains("failed to start"),
            "{fallback}"
        );
        assert!(
            fallback.contains("CUDA error: out of memory"),
            "the engine's own words are kept: {fallback}"
        );
        assert!(
            err.contains("on CPU") && err.contains("fallback: CUDA engine"),
            "--stats shows it: {err}"
        );
        assert!(
            !v["text"].as_str().unwrap().is_empty(),
            "the CPU engine answered"
        );
    }
    // The GPU build really was asked to load the model, with every layer on the GPU.
    let calls = std::fs::read_to_string(home.path().join("calls.log")).unwrap();
    assert!(
        calls
            .lines()
            .any(|l| l.contains("--model") && l.contains("--gpu-layers 19")),
        "{calls}"
    );
}

#[test]
fn a_cuda_engine_that_hangs_is_stopped_and_replaced_by_the_cpu() {
    let home = Home::new();
    // The stand-in notes its pid, then hangs (exec keeps the pid) far longer than the timeout.
    let pid_file = home.path().join("cuda.pid");
    let cuda = fake_cuda_build(
        home.path(),
        &format!("echo $$ > '{}'\nexec sleep 600", pid_file.display()),
    );
    // The load timeout bounds every engine start, the CPU engine that replaces the hung one too,
    // so it leaves a real load time on a busy machine: 8 s did not (2 cores at load 18).
    let (v, _) = run_json(
        &home,
        &cuda,
        &[("GEMMACTL_LOAD_TIMEOUT", "30")],
        &["--backend", "cuda"],
    );
    assert_eq!(v["engine"]["backend"], "CPU");
    let fallback = v["engine"]["fallback"].as_str().unwrap();
    assert!(fallback.contains("within 30 s"), "{fallback}");
    // The hung build was stopped, not left running.
    let pid = std::fs::read_to_string(&pid_file).expect("the stand-in ran");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    assert!(
        matches!(state, None | Some("Z") | Some("X")),
        "the hung GPU engine {} is still running: {stat}",
        pid.trim()
    );
}

#[test]
fn a_cpu_build_configured_as_the_cuda_build_is_recognised_by_its_probe() {
    let home = Home::new();
    // The real engine, with its real `--probe`: it reports the CPU backend only.
    let (v, _) = run_json(&home, &common::engine_bin(), &[], &["--backend", "cuda"]);
    assert_eq!(v["engine"]["backend"], "CPU");
    let fallback = v["engine"]["fallback"].as_str().unwrap();
    assert!(
        fallback.contains("built without the CUDA backend"),
        "{fallback}"
    );
}

#[test]
fn backend_cpu_runs_on_the_cpu_without_probing_any_gpu_build() {
    let home = Home::new();
    let cuda = fake_cuda_build(home.path(), "exit 1");
    let (v, err) = run_json(&home, &cuda, &[("GEMMACTL_BACKEND", "cpu")], &[]);
    assert_eq!(v["engine"]["backend"], "CPU");
    assert!(v["engine"]["fallback"].is_null(), "{v}");
    assert!(!err.contains("fallback"), "{err}");
    assert!(
        !home.path().join("calls.log").exists(),
        "the GPU build was run although the CPU was asked for"
    );
}

#[test]
fn a_bad_backend_name_is_refused_with_the_choices() {
    let home = Home::new();
    let out = home
        .cmd()
        .env("GEMMACTL_BACKEND", "directml")
        .args(["run", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("GEMMACTL_BACKEND")
            && stderr(&out).contains("auto, cpu, cuda, vulkan or openvino"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_supervisor_status_that_ps_reads_carries_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let cuda = fake_cuda_build(
        dir.path(),
        "echo 'no CUDA-capable device is detected' >&2\nexit 1",
    );
    let mut config = Config::default();
    config.engine.path = Some(common::engine_bin());
    config.engine.context = 2048;
    config.engine.parallel = 1;
    config.engine.backend = BackendRequest::Auto;
    config.engine.builds.cuda = Some(cuda);
    let paths = gemmactl::config::Paths {
        config_dir: dir.path().join("config"),
        data_dir: dir.path().join("data"),
        state_dir: dir.path().join("state"),
        cache_dir: dir.path().join("cache"),
    };
    let model =
        gemmactl::models::resolve(&paths, common::default_model().to_str().unwrap()).unwrap();
    let sup = Supervisor::unpublished(config);
    let request = GenerateRequest::greedy_completion(sup.new_request_id(), "Hello", 2);
    let mut reply = sup.submit(&model, request).unwrap();
    let mut started = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(120), reply.next())
            .await
            .expect("no hang")
            .expect("a final event")
        {
            SupervisorEvent::Started(d) => started = Some(d),
            SupervisorEvent::Finished(_) => break,
            SupervisorEvent::Failed(e) => panic!("the request failed instead of falling back: {e}"),
            _ => {}
        }
    }
    let started = started.unwrap();
    assert_eq!(started.backend, Backend::Cpu);
    assert!(started
        .fallback
        .as_deref()
        .unwrap()
        .contains("no CUDA-capable device"));
    let status = sup.status();
    let engine = &status.engines[0];
    assert_eq!(engine.backend, Some(Backend::Cpu));
    assert!(
        engine
            .fallback
            .as_deref()
            .unwrap_or("")
            .contains("failed to start"),
        "{engine:?}"
    );
    sup.shutdown().await;
}

/// The GPU check (scripts/gpu-check.sh) cannot copy the 253 MB model to the GPU machine: it takes
/// the skeleton (header, metadata, vocabulary, tensor table) and fills the tensors back in there.
/// Here: the filled-in file has the original's size and layout, and the real engine loads it and
/// generates every token asked for (weights of one byte value must not stop it early).
#[test]
fn the_gpu_checks_model_skeleton_filled_back_out_loads_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::default_model();
    let tool =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu/gguf_skeleton.py");
    let skeleton = dir.path().join("skeleton.gguf");
    let filled = dir.path().join("filled.gguf");
    for (cmd, from, to) in [("cut", &model, &skeleton), ("fill", &skeleton, &filled)] {
        let out = std::process::Command::new("python3")
            .arg(&tool)
            .arg(cmd)
            .arg(from)
            .arg(to)
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    }
    let original = std::fs::metadata(&model).unwrap().len();
    assert!(
        std::fs::metadata(&skeleton).unwrap().len() < 16 << 20,
        "the skeleton must stay small enough to travel"
    );
    assert_eq!(std::fs::metadata(&filled).unwrap().len(), original);

    let home = Home::new();
    let out = home
        .cmd()
        .env("GEMMACTL_BACKEND", "cpu")
        .args([
            "run",
            "--model",
            filled.to_str().unwrap(),
            "--json",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
            "--raw",
            "The capital of France is",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 12, "{v}");
    assert_eq!(v["finish_reason"], "length");
}

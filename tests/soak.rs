//! The soak suite, short: `gemmactl bench --suite soak --requests 60` on the real engine and the
//! default model — 60 requests through one supervisor, 6 of them cancelled and one engine killed
//! with SIGKILL. The test reads the results file and checks, request by request, that each one
//! ended as its plan allows; that the engine was restarted once and no more; that the open file
//! descriptors of gemmactl and of the engine after the run are exactly those after the warm-up;
//! that no zombie and no orphan engine was left; that the series is in the file and `bench
//! chart` draws it. Memory is not judged here (a short run is noisy; the full soak in
//! docs/benchmarks.md is), only that the exit status follows the verdict the run printed.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::{stderr, stdout, Home};
use serde_json::Value;

const REQUESTS: usize = 60;

/// The request whose engine is killed (one in a hundred, the 51st), and the wave it is in: the
/// requests sent together with it may die with it.
const KILLED_UNDER: u64 = 51;
const KILL_WAVE: std::ops::RangeInclusive<u64> = 49..=52;

fn soak(home: &Home) -> (std::process::Output, PathBuf) {
    let out = home.path().join("soak");
    let run = home.run(&[
        "bench",
        "--suite",
        "soak",
        "--requests",
        &REQUESTS.to_string(),
        "--model",
        "gemma3-270m",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    // With --json the results file is named on stderr.
    let path = stderr(&run)
        .lines()
        .find_map(|l| l.strip_prefix("results: "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no results file named:\n{}\n{}", stdout(&run), stderr(&run)));
    (run, path)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn a_short_soak_ends_every_request_as_planned_and_leaks_no_descriptor_zombie_or_engine() {
    common::default_model();
    let home = Home::new();
    let pulled = home.run(&["models", "pull", "gemma3-270m"]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let (run, path) = soak(&home);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(results["suite"], "soak");
    assert_eq!(results["arguments"]["requests"], REQUESTS);
    let s = &results["soak"];

    // Every request, in order, ended as its plan allows.
    let records = s["records"].as_array().unwrap();
    assert_eq!(records.len(), REQUESTS);
    let (mut cancelled, mut killed) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let n = u(&r["number"]);
        assert_eq!(n, i as u64 + 1);
        let ended = r["ended"].as_str().unwrap();
        let tokens = u(&r["tokens"]);
        let max = u(&r["max_tokens"]);
        let in_kill_wave = KILL_WAVE.contains(&n);
        match r["fate"]["kind"].as_str().unwrap() {
            "reply" => {
                let ok = match ended {
                    "stop" => tokens <= max,
                    "length" => tokens == max,
                    "killed" => in_kill_wave,
                    _ => false,
                };
                assert!(ok, "request {n}: {r}");
            }
            "cancel" => {
                // Cancelled, or (only when the cancel was to come after some tokens) ended by
                // itself first.
                let at_once = r["fate"]["after_tokens"] == 0;
                assert!(
                    ended == "cancelled" || (!at_once && ended == "stop"),
                    "request {n}: {r}"
                );
                if ended == "cancelled" {
                    cancelled += 1;
                    assert!(tokens < max, "request {n} ran to its limit: {r}");
                }
            }
            "kill" => {
                assert_eq!(n, KILLED_UNDER);
                assert_eq!(ended, "killed", "request {n}: {r}");
                let error = r["error"].as_str().unwrap();
                assert!(error.contains("SIGKILL"), "{error}");
            }
            other => panic!("request {n} has an unknown fate {other}"),
        }
        if ended == "killed" {
            killed += 1;
        }
        assert_eq!(r["expected"], true, "request {n}: {r}");
    }
    // Two of the six are cancelled at once, before any token: those always end cancelled.
    assert!(cancelled >= 2, "{cancelled} cancelled");
    assert!(killed >= 1);

    // One engine killed, one restart, two engine processes in all.
    let kills = s["kills"].as_array().unwrap();
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert_eq!(u(&kills[0]["request"]), KILLED_UNDER);
    assert_eq!(u(&s["engine_starts"]), 2);
    let pids: Vec<u64> = s["engine_pids"].as_array().unwrap().iter().map(u).collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&u(&kills[0]["pid"])));

    // A sample after every wave; right after the kill, no engine runs until the next request.
    let samples = s["samples"].as_array().unwrap();
    assert_eq!(samples.len(), REQUESTS / 4);
    for (i, sample) in samples.iter().enumerate() {
        let request = u(&sample["request"]);
        assert_eq!(request, 4 * (i as u64 + 1));
        assert!(sample["gemmactl_rss_mib"].as_f64().unwrap() > 0.0);
        assert!(u(&sample["gemmactl_fds"]) >= 3);
        let engine = &sample["engine_rss_mib"];
        if request == *KILL_WAVE.end() {
            assert!(engine.is_null(), "an engine after the kill: {sample}");
        } else {
            assert!(engine.as_f64().unwrap() > 0.0, "{sample}");
        }
    }

    // Descriptor leaks are exact: the same count after the run as after the warm-up, for
    // gemmactl and for the engine that replaced the killed one.
    let (warm, end) = (&s["warm_up"], &s["end"]);
    assert_eq!(warm["gemmactl_fds"], end["gemmactl_fds"], "{warm} {end}");
    assert!(u(&warm["engine_fds"]) >= 3);
    assert_eq!(warm["engine_fds"], end["engine_fds"], "{warm} {end}");

    // No zombie while the supervisor ran or after it shut down, no engine outlived it; and,
    // looked at from outside, none of its engines runs now.
    for key in ["zombies_running", "zombies_after_shutdown", "orphans"] {
        assert_eq!(s[key], serde_json::json!([]), "{key}");
    }
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim() != "gemma-engine")
                    .unwrap_or(true),
            "engine {pid} still runs"
        );
    }

    // The verdict printed is the one in the file, and the exit status follows it.
    let printed: Value = serde_json::from_str(stdout(&run).trim()).unwrap();
    let verdict = &s["verdict"];
    assert_eq!(&printed["verdict"], verdict);
    assert_eq!(u(&verdict["unexpected"]), 0);
    assert_eq!(verdict["gemmactl_fds_equal"], true);
    assert_eq!(verdict["engine_fds_equal"], true);
    let passed = verdict["passed"].as_bool().unwrap();
    assert_eq!(run.status.success(), passed, "{}", stderr(&run));
    assert_eq!(
        verdict["failures"].as_array().unwrap().is_empty(),
        passed,
        "{verdict}"
    );

    // The soak's conversations went to a history of its own, not the user's.
    let listed = home.run(&["history", "list", "--json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: Value = serde_json::from_str(stdout(&listed).trim()).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");

    // `bench chart` draws the series: memory and descriptors over the requests.
    let chart = home.run(&["bench", "chart", path.to_str().unwrap()]);
    assert!(chart.status.success(), "{}", stderr(&chart));
    let svg_path = path.with_extension("soak.svg");
    assert_eq!(
        stdout(&chart).trim(),
        format!("chart: {}", svg_path.display())
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for want in [
        "gemmactl resident memory (MiB)",
        "engine resident memory (MiB)",
        "open file descriptors",
        "engine killed",
    ] {
        assert!(texts.contains(&want), "{want} not in {texts:?}");
    }
}

#[test]
fn soak_arguments_are_refused_with_one_sentence_before_anything_runs() {
    let home = Home::new();
    let few = home.run(&["bench", "--suite", "soak", "--requests", "3"]);
    assert_eq!(few.status.code(), Some(1));
    let err = stderr(&few);
    assert!(
        err.contains("--requests 3 is too few for a soak: give at least 40"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let elsewhere = home.run(&["bench", "--suite", "engine", "--requests", "100"]);
    assert_eq!(elsewhere.status.code(), Some(1));
    let err = stderr(&elsewhere);
    assert!(err.contains("use it with --suite soak"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Nothing was measured, so no results folder was made.
    assert!(!home.path().join("data").join("bench").exists());
}

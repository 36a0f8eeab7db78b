//! `gemmactl bench` as a tool, end to end on the real engine and the default model: the results
//! file it writes, `bench compare` on real runs (two of one commit, and one made worse on
//! purpose), `bench chart` and `bench --chart`, and the sentence a file that is not results gets.
//! No speed is asserted: the tests check what compare and chart said about real runs, and that
//! compare judged them by its own rule; only memory, which load does not change, is expected to
//! come out the same.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use common::{stderr, stdout, Home};
use serde_json::Value;

/// Short runs: enough rounds for a noise figure, few tokens.
const SHORT: &[&str] = &["--runs", "3", "--max-tokens", "8"];

/// The threshold two runs of one commit are judged at. The shared development machine's speed
/// drifts by ±15 % between minutes (docs/benchmarks.md), so two runs can sit that far apart while
/// each one's rounds are tight.
const THRESHOLD: &str = "25";

/// The runs several tests read, made once: a baseline (with `--chart`), a second run of the
/// same commit and settings, and a deliberately worse one.
///
/// The worse run asks for a 4× context (32,768 tokens, Gemma 3 270M's own limit), so the engine
/// allocates a larger KV cache for the global-attention layers: its peak RSS is higher in every
/// round, whatever else the machine is doing. `--threads 1` against two threads was tried first
/// and is not a reliable regression here: it is slower at prefill only while the second core is
/// idle, and on the shared machine with other engines running, two OpenMP threads waiting for
/// each other ran 3–15× *slower* than one (docs/benchmarks.md).
struct Runs {
    home: Home,
    baseline: PathBuf,
    again: PathBuf,
    worse: PathBuf,
}

fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        common::default_model();
        // Kept under the target folder for the whole test binary (a static is never dropped),
        // and cleared at the next start.
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-tests");
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let home = Home {
            dir: tempfile::tempdir_in(&base).unwrap(),
        };
        let out = home.run(&["models", "pull", "gemma3-270m"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let baseline = bench(&home, "baseline", &["--chart"]);
        let again = bench(&home, "again", &[]);
        let worse = bench_with(&home, "worse", &[], &[("GEMMACTL_CONTEXT", "32768")]);
        Runs {
            home,
            baseline,
            again,
            worse,
        }
    })
}

/// Runs the engine suite into `<home>/<name>/`; the results file it names.
fn bench(home: &Home, name: &str, extra: &[&str]) -> PathBuf {
    bench_with(home, name, extra, &[])
}

/// [`bench`] with environment variables set.
fn bench_with(home: &Home, name: &str, extra: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let dir = home.path().join(name);
    let mut cmd = home.cmd();
    cmd.args(["bench", "--model", "gemma3-270m", "--out"])
        .arg(&dir)
        .args(SHORT)
        .args(extra)
        .envs(env.iter().copied());
    let out = common::run_bounded(cmd);
    assert!(out.status.success(), "bench {name}: {}", stderr(&out));
    named(&out, "results: ")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no results line: {}", stdout(&out)))
}

/// The paths printed after `prefix` (`results: `, `chart: `).
fn named(out: &Output, prefix: &str) -> Vec<PathBuf> {
    stdout(out)
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(PathBuf::from)
        .collect()
}

fn compare(home: &Home, old: &Path, new: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "bench",
        "compare",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ];
    args.extend(extra);
    home.run(&args)
}

/// The comparison table's row for a figure (`prefill, direct (tok/s)`).
fn row<'a>(text: &'a str, figure: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(figure))
        .unwrap_or_else(|| panic!("no row for {figure}:\n{text}"))
}

/// The text of every `<text>` element of an SVG document, which must parse as XML with an
/// `<svg>` root.
fn svg_texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_string())
        .collect()
}

#[test]
fn a_run_writes_a_results_file_with_its_samples_machine_build_and_model() {
    let runs = runs();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&runs.baseline).unwrap()).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["kind"], "gemmactl-bench-results");
    assert_eq!(v["suite"], "engine");
    assert_eq!(v["arguments"]["runs"], 3);
    assert_eq!(v["model"]["name"], "gemma3-270m");
    assert_eq!(v["model"]["sha256_source"], "registry");
    assert_eq!(v["model"]["sha256"].as_str().unwrap().len(), 64);
    assert!(v["machine"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(v["machine"]["cpu_flags"].is_array());
    assert_eq!(v["build"]["engine"]["name"], "gemma-engine");
    assert!(v["build"]["engine"]["backends"]
        .as_array()
        .unwrap()
        .contains(&Value::from("CPU")));
    let commit = v["build"]["git_commit"].as_str().unwrap();
    assert!(commit == "unknown" || commit.len() == 40, "{commit}");
    let figures = v["figures"].as_array().unwrap();
    let decode = figures
        .iter()
        .find(|f| f["id"] == "decode/direct")
        .expect("decode/direct");
    assert_eq!(decode["samples"].as_array().unwrap().len(), 3);
    assert_eq!(decode["better"], "higher");
    // `gemmactl run` is timed at its stdout: decode only, no prefill it cannot see.
    assert!(figures.iter().any(|f| f["id"] == "decode/run"));
    assert!(!figures.iter().any(|f| f["id"] == "prefill/run"));
}

/// One row of compare's table, read from the right (a figure's label has spaces):
/// `(change %, noise %, verdict)`.
fn verdict_of(line: &str) -> (f64, f64, &str) {
    let cells: Vec<&str> = line.split_whitespace().collect();
    let n = cells.len();
    let percent = |c: &str| -> f64 {
        c.trim_start_matches('±')
            .trim_end_matches('%')
            .parse()
            .unwrap_or_else(|_| panic!("not a percentage: {c} in {line}"))
    };
    (percent(cells[n - 3]), percent(cells[n - 2]), cells[n - 1])
}

#[test]
fn compare_of_two_runs_of_one_commit_judges_by_its_own_rule() {
    let runs = runs();
    let out = compare(
        &runs.home,
        &runs.baseline,
        &runs.again,
        &["--threshold", THRESHOLD],
    );
    let text = stdout(&out);
    // Two real runs of one commit may still differ in speed: the machine is shared, and beside
    // a CPU-bound job two engine threads can run several times slower in one run than in the
    // other. So no speed verdict is asserted here (the rule itself is unit-tested on fixed
    // samples in compare.rs); what is asserted is that compare read both files, judged every
    // figure by the rule it prints, and exited accordingly.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{text}{}",
        stderr(&out)
    );
    // Same commit, same settings: nothing to point out.
    assert!(!text.contains("the runs differ in"), "{text}");
    let threshold: f64 = THRESHOLD.parse().unwrap();
    // Every row of the table: from the one after the header to the line stating the rule.
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("figure"))
        .skip(1)
        .take_while(|l| !l.starts_with("a figure moved"))
        .collect();
    assert!(rows.len() >= 7, "{text}");
    let mut regressed = false;
    for line in rows {
        let (change, noise, verdict) = verdict_of(line);
        // The table rounds to 0.1 %: a change that close to a bound may fall either side.
        let near = |bound: f64| (change.abs() - bound).abs() <= 0.1;
        if !near(threshold) && !near(noise) {
            let moved = change.abs() > threshold && change.abs() > noise;
            assert_eq!(verdict != "same", moved, "{line}\n{text}");
        }
        regressed |= matches!(verdict, "slower" | "worse");
    }
    // Memory does not depend on the machine's load: the same settings take the same memory.
    assert_eq!(
        verdict_of(row(&text, "engine peak RSS, direct")).2,
        "same",
        "{text}"
    );
    assert_eq!(out.status.code() == Some(1), regressed, "{text}");
    if !regressed {
        assert!(text.contains("no regression beyond 25%"), "{text}");
    }
}

#[test]
fn compare_against_a_worse_run_finds_the_regression() {
    let runs = runs();
    // The default threshold: the memory figure's rounds agree to a fraction of a per cent.
    let out = compare(&runs.home, &runs.baseline, &runs.worse, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains("the runs differ in: context 8192 → 32768"),
        "{text}"
    );
    assert!(
        row(&text, "engine peak RSS, direct").ends_with("worse"),
        "{text}"
    );
    let verdict = text
        .lines()
        .find(|l| l.starts_with("regressed beyond 5%:"))
        .unwrap_or_else(|| panic!("no verdict line:\n{text}"));
    assert!(verdict.contains("engine peak RSS, direct"), "{verdict}");
}

#[test]
fn bench_chart_draws_svg_with_the_series_names() {
    let runs = runs();
    // `bench --chart` drew the baseline's chart next to its results file.
    let ways = runs.baseline.with_extension("ways.svg");
    let svg = std::fs::read_to_string(&ways).unwrap_or_else(|e| panic!("{}: {e}", ways.display()));
    let texts = svg_texts(&svg);
    for name in ["direct", "supervisor", "gemmactl run"] {
        assert!(texts.contains(&name.to_string()), "{name} not in {texts:?}");
    }
    assert!(texts.iter().any(|t| t.starts_with("decode")), "{texts:?}");

    // The same figures across two runs: one series per run, named by what differs.
    let dir = runs.home.path().join("charts");
    let out = runs.home.run(&[
        "bench",
        "chart",
        runs.baseline.to_str().unwrap(),
        runs.worse.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written = named(&out, "chart: ");
    assert_eq!(written.len(), 3, "{}", stdout(&out));
    let across = dir.join("compare.ways.svg");
    assert!(written.contains(&across), "{}", stdout(&out));
    let texts = svg_texts(&std::fs::read_to_string(&across).unwrap());
    assert!(
        texts.contains(&"context 8192".to_string()) && texts.contains(&"context 32768".to_string()),
        "series names missing: {texts:?}"
    );
}

#[test]
fn supervisor_suite_charts_throughput_by_concurrency() {
    let runs = runs();
    let dir = runs.home.path().join("supervisor");
    let out = runs.home.run(&[
        "bench",
        "--suite",
        "supervisor",
        "--model",
        "gemma3-270m",
        "--runs",
        "2",
        "--max-tokens",
        "8",
        "--out",
        dir.to_str().unwrap(),
        "--chart",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results = named(&out, "results: ");
    let charts = named(&out, "chart: ");
    assert_eq!(charts.len(), 1, "{}", stdout(&out));
    let texts = svg_texts(&std::fs::read_to_string(&charts[0]).unwrap());
    for level in ["1", "2", "4", "8", "16"] {
        assert!(
            texts.contains(&level.to_string()),
            "{level} not in {texts:?}"
        );
    }
    assert!(
        texts.iter().any(|t| t.starts_with("aggregate throughput")),
        "{texts:?}"
    );
    // An engine run and a supervisor run share no figure: a sentence, not an empty table.
    let out = compare(&runs.home, &runs.baseline, &results[0], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("have no figure in common"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn context_suite_measures_each_prompt_length_and_charts_both_curves() {
    let runs = runs();
    let context_run = |name: &str| {
        let dir = runs.home.path().join(name);
        let mut cmd = runs.home.cmd();
        cmd.args(["bench", "--suite", "context", "--model", "gemma3-270m"])
            .args(["--runs", "2", "--max-tokens", "6", "--lengths", "48,400"])
            .arg("--out")
            .arg(&dir)
            .arg("--chart");
        let out = common::run_bounded(cmd);
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let out = context_run("context");
    let results = named(&out, "results: ");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&results[0]).unwrap()).unwrap();
    assert_eq!(v["suite"], "context");
    let figures = v["figures"].as_array().unwrap();
    // Three figures per length, each with one sample per round, tagged with its length.
    assert_eq!(figures.len(), 6, "{figures:?}");
    for (metric, unit) in [
        ("time_to_first_token", "ms"),
        ("prefill", "tok/s"),
        ("decode", "tok/s"),
    ] {
        for n in [48, 400] {
            let f = figures
                .iter()
                .find(|f| f["id"] == format!("{metric}/{n}_tokens"))
                .unwrap_or_else(|| panic!("no {metric} at {n}: {figures:?}"));
            assert_eq!(f["prompt_length"], n);
            assert_eq!(f["unit"], unit);
            let samples = f["samples"].as_array().unwrap();
            assert_eq!(samples.len(), 2);
            assert!(samples.iter().all(|s| s.as_f64().unwrap() > 0.0), "{f}");
        }
    }
    // The prompts came out near the lengths asked for (the printed medians are the engine's
    // own counts): within a quarter, whatever the tokenizer does with the filler.
    let text = stdout(&out);
    for n in [48.0, 400.0] {
        let found = text.lines().any(|l| {
            l.split_whitespace()
                .next()
                .and_then(|w| w.parse::<f64>().ok())
                .is_some_and(|t| (t - n).abs() <= n / 4.0)
        });
        assert!(found, "no prompt near {n} tokens in:\n{text}");
    }
    let charts = named(&out, "chart: ");
    assert_eq!(charts.len(), 1, "{text}");
    let texts = svg_texts(&std::fs::read_to_string(&charts[0]).unwrap());
    for t in ["48", "400"] {
        assert!(texts.contains(&t.to_string()), "{t} not in {texts:?}");
    }
    assert!(
        texts.iter().any(|t| t.starts_with("time to first token")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.starts_with("decode")), "{texts:?}");

    // Two context runs compare figure by figure, and chart together.
    let second = named(&context_run("context-again"), "results: ");
    let out = compare(
        &runs.home,
        &results[0],
        &second[0],
        &["--threshold", "1000"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(row(&stdout(&out), "time to first token, 400-token prompt").contains("ms"));
    let out = runs.home.run(&[
        "bench",
        "chart",
        results[0].to_str().unwrap(),
        second[0].to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        named(&out, "chart: ")
            .iter()
            .any(|p| p.ends_with("compare.context.svg")),
        "{}",
        stdout(&out)
    );

    // --lengths belongs to the context suite, and takes positive lengths.
    for (args, said) in [
        (&["--lengths", "128"][..], "use it with --suite context"),
        (
            &["--suite", "context", "--lengths", "0,128"][..],
            "each at least 1",
        ),
    ] {
        let mut all = vec!["bench", "--model", "gemma3-270m"];
        all.extend_from_slice(args);
        let out = runs.home.run(&all);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(said), "{}", stderr(&out));
    }
}

#[test]
fn compare_and_chart_refuse_what_is_not_results_with_one_sentence() {
    let home = Home::new();
    let write = |name: &str, text: &str| {
        let path = home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let text = write("notes.json", "decode was fast today\n");
    let other = write("other.json", r#"{"name": "not a benchmark"}"#);
    let future = write(
        "future.json",
        r#"{"kind": "gemmactl-bench-results", "schema_version": 2, "figures": []}"#,
    );
    let broken = write(
        "broken.json",
        r#"{"kind": "gemmactl-bench-results", "schema_version": 1, "figures": "none"}"#,
    );
    let missing = home.path().join("missing.json");
    let cases: [(&Path, &str); 5] = [
        (&text, "is not JSON"),
        (&other, "is not a gemmactl bench results file"),
        (
            &future,
            "has results schema version 2, and this gemmactl reads version 1",
        ),
        (&broken, "is a malformed bench results file"),
        (&missing, "cannot read"),
    ];
    for (file, says) in cases {
        for args in [
            vec![
                "bench",
                "compare",
                file.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
            vec!["bench", "chart", file.to_str().unwrap()],
        ] {
            let out = home.run(&args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
            assert!(
                err.contains(says) && err.contains(file.file_name().unwrap().to_str().unwrap()),
                "{args:?}: {err}"
            );
            assert!(stdout(&out).is_empty(), "{args:?}");
        }
    }
}

#[test]
fn a_llama_bench_that_cannot_run_is_refused_before_anything_is_measured() {
    common::default_model();
    let home = Home::new();
    let out = home.run(&["models", "pull", "gemma3-270m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let missing = home.path().join("no-llama-bench");
    let out_dir = home.path().join("out");
    let cases: [(&[&str], &str); 2] = [
        (
            &[],
            "no such file: build llama.cpp's llama-bench with scripts/lib/llama-bench.sh",
        ),
        (
            &["--suite", "supervisor"],
            "--llama-bench is a baseline of the engine suite",
        ),
    ];
    for (extra, says) in cases {
        let mut cmd = home.cmd();
        cmd.args(["bench", "--model", "gemma3-270m", "--llama-bench"])
            .arg(&missing)
            .arg("--out")
            .arg(&out_dir)
            .args(extra);
        let out = common::run_bounded(cmd);
        assert!(!out.status.success(), "{extra:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains(says), "{extra:?}: {err}");
        // Refused up front: no round ran and no results file was written.
        assert!(!err.contains("round 1"), "{err}");
        assert!(!out_dir.exists(), "{extra:?} wrote {}", out_dir.display());
    }
}

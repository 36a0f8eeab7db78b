//! `gemmactl bench`: reproducible speed figures for one model, and what going through gemmactl
//! costs.
//!
//! Each round measures the same greedy request three ways, in alternating order so machine noise
//! falls on all of them alike: **direct** (this process speaks the engine protocol to a fresh
//! gemma-engine itself — the baseline), **supervisor** (the in-process path every front end
//! uses), and **run** (a real `gemmactl run` child process, timed at its stdout). Times are taken
//! where a client sees them: from sending the request to receiving the first token, and between
//! received tokens. Medians are printed with ratios against the direct baseline.
//!
//! Every run also writes a results file (`results`: each figure with its per-round samples, and
//! the machine, build and model it measured) to the data directory's `bench/` or `--out`;
//! `bench compare` judges two of them against their own noise, and `bench chart` draws them.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

mod chart;
mod compare;
mod context;
mod gemma_cpp;
mod llama_bench;
mod provenance;
mod results;
mod soak;
mod stats;
mod supervisor;

use engine_protocol as protocol;

use crate::config::{Config, Paths};
use crate::domain::{EngineKind, GenerateRequest};
use crate::models::{self, ModelEntry};
use crate::supervisor::{Supervisor, SupervisorEvent};
use results::{Better, Figure, Results};
use stats::{median, ms};

/// About fifty tokens of plain prose: the prompt size the project's targets are stated for.
const PROMPT: &str = "The history of the city begins with a small fishing village on the banks of a wide river. \
Over the centuries, merchants, builders and scholars arrived, bridges were raised, and markets grew along the water. \
Today the old town still keeps";

/// `gemmactl bench`'s arguments: a benchmark run, or one of the subcommands that read results.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// Model name or GGUF path [default: config's default_model]
    #[arg(short, long, value_name = "NAME|PATH")]
    model: Option<String>,
    /// Rounds; each measures every way once
    #[arg(long, default_value_t = 5, value_name = "N")]
    runs: usize,
    /// Tokens generated per request
    #[arg(long, default_value_t = 128, value_name = "N")]
    max_tokens: u32,
    /// CPU threads for the engine, the same for every way measured [default: engine.threads, else every core; the soak: 1]
    #[arg(long, value_name = "N")]
    threads: Option<u32>,
    /// Element type of gemma-engine's KV cache, the same for every way measured [default: engine.kv_cache_type]
    #[arg(long, value_name = "TYPE")]
    kv_cache_type: Option<crate::domain::KvCacheType>,
    /// gemma-engine's flash attention, the same for every way measured [default: engine.flash_attention]
    #[arg(long, value_name = "auto|on|off")]
    flash_attention: Option<crate::domain::FlashAttention>,
    /// Print the figures as one JSON object
    #[arg(long)]
    json: bool,
    /// `engine`: one model's speed, direct vs through gemmactl; `supervisor`: cold load, warm
    /// swap, cancel latency, throughput of 1–16 concurrent requests; `soak`: memory and file
    /// descriptors over thousands of mixed requests, some cancelled, some engines killed (exits
    /// 1 when they grow; takes --requests, not --runs or --max-tokens); `context`: time to first
    /// token by prompt length and decode by context fill (--lengths)
    #[arg(long, value_enum, default_value_t = Suite::Engine)]
    suite: Suite,
    /// Prompt lengths of the context suite, in tokens [default: 128,512,2048,8192]
    #[arg(long, value_name = "N,N,…", value_delimiter = ',')]
    lengths: Option<Vec<u32>>,
    /// Requests of the soak suite [default: 2000]
    #[arg(long, value_name = "N")]
    requests: Option<usize>,
    /// Folder for the results file [default: the data directory's bench/]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Also draw the results as SVG charts next to the results file
    #[arg(long)]
    chart: bool,
    /// llama.cpp's own llama-bench (scripts/lib/llama-bench.sh builds it and prints its path):
    /// measured in every round of the engine suite as the baseline of prefill and decode
    #[arg(long, value_name = "PATH")]
    llama_bench: Option<PathBuf>,
}

/// `gemmactl bench`'s subcommands: they read results files and measure nothing.
#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Say per figure whether NEW moved beyond the noise of the two runs; exit 1 on a regression.
    Compare(compare::CompareArgs),
    /// Draw results files as SVG charts.
    Chart(chart::ChartArgs),
}

/// Which benchmark `--suite` runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Suite {
    Engine,
    Supervisor,
    Soak,
    Context,
}

impl Suite {
    /// The suite's name, as `--suite` takes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Suite::Engine => "engine",
            Suite::Supervisor => "supervisor",
            Suite::Soak => "soak",
            Suite::Context => "context",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Sample {
    pub load_ms: f64,
    pub ttft_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub peak_rss_mib: Option<f64>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Direct,
    Supervisor,
    Run,
    /// llama.cpp's own llama-bench (`--llama-bench`): prefill and decode only.
    LlamaBench,
}

impl Way {
    /// The way as results files and charts name it.
    fn name(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::Supervisor => "supervisor",
            Way::Run => "run",
            Way::LlamaBench => "llama-bench",
        }
    }
}

/// Runs `gemmactl bench`: a subcommand that reads results, or a benchmark run — checks the
/// arguments, resolves the model, runs the chosen suite and writes its results file.
pub async fn run(args: BenchArgs, paths: &Paths, mut config: Config) -> Result<ExitCode> {
    match &args.command {
        Some(BenchCommand::Compare(a)) => return Ok(compare::run(a)),
        Some(BenchCommand::Chart(a)) => return Ok(chart::run(a)),
        None => {}
    }
    if args.runs == 0 || args.max_tokens < 2 {
        bail!("--runs must be at least 1 and --max-tokens at least 2");
    }
    let requests = match (args.suite, args.requests) {
        (Suite::Soak, n) => {
            let n = n.unwrap_or(soak::DEFAULT_REQUESTS);
            if n < soak::MIN_REQUESTS {
                bail!(
                    "--requests {n} is too few for a soak: give at least {} (it compares the memory of its first and last quarter)",
                    soak::MIN_REQUESTS
                );
            }
            Some(n)
        }
        (_, Some(_)) => bail!(
            "--requests counts the soak's requests: use it with --suite soak (the other suites take --runs)"
        ),
        (_, None) => None,
    };
    let lengths = match (args.suite, &args.lengths) {
        (Suite::Context, None) => context::DEFAULT_LENGTHS.to_vec(),
        (Suite::Context, Some(l)) if l.is_empty() || l.contains(&0) => {
            bail!("--lengths takes prompt lengths in tokens, each at least 1 (e.g. --lengths 128,512,2048)")
        }
        (Suite::Context, Some(l)) => l.clone(),
        (_, Some(_)) => {
            bail!("--lengths sets the context suite's prompt lengths: use it with --suite context")
        }
        (_, None) => Vec::new(),
    };
    // Every way runs the same thread count, or the paired ratios compare unlike engines: left to
    // itself each engine would choose its own from the machine's load at its start.
    let cores = crate::hardware::cpu::usable_cores().unwrap_or(1) as u32;
    // The soak measures memory, not speed: one thread keeps it from stalling behind OpenMP
    // threads that spin waiting for each other on a busy machine (docs/benchmarks.md).
    let default_threads = if args.suite == Suite::Soak { 1 } else { cores };
    let threads = args
        .threads
        .or(config.engine.threads)
        .unwrap_or(default_threads);
    config.engine.threads = Some(threads);
    config.engine.kv_cache_type = args.kv_cache_type.unwrap_or(config.engine.kv_cache_type);
    config.engine.flash_attention = args
        .flash_attention
        .unwrap_or(config.engine.flash_attention);
    crate::domain::check_kv_settings(config.engine.kv_cache_type, config.engine.flash_attention)
        .map_err(|why| {
            anyhow!("{why} (bench takes them from --kv-cache-type and --flash-attention, else from the engine settings)")
        })?;
    config.engine.parallel = 1;
    let model = models::resolve(
        paths,
        &args
            .model
            .clone()
            .unwrap_or_else(|| config.default_model.clone()),
    )?;
    // Every model runs on its own engine: the baseline is that engine's binary, spoken to directly.
    let engine = match model.engine {
        EngineKind::GemmaEngine => Baseline::GemmaEngine(config.engine_binary()?),
        EngineKind::GemmaCpp => {
            Baseline::GemmaCpp(config.gemma_cpp_binary().map_err(|e| anyhow!(e))?)
        }
        EngineKind::Remote => bail!(
            "{} is a remote model: gemmactl bench measures its own overhead over a local engine; measure the remote server where it runs",
            model.name
        ),
    };
    // Recorded before measuring: the load average then is the one that explains the figures.
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let machine = provenance::machine();
    let engine_bin = match &engine {
        Baseline::GemmaEngine(p) | Baseline::GemmaCpp(p) => p.clone(),
    };
    // Checked before anything is measured, like every other argument.
    let llama_bench = match &args.llama_bench {
        None => None,
        Some(_) if args.suite != Suite::Engine => bail!(
            "--llama-bench is a baseline of the engine suite: drop --suite {} or --llama-bench",
            args.suite.as_str()
        ),
        Some(_) if model.engine != EngineKind::GemmaEngine => bail!(
            "--llama-bench measures llama.cpp on a GGUF model, and {} runs on {}: pick a GGUF model or drop --llama-bench",
            model.name,
            model.engine.as_str()
        ),
        Some(path) => Some(llama_bench::locate(path)?),
    };
    let build = provenance::build(&model, &engine_bin);
    let model_facts = provenance::model_facts(&model)?;

    let (mut runs, mut max_tokens) = (args.runs, args.max_tokens);
    let mut soak_series = None;
    let (figures, prompt_tokens) = match args.suite {
        Suite::Supervisor => (
            supervisor::run(&model, &config, args.runs, args.max_tokens, args.json).await?,
            None,
        ),
        Suite::Engine => {
            let (figures, prompt) = engine_suite(
                &args,
                &model,
                &config,
                &engine,
                threads,
                llama_bench.as_deref(),
            )
            .await?;
            (figures, Some(prompt))
        }
        Suite::Context => (
            context::run(
                &model,
                &config,
                args.runs,
                args.max_tokens,
                &lengths,
                args.json,
            )
            .await?,
            None,
        ),
        Suite::Soak => {
            let n = requests.unwrap_or(soak::DEFAULT_REQUESTS);
            let run = soak::run(&model, &config, paths, n, args.json).await?;
            // One long run; its replies are given at most the plan's largest limit.
            (runs, max_tokens) = (1, soak::MAX_TOKENS);
            soak_series = Some(run.series);
            (run.figures, None)
        }
    };
    let passed = soak_series.as_ref().is_none_or(|s| s.verdict.passed);
    let results = Results {
        schema_version: results::SCHEMA_VERSION,
        kind: results::KIND.to_string(),
        date,
        suite: args.suite,
        arguments: results::Arguments {
            runs,
            max_tokens,
            threads,
            context: config.engine.context,
            kv_cache_type: config.engine.kv_cache_type,
            flash_attention: config.engine.flash_attention,
            prompt_tokens,
            requests,
            command_line: std::env::args().skip(1).collect(),
        },
        machine,
        build,
        model: model_facts,
        figures,
        soak: soak_series,
    };
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| paths.data_dir.join("bench"));
    let path = results::write(&results, &dir)?;
    // With --json, stdout is the one JSON object; where the files went goes to stderr.
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!("results: {}", path.display()));
    if args.chart {
        let loaded = chart::Loaded {
            path: path.clone(),
            results,
        };
        for chart in chart::draw(&[loaded], &chart::folder_of(&path))? {
            say(format!("chart: {}", chart.display()));
        }
    }
    // The soak's verdict is its result: a leak or a lost engine fails the command (the results
    // file is written first, so the failure can be looked at).
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The engine suite: every way once per round, in alternating order; prints the medians and
/// returns every figure with its samples, and the prompt's length in tokens.
async fn engine_suite(
    args: &BenchArgs,
    model: &ModelEntry,
    config: &Config,
    engine: &Baseline,
    threads: u32,
    llama_bench: Option<&std::path::Path>,
) -> Result<(Vec<Figure>, u32)> {
    let supervisor = Supervisor::unpublished(config.clone());

    let mut ways = vec![Way::Direct, Way::Supervisor, Way::Run];
    if llama_bench.is_some() {
        ways.push(Way::LlamaBench);
    }
    let mut samples: Vec<(Way, Sample)> = Vec::new();
    // llama-bench reads a prompt as long as ours: the engine's count, known from the first
    // direct run (the first way of the first round).
    let mut prompt_tokens = None;
    for round in 0..args.runs {
        // Alternate the order so that no way always runs first (cold caches) or last.
        let order: Vec<Way> = if round % 2 == 0 {
            ways.clone()
        } else {
            ways.iter().rev().copied().collect()
        };
        for way in order {
            let sample = match way {
                Way::Direct => match engine {
                    Baseline::GemmaEngine(bin) => direct(bin, model, config, args.max_tokens)?,
                    Baseline::GemmaCpp(bin) => {
                        gemma_cpp::direct(bin, model, config, PROMPT, args.max_tokens)?
                    }
                },
                Way::Supervisor => supervised(&supervisor, model, args.max_tokens).await?,
                Way::Run => through_run(model, config, args.max_tokens)?,
                Way::LlamaBench => {
                    let (Some(bin), Some(prompt)) = (llama_bench, prompt_tokens) else {
                        bail!("llama-bench ran before the prompt's length was known");
                    };
                    llama_bench::measure(bin, model, config, threads, prompt, args.max_tokens)?
                }
            };
            if way == Way::Direct {
                prompt_tokens.get_or_insert(sample.prompt_tokens);
            }
            if !args.json {
                eprintln!(
                    "round {} {:<11} ttft {:>6.1} ms  prefill {:>5.0} tok/s  decode {:>5.1} tok/s  ({} tokens)",
                    round + 1,
                    way.name(),
                    sample.ttft_ms,
                    sample.prefill_tokens_per_s,
                    sample.decode_tokens_per_s,
                    sample.completion_tokens
                );
            }
            samples.push((way, sample));
        }
    }

    let medians: Vec<(Way, Sample)> = ways
        .iter()
        .map(|w| {
            (
                *w,
                median_sample(samples.iter().filter(|(x, _)| x == w).map(|(_, s)| s)),
            )
        })
        .collect();
    let base = &medians[0].1;
    let sup = &medians[1].1;
    let via_run = &medians[2].1;
    // Paired within each round (the three ways ran back to back), then the median over rounds:
    // robust to the machine's speed drifting between rounds, which medians of each way are not.
    let paired = |way: Way, f: &dyn Fn(&Sample, &Sample) -> f64| -> f64 {
        let per_round: Vec<f64> = samples
            .chunks(ways.len())
            .filter_map(|round| {
                let direct = &round.iter().find(|(w, _)| *w == Way::Direct)?.1;
                let other = &round.iter().find(|(w, _)| *w == way)?.1;
                Some(f(other, direct))
            })
            .collect();
        median(per_round)
    };
    let decode_ratio = |way| paired(way, &|o, d| o.decode_tokens_per_s / d.decode_tokens_per_s);
    let (sup_ratio, run_ratio) = (decode_ratio(Way::Supervisor), decode_ratio(Way::Run));
    let ttft_overhead = paired(Way::Supervisor, &|o, d| o.ttft_ms - d.ttft_ms);
    let figures = engine_figures(&samples, ways.len());
    // Each way against llama.cpp's own llama-bench of the same round, where it ran.
    let to_llama_bench: Vec<(&str, Way, f64)> = if llama_bench.is_some() {
        LLAMA_BENCH_RATIOS
            .iter()
            .map(|&(metric, way)| {
                let per_round = paired_ratios(
                    &samples,
                    ways.len(),
                    way,
                    Way::LlamaBench,
                    metric_of(metric),
                );
                (metric, way, median(per_round))
            })
            .collect()
    } else {
        Vec::new()
    };
    if args.json {
        let by_way: serde_json::Map<String, Value> = medians
            .iter()
            .map(|(w, s)| {
                (
                    w.name().to_string(),
                    serde_json::to_value(s).unwrap_or_default(),
                )
            })
            .collect();
        let vs_llama_bench: serde_json::Map<String, Value> = to_llama_bench
            .iter()
            .map(|(metric, way, r)| (format!("{metric}_{}", way.name()), json!(r)))
            .collect();
        println!(
            "{}",
            json!({
                "model": model.name, "engine": model.engine.as_str(), "runs": args.runs, "max_tokens": args.max_tokens, "threads": threads,
                "kv_cache_type": config.engine.kv_cache_type, "flash_attention": config.engine.flash_attention,
                "median": by_way,
                "decode_ratio_supervisor": sup_ratio,
                "decode_ratio_run": run_ratio,
                "ttft_overhead_supervisor_ms": ttft_overhead,
                "ratio_to_llama_bench": vs_llama_bench,
            })
        );
        return Ok((figures, base.prompt_tokens));
    }
    println!(
        "{} on {}, {} runs, {} prompt tokens, {} generated tokens, {} threads (medians)",
        model.name,
        model.engine.as_str(),
        args.runs,
        base.prompt_tokens,
        args.max_tokens,
        threads
    );
    let llama = medians.get(3).map(|(_, s)| s);
    println!(
        "{:<24}{:>12}{:>12}{:>14}{:>13}",
        "",
        "direct",
        "supervisor",
        "gemmactl run",
        if llama.is_some() { "llama-bench" } else { "" }
    );
    let row = |name: &str, f: &dyn Fn(&Sample) -> String| {
        println!(
            "{:<24}{:>12}{:>12}{:>14}{:>13}",
            name,
            f(base),
            f(sup),
            f(via_run),
            llama.map(f).unwrap_or_default()
        );
    };
    row("load (ms)", &|s| format!("{:.0}", s.load_ms));
    row("time to first token ms", &|s| {
        if s.ttft_ms > 0.0 {
            format!("{:.1}", s.ttft_ms)
        } else {
            "-".into()
        }
    });
    row("prefill (tok/s)", &|s| {
        if s.prefill_tokens_per_s > 0.0 {
            format!("{:.0}", s.prefill_tokens_per_s)
        } else {
            "-".into()
        }
    });
    row("decode (tok/s)", &|s| {
        format!("{:.1}", s.decode_tokens_per_s)
    });
    row("engine peak RSS (MiB)", &|s| {
        s.peak_rss_mib
            .map(|m| format!("{m:.0}"))
            .unwrap_or_else(|| "-".into())
    });
    println!(
        "paired by round (median of per-round ratios against the direct run of the same round):"
    );
    println!("  decode through the supervisor: {sup_ratio:.3}x direct; through `gemmactl run`: {run_ratio:.3}x direct");
    println!("  time to first token through the supervisor: {ttft_overhead:+.1} ms against direct");
    if !to_llama_bench.is_empty() {
        println!("paired by round against llama.cpp's own llama-bench of the same round:");
        for (metric, way, r) in &to_llama_bench {
            println!("  {metric} {}: {r:.3}x llama-bench", way.name());
        }
    }
    Ok((figures, base.prompt_tokens))
}

/// The ratios to llama-bench the engine suite reports: `gemmactl run` is timed at its stdout, so
/// it has decode only.
const LLAMA_BENCH_RATIOS: [(&str, Way); 5] = [
    ("prefill", Way::Direct),
    ("prefill", Way::Supervisor),
    ("decode", Way::Direct),
    ("decode", Way::Supervisor),
    ("decode", Way::Run),
];

/// The tokens/s of `metric` (`prefill` or `decode`) in a sample.
fn metric_of(metric: &str) -> fn(&Sample) -> f64 {
    if metric == "prefill" {
        |s| s.prefill_tokens_per_s
    } else {
        |s| s.decode_tokens_per_s
    }
}

/// Per round, `value` of `way` ÷ `value` of `base` in the same round (rounds where either is
/// missing are skipped). `samples` holds the rounds one after another, `per_round` ways each.
fn paired_ratios(
    samples: &[(Way, Sample)],
    per_round: usize,
    way: Way,
    base: Way,
    value: fn(&Sample) -> f64,
) -> Vec<f64> {
    samples
        .chunks(per_round)
        .filter_map(|round| {
            let b = &round.iter().find(|(w, _)| *w == base)?.1;
            let o = &round.iter().find(|(w, _)| *w == way)?.1;
            Some(value(o) / value(b))
        })
        .collect()
}

/// Every figure of the engine suite with its per-round samples, in round order. `samples` holds
/// the rounds one after another, `per_round` ways each (in whichever order the round ran them).
/// A way gets a figure only for what it measures: `gemmactl run` is timed at its stdout, so it
/// has decode speed only.
fn engine_figures(samples: &[(Way, Sample)], per_round: usize) -> Vec<Figure> {
    let rounds: Vec<&[(Way, Sample)]> = samples.chunks(per_round).collect();
    let of = |way: Way| -> Vec<&Sample> {
        rounds
            .iter()
            .filter_map(|r| r.iter().find(|(w, _)| *w == way).map(|(_, s)| s))
            .collect()
    };
    let mut figures = Vec::new();
    type Metric = (
        &'static str,
        &'static str,
        &'static str,
        Better,
        fn(&Sample) -> Option<f64>,
    );
    let metrics: [Metric; 5] = [
        ("load", "load", "ms", Better::Lower, |s| Some(s.load_ms)),
        (
            "time_to_first_token",
            "time to first token",
            "ms",
            Better::Lower,
            |s| Some(s.ttft_ms),
        ),
        ("prefill", "prefill", "tok/s", Better::Higher, |s| {
            Some(s.prefill_tokens_per_s)
        }),
        ("decode", "decode", "tok/s", Better::Higher, |s| {
            Some(s.decode_tokens_per_s)
        }),
        (
            "engine_peak_rss",
            "engine peak RSS",
            "MiB",
            Better::Lower,
            |s| s.peak_rss_mib,
        ),
    ];
    for way in [Way::Direct, Way::Supervisor, Way::Run, Way::LlamaBench] {
        let name = way.name();
        for (metric, label, unit, better, value) in metrics {
            if way == Way::Run && metric != "decode" {
                continue;
            }
            // llama-bench reports prefill and decode, nothing else.
            if way == Way::LlamaBench && !matches!(metric, "prefill" | "decode") {
                continue;
            }
            // A figure only where every round measured it (gemma.cpp may not report prefill).
            let values: Option<Vec<f64>> = of(way)
                .iter()
                .map(|s| value(s).filter(|v| *v > 0.0))
                .collect();
            if let Some(values) = values.filter(|v| !v.is_empty()) {
                figures.push(
                    Figure::new(metric, &format!("{label}, {name}"), unit, better, values)
                        .for_way(name),
                );
            }
        }
    }
    // The paired figures: each round's way against that round's direct run. The time to first
    // token overhead (a difference near zero, whose relative change means nothing) is left to
    // the reader: the samples of both ways are kept in round order.
    let paired = |way: Way, f: &dyn Fn(&Sample, &Sample) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| {
                let direct = &r.iter().find(|(w, _)| *w == Way::Direct)?.1;
                let other = &r.iter().find(|(w, _)| *w == way)?.1;
                Some(f(other, direct))
            })
            .collect()
    };
    for way in [Way::Supervisor, Way::Run] {
        let ratios = paired(way, &|o, d| o.decode_tokens_per_s / d.decode_tokens_per_s);
        if ratios.iter().all(|r| r.is_finite()) && !ratios.is_empty() {
            figures.push(
                Figure::new(
                    "decode_ratio_to_direct",
                    &format!("decode ÷ direct, {}", way.name()),
                    "x",
                    Better::Higher,
                    ratios,
                )
                .for_way(way.name()),
            );
        }
    }
    // Against llama.cpp's own llama-bench, where it ran: `ratio_to_llama_bench/decode/direct`.
    for (metric, way) in LLAMA_BENCH_RATIOS {
        let ratios = paired_ratios(samples, per_round, way, Way::LlamaBench, metric_of(metric));
        if ratios.iter().all(|r| r.is_finite()) && !ratios.is_empty() {
            let mut figure = Figure::new(
                "ratio_to_llama_bench",
                &format!("{metric} ÷ llama-bench, {}", way.name()),
                "x",
                Better::Higher,
                ratios,
            )
            .for_way(way.name());
            figure.id = format!("ratio_to_llama_bench/{metric}/{}", way.name());
            figures.push(figure);
        }
    }
    figures
}

fn request_json(max_tokens: u32) -> Value {
    json!({"op": "generate", "id": "bench", "prompt": {"format": "completion"},
           "messages": [{"role": "user", "content": PROMPT}],
           "params": {"max_tokens": max_tokens, "temperature": 0}})
}

/// The baseline: this process is the engine's only client, with nothing in between.
fn direct(
    engine_bin: &std::path::Path,
    model: &ModelEntry,
    config: &Config,
    max_tokens: u32,
) -> Result<Sample> {
    let mut cmd = Command::new(engine_bin);
    cmd.arg("--model").arg(&model.path).args([
        "--parallel",
        "1",
        "--context",
        &config.engine.context.to_string(),
    ]);
    cmd.args(engine_settings(config));
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start gemma-engine")?;
    let pid = child.id();
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("gemma-engine's standard streams could not be connected");
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut next = || -> Result<Value> {
        let line = lines
            .next()
            .ok_or_else(|| anyhow!("gemma-engine ended early"))??;
        Ok(serde_json::from_str(&line)?)
    };
    let load_ms = loop {
        let e = next()?;
        match e["event"].as_str() {
            Some("ready") => break ms(started.elapsed()),
            Some("loading") => {}
            _ => bail!(
                "gemma-engine failed to load {}: {}",
                model.path.display(),
                sentence(&e)
            ),
        }
    };
    let sent = Instant::now();
    writeln!(stdin, "{}", request_json(max_tokens))?;
    stdin.flush()?;
    let mut first = None;
    let mut last = sent;
    let done = loop {
        let e = next()?;
        match e["event"].as_str() {
            Some("token") => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
            }
            Some("done") => break e,
            Some("progress") => {}
            _ => bail!("gemma-engine failed the request: {}", sentence(&e)),
        }
    };
    let peak = peak_rss_mib(pid);
    drop(stdin);
    let _ = child.wait();
    let done: protocol::DoneInfo = serde_json::from_value(done)?;
    Ok(sample(
        load_ms,
        sent,
        first,
        last,
        (done.usage.prompt_tokens, done.usage.completion_tokens),
        done.timings.prefill_tokens_per_s,
        peak,
    ))
}

/// The path every front end takes: supervisor → engine adapter → engine.
async fn supervised(
    supervisor: &Supervisor,
    model: &ModelEntry,
    max_tokens: u32,
) -> Result<Sample> {
    let started = Instant::now();
    supervisor.preload(model, |_| {}).await?;
    let request = |prompt: &str| {
        let mut request =
            GenerateRequest::greedy_completion(supervisor.new_request_id(), prompt, max_tokens);
        if chat_only(model) {
            request.prompt = crate::domain::PromptFormat::Chat { template: None };
        }
        request
    };
    if model.engine == EngineKind::GemmaCpp {
        // gemma.cpp takes its sampling flags per process, so a preloaded one (started with the
        // configured sampling) restarts for the benchmark's greedy request, and that restart
        // would land in the measured time to first token: the direct way starts gemma.cpp with
        // the right flags. One untimed request with the same flags and another prompt first, so
        // both ways time a process already started for the request; its time counts as loading.
        let mut warm = supervisor.submit(model, request("Name a colour."))?;
        loop {
            match warm.next().await {
                Some(SupervisorEvent::Finished(_)) => break,
                Some(SupervisorEvent::Failed(e)) => return Err(e.into()),
                Some(_) => {}
                None => bail!("the supervisor stopped answering"),
            }
        }
    }
    let load_ms = ms(started.elapsed());
    let request = request(PROMPT);
    let sent = Instant::now();
    let mut reply = supervisor.submit(model, request)?;
    let mut first = None;
    let mut last = sent;
    let mut pid = None;
    let done = loop {
        match reply.next().await {
            Some(SupervisorEvent::Token(_)) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
            }
            Some(SupervisorEvent::Started(d)) => pid = d.pid,
            Some(SupervisorEvent::Finished(done)) => break done,
            Some(SupervisorEvent::Failed(e)) => return Err(e.into()),
            Some(_) => {}
            None => bail!("the supervisor stopped answering"),
        }
    };
    let peak = pid.and_then(peak_rss_mib);
    supervisor.unload(&model.name).await?;
    Ok(sample(
        load_ms,
        sent,
        first,
        last,
        (done.usage.prompt_tokens, done.usage.completion_tokens),
        done.timings.prefill_tokens_per_s,
        peak,
    ))
}

/// The whole command a user runs, timed where its reader sees the text.
fn through_run(model: &ModelEntry, config: &Config, max_tokens: u32) -> Result<Sample> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("run").arg("--model").arg(&model.path);
    if !chat_only(model) {
        cmd.arg("--raw");
    }
    cmd.args([
        "--temperature",
        "0",
        "--stats",
        "--max-tokens",
        &max_tokens.to_string(),
    ]);
    cmd.args(engine_settings(config));
    cmd.arg(PROMPT);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let Some(mut stdout) = child.stdout.take() else {
        bail!("gemmactl run's stdout could not be connected");
    };
    let mut buf = [0u8; 4096];
    let mut first = None;
    let mut last = Instant::now();
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr)?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("gemmactl run failed: {}", stderr.trim());
    }
    // The stats line starts "<N> tokens · "; the final newline `run` adds is not a token.
    let tokens: u32 = stderr
        .lines()
        .find_map(|l| {
            // The stats line starts with the reply's token count: `12 tokens · …`.
            l.contains("tok/s decode")
                .then(|| l.split_whitespace().next()?.parse().ok())
                .flatten()
        })
        .ok_or_else(|| anyhow!("no stats line from gemmactl run: {stderr}"))?;
    let (Some(first), true) = (first, tokens > 1) else {
        bail!("gemmactl run printed nothing")
    };
    Ok(Sample {
        decode_tokens_per_s: (tokens - 1) as f64
            / last.duration_since(first).as_secs_f64().max(1e-9),
        completion_tokens: tokens,
        ..Sample::default()
    })
}

fn sample(
    load_ms: f64,
    sent: Instant,
    first: Option<Instant>,
    last: Instant,
    (prompt_tokens, completion_tokens): (u32, u32),
    prefill: f64,
    peak: Option<f64>,
) -> Sample {
    let first = first.unwrap_or(last);
    let decode_secs = last.duration_since(first).as_secs_f64();
    Sample {
        load_ms,
        ttft_ms: ms(first.duration_since(sent)),
        prefill_tokens_per_s: prefill,
        decode_tokens_per_s: if decode_secs > 0.0 {
            completion_tokens.saturating_sub(1) as f64 / decode_secs
        } else {
            0.0
        },
        peak_rss_mib: peak,
        prompt_tokens,
        completion_tokens,
    }
}

/// The binary a model's baseline runs: its own engine.
enum Baseline {
    GemmaEngine(std::path::PathBuf),
    GemmaCpp(std::path::PathBuf),
}

/// gemma.cpp wraps every prompt to an instruct model in its chat template, so such a model gets
/// the prompt as a chat message (anything else gets it as plain text).
fn chat_only(model: &ModelEntry) -> bool {
    model.engine == EngineKind::GemmaCpp && model.kind == crate::models::ModelKind::Instruct
}

/// An engine's error event as its sentence (never the raw JSON).
fn sentence(event: &Value) -> String {
    event["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| "it ended without saying why".to_string())
}

/// The process's peak resident memory so far (Linux `VmHWM`).
pub(super) fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn median_sample<'a>(samples: impl Iterator<Item = &'a Sample>) -> Sample {
    let all: Vec<&Sample> = samples.collect();
    let med = |f: &dyn Fn(&Sample) -> f64| median(all.iter().map(|s| f(s)).collect());
    Sample {
        load_ms: med(&|s| s.load_ms),
        ttft_ms: med(&|s| s.ttft_ms),
        prefill_tokens_per_s: med(&|s| s.prefill_tokens_per_s),
        decode_tokens_per_s: med(&|s| s.decode_tokens_per_s),
        peak_rss_mib: all
            .iter()
            .any(|s| s.peak_rss_mib.is_some())
            .then(|| med(&|s| s.peak_rss_mib.unwrap_or(0.0))),
        prompt_tokens: all.first().map(|s| s.prompt_tokens).unwrap_or(0),
        completion_tokens: all.first().map(|s| s.completion_tokens).unwrap_or(0),
    }
}

/// The engine settings every way runs with, as flags: gemma-engine and `gemmactl run` spell them
/// alike, so the direct and the `run` way are given the very same words.
fn engine_settings(config: &Config) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(t) = config.engine.threads {
        args.extend(["--threads".to_string(), t.to_string()]);
    }
    args.extend([
        "--kv-cache-type".to_string(),
        config.engine.kv_cache_type.to_string(),
        "--flash-attention".to_string(),
        config.engine.flash_attention.to_string(),
    ]);
    args
}

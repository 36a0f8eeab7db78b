//! `gemmactl bench --suite soak`: a memory-leak and stress test. Thousands of requests (2,000 by
//! default) go through one supervisor and one engine on the real model, the way front ends send
//! them, while gemmactl's and the engine's resident memory and open file descriptors are sampled.
//!
//! - **The path**: every request is a turn of the turn service (`crate::chat`) on a supervisor
//!   owned by this process — the path of `chat`, `run`, `batch`, `mcp` and `serve` — storing
//!   into a real SQLite history of its own (a temporary file, so the user's history does not get
//!   thousands of test conversations). Requests go in waves of [`plan::WAVE`], one per decode
//!   slot; a third of them continue the conversation their lane carries.
//! - **The mix** (`plan.rs`): prompts of 3 to 120 words, replies of 1 to 16 tokens, greedy and
//!   sampled; one request in ten cancelled with `Turn::cancel` (what Ctrl-C in the shell, a
//!   closed HTTP client or a batch interrupt calls), at once, after the first token or a few
//!   tokens in; one in a hundred has its engine killed with SIGKILL once its first token has
//!   arrived, the pid taken from the supervisor's own status (what `gemmactl ps` shows).
//! - **The samples** (`probe.rs`): after every wave, with no request running, gemmactl's
//!   memory and descriptors (this process: `bench` runs the supervisor in-process, as every
//!   front end does) and the engine's (the pid the supervisor reports).
//! - **The end**: zombies are children of this process in state `Z`, looked for after the last
//!   request (killed engines must have been reaped while the supervisor ran) and again after
//!   it shut down; orphans are engine pids seen during the run, or children of this process,
//!   still running after the shutdown.
//!
//! `series.rs` holds what is recorded and the rule it is judged by; `chart.rs` draws it.

pub(super) mod chart;
mod plan;
mod probe;
pub(super) mod series;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::results::{Better, Figure};
use crate::chat::{PromptStyle, Thread, TurnEvent, TurnService};
use crate::config::{Config, Paths};
use crate::domain::{FinishReason, SamplingParams, Source};
use crate::models::ModelEntry;
use crate::store::Store;
use crate::supervisor::{EngineError, Supervisor, SupervisorError};
use plan::{Fate, Planned, WAVE};
use series::{Ended, Found, Kill, Record, Sample, Series};

pub(super) use plan::MAX_TOKENS;

/// Requests of a soak when `--requests` is not given (the figure).
pub(super) const DEFAULT_REQUESTS: usize = 2000;

/// The fewest requests a soak takes: ten waves, so each memory window holds samples.
pub(super) const MIN_REQUESTS: usize = 10 * WAVE;

/// Longest wait for the next event of a request: a hang fails the soak instead of stalling it.
const EVENT_DEADLINE: Duration = Duration::from_secs(300);

/// Turns a conversation is carried on for before its lane starts a new one.
const MAX_TURNS: usize = 3;

/// A finished soak: its figures for `bench compare`, and everything it recorded.
pub(super) struct Soak {
    pub figures: Vec<Figure>,
    pub series: Series,
}

/// One lane of a wave: the conversation it carries on.
#[derive(Default)]
struct Lane {
    thread: Option<Thread>,
    turns: usize,
}

/// Runs the soak of `requests` on `model`, prints its verdict, and returns what it recorded.
pub(super) async fn run(
    model: &ModelEntry,
    config: &Config,
    paths: &Paths,
    requests: usize,
    json_out: bool,
) -> Result<Soak> {
    let mut cfg = config.clone();
    cfg.engine.parallel = WAVE as u32;
    // The engine must stay up between waves whatever the configured idle time.
    cfg.supervisor.idle_ttl_secs = 0;
    // Declared first, dropped last: the history outlives the service that writes it.
    let history = tempfile::tempdir()
        .context("cannot create a temporary folder for the soak's history database")?;
    let store = Store::open(&history.path().join("history.db"))?;
    // Scripted, independent conversations in parallel: batch is the front end this resembles.
    let service = TurnService::new(
        Supervisor::unpublished(cfg.clone()),
        Some(store),
        Source::Batch,
        paths,
        &cfg,
    );
    let result = soak(&service, model, requests, json_out).await;
    // Whatever happened, the engines are stopped before orphans are looked for.
    service.shutdown().await;
    let m = result?;
    let me = std::process::id();
    let zombies_after_shutdown = probe::zombies_of(me);
    // An engine seen during the run that still runs (the same process: same pid, same start).
    let mut orphans: BTreeSet<u32> = m
        .seen
        .iter()
        .filter(|(pid, started)| probe::alive(**pid) && probe::start_time(**pid) == Some(**started))
        .map(|(pid, _)| *pid)
        .collect();
    // And any child of this process still running: nothing else here starts processes.
    orphans.extend(
        probe::children_of(me)
            .into_iter()
            .filter_map(|(pid, zombie)| (!zombie).then_some(pid)),
    );
    drop(service);
    drop(history);

    let zombies: BTreeSet<u32> = m
        .zombies_running
        .iter()
        .chain(&zombies_after_shutdown)
        .copied()
        .collect();
    let verdict = series::judge(&Found {
        requests,
        samples: &m.samples,
        warm_up: &m.warm_up,
        end: &m.end,
        records: &m.records,
        zombies: zombies.len(),
        orphans: orphans.len(),
    });
    let run = Series {
        requests,
        concurrency: WAVE,
        seed: plan::SEED,
        warm_up: m.warm_up,
        end: m.end,
        samples: m.samples,
        records: m.records,
        kills: m.kills,
        engine_pids: m.seen.into_keys().collect(),
        engine_starts: m.engine_starts,
        zombies_running: m.zombies_running,
        zombies_after_shutdown,
        orphans: orphans.into_iter().collect(),
        verdict,
    };
    report(model, &run, json_out);
    Ok(Soak {
        figures: figures(&run),
        series: run,
    })
}

/// What the waves measured, before the supervisor shut down.
struct Measured {
    warm_up: Sample,
    end: Sample,
    samples: Vec<Sample>,
    records: Vec<Record>,
    kills: Vec<Kill>,
    /// Every engine seen: pid and start time.
    seen: BTreeMap<u32, u64>,
    engine_starts: u64,
    zombies_running: Vec<u32>,
}

/// The waves: warm-up, the counted requests with a sample after each wave, cool-down.
async fn soak(
    service: &TurnService,
    model: &ModelEntry,
    requests: usize,
    json_out: bool,
) -> Result<Measured> {
    let me = std::process::id();
    let started = Instant::now();
    let mut lanes: Vec<Lane> = (0..WAVE).map(|_| Lane::default()).collect();
    let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
    let mut kills = Vec::new();

    // The warm-up loads the engine and lets both processes reach their working size; the
    // cool-down is the same wave again, so the two are measured in the same state.
    let settle = |number: usize| -> Vec<Planned> {
        (0..WAVE)
            .map(|_| Planned {
                number,
                fate: Fate::Reply,
                prompt_words: 12,
                max_tokens: 4,
                greedy: true,
                new_conversation: true,
            })
            .collect()
    };
    for r in wave(
        service,
        model,
        &mut lanes,
        &settle(0),
        &mut seen,
        &mut kills,
    )
    .await?
    {
        if !r.expected {
            bail!(
                "the soak's warm-up request did not complete ({:?}{}): the engine cannot serve {}",
                r.ended,
                r.error.map(|e| format!(": {e}")).unwrap_or_default(),
                model.name
            );
        }
    }
    let warm_up = sample(service, 0, started, &mut seen);

    let mut samples = Vec::new();
    let mut records = Vec::new();
    for planned in plan::plan(requests).chunks(WAVE) {
        records.extend(wave(service, model, &mut lanes, planned, &mut seen, &mut kills).await?);
        let s = sample(service, records.len(), started, &mut seen);
        if !json_out && (s.request.is_multiple_of(100) || s.request == requests) {
            eprintln!(
                "{:>5}/{requests} requests  gemmactl {:6.1} MiB {:>3} fds  engine {} MiB {} fds  ({:.0} s)",
                s.request,
                s.gemmactl_rss_mib,
                s.gemmactl_fds,
                s.engine_rss_mib.map_or("-".into(), |m| format!("{m:6.1}")),
                s.engine_fds.map_or("-".into(), |n| n.to_string()),
                s.elapsed_s
            );
        }
        samples.push(s);
    }
    let end_records = wave(
        service,
        model,
        &mut lanes,
        &settle(requests + 1),
        &mut seen,
        &mut kills,
    )
    .await?;
    if let Some(r) = end_records.iter().find(|r| !r.expected) {
        bail!(
            "the soak's cool-down request did not complete ({:?}{})",
            r.ended,
            r.error
                .clone()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    // The conversations end here: what their threads hold is released before the last sample.
    drop(lanes);
    let end = sample(service, requests, started, &mut seen);
    let zombies_running = probe::zombies_of(me);
    let engine_starts = service
        .supervisor()
        .map(|s| s.status().engines.iter().map(|e| e.loads).sum())
        .unwrap_or(0);
    Ok(Measured {
        warm_up,
        end,
        samples,
        records,
        kills,
        seen,
        engine_starts,
        zombies_running,
    })
}

/// Sends one wave (a request per lane, all at once) and waits for every one to end.
async fn wave(
    service: &TurnService,
    model: &ModelEntry,
    lanes: &mut [Lane],
    planned: &[Planned],
    seen: &mut Seen,
    kills: &mut Vec<Kill>,
) -> Result<Vec<Record>> {
    let with_kill = planned.iter().any(|p| p.fate == Fate::Kill);
    let driven = futures_util::future::join_all(
        lanes
            .iter_mut()
            .zip(planned)
            .map(|(lane, p)| drive(service, model, lane, p)),
    )
    .await;
    let mut records = Vec::new();
    for (d, p) in driven.into_iter().zip(planned) {
        let d = d.with_context(|| format!("soak request {}", p.number))?;
        seen.extend(d.engines);
        if let Some(pid) = d.killed {
            kills.push(Kill {
                request: p.number,
                pid,
            });
        }
        records.push(Record {
            number: p.number,
            fate: p.fate,
            prompt_words: p.prompt_words,
            max_tokens: p.max_tokens,
            ended: d.ended,
            tokens: d.tokens,
            cancelled_at: d.cancelled_at,
            expected: series::expected(p.fate, d.ended, d.tokens, d.cancelled_at, with_kill),
            error: d.error,
        });
    }
    Ok(records)
}

/// What happened to one request.
struct Driven {
    ended: Ended,
    tokens: u32,
    cancelled_at: Option<u32>,
    error: Option<String>,
    /// The engines it saw (pid and start time): the one its `Started` event named, and the
    /// one killed under it, each read while it ran.
    engines: Vec<(u32, u64)>,
    /// The engine killed under it.
    killed: Option<u32>,
}

/// Runs one request as a turn of its lane's conversation, doing to it what its plan says.
async fn drive(
    service: &TurnService,
    model: &ModelEntry,
    lane: &mut Lane,
    p: &Planned,
) -> Result<Driven> {
    if p.new_conversation || lane.turns >= MAX_TURNS {
        lane.thread = None;
        lane.turns = 0;
    }
    let thread = lane.thread.get_or_insert_with(|| {
        Thread::new(
            service,
            model.clone(),
            None,
            SamplingParams::default(),
            PromptStyle::Conversation,
        )
    });
    let params = thread.params_mut();
    params.max_tokens = Some(p.max_tokens);
    params.temperature = if p.greedy {
        0.0
    } else {
        SamplingParams::DEFAULT_TEMPERATURE
    };
    let mut turn = thread.send(&p.prompt())?;
    lane.turns += 1;
    let mut received = 0u32;
    let mut cancelled_at = None;
    let mut engines = Vec::new();
    let mut killed = None;
    if p.fate == (Fate::Cancel { after_tokens: 0 }) {
        turn.cancel();
        cancelled_at = Some(0);
    }
    let end = loop {
        let event = tokio::time::timeout(EVENT_DEADLINE, turn.next())
            .await
            .map_err(|_| anyhow!("no answer within {} s", EVENT_DEADLINE.as_secs()))?;
        match event {
            Some(TurnEvent::Started(d)) => {
                engines.extend(d.pid.and_then(|pid| Some((pid, probe::start_time(pid)?))));
            }
            Some(TurnEvent::Token(_)) => {
                received += 1;
                match p.fate {
                    Fate::Cancel { after_tokens }
                        if cancelled_at.is_none() && received >= after_tokens =>
                    {
                        turn.cancel();
                        cancelled_at = Some(received);
                    }
                    Fate::Kill if killed.is_none() => {
                        let (pid, started) = kill_engine(service, model)?;
                        engines.extend(started.map(|s| (pid, s)));
                        killed = Some(pid);
                    }
                    _ => {}
                }
            }
            Some(TurnEvent::Ended(end)) => break end,
            Some(_) => {}
            None => bail!("the turn ended without its last event"),
        }
    };
    let (ended, tokens, error) = match &end.result {
        Ok(done) => (
            match done.finish_reason {
                FinishReason::Stop => Ended::Stop,
                FinishReason::Length => Ended::Length,
                FinishReason::Context => Ended::Context,
                FinishReason::Cancelled => Ended::Cancelled,
                FinishReason::Error => Ended::Error,
            },
            done.usage.completion_tokens,
            None,
        ),
        Err(e) => {
            let by_kill = matches!(
                e,
                SupervisorError::Engine(EngineError::Died { exit, .. })
                    if exit.signal == Some(libc::SIGKILL)
            );
            let ended = if by_kill { Ended::Killed } else { Ended::Error };
            (ended, received, Some(e.to_string()))
        }
    };
    Ok(Driven {
        ended,
        tokens,
        cancelled_at,
        error,
        engines,
        killed,
    })
}

/// Kills the model's engine with SIGKILL; its pid as the supervisor reports it, and its start
/// time read just before.
fn kill_engine(service: &TurnService, model: &ModelEntry) -> Result<(u32, Option<u64>)> {
    let supervisor = service
        .supervisor()
        .context("the soak's turn service has no supervisor of its own")?;
    let pid = supervisor
        .status()
        .engines
        .iter()
        .find(|e| e.model == model.name)
        .and_then(|e| e.pid)
        .with_context(|| {
            format!(
                "the supervisor reports no engine for {} while a request runs on it",
                model.name
            )
        })?;
    let started = probe::start_time(pid);
    let pid_t = libc::pid_t::try_from(pid).context("an engine pid out of range")?;
    // SAFETY: kill(2) sends a signal and touches no memory; the pid is an engine this process
    // started and still holds (the supervisor reaps it, so it cannot have been reused).
    let rc = unsafe { libc::kill(pid_t, libc::SIGKILL) };
    if rc != 0 {
        bail!(
            "cannot kill engine {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok((pid, started))
}

/// Engines seen during the run: pid → start time.
type Seen = BTreeMap<u32, u64>;

/// Remembers an engine (a pid seen again after a restart is a new process: its start time too).
fn note(seen: &mut Seen, pid: u32) {
    if let Some(started) = probe::start_time(pid) {
        seen.insert(pid, started);
    }
}

/// Memory and descriptors of gemmactl and of the engines the supervisor reports now.
fn sample(service: &TurnService, request: usize, started: Instant, seen: &mut Seen) -> Sample {
    let me = std::process::id();
    let pids: Vec<u32> = service
        .supervisor()
        .map(|s| s.status().engines.iter().filter_map(|e| e.pid).collect())
        .unwrap_or_default();
    for pid in &pids {
        note(seen, *pid);
    }
    let rss: Vec<f64> = pids.iter().filter_map(|p| probe::rss_mib(*p)).collect();
    let fds: Vec<u32> = pids.iter().filter_map(|p| probe::open_fds(*p)).collect();
    Sample {
        request,
        elapsed_s: started.elapsed().as_secs_f64(),
        gemmactl_rss_mib: probe::rss_mib(me).unwrap_or(0.0),
        gemmactl_fds: probe::open_fds(me).unwrap_or(0),
        engine_rss_mib: (!rss.is_empty()).then(|| rss.iter().sum()),
        engine_fds: (!fds.is_empty()).then(|| fds.iter().sum()),
    }
}

/// The figures `bench compare` matches between soaks: the settled memory (the last window's
/// samples) and its growth over the run.
fn figures(run: &Series) -> Vec<Figure> {
    let (_, last) = series::windows(&run.samples, run.requests);
    let mut out = Vec::new();
    let gemmactl: Vec<f64> = last.iter().map(|s| s.gemmactl_rss_mib).collect();
    let engine: Vec<f64> = last.iter().filter_map(|s| s.engine_rss_mib).collect();
    if !gemmactl.is_empty() {
        out.push(Figure::new(
            "soak_gemmactl_rss",
            "gemmactl RSS, last requests",
            "MiB",
            Better::Lower,
            gemmactl,
        ));
    }
    if !engine.is_empty() {
        out.push(Figure::new(
            "soak_engine_rss",
            "engine RSS, last requests",
            "MiB",
            Better::Lower,
            engine,
        ));
    }
    let v = &run.verdict;
    if v.gemmactl_rss_ratio > 0.0 {
        out.push(Figure::new(
            "soak_gemmactl_rss_growth",
            "gemmactl RSS, last ÷ first requests",
            "x",
            Better::Lower,
            vec![v.gemmactl_rss_ratio],
        ));
    }
    if let Some(r) = v.engine_rss_ratio {
        out.push(Figure::new(
            "soak_engine_rss_growth",
            "engine RSS, last ÷ first requests",
            "x",
            Better::Lower,
            vec![r],
        ));
    }
    out
}

/// Prints the verdict (text, or one JSON object).
fn report(model: &ModelEntry, run: &Series, json_out: bool) {
    let v = &run.verdict;
    if json_out {
        println!(
            "{}",
            json!({
                "model": model.name, "suite": "soak", "requests": run.requests,
                "concurrency": run.concurrency, "engine_starts": run.engine_starts,
                "kills": run.kills.len(),
                "zombies": run.zombies_running.len() + run.zombies_after_shutdown.len(),
                "orphans": run.orphans.len(),
                "verdict": v,
            })
        );
        return;
    }
    let minutes = run.end.elapsed_s / 60.0;
    println!(
        "soak on {}: {} requests, {} at a time (engine with {} slots), {:.1} min",
        model.name, run.requests, run.concurrency, run.concurrency, minutes
    );
    println!(
        "  ended: {} with a reply, {} cancelled, {} with their engine killed ({} kills, {} engine starts), {} unexpected",
        v.replies,
        v.cancelled,
        v.killed,
        run.kills.len(),
        run.engine_starts,
        v.unexpected
    );
    println!(
        "  gemmactl RSS: first {} requests {:.1} MiB, last {} {:.1} MiB: {:.3}x",
        v.window, v.gemmactl_rss_first_mib, v.window, v.gemmactl_rss_last_mib, v.gemmactl_rss_ratio
    );
    match (
        v.engine_rss_first_mib,
        v.engine_rss_last_mib,
        v.engine_rss_ratio,
    ) {
        (Some(a), Some(b), Some(r)) => println!(
            "  engine RSS:   first {} requests {a:.1} MiB, last {} {b:.1} MiB: {r:.3}x",
            v.window, v.window
        ),
        _ => println!("  engine RSS:   not measured in both windows"),
    }
    let fds = |a: Option<u32>, b: Option<u32>| {
        let shown = |n: Option<u32>| n.map_or("-".to_string(), |n| n.to_string());
        format!("{} after warm-up, {} at the end", shown(a), shown(b))
    };
    println!(
        "  open fds: gemmactl {} ({}); engine {} ({})",
        fds(Some(run.warm_up.gemmactl_fds), Some(run.end.gemmactl_fds)),
        if v.gemmactl_fds_equal {
            "equal"
        } else {
            "DIFFERENT"
        },
        fds(run.warm_up.engine_fds, run.end.engine_fds),
        if v.engine_fds_equal {
            "equal"
        } else {
            "DIFFERENT"
        },
    );
    println!(
        "  zombies: {} while running, {} after shutdown; orphans: {} of {} engine pids seen",
        run.zombies_running.len(),
        run.zombies_after_shutdown.len(),
        run.orphans.len(),
        run.engine_pids.len()
    );
    if v.passed {
        println!(
            "verdict: pass (memory within {} %, descriptors equal, no zombie, no orphan, every request ended as planned)",
            v.tolerance_pct
        );
    } else {
        println!("verdict: FAIL");
        for f in &v.failures {
            println!("  - {f}");
        }
    }
}

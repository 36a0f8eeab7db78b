//! `gemmactl bench --suite supervisor`: what the supervisor adds or enables, measured on real
//! engines — cold load, warm swap between two resident models, cancel latency, and aggregate
//! throughput of 1 to 16 concurrent requests on one model (batched by one engine).
//!
//! Concurrency levels are run in alternating order over the rounds, so machine noise falls on
//! all of them; every figure printed is a median.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::results::{Better, Figure};
use super::stats::{median, ms};
use crate::config::Config;
use crate::domain::{FinishReason, GenerateRequest};
use crate::models::ModelEntry;
use crate::supervisor::{Reply, Supervisor, SupervisorEvent};

const LEVELS: [usize; 5] = [1, 2, 4, 8, 16];

/// The figures of one run of the suite (medians over the rounds).
struct Figures {
    cold: f64,
    swap: f64,
    stay: f64,
    cancel: f64,
    /// Aggregate decode tokens/s by concurrent requests.
    curve: Vec<(usize, f64)>,
}

/// Runs the suite, prints its medians, and returns every figure with its samples.
pub(super) async fn run(
    model: &ModelEntry,
    config: &Config,
    runs: usize,
    max_tokens: u32,
    json_out: bool,
) -> Result<Vec<Figure>> {
    let mut cfg = config.clone();
    cfg.engine.parallel = 16;
    cfg.supervisor.max_models = 3;
    cfg.supervisor.idle_ttl_secs = 0;
    let cold = cold_loads(model, &cfg, runs).await?;

    let sup = Supervisor::unpublished(cfg.clone());
    let a = ModelEntry {
        name: format!("{}#a", model.name),
        ..model.clone()
    };
    let b = ModelEntry {
        name: format!("{}#b", model.name),
        ..model.clone()
    };
    sup.preload(&a, |_| {}).await?;
    sup.preload(&b, |_| {}).await?;
    let (swap, stay) = warm_swaps(&sup, &a, &b, runs).await?;
    let cancel = cancel_latencies(&sup, &a, runs).await?;
    let by_level = throughput(&sup, &a, runs, max_tokens).await?;
    sup.shutdown().await;

    let figures = Figures {
        cold: median(cold.clone()),
        swap: median(swap.clone()),
        stay: median(stay.clone()),
        cancel: median(cancel.clone()),
        curve: LEVELS
            .iter()
            .zip(&by_level)
            .map(|(n, v)| (*n, median(v.clone())))
            .collect(),
    };
    report(model, runs, max_tokens, json_out, &figures);

    let ms_figure = |metric: &str, label: &str, samples: Vec<f64>| {
        Figure::new(metric, label, "ms", Better::Lower, samples)
    };
    let mut out = vec![
        ms_figure(
            "cold_load_time_to_first_token",
            "cold load, request → first token",
            cold,
        ),
        ms_figure(
            "warm_swap_time_to_first_token",
            "warm swap → first token",
            swap,
        ),
        ms_figure(
            "same_model_time_to_first_token",
            "same model again → first token",
            stay,
        ),
        ms_figure("cancel_latency", "cancel → cancelled finish", cancel),
    ];
    for (n, samples) in LEVELS.iter().zip(&by_level) {
        out.push(
            Figure::new(
                "aggregate_throughput",
                &format!("aggregate throughput, {n} concurrent"),
                "tok/s",
                Better::Higher,
                samples.clone(),
            )
            .at_concurrency(*n as u32),
        );
    }
    // Paired within each round (the levels of a round ran back to back): the gain of batching,
    // robust to the machine's speed drifting between rounds.
    for (n, samples) in LEVELS.iter().zip(&by_level).skip(1) {
        let gains: Vec<f64> = samples
            .iter()
            .zip(&by_level[0])
            .map(|(many, one)| many / one)
            .collect();
        out.push(
            Figure::new(
                "aggregate_ratio_to_one",
                &format!("aggregate ÷ one request, {n} concurrent"),
                "x",
                Better::Higher,
                gains,
            )
            .at_concurrency(*n as u32),
        );
    }
    Ok(out)
}

/// Cold load: a fresh supervisor each time, request to first token.
async fn cold_loads(model: &ModelEntry, cfg: &Config, runs: usize) -> Result<Vec<f64>> {
    let mut cold = Vec::new();
    for _ in 0..runs {
        let sup = Supervisor::unpublished(cfg.clone());
        let started = Instant::now();
        let mut reply = sup.submit(model, request(&sup, "The capital of France is", 2))?;
        let first = first_token(&mut reply).await?;
        cold.push(ms(first.duration_since(started)));
        finish(&mut reply).await?;
        sup.shutdown().await;
    }
    Ok(cold)
}

/// Warm swap: alternate between two resident models; time from the request to its first token,
/// against the same request to the model that has just served (no swap).
async fn warm_swaps(
    sup: &Supervisor,
    a: &ModelEntry,
    b: &ModelEntry,
    runs: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut swap, mut stay) = (Vec::new(), Vec::new());
    for i in 0..runs * 4 {
        // The previous request went to the other model, so the first one here is a swap.
        let target = if i % 2 == 0 { a } else { b };
        swap.push(time_to_first_token(sup, target).await?);
        stay.push(time_to_first_token(sup, target).await?);
    }
    Ok((swap, stay))
}

/// Cancel latency: from cancel to the `cancelled` finish, with a reply in full flow.
async fn cancel_latencies(sup: &Supervisor, a: &ModelEntry, runs: usize) -> Result<Vec<f64>> {
    let mut cancel = Vec::new();
    for _ in 0..runs {
        let mut reply = sup.submit(a, request(sup, "Once upon a time", 2000))?;
        for _ in 0..5 {
            first_token(&mut reply).await?;
        }
        let asked = Instant::now();
        reply.cancel();
        let reason = finish(&mut reply).await?;
        if reason != FinishReason::Cancelled {
            bail!("cancelled request finished with {reason:?}");
        }
        cancel.push(ms(asked.elapsed()));
    }
    Ok(cancel)
}

/// Aggregate throughput by concurrency, levels in alternating order over the rounds.
async fn throughput(
    sup: &Supervisor,
    a: &ModelEntry,
    runs: usize,
    max_tokens: u32,
) -> Result<Vec<Vec<f64>>> {
    let mut by_level: Vec<Vec<f64>> = vec![Vec::new(); LEVELS.len()];
    for round in 0..runs {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..LEVELS.len()).collect()
        } else {
            (0..LEVELS.len()).rev().collect()
        };
        for i in order {
            by_level[i].push(aggregate_tokens_per_s(sup, a, LEVELS[i], max_tokens).await?);
        }
    }
    Ok(by_level)
}

/// Prints the figures (text, or one JSON object).
fn report(model: &ModelEntry, runs: usize, max_tokens: u32, json_out: bool, f: &Figures) {
    let curve = &f.curve;
    let base = curve[0].1;
    if json_out {
        println!(
            "{}",
            json!({
                "model": model.name, "runs": runs, "max_tokens": max_tokens,
                "cold_load_to_first_token_ms": f.cold,
                "warm_swap_to_first_token_ms": f.swap,
                "same_model_to_first_token_ms": f.stay,
                "cancel_latency_ms": f.cancel,
                "aggregate_tokens_per_s": curve.iter().map(|(n, t)| json!({"concurrent": n, "tokens_per_s": t, "ratio_to_one": t / base})).collect::<Vec<_>>(),
            })
        );
        return;
    }
    println!(
        "supervisor on {} ({} runs, medians; engine with 16 slots)",
        model.name, runs
    );
    println!("  cold load, request → first token      {:>8.0} ms", f.cold);
    println!(
        "  warm swap to a resident model → first  {:>8.1} ms",
        f.swap
    );
    println!(
        "  same model again → first token         {:>8.1} ms",
        f.stay
    );
    println!(
        "  cancel → cancelled finish              {:>8.1} ms",
        f.cancel
    );
    println!("  aggregate decode by concurrent requests ({max_tokens} tokens each):");
    for (n, t) in curve {
        println!(
            "    {:>2} concurrent  {:>7.1} tok/s  {:>5.2}x one",
            n,
            t,
            t / base
        );
    }
}

fn request(sup: &Supervisor, prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest::greedy_completion(sup.new_request_id(), prompt, max_tokens)
}

async fn time_to_first_token(sup: &Supervisor, model: &ModelEntry) -> Result<f64> {
    let started = Instant::now();
    let mut reply = sup.submit(model, request(sup, "The capital of France is", 2))?;
    let first = first_token(&mut reply).await?;
    finish(&mut reply).await?;
    Ok(ms(first.duration_since(started)))
}

/// Sends `n` requests at once and measures generated tokens per second of wall time.
async fn aggregate_tokens_per_s(
    sup: &Supervisor,
    model: &ModelEntry,
    n: usize,
    max_tokens: u32,
) -> Result<f64> {
    let started = Instant::now();
    let mut replies = Vec::new();
    for i in 0..n {
        // Different prompts, so every sequence does its own work.
        let prompt = format!(
            "Story number {}: once upon a time, in a village by the sea,",
            i + 1
        );
        replies.push(sup.submit(model, request(sup, &prompt, max_tokens))?);
    }
    let mut tokens = 0u64;
    for reply in &mut replies {
        loop {
            match next(reply).await? {
                SupervisorEvent::Finished(done) => {
                    tokens += done.usage.completion_tokens as u64;
                    break;
                }
                SupervisorEvent::Failed(e) => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(tokens as f64 / started.elapsed().as_secs_f64())
}

pub(super) async fn next(reply: &mut Reply) -> Result<SupervisorEvent> {
    match tokio::time::timeout(Duration::from_secs(300), reply.next()).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => bail!("the supervisor stopped answering"),
        Err(_) => bail!("no answer within 300 s"),
    }
}

/// Waits for the next token; its arrival time.
async fn first_token(reply: &mut Reply) -> Result<Instant> {
    loop {
        match next(reply).await? {
            SupervisorEvent::Token(_) => return Ok(Instant::now()),
            SupervisorEvent::Failed(e) => return Err(e.into()),
            SupervisorEvent::Finished(_) => bail!("the request finished before its first token"),
            _ => {}
        }
    }
}

async fn finish(reply: &mut Reply) -> Result<FinishReason> {
    loop {
        match next(reply).await? {
            SupervisorEvent::Finished(done) => return Ok(done.finish_reason),
            SupervisorEvent::Failed(e) => return Err(e.into()),
            _ => {}
        }
    }
}

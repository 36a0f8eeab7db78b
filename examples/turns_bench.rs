//! Long conversations: time to first token at turns 1, 5, 10 and 20 of one conversation on the
//! shell's path (a `Thread` of the turn service, which names one engine session, so every turn
//! reuses the KV cache of the turns before it for their common prefix).
//!
//! Each round is a new conversation of `--turns` questions (default 20) of about 100 tokens each,
//! answered greedily with at most `--tokens` tokens (default 96), so the conversation
//! soon outgrows Gemma 3's 512-token sliding window. Per turn it records the time from `Thread::send` to the
//! first text, and the engine's prompt and cached token counts. The ratio turn N ÷ turn 1 is taken
//! within a round, then the median over rounds. Gemma 3's sliding-window layers keep only their
//! window of the cache: if cutting a session back ever lost the reuse, the prompt would be read
//! whole and the cached count would drop to 0 — the table shows it per turn.
//!
//! ```sh
//! cargo run --example turns_bench -- --rounds 3 [--turns 20] [--tokens 96]
//! ```
//! Needs the default model in the download cache (`gemmactl models pull gemma3-270m`) and
//! `cargo build --workspace` (the engine next to this example's folder).

// A benchmark stops with its reason on the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use gemmactl::chat::TurnService;
use gemmactl::config::{Config, Paths};
use gemmactl::domain::Source;
use gemmactl::models;
use gemmactl::store::Store;
use gemmactl::supervisor::Supervisor;

mod common;
use common::{greedy_thread, median, option, timed_turn};

const TOPICS: [&str; 20] = [
    "rivers", "bridges", "bees", "clocks", "glass", "salt", "trains", "maps", "copper", "tides",
    "owls", "paper", "kites", "wool", "stone", "ink", "ships", "bells", "storms", "maple",
];

/// One turn's figures.
#[derive(Clone, Copy)]
struct Turn {
    first_text_ms: f64,
    prompt_tokens: u32,
    cached_tokens: u32,
}

fn main() {
    common::run_in_throwaway_home(|home| async move { bench(&home).await });
}

async fn conversation(
    service: &TurnService,
    model: &models::ModelEntry,
    turns: usize,
    tokens: u32,
) -> Vec<Turn> {
    let mut thread = greedy_thread(service, model, tokens);
    let mut out = Vec::new();
    for t in 0..turns {
        // About 100 tokens per question: this small model's replies are short whatever it is
        // asked, so the questions carry the conversation past the window.
        let topic = TOPICS[t % TOPICS.len()];
        let question = format!(
            "Question {}: here are my notes on {topic}. {topic} appear in old stories from many \
             countries; people have written about {topic} in letters, songs and travel journals \
             for centuries, and museums keep drawings of {topic} made by children and by \
             scientists alike. Some of my notes on {topic} are about the past, some about today, \
             and a few about what may change. Write a long paragraph about {topic}, with as much \
             detail as you can.",
            t + 1
        );
        let (first_text_ms, done) = timed_turn(&mut thread, &question).await;
        out.push(Turn {
            first_text_ms,
            prompt_tokens: done.usage.prompt_tokens,
            cached_tokens: done.usage.cached_tokens,
        });
    }
    out
}

async fn bench(home: &Path) {
    let rounds = option("rounds", 3) as usize;
    let turns = option("turns", 20).max(1) as usize;
    let tokens = option("tokens", 96) as u32;
    let paths = Paths::discover().unwrap();
    let config = Config::load(&paths).unwrap();
    let model = models::resolve(&paths, &config.default_model)
        .expect("the default model is in the download cache (gemmactl models pull gemma3-270m)");
    let store = Store::open(&home.join("history.db")).unwrap();
    let service = TurnService::new(
        Supervisor::unpublished(config.clone()),
        Some(store),
        Source::Chat,
        &paths,
        &config,
    );
    // Loads and warms the engine; not counted.
    conversation(&service, &model, 1, 4).await;

    let mut all: Vec<Vec<Turn>> = Vec::new();
    for round in 0..rounds {
        let figures = conversation(&service, &model, turns, tokens).await;
        println!(
            "round {}: {}",
            round + 1,
            figures
                .iter()
                .map(|t| format!("{:.0}", t.first_text_ms))
                .collect::<Vec<_>>()
                .join(" ")
        );
        all.push(figures);
    }
    println!();
    println!(
        "{} model, {} greedy tokens at most per reply, {rounds} rounds; medians over rounds",
        model.name, tokens
    );
    println!("| turn | prompt tokens | cached tokens | time to first text | ÷ turn 1 (median of per-round ratios) |");
    println!("|---|---|---|---|---|");
    let mut shown: Vec<usize> = [1, 5, 10, 20].into_iter().filter(|t| *t <= turns).collect();
    if !shown.contains(&turns) {
        shown.push(turns);
    }
    for t in shown {
        let at = |f: &dyn Fn(&Turn) -> f64| {
            median(&all.iter().map(|r| f(&r[t - 1])).collect::<Vec<_>>())
        };
        let ratio = median(
            &all.iter()
                .map(|r| r[t - 1].first_text_ms / r[0].first_text_ms)
                .collect::<Vec<_>>(),
        );
        println!(
            "| {t} | {:.0} | {:.0} | {:.0} ms | {ratio:.2}× |",
            at(&|x| x.prompt_tokens as f64),
            at(&|x| x.cached_tokens as f64),
            at(&|x| x.first_text_ms),
        );
    }
}

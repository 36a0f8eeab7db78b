//! `gemmactl bench --suite context`: how time to first token grows with the prompt, and how
//! decode slows as the context fills — the two curves that decide how long a conversation stays
//! pleasant.
//!
//! Each round sends one prompt of every length (`--lengths`, default 128, 512, 2,048 and 8,192
//! tokens) through the supervisor, as every front end does, to one engine loaded for the suite
//! with a context just large enough; lengths go up in one round and down in the next, so a
//! machine that drifts spoils no length more than another. Every prompt starts differently, so
//! none reuses another's cache: each is a full prefill. Decode is timed from the tokens' arrival
//! (the same way as the engine suite), so it is the speed with the KV cache holding the prompt.

use std::time::Instant;

use anyhow::{bail, Result};

use super::results::{Better, Figure};
use super::stats::{median, ms};
use super::supervisor::next;
use crate::config::Config;
use crate::domain::GenerateRequest;
use crate::models::ModelEntry;
use crate::supervisor::{Supervisor, SupervisorEvent};

/// The prompt lengths measured when `--lengths` is not given, in tokens.
pub(super) const DEFAULT_LENGTHS: [u32; 4] = [128, 512, 2048, 8192];

/// Filler sentences the prompts are made of: varied, so the model reads ordinary text.
const SENTENCES: [&str; 8] = [
    "The river carried boats of grain to the northern towns every spring.",
    "In the archive, the letters were sorted by year and by the writer's family name.",
    "A small committee met on Thursdays to plan the repairs of the old stone bridge.",
    "Travellers said the road through the hills was safe once the snow had melted.",
    "The observatory recorded the positions of the planets on clear nights.",
    "Merchants from the coast traded salt, wool and dried fish at the autumn fair.",
    "Each classroom kept a map of the valley with the farms and the mills marked on it.",
    "The council agreed to light the market square with lanterns after dark.",
];

/// One length's samples, one per round.
#[derive(Default)]
struct Samples {
    prompt_tokens: Vec<f64>,
    ttft_ms: Vec<f64>,
    prefill: Vec<f64>,
    decode: Vec<f64>,
}

/// Runs the suite, prints its medians, and returns every figure with its samples.
pub(super) async fn run(
    model: &ModelEntry,
    config: &Config,
    runs: usize,
    max_tokens: u32,
    lengths: &[u32],
    json_out: bool,
) -> Result<Vec<Figure>> {
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let mut cfg = config.clone();
    cfg.engine.parallel = 1;
    // Room for the longest prompt, its reply, and the few tokens a length may come out over.
    cfg.engine.context = cfg.engine.context.max(longest + max_tokens + 64);
    let sup = Supervisor::unpublished(cfg);
    sup.preload(model, |_| {}).await?;
    let per_sentence = tokens_per_sentence(&sup, model).await?;

    let mut by_length: Vec<Samples> = lengths.iter().map(|_| Samples::default()).collect();
    for round in 0..runs {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let prompt = prompt_of(lengths[i], per_sentence, round);
            let s = measure(&sup, model, &prompt, max_tokens).await?;
            if !json_out {
                println!(
                    "round {} {:>6} tokens  ttft {:>8.1} ms  prefill {:>5.0} tok/s  decode {:>5.1} tok/s",
                    round + 1,
                    s.0,
                    s.1,
                    s.2,
                    s.3
                );
            }
            let b = &mut by_length[i];
            b.prompt_tokens.push(s.0 as f64);
            b.ttft_ms.push(s.1);
            b.prefill.push(s.2);
            b.decode.push(s.3);
        }
    }
    sup.shutdown().await;

    if !json_out {
        println!(
            "{} on {}, {runs} rounds, {max_tokens} tokens each (medians):",
            model.name,
            model.engine.as_str()
        );
        println!("  prompt tokens  time to first token  prefill      decode at that fill");
        for b in &by_length {
            println!(
                "  {:>13.0}  {:>14.1} ms  {:>6.0} tok/s  {:>6.1} tok/s",
                median(b.prompt_tokens.clone()),
                median(b.ttft_ms.clone()),
                median(b.prefill.clone()),
                median(b.decode.clone())
            );
        }
    }
    let mut out = Vec::new();
    for (n, b) in lengths.iter().zip(by_length) {
        let at = |metric: &str, label: &str, unit: &str, better, samples| {
            Figure::new(
                metric,
                &format!("{label}, {n}-token prompt"),
                unit,
                better,
                samples,
            )
            .at_prompt_length(*n)
        };
        out.push(at(
            "time_to_first_token",
            "time to first token",
            "ms",
            Better::Lower,
            b.ttft_ms,
        ));
        out.push(at("prefill", "prefill", "tok/s", Better::Higher, b.prefill));
        out.push(at("decode", "decode", "tok/s", Better::Higher, b.decode));
    }
    Ok(out)
}

/// Tokens one filler sentence takes, from a request of 32 of them (the tokenizer is the model's,
/// so only the engine can say).
async fn tokens_per_sentence(sup: &Supervisor, model: &ModelEntry) -> Result<f64> {
    const N: usize = 32;
    let text = filler(N, usize::MAX);
    let (tokens, ..) = measure(sup, model, &text, 2).await?;
    Ok((tokens as f64 / N as f64).max(1.0))
}

/// A prompt of about `tokens` tokens, whose first words no other prompt of the run shares.
fn prompt_of(tokens: u32, per_sentence: f64, round: usize) -> String {
    let sentences = ((tokens as f64 / per_sentence).round() as usize).max(1);
    filler(sentences, round * 100_003 + tokens as usize)
}

fn filler(sentences: usize, tag: usize) -> String {
    let mut text = format!("Record {tag}.");
    for i in 0..sentences.saturating_sub(1) {
        text.push(' ');
        text.push_str(SENTENCES[i % SENTENCES.len()]);
    }
    text
}

/// One request: its prompt tokens, time to first token (ms), prefill and decode (tok/s).
async fn measure(
    sup: &Supervisor,
    model: &ModelEntry,
    prompt: &str,
    max_tokens: u32,
) -> Result<(u32, f64, f64, f64)> {
    let request = GenerateRequest::greedy_completion(sup.new_request_id(), prompt, max_tokens);
    let sent = Instant::now();
    let mut reply = sup.submit(model, request)?;
    let (mut first, mut last) = (None, sent);
    let done = loop {
        match next(&mut reply).await? {
            SupervisorEvent::Token(_) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
            }
            SupervisorEvent::Finished(done) => break done,
            SupervisorEvent::Failed(e) => return Err(e.into()),
            _ => {}
        }
    };
    let Some(first) = first else {
        bail!(
            "a {}-token prompt got no reply at all",
            done.usage.prompt_tokens
        );
    };
    let decode_secs = last.duration_since(first).as_secs_f64();
    let decode = if decode_secs > 0.0 {
        done.usage.completion_tokens.saturating_sub(1) as f64 / decode_secs
    } else {
        0.0
    };
    Ok((
        done.usage.prompt_tokens,
        ms(first.duration_since(sent)),
        done.timings.prefill_tokens_per_s,
        decode,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_the_asked_size_and_never_share_a_start() {
        let a = prompt_of(512, 16.0, 0);
        let b = prompt_of(512, 16.0, 1);
        let c = prompt_of(128, 16.0, 0);
        // 512 / 16 = 32 sentences: the tag and 31 fillers.
        assert_eq!(a.matches('.').count(), 32);
        assert_ne!(a.split('.').next(), b.split('.').next());
        assert_ne!(a.split('.').next(), c.split('.').next());
        assert_eq!(prompt_of(1, 16.0, 0).matches('.').count(), 1);
    }
}

//! The baseline of `gemmactl bench` for a gemma.cpp model: the stock `gemma` binary run the way a
//! user runs it (one prompt line typed at its `> ` marker), timed where a client sees its output.
//!
//! The flags that decide the work match what gemmactl starts gemma.cpp with for the same request
//! (greedy, the token limit, `seq_len`, threads, spin), so the figures compare the path, not the
//! settings. Time to first token is from sending the prompt to the first reply byte; decode speed
//! is the tokens after the first (gemma.cpp's Generate line counts them) over the time from the
//! first reply byte to the last — the same client-side measure the other two ways get.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::Sample;
use crate::config::{Config, Spin};
use crate::models::ModelEntry;

/// How long any single wait may take before the baseline gives up (a hang is an error).
const WAIT: Duration = Duration::from_secs(600);

enum Out {
    Stdout(Instant, Vec<u8>),
    Stderr(String),
    Closed,
}

/// One greedy request of `max_tokens` tokens for `prompt`, on a fresh `gemma` process.
pub(super) fn direct(
    binary: &std::path::Path,
    model: &ModelEntry,
    config: &Config,
    prompt: &str,
    max_tokens: u32,
) -> Result<Sample> {
    let settings = &config.engines.gemma_cpp;
    let mut cmd = Command::new(binary);
    cmd.arg("--weights").arg(&model.path);
    if let Some(t) = &model.tokenizer {
        cmd.arg("--tokenizer").arg(t);
    }
    cmd.args([
        "--verbosity",
        "1",
        "--seq_len",
        &settings.seq_len.to_string(),
        "--max_generated_tokens",
        &max_tokens.to_string(),
        "--temperature",
        "1",
        "--top_k",
        "1",
    ]);
    if let Some(n) = settings.threads.or(config.engine.threads) {
        cmd.args(["--num_threads", &n.to_string()]);
    }
    if let Some(spin) = settings.spin {
        let v = match spin {
            Spin::Auto => "-1",
            Spin::Off => "0",
            Spin::On => "1",
        };
        cmd.args(["--spin", v]);
    }
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start gemma.cpp's binary {}", binary.display()))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().context("gemma's stdin was not piped")?;
    let (tx, rx) = mpsc::channel();
    let mut stdout = child
        .stdout
        .take()
        .context("gemma's stdout was not piped")?;
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out_tx
                        .send(Out::Stdout(Instant::now(), buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = out_tx.send(Out::Closed);
    });
    let stderr = child
        .stderr
        .take()
        .context("gemma's stderr was not piped")?;
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(Out::Stderr(line)).is_err() {
                return;
            }
        }
    });
    let mut tail: Vec<String> = Vec::new();
    let next = |tail: &mut Vec<String>| -> Result<Out> {
        let event = rx
            .recv_timeout(WAIT)
            .map_err(|_| anyhow!("gemma.cpp did not answer within {} s", WAIT.as_secs()))?;
        if let Out::Stderr(line) = &event {
            tail.push(line.clone());
        }
        Ok(event)
    };

    // Startup is over at the first prompt marker.
    let mut seen = Vec::new();
    loop {
        match next(&mut tail)? {
            Out::Stdout(_, bytes) => {
                seen.extend_from_slice(&bytes);
                if seen.ends_with(b"\n> ") {
                    break;
                }
            }
            Out::Stderr(_) => {}
            Out::Closed => {
                let status = child.wait()?;
                bail!(
                    "gemma.cpp ended while loading {} ({status}): {}",
                    model.path.display(),
                    last_lines(&tail)
                );
            }
        }
    }
    let load_ms = ms(started.elapsed());
    let generate_lines = |tail: &[String]| {
        tail.iter()
            .filter(|l| l.contains("[ Timing info ] Generate:"))
            .count()
    };
    let before = generate_lines(&tail);
    let sent = Instant::now();
    stdin.write_all(prompt.replace('\n', " ").as_bytes())?;
    stdin.write_all(b"\n")?;
    stdin.flush()?;

    // The turn: dots, "\n\n", the reply, "\n\n> " (ended once the Generate line came too).
    let mut turn: Vec<u8> = Vec::new();
    let mut arrivals: Vec<(Instant, usize)> = Vec::new();
    while !(generate_lines(&tail) > before && turn.ends_with(b"\n\n> ")) {
        match next(&mut tail)? {
            Out::Stdout(at, bytes) => {
                turn.extend_from_slice(&bytes);
                arrivals.push((at, turn.len()));
            }
            Out::Stderr(_) => {}
            Out::Closed => bail!("gemma.cpp ended mid-reply: {}", last_lines(&tail)),
        }
    }
    let peak = super::peak_rss_mib(pid);
    drop(stdin);
    let _ = child.wait();

    let dots = turn.iter().take_while(|b| **b == b'.').count();
    let reply_start = dots + 2;
    let reply_end = turn.len() - 4;
    // The reads that brought the first and the last reply byte.
    let at = |byte: usize| {
        arrivals
            .iter()
            .find(|(_, end)| *end > byte)
            .map(|(t, _)| *t)
    };
    let (Some(first), Some(last)) = (at(reply_start), at(reply_end.saturating_sub(1))) else {
        bail!("gemma.cpp gave an empty reply");
    };
    let number_after = |line: &str, key: &str, field: usize| -> Option<f64> {
        let rest = line.split_once(key)?.1;
        rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
            .nth(field)?
            .parse()
            .ok()
    };
    let generate = tail
        .iter()
        .rev()
        .find(|l| l.contains("Generate:"))
        .cloned()
        .unwrap_or_default();
    let prefill = tail
        .iter()
        .rev()
        .find(|l| l.contains("Prefill:"))
        .cloned()
        .unwrap_or_default();
    let tokens = number_after(&generate, "Generate:", 1).unwrap_or(0.0) as u32;
    Ok(Sample {
        load_ms,
        ttft_ms: ms(first.duration_since(sent)),
        prefill_tokens_per_s: number_after(&prefill, "Prefill:", 2).unwrap_or(0.0),
        decode_tokens_per_s: if last > first && tokens > 1 {
            (tokens - 1) as f64 / last.duration_since(first).as_secs_f64()
        } else {
            0.0
        },
        peak_rss_mib: peak,
        prompt_tokens: dots as u32,
        completion_tokens: tokens,
    })
}

fn last_lines(tail: &[String]) -> String {
    let lines: Vec<&str> = tail
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(2)
        .map(String::as_str)
        .collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

//! A stand-in for gemma.cpp's `gemma` binary, for tests only: the real one cannot be built or
//! downloaded on a test machine. It reproduces, byte for byte, what a driver depends on in
//! `shared/reference/gemma-cpp-cli.md`: `--name value` flags (unknown ones ignored), the
//! clear-screen escape and banner, the configuration on stderr ending in a `Model` line, the
//! `"> "` prompt marker, `%q`/`%c`/empty prompts, `--eot_line`, one flushed dot per prompt token
//! (BOS and template included), the Timing lines, the blank-line separators, whitespace stripped
//! from the first token, per-token flushing, the empty reply when the first token ends the
//! sequence, multiturn positions wrapping modulo `--seq_len`, EOF handling, and `Abort at ...`
//! plus SIGABRT for every fatal error. Free text (banner, help, config names) differs.
//!
//! Its model is deterministic and described in `model.rs`. Environment knobs for tests:
//! `GEMMA_STANDIN_FAULT` = `sigill` | `sigkill` | `exit3` makes loading fail that way, and
//! `GEMMA_STANDIN_LOAD_MS` delays the end of loading. `--image_file` is handled as `image.rs`
//! describes.

mod image;
mod model;
mod store;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use model::Cache;

extern "C" {
    fn raise(sig: i32) -> i32;
}

const SIGILL: i32 = 4;
const SIGKILL: i32 = 9;

/// gemma.cpp's fatal error: one line on stderr, then abort() (SIGABRT).
pub fn fatal(place: &str, message: &str) -> ! {
    eprintln!("Abort at {place}: {message}");
    std::process::abort()
}

fn die_by(signal: i32) -> ! {
    let _ = std::io::stdout().flush();
    unsafe {
        raise(signal);
    }
    std::process::abort()
}

struct Flags(HashMap<String, String>);

impl Flags {
    fn parse() -> Flags {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.is_empty() || args.iter().any(|a| a == "--help") {
            eprintln!("{}", banner());
            eprintln!("Flags are --name value; see gemma.cpp's --help for the real list.");
            std::process::exit(0);
        }
        let mut flags = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            if let Some(name) = args[i].strip_prefix("--") {
                match args.get(i + 1) {
                    Some(value) => {
                        flags.insert(name.to_string(), value.clone());
                        i += 2;
                    }
                    None => fatal("args.h:71", &format!("Missing value for {name}")),
                }
            } else {
                i += 1;
            }
        }
        Flags(flags)
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        match self.str(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("terminate called after throwing an instance of 'std::invalid_argument'\n  what():  stoi");
                std::process::abort()
            }),
        }
    }

    /// Booleans and tri-states: `None` means "auto".
    fn tri(&self, name: &str) -> Option<bool> {
        match self.str(name)? {
            "1" | "true" | "on" => Some(true),
            "0" | "false" | "off" => Some(false),
            _ => None,
        }
    }
}

fn banner() -> &'static str {
    "  gemma.cpp stand-in (tests only)\n  ==============================="
}

fn main() {
    let flags = Flags::parse();
    let verbosity = flags.int("verbosity", 1);
    let multiturn = flags.tri("multiturn").unwrap_or(false);
    let seq_len = flags.int("seq_len", 8192).max(1) as usize;
    let max_generated = flags.int("max_generated_tokens", 4096).max(0) as usize;
    let top_k = flags.int("top_k", 1);
    for name in ["prefill_tbatch", "decode_qbatch"] {
        let n = flags.int(name, 16);
        if n > 4096 {
            fatal(
                "gemma_args.h:140",
                &format!("{name}_size {n} > kMaxBatchSize 4096: reduce it"),
            );
        }
    }
    let _ = flags.int("num_threads", 0);
    let eot_line = flags.str("eot_line").map(str::to_string);

    // Loading the weights comes first; its failures leave stdout untouched.
    if let Ok(ms) = std::env::var("GEMMA_STANDIN_LOAD_MS") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
    }
    let Some(weights_path) = flags.str("weights") else {
        fatal("gemma_args.h:88", "Missing --weights");
    };
    let weights = store::open(weights_path, flags.str("tokenizer"), flags.tri("wrapping"));
    match std::env::var("GEMMA_STANDIN_FAULT").as_deref() {
        Ok("sigill") => die_by(SIGILL),
        Ok("sigkill") => die_by(SIGKILL),
        Ok("exit3") => {
            eprintln!("stand-in: exiting with status 3 during startup");
            std::process::exit(3)
        }
        _ => {}
    }

    let mut out = std::io::stdout().lock();
    if verbosity >= 1 {
        let _ = write!(
            out,
            "\x1b[2J\x1b[1;1H{}\n\n*Usage*\n  Enter an instruction and press enter (%C resets conversation, %Q quits).\n\n*Examples*\n  - Write an email to grandma thanking her for the cookies.\n  - What are some tips for staying healthy?\n\n",
            banner()
        );
        let _ = out.flush();
        eprintln!("Max Sequence Length           : {seq_len}");
        eprintln!("Max Generated Tokens          : {max_generated}");
        eprintln!("Top-k                         : {top_k}");
        eprintln!("Weight Type                   : {}", weights.weight_type);
        eprintln!(
            "Prompt wrapping               : {}",
            if weights.wrapping { "on" } else { "off" }
        );
        // The real binary appends its weight-loading choices to the specifier.
        eprintln!(
            "Model                         : {}, to_bf16 -1, mmap -1 => Read",
            weights.specifier
        );
    }

    // gemma.cpp reads and encodes the image after the weights, before the first prompt marker.
    let image = flags.str("image_file").map(|path| {
        let started = Instant::now();
        let loaded = image::load(path, &weights.specifier);
        if verbosity >= 1 {
            eprintln!(
                "\n\n[ Timing info ] Image token generation took: {} ms",
                started.elapsed().as_millis()
            );
        }
        loaded
    });

    let mut cache = Cache::new(seq_len);
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        if verbosity >= 1 {
            let _ = out.write_all(b"> ");
            let _ = out.flush();
        }
        let Some(prompt) = read_prompt(&mut input, eot_line.as_deref()) else {
            return;
        };
        let bytes = prompt.as_bytes();
        if bytes.len() >= 2 && bytes[0] == b'%' {
            match bytes[1] {
                b'q' | b'Q' => return,
                b'c' | b'C' => {
                    cache.reset();
                    continue;
                }
                _ => {}
            }
        }
        if prompt.is_empty() {
            let _ = out.write_all(b"Use '%q' to quit.\n");
            continue;
        }
        let mut tokens = model::wrap(&prompt, cache.pos, weights.wrapping);
        if let Some(image) = image.as_ref().filter(|_| cache.pos == 0) {
            // The image's tokens join the prompt only at position 0, after BOS.
            let mut with_image = vec![tokens.remove(0), model::SOI.to_string()];
            with_image.extend(std::iter::repeat_n(
                "<image_soft_token>".to_string(),
                image.tokens,
            ));
            with_image.push(model::EOI.to_string());
            with_image.extend(tokens);
            tokens = with_image;
        }
        if tokens.len() > seq_len {
            fatal(
                "gemma.cc:412",
                &format!(
                    "max_prompt_size = {}, increase --seq_len to at least that.",
                    tokens.len()
                ),
            );
        }
        let started = Instant::now();
        if verbosity >= 1 {
            eprint!("\n[ Reading prompt ] ");
        }
        for t in &tokens {
            cache.push(t);
            if verbosity >= 1 {
                let _ = out.write_all(b".");
                let _ = out.flush();
            }
        }
        let reply = if model::newest(&prompt).contains("IMAGE") {
            model::say(&match &image {
                Some(i) => format!(
                    "image {}x{}, pixel sum {}, {} image tokens.",
                    i.width, i.height, i.pixel_sum, i.tokens
                ),
                None => "no image.".to_string(),
            })
        } else {
            model::reply(&prompt, tokens.len(), &cache)
        };
        match reply.fault {
            Some("sigill") => die_by(SIGILL),
            Some("sigkill") => die_by(SIGKILL),
            Some(_) => fatal("gemma.cc:530", "Assert failed: stand-in asked to abort"),
            None => {}
        }
        let prefill_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut generated = 0usize;
        let generate_started = Instant::now();
        let mut ended_by_eos = true;
        for (i, token) in reply.tokens.iter().enumerate() {
            if generated == max_generated {
                ended_by_eos = false;
                break;
            }
            generated += 1;
            cache.push(token);
            let mut text = token.as_str();
            if i == 0 {
                let ttft = started.elapsed().as_secs_f64() * 1000.0;
                if verbosity >= 1 {
                    eprintln!(
                        "\n\n[ Timing info ] Prefill: {} ms for {} prompt tokens ({:.2} tokens / sec); Time to first token: {} ms",
                        prefill_ms as u64,
                        tokens.len(),
                        tokens.len() as f64 / (prefill_ms / 1000.0).max(1e-6),
                        ttft as u64
                    );
                    let _ = out.write_all(b"\n\n");
                }
                text = text.trim_start_matches([' ', '\t', '\n']);
            }
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            if reply.pause_ms > 0 {
                std::thread::sleep(Duration::from_millis(reply.pause_ms));
            }
        }
        if ended_by_eos && generated < max_generated {
            // The end-of-sequence token takes a position but is never printed.
            generated += 1;
            cache.push("<eos>");
        }
        let generate_ms = generate_started.elapsed().as_secs_f64() * 1000.0;
        if verbosity >= 1 {
            eprintln!(
                "\n[ Timing info ] Generate: {} ms for {} tokens ({:.2} tokens / sec)",
                generate_ms as u64,
                generated,
                generated as f64 / (generate_ms / 1000.0).max(1e-6)
            );
        }
        let _ = out.write_all(b"\n\n");
        let _ = out.flush();
        if multiturn {
            // The last token (EOS, or the one cut by the limit) is not part of the dialog.
            cache.pos = cache.pos.saturating_sub(1);
        } else {
            cache.reset();
        }
    }
}

/// gemma.cpp's GetPrompt: one line, or with `--eot_line` lines up to the terminator, each kept
/// with "\n". `None` means stdin failed: EOF before anything (or, with `--eot_line`, before the
/// terminator).
fn read_prompt(input: &mut impl BufRead, eot_line: Option<&str>) -> Option<String> {
    let mut read_line = || -> Option<(String, bool)> {
        let mut buf = Vec::new();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let complete = buf.last() == Some(&b'\n');
                if complete {
                    buf.pop();
                }
                Some((String::from_utf8_lossy(&buf).into_owned(), complete))
            }
        }
    };
    match eot_line {
        None => read_line().map(|(line, _)| line),
        Some(eot) => {
            let mut prompt = String::new();
            loop {
                let (line, complete) = read_line()?;
                if line == eot {
                    return Some(prompt);
                }
                prompt.push_str(&line);
                prompt.push('\n');
                if !complete {
                    // EOF inside the prompt: getline fails next, and the prompt is dropped.
                    return None;
                }
            }
        }
    }
}

//! The gemma.cpp adapter, `models check` and `run` on a gemma.cpp model, end to end.
//!
//! By default the tests drive `gemma-standin` (built next to gemmactl by `cargo build
//! --workspace`), a test-only program that reproduces the `gemma` binary's documented terminal
//! behaviour byte for byte, on small synthetic `.sbs` files written here. With `GEMMA_BIN` (a real
//! gemma.cpp `gemma` binary) and `GEMMA_WEIGHTS` (a single-file `.sbs`, e.g. Gemma 3 270M) set,
//! the same tests run against the real binary. Assertions that need the stand-in's magic words
//! (exact replies, exact token counts, forced crashes) are skipped there; each says so with
//! `if real() { ... }` or `standin_only!`.
//!
//! Every wait is bounded (`wait()`), so a hang fails instead of blocking the suite.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Home;
use gemmactl::config::Config;
use gemmactl::domain::{
    Completion, Constraint, EngineKind, ErrorCode, FinishReason, GenerateRequest, Message,
    PromptFormat, Role, SamplingParams,
};
use gemmactl::engines::gemma_cpp::{GemmaCpp, GemmaCppSpec};
use gemmactl::engines::{Engine, EngineError, ReplyEvent};
use gemmactl::models::sbs::test_writer;

/// Generous bound on any single wait: a real 270M model answers in seconds on an idle machine,
/// but a shared 2-core machine under heavy load can slow it twentyfold.
fn wait() -> Duration {
    Duration::from_secs(if real() { 300 } else { 120 })
}

/// Real-binary mode: both variables set.
fn real() -> bool {
    std::env::var_os("GEMMA_BIN").is_some_and(|v| !v.is_empty())
        && std::env::var_os("GEMMA_WEIGHTS").is_some_and(|v| !v.is_empty())
}

/// Skips the rest of a test that depends on the stand-in's magic.
macro_rules! standin_only {
    ($what:expr) => {
        if real() {
            eprintln!("skipped against the real binary: {}", $what);
            return;
        }
    };
}

fn standin_bin() -> PathBuf {
    let path = common::gemmactl_bin().with_file_name("gemma-standin");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests",
        path.display()
    );
    path
}

/// The binary and a weights file for the current mode; the folder lives as long as the fixture.
struct Fixture {
    dir: tempfile::TempDir,
    binary: PathBuf,
    weights: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    if real() {
        let binary = PathBuf::from(std::env::var_os("GEMMA_BIN").unwrap());
        let weights = PathBuf::from(std::env::var_os("GEMMA_WEIGHTS").unwrap());
        return Fixture {
            dir,
            binary,
            weights,
        };
    }
    let weights = dir.path().join("gemma3-270m-sfp-it.sbs");
    std::fs::write(
        &weights,
        test_writer::single_file("gemma3-270m-sfp-it", true),
    )
    .unwrap();
    Fixture {
        dir,
        binary: standin_bin(),
        weights,
    }
}

impl Fixture {
    fn spec(&self) -> GemmaCppSpec {
        let mut spec = GemmaCppSpec::new(self.binary.clone(), self.weights.clone());
        // The file's config says whether gemma.cpp applies the chat template (the real file
        // converted from the default GGUF is a base model; the stand-in's fixture an instruct one).
        spec.chat = gemmactl::models::sbs::inspect(&self.weights)
            .expect("the fixture's weights pass the pre-flight")
            .instruct
            .unwrap_or(true);
        spec.load_timeout = wait();
        // The real binary decodes slowly on a loaded machine: short replies keep every wait
        // bounded; the stand-in's replies need 48 tokens to show what they show.
        spec.max_generated_tokens = if real() { 24 } else { 48 };
        spec.temperature = 1.0;
        spec.top_k = 1;
        spec
    }

    /// A wrapper script running the stand-in with extra environment (fault injection).
    fn standin_with(&self, env: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = self
            .dir
            .path()
            .join(format!("gemma-{}", env.replace(['=', ' '], "-")));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec env {env} '{}' \"$@\"\n",
                standin_bin().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }
}

async fn start(spec: &GemmaCppSpec) -> Result<GemmaCpp, EngineError> {
    tokio::time::timeout(wait(), GemmaCpp::start(spec, |_| {}))
        .await
        .expect("gemma.cpp start hung")
}

/// Greedy sampling, matching the fixture's flags so no request restarts the process.
fn greedy() -> SamplingParams {
    SamplingParams {
        max_tokens: Some(if real() { 24 } else { 48 }),
        temperature: 1.0,
        top_k: 1,
        top_p: None,
        seed: None,
        stop: Vec::new(),
        constraint: None,
    }
}

fn user(text: &str) -> Message {
    Message::new(Role::User, text)
}

fn model(text: &str) -> Message {
    Message::new(Role::Assistant, text)
}

fn request(id: &str, messages: Vec<Message>) -> GenerateRequest {
    GenerateRequest {
        id: id.into(),
        messages,
        session: None,
        prompt: PromptFormat::Auto,
        params: greedy(),
    }
}

/// One reply, with the arrival time of each piece.
struct Reply {
    text: String,
    pieces: Vec<Instant>,
    end: Result<Completion, EngineError>,
    ended: Instant,
}

impl Reply {
    fn done(&self) -> &Completion {
        match &self.end {
            Ok(c) => c,
            Err(e) => panic!("the reply failed: {e}"),
        }
    }
}

async fn collect(engine: &GemmaCpp, req: GenerateRequest) -> Reply {
    let stream = engine.generate(req).expect("request accepted");
    read(stream).await
}

async fn read(mut stream: gemmactl::engines::ReplyStream) -> Reply {
    let mut text = String::new();
    let mut pieces = Vec::new();
    let deadline = Instant::now() + wait();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.recv())
            .await
            .expect("reply hung");
        match event {
            Some(ReplyEvent::PromptProgress { .. }) => {}
            Some(ReplyEvent::Token(t)) => {
                text.push_str(&t);
                pieces.push(Instant::now());
            }
            Some(ReplyEvent::Finished(c)) => {
                return Reply {
                    text,
                    pieces,
                    end: Ok(c),
                    ended: Instant::now(),
                }
            }
            Some(ReplyEvent::Failed(e)) => {
                return Reply {
                    text,
                    pieces,
                    end: Err(e),
                    ended: Instant::now(),
                }
            }
            None => panic!("the stream ended without Finished or Failed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_streams_with_stats() {
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let d = engine.describe();
    assert_eq!(d.engine, EngineKind::GemmaCpp);
    assert!(
        d.model.name.as_deref().unwrap_or("").starts_with("gemma"),
        "{:?}",
        d.model.name
    );
    let prompt = if real() {
        "Count from one to twenty in words, separated by commas."
    } else {
        "SLOW Hello"
    };
    let reply = collect(&engine, request("r1", vec![user(prompt)])).await;
    let done = reply.done();
    assert!(!reply.text.is_empty());
    assert!(
        reply.pieces.len() >= 2,
        "the reply came in one piece: {:?}",
        reply.text
    );
    assert!(
        done.usage.prompt_tokens > 0 && done.usage.completion_tokens > 0,
        "{:?}",
        done.usage
    );
    assert!(done.timings.decode_tokens_per_s > 0.0, "{:?}", done.timings);
    assert!(done.timings.total_ms > 0.0);
    assert_eq!(done.usage.cached_tokens, 0);
    standin_only!("exact reply, token counts and streaming gaps");
    assert_eq!(d.model.name.as_deref(), Some("gemma3-270m-sfp-it"));
    assert_eq!(
        reply.text,
        (1..=40)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    // BOS + 3 + "SLOW" " Hello" "\n" (every --eot_line line keeps its newline) + 2 + 3 template
    // tokens; 40 words and the end-of-sequence token.
    assert_eq!(done.usage.prompt_tokens, 12);
    assert_eq!(done.usage.completion_tokens, 41);
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert!(done.timings.prefill_tokens_per_s > 0.0);
    // Tokens 50 ms apart: the first must reach us long before the end of the turn.
    let first = reply.pieces[0];
    assert!(
        reply.ended.duration_since(first) >= Duration::from_millis(1000),
        "text was not streamed as it was flushed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_turn_keeps_its_context_and_a_moved_conversation_is_replayed() {
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let first = collect(&engine, request("a", vec![user("My name is Zed.")])).await;
    let u2 = if real() {
        "What is my name?"
    } else {
        "CONTEXT What is my name?"
    };
    let second = collect(
        &engine,
        request(
            "b",
            vec![user("My name is Zed."), model(&first.text), user(u2)],
        ),
    )
    .await;
    let done = second.done();
    // Only the new turn was read: the first turn and its reply were in the cache.
    assert!(
        done.usage.cached_tokens >= first.done().usage.prompt_tokens,
        "{:?}",
        done.usage
    );
    if !real() {
        assert!(
            second.text.contains("2 user turns, overwritten 0"),
            "{}",
            second.text
        );
        assert!(second.text.contains("My name is Zed."), "{}", second.text);
    }

    // A conversation that the process does not hold is replayed in one prompt.
    let other = start(&f.spec()).await.unwrap();
    let moved = vec![
        user("Hello"),
        model("Hi there"),
        user(if real() {
            "How are you"
        } else {
            "How are you CONTEXT"
        }),
    ];
    let reply = collect(&other, request("c", moved)).await;
    assert_eq!(reply.done().usage.cached_tokens, 0);
    standin_only!("the stand-in's view of the replayed context");
    // The markers written as text became control tokens: two user turns in the cache.
    assert!(reply.text.contains("2 user turns"), "{}", reply.text);
    assert!(
        reply.text.contains(r#"["Hello", "How are you CONTEXT\n"]"#),
        "{}",
        reply.text
    );
    // The facts file's 25 tokens, plus " CONTEXT" and the newline --eot_line keeps.
    assert_eq!(reply.done().usage.prompt_tokens, 27);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_reply_is_cancelled_and_the_next_turn_works() {
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let first_pid = engine.describe().pid.unwrap();
    let long = if real() {
        "Write a long story about a lighthouse keeper."
    } else {
        "SLOW story"
    };
    let mut stream = engine.generate(request("s1", vec![user(long)])).unwrap();
    let mut partial = String::new();
    // Several tokens stream before the stop, so the stopped reply has a speed to report.
    for _ in 0..6 {
        let event = tokio::time::timeout(wait(), stream.recv())
            .await
            .expect("no token");
        match event {
            Some(ReplyEvent::Token(t)) => partial.push_str(&t),
            other => panic!("expected tokens first, got {other:?}"),
        }
    }
    engine.cancel("s1");
    let rest = read(stream).await;
    partial.push_str(&rest.text);
    let done = rest.done();
    assert_eq!(done.finish_reason, FinishReason::Cancelled);
    assert!(
        done.usage.completion_tokens >= 6 && done.usage.prompt_tokens > 0,
        "{:?}",
        done.usage
    );
    // gemma.cpp prints no Generate line for a reply it never finished: the speed is measured
    // from the tokens' arrival, and the first-token time from its Prefill line.
    assert!(
        done.timings.decode_tokens_per_s > 0.0
            && done.timings.decode_tokens_per_s.is_finite()
            && done.timings.ttft_ms > 0.0
            && done.timings.prefill_tokens_per_s > 0.0,
        "a stopped reply reports no speed: {:?}",
        done.timings
    );
    assert!(
        engine.exit_status().is_none(),
        "a cancel must not end the engine"
    );

    let u2 = if real() { "Say hello." } else { "CONTEXT next" };
    let next = collect(
        &engine,
        request("s2", vec![user(long), model(&partial), user(u2)]),
    )
    .await;
    let done = next.done();
    assert_ne!(done.finish_reason, FinishReason::Cancelled);
    // The restarted process had nothing cached: the conversation was replayed.
    assert_eq!(done.usage.cached_tokens, 0);
    // What `ps` shows is the process that runs now, not the one the cancel ended.
    let pid = engine.describe().pid.unwrap();
    assert_ne!(
        pid, first_pid,
        "the description still names the ended process"
    );
    assert_eq!(
        // SAFETY: signal 0 only asks whether the process exists.
        unsafe { libc::kill(pid as i32, 0) },
        0,
        "pid {pid} is not running"
    );
    standin_only!("the stand-in's view of the replayed context");
    assert!(next.text.contains("2 user turns"), "{}", next.text);
    let full = (1..=40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        full.starts_with(&partial) && partial.len() < full.len(),
        "the cancel came too late to test anything: {partial}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_string_ends_the_reply_before_it_and_the_next_turn_works() {
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let (ask, stop) = if real() {
        // The base model writes on; a space is sure to come within a few tokens.
        ("Once upon a time", " ")
    } else {
        ("SLOW story", " w5")
    };
    let mut req = request("st", vec![user(ask)]);
    req.params.stop = vec![stop.to_string()];
    let reply = collect(&engine, req).await;
    let done = reply.done();
    assert_eq!(done.finish_reason, FinishReason::Stop, "{:?}", reply.text);
    assert!(!reply.text.contains(stop), "{:?}", reply.text);
    if !real() {
        assert_eq!(reply.text, "w1 w2 w3 w4");
        assert!(done.timings.decode_tokens_per_s > 0.0, "{:?}", done.timings);
    }
    // gemma.cpp was ended at the stop string; the next request is served.
    let next = collect(
        &engine,
        request(
            "st2",
            vec![
                user(ask),
                model(&reply.text),
                user(if real() { "Then" } else { "COUNT 2" }),
            ],
        ),
    )
    .await;
    next.done();
    assert!(engine.exit_status().is_none());
    standin_only!("exact reply");
    assert_eq!(next.text, "1 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_wait_their_turn_and_a_queued_cancel_leaves_at_once() {
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let long = if real() {
        "Write a long story about a lighthouse keeper."
    } else {
        "SLOW first"
    };
    let first = engine.generate(request("q1", vec![user(long)])).unwrap();
    let second = engine
        .generate(request(
            "q2",
            vec![user(if real() { "Say yes." } else { "COUNT 3" })],
        ))
        .unwrap();
    let third = engine.generate(request("q3", vec![user("never")])).unwrap();
    engine.cancel("q3");
    let third = read(third).await;
    assert_eq!(third.done().finish_reason, FinishReason::Cancelled);
    assert!(third.text.is_empty());
    let first = read(first).await;
    let second = read(second).await;
    assert!(
        third.ended < first.ended,
        "the queued cancel waited for the request ahead"
    );
    assert!(
        first.ended <= second.pieces.first().copied().unwrap_or(second.ended),
        "requests overlapped"
    );
    first.done();
    // The second conversation is not the first's continuation: it was replayed from scratch.
    assert_eq!(second.done().usage.cached_tokens, 0);
    standin_only!("exact reply");
    assert_eq!(second.text, "1 2 3");
}

#[tokio::test(flavor = "multi_thread")]
async fn prompts_starting_with_commands_are_answered_not_obeyed() {
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let q = if real() {
        "%q is how you quit. What does %q mean?"
    } else {
        "%q ECHO this"
    };
    let reply = collect(&engine, request("q", vec![user(q)])).await;
    reply.done();
    assert!(engine.exit_status().is_none(), "%q was taken as a command");
    let c = if real() {
        "%c resets. What is 2+2?"
    } else {
        "%c CONTEXT"
    };
    let second = collect(
        &engine,
        request("c", vec![user(q), model(&reply.text), user(c)]),
    )
    .await;
    assert!(
        second.done().usage.cached_tokens > 0,
        "%c was taken as a command: {:?}",
        second.done().usage
    );
    standin_only!("the stand-in's echo of what it read");
    assert_eq!(reply.text, r#"echo: "\n%q ECHO this\n""#);
    assert!(second.text.contains("2 user turns"), "{}", second.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_line_prompts_arrive_whole() {
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let text = if real() {
        "Line one.\n\nLine three: repeat the first line."
    } else {
        "line one\n\nline three ECHO\n%q"
    };
    let reply = collect(&engine, request("m", vec![user(text)])).await;
    reply.done();
    assert!(engine.exit_status().is_none());
    standin_only!("the stand-in's echo of what it read");
    assert_eq!(reply.text, r#"echo: "line one\n\nline three ECHO\n%q\n""#);
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_replies_marker_blank_lines_and_empty() {
    standin_only!("replies chosen by magic words");
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let blanks = collect(&engine, request("b", vec![user("BLANKS")])).await;
    assert_eq!(blanks.text, "Quote:\n\n> to be or not\n\n");
    assert_eq!(blanks.done().finish_reason, FinishReason::Stop);
    let empty = collect(
        &engine,
        request(
            "e",
            vec![user("BLANKS"), model(&blanks.text), user("EMPTY")],
        ),
    )
    .await;
    assert_eq!(empty.text, "");
    assert!(empty.pieces.is_empty());
    assert_eq!(empty.done().usage.completion_tokens, 1);
    // The turn after both still lines up with the binary.
    let after = collect(
        &engine,
        request(
            "n",
            vec![
                user("BLANKS"),
                model(&blanks.text),
                user("EMPTY"),
                model(""),
                user("CONTEXT"),
            ],
        ),
    )
    .await;
    assert!(after.text.contains("3 user turns"), "{}", after.text);
    assert!(after.done().usage.cached_tokens > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_gemma_cpp_cannot_honour_are_refused() {
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let refused = |mut req: GenerateRequest, edit: &dyn Fn(&mut GenerateRequest), needle: &str| {
        edit(&mut req);
        match engine.generate(req) {
            Err(EngineError::Request {
                code: ErrorCode::BadRequest,
                message,
            }) => assert!(message.contains(needle), "{message}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("accepted a request that should be refused ({needle})"),
        }
    };
    let base = request("p", vec![user("Hi")]);
    refused(base.clone(), &|r| r.params.seed = Some(7), "no seed");
    refused(base.clone(), &|r| r.params.top_p = Some(0.9), "no top-p");
    if f.spec().chat {
        refused(
            base.clone(),
            &|r| r.prompt = PromptFormat::Completion,
            "raw (completion) prompt",
        );
    } else {
        refused(
            base.clone(),
            &|r| r.prompt = PromptFormat::Chat { template: None },
            "is a pretrained (-pt) model",
        );
    }
    refused(
        base.clone(),
        &|r| r.params.top_k = 0,
        "cannot turn top-k off",
    );
    refused(
        base.clone(),
        &|r| r.params.constraint = Some(Constraint::Grammar("root ::= \"yes\"".into())),
        "gemma.cpp cannot hold a reply to a grammar",
    );
    refused(
        base.clone(),
        &|r| r.params.constraint = Some(Constraint::any_json_object()),
        "gemma.cpp cannot hold a reply to a JSON Schema",
    );
    refused(
        base.clone(),
        &|r| r.messages = vec![user("Hi"), model("Hello")],
        "ends with a model turn",
    );
    // top-p 1 is "off", which gemma.cpp does anyway.
    let mut ok = base.clone();
    ok.params.top_p = Some(1.0);
    collect(&engine, ok).await.done();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kv_cache_never_overruns_seq_len() {
    let f = fixture();
    let mut spec = f.spec();
    spec.seq_len = 256;
    spec.max_generated_tokens = 24;
    let engine = start(&spec).await.unwrap();
    let mut messages = Vec::new();
    for i in 0..8 {
        let ask = if i == 7 && !real() {
            format!("CONTEXT turn {i}")
        } else {
            format!("Turn {i}: please say something short about the number {i}.")
        };
        messages.push(user(&ask));
        let mut req = request(&format!("t{i}"), messages.clone());
        req.params.max_tokens = Some(24);
        let reply = collect(&engine, req).await;
        let done = reply.done();
        assert!(
            done.usage.prompt_tokens + done.usage.completion_tokens <= 256,
            "turn {i}: {:?}",
            done.usage
        );
        messages.push(model(&reply.text));
        if i == 7 && !real() {
            assert!(reply.text.contains("overwritten 0"), "{}", reply.text);
            // The oldest turns were dropped to fit.
            assert!(!reply.text.contains("Turn 0:"), "{}", reply.text);
        }
    }
    // One message longer than the whole cache is refused, not sent.
    let mut req = request("huge", vec![user(&"word ".repeat(400))]);
    req.params.max_tokens = Some(24);
    match read(engine.generate(req).unwrap()).await.end {
        Err(EngineError::Request {
            code: ErrorCode::ContextOverflow,
            message,
        }) => assert!(message.contains("seq_len"), "{message}"),
        other => panic!(
            "expected a context overflow, got {:?}",
            other.map(|c| c.usage)
        ),
    }
    assert!(engine.exit_status().is_none());
}

fn load_error(result: Result<GemmaCpp, EngineError>) -> (ErrorCode, String) {
    match result {
        Err(EngineError::Load { code, message, .. }) => (code, message),
        Err(e) => panic!("expected a load error, got: {e}"),
        Ok(_) => panic!("the engine started"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn load_failures_become_one_sentence_naming_the_file() {
    let f = fixture();
    // Missing weights: `Abort at io.cc:199: Failed to open ...` and SIGABRT.
    let mut spec = f.spec();
    spec.weights = f.dir.path().join("nonexistent.sbs");
    let (code, msg) = load_error(start(&spec).await);
    assert_eq!(code, ErrorCode::ModelNotFound);
    assert!(
        msg.starts_with(&format!(
            "gemma.cpp could not open the weights file {}",
            spec.weights.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("SIGABRT") && msg.contains("Abort at io.cc:199: Failed to open"),
        "{msg}"
    );

    // A text file that is not a BlobStore.
    let text = f.dir.path().join("notes.sbs");
    std::fs::write(&text, "these are my notes, not weights\n".repeat(10)).unwrap();
    spec.weights = text.clone();
    let (_, msg) = load_error(start(&spec).await);
    assert!(
        msg.starts_with(&format!(
            "{} is not a gemma.cpp BlobStore weights file",
            text.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("BlobStore header magic"), "{msg}");

    standin_only!("faults only the stand-in can be asked for");
    let multi = f.dir.path().join("2b-it-sfp.sbs");
    std::fs::write(&multi, test_writer::multi_file(18)).unwrap();
    spec.weights = multi.clone();
    let (_, msg) = load_error(start(&spec).await);
    assert!(
        msg.contains("is a pre-2025 multi-file gemma.cpp model and no tokenizer was given"),
        "{msg}"
    );

    let mut spec = f.spec();
    spec.binary = f.standin_with("GEMMA_STANDIN_FAULT=sigill");
    let (_, msg) = load_error(start(&spec).await);
    assert!(
        msg.contains("illegal instruction") && msg.contains(&f.weights.display().to_string()),
        "{msg}"
    );
    spec.binary = f.standin_with("GEMMA_STANDIN_FAULT=sigkill");
    let (code, msg) = load_error(start(&spec).await);
    assert_eq!(code, ErrorCode::OutOfMemory, "{msg}");
    assert!(msg.contains("memory ran out"), "{msg}");
    spec.binary = f.standin_with("GEMMA_STANDIN_FAULT=exit3");
    let (_, msg) = load_error(start(&spec).await);
    assert!(
        msg.contains("exited with status 3")
            && msg.contains("exiting with status 3 during startup"),
        "{msg}"
    );

    spec.binary = f.standin_with("GEMMA_STANDIN_LOAD_MS=10000");
    spec.load_timeout = Duration::from_secs(1);
    let started = Instant::now();
    match start(&spec).await {
        Err(EngineError::LoadTimeout { secs: 1, .. }) => {}
        other => panic!("expected a load timeout, got {:?}", other.err()),
    }
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the timeout did not stop the wait"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deaths_mid_reply_carry_signal_and_stderr() {
    let f = fixture();
    // Killed from outside (what the OOM killer does).
    let engine = start(&f.spec()).await.unwrap();
    let long = if real() {
        "Write a long story about a lighthouse keeper."
    } else {
        "SLOW story"
    };
    let mut stream = engine.generate(request("k", vec![user(long)])).unwrap();
    assert!(matches!(
        tokio::time::timeout(wait(), stream.recv()).await.unwrap(),
        Some(ReplyEvent::Token(_))
    ));
    // SAFETY: kill(2) only sends a signal to a process this test started.
    unsafe {
        libc::kill(engine.describe().pid.unwrap() as i32, libc::SIGKILL);
    }
    match read(stream).await.end {
        Err(EngineError::Died {
            engine: EngineKind::GemmaCpp,
            exit,
            ..
        }) => assert_eq!(exit.signal, Some(libc::SIGKILL)),
        other => panic!("expected Died, got {:?}", other.map(|c| c.finish_reason)),
    }
    assert!(
        engine.exit_status().is_some(),
        "a crashed engine must say so, so the supervisor replaces it"
    );
    assert!(matches!(
        engine.generate(request("after", vec![user("hi")])),
        Err(EngineError::Died { .. })
    ));

    standin_only!("faults only the stand-in can be asked for");
    for (word, signal) in [
        ("STANDIN_SIGILL", libc::SIGILL),
        ("STANDIN_ABORT", libc::SIGABRT),
    ] {
        let engine = start(&f.spec()).await.unwrap();
        match collect(&engine, request("f", vec![user(word)])).await.end {
            Err(e @ EngineError::Died { .. }) => {
                let EngineError::Died {
                    exit,
                    ref stderr_tail,
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(exit.signal, Some(signal), "{e}");
                let text = e.to_string();
                if signal == libc::SIGILL {
                    assert!(text.contains("illegal instruction"), "{text}");
                } else {
                    assert!(
                        stderr_tail
                            .iter()
                            .any(|l| l.contains("Abort at gemma.cc:530")),
                        "{text}"
                    );
                }
            }
            other => panic!("expected Died, got {:?}", other.map(|c| c.finish_reason)),
        }
    }
}

#[test]
fn the_binary_is_found_by_setting_then_path() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("gemma");
    std::fs::write(&fake, "").unwrap();
    let mut config = Config::default();
    config.engines.gemma_cpp.binary = Some(fake.clone());
    assert_eq!(config.gemma_cpp_binary().unwrap(), fake);
    config.engines.gemma_cpp.binary = Some(dir.path().join("gone"));
    let err = config.gemma_cpp_binary().unwrap_err();
    assert!(
        err.contains("gone")
            && err.contains("GEMMA_BIN")
            && err.contains("engines.gemma_cpp.binary"),
        "{err}"
    );
    // Unset, `gemma` is looked for on PATH.
    config.engines.gemma_cpp.binary = None;
    config.env.search_path = vec![dir.path().join("empty"), dir.path().to_path_buf()];
    assert_eq!(config.gemma_cpp_binary().unwrap(), fake);
    config.env.search_path.clear();
    assert!(config
        .gemma_cpp_binary()
        .unwrap_err()
        .contains("was not found"));
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "failed: {}", common::stderr(out));
    common::stdout(out)
}

fn fails(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", common::stdout(out));
    let err = common::stderr(out);
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn models_check_reports_good_files_and_refuses_bad_ones() {
    let home = Home::new();
    let dir = home.path();
    let single = dir.join("gemma3-270m-sfp-it.sbs");
    std::fs::write(
        &single,
        test_writer::single_file("gemma3-270m-sfp-it", true),
    )
    .unwrap();
    let out = ok(&home.run(&["models", "check", path_str(&single)]));
    assert!(
        out.contains("single-file (config and tokenizer embedded)"),
        "{out}"
    );
    assert!(
        out.contains("gemma3-270m-sfp-it (Gemma3_270M), weight type sfp, instruct"),
        "{out}"
    );
    assert!(
        out.contains("221 (218 tensors, 18 layers)") && out.contains("readable:  yes"),
        "{out}"
    );
    assert!(
        out.contains("config, table of 218 tensors and blob directory agree"),
        "{out}"
    );
    assert!(out.contains("of memory available"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(&home.run(&[
        "models",
        "check",
        path_str(&single),
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["family"], "gemma3-270m");
    assert_eq!(json["sbs_format"], "single-file");
    assert_eq!(json["layout"], "v2");
    assert_eq!(json["blob_count"], 221);
    assert_eq!(json["display_name"], "Gemma3_270M");

    let multi = dir.join("2b-it-sfp.sbs");
    std::fs::write(&multi, test_writer::multi_file(26)).unwrap();
    let err = fails(&home.run(&["models", "check", path_str(&multi)]));
    assert!(
        err.contains("2b-it-sfp.sbs is a pre-2025 multi-file") && err.contains("--tokenizer"),
        "{err}"
    );
    let spm = dir.join("tokenizer.spm");
    std::fs::write(&spm, b"spm").unwrap();
    let out = ok(&home.run(&[
        "models",
        "check",
        path_str(&multi),
        "--tokenizer",
        path_str(&spm),
    ]));
    assert!(
        out.contains("pre-2025 multi-file") && out.contains("gemma3-1b (from its tensor names)"),
        "{out}"
    );

    let bytes = std::fs::read(&single).unwrap();
    let cut = dir.join("cut.sbs");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = fails(&home.run(&["models", "check", path_str(&cut)]));
    assert!(
        err.contains("cut.sbs is a truncated gemma.cpp .sbs file"),
        "{err}"
    );

    let renamed = dir.join("notes.sbs");
    std::fs::write(&renamed, "shopping list\n").unwrap();
    let err = fails(&home.run(&["models", "check", path_str(&renamed)]));
    assert!(
        err.contains("notes.sbs is not a gemma.cpp weights file"),
        "{err}"
    );

    let err = fails(&home.run(&[
        "models",
        "check",
        path_str(&single),
        "--engine",
        "gemma-engine",
    ]));
    assert!(err.contains("gemma3-270m-sfp-it.sbs is a gemma.cpp .sbs weights file, which gemma-engine cannot load"), "{err}");

    let gguf = common::default_model();
    let out = ok(&home.run(&["models", "check", path_str(&gguf)]));
    assert!(
        out.contains("GGUF version 3, for gemma-engine") && out.contains("gemma3"),
        "{out}"
    );
    let err = fails(&home.run(&["models", "check", path_str(&gguf), "--engine", "gemma-cpp"]));
    assert!(
        err.contains("is a GGUF model file, which gemma.cpp cannot load"),
        "{err}"
    );

    if real() {
        // The converted default model: a base file, read from its config.
        let weights = std::env::var("GEMMA_WEIGHTS").unwrap();
        let out = ok(&home.run(&["models", "check", &weights]));
        assert!(out.contains("single-file"), "{out}");
        assert!(
            out.contains("gemma3-270m-bf16-pt (Gemma3_270M), weight type bf16, base"),
            "{out}"
        );
        assert!(out.contains("none (pretrained base model)"), "{out}");
    }
}

#[test]
fn run_streams_a_reply_from_a_registered_gemma_cpp_model() {
    let f = fixture();
    let home = Home::new();
    let out = ok(&home.run(&["models", "add", "tiny", path_str(&f.weights)]));
    assert!(out.contains("registered 'tiny': gemma.cpp"), "{out}");
    let list = ok(&home.run(&["models", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let entry = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tiny")
        .unwrap()
        .clone();
    assert_eq!(
        (entry["engine"].as_str(), entry["format"].as_str()),
        (Some("gemma.cpp"), Some("sbs"))
    );
    let show = ok(&home.run(&["models", "show", "tiny"]));
    assert!(show.contains("gemma.cpp BlobStore"), "{show}");

    let mut cmd = home.cmd();
    cmd.env("GEMMA_BIN", &f.binary).args([
        "run",
        "--model",
        "tiny",
        "--stats",
        "--max-tokens",
        "24",
        "Hello",
    ]);
    let started = Instant::now();
    let out = cmd.output().unwrap();
    assert!(started.elapsed() < wait());
    let text = ok(&out);
    let stats = common::stderr(&out);
    assert!(
        stats.contains("tok/s decode") && stats.contains("gemma.cpp on CPU"),
        "{stats}"
    );
    assert!(!text.trim().is_empty());
    if !real() {
        assert_eq!(
            text.trim_end(),
            "Turn 1: I read 11 prompt tokens at position 11."
        );
        assert!(stats.contains("prompt 11 tokens"), "{stats}");
    }

    // A base (-pt) file, as its config says, takes plain text: `run --raw` (and `run`, which
    // sends base models plain text) work; the stand-in's fixture is instruct, so a -pt one is made.
    let base = if real() {
        f.weights.clone()
    } else {
        let p = f.dir.path().join("gemma3-270m-bf16-pt.sbs");
        std::fs::write(&p, test_writer::single_file("gemma3-270m-bf16-pt", true)).unwrap();
        p
    };
    let said = ok(&home.run(&["models", "add", "base", path_str(&base)]));
    assert!(said.contains("-pt") && said.contains(" base,"), "{said}");
    for raw in [true, false] {
        let mut cmd = home.cmd();
        cmd.env("GEMMA_BIN", &f.binary).args([
            "run",
            "--model",
            "base",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
        ]);
        if raw {
            cmd.arg("--raw");
        }
        cmd.arg("The capital of France is");
        let text = ok(&common::run_bounded(cmd));
        assert!(!text.trim().is_empty(), "raw {raw}: empty reply");
    }
    // --kind cannot contradict the file's config.
    let err = fails(&home.run(&["models", "add", "b2", path_str(&base), "--kind", "instruct"]));
    assert!(
        err.contains("--kind instruct does not fit") && err.contains("leave --kind out"),
        "{err}"
    );

    // The same file registered for the wrong engine by hand is refused before launch.
    let registry = home.path().join("config/models.toml");
    let edited = std::fs::read_to_string(&registry)
        .unwrap()
        .replace("engine = \"gemma.cpp\"", "engine = \"gemma-engine\"");
    std::fs::write(&registry, edited).unwrap();
    let err = fails(&home.run(&["run", "--model", "tiny", "Hello"]));
    assert!(err.contains("gemma-engine cannot load"), "{err}");
}

/// `gemmactl bench` on a gemma.cpp model takes the stock `gemma` binary, run as a user runs it,
/// as its baseline: every way produces figures from real replies, the results file names
/// gemma.cpp and its binary, and a remote model or bad arguments are refused with a sentence.
#[test]
fn bench_of_a_gemma_cpp_model_measures_gemma_itself_as_the_baseline() {
    let f = fixture();
    let home = Home::new();
    ok(&home.run(&["models", "add", "tiny", path_str(&f.weights)]));
    let out_dir = f.dir.path().join("bench");
    let mut cmd = home.cmd();
    cmd.env("GEMMA_BIN", &f.binary).args([
        "bench",
        "--model",
        "tiny",
        "--runs",
        "1",
        "--max-tokens",
        "8",
        "--json",
        "--out",
        path_str(&out_dir),
    ]);
    let out = common::run_bounded(cmd);
    let said: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(said["engine"], "gemma.cpp", "{said}");
    for way in ["direct", "supervisor", "run"] {
        let median = &said["median"][way];
        let decode = median["decode_tokens_per_s"].as_f64().unwrap();
        let tokens = median["completion_tokens"].as_u64().unwrap();
        if real() {
            // Real tokens arrive over time: each way measures a speed.
            assert!(decode > 0.0 && decode.is_finite(), "{way}: {said}");
            assert!((2..=8).contains(&tokens), "{way}: {tokens} tokens: {said}");
        } else {
            // The stand-in's reply is longer than 8 tokens, so every way stops at the limit;
            // it writes the reply in one go, so a way timing its arrival may see no interval.
            assert!(decode >= 0.0 && decode.is_finite(), "{way}: {said}");
            assert_eq!(tokens, 8, "{way}: {said}");
        }
    }
    // The direct way reads gemma's own prompt count; the supervisor's comes from the adapter.
    assert!(said["median"]["direct"]["prompt_tokens"].as_u64().unwrap() > 0);

    // The results file: gemma.cpp named with the binary that ran, its figures per way.
    let files: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(results["build"]["engine"]["name"], "gemma.cpp");
    assert_eq!(
        results["build"]["engine"]["path"].as_str(),
        Some(path_str(&f.binary))
    );
    assert_eq!(results["model"]["name"], "tiny");
    let figures = results["figures"].as_array().unwrap();
    // A figure is recorded only where it was measured; the stand-in's instant reply may leave
    // no interval to time decode over, so its decode figures are required of the real binary.
    let mut measured = vec!["load/direct", "load/supervisor"];
    if real() {
        measured.extend(["decode/direct", "decode/supervisor", "decode/run"]);
    }
    for id in measured {
        assert!(figures.iter().any(|f| f["id"] == id), "{id}: {figures:?}");
    }

    // Without a gemma binary there is nothing to measure against: one sentence with the fix.
    let mut cmd = home.cmd();
    cmd.env("GEMMA_BIN", f.dir.path().join("no-gemma"))
        .args(["bench", "--model", "tiny", "--runs", "1"]);
    let err = fails(&common::run_bounded(cmd));
    assert!(
        err.contains("does not exist") && err.contains("GEMMA_BIN"),
        "{err}"
    );
    let err = fails(&home.run(&["bench", "--model", "tiny", "--runs", "0"]));
    assert!(err.contains("--runs must be at least 1"), "{err}");
}

// ---------------------------------------------------------------- real files, imported and damaged

/// A real single-file `.sbs`: the default GGUF imported by `gemmactl models import` (gemma-engine
/// converts it), written once per test run under cargo's temporary folder. Every test that
/// damages it works on its own copy.
fn imported() -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let home = Home::new();
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("imported-gemma3-270m.bf16.sbs");
        let gguf = common::default_model();
        let result = home.run(&[
            "models",
            "import",
            "g",
            "--from",
            path_str(&gguf),
            "--to",
            "sbs",
            "--out",
            path_str(&out),
            "--force",
        ]);
        ok(&result);
        out
    })
    .clone()
}

/// A private copy of the imported file.
fn damageable_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("weights.sbs");
    std::fs::copy(imported(), &copy).unwrap();
    copy
}

/// The directory of a V2 file: (key, offset, size) per blob, and where the directory starts.
fn blob_directory(path: &Path) -> (Vec<(String, u64, u64)>, u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let mut head = [0u8; 16];
    f.read_exact_at(&mut head, size - 16).unwrap();
    let n = u32::from_le_bytes(head[4..8].try_into().unwrap()) as u64;
    let start = size - 16 - 32 * n;
    let mut dir = vec![0u8; 32 * n as usize];
    f.read_exact_at(&mut dir, start).unwrap();
    let n = n as usize;
    let blobs = (0..n)
        .map(|i| {
            let key = &dir[i * 16..i * 16 + 16];
            let key =
                String::from_utf8_lossy(&key[..key.iter().position(|b| *b == 0).unwrap_or(16)])
                    .into_owned();
            let at = n * 16 + i * 16;
            let word = |o: usize| u64::from_le_bytes(dir[o..o + 8].try_into().unwrap());
            (key, word(at), word(at + 8))
        })
        .collect();
    (blobs, start)
}

/// Flips the bits of 4 bytes at `at` (or restores them: flipping twice is the identity).
fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut word = [0u8; 4];
    f.read_exact_at(&mut word, at).unwrap();
    for b in &mut word {
        *b ^= 0xff;
    }
    f.write_all_at(&word, at).unwrap();
}

/// What the real binary says about `weights` when it loads them: `None` if it loaded and
/// answered, else its last stderr line.
fn real_binary_refuses(weights: &Path) -> Option<String> {
    let binary = std::env::var_os("GEMMA_BIN").unwrap();
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("--weights").arg(weights).args([
        "--verbosity",
        "0",
        "--max_generated_tokens",
        "1",
        "--prompt",
        "Hi",
    ]);
    let out = common::run_bounded(cmd);
    if out.status.success() {
        return None;
    }
    Some(
        common::stderr(&out)
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("(nothing on stderr)")
            .to_string(),
    )
}

#[test]
fn import_writes_a_real_sbs_that_check_passes_and_gemma_cpp_runs() {
    let weights = imported();
    let home = Home::new();
    let out = ok(&home.run(&["models", "check", path_str(&weights)]));
    assert!(
        out.contains("gemma3-270m-bf16-pt (Gemma3_270M), weight type bf16, base")
            && out.contains("config, table of 218 tensors and blob directory agree"),
        "{out}"
    );
    // Registered under its name, for gemma.cpp, as a base model (the GGUF has no chat template).
    let gguf = common::default_model();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("mine.sbs");
    let said = ok(&home.run(&[
        "models",
        "import",
        "mine",
        "--from",
        path_str(&gguf),
        "--to",
        "sbs",
        "--out",
        path_str(&target),
    ]));
    assert!(
        said.contains("registered 'mine': gemma.cpp gemma3-270m-bf16-pt (base), 218 tensors"),
        "{said}"
    );
    let show: serde_json::Value =
        serde_json::from_str(&ok(&home.run(&["models", "show", "mine", "--json"]))).unwrap();
    assert_eq!(show["engine"], "gemma.cpp");
    assert_eq!(show["kind"], "base");
    assert_eq!(show["specifier"], "gemma3-270m-bf16-pt");
    // The same conversion twice gives the same bytes.
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(&weights).unwrap(),
        "two imports of one GGUF differ"
    );
    // A name in use, or a file in the way, is refused without --force.
    let err = fails(&home.run(&[
        "models",
        "import",
        "mine",
        "--from",
        path_str(&gguf),
        "--to",
        "sbs",
    ]));
    assert!(err.contains("'mine'") && err.contains("--force"), "{err}");
    let err = fails(&home.run(&[
        "models",
        "import",
        "other",
        "--from",
        path_str(&gguf),
        "--to",
        "sbs",
        "--out",
        path_str(&target),
    ]));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );

    if !real() {
        return;
    }
    // The shared converter (../shared/tools/gemma-cpp) made GEMMA_WEIGHTS from the same GGUF:
    // ggml's dequantization and bf16 rounding give the very same file.
    let reference = PathBuf::from(std::env::var_os("GEMMA_WEIGHTS").unwrap());
    if std::fs::metadata(&reference).map(|m| m.len()).ok()
        == std::fs::metadata(&weights).map(|m| m.len()).ok()
    {
        assert!(
            std::fs::read(&reference).unwrap() == std::fs::read(&weights).unwrap(),
            "the import differs from the reference converter's file"
        );
    }
    // The real binary runs the imported file, and its greedy continuation starts like
    // gemma-engine's on the GGUF (compared by words: gemma.cpp strips the first token's space).
    let prompt = "The capital of France is";
    let mut cmd = std::process::Command::new(std::env::var_os("GEMMA_BIN").unwrap());
    cmd.arg("--weights").arg(&weights).args([
        "--verbosity",
        "0",
        "--max_generated_tokens",
        "12",
        "--top_k",
        "1",
        "--prompt",
        prompt,
    ]);
    let cpp = common::run_bounded(cmd);
    assert!(cpp.status.success(), "{}", common::stderr(&cpp));
    let engine = ok(&home.run(&[
        "run",
        "--model",
        path_str(&gguf),
        "--raw",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--no-log",
        prompt,
    ]));
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let (a, b) = (words(&common::stdout(&cpp)), words(&engine));
    eprintln!("gemma.cpp: {a:?}\ngemma-engine: {b:?}");
    assert!(a.len() >= 5 && b.len() >= 5, "too short to compare");
    assert_eq!(
        a[..5],
        b[..5],
        "the first greedy words differ between the engines"
    );
}

#[test]
fn import_refuses_what_it_cannot_convert_with_a_sentence() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let llama = dir.path().join("llama.gguf");
    std::fs::write(
        &llama,
        gguf_bytes(&[("general.architecture", Meta::Str("llama"))]),
    )
    .unwrap();
    let err = fails(&home.run(&[
        "models",
        "import",
        "x",
        "--from",
        path_str(&llama),
        "--to",
        "sbs",
    ]));
    assert!(
        err.contains("llama.gguf is a llama model") && err.contains("Gemma 3 GGUF"),
        "{err}"
    );
    // A Gemma 3 too big for a text-only gemma.cpp config: the engine's refusal, as a sentence.
    let big = dir.path().join("gemma3-4b.gguf");
    let u = Meta::U32;
    std::fs::write(
        &big,
        gguf_bytes(&[
            ("general.architecture", Meta::Str("gemma3")),
            ("gemma3.block_count", u(34)),
            ("gemma3.embedding_length", u(2560)),
            ("gemma3.feed_forward_length", u(10240)),
            ("gemma3.attention.head_count", u(8)),
            ("gemma3.attention.head_count_kv", u(4)),
            ("gemma3.attention.key_length", u(256)),
            ("gemma3.attention.sliding_window", u(1024)),
            ("gemma3.context_length", u(131072)),
            (
                "tokenizer.ggml.tokens",
                Meta::Strs(&["<pad>", "<eos>", "<bos>", "<unk>"]),
            ),
            ("tokenizer.ggml.scores", Meta::F32s(&[0.0; 4])),
            ("tokenizer.ggml.token_type", Meta::I32s(&[3, 3, 3, 2])),
        ]),
    )
    .unwrap();
    let err = fails(&home.run(&[
        "models",
        "import",
        "x",
        "--from",
        path_str(&big),
        "--to",
        "sbs",
        "--out",
        path_str(&dir.path().join("x.sbs")),
    ]));
    assert!(
        err.contains("is a Gemma 3 with 34 layers 2560 wide") && err.contains("270M and 1B"),
        "{err}"
    );
    assert!(!err.contains('{'), "raw JSON in the error: {err}");
    assert!(!dir.path().join("x.sbs").exists() && !dir.path().join("x.sbs.part").exists());
    assert!(ok(&home.run(&["models", "list"]))
        .lines()
        .all(|l| !l.starts_with("x ")));
}

enum Meta<'a> {
    Str(&'a str),
    U32(u32),
    Strs(&'a [&'a str]),
    F32s(&'a [f32]),
    I32s(&'a [i32]),
}

/// A GGUF v3 file with metadata only (no tensors).
fn gguf_bytes(kvs: &[(&str, Meta)]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    for (key, value) in kvs {
        string(&mut b, key);
        match value {
            Meta::Str(s) => {
                b.extend(8u32.to_le_bytes());
                string(&mut b, s);
            }
            Meta::U32(v) => {
                b.extend(4u32.to_le_bytes());
                b.extend(v.to_le_bytes());
            }
            Meta::Strs(items) => {
                b.extend(9u32.to_le_bytes());
                b.extend(8u32.to_le_bytes());
                b.extend((items.len() as u64).to_le_bytes());
                for s in *items {
                    string(&mut b, s);
                }
            }
            Meta::F32s(items) => {
                b.extend(9u32.to_le_bytes());
                b.extend(6u32.to_le_bytes());
                b.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| b.extend(v.to_le_bytes()));
            }
            Meta::I32s(items) => {
                b.extend(9u32.to_le_bytes());
                b.extend(5u32.to_le_bytes());
                b.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| b.extend(v.to_le_bytes()));
            }
        }
    }
    b
}

#[test]
fn damage_in_each_blob_is_refused_naming_it_before_gemma_cpp_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = damageable_copy(dir.path());
    let (blobs, dir_start) = blob_directory(&file);
    let blob = |key: &str| {
        blobs
            .iter()
            .find(|b| b.0 == key)
            .map(|b| (b.1, b.2))
            .unwrap()
    };
    let (config, _) = blob("config");
    let (toc, _) = blob("toc");
    let n = blobs.len() as u64;
    let size = std::fs::metadata(&file).unwrap().len();
    let (cfg, tocp) = ("model config (config blob)", "table of tensors (toc blob)");
    let (dirp, head) = ("blob directory", "trailing BlobStore header");
    // (where, the part the sentence must name, what else it must say, whether gemma.cpp itself
    // refuses the file). Offsets inside the config and the toc follow their fields: the config's
    // words are its length, version, name (1 + 3), model, wrapping, weight, ... and 16 per layer
    // from word 20; each toc record is its length, name, and 7 fields.
    let cases: Vec<(u64, &str, &str, bool)> = vec![
        (config + 4 * 6, cfg, "field model is", true),
        (config + 4 * 7, cfg, "field wrapping is", true),
        (config + 4 * 36, cfg, "field layer_configs[1] claims", true),
        (
            config + 4 * 110,
            cfg,
            "field layer_configs[5].optimized_gating is",
            true,
        ),
        (
            config + 4 * 184,
            cfg,
            "gives layer 10 heads = 4294967291 where every other layer has 4",
            true,
        ),
        (
            config + 4 * 258,
            cfg,
            "field layer_configs[14].post_qk is",
            true,
        ),
        (
            config + 4 * 350,
            cfg,
            "field scale_base_names[3] claims",
            true,
        ),
        (toc, tocp, "record 0 claims", true),
        (
            toc + 104,
            tocp,
            "record 2: field name has a word that is not ASCII",
            true,
        ),
        (toc + 3876, tocp, "record 82 claims", true),
        // The converter's own example of a refused file.
        (
            toc + 5240,
            tocp,
            "records tensor qkv1_w_9 as 1024 × 4294966655 where the config calls for 1024 × 640",
            true,
        ),
        (toc + 6916, tocp, "record 145", true),
        (
            toc + 10468,
            tocp,
            "records tensor key_norm_17 as 1 × 4294967039",
            true,
        ),
        // gemma.cpp ignores a record's stride; a damaged one is still damage.
        (
            toc + 1360,
            tocp,
            "records tensor att_w_2 with a row stride of",
            false,
        ),
        (dir_start, dirp, "has no readable key for blob 0", true),
        (
            dir_start + 16 * 220,
            dirp,
            "has no readable key for blob 220",
            true,
        ),
        (
            dir_start + 16 * n + 16 * 5,
            dirp,
            "puts blob gating1_w_0 at byte",
            true,
        ),
        (
            dir_start + 16 * n + 16 * 100 + 8,
            dirp,
            "would run into the directory",
            true,
        ),
        (
            size - 16,
            head,
            "does not start with the BlobStore magic",
            true,
        ),
        (
            size - 12,
            head,
            "says the file holds 4294967074 blobs, but the directory before it lists 221",
            true,
        ),
        (size - 8, head, "records a file size of", true),
    ];
    let home = Home::new();
    for (at, part, detail, gemma_cpp_refuses) in cases {
        flip(&file, at);
        let out = home.run(&["models", "check", path_str(&file)]);
        let err = fails(&out);
        assert!(
            err.contains(&format!("is a damaged gemma.cpp .sbs file: its {part}"))
                && err.contains(detail),
            "byte {at}: {err}"
        );
        if real() && gemma_cpp_refuses {
            // The real binary refuses these too: each is a file it cannot load.
            assert!(
                real_binary_refuses(&file).is_some(),
                "byte {at}: gemma.cpp loads what the check refuses ({err})"
            );
        }
        flip(&file, at);
    }
    assert!(ok(&home.run(&["models", "check", path_str(&file)])).contains("verdict:   ok"));

    // `run` on a registered file that was damaged afterwards: the same sentence, before launch.
    ok(&home.run(&["models", "add", "w", path_str(&file)]));
    flip(&file, toc + 5240);
    let mut cmd = home.cmd();
    cmd.env("GEMMA_BIN", standin_or_real_bin()).args([
        "run",
        "--model",
        "w",
        "--raw",
        "--max-tokens",
        "4",
        "Hi",
    ]);
    let err = fails(&common::run_bounded(cmd));
    assert!(err.contains("qkv1_w_9 as 1024 × 4294966655"), "{err}");
    assert!(!err.contains("version"), "blames a version mismatch: {err}");
}

fn standin_or_real_bin() -> PathBuf {
    std::env::var_os("GEMMA_BIN")
        .filter(|_| real())
        .map(PathBuf::from)
        .unwrap_or_else(standin_bin)
}

#[test]
fn a_cut_file_is_truncated_and_a_whole_file_with_a_damaged_end_is_not() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let whole = imported();
    let size = std::fs::metadata(&whole).unwrap().len();
    let src = std::fs::File::open(&whole).unwrap();
    let home = Home::new();
    // A file cut at `len`: the bytes a reader looks at (the start, and the last 640 KiB before
    // the cut) are the real file's; the rest is left sparse.
    let cut = |len: u64| {
        let path = dir.path().join(format!("cut-{len}.sbs"));
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(len).unwrap();
        for (from, n) in [(0, 65536u64), (len.saturating_sub(640 << 10), 640 << 10)] {
            let n = n.min(len - from);
            let mut buf = vec![0u8; n as usize];
            src.read_exact_at(&mut buf, from).unwrap();
            f.write_all_at(&buf, from).unwrap();
        }
        path
    };
    for len in [
        size / 2,
        size / 3 + 12345,
        size - 65536,
        size - 16,
        size - 1,
    ] {
        let path = cut(len);
        let err = fails(&home.run(&["models", "check", path_str(&path)]));
        assert!(
            err.contains("is a truncated gemma.cpp .sbs file"),
            "cut at {len}: {err}"
        );
        std::fs::remove_file(&path).unwrap();
    }
    // Whole length, damaged header: named as what it is, never "truncated".
    let path = damageable_copy(dir.path());
    for at in [size - 16, size - 14, size - 12, size - 8, size - 4] {
        flip(&path, at);
        let err = fails(&home.run(&["models", "check", path_str(&path)]));
        assert!(
            err.contains("is a damaged gemma.cpp .sbs file: its trailing BlobStore header")
                && !err.contains("truncated"),
            "byte {at}: {err}"
        );
        flip(&path, at);
    }
}

#[test]
fn the_shell_shows_a_stopped_replys_real_speed_and_the_conversation_goes_on() {
    use expectrl::{Eof, Regex, Session};
    let f = fixture();
    let home = Home::new();
    ok(&home.run(&["models", "add", "cpp", path_str(&f.weights)]));
    let mut cmd = std::process::Command::new(common::gemmactl_bin());
    cmd.args(["chat", "--model", "cpp"])
        .env("GEMMACTL_HOME", home.path())
        .env("GEMMA_BIN", &f.binary)
        .env("NO_COLOR", "1")
        .env("TERM", "xterm");
    let mut chat = Session::spawn(cmd).expect("spawn gemmactl chat in a pty");
    chat.set_expect_timeout(Some(wait()));
    let prompt = ">>> ";
    chat.expect(prompt).unwrap();
    for setting in ["/set max_tokens 400", "/set temperature 0"] {
        chat.send_line(setting).unwrap();
        chat.expect(prompt).unwrap();
    }
    // What only the reply can show, mid-stream. The real base model answers this request, greedy,
    // with the same line over and over (it would answer "Once upon" with `User:`, a stop string).
    let (ask, streaming) = if real() {
        ("Write a poem about the sea.", r"creature\.\s+I'm a sea")
    } else {
        ("SLOW story", "w1 w2 w3 w4 w5 w6")
    };
    chat.send_line(ask).unwrap();
    chat.expect(Regex(streaming)).unwrap();
    chat.send([3u8]).unwrap();
    let shown = chat.expect(prompt).expect("no prompt after the stop");
    let shown = String::from_utf8_lossy(shown.before()).into_owned();
    // "[12 tokens · 20.1 tok/s decode · prompt … · first token 310 ms · … · gemma.cpp on CPU …]",
    // wrapped to the terminal's width: joined back into one line.
    let joined = shown.replace("\r\n", " ").replace('\n', " ");
    let start = joined
        .find(" tokens · ")
        .and_then(|i| joined[..i].rfind('['))
        .unwrap_or_else(|| panic!("no stats line after the stop: {shown:?}"));
    let end = joined[start..]
        .find(']')
        .map_or(joined.len(), |e| start + e);
    let line = joined[start..end].to_string();
    assert!(
        line.contains(" tok/s") && line.contains("first token "),
        "{line}"
    );
    let number = |before: &str| -> f64 {
        let head = line.split(before).next().unwrap();
        head.rsplit(|c: char| !(c.is_ascii_digit() || c == '.'))
            .find(|w| !w.is_empty())
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no number before {before:?} in {line}"))
    };
    let (tokens, speed) = (number(" tokens ·"), number(" tok/s"));
    let first: f64 = line
        .split("first token ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no first-token time in {line}"));
    assert!(tokens >= 4.0 && speed > 0.0, "{line}");
    if real() {
        // The stand-in answers within a millisecond, which shows as 0.
        assert!(first > 0.0, "{line}");
    } else {
        // The stand-in's reply runs 40 tokens, 50 ms apart: the stop came first.
        assert!(line.contains("cancelled"), "{line}");
    }
    // The next turn works: gemma.cpp was restarted and the conversation replayed into it (a
    // short reply from the real model: the first one ran for hundreds of tokens).
    if real() {
        chat.send_line("/set max_tokens 16").unwrap();
        chat.expect(prompt).unwrap();
    }
    chat.send_line(if real() { "Then" } else { "CONTEXT next" })
        .unwrap();
    let shown = chat.expect(prompt).unwrap();
    let shown = String::from_utf8_lossy(shown.before()).into_owned();
    assert!(shown.contains("tok/s"), "{shown}");
    if !real() {
        assert!(shown.contains("2 user turns"), "{shown}");
    }
    chat.send_line("/quit").unwrap();
    chat.expect(Eof).expect("the shell did not exit on /quit");
}

// ----- images (`--image_file`) -----

/// A stand-in fixture whose weights are a model that sees (Gemma 3 4B's specifier).
fn vision_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("gemma3-4b-sfp-it.sbs");
    std::fs::write(&weights, test_writer::single_file("gemma3-4b-sfp-it", true)).unwrap();
    Fixture {
        dir,
        binary: standin_bin(),
        weights,
    }
}

/// A real PNG of 4×3 pixels in one `shade`.
fn png_bytes(shade: u8) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([shade, x as u8 * 10, y as u8 * 20]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// What the stand-in says about the image it was started with: its size and pixel sum, as
/// decoded here from the PNG the user gave.
fn seen(png: &[u8]) -> String {
    let rgb = image_input::decode_rgb(png).unwrap();
    let sum: u64 = rgb.pixels.iter().map(|&b| b as u64).sum();
    format!(
        "image {}x{}, pixel sum {sum}, 256 image tokens.",
        rgb.width, rgb.height
    )
}

fn with_image(text: &str, png: &[u8]) -> Message {
    let image = gemmactl::domain::Image::from_bytes(png.to_vec(), "image").unwrap();
    user(text).with_images(vec![image])
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_reaches_gemma_cpp_as_ppm_and_a_different_one_restarts_it() {
    standin_only!("the stand-in's IMAGE report");
    let f = vision_fixture();
    let engine = start(&f.spec()).await.unwrap();
    let first_pid = engine.describe().pid;
    let (a, b) = (png_bytes(10), png_bytes(200));

    // The first image: gemma.cpp is restarted with it (it reads an image only at start), and
    // its pixels arrived intact through the PPM.
    let r1 = collect(
        &engine,
        request("r1", vec![with_image("IMAGE what is it?", &a)]),
    )
    .await;
    assert_eq!(r1.text, seen(&a));
    // Its tokens are part of the prompt, at position 0.
    assert!(r1.done().usage.prompt_tokens > 256, "{:?}", r1.done().usage);
    let a_pid = engine.describe().pid;
    assert_ne!(a_pid, first_pid, "no restart for the image");

    // The same conversation goes on: the same process, the image still in its cache.
    let r2 = collect(
        &engine,
        request(
            "r2",
            vec![
                with_image("IMAGE what is it?", &a),
                model(&r1.text),
                user("IMAGE and now?"),
            ],
        ),
    )
    .await;
    assert_eq!(r2.text, seen(&a));
    assert_eq!(engine.describe().pid, a_pid);
    assert!(r2.done().usage.cached_tokens > 256, "{:?}", r2.done().usage);

    // Another image: another process, which sees the new pixels.
    let r3 = collect(
        &engine,
        request("r3", vec![with_image("IMAGE and this?", &b)]),
    )
    .await;
    assert_eq!(r3.text, seen(&b));
    assert_ne!(engine.describe().pid, a_pid);

    // No image: a process without one (else the old image would join the new prompt).
    let r4 = collect(&engine, request("r4", vec![user("IMAGE anything?")])).await;
    assert_eq!(r4.text, "no image.");
}

#[tokio::test(flavor = "multi_thread")]
async fn images_gemma_cpp_cannot_show_are_refused_before_anything_runs() {
    let png = png_bytes(5);
    // A model that does not see (Gemma 3 270M, on the real binary too).
    let f = fixture();
    let engine = start(&f.spec()).await.unwrap();
    let pid = engine.describe().pid;
    match engine.generate(request("t1", vec![with_image("hi", &png)])) {
        Err(EngineError::Request { code, message }) => {
            assert_eq!(code, ErrorCode::NoVision);
            assert!(
                message.contains("cannot see images") && message.contains("--mmproj"),
                "{message}"
            );
        }
        other => panic!("expected no_vision, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        engine.describe().pid,
        pid,
        "the engine was restarted for nothing"
    );
    standin_only!("a vision model's weights");

    // Two different images in one conversation: gemma.cpp holds one per process.
    let f = vision_fixture();
    let engine = start(&f.spec()).await.unwrap();
    let two = vec![
        with_image("first", &png),
        model("ok"),
        with_image("second", &png_bytes(99)),
    ];
    match engine.generate(request("v1", two)) {
        Err(EngineError::Request { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("two different images"), "{message}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// The stand-in checks `--image_file` as gemma.cpp does: a file that is not a binary PPM, or any
/// image for a model that does not see, aborts at start.
#[test]
fn the_stand_in_refuses_what_gemma_cpp_would() {
    standin_only!("the stand-in itself");
    let f = vision_fixture();
    let text = f.dir.path().join("not.ppm");
    std::fs::write(&text, "P6\n4 3\n255\nshort").unwrap();
    let run = |weights: &Path, image: &Path| {
        common::run_bounded({
            let mut c = std::process::Command::new(standin_bin());
            c.args([
                "--weights",
                weights.to_str().unwrap(),
                "--image_file",
                image.to_str().unwrap(),
            ]);
            c
        })
    };
    use std::os::unix::process::ExitStatusExt;
    let out = run(&f.weights, &text);
    assert_eq!(out.status.signal(), Some(6));
    assert!(
        common::stderr(&out).contains("Failed to read PPM pixel data"),
        "{}",
        common::stderr(&out)
    );
    let ppm = f.dir.path().join("ok.ppm");
    std::fs::write(
        &ppm,
        image_input::to_ppm(&image_input::decode_rgb(&png_bytes(1)).unwrap()),
    )
    .unwrap();
    let plain = fixture();
    let out = run(&plain.weights, &ppm);
    assert_eq!(out.status.signal(), Some(6));
    assert!(
        common::stderr(&out).contains("PromptWrapping::GEMMA_VLM"),
        "{}",
        common::stderr(&out)
    );
}

//! The engine protocol, tested on the real gemma-engine running the real Gemma 3 270M: greedy
//! text, cancellation, batching, session prefix reuse, and every kind of bad input.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use common::engine::Engine;

fn generate(id: &str, prompt: &str, max_tokens: u32) -> Value {
    json!({"op": "generate", "id": id, "messages": [{"role": "user", "content": prompt}],
           "params": {"max_tokens": max_tokens, "temperature": 0}})
}

#[test]
fn greedy_completion_is_about_france_and_reports_usage() {
    let mut engine = Engine::start(&common::default_model(), &[]);
    let ready = engine.ready();
    assert_eq!(ready["protocol"], engine_protocol::PROTOCOL_VERSION);
    assert_eq!(ready["model"]["architecture"], "gemma3");
    assert_eq!(ready["model"]["chat_template"], Value::Null);
    assert_eq!(ready["backends"][0], "CPU");
    assert!(ready["load_ms"].as_u64().is_some());

    engine.send(generate("a", "The capital of France is", 16));
    let (text, done) = engine.reply("a");
    assert_eq!(done["event"], "done", "{done}");
    assert!(
        text.contains("France") || text.contains("Paris"),
        "reply not about France: {text:?}"
    );
    assert_eq!(done["finish_reason"], "length");
    assert_eq!(done["usage"]["completion_tokens"], 16);
    assert!(done["usage"]["prompt_tokens"].as_u64().unwrap() >= 5);
    for key in [
        "ttft_ms",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "total_ms",
    ] {
        assert!(
            done["timings"][key].as_f64().unwrap() > 0.0,
            "{key} missing in {done}"
        );
    }
    assert!(
        engine.wait_exit().success(),
        "engine should exit 0 when stdin closes"
    );
}

/// The engine warms up before `ready` (one small prefill) and must leave nothing of it behind:
/// the first request reads its whole prompt and answers exactly as the same request does later,
/// after other work has come and gone. (The warm-up clears the KV cache itself; a slot also cuts
/// its sequence back to the reused prefix before reading a prompt, so this guards the whole path
/// rather than that one call: removing only the clear leaves the test green.)
#[test]
fn the_warm_up_before_ready_leaves_nothing_behind() {
    let mut engine = Engine::start(&common::default_model(), &["--parallel", "1"]);
    engine.ready();
    let prompt = "The history of the city begins with a small fishing village";
    engine.send(generate("first", prompt, 24));
    let (first, done) = engine.reply("first");
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["usage"]["cached_tokens"], 0, "{done}");
    engine.send(generate(
        "other",
        "Once upon a time, in a land far away,",
        12,
    ));
    let (_, done) = engine.reply("other");
    assert_eq!(done["event"], "done", "{done}");
    engine.send(generate("again", prompt, 24));
    let (again, done) = engine.reply("again");
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(first, again);
}

#[test]
fn cancel_stops_a_reply_and_the_engine_serves_the_next() {
    let mut engine = Engine::start(&common::default_model(), &[]);
    engine.ready();
    engine.send(generate("long", "Once upon a time", 2000));
    // Wait for the reply to be under way, then cancel it.
    let first = engine.until(|e| e["event"] == "token");
    assert_eq!(first.last().unwrap()["id"], "long");
    engine.send(json!({"op": "cancel", "id": "long"}));
    let (_, done) = engine.reply("long");
    assert_eq!(done["finish_reason"], "cancelled", "{done}");
    assert!(done["usage"]["completion_tokens"].as_u64().unwrap() < 2000);

    engine.send(generate("next", "The capital of France is", 8));
    let (text, done) = engine.reply("next");
    assert_eq!(done["finish_reason"], "length");
    assert!(!text.is_empty());

    // Cancelling something that is not running is a typed error, not a crash.
    engine.send(json!({"op": "cancel", "id": "nope"}));
    let err = engine.until(|e| e["event"] == "error");
    assert_eq!(err.last().unwrap()["code"], "unknown_request");
}

#[test]
fn concurrent_requests_complete_with_their_own_ids_and_texts() {
    let mut engine = Engine::start(&common::default_model(), &["--parallel", "2"]);
    engine.ready();
    engine.send(generate("fr", "The capital of France is", 12));
    engine.send(generate("de", "The capital of Germany is", 12));
    let mut texts = std::collections::HashMap::new();
    let mut finished = 0;
    let mut interleaved = false;
    let mut last_id = String::new();
    while finished < 2 {
        let e = engine.next();
        let id = e["id"].as_str().unwrap_or_default().to_string();
        match e["event"].as_str() {
            Some("token") => {
                if !last_id.is_empty() && last_id != id && texts.contains_key(&id) {
                    interleaved = true;
                }
                last_id = id.clone();
                texts
                    .entry(id)
                    .or_insert_with(String::new)
                    .push_str(e["text"].as_str().unwrap());
            }
            Some("done") => {
                assert_eq!(e["usage"]["completion_tokens"], 12, "{e}");
                finished += 1;
            }
            // Prompt progress of each request, checked in `reply` elsewhere.
            Some("progress") => {}
            _ => panic!("unexpected event {e}"),
        }
    }
    assert!(
        texts["fr"].contains("France") || texts["fr"].contains("Paris"),
        "{:?}",
        texts["fr"]
    );
    assert!(
        texts["de"].contains("German") || texts["de"].contains("Berlin"),
        "{:?}",
        texts["de"]
    );
    assert!(
        interleaved,
        "the two requests were decoded one after the other, not batched"
    );
}

#[test]
fn a_long_prompt_reports_its_reading_chunk_by_chunk() {
    let mut engine = Engine::start(&common::default_model(), &[]);
    engine.ready();
    let long = "The river runs past the old mill and under the stone bridge. ".repeat(30);
    engine.send(json!({"op": "generate", "id": "p", "messages": [{"role": "user", "content": long}], "params": {"max_tokens": 1, "temperature": 0}}));
    let mut seen = Vec::new();
    let done = loop {
        let event = engine.next();
        match event["event"].as_str() {
            Some("progress") => seen.push((
                event["done"].as_u64().unwrap(),
                event["total"].as_u64().unwrap(),
            )),
            Some("done") => break event,
            Some("token") => {}
            other => panic!("unexpected event {other:?}: {event}"),
        }
    };
    let prompt = done["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 300, "{done}");
    // 128-token chunks: at least three reports, growing, ending at the whole prompt.
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    assert!(seen.iter().all(|(_, total)| *total == prompt), "{seen:?}");
    assert_eq!(seen.last().map(|p| p.0), Some(prompt));
}

#[test]
fn second_turn_of_a_session_reuses_the_first() {
    let mut engine = Engine::start(&common::default_model(), &[]);
    engine.ready();
    let mut messages = vec![
        json!({"role": "user", "content": "Here is a list of the planets of the solar system, in order:"}),
    ];
    engine.send(json!({"op": "generate", "id": "t1", "session": "s", "messages": messages, "params": {"max_tokens": 24, "temperature": 0}}));
    let (reply, done1) = engine.reply("t1");
    assert_eq!(done1["usage"]["cached_tokens"], 0);

    messages.push(json!({"role": "assistant", "content": reply}));
    messages.push(json!({"role": "user", "content": " And the largest one is"}));
    engine.send(json!({"op": "generate", "id": "t2", "session": "s", "messages": messages, "params": {"max_tokens": 8, "temperature": 0}}));
    let (_, done2) = engine.reply("t2");
    let prompt = done2["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = done2["usage"]["cached_tokens"].as_u64().unwrap();
    assert!(prompt > done1["usage"]["prompt_tokens"].as_u64().unwrap());
    assert!(
        cached >= done1["usage"]["prompt_tokens"].as_u64().unwrap(),
        "turn 2 re-read turn 1: {done2}"
    );
    assert!(
        prompt - cached < prompt / 2,
        "turn 2 processed most of the conversation again: {done2}"
    );

    // A different conversation in the same session shares only its true common prefix.
    let other = vec![json!({"role": "user", "content": "Completely different text"})];
    engine.send(json!({"op": "generate", "id": "t3", "session": "s", "messages": other, "params": {"max_tokens": 4, "temperature": 0}}));
    let (_, done3) = engine.reply("t3");
    assert!(
        done3["usage"]["cached_tokens"].as_u64().unwrap() <= 1,
        "{done3}"
    );
}

#[test]
fn malformed_commands_get_typed_errors_and_the_engine_keeps_serving() {
    let mut engine = Engine::start(&common::default_model(), &[]);
    engine.ready();
    for bad in [
        "this is not json",
        "{\"op\":\"explode\"}",
        "{\"op\":\"generate\"}",
        "[1,2,3]",
    ] {
        engine.send_raw(bad);
        let e = engine.next();
        assert_eq!(e["event"], "error", "for {bad:?}: {e}");
        assert_eq!(e["code"], "bad_command", "for {bad:?}: {e}");
    }
    engine.send(json!({"op": "generate", "id": "empty", "messages": []}));
    let (_, e) = engine.reply("empty");
    assert_eq!(e["code"], "bad_request", "{e}");
    engine.send(json!({"op": "generate", "id": "hot", "messages": [{"role": "user", "content": "x"}], "params": {"temperature": -1}}));
    let (_, e) = engine.reply("hot");
    assert_eq!(e["code"], "bad_request", "{e}");
    engine.send(json!({"op": "generate", "id": "tmpl", "prompt": {"format": "chat"}, "messages": [{"role": "user", "content": "x"}]}));
    let (_, e) = engine.reply("tmpl");
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("no chat template"),
        "{e}"
    );

    engine.send(generate("ok", "The capital of France is", 4));
    let (_, done) = engine.reply("ok");
    assert_eq!(done["event"], "done");
}

/// `params.grammar`: a grammar or a schema holds the reply, greedy and sampled, while requests
/// without one in the same batch run free; a grammar llama.cpp cannot use is a `bad_request`
/// with its reason, at once, and never takes the engine down.
#[test]
fn a_grammar_holds_the_reply_and_a_bad_one_is_refused_without_harm() {
    let mut engine = Engine::start(&common::default_model(), &["--parallel", "3"]);
    engine.ready();
    let held = |id: &str, grammar: Value, temperature: f64, max_tokens: u32| {
        json!({"op": "generate", "id": id, "prompt": {"format": "completion"},
               "messages": [{"role": "user", "content": "Is the sky blue? Answer:"}],
               "params": {"max_tokens": max_tokens, "temperature": temperature, "seed": 11,
                          "grammar": grammar}})
    };
    let yes_no = json!({"gbnf": "root ::= \" yes\" | \" no\""});
    let schema = json!({"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
        "reasons": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 2}},
        "required": ["answer", "reasons"]});
    engine.send(held("g", yes_no.clone(), 0.0, 16));
    engine.send(held("s", json!({"json_schema": schema}), 1.0, 120));
    engine.send(generate("free", "The capital of France is", 8));
    // The three run in one batch, so their events interleave.
    let mut replies: std::collections::HashMap<String, (String, Option<Value>)> =
        std::collections::HashMap::new();
    while replies.values().filter(|(_, end)| end.is_some()).count() < 3 {
        let event = engine.next();
        let id = event["id"].as_str().unwrap_or_default().to_string();
        let entry = replies.entry(id).or_default();
        match event["event"].as_str() {
            Some("token") => entry.0.push_str(event["text"].as_str().unwrap()),
            Some("done") | Some("error") => entry.1 = Some(event),
            _ => {}
        }
    }
    let (text, done) = &replies["g"];
    assert_eq!(done.as_ref().unwrap()["finish_reason"], "stop", "{done:?}");
    assert!([" yes", " no"].contains(&text.as_str()), "{text:?}");
    let (text, done) = &replies["s"];
    assert_eq!(done.as_ref().unwrap()["finish_reason"], "stop", "{done:?}");
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert!(
        ["yes", "no"].contains(&v["answer"].as_str().unwrap()),
        "{v}"
    );
    assert!(v["reasons"].as_array().unwrap().len() <= 2, "{v}");
    let (_, done) = &replies["free"];
    assert_eq!(done.as_ref().unwrap()["event"], "done");

    for (id, grammar, reason) in [
        (
            "syntax",
            json!({"gbnf": "root ::= \"a\" | [b-"}),
            "not valid GBNF (",
        ),
        ("undefined", json!({"gbnf": "root ::= answer"}), "answer"),
        (
            "recursive",
            json!({"gbnf": "root ::= root \"a\" | \"a\""}),
            "left recursion",
        ),
        (
            "rootless",
            json!({"gbnf": "answer ::= \"a\""}),
            "no `root` rule",
        ),
        ("array", json!({"json_schema": [1]}), "not a JSON object"),
        (
            "unresolved",
            json!({"json_schema": {"$ref": "#/$defs/nothing"}}),
            "cannot turn the JSON Schema",
        ),
    ] {
        engine.send(held(id, grammar, 0.0, 8));
        let error = engine.next();
        assert_eq!(error["event"], "error", "{id}: {error}");
        assert_eq!(error["id"], id);
        assert_eq!(error["code"], "bad_request", "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(reason), "{id}: {message}");
    }
    // Still serving, and still exits cleanly: no abort behind the refusals.
    engine.send(held("after", yes_no, 0.0, 16));
    let (text, done) = engine.reply("after");
    assert_eq!(done["event"], "done", "{done}");
    assert!([" yes", " no"].contains(&text.as_str()), "{text:?}");
    assert!(engine.wait_exit().success());
}

#[test]
fn a_built_in_chat_template_can_be_named() {
    let mut engine = Engine::start(&common::default_model(), &[]);
    engine.ready();
    engine.send(json!({"op": "generate", "id": "c", "prompt": {"format": "chat", "template": "gemma"},
                       "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hello"}],
                       "params": {"max_tokens": 4, "temperature": 0}}));
    let (_, done) = engine.reply("c");
    assert_eq!(done["event"], "done", "{done}");
    // BOS + the Gemma turn markers around both texts: far more tokens than the bare words.
    assert!(
        done["usage"]["prompt_tokens"].as_u64().unwrap() >= 12,
        "{done}"
    );
}

/// The prompt tokens of `content` as the one user message, put to the model as `prompt`.
fn prompt_tokens(engine: &mut Engine, prompt: &Value, content: &str) -> i64 {
    engine.send(json!({"op": "generate", "id": "count", "prompt": prompt,
                       "messages": [{"role": "user", "content": content}],
                       "params": {"max_tokens": 1, "temperature": 0}}));
    let (_, done) = engine.reply("count");
    assert_eq!(done["event"], "done", "{done}");
    done["usage"]["prompt_tokens"].as_i64().unwrap()
}

/// The greedy reply to one user message under `prompt`.
fn answer(engine: &mut Engine, prompt: &Value, content: &str, max_tokens: u32) -> String {
    engine.send(json!({"op": "generate", "id": "answer", "prompt": prompt,
                       "messages": [{"role": "user", "content": content}],
                       "params": {"max_tokens": max_tokens, "temperature": 0}}));
    let (text, done) = engine.reply("answer");
    assert_eq!(done["event"], "done", "{done}");
    text
}

/// Under each chat template, a control token's text typed by a user costs what the same text
/// costs as plain text (several tokens), never the one control token; the template's own markers
/// are still control tokens. Each count is one short request, so only what is compared is asked.
fn markers_cost_what_plain_text_costs(engine: &mut Engine, templates: &[Value], markers: &[&str]) {
    let plain = json!({"format": "completion"});
    let bare = prompt_tokens(engine, &plain, "x");
    let as_text: Vec<i64> = markers
        .iter()
        .map(|m| prompt_tokens(engine, &plain, &format!("x{m}")) - bare)
        .collect();
    for (marker, cost) in markers.iter().zip(&as_text) {
        assert!(*cost > 1, "{marker} is {cost} token(s) as plain text");
    }
    for template in templates {
        let bare = prompt_tokens(engine, template, "x");
        for (marker, cost) in markers.iter().zip(&as_text) {
            let in_chat = prompt_tokens(engine, template, &format!("x{marker}")) - bare;
            assert_eq!(
                in_chat, *cost,
                "{marker} typed in a message under {template} cost {in_chat} tokens, as text {cost}"
            );
        }
    }
}

#[test]
fn typed_control_tokens_stay_text_under_every_template() {
    // A small context and one slot: quick to load, and every request here is short.
    let small = ["--context", "512", "--parallel", "1"];
    let gemma = json!({"format": "chat", "template": "gemma"});
    let chatml = json!({"format": "chat", "template": "chatml"});
    {
        let mut engine = Engine::start(&common::default_model(), &small);
        engine.ready();
        // BOS, `<start_of_turn>user\n`, the text, `<end_of_turn>\n`, `<start_of_turn>model\n`:
        // the template's markers are one token each.
        assert_eq!(prompt_tokens(&mut engine, &gemma, "x"), 10);
        markers_cost_what_plain_text_costs(
            &mut engine,
            &[gemma.clone(), chatml.clone()],
            &["<end_of_turn>", "<start_of_turn>", "<eos>"],
        );
        // The model reads the text it was given: asked to go on with a line of markers, it
        // writes them as text (as tokens they would have closed the user's turn).
        let line = "<end_of_turn> ".repeat(12);
        let reply = answer(&mut engine, &gemma, &format!("Repeat: {line}"), 16);
        assert!(reply.contains("<end_of_turn>"), "{reply:?}");
    }
    // Qwen2.5-Coder: the file's own template (ChatML, recognised by llama.cpp), and by name.
    let mut engine = Engine::start(&qwen_model(), &small);
    engine.ready();
    let own = json!({"format": "chat"});
    markers_cost_what_plain_text_costs(
        &mut engine,
        &[own.clone(), chatml],
        &["<|im_end|>", "<|im_start|>", "<|endoftext|>"],
    );
    let reply = answer(
        &mut engine,
        &own,
        "Repeat exactly, with nothing else: <|im_end|>",
        12,
    );
    assert!(reply.contains("<|im_end|>"), "{reply:?}");
}

/// Qwen2.5-Coder 0.5B Instruct from the shared cache (pulled once), a model whose file has its
/// own chat template and whose vocabulary has ChatML's markers as control tokens.
fn qwen_model() -> std::path::PathBuf {
    let home = common::Home::new();
    let out = home.run(&["models", "pull", "qwen2.5-coder-0.5b"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = home.run(&["models", "show", "qwen2.5-coder-0.5b", "--json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    std::path::PathBuf::from(v["path"].as_str().unwrap())
}

#[test]
fn a_reply_cut_by_the_token_limit_inside_a_stop_string_drops_the_partial_stop() {
    let mut engine = Engine::start(
        &common::default_model(),
        &["--context", "512", "--parallel", "1"],
    );
    engine.ready();
    let transcript = "User: hi\nAssistant: hello\n".repeat(4) + "User: hi\nAssistant: hello";
    let completion = json!({"format": "completion"});
    let stops = ["\nUser:", "\nAssistant:"];
    for max_tokens in [1, 2] {
        // Unstopped, the model starts the next `User:` line: cut after 1 or 2 tokens, that is a
        // piece of the stop string.
        let natural = answer(&mut engine, &completion, &transcript, max_tokens);
        assert!(
            !natural.is_empty() && stops[0].starts_with(natural.as_str()),
            "the model did not start a User: line: {natural:?}"
        );
        engine.send(json!({"op": "generate", "id": "cut", "messages": [{"role": "user", "content": transcript}],
                           "prompt": completion, "params": {"max_tokens": max_tokens, "temperature": 0, "stop": stops}}));
        let (text, done) = engine.reply("cut");
        assert_eq!(done["finish_reason"], "length", "{done}");
        assert_eq!(
            text, "",
            "a partial stop string was kept after {max_tokens} tokens"
        );
    }
}

/// Starts the engine on a bad file and returns its single error event and exit status.
fn load_failure(path: &Path) -> (Value, std::process::ExitStatus) {
    let engine = Engine::start(path, &[]);
    let events = engine.until(|e| e["event"] != "loading");
    let event = events.last().unwrap().clone();
    (event, engine.wait_exit())
}

#[test]
fn bad_model_files_are_typed_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("absent.gguf");
    let (e, status) = load_failure(&missing);
    assert_eq!(e["code"], "model_not_found", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("absent.gguf"),
        "{e}"
    );
    assert_eq!(e["path"], missing.display().to_string());
    assert_eq!(status.code(), Some(1));

    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "just some notes, not a model\n").unwrap();
    let (e, status) = load_failure(&text);
    assert_eq!(e["code"], "not_gguf", "{e}");
    assert!(e["message"].as_str().unwrap().contains("notes.gguf"), "{e}");
    assert_eq!(status.code(), Some(1));

    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(common::default_model()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let (e, status) = load_failure(&truncated);
    assert_eq!(e["code"], "model_truncated", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("truncated.gguf"),
        "{e}"
    );
    assert_eq!(status.code(), Some(1));
}

#[test]
fn bad_arguments_and_probe() {
    let out = Command::new(common::engine_bin())
        .arg("--context")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["code"], "bad_arguments");

    let out = Command::new(common::engine_bin())
        .arg("--probe")
        .output()
        .unwrap();
    assert!(out.status.success());
    let probe: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(probe["event"], "probe");
    assert!(
        probe["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "cpu"),
        "{probe}"
    );
    assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// Keeps every core of the machine busy from this process until dropped: "other programs", as
/// the engine sees them.
struct Hogs {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    fn on_every_core() -> Hogs {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().unwrap().get();
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn a_busy_machine_gets_fewer_threads_unless_the_user_named_a_number() {
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    let hogs = Hogs::on_every_core();
    let chosen = Engine::start(&common::default_model(), &[]);
    let asked = Engine::start(&common::default_model(), &["--threads", "2"]);
    let chosen = chosen.ready();
    let asked = asked.ready();
    let chosen_threads = chosen["threads"].as_u64().unwrap();
    let asked_threads = asked["threads"].as_u64().unwrap();
    drop(hogs);
    // Where /proc/stat counts CPUs this process may not use (a CPU quota, taskset), the engine
    // cannot judge the load and takes every usable core; elsewhere every core was busy with this
    // test's threads while the model loaded, and the engine leaves a core to them.
    let counted = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    if counted != cores {
        assert_eq!(
            chosen_threads, cores,
            "{counted} CPUs counted, {cores} usable"
        );
    } else {
        assert!(
            (1..cores.max(2)).contains(&chosen_threads),
            "{chosen_threads} threads chosen on {cores} busy cores"
        );
    }
    assert!(
        chosen["threads_reason"]
            .as_str()
            .is_some_and(|r| r.contains("cores")),
        "a chosen count comes with its reason: {chosen}"
    );
    assert_eq!(asked["threads_reason"], Value::Null, "{asked}");
    assert_eq!(asked_threads, 2, "--threads 2 is obeyed whatever the load");
}

/// Anonymous memory of a process in KiB (`RssAnon`): the KV cache is allocated there, while the
/// weights are a file mapping whose resident part depends on what was read.
fn anonymous_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no RssAnon in /proc/{pid}/status"))
}

#[test]
fn the_kv_cache_type_and_flash_attention_are_obeyed_and_reported() {
    let model = common::default_model();
    // A long context, so the KV cache is big enough for its type to show in memory: Gemma 3
    // 270M's 3 global layers hold every cell (1 KiB each per layer at f16), ~96 MiB at 32,768.
    let context = ["--context", "32768", "--parallel", "1"];
    let mut anonymous = Vec::new();
    // Flash attention is the same for the three (auto resolves to on on the CPU), so only the
    // cache's type differs; `off` is tried at the end with the one type it allows.
    for (kv, flash) in [("f16", "on"), ("q8_0", "auto"), ("q4_0", "on")] {
        let mut args = context.to_vec();
        args.extend(["--kv-cache-type", kv, "--flash-attention", flash]);
        let mut engine = Engine::start(&model, &args);
        let ready = engine.ready();
        assert_eq!(ready["kv_cache_type"], kv, "{ready}");
        assert_eq!(ready["flash_attention"], flash, "{ready}");
        anonymous.push(anonymous_kib(engine.pid()));
        engine.send(generate("a", "The capital of France is", 8));
        let (text, done) = engine.reply("a");
        assert_eq!(done["event"], "done", "{kv}/{flash}: {done}");
        assert_eq!(done["usage"]["completion_tokens"], 8, "{done}");
        assert!(!text.trim().is_empty(), "{kv}/{flash} generated nothing");
        assert!(engine.wait_exit().success());
    }
    // 32 values take 64 bytes at f16, 34 at q8_0 and 18 at q4_0: the global layers' cache alone
    // is ~96, ~51 and ~27 MiB. Half those differences is far above allocator noise.
    let (f16, q8, q4) = (anonymous[0], anonymous[1], anonymous[2]);
    assert!(
        f16 > q8 + 20 * 1024 && q8 > q4 + 10 * 1024,
        "anonymous memory did not shrink with the KV cache type: f16 {f16} KiB, q8_0 {q8} KiB, q4_0 {q4} KiB"
    );

    let mut engine = Engine::start(
        &model,
        &["--kv-cache-type", "f16", "--flash-attention", "off"],
    );
    assert_eq!(engine.ready()["flash_attention"], "off");
    engine.send(generate("a", "The capital of France is", 8));
    let (_, done) = engine.reply("a");
    assert_eq!(done["usage"]["completion_tokens"], 8, "{done}");
    assert!(engine.wait_exit().success());

    // What llama.cpp would refuse, or cannot parse, is refused before any load.
    for (args, said) in [
        (
            vec!["--kv-cache-type", "q4_0", "--flash-attention", "off"],
            "a q4_0 KV cache needs flash attention",
        ),
        (vec!["--kv-cache-type", "q3_k"], "is not a KV cache type"),
        (
            vec!["--flash-attention", "maybe"],
            "is not a flash attention setting",
        ),
    ] {
        let out = Command::new(common::engine_bin())
            .arg("--model")
            .arg(&model)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(e["code"], "bad_arguments", "{e}");
        assert!(e["message"].as_str().unwrap().contains(said), "{e}");
    }
}

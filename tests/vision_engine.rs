//! Images through gemma-engine, on the real engine, the real Gemma 3 270M and a structurally
//! real Gemma 3 vision projector with random weights (tests/common/projector.rs): the image is
//! read, decoded, encoded and counted; the same image gives the same reply and another image a
//! different one; a session reuses a cached image; every bad image gets its sentence and the
//! engine keeps serving; a projector that does not fit the model is refused at load. These
//! check the plumbing only: with random projector weights no reply means anything.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{json, Value};

use common::engine::Engine;
use common::projector::{ppm, test_projector, IMAGE_SIZE, TOKENS_PER_IMAGE};

/// The engine on the default model, with `projector` if given.
fn engine_with(projector: Option<&Path>) -> Engine {
    let model = common::default_model();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--model".as_ref(),
        model.as_os_str(),
        "--context".as_ref(),
        "2048".as_ref(),
    ];
    if let Some(p) = projector {
        args.extend(["--mmproj".as_ref(), p.as_os_str()]);
    }
    Engine::with_args(&args)
}

/// A 64×64 solid red square and a 96×48 black-and-white checkerboard (another size, so the
/// projector's resize runs too).
fn red() -> Vec<u8> {
    ppm(64, 64, |_, _| [230, 20, 20])
}
fn checkerboard() -> Vec<u8> {
    ppm(96, 48, |x, y| {
        if (x / 8 + y / 8) % 2 == 0 {
            [0, 0, 0]
        } else {
            [255, 255, 255]
        }
    })
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A greedy completion request of `before`, an image part, then `after`.
fn with_image(id: &str, before: &str, image: Value, after: &str, max_tokens: u32) -> Value {
    json!({"op": "generate", "id": id, "prompt": {"format": "completion"},
           "messages": [{"role": "user", "content": [
               {"type": "text", "text": before}, image, {"type": "text", "text": after}]}],
           "params": {"max_tokens": max_tokens, "temperature": 0}})
}

fn text_only(id: &str, text: &str, max_tokens: u32) -> Value {
    json!({"op": "generate", "id": id, "prompt": {"format": "completion"},
           "messages": [{"role": "user", "content": text}],
           "params": {"max_tokens": max_tokens, "temperature": 0}})
}

fn by_path(path: &Path) -> Value {
    json!({"type": "image", "path": path.display().to_string()})
}

fn by_data(bytes: &[u8]) -> Value {
    json!({"type": "image", "data": base64::engine::general_purpose::STANDARD.encode(bytes)})
}

#[test]
fn images_are_encoded_counted_and_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let red_file = write(dir.path(), "red.ppm", &red());
    let mut engine = engine_with(Some(test_projector(640).as_path()));
    let ready = engine.ready();
    let vision = &ready["vision"];
    assert_eq!(vision["projector_type"], "gemma3", "{ready}");
    assert_eq!(vision["image_size"], IMAGE_SIZE);
    assert_eq!(vision["tokens_per_image"], TOKENS_PER_IMAGE);
    assert_eq!(vision["embedding_length"], 640);

    // The image adds exactly its tokens to the prompt, and they are counted as image tokens.
    let (_, plain) = engine.ask(text_only("plain", "A picture: It shows", 4));
    let (red_text, red_done) = engine.ask(with_image(
        "red",
        "A picture:",
        by_path(&red_file),
        " It shows",
        12,
    ));
    let prompt = |d: &Value| d["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        prompt(&red_done),
        prompt(&plain) + TOKENS_PER_IMAGE,
        "{red_done}"
    );
    assert_eq!(red_done["usage"]["image_tokens"], TOKENS_PER_IMAGE);
    assert_eq!(plain["usage"]["image_tokens"], 0);

    // The same picture again, sent as bytes this time: the same greedy reply.
    let (again, _) = engine.ask(with_image(
        "again",
        "A picture:",
        by_data(&red()),
        " It shows",
        12,
    ));
    assert_eq!(again, red_text);
    // Another picture: another reply.
    let (checker, _) = engine.ask(with_image(
        "checker",
        "A picture:",
        by_data(&checkerboard()),
        " It shows",
        12,
    ));
    assert_ne!(
        checker, red_text,
        "two different images gave the same reply"
    );

    // An image as the very last thing of the prompt still gives a reply.
    let (_, last) = engine.ask(with_image("last", "A picture:", by_data(&red()), "", 4));
    assert_eq!(last["usage"]["completion_tokens"], 4, "{last}");
}

#[test]
fn a_session_reuses_its_cached_image_and_answers_like_a_fresh_request() {
    let mut engine = engine_with(Some(test_projector(640).as_path()));
    engine.ready();
    let image = by_data(&checkerboard());
    let first_turn = json!({"role": "user", "content": [
        {"type": "text", "text": "Look at this: "}, image, {"type": "text", "text": " It is"}]});
    let (reply, first) = engine.ask(json!({
        "op": "generate", "id": "t1", "session": "s", "prompt": {"format": "completion"},
        "messages": [first_turn.clone()], "params": {"max_tokens": 8, "temperature": 0}}));
    let first_prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();

    let conversation = json!([first_turn, {"role": "assistant", "content": reply},
                              {"role": "user", "content": " And next to it"}]);
    let (followed, second) = engine.ask(json!({
        "op": "generate", "id": "t2", "session": "s", "prompt": {"format": "completion"},
        "messages": conversation, "params": {"max_tokens": 8, "temperature": 0}}));
    // The first prompt came from the cache, image included: at most the few tokens of " It is"
    // (which the reply's first token may have merged with) are read again.
    let cached = second["usage"]["cached_tokens"].as_u64().unwrap();
    assert!(
        cached + 3 >= first_prompt,
        "cached {cached} of a first prompt of {first_prompt}: {second}"
    );
    assert_eq!(second["usage"]["image_tokens"], TOKENS_PER_IMAGE);

    let (fresh, fresh_done) = engine.ask(json!({
        "op": "generate", "id": "t3", "prompt": {"format": "completion"},
        "messages": conversation, "params": {"max_tokens": 8, "temperature": 0}}));
    assert_eq!(fresh_done["usage"]["cached_tokens"], 0);
    assert_eq!(
        fresh_done["usage"]["prompt_tokens"],
        second["usage"]["prompt_tokens"]
    );
    assert_eq!(
        followed, fresh,
        "the session's reply differs from a fresh request's"
    );

    // The same session with a different picture in the first turn: not reused past it.
    let other = json!([{"role": "user", "content": [
        {"type": "text", "text": "Look at this: "}, by_data(&red()), {"type": "text", "text": " It is"}]}]);
    let (_, changed) = engine.ask(json!({
        "op": "generate", "id": "t4", "session": "s", "prompt": {"format": "completion"},
        "messages": other, "params": {"max_tokens": 2, "temperature": 0}}));
    // Reuse stops where the image starts (the text after it is shorter than an image).
    let cached = changed["usage"]["cached_tokens"].as_u64().unwrap();
    assert!(
        cached > 0 && cached + TOKENS_PER_IMAGE < first_prompt,
        "a different image reused the cached one: {changed}"
    );
}

#[test]
fn every_bad_image_gets_its_sentence_and_the_engine_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let good = red();
    let text_file = write(dir.path(), "notes.png", b"just some text, not a picture\n");
    let truncated = write(dir.path(), "cut.ppm", &good[..good.len() / 2]);
    // A few bytes that claim a 16000×16000 canvas (256 megapixels): refused from the header,
    // never allocated.
    let bomb = write(
        dir.path(),
        "bomb.ppm",
        b"P6\n16000 16000\n255\n\x00\x00\x00",
    );
    let svg = write(
        dir.path(),
        "drawing.png",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    );
    let missing = dir.path().join("nowhere.png");
    let cases: Vec<(Value, &str, String)> = vec![
        (
            by_path(&text_file),
            "is not an image",
            text_file.display().to_string(),
        ),
        (
            by_path(&truncated),
            "damaged or cut-short",
            truncated.display().to_string(),
        ),
        (
            by_path(&bomb),
            "claims 16000×16000 pixels",
            bomb.display().to_string(),
        ),
        (
            by_path(&svg),
            "is an SVG drawing, which is not supported",
            svg.display().to_string(),
        ),
        (
            by_path(&missing),
            "does not exist",
            missing.display().to_string(),
        ),
        (
            json!({"type": "image", "data": "@@not base64@@"}),
            "is not valid base64",
            "image 1 of the request".into(),
        ),
        (
            json!({"type": "image", "path": "relative/cat.png"}),
            "is relative",
            "relative/cat.png".into(),
        ),
    ];
    let mut engine = engine_with(Some(test_projector(640).as_path()));
    engine.ready();
    for (i, (image, says, names)) in cases.into_iter().enumerate() {
        let id = format!("bad{i}");
        engine.send(with_image(&id, "A picture:", image, " It shows", 4));
        let (text, event) = engine.reply(&id);
        assert!(text.is_empty(), "{text:?}");
        assert_eq!(event["event"], "error", "{event}");
        assert_eq!(event["code"], "bad_image", "{event}");
        let message = event["message"].as_str().unwrap();
        assert!(
            message.contains(says) && message.contains(&names),
            "{message}"
        );
        assert!(message.contains(':'), "no fix named: {message}");
    }
    // Still serving, images included.
    let (_, done) = engine.ask(with_image(
        "ok",
        "A picture:",
        by_data(&good),
        " It shows",
        4,
    ));
    assert_eq!(done["usage"]["image_tokens"], TOKENS_PER_IMAGE);
}

#[test]
fn an_engine_without_a_projector_says_it_cannot_see_and_probe_says_it_could() {
    let mut engine = engine_with(None);
    let ready = engine.ready();
    assert_eq!(ready["vision"], Value::Null, "{ready}");
    engine.send(with_image(
        "i",
        "A picture:",
        by_data(&red()),
        " It shows",
        4,
    ));
    let (_, event) = engine.reply("i");
    assert_eq!(event["code"], "no_vision", "{event}");
    assert!(
        event["message"].as_str().unwrap().contains("--mmproj"),
        "{event}"
    );
    let (text, done) = engine.ask(text_only("t", "The capital of France is", 4));
    assert!(!text.is_empty(), "{done}");

    let out = Command::new(common::engine_bin())
        .arg("--probe")
        .output()
        .unwrap();
    let probe: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(probe["vision"], true, "{probe}");
}

#[test]
fn a_projector_that_does_not_fit_the_model_is_refused_at_load() {
    let wrong = test_projector(512);
    let mut engine = engine_with(Some(wrong.as_path()));
    let event = loop {
        let e = engine.next();
        if e["event"] != "loading" {
            break e;
        }
    };
    assert_eq!(event["event"], "error", "{event}");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains(&wrong.display().to_string())
            && message.contains("512-wide")
            && message.contains("640")
            && message.contains("use the projector made for this model"),
        "{message}"
    );
    assert_eq!(engine.exit_status().code(), Some(1));

    // A model file given as the projector: not a projector at all.
    let model = common::default_model();
    let mut engine = engine_with(Some(model.as_path()));
    let event = loop {
        let e = engine.next();
        if e["event"] != "loading" {
            break e;
        }
    };
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("is not a vision projector"), "{message}");
    assert_eq!(engine.exit_status().code(), Some(1));
}

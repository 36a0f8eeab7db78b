//! Images in messages, end to end on the real binaries: `run --image` on the real gemma-engine
//! with the real default model (text-only, so it refuses images with `no_vision`, which must
//! reach the user as the sentence naming the model), the history that stores each image (its
//! row, and the copy in the data folder) and shows and exports it, a continued conversation
//! that sends its images again, and every kind of bad image refused before anything is stored.
//!
//! Answer quality on images is not tested here: no vision weights can be had on these machines.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{stderr, stdout, Home};
use rusqlite::Connection;
use serde_json::Value;

const CANNOT_SEE: &str =
    "gemma3-270m cannot see images: register a vision model with --mmproj, see README";

/// A real PNG of `w`×`h` pixels (a gradient, so two sizes differ in content too).
fn png(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    let path = dir.join(name);
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, 200]))
        .save_with_format(&path, image::ImageFormat::Png)
        .unwrap();
    path
}

fn sha256(path: &Path) -> String {
    image_input::sha256_hex(&std::fs::read(path).unwrap())
}

fn db(home: &Home) -> Connection {
    Connection::open(home.path().join("data").join("history.db")).unwrap()
}

fn count(home: &Home, table: &str) -> i64 {
    let path = home.path().join("data").join("history.db");
    if !path.exists() {
        return 0;
    }
    db(home)
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// One sentence on stderr, a failure, no panic.
fn one_sentence(out: &Output) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure: {out:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    err
}

#[test]
fn an_image_for_a_model_that_cannot_see_is_refused_by_name_and_the_message_kept() {
    let home = common::home_with_model();
    let dir = tempfile::tempdir().unwrap();
    let cat = png(dir.path(), "cat.png", 32, 24);
    let out = home.run(&[
        "run",
        "--image",
        cat.to_str().unwrap(),
        "--max-tokens",
        "4",
        "What is in this picture?",
    ]);
    let err = one_sentence(&out);
    assert!(err.contains(CANNOT_SEE), "{err}");

    // The message is stored with its image: the file, what it is, and a copy named by content.
    let db = db(&home);
    let (content, path, copy, media, size, sha, w, h): (
        String,
        String,
        String,
        String,
        i64,
        String,
        u32,
        u32,
    ) = db
        .query_row(
            "SELECT m.content, i.path, i.copy, i.media_type, i.size, i.sha256, i.width, i.height
             FROM message_images i JOIN messages m ON m.id = i.message_id",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(content, "What is in this picture?");
    assert_eq!(PathBuf::from(&path), cat);
    assert_eq!((media.as_str(), w, h), ("image/png", 32, 24));
    assert_eq!(size as u64, std::fs::metadata(&cat).unwrap().len());
    assert_eq!(sha, sha256(&cat));
    let kept = home.path().join("data").join("images").join(&copy);
    assert_eq!(copy, format!("{sha}.png"));
    assert_eq!(std::fs::read(&kept).unwrap(), std::fs::read(&cat).unwrap());
    // The reply records why it failed, in the same words.
    let error: String = db
        .query_row(
            "SELECT error FROM messages WHERE role = 'assistant'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(error, CANNOT_SEE);

    // `history show` and the Markdown export reference the image; the JSON export carries it.
    let shown = stdout(&home.run(&["history", "show"]));
    assert!(
        shown.contains("image: cat.png, image/png, ") && shown.contains(", 32×24"),
        "{shown}"
    );
    assert!(
        shown.contains(&sha) && shown.contains(kept.to_str().unwrap()),
        "{shown}"
    );
    let md = stdout(&home.run(&["history", "export", "--format", "md"]));
    assert!(md.contains("**Image:** cat.png, image/png"), "{md}");
    assert!(
        md.contains(&format!("![cat.png](<{}>)", kept.display())),
        "{md}"
    );
    let jsonl = stdout(&home.run(&["history", "export", "--format", "jsonl"]));
    let user: Value = jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["role"] == "user")
        .unwrap();
    assert_eq!(user["images"][0]["sha256"], sha.as_str());

    // The same image again is kept once.
    let out = home.run(&[
        "run",
        "--image",
        cat.to_str().unwrap(),
        "--max-tokens",
        "4",
        "And now?",
    ]);
    assert!(one_sentence(&out).contains(CANNOT_SEE));
    let copies = std::fs::read_dir(home.path().join("data").join("images"))
        .unwrap()
        .count();
    assert_eq!(copies, 1);
    assert_eq!(count(&home, "message_images"), 2);

    // The refused message is kept, marked refused, and left out of what is sent from now on:
    // the conversation goes on with the same model, on text.
    let refused: i64 = db
        .query_row(
            "SELECT refused FROM messages WHERE content = 'And now?'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refused, 1);
    let out = home.run(&["run", "-c", "--max-tokens", "4", "Tell me more."]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (prompt_tokens, sent_alone): (i64, i64) = db
        .query_row(
            "SELECT r.prompt_tokens, (SELECT count(*) FROM messages WHERE conversation_id = r.conversation_id)
             FROM messages r WHERE r.role = 'assistant' ORDER BY r.id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // Four messages stored in that conversation (the refused question, its failed reply, the
    // follow-up and its answer), and a prompt that holds only the follow-up.
    assert_eq!(sent_alone, 4);
    assert!(prompt_tokens < 20, "prompt of {prompt_tokens} tokens");
}

#[test]
fn the_copy_can_be_turned_off_and_then_the_users_file_is_referenced() {
    let home = common::home_with_model();
    std::fs::create_dir_all(home.path().join("config")).unwrap();
    std::fs::write(
        home.path().join("config").join("config.toml"),
        "copy_images = false\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cat = png(dir.path(), "cat.png", 8, 8);
    let out = home.run(&[
        "run",
        "--image",
        cat.to_str().unwrap(),
        "--max-tokens",
        "2",
        "hi",
    ]);
    assert!(one_sentence(&out).contains(CANNOT_SEE));
    let copy: Option<String> = db(&home)
        .query_row("SELECT copy FROM message_images", [], |r| r.get(0))
        .unwrap();
    assert_eq!(copy, None);
    assert!(!home.path().join("data").join("images").exists());
    let md = stdout(&home.run(&["history", "export", "--format", "md"]));
    assert!(
        md.contains(&format!("![cat.png](<{}>)", cat.display())),
        "{md}"
    );
}

#[test]
fn bad_images_are_refused_by_name_before_anything_is_stored() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let whole = std::fs::read(png(d, "whole.png", 64, 64)).unwrap();
    std::fs::write(d.join("cut.png"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(d.join("notes.png"), "these are words, not pixels").unwrap();
    // A valid PNG header claiming 60000×60000 pixels (its CRC fixed up) with one pixel of data
    // behind it: refused from the header, never decoded.
    let mut bomb = std::fs::read(png(d, "one.png", 1, 1)).unwrap();
    bomb[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let crc = crc32fast::hash(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(d.join("bomb.png"), &bomb).unwrap();
    // An AVIF file's first bytes (an ISO media `ftyp` box).
    std::fs::write(
        d.join("photo.avif"),
        b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
    )
    .unwrap();
    let cases = [
        ("gone.png", "does not exist: check the path"),
        ("cut.png", "is a damaged or cut-short image"),
        ("notes.png", "is not an image"),
        ("bomb.png", "pixels, over the limit of 16384 per side"),
        ("photo.avif", "which is not supported"),
    ];
    for (name, says) in cases {
        let path = d.join(name);
        let out = home.run(&["run", "--image", path.to_str().unwrap(), "hi"]);
        let err = one_sentence(&out);
        assert!(
            err.contains(&format!("image {}", path.display())) && err.contains(says),
            "{name}: {err}"
        );
    }
    // Nothing stored, no conversation started.
    assert_eq!(count(&home, "messages"), 0);
    assert_eq!(count(&home, "conversations"), 0);
}

/// Both halves together: a vision model registered with its projector (the test projector:
/// Gemma 3 structure, random weights), `run --image` through the turn service, the engine adapter
/// and gemma-engine's multimodal path, and the history. Plumbing only: the prompt grows by exactly
/// one image's tokens, the same picture gives the same greedy reply, another picture another one,
/// and the stored message keeps its image.
#[test]
fn a_vision_model_sees_the_image_through_run_and_the_history_keeps_it() {
    let home = common::home_with_model();
    let projector = common::projector::test_projector(640);
    let model = common::default_model();
    let out = home.run(&[
        "models",
        "add",
        "seeing",
        model.to_str().unwrap(),
        "--mmproj",
        projector.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let one = png(dir.path(), "one.png", 64, 64);
    let other = dir.path().join("other.png");
    image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([255 - (x * 3) as u8, (x * y % 256) as u8, (y * 4) as u8])
    })
    .save_with_format(&other, image::ImageFormat::Png)
    .unwrap();

    let run = |images: &[&Path]| -> Value {
        let mut args = vec![
            "run",
            "--model",
            "seeing",
            "--json",
            "--temperature",
            "0",
            "--max-tokens",
            "12",
        ];
        for i in images {
            args.extend(["--image", i.to_str().unwrap()]);
        }
        args.push("What is in this picture?");
        let out = home.run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let plain = run(&[]);
    let seen = run(&[&one]);
    let again = run(&[&one]);
    let changed = run(&[&other]);
    let two = run(&[&one, &other]);
    let prompt = |v: &Value| v["usage"]["prompt_tokens"].as_u64().unwrap();
    let per_image = common::projector::TOKENS_PER_IMAGE;
    assert_eq!(prompt(&seen), prompt(&plain) + per_image, "{seen}");
    assert_eq!(prompt(&two), prompt(&plain) + 2 * per_image, "{two}");
    assert_eq!(seen["text"], again["text"]);
    assert_ne!(seen["text"], changed["text"], "{seen} / {changed}");

    // Each stored user message holds its images, in order, with their fingerprints.
    let db = db(&home);
    let mut stmt = db
        .prepare(
            "SELECT i.sha256 FROM message_images i JOIN messages m ON m.id = i.message_id
             ORDER BY m.id, i.position",
        )
        .unwrap();
    let shas: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        shas,
        [
            sha256(&one),
            sha256(&one),
            sha256(&other),
            sha256(&one),
            sha256(&other)
        ]
    );

    // Attached to a running server, `run` hands the turn (image included) to the server's
    // engine: the same prompt, the same greedy reply, served by the server.
    let mut server = common::server::Server::start(&home, &["--no-preload"]);
    server.wait_healthy();
    let attached = run(&[&one]);
    assert_eq!(prompt(&attached), prompt(&seen), "{attached}");
    assert_eq!(attached["text"], seen["text"]);
    let ps: Value = serde_json::from_str(&stdout(&home.run(&["ps", "--json"]))).unwrap();
    assert_eq!(ps[0]["pid"], server.pid(), "{ps}");
    assert_eq!(ps[0]["engines"][0]["requests_served"], 1, "{ps}");
    server.stop();
}

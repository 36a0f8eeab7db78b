//! The supervisor with real gemma-engine processes on the real Gemma 3 270M: crashes, batching,
//! queueing and cancellation, the pool policy, TTL unload, and `gemmactl ps`.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gemmactl::config::{Config, Paths};
use gemmactl::domain::{
    Completion, EngineDescription, FinishReason, GenerateRequest, Message, Role,
};
use gemmactl::engines::EngineError;
use gemmactl::models::ModelEntry;
use gemmactl::supervisor::{Phase, Reply, Supervisor, SupervisorError, SupervisorEvent};

/// Generous bound on any one wait, so a hang fails the test instead of stalling CI.
const WAIT: Duration = Duration::from_secs(120);

struct Setup {
    _dir: tempfile::TempDir,
    model: ModelEntry,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths {
        config_dir: dir.path().join("config"),
        data_dir: dir.path().join("data"),
        state_dir: dir.path().join("state"),
        cache_dir: dir.path().join("cache"),
    };
    let model_path = common::default_model();
    let model = gemmactl::models::resolve(&paths, model_path.to_str().unwrap())
        .expect("the default model resolves by path");
    Setup { _dir: dir, model }
}

fn config(parallel: u32) -> Config {
    let mut config = Config::default();
    config.engine.path = Some(common::engine_bin());
    config.engine.parallel = parallel;
    config.engine.context = 4096;
    config
}

fn named(model: &ModelEntry, name: &str) -> ModelEntry {
    ModelEntry {
        name: name.to_string(),
        ..model.clone()
    }
}

fn request(sup: &Supervisor, prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest::greedy_completion(sup.new_request_id(), prompt, max_tokens)
}

/// Everything a reply said, up to its end.
#[derive(Default)]
struct Heard {
    text: String,
    queued: Option<usize>,
    started: Option<EngineDescription>,
    finished: Option<Completion>,
    failed: Option<SupervisorError>,
}

async fn next_event(reply: &mut Reply) -> SupervisorEvent {
    tokio::time::timeout(WAIT, reply.next())
        .await
        .expect("no event in time (hang?)")
        .expect("stream ended without a final event")
}

async fn collect(reply: &mut Reply) -> Heard {
    let mut heard = Heard::default();
    loop {
        match next_event(reply).await {
            SupervisorEvent::Queued { position } => heard.queued = Some(position),
            SupervisorEvent::Started(d) => heard.started = Some(d),
            SupervisorEvent::Token(t) => heard.text.push_str(&t),
            SupervisorEvent::Finished(done) => {
                heard.finished = Some(done);
                return heard;
            }
            SupervisorEvent::Failed(e) => {
                heard.failed = Some(e);
                return heard;
            }
            SupervisorEvent::Loading { .. }
            | SupervisorEvent::Reloading { .. }
            | SupervisorEvent::PromptProgress { .. } => {}
        }
    }
}

/// Waits for the reply to be producing tokens; returns the engine it runs on.
async fn until_first_token(reply: &mut Reply) -> EngineDescription {
    let mut engine = None;
    loop {
        match next_event(reply).await {
            SupervisorEvent::Started(d) => engine = Some(d),
            SupervisorEvent::Token(_) => return engine.expect("Started comes before tokens"),
            SupervisorEvent::Failed(e) => panic!("request failed: {e}"),
            SupervisorEvent::Finished(f) => panic!("request finished early: {f:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_killed_mid_reply_twenty_times_fails_that_request_and_serves_the_next() {
    let s = setup();
    let sup = Supervisor::unpublished(config(1));
    for round in 0..20 {
        let mut reply = sup
            .submit(&s.model, request(&sup, "Once upon a time", 2000))
            .unwrap();
        let engine = until_first_token(&mut reply).await;
        let pid = engine.pid.expect("engine pid");
        // SAFETY: kill(2) only sends a signal to a process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let heard = collect(&mut reply).await;
        let err = heard
            .failed
            .unwrap_or_else(|| panic!("round {round}: killed request did not fail"));
        assert!(
            matches!(err, SupervisorError::Engine(EngineError::Died { .. })),
            "round {round}: {err:?}"
        );
        assert!(err.to_string().contains("SIGKILL"), "round {round}: {err}");

        let mut next = sup
            .submit(&s.model, request(&sup, "The capital of France is", 4))
            .unwrap();
        let heard = collect(&mut next).await;
        assert!(
            heard.failed.is_none(),
            "round {round}: next request failed: {:?}",
            heard.failed
        );
        assert_ne!(
            heard.started.unwrap().pid,
            Some(pid),
            "round {round}: a dead engine was reused"
        );
    }
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_requests_complete_with_their_own_outputs() {
    let s = setup();
    let sup = Supervisor::unpublished(config(8));
    let mut replies = Vec::new();
    for i in 0..16u32 {
        let n = 100 + 10 * i;
        let prompt = format!("{}, {}, {}, {},", n, n + 1, n + 2, n + 3);
        replies.push((
            n + 4,
            sup.submit(&s.model, request(&sup, &prompt, 6)).unwrap(),
        ));
    }
    let mut queued = 0;
    let mut pids = std::collections::HashSet::new();
    for (expect, reply) in &mut replies {
        let heard = collect(reply).await;
        let done = heard
            .finished
            .unwrap_or_else(|| panic!("request for {expect} failed: {:?}", heard.failed));
        assert_eq!(done.finish_reason, FinishReason::Length);
        assert!(
            heard.text.contains(&expect.to_string()),
            "continuation of the {expect} sequence is wrong: {:?}",
            heard.text
        );
        queued += heard.queued.is_some() as usize;
        pids.insert(heard.started.unwrap().pid);
    }
    assert_eq!(
        pids.len(),
        1,
        "one engine serves all sixteen (batched, not one engine each)"
    );
    assert_eq!(
        queued, 8,
        "eight requests beyond the engine's eight slots should have waited in the queue"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_and_a_running_request_frees_both_at_once() {
    let s = setup();
    let sup = Supervisor::unpublished(config(1));
    let mut running = sup
        .submit(&s.model, request(&sup, "Once upon a time", 2000))
        .unwrap();
    until_first_token(&mut running).await;
    let mut queued = sup
        .submit(&s.model, request(&sup, "Once upon a time", 2000))
        .unwrap();
    let mut third = sup
        .submit(&s.model, request(&sup, "The capital of France is", 3))
        .unwrap();
    assert!(matches!(
        next_event(&mut queued).await,
        SupervisorEvent::Queued { position: 0 }
    ));

    queued.cancel();
    let heard = tokio::time::timeout(Duration::from_secs(5), collect(&mut queued))
        .await
        .expect("queued cancel was not immediate");
    assert_eq!(
        heard.finished.unwrap().finish_reason,
        FinishReason::Cancelled
    );
    assert!(
        heard.started.is_none(),
        "a cancelled queued request must never reach the engine"
    );

    running.cancel();
    let heard = tokio::time::timeout(Duration::from_secs(5), collect(&mut running))
        .await
        .expect("running cancel was not prompt");
    assert_eq!(
        heard.finished.unwrap().finish_reason,
        FinishReason::Cancelled
    );

    // Both slots are free again: the third request runs to completion.
    let heard = collect(&mut third).await;
    assert_eq!(
        heard.finished.expect("third request").finish_reason,
        FinishReason::Length
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_at_once() {
    let s = setup();
    let mut cfg = config(1);
    cfg.supervisor.queue_length = 1;
    let sup = Supervisor::unpublished(cfg);
    let _a = sup
        .submit(&s.model, request(&sup, "Once upon a time", 50))
        .unwrap();
    let _b = sup
        .submit(&s.model, request(&sup, "Once upon a time", 50))
        .unwrap();
    let started = Instant::now();
    let err = match sup.submit(&s.model, request(&sup, "Once upon a time", 50)) {
        Err(e) => e,
        Ok(_) => panic!("third request accepted beyond slot + queue"),
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a full queue must be refused, not waited on"
    );
    assert!(matches!(err, SupervisorError::QueueFull { .. }), "{err:?}");
    assert!(err.to_string().contains("queue_length"), "{err}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_evicts_least_recently_used_idle_model_and_allows_the_same_file_twice() {
    let s = setup();
    let mut cfg = config(1);
    cfg.supervisor.max_models = 2;
    let sup = Supervisor::unpublished(cfg);
    let (a, b, c) = (
        named(&s.model, "a"),
        named(&s.model, "b"),
        named(&s.model, "c"),
    );
    // The same GGUF under two names: two resident engines.
    sup.preload(&a, |_| {}).await.unwrap();
    sup.preload(&b, |_| {}).await.unwrap();
    let (pa, pb) = (
        sup.engine_of("a").unwrap().pid,
        sup.engine_of("b").unwrap().pid,
    );
    assert_ne!(pa, pb);
    // Use a, so b is the least recently used.
    collect(
        &mut sup
            .submit(&a, request(&sup, "The capital of France is", 2))
            .unwrap(),
    )
    .await;
    sup.preload(&c, |_| {}).await.unwrap();
    assert!(
        sup.engine_of("b").is_none(),
        "b (least recently used) should have been stopped"
    );
    assert_eq!(
        sup.engine_of("a").unwrap().pid,
        pa,
        "a was used more recently and must stay"
    );
    assert!(sup.engine_of("c").is_some());
    let status = sup.status();
    let b_status = status.engines.iter().find(|e| e.model == "b").unwrap();
    assert_eq!(b_status.state, Phase::Stopped);
    assert!(
        b_status.reason.as_deref().unwrap_or("").contains("evicted"),
        "{b_status:?}"
    );

    // A serving engine is never evicted: with a busy, the pool refuses rather than stop it.
    let mut busy = sup
        .submit(&a, request(&sup, "Once upon a time", 2000))
        .unwrap();
    until_first_token(&mut busy).await;
    let mut busy_c = sup
        .submit(&c, request(&sup, "Once upon a time", 2000))
        .unwrap();
    until_first_token(&mut busy_c).await;
    let err = sup.preload(&b, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("all are serving"), "{err}");
    busy.cancel();
    busy_c.cancel();
    collect(&mut busy).await;
    collect(&mut busy_c).await;
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_unload_stops_an_idle_engine_and_refuses_a_busy_one() {
    let s = setup();
    let sup = Supervisor::unpublished(config(1));
    let mut busy = sup
        .submit(&s.model, request(&sup, "Once upon a time", 2000))
        .unwrap();
    until_first_token(&mut busy).await;
    let err = tokio::time::timeout(WAIT, sup.unload(&s.model.name))
        .await
        .expect("unload hung")
        .unwrap_err();
    assert!(matches!(err, SupervisorError::Busy { .. }), "{err:?}");
    busy.cancel();
    collect(&mut busy).await;
    // The reply has ended: its slot is free at once, so unload succeeds right away.
    assert!(tokio::time::timeout(WAIT, sup.unload(&s.model.name))
        .await
        .expect("unload hung")
        .unwrap());
    assert!(sup.engine_of(&s.model.name).is_none());
    assert!(!tokio::time::timeout(WAIT, sup.unload("never-loaded"))
        .await
        .expect("unload hung")
        .unwrap());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_engines_stop_after_the_ttl() {
    let s = setup();
    let mut cfg = config(1);
    cfg.supervisor.idle_ttl_secs = 1;
    let sup = Supervisor::unpublished(cfg);
    collect(
        &mut sup
            .submit(&s.model, request(&sup, "The capital of France is", 2))
            .unwrap(),
    )
    .await;
    let pid = sup.engine_of(&s.model.name).expect("loaded").pid.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sup.engine_of(&s.model.name).is_some() {
        assert!(
            Instant::now() < deadline,
            "engine still loaded long after its 1 s TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid) {
        assert!(
            Instant::now() < deadline,
            "TTL-stopped engine process {pid} still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next request loads it again.
    let heard = collect(
        &mut sup
            .submit(&s.model, request(&sup, "The capital of France is", 2))
            .unwrap(),
    )
    .await;
    assert!(heard.finished.is_some());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_refusal_is_clear() {
    let s = setup();
    let mut cfg = config(1);
    cfg.supervisor.memory_budget_mib = 100;
    let sup = Supervisor::unpublished(cfg);
    let err = sup.preload(&s.model, |_| {}).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SupervisorError::Pool(_)), "{err:?}");
    assert!(
        text.contains("memory budget of 100 MiB") && text.contains("memory_budget_mib"),
        "{text}"
    );
    assert!(sup.engine_of(&s.model.name).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_keeps_failing_to_start_is_marked_failed() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let broken: PathBuf = dir.path().join("broken.gguf");
    let bytes = std::fs::read(&s.model.path).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let model = ModelEntry {
        name: "broken".into(),
        path: broken,
        ..s.model.clone()
    };
    let mut cfg = config(1);
    cfg.supervisor.max_start_failures = 3;
    cfg.supervisor.restart_backoff_ms = 50;
    let sup = Supervisor::unpublished(cfg);
    let mut errors = Vec::new();
    for _ in 0..3 {
        let heard = collect(&mut sup.submit(&model, request(&sup, "hi", 2)).unwrap()).await;
        errors.push(heard.failed.expect("a broken model cannot serve"));
    }
    assert!(errors[0].to_string().contains("truncated"), "{}", errors[0]);
    assert!(
        matches!(errors[2], SupervisorError::ModelFailed { attempts: 3, .. }),
        "{:?}",
        errors[2]
    );
    // No more retries: refused at once, with the reason.
    let err = match sup.submit(&model, request(&sup, "hi", 2)) {
        Err(e) => e,
        Ok(_) => panic!("a failed model was retried"),
    };
    assert!(
        err.to_string().contains("failed to start 3 times")
            && err.to_string().contains("truncated"),
        "{err}"
    );
    let status = sup.status();
    assert_eq!(status.engines[0].state, Phase::Failed);
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn ps_shows_a_running_engine_and_forgets_it_when_gemmactl_is_gone() {
    let home = common::Home::new();
    let model = common::default_model();
    let mut child = home
        .cmd()
        .args([
            "run",
            "--model",
            model.to_str().unwrap(),
            "--max-tokens",
            "3000",
            "--temperature",
            "0",
            "Once upon a time",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Read;
    let mut first = [0u8; 1];
    assert_eq!(child.stdout.as_mut().unwrap().read(&mut first).unwrap(), 1);

    let out = home.run(&["ps", "--json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let process = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == child.id())
        .unwrap_or_else(|| panic!("run's process not in ps: {list}"));
    let engine = &process["engines"][0];
    assert_eq!(engine["state"], "busy", "{engine}");
    assert_eq!(engine["backend"], "CPU");
    assert_eq!(engine["engine"], "gemma-engine");
    assert!(
        engine["pid"].as_u64().is_some() && engine["rss_bytes"].as_u64().unwrap() > 100 << 20,
        "{engine}"
    );
    let table = common::stdout(&home.run(&["ps"]));
    assert!(table.contains("busy") && table.contains("CPU"), "{table}");

    child.kill().unwrap();
    child.wait().unwrap();
    let out = home.run(&["ps", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["pid"] != child.id()),
        "dead process still listed: {list}"
    );
    assert!(common::stdout(&home.run(&["ps"])).contains("no engines running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_loads_the_next_model_while_the_old_one_serves_and_continues_the_conversation() {
    let s = setup();
    let sup = Supervisor::unpublished(config(1));
    let (old, new) = (named(&s.model, "old"), named(&s.model, "new"));
    let mut first = sup
        .submit(
            &old,
            request(
                &sup,
                "Here is a list of the planets of the solar system:",
                40,
            ),
        )
        .unwrap();
    until_first_token(&mut first).await;
    // Load the next model while the old one is still generating; count progress reports.
    let mut progress = Vec::new();
    let loaded = sup.preload(&new, |p| progress.push(p)).await.unwrap();
    assert!(
        !progress.is_empty() && progress.iter().any(|p| *p >= 1.0),
        "no load progress reported: {progress:?}"
    );
    let heard = collect(&mut first).await;
    assert_eq!(
        heard
            .finished
            .expect("old model kept serving during the load")
            .finish_reason,
        FinishReason::Length
    );

    // The conversation moves: the caller sends the whole history to the new model.
    let conversation = vec![
        Message::new(
            Role::User,
            "Here is a list of the planets of the solar system:",
        ),
        Message::new(Role::Assistant, heard.text.clone()),
        Message::new(Role::User, " The largest of them is"),
    ];
    let req = GenerateRequest {
        messages: conversation,
        ..request(&sup, "", 6)
    };
    let heard = collect(&mut sup.submit(&new, req).unwrap()).await;
    let done = heard.finished.expect("new model answered");
    assert_eq!(
        heard.started.unwrap().pid,
        loaded.pid,
        "served by the preloaded engine"
    );
    assert!(
        done.usage.prompt_tokens > 20,
        "the whole conversation was sent: {done:?}"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_change_reloads_with_a_stated_reason() {
    let s = setup();
    let sup = Supervisor::unpublished(config(1));
    collect(
        &mut sup
            .submit(&s.model, request(&sup, "The capital of France is", 2))
            .unwrap(),
    )
    .await;
    let before = sup.engine_of(&s.model.name).unwrap();
    let reason = sup
        .set_options(
            &s.model,
            gemmactl::supervisor::LoadOptions {
                context: 2048,
                parallel: 1,
                threads: None,
                kv_cache_type: Default::default(),
                flash_attention: Default::default(),
            },
        )
        .expect("a loaded engine with another context needs a reload, and says so");
    assert!(reason.contains("context 4096 → 2048"), "{reason}");
    let mut reply = sup
        .submit(&s.model, request(&sup, "The capital of France is", 2))
        .unwrap();
    let mut reloading = None;
    loop {
        match next_event(&mut reply).await {
            SupervisorEvent::Reloading { reason } => reloading = Some(reason),
            SupervisorEvent::Finished(_) => break,
            SupervisorEvent::Failed(e) => panic!("{e}"),
            _ => {}
        }
    }
    assert!(reloading
        .expect("the reload was announced")
        .contains("context 4096 → 2048"));
    let after = sup.engine_of(&s.model.name).unwrap();
    assert_ne!(after.pid, before.pid);
    assert_eq!(after.context, 2048);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_count_change_resizes_the_queue_with_the_reload() {
    let s = setup();
    let sup = Supervisor::unpublished(config(1));
    let slots = |parallel| gemmactl::supervisor::LoadOptions {
        context: 4096,
        parallel,
        threads: None,
        kv_cache_type: Default::default(),
        flash_attention: Default::default(),
    };
    collect(
        &mut sup
            .submit(&s.model, request(&sup, "The capital of France is", 2))
            .unwrap(),
    )
    .await;

    // One slot → two: after the reload, two long replies run side by side, neither queued.
    let reason = sup
        .set_options(&s.model, slots(2))
        .expect("a reload is announced");
    assert!(reason.contains("parallel 1 → 2"), "{reason}");
    let mut a = sup
        .submit(&s.model, request(&sup, "Once upon a time", 2000))
        .unwrap();
    let engine = until_first_token(&mut a).await;
    assert_eq!(engine.parallel, 2);
    let mut b = sup
        .submit(&s.model, request(&sup, "Once upon a time", 2000))
        .unwrap();
    loop {
        match next_event(&mut b).await {
            SupervisorEvent::Queued { position } => {
                panic!("queued at {position} though a second slot was added")
            }
            SupervisorEvent::Token(_) => break,
            SupervisorEvent::Failed(e) => panic!("{e}"),
            SupervisorEvent::Finished(f) => panic!("finished early: {f:?}"),
            _ => {}
        }
    }
    a.cancel();
    b.cancel();
    collect(&mut a).await;
    collect(&mut b).await;

    // Two slots → one: after the next reload a second long reply waits its turn again.
    sup.set_options(&s.model, slots(1))
        .expect("a reload is announced");
    collect(
        &mut sup
            .submit(&s.model, request(&sup, "The capital of France is", 2))
            .unwrap(),
    )
    .await;
    assert_eq!(sup.engine_of(&s.model.name).unwrap().parallel, 1);
    let mut c = sup
        .submit(&s.model, request(&sup, "Once upon a time", 2000))
        .unwrap();
    until_first_token(&mut c).await;
    let mut d = sup
        .submit(&s.model, request(&sup, "The capital of France is", 2))
        .unwrap();
    assert!(matches!(
        next_event(&mut d).await,
        SupervisorEvent::Queued { position: 0 }
    ));
    // And it really waits: the retired slot lets nothing through while the first reply runs.
    if let Ok(event) = tokio::time::timeout(Duration::from_secs(3), next_event(&mut d)).await {
        panic!("a queued request moved on while the only slot was busy: {event:?}");
    }
    c.cancel();
    let heard = collect(&mut d).await;
    assert!(
        heard.finished.is_some(),
        "the queued request ran once the slot was free"
    );
    sup.shutdown().await;
}

/// A model registered with a vision projector is started with it: a projector that fits
/// serves, one made for another embedding width fails the start with gemma-engine's sentence
/// (which only `--mmproj` can have produced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_models_projector_is_passed_to_its_engine() {
    let s = setup();
    let sup = Supervisor::unpublished(config(1));
    let seeing = ModelEntry {
        name: "seeing".into(),
        mmproj: Some(common::projector::test_projector(640)),
        ..s.model.clone()
    };
    let heard = collect(
        &mut sup
            .submit(&seeing, request(&sup, "The capital of France is", 4))
            .unwrap(),
    )
    .await;
    assert!(
        heard.finished.is_some(),
        "{:?}",
        heard.failed.map(|e| e.to_string())
    );

    let wrong = common::projector::test_projector(512);
    let mismatched = ModelEntry {
        name: "mismatched".into(),
        mmproj: Some(wrong.clone()),
        ..s.model.clone()
    };
    let heard = collect(&mut sup.submit(&mismatched, request(&sup, "hi", 2)).unwrap()).await;
    let failed = heard
        .failed
        .expect("a projector of the wrong width cannot load")
        .to_string();
    assert!(
        failed.contains(&wrong.display().to_string()) && failed.contains("512-wide"),
        "{failed}"
    );
    sup.shutdown().await;
}

/// The projector is loaded whole beside the model, so the pool's estimate counts its file.
#[test]
fn a_projector_counts_in_the_memory_estimate() {
    use gemmactl::supervisor::{Launcher, LoadOptions, ProcessLauncher};
    let s = setup();
    let launcher = ProcessLauncher::new(config(1));
    let options = LoadOptions::from_config(&config(1));
    let projector = common::projector::test_projector(640);
    let plain = launcher.needs(&s.model, &options);
    let seeing = ModelEntry {
        mmproj: Some(projector.clone()),
        ..s.model.clone()
    };
    let with = launcher.needs(&seeing, &options);
    assert_eq!(
        with.estimate.weights - plain.estimate.weights,
        std::fs::metadata(&projector).unwrap().len()
    );
    assert_eq!(with.estimate.kv_cache, plain.estimate.kv_cache);
}

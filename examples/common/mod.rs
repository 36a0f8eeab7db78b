//! What the benchmark examples share: where cargo put the binaries, and the statistics.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `target/<profile>/`: examples live in its `examples/` folder (cargo gives examples no
/// `CARGO_BIN_EXE_*`), gemmactl and gemma-engine in it.
pub(crate) fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the example's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("examples are built under target/<profile>/examples")
        .to_path_buf()
}

/// The median of `v` (the mean of the middle two for an even count).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Milliseconds, as the tables print them.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `bench` on a multi-threaded runtime in a throw-away gemmactl home, with the engine
/// built beside gemmactl (unless `GEMMACTL_ENGINE` names another); both are set before any
/// thread starts, for the benchmark's own supervisor and the gemmactl children alike.
pub(crate) fn run_in_throwaway_home<F: std::future::Future<Output = ()>>(
    bench: impl FnOnce(PathBuf) -> F,
) {
    let home = tempfile::tempdir().expect("a temporary folder");
    std::env::set_var("GEMMACTL_HOME", home.path());
    if std::env::var_os("GEMMACTL_ENGINE").is_none() {
        std::env::set_var("GEMMACTL_ENGINE", profile_dir().join("gemma-engine"));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(bench(home.path().to_path_buf()));
}

/// The value of `--NAME N` on the command line, or `default`.
pub(crate) fn option(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| *a == format!("--{name}"))
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("--{name} takes a number"))
        })
        .unwrap_or(default)
}

/// Sends `text` on `thread` and waits for the turn to end: milliseconds from the send to the
/// first text, and the engine's report. (Not every benchmark times turns.)
#[allow(dead_code)]
pub(crate) async fn timed_turn(
    thread: &mut gemmactl::chat::Thread,
    text: &str,
) -> (f64, gemmactl::domain::Completion) {
    use gemmactl::chat::TurnEvent;
    let sent = std::time::Instant::now();
    let mut turn = thread.send(text).expect("the turn starts");
    let mut first = None;
    while let Some(event) = turn.next().await {
        match event {
            TurnEvent::Token(text) if first.is_none() && !text.is_empty() => {
                first = Some(ms(sent.elapsed()));
            }
            TurnEvent::Ended(end) => {
                let done = end.result.expect("the turn finished");
                return (first.expect("the reply had text"), done);
            }
            _ => {}
        }
    }
    panic!("the turn ended without its Ended event")
}

/// A new conversation on the shell's path (the turn service's `Thread`), greedy, at most
/// `max_tokens` per reply. (Not every benchmark holds conversations.)
#[allow(dead_code)]
pub(crate) fn greedy_thread(
    service: &gemmactl::chat::TurnService,
    model: &gemmactl::models::ModelEntry,
    max_tokens: u32,
) -> gemmactl::chat::Thread {
    let params = gemmactl::domain::SamplingParams {
        max_tokens: Some(max_tokens),
        temperature: 0.0,
        ..gemmactl::domain::SamplingParams::default()
    };
    gemmactl::chat::Thread::new(
        service,
        model.clone(),
        None,
        params,
        gemmactl::chat::PromptStyle::Conversation,
    )
}

//! What a soak records — memory and open file descriptors after every wave, how each request
//! ended, the engines it killed, the zombies and orphans it found — and the rule it is judged by.
//!
//! The rule (issue 19): the mean resident memory over the last `window` requests is within
//! [`TOLERANCE_PCT`] of the mean over the first `window` (2,000 requests: 500 and 500), for
//! gemmactl and for the engines; open descriptors after the run are exactly those after the
//! warm-up (a leaked descriptor is one more, not noise); no zombie and no orphan; and every
//! request ended the way its plan allows.

use serde::{Deserialize, Serialize};

use super::plan::Fate;

/// How far the last window's mean memory may sit from the first window's, in per cent.
pub(in crate::commands::bench) const TOLERANCE_PCT: f64 = 5.0;

/// The requests each memory window covers at most (the 500 of 2,000).
const WINDOW: usize = 500;

/// Tokens a reply may still grow after its cancel was sent and yet count as having ended by
/// itself in the meantime: the cancel is honoured between two decode steps, and the engine
/// decodes every slot in one step.
const CANCEL_SLACK: u32 = 4;

/// Everything one soak measured, stored in the results file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(in crate::commands::bench) struct Series {
    /// Requests sent (warm-up and cool-down not counted).
    pub requests: usize,
    /// Requests sent together (and the engine's decode slots).
    pub concurrency: usize,
    /// The seed of the request mix.
    pub seed: u64,
    /// After the warm-up wave, before the first counted request.
    pub warm_up: Sample,
    /// After the cool-down wave that follows the last request (the same wave as the warm-up).
    pub end: Sample,
    /// One per wave, after it ended.
    pub samples: Vec<Sample>,
    /// One per request, in order.
    pub records: Vec<Record>,
    /// The engines killed.
    pub kills: Vec<Kill>,
    /// Every engine pid seen during the run.
    pub engine_pids: Vec<u32>,
    /// Engine starts, the first load included (1 + one restart per kill when all is well).
    pub engine_starts: u64,
    /// Children of gemmactl left unreaped after the last request, while the supervisor still ran.
    pub zombies_running: Vec<u32>,
    /// Children of gemmactl left unreaped after the supervisor shut down.
    pub zombies_after_shutdown: Vec<u32>,
    /// Engines (or any child of gemmactl) still running after the supervisor shut down.
    pub orphans: Vec<u32>,
    /// The judgement.
    pub verdict: Verdict,
}

/// Memory and descriptors at one moment, with no request running.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(in crate::commands::bench) struct Sample {
    /// Requests ended so far.
    pub request: usize,
    /// Seconds since the soak started.
    pub elapsed_s: f64,
    /// gemmactl's resident memory (the process running the supervisor).
    pub gemmactl_rss_mib: f64,
    /// gemmactl's open file descriptors.
    pub gemmactl_fds: u32,
    /// The engines' resident memory, summed; `None` when none runs (killed, not yet restarted).
    pub engine_rss_mib: Option<f64>,
    /// The engines' open file descriptors, summed.
    pub engine_fds: Option<u32>,
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(in crate::commands::bench) enum Ended {
    /// The model ended its reply.
    Stop,
    /// It reached its token limit.
    Length,
    /// The context filled up.
    Context,
    /// Cancelled.
    Cancelled,
    /// Its engine died of SIGKILL.
    Killed,
    /// Any other failure.
    Error,
}

/// One request: what was planned and what happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(in crate::commands::bench) struct Record {
    /// Its number, from 1.
    pub number: usize,
    /// What was done to it.
    pub fate: Fate,
    pub prompt_words: usize,
    pub max_tokens: u32,
    /// How it ended.
    pub ended: Ended,
    /// Tokens generated (the engine's count, or the tokens received when it failed).
    pub tokens: u32,
    /// Tokens received when the cancel was sent, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<u32>,
    /// The failure's sentence, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the ending is one its plan allows.
    pub expected: bool,
}

/// An engine the soak killed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(in crate::commands::bench) struct Kill {
    /// The request it was killed under.
    pub request: usize,
    /// The engine's pid, as the supervisor reported it.
    pub pid: u32,
}

/// The judgement of one soak.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(in crate::commands::bench) struct Verdict {
    /// Requests in each memory window.
    pub window: usize,
    /// [`TOLERANCE_PCT`].
    pub tolerance_pct: f64,
    /// gemmactl's mean resident memory over the first and the last window, and last ÷ first.
    pub gemmactl_rss_first_mib: f64,
    pub gemmactl_rss_last_mib: f64,
    pub gemmactl_rss_ratio: f64,
    /// The same for the engines (`None` when no engine was measured in a window).
    pub engine_rss_first_mib: Option<f64>,
    pub engine_rss_last_mib: Option<f64>,
    pub engine_rss_ratio: Option<f64>,
    /// Whether the descriptors at the end are those after the warm-up.
    pub gemmactl_fds_equal: bool,
    pub engine_fds_equal: bool,
    /// Requests that ended with a reply, cancelled, or with their engine killed.
    pub replies: usize,
    pub cancelled: usize,
    pub killed: usize,
    /// Requests that ended in a way their plan does not allow.
    pub unexpected: usize,
    /// Whether every part of the rule held.
    pub passed: bool,
    /// A sentence for each part that did not.
    pub failures: Vec<String>,
}

/// Whether a request's ending is one its plan allows: a reply ends by itself; a cancelled one
/// ends cancelled, or by itself before the cancel took hold; a request whose engine was killed
/// ends killed, and so may any other request that was on that engine in the same wave.
pub(super) fn expected(
    fate: Fate,
    ended: Ended,
    tokens: u32,
    cancelled_at: Option<u32>,
    wave_had_kill: bool,
) -> bool {
    if ended == Ended::Killed {
        return wave_had_kill;
    }
    match fate {
        Fate::Reply => matches!(ended, Ended::Stop | Ended::Length),
        Fate::Cancel { .. } => match (ended, cancelled_at) {
            (Ended::Cancelled, Some(_)) => true,
            (Ended::Stop, None) => true,
            (Ended::Stop, Some(at)) => tokens <= at + CANCEL_SLACK,
            _ => false,
        },
        Fate::Kill => false,
    }
}

/// The memory window for a soak of `requests`: 500, or a quarter of a shorter run.
pub(in crate::commands::bench) fn window(requests: usize) -> usize {
    WINDOW.min(requests / 4)
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The samples of the first and the last window of a soak of `requests`.
pub(in crate::commands::bench) fn windows(
    samples: &[Sample],
    requests: usize,
) -> (Vec<&Sample>, Vec<&Sample>) {
    let w = window(requests);
    let first = samples.iter().filter(|s| s.request <= w).collect();
    let last = samples
        .iter()
        .filter(|s| s.request > requests.saturating_sub(w))
        .collect();
    (first, last)
}

/// What the soak found, as the rule judges it.
pub(super) struct Found<'a> {
    pub requests: usize,
    pub samples: &'a [Sample],
    pub warm_up: &'a Sample,
    pub end: &'a Sample,
    pub records: &'a [Record],
    pub zombies: usize,
    pub orphans: usize,
}

/// Judges a soak by the rule above.
pub(super) fn judge(found: &Found<'_>) -> Verdict {
    let (first, last) = windows(found.samples, found.requests);
    let mut failures = Vec::new();
    let within = |ratio: f64| (ratio - 1.0).abs() * 100.0 <= TOLERANCE_PCT;

    let g_first = mean(first.iter().map(|s| s.gemmactl_rss_mib)).unwrap_or(0.0);
    let g_last = mean(last.iter().map(|s| s.gemmactl_rss_mib)).unwrap_or(0.0);
    let g_ratio = if g_first > 0.0 { g_last / g_first } else { 0.0 };
    if !within(g_ratio) {
        failures.push(format!(
            "gemmactl's memory over the last requests is {g_ratio:.3}x that over the first, beyond {TOLERANCE_PCT} %"
        ));
    }
    let e_first = mean(first.iter().filter_map(|s| s.engine_rss_mib));
    let e_last = mean(last.iter().filter_map(|s| s.engine_rss_mib));
    let e_ratio = match (e_first, e_last) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    match e_ratio {
        Some(r) if within(r) => {}
        Some(r) => failures.push(format!(
            "the engines' memory over the last requests is {r:.3}x that over the first, beyond {TOLERANCE_PCT} %"
        )),
        None => failures.push("no engine memory was measured in the first or the last window".into()),
    }
    let gemmactl_fds_equal = found.end.gemmactl_fds == found.warm_up.gemmactl_fds;
    if !gemmactl_fds_equal {
        failures.push(format!(
            "gemmactl holds {} open file descriptors at the end and held {} after the warm-up",
            found.end.gemmactl_fds, found.warm_up.gemmactl_fds
        ));
    }
    let engine_fds_equal =
        found.end.engine_fds.is_some() && found.end.engine_fds == found.warm_up.engine_fds;
    if !engine_fds_equal {
        failures.push(format!(
            "the engines hold {} open file descriptors at the end and held {} after the warm-up",
            shown(found.end.engine_fds),
            shown(found.warm_up.engine_fds)
        ));
    }
    let count = |f: &dyn Fn(&Record) -> bool| found.records.iter().filter(|r| f(r)).count();
    let unexpected = count(&|r| !r.expected);
    if unexpected > 0 {
        failures.push(format!(
            "{unexpected} requests ended in a way their plan does not allow (see `records` in the results file)"
        ));
    }
    if found.zombies > 0 {
        failures.push(format!("{} zombie processes were left", found.zombies));
    }
    if found.orphans > 0 {
        failures.push(format!(
            "{} engine processes outlived the supervisor",
            found.orphans
        ));
    }
    Verdict {
        window: window(found.requests),
        tolerance_pct: TOLERANCE_PCT,
        gemmactl_rss_first_mib: g_first,
        gemmactl_rss_last_mib: g_last,
        gemmactl_rss_ratio: g_ratio,
        engine_rss_first_mib: e_first,
        engine_rss_last_mib: e_last,
        engine_rss_ratio: e_ratio,
        gemmactl_fds_equal,
        engine_fds_equal,
        replies: count(&|r| r.expected && matches!(r.ended, Ended::Stop | Ended::Length)),
        cancelled: count(&|r| r.ended == Ended::Cancelled),
        killed: count(&|r| r.ended == Ended::Killed),
        unexpected,
        passed: failures.is_empty(),
        failures,
    }
}

fn shown(fds: Option<u32>) -> String {
    fds.map_or_else(|| "none (no engine ran)".to_string(), |n| n.to_string())
}

#[cfg(test)]
pub(in crate::commands::bench) mod tests {
    use super::*;

    /// A sample at `request` with these memory figures and 12 + 9 descriptors.
    pub(in crate::commands::bench) fn sample(request: usize, gemmactl: f64, engine: f64) -> Sample {
        Sample {
            request,
            elapsed_s: request as f64 * 0.5,
            gemmactl_rss_mib: gemmactl,
            gemmactl_fds: 12,
            engine_rss_mib: Some(engine),
            engine_fds: Some(9),
        }
    }

    fn record(number: usize, ended: Ended, expected: bool) -> Record {
        Record {
            number,
            fate: Fate::Reply,
            prompt_words: 3,
            max_tokens: 8,
            ended,
            tokens: 8,
            cancelled_at: None,
            error: None,
            expected,
        }
    }

    /// 2,000 requests sampled every 4, memory growing linearly by `growth` over the run.
    fn run(growth: f64) -> Vec<Sample> {
        (1..=500)
            .map(|w| {
                let f = 1.0 + growth * w as f64 / 500.0;
                sample(w * 4, 30.0 * f, 400.0)
            })
            .collect()
    }

    fn judged(samples: &[Sample], end: &Sample, records: &[Record], z: usize, o: usize) -> Verdict {
        judge(&Found {
            requests: 2000,
            samples,
            warm_up: &sample(0, 30.0, 400.0),
            end,
            records,
            zombies: z,
            orphans: o,
        })
    }

    #[test]
    fn the_windows_are_the_first_and_last_five_hundred_or_a_quarter() {
        assert_eq!(window(2000), 500);
        assert_eq!(window(60), 15);
        let samples = run(0.0);
        let (first, last) = windows(&samples, 2000);
        assert_eq!(first.len(), 125);
        assert_eq!(last.len(), 125);
        assert_eq!(first.last().unwrap().request, 500);
        assert_eq!(last.first().unwrap().request, 1504);
    }

    #[test]
    fn flat_memory_passes_and_growth_beyond_five_per_cent_fails() {
        let end = sample(2000, 30.0, 400.0);
        let ok = judged(&run(0.0), &end, &[record(1, Ended::Stop, true)], 0, 0);
        assert!(ok.passed, "{:?}", ok.failures);
        assert_eq!((ok.replies, ok.unexpected), (1, 0));
        assert!((ok.gemmactl_rss_ratio - 1.0).abs() < 1e-9);
        // Growing 4 % between the window means passes; 8 % does not.
        let small = judged(&run(0.053), &end, &[], 0, 0);
        assert!(small.passed, "{:?}", small.failures);
        let leak = judged(&run(0.106), &end, &[], 0, 0);
        assert!(!leak.passed);
        assert!(
            leak.failures[0].contains("gemmactl's memory"),
            "{:?}",
            leak.failures
        );
        assert!(leak.gemmactl_rss_ratio > 1.05);
    }

    #[test]
    fn one_descriptor_more_a_zombie_an_orphan_or_an_unexpected_end_fails() {
        let samples = run(0.0);
        let mut end = sample(2000, 30.0, 400.0);
        end.gemmactl_fds += 1;
        let v = judged(&samples, &end, &[], 0, 0);
        assert!(!v.passed && !v.gemmactl_fds_equal && v.engine_fds_equal);
        let mut end = sample(2000, 30.0, 400.0);
        end.engine_fds = None;
        assert!(!judged(&samples, &end, &[], 0, 0).engine_fds_equal);
        let end = sample(2000, 30.0, 400.0);
        assert!(!judged(&samples, &end, &[], 1, 0).passed);
        assert!(!judged(&samples, &end, &[], 0, 1).passed);
        let v = judged(&samples, &end, &[record(1, Ended::Error, false)], 0, 0);
        assert_eq!(v.unexpected, 1);
        assert!(!v.passed);
    }

    #[test]
    fn each_fate_allows_its_own_endings() {
        use Ended::*;
        let cancel = Fate::Cancel { after_tokens: 1 };
        assert!(expected(Fate::Reply, Stop, 3, None, false));
        assert!(expected(Fate::Reply, Length, 8, None, false));
        assert!(!expected(Fate::Reply, Cancelled, 0, None, false));
        assert!(!expected(Fate::Reply, Error, 0, None, true));
        // Killed along with the request whose engine was killed; never otherwise.
        assert!(expected(Fate::Reply, Killed, 2, None, true));
        assert!(!expected(Fate::Reply, Killed, 2, None, false));
        assert!(expected(Fate::Kill, Killed, 1, None, true));
        assert!(!expected(Fate::Kill, Stop, 40, None, true));
        assert!(expected(cancel, Cancelled, 1, Some(1), false));
        // Ended by itself before its cancel point, or in the steps the cancel was in flight.
        assert!(expected(cancel, Stop, 0, None, false));
        assert!(expected(cancel, Stop, 3, Some(1), false));
        // A cancel that was not honoured.
        assert!(!expected(cancel, Stop, 40, Some(1), false));
        assert!(!expected(cancel, Length, 256, Some(1), false));
    }
}

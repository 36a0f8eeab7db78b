//! `gemmactl bench compare OLD.json NEW.json`: for every figure both runs measured, whether it
//! moved beyond the noise those runs themselves showed, and in which direction.
//!
//! The rule: a figure **moved** when the difference of its medians is larger than
//! [`NOISE_MADS`] times the larger of the two runs' median absolute deviations (MAD) *and* larger
//! than `--threshold` per cent of the old median. The first condition asks that the change stand
//! out of the round-to-round scatter measured in these very runs (for normal noise 3 MAD ≈ 2
//! standard deviations of one round, and a median of several rounds scatters less than one round,
//! so the test leans towards "same"); MAD rather than the standard deviation because one round
//! spoiled by a busy machine should not widen the band. The second is the size that matters to
//! people: on a shared machine whose speed drifts between minutes, a run can be tight and still
//! sit a few per cent off the last one, and that is not a regression of the code. A moved figure
//! is better or worse by its direction (tokens/s: higher is better; ms and MiB: lower is better).
//!
//! Exit status: 0 when nothing got worse, 1 when any figure regressed, 2 when a file is not bench
//! results (one sentence says why).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::results::{self, Better, Figure, Results};
use super::stats::{mad, median};
use crate::ui::table;

/// How many median absolute deviations of the noisier run a change must exceed to count.
pub(super) const NOISE_MADS: f64 = 3.0;

/// `gemmactl bench compare`'s arguments.
#[derive(Args, Debug)]
pub(super) struct CompareArgs {
    /// The earlier results file: the baseline (e.g. a run on main)
    #[arg(value_name = "OLD.json")]
    old: PathBuf,
    /// The later results file: the change being checked
    #[arg(value_name = "NEW.json")]
    new: PathBuf,
    /// Smallest change, in per cent of the old median, that counts as a move (a regression when
    /// it is for the worse)
    #[arg(long, default_value_t = 5.0, value_name = "PCT", value_parser = parse_percent)]
    threshold: f64,
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "`{text}` is not a percentage: give a number of 0 or more, e.g. 5"
        )),
    }
}

/// What one figure did between the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Moved in its better direction.
    Better,
    /// Moved in its worse direction: a regression.
    Worse,
    /// Within the noise or the threshold.
    Same,
}

/// One line of the comparison.
#[derive(Debug, Clone)]
pub(super) struct Row {
    /// The figure's label (`decode, direct`).
    pub label: String,
    /// Its unit.
    pub unit: String,
    /// The old and new medians.
    pub old: f64,
    pub new: f64,
    /// (new − old) ÷ |old|, in per cent (`None` when old is 0).
    pub change_pct: Option<f64>,
    /// The noise band a change had to leave, in per cent of |old|.
    pub noise_pct: Option<f64>,
    /// What happened.
    pub verdict: Verdict,
}

impl Row {
    /// The verdict in words fit for the figure: speeds and times get faster/slower.
    fn word(&self) -> &'static str {
        let speed = self.unit == "tok/s" || self.unit == "ms";
        match (self.verdict, speed) {
            (Verdict::Same, _) => "same",
            (Verdict::Better, true) => "faster",
            (Verdict::Worse, true) => "slower",
            (Verdict::Better, false) => "better",
            (Verdict::Worse, false) => "worse",
        }
    }
}

/// Judges one figure measured in both runs.
pub(super) fn judge(old: &Figure, new: &Figure, threshold_pct: f64) -> Row {
    let (o, n) = (median(old.samples.clone()), median(new.samples.clone()));
    let noise = NOISE_MADS * mad(&old.samples).max(mad(&new.samples));
    let diff = n - o;
    let pct = |v: f64| (o != 0.0).then(|| v / o.abs() * 100.0);
    let change_pct = pct(diff);
    // With an old value of 0 there is no relative size; any change beyond the noise counts.
    let beyond_threshold = change_pct.is_none_or(|c| c.abs() > threshold_pct);
    let moved = diff.abs() > noise && beyond_threshold && diff != 0.0;
    let improved = match old.better {
        Better::Higher => diff > 0.0,
        Better::Lower => diff < 0.0,
    };
    Row {
        label: old.label.clone(),
        unit: old.unit.clone(),
        old: o,
        new: n,
        change_pct,
        noise_pct: pct(noise),
        verdict: match (moved, improved) {
            (false, _) => Verdict::Same,
            (true, true) => Verdict::Better,
            (true, false) => Verdict::Worse,
        },
    }
}

/// The comparison of two runs: a row per figure both have, in the old file's order, and the ids
/// of figures only one of them has.
pub(super) struct Comparison {
    pub rows: Vec<Row>,
    pub only_old: Vec<String>,
    pub only_new: Vec<String>,
}

/// Compares every figure `old` and `new` share.
pub(super) fn compare(old: &Results, new: &Results, threshold_pct: f64) -> Comparison {
    let mut rows = Vec::new();
    let mut only_old = Vec::new();
    for f in &old.figures {
        match new.figure(&f.id) {
            // A figure whose unit or direction changed is not the same figure any more.
            Some(g) if g.unit == f.unit && g.better == f.better => {
                rows.push(judge(f, g, threshold_pct))
            }
            _ => only_old.push(f.id.clone()),
        }
    }
    let only_new = new
        .figures
        .iter()
        .filter(|g| old.figure(&g.id).is_none_or(|f| f.unit != g.unit))
        .map(|g| g.id.clone())
        .collect();
    Comparison {
        rows,
        only_old,
        only_new,
    }
}

/// What differs between the runs' settings, machine, build and model, as `what old → new`.
pub(super) fn differences(old: &Results, new: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what} {a} → {b}"));
        }
    };
    let (a, b) = (&old.arguments, &new.arguments);
    check("rounds", a.runs.to_string(), b.runs.to_string());
    check(
        "max tokens",
        a.max_tokens.to_string(),
        b.max_tokens.to_string(),
    );
    check("threads", a.threads.to_string(), b.threads.to_string());
    check("context", a.context.to_string(), b.context.to_string());
    check(
        "KV cache type",
        a.kv_cache_type.to_string(),
        b.kv_cache_type.to_string(),
    );
    check(
        "flash attention",
        a.flash_attention.to_string(),
        b.flash_attention.to_string(),
    );
    check(
        "commit",
        old.short_commit().to_string(),
        new.short_commit().to_string(),
    );
    check(
        "profile",
        old.build.profile.clone(),
        new.build.profile.clone(),
    );
    check(
        "engine backends",
        old.build.engine.backends.join("+"),
        new.build.engine.backends.join("+"),
    );
    check(
        "CPU",
        old.machine.cpu_model.clone(),
        new.machine.cpu_model.clone(),
    );
    check(
        "model",
        old.model.sha256.clone().unwrap_or_default(),
        new.model.sha256.clone().unwrap_or_default(),
    );
    out
}

/// Runs `gemmactl bench compare`.
pub(super) fn run(args: &CompareArgs) -> ExitCode {
    let loaded = results::load(&args.old).and_then(|o| Ok((o, results::load(&args.new)?)));
    let (old, new) = match loaded {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let comparison = compare(&old, &new, args.threshold);
    if comparison.rows.is_empty() {
        eprintln!(
            "error: {} ({} suite) and {} ({} suite) have no figure in common: compare two runs of the same suite",
            args.old.display(),
            old.suite.as_str(),
            args.new.display(),
            new.suite.as_str()
        );
        return ExitCode::from(2);
    }
    let describe = |r: &Results| {
        format!(
            "{}, {}, {} suite, {} on {}, {} rounds, {} thread{}",
            r.short_commit(),
            r.date,
            r.suite.as_str(),
            r.model.name,
            r.model.engine,
            r.arguments.runs,
            r.arguments.threads,
            if r.arguments.threads == 1 { "" } else { "s" }
        )
    };
    println!("old: {} ({})", args.old.display(), describe(&old));
    println!("new: {} ({})", args.new.display(), describe(&new));
    let differ = differences(&old, &new);
    if !differ.is_empty() {
        println!("the runs differ in: {}", differ.join("; "));
    }
    for (r, which) in [(&old, "old"), (&new, "new")] {
        if r.arguments.runs < 2 {
            println!("the {which} run has one round, so its noise is unknown: only the threshold decides");
        }
    }
    println!();
    println!("{}", render(&comparison.rows).trim_end());
    for (ids, which) in [
        (&comparison.only_old, "only the old run"),
        (&comparison.only_new, "only the new run"),
    ] {
        if !ids.is_empty() {
            println!("not compared, measured by {which}: {}", ids.join(", "));
        }
    }
    println!(
        "a figure moved when its median changed by more than {NOISE_MADS}× the larger median absolute deviation of the two runs' rounds and by more than {}% of the old median",
        args.threshold
    );
    let regressed: Vec<String> = comparison
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Worse)
        .map(|r| format!("{} ({})", r.label, signed_pct(r.change_pct)))
        .collect();
    if regressed.is_empty() {
        println!("no regression beyond {}%", args.threshold);
        ExitCode::SUCCESS
    } else {
        println!(
            "regressed beyond {}%: {}",
            args.threshold,
            regressed.join(", ")
        );
        ExitCode::from(1)
    }
}

/// The table: figure, old, new, change, noise band, verdict.
fn render(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{} ({})", r.label, r.unit),
                value(r.old, &r.unit),
                value(r.new, &r.unit),
                signed_pct(r.change_pct),
                r.noise_pct
                    .map_or_else(|| "-".to_string(), |n| format!("±{n:.1}%")),
                r.word().to_string(),
            ]
        })
        .collect();
    table::render(
        &["figure", "old", "new", "change", "noise", "verdict"],
        &cells,
        &[1, 2, 3, 4],
    )
}

fn signed_pct(p: Option<f64>) -> String {
    p.map_or_else(|| "-".to_string(), |p| format!("{p:+.1}%"))
}

/// A value with the precision its unit deserves.
fn value(v: f64, unit: &str) -> String {
    match unit {
        "x" => format!("{v:.3}"),
        "MiB" => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::results::tests::sample_results;

    fn fig(metric: &str, unit: &str, better: Better, samples: &[f64]) -> Figure {
        Figure::new(metric, metric, unit, better, samples.to_vec()).for_way("direct")
    }

    #[test]
    fn a_change_inside_the_rounds_scatter_is_the_same() {
        // Medians 40 → 37 (−7.5 %), but the rounds scatter by ±2.
        let old = fig("decode", "tok/s", Better::Higher, &[40.0, 38.0, 42.0]);
        let new = fig("decode", "tok/s", Better::Higher, &[37.0, 39.0, 35.0]);
        let row = judge(&old, &new, 5.0);
        assert_eq!(row.verdict, Verdict::Same);
        assert_eq!(row.word(), "same");
        assert_eq!(row.change_pct, Some(-7.5));
    }

    #[test]
    fn a_tight_change_below_the_threshold_is_the_same() {
        let old = fig("decode", "tok/s", Better::Higher, &[40.0, 40.1, 39.9]);
        let new = fig("decode", "tok/s", Better::Higher, &[39.0, 39.1, 38.9]);
        assert_eq!(judge(&old, &new, 5.0).verdict, Verdict::Same);
        // The same change is a regression when the threshold is below it.
        assert_eq!(judge(&old, &new, 2.0).verdict, Verdict::Worse);
    }

    #[test]
    fn direction_follows_the_unit() {
        let slow_prefill = (
            fig("prefill", "tok/s", Better::Higher, &[270.0, 268.0, 272.0]),
            fig("prefill", "tok/s", Better::Higher, &[150.0, 148.0, 152.0]),
        );
        let row = judge(&slow_prefill.0, &slow_prefill.1, 5.0);
        assert_eq!((row.verdict, row.word()), (Verdict::Worse, "slower"));

        let longer_ttft = judge(
            &fig(
                "time_to_first_token",
                "ms",
                Better::Lower,
                &[180.0, 182.0, 178.0],
            ),
            &fig(
                "time_to_first_token",
                "ms",
                Better::Lower,
                &[300.0, 302.0, 298.0],
            ),
            5.0,
        );
        assert_eq!(longer_ttft.word(), "slower");
        let smaller_rss = judge(
            &fig("engine_peak_rss", "MiB", Better::Lower, &[346.0, 346.0]),
            &fig("engine_peak_rss", "MiB", Better::Lower, &[300.0, 300.0]),
            5.0,
        );
        assert_eq!(smaller_rss.word(), "better");
    }

    #[test]
    fn only_a_regression_is_reported_as_one() {
        let old = sample_results(vec![
            fig("decode", "tok/s", Better::Higher, &[38.0, 38.5, 37.5]),
            fig("prefill", "tok/s", Better::Higher, &[270.0, 268.0, 272.0]),
            fig("load", "ms", Better::Lower, &[650.0, 660.0, 640.0]),
        ]);
        let mut new = old.clone();
        new.figures[1] = fig("prefill", "tok/s", Better::Higher, &[140.0, 139.0, 141.0]);
        new.figures[2] = fig("load", "ms", Better::Lower, &[400.0, 410.0, 390.0]);
        new.figures
            .push(fig("decode", "tok/s", Better::Higher, &[1.0]).for_way("run"));
        let c = compare(&old, &new, 5.0);
        let verdicts: Vec<Verdict> = c.rows.iter().map(|r| r.verdict).collect();
        assert_eq!(
            verdicts,
            vec![Verdict::Same, Verdict::Worse, Verdict::Better]
        );
        assert_eq!(c.only_new, vec!["decode/run".to_string()]);
        assert!(c.only_old.is_empty());
        // Same commit, same settings: nothing to note.
        assert!(differences(&old, &old).is_empty());
        let mut slowed = old.clone();
        slowed.arguments.threads = 1;
        assert_eq!(
            differences(&old, &slowed),
            vec!["threads 2 → 1".to_string()]
        );
    }

    #[test]
    fn thresholds_are_percentages() {
        assert_eq!(parse_percent("5").unwrap(), 5.0);
        assert_eq!(parse_percent("2.5%").unwrap(), 2.5);
        assert!(parse_percent("-1").is_err() && parse_percent("fast").is_err());
    }
}

//! `gemmactl bench chart RESULTS.json…` (and `gemmactl bench --chart`): SVG charts of results
//! files, drawn with plotters' SVG backend.
//!
//! Each chart is drawn only where the files hold data for it:
//! - per engine-suite file, `<file>.ways.svg`: time to first token, prefill and decode, directly
//!   to the engine, through the supervisor and through `gemmactl run`;
//! - per supervisor-suite file, `<file>.concurrency.svg`: aggregate throughput by concurrent
//!   requests;
//! - per context-suite file, `<file>.context.svg`: time to first token by prompt length, and
//!   decode by context fill;
//! - per soak-suite file, `<file>.soak.svg`: memory and open descriptors over the requests
//!   (drawn by `soak/chart.rs`);
//! - with several engine-suite files, the same ways side by side per file: `engines.svg` when the
//!   files cover gemma-engine and gemma.cpp, `compare.ways.svg` otherwise (e.g. commits);
//! - with several supervisor-suite files, `compare.concurrency.svg`, one line per file; with
//!   several context-suite files, `compare.context.svg`, likewise.
//!
//! Every bar is a median, and the dots on it are the rounds, so a reader sees the noise next to
//! the figure. Categories are placed evenly (concurrency 1, 2, 4, 8, 16 doubles at each step, so
//! even spacing is a log scale) and named under the axis by hand: plotters picks numeric ticks
//! itself, which cannot be made to land on category names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::results::{self, Results};
use super::stats::median;
use super::Suite;

/// The font every bench chart writes in (the soak chart too).
pub(super) const FONT: &str = "sans-serif";

/// The engine suite's ways, as stored and as shown.
const WAYS: [(&str, &str); 4] = [
    ("direct", "direct"),
    ("supervisor", "supervisor"),
    ("run", "gemmactl run"),
    ("llama-bench", "llama-bench"),
];

/// `gemmactl bench chart`'s arguments.
#[derive(Args, Debug)]
pub(super) struct ChartArgs {
    /// Results files written by `gemmactl bench`
    #[arg(required = true, value_name = "RESULTS.json")]
    files: Vec<PathBuf>,
    /// Folder for the SVG files [default: the first results file's folder]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// A results file and where it was read from (its name names the charts drawn from it).
pub(super) struct Loaded {
    pub path: PathBuf,
    pub results: Results,
}

/// Runs `gemmactl bench chart`: exit 2 for a file that is not results, 1 if drawing fails.
pub(super) fn run(args: &ChartArgs) -> ExitCode {
    let mut files = Vec::new();
    for path in &args.files {
        match results::load(path) {
            Ok(results) => files.push(Loaded {
                path: path.clone(),
                results,
            }),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| folder_of(&args.files[0]));
    match draw(&files, &out) {
        Ok(written) => {
            for path in written {
                println!("chart: {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The folder a file is in (`.` for a bare name).
pub(super) fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Draws every chart `files` have data for into `out`; the paths written.
pub(super) fn draw(files: &[Loaded], out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the chart folder {}", out.display()))?;
    let labels = labels(files);
    let mut written = Vec::new();
    for (file, label) in files.iter().zip(&labels) {
        let stem = file
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "results".into());
        let r = &file.results;
        let runs = [(label.clone(), r)];
        let title = format!(
            "{} on {}: {}, {} rounds, {}",
            r.model.name,
            r.model.engine,
            r.short_commit(),
            r.arguments.runs,
            threads(r.arguments.threads)
        );
        let path = match r.suite {
            Suite::Engine => out.join(format!("{stem}.ways.svg")),
            Suite::Supervisor => out.join(format!("{stem}.concurrency.svg")),
            Suite::Soak => out.join(format!("{stem}.soak.svg")),
            Suite::Context => out.join(format!("{stem}.context.svg")),
        };
        let drawn = match (r.suite, &r.soak) {
            (Suite::Engine, _) => ways_chart(&runs, &path, &title)?,
            (Suite::Supervisor, _) => concurrency_chart(&runs, &path, &title)?,
            (Suite::Context, _) => context_chart(&runs, &path, &title)?,
            (Suite::Soak, Some(series)) => {
                let title = format!(
                    "{} soak on {}: {}, {} requests, {} at a time, {}",
                    r.model.name,
                    r.model.engine,
                    r.short_commit(),
                    series.requests,
                    series.concurrency,
                    if series.verdict.passed {
                        "passed"
                    } else {
                        "FAILED"
                    }
                );
                super::soak::chart::draw(series, &path, &title)?;
                true
            }
            (Suite::Soak, None) => false,
        };
        if drawn {
            written.push(path);
        }
    }
    let of_suite = |suite: Suite| -> Vec<(String, &Results)> {
        files
            .iter()
            .zip(&labels)
            .filter(|(f, _)| f.results.suite == suite)
            .map(|(f, l)| (l.clone(), &f.results))
            .collect()
    };
    let engine_runs = of_suite(Suite::Engine);
    if engine_runs.len() > 1 {
        let engines: BTreeSet<&str> = engine_runs
            .iter()
            .map(|(_, r)| r.model.engine.as_str())
            .collect();
        let (name, title) = if engines.len() > 1 {
            (
                "engines.svg",
                format!(
                    "{} on the same machine",
                    engines.into_iter().collect::<Vec<_>>().join(" vs ")
                ),
            )
        } else {
            (
                "compare.ways.svg",
                format!(
                    "{} on {}: the same figures across runs",
                    engine_runs[0].1.model.name, engine_runs[0].1.model.engine
                ),
            )
        };
        let path = out.join(name);
        if ways_chart(&engine_runs, &path, &title)? {
            written.push(path);
        }
    }
    let supervisor_runs = of_suite(Suite::Supervisor);
    if supervisor_runs.len() > 1 {
        let path = out.join("compare.concurrency.svg");
        let title = "aggregate throughput across runs";
        if concurrency_chart(&supervisor_runs, &path, title)? {
            written.push(path);
        }
    }
    let context_runs = of_suite(Suite::Context);
    if context_runs.len() > 1 {
        let path = out.join("compare.context.svg");
        let title = "time to first token and decode by context across runs";
        if context_chart(&context_runs, &path, title)? {
            written.push(path);
        }
    }
    Ok(written)
}

/// What tells the files apart, as each one's name in a legend: the engine, the commit, the
/// threads, the context, the KV cache type or flash attention, whichever differ; the file's name
/// when none does.
fn labels(files: &[Loaded]) -> Vec<String> {
    const DATE: usize = 6;
    let parts = |r: &Results| -> [String; 7] {
        [
            r.model.engine.clone(),
            r.short_commit().to_string(),
            threads(r.arguments.threads),
            format!("context {}", r.arguments.context),
            format!("KV {}", r.arguments.kv_cache_type),
            format!("flash attention {}", r.arguments.flash_attention),
            r.date.clone(),
        ]
    };
    let all: Vec<[String; 7]> = files.iter().map(|f| parts(&f.results)).collect();
    if files.len() == 1 {
        return vec![format!("{}, {}", all[0][1], all[0][2])];
    }
    let varying: Vec<usize> = (0..all[0].len())
        .filter(|&i| all.iter().any(|p| p[i] != all[0][i]))
        .collect();
    let labels: Vec<String> = files
        .iter()
        .zip(&all)
        .map(|(f, p)| {
            // The date alone says little; a file's name is what its owner chose.
            if varying.is_empty() || varying == [DATE] {
                f.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                varying
                    .iter()
                    .filter(|&&i| i != DATE)
                    .map(|&i| p[i].clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        })
        .collect();
    // Still alike (the same settings twice): number them.
    let unique: BTreeSet<&String> = labels.iter().collect();
    if unique.len() < labels.len() {
        return labels
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{l} #{}", i + 1))
            .collect();
    }
    labels
}

fn threads(n: u32) -> String {
    match n {
        1 => "1 thread".to_string(),
        n => format!("{n} threads"),
    }
}

/// One bar group's series: a name, and per category the rounds' samples (if measured).
struct Series {
    name: String,
    values: Vec<Option<Vec<f64>>>,
}

/// One panel of a chart: a figure over its categories, a series per run.
struct Panel {
    caption: String,
    unit: &'static str,
    categories: Vec<String>,
    series: Vec<Series>,
}

/// Time to first token, prefill and decode per way, one bar per run. `false` when there is
/// nothing to draw.
fn ways_chart(runs: &[(String, &Results)], path: &Path, title: &str) -> Result<bool> {
    let panel = |metric: &str, name: &'static str, unit: &'static str| -> Panel {
        let ways: Vec<(&str, &str)> = WAYS
            .iter()
            .copied()
            .filter(|(w, _)| {
                runs.iter()
                    .any(|(_, r)| r.figure(&format!("{metric}/{w}")).is_some())
            })
            .collect();
        let series = runs
            .iter()
            .map(|(name, r)| Series {
                name: name.clone(),
                values: ways
                    .iter()
                    .map(|(w, _)| {
                        r.figure(&format!("{metric}/{w}"))
                            .map(|f| f.samples.clone())
                    })
                    .collect(),
            })
            .collect();
        Panel {
            caption: format!("{name} ({unit})"),
            unit,
            categories: ways.iter().map(|(_, shown)| shown.to_string()).collect(),
            series,
        }
    };
    let panels: Vec<Panel> = [
        panel("time_to_first_token", "time to first token", "ms"),
        panel("prefill", "prefill", "tok/s"),
        panel("decode", "decode", "tok/s"),
    ]
    .into_iter()
    .filter(|p| !p.categories.is_empty())
    .collect();
    if panels.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (420 * panels.len() as u32, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, p) in areas.iter().zip(&panels) {
        bar_panel(area, &p.caption, p.unit, &p.categories, &p.series)?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// Aggregate throughput by concurrent requests, one line per run.
fn concurrency_chart(runs: &[(String, &Results)], path: &Path, title: &str) -> Result<bool> {
    let Some((categories, series)) = curve(runs, "aggregate_throughput", |f| f.concurrent) else {
        return Ok(false);
    };
    let root = SVGBackend::new(path, (760, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    line_panel(
        &root,
        "aggregate throughput (tok/s) by concurrent requests",
        "tok/s",
        &categories,
        &series,
    )?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// The context suite: time to first token by prompt length, and decode by how full the context
/// is, one line per run.
fn context_chart(runs: &[(String, &Results)], path: &Path, title: &str) -> Result<bool> {
    let panels: Vec<(&str, &str, Curve)> = [
        (
            "time_to_first_token",
            "time to first token (ms) by prompt tokens",
            "ms",
        ),
        (
            "decode",
            "decode (tok/s) by context fill in tokens",
            "tok/s",
        ),
    ]
    .into_iter()
    .filter_map(|(metric, caption, unit)| {
        curve(runs, metric, |f| f.prompt_length).map(|c| (caption, unit, c))
    })
    .collect();
    if panels.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (560 * panels.len() as u32, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, (caption, unit, (categories, series))) in areas.iter().zip(&panels) {
        line_panel(area, caption, unit, categories, series)?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// A curve's categories (its points, named) and each run's samples at them.
type Curve = (Vec<String>, Vec<Series>);

/// A figure measured at several points of one key (concurrent requests, prompt length): the
/// points any run has, as categories, and each run's samples at them. `None` when no run has
/// the figure.
fn curve(
    runs: &[(String, &Results)],
    metric: &str,
    key: fn(&results::Figure) -> Option<u32>,
) -> Option<Curve> {
    let points: BTreeSet<u32> = runs
        .iter()
        .flat_map(|(_, r)| r.figures.iter())
        .filter(|f| f.metric == metric)
        .filter_map(key)
        .collect();
    if points.is_empty() {
        return None;
    }
    let series = runs
        .iter()
        .map(|(name, r)| Series {
            name: name.clone(),
            values: points
                .iter()
                .map(|n| {
                    r.figures
                        .iter()
                        .find(|f| f.metric == metric && key(f) == Some(*n))
                        .map(|f| f.samples.clone())
                })
                .collect(),
        })
        .collect();
    Some((points.iter().map(|n| n.to_string()).collect(), series))
}

/// Where a chart (or one of its panels) is drawn.
pub(super) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A panel's chart: categories along x (one unit each), values up y.
pub(super) type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A panel's frame, the same for bars and lines: caption, value axis with its unit and ticks, no
/// category labels (`name_categories` writes those) and no vertical mesh.
fn axes<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    unit: &str,
    n: f64,
    top: f64,
) -> Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(14)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..n, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(0)
        .x_labels(0)
        .y_label_formatter(&|v| tick(*v, top))
        .y_desc(unit)
        .label_style((FONT, 13))
        .draw()?;
    Ok(chart)
}

/// The largest sample or median, with headroom, as the top of the value axis.
fn top_of(series: &[Series]) -> f64 {
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    if top > 0.0 {
        top * 1.15
    } else {
        1.0
    }
}

/// A value-axis label: whole numbers on a tall axis, one decimal on a short one.
fn tick(v: f64, top: f64) -> String {
    if top >= 20.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn color(i: usize) -> RGBAColor {
    Palette99::pick(i).to_rgba()
}

/// Grouped bars (medians) with the rounds as dots, categories named under the axis.
fn bar_panel(
    area: &Area<'_>,
    caption: &str,
    unit: &str,
    categories: &[String],
    series: &[Series],
) -> Result<()> {
    let n = categories.len() as f64;
    // A legend sits in the upper right: room above the tallest bar keeps it off the bars.
    let top = top_of(series) * if series.len() > 1 { 1.3 } else { 1.0 };
    let mut chart = axes(area, caption, unit, n, top)?;
    let width = 0.8 / series.len().max(1) as f64;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let left = |cat: usize| cat as f64 + 0.1 + i as f64 * width;
        let bars = s.values.iter().enumerate().filter_map(|(cat, v)| {
            let m = median(v.clone()?);
            let x = left(cat);
            Some(Rectangle::new(
                [(x + width * 0.05, 0.0), (x + width * 0.95, m)],
                c.filled(),
            ))
        });
        let drawn = chart.draw_series(bars)?;
        if series.len() > 1 {
            drawn
                .label(s.name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], c.filled()));
        }
        let dots = s.values.iter().enumerate().flat_map(|(cat, v)| {
            let x = left(cat) + width / 2.0;
            v.iter()
                .flatten()
                .map(move |y| Circle::new((x, *y), 3, BLACK.mix(0.55).filled()))
        });
        chart.draw_series(dots)?;
    }
    if series.len() > 1 {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    name_categories(area, &chart, categories)
}

/// Medians joined by a line per series, the rounds as dots.
fn line_panel(
    area: &Area<'_>,
    caption: &str,
    unit: &str,
    categories: &[String],
    series: &[Series],
) -> Result<()> {
    let n = categories.len() as f64;
    let top = top_of(series);
    let mut chart = axes(area, caption, unit, n, top)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let medians: Vec<(f64, f64)> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(cat, v)| Some((cat as f64 + 0.5, median(v.clone()?))))
            .collect();
        chart
            .draw_series(LineSeries::new(medians.clone(), c.stroke_width(2)))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(2)));
        chart.draw_series(medians.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
        let dots = s.values.iter().enumerate().flat_map(|(cat, v)| {
            v.iter()
                .flatten()
                .map(move |y| Circle::new((cat as f64 + 0.5, *y), 2, BLACK.mix(0.5).filled()))
        });
        chart.draw_series(dots)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    name_categories(area, &chart, categories)
}

/// The series' names in a box at `position`, alike in every panel.
pub(super) fn legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// Writes each category's name under the middle of its slot on the x axis.
fn name_categories(area: &Area<'_>, chart: &Chart<'_, '_>, categories: &[String]) -> Result<()> {
    let (bx, by) = area.get_base_pixel();
    let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, name) in categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        area.draw(&Text::new(
            name.clone(),
            (x - bx, y - by + 8),
            style.clone(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::results::tests::sample_results;
    use crate::commands::bench::results::{Better, Figure};

    fn engine_run(engine: &str, decode: f64) -> Results {
        let mut r = sample_results(
            ["direct", "supervisor", "run"]
                .iter()
                .map(|w| {
                    Figure::new(
                        "decode",
                        "decode",
                        "tok/s",
                        Better::Higher,
                        vec![decode, decode + 1.0],
                    )
                    .for_way(w)
                })
                .collect(),
        );
        r.model.engine = engine.into();
        r
    }

    #[test]
    fn both_engines_get_a_chart_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            Loaded {
                path: dir.path().join("a.json"),
                results: engine_run("gemma-engine", 38.0),
            },
            Loaded {
                path: dir.path().join("b.json"),
                results: engine_run("gemma.cpp", 30.0),
            },
        ];
        let written = draw(&files, dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.ways.svg", "b.ways.svg", "engines.svg"]);
        let svg = std::fs::read_to_string(dir.path().join("engines.svg")).unwrap();
        for name in ["gemma-engine", "gemma.cpp", "direct", "gemmactl run"] {
            assert!(svg.contains(name), "{name} missing");
        }
    }

    #[test]
    fn a_run_without_the_figures_gets_no_chart() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = sample_results(vec![]);
        r.suite = Suite::Supervisor;
        let files = vec![Loaded {
            path: dir.path().join("s.json"),
            results: r,
        }];
        assert!(draw(&files, dir.path()).unwrap().is_empty());
    }

    #[test]
    fn files_are_told_apart_by_what_differs() {
        let mut slow = engine_run("gemma-engine", 20.0);
        slow.arguments.threads = 1;
        let files = vec![
            Loaded {
                path: "x/a.json".into(),
                results: engine_run("gemma-engine", 38.0),
            },
            Loaded {
                path: "x/b.json".into(),
                results: slow,
            },
        ];
        assert_eq!(labels(&files), ["2 threads", "1 thread"]);
    }
}

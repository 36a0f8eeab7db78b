//! `<file>.soak.svg`: a soak's samples over the requests — gemmactl's resident memory, the
//! engines', and both processes' open file descriptors — with the means of the first and last
//! windows the verdict compares drawn over them, and each engine kill marked.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::super::chart::{legend, Area, FONT};
use super::series::{windows, Sample, Series};

/// One line of a panel: its name, colour, and points (a `None` breaks the line).
struct Line {
    name: String,
    color: RGBColor,
    points: Vec<(f64, Option<f64>)>,
}

/// Draws the soak chart of `series` into `path`.
pub(in crate::commands::bench) fn draw(series: &Series, path: &Path, title: &str) -> Result<()> {
    let root = SVGBackend::new(path, (900, 980)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    let panels = root.split_evenly((3, 1));
    let x = |s: &Sample| s.request as f64;
    let n = series.requests as f64;
    let window = series.verdict.window;
    let (first, last) = windows(&series.samples, series.requests);
    let means = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<((f64, f64), f64)> {
        let mean = |set: &[&Sample]| {
            let v: Vec<f64> = set.iter().filter_map(|s| f(s)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let mut out = Vec::new();
        if let Some(m) = mean(&first) {
            out.push(((0.0, window as f64), m));
        }
        if let Some(m) = mean(&last) {
            out.push((((series.requests - window) as f64, n), m));
        }
        out
    };
    let gemmactl = Line {
        name: "gemmactl".into(),
        color: RGBColor(31, 119, 180),
        points: series
            .samples
            .iter()
            .map(|s| (x(s), Some(s.gemmactl_rss_mib)))
            .collect(),
    };
    panel(
        &panels[0],
        "gemmactl resident memory (MiB)",
        "MiB",
        n,
        &[gemmactl],
        &means(&|s| Some(s.gemmactl_rss_mib)),
        series,
    )?;
    let engine = Line {
        name: "engines".into(),
        color: RGBColor(214, 39, 40),
        points: series
            .samples
            .iter()
            .map(|s| (x(s), s.engine_rss_mib))
            .collect(),
    };
    panel(
        &panels[1],
        "engine resident memory (MiB)",
        "MiB",
        n,
        &[engine],
        &means(&|s| s.engine_rss_mib),
        series,
    )?;
    let fds = [
        Line {
            name: "gemmactl".into(),
            color: RGBColor(31, 119, 180),
            points: series
                .samples
                .iter()
                .map(|s| (x(s), Some(f64::from(s.gemmactl_fds))))
                .collect(),
        },
        Line {
            name: "engines".into(),
            color: RGBColor(214, 39, 40),
            points: series
                .samples
                .iter()
                .map(|s| (x(s), s.engine_fds.map(f64::from)))
                .collect(),
        },
    ];
    panel(
        &panels[2],
        "open file descriptors",
        "fds",
        n,
        &fds,
        &[],
        series,
    )?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// One panel: the lines over the requests, the window means as flat black segments, and an
/// orange vertical line at every request whose engine was killed. Memory sits high on its
/// axis (which starts at 0, so growth is seen at its true size) and leaves the lower right for
/// the legend; descriptors get headroom above them for it instead.
fn panel(
    area: &Area<'_>,
    caption: &str,
    unit: &str,
    requests: f64,
    lines: &[Line],
    means: &[((f64, f64), f64)],
    series: &Series,
) -> Result<()> {
    let top = lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|(_, y)| *y))
        .fold(0.0f64, f64::max);
    let (headroom, legend_at) = if means.is_empty() {
        (1.7, SeriesLabelPosition::UpperRight)
    } else {
        (1.2, SeriesLabelPosition::LowerRight)
    };
    let top = if top > 0.0 { top * headroom } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..requests.max(1.0), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(0)
        .x_desc("requests")
        .y_desc(unit)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if top >= 20.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        })
        .label_style((FONT, 13))
        .draw()?;
    let kill_style = RGBColor(255, 127, 14).stroke_width(1);
    let mut kills = series.kills.iter().peekable();
    if kills.peek().is_some() {
        chart
            .draw_series(kills.map(|k| {
                let x = k.request as f64;
                PathElement::new(vec![(x, 0.0), (x, top)], kill_style)
            }))?
            .label("engine killed")
            .legend(move |(x, y)| PathElement::new(vec![(x, y - 6), (x, y + 6)], kill_style));
    }
    for line in lines {
        let color = line.color;
        // Each unbroken run of points is its own path, so a gap stays a gap.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (x, y) in &line.points {
            match (y, runs.last_mut()) {
                (Some(y), Some(run)) => run.push((*x, *y)),
                _ => runs.push(Vec::new()),
            }
        }
        let mut labelled = false;
        for run in runs.into_iter().filter(|r| !r.is_empty()) {
            let drawn = chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
            if !labelled {
                drawn.label(line.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
                labelled = true;
            }
        }
    }
    if !means.is_empty() {
        let style = BLACK.stroke_width(2);
        chart
            .draw_series(
                means
                    .iter()
                    .map(|((a, b), m)| PathElement::new(vec![(*a, *m), (*b, *m)], style)),
            )?
            .label("mean of the first and last window")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], style));
    }
    legend(&mut chart, legend_at)
}

#[cfg(test)]
mod tests {
    use super::super::series::tests::sample;
    use super::super::series::{judge, Found, Kill};
    use super::*;

    #[test]
    fn the_chart_shows_memory_descriptors_kills_and_window_means() {
        let mut samples: Vec<Sample> = (1..=30).map(|w| sample(w * 4, 30.0, 400.0)).collect();
        // No engine ran after the kill at request 60 until the next wave.
        samples[14].engine_rss_mib = None;
        samples[14].engine_fds = None;
        let warm = sample(0, 30.0, 400.0);
        let verdict = judge(&Found {
            requests: 120,
            samples: &samples,
            warm_up: &warm,
            end: &warm,
            records: &[],
            zombies: 0,
            orphans: 0,
        });
        let series = Series {
            requests: 120,
            concurrency: 4,
            seed: 1,
            warm_up: warm.clone(),
            end: warm,
            samples,
            records: Vec::new(),
            kills: vec![Kill {
                request: 60,
                pid: 4242,
            }],
            engine_pids: vec![4242, 4343],
            engine_starts: 2,
            zombies_running: Vec::new(),
            zombies_after_shutdown: Vec::new(),
            orphans: Vec::new(),
            verdict,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.soak.svg");
        draw(&series, &path, "soak").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let texts: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        for want in [
            "gemmactl resident memory (MiB)",
            "engine resident memory (MiB)",
            "open file descriptors",
            "engine killed",
            "mean of the first and last window",
            "requests",
        ] {
            assert!(texts.contains(&want), "{want} missing from {texts:?}");
        }
    }
}

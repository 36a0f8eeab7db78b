//! Tables on stdout, laid out by comfy-table: plain columns two spaces apart, wrapped at word
//! boundaries to the terminal's width when stdout is one (a pipe gets full lines). A table too
//! wide for the terminal first leaves out its least useful columns, in an order each table
//! names, so a narrow terminal shows fewer columns rather than every cell broken in pieces.

use std::io::IsTerminal;

use comfy_table::{presets, CellAlignment, ColumnConstraint, ContentArrangement, Table, Width};

use super::text::{duration, printable_line, short_time};
use crate::models::{human_bytes, EngineKind, Listed};
use crate::store::ConversationSummary;
use crate::supervisor::status::{rss_bytes, ProcessStatus};

/// Renders `rows` under `header`. Columns listed in `right` are right-aligned. Cells often hold
/// stored text (titles, model names, paths), so control characters in them are shown, never
/// sent to the terminal ([`printable_line`]).
pub fn render(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    fitted(
        header,
        rows,
        &Fit {
            right,
            ..Fit::default()
        },
        terminal_width(),
    )
}

/// How a table gives way to a narrow terminal.
#[derive(Default)]
struct Fit<'a> {
    /// Right-aligned columns.
    right: &'a [usize],
    /// Columns to leave out, first to last, while the table is wider than the terminal.
    drop_order: &'a [usize],
    /// A column of free text that may wrap over several lines: it counts as at most
    /// [`FLEXIBLE_MIN`] wide when deciding what to leave out.
    flexible: Option<usize>,
}

/// Narrowest a wrapping text column is squeezed to before other columns are left out.
const FLEXIBLE_MIN: usize = 20;

/// Renders `rows` under `header` for `width` columns (`None`: no limit).
fn fitted(header: &[&str], rows: &[Vec<String>], fit: &Fit<'_>, width: Option<u16>) -> String {
    let mut keep: Vec<usize> = (0..header.len()).collect();
    if let Some(width) = width.map(usize::from) {
        let natural = |i: usize| {
            let w = rows
                .iter()
                .filter_map(|r| r.get(i))
                .chain(std::iter::once(&header[i].to_string()))
                .map(|cell| {
                    cell.lines()
                        .map(console::measure_text_width)
                        .max()
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0);
            if fit.flexible == Some(i) {
                w.min(FLEXIBLE_MIN)
            } else {
                w
            }
        };
        let total = |keep: &[usize]| {
            keep.iter().map(|&i| natural(i)).sum::<usize>() + 2 * keep.len().saturating_sub(1)
        };
        for &column in fit.drop_order {
            if total(&keep) <= width {
                break;
            }
            keep.retain(|&i| i != column);
        }
    }
    let header: Vec<&str> = keep.iter().map(|&i| header[i]).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            keep.iter()
                .map(|&i| r.get(i).cloned().unwrap_or_default())
                .collect()
        })
        .collect();
    let right: Vec<usize> = keep
        .iter()
        .enumerate()
        .filter(|(_, i)| fit.right.contains(i))
        .map(|(position, _)| position)
        .collect();
    layout(&header, &rows, &right, width)
}

/// Lays out the columns as they are, wrapping cells to `width`.
fn layout(header: &[&str], rows: &[Vec<String>], right: &[usize], width: Option<u16>) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    if let Some(width) = width {
        table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(width);
    }
    table.set_header(header.iter().map(|h| printable_line(h)));
    for row in rows {
        table.add_row(row.iter().map(|cell| printable_line(cell)));
    }
    let last = header.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        if i == 0 {
            // Names and ids are what a reader copies: never wrap them.
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(2)));
        }
    }
    table
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The terminal's width in columns, when stdout is a terminal.
pub fn terminal_width() -> Option<u16> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    console::Term::stdout().size_checked().map(|(_, cols)| cols)
}

/// Saved conversations, newest first: `history list` and the shell's `/history`.
pub fn conversations(rows: &[ConversationSummary]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let c = &r.conversation;
            vec![
                c.id.to_string(),
                short_time(&c.updated_at),
                r.messages.to_string(),
                c.model.clone().unwrap_or_else(|| "-".into()),
                c.title.clone().unwrap_or_else(|| "(untitled)".into()),
            ]
        })
        .collect();
    fitted(
        &["ID", "UPDATED (UTC)", "MSGS", "MODEL", "TITLE"],
        &body,
        &Fit {
            right: &[2],
            drop_order: &[2, 3, 1],
            flexible: Some(4),
        },
        terminal_width(),
    )
}

/// The conversations of one batch run, with each one's line id: `history list --batch`.
pub fn batch_lines(rows: &[ConversationSummary]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let c = &r.conversation;
            let line = c
                .origin
                .as_ref()
                .and_then(|o| o.batch.as_ref())
                .map(|b| b.line_id.clone())
                .unwrap_or_else(|| "-".into());
            vec![
                c.id.to_string(),
                line,
                short_time(&c.updated_at),
                r.messages.to_string(),
                c.model.clone().unwrap_or_else(|| "-".into()),
                c.title.clone().unwrap_or_else(|| "(untitled)".into()),
            ]
        })
        .collect();
    render(
        &["ID", "LINE", "UPDATED (UTC)", "MSGS", "MODEL", "TITLE"],
        &body,
        &[3],
    )
}

/// The engines held by gemmactl processes: `ps` and the shell's `/ps`.
pub fn processes(processes: &[ProcessStatus], now: u64) -> String {
    let mut body = Vec::new();
    let mut notes = Vec::new();
    for p in processes {
        for e in &p.engines {
            let rss = e
                .pid
                .and_then(rss_bytes)
                .map(|b| format!("{} MiB", b >> 20))
                .unwrap_or_else(|| "-".into());
            let up = e
                .started_at
                .filter(|_| e.pid.is_some())
                .map(|t| duration(now.saturating_sub(t)))
                .unwrap_or_else(|| "-".into());
            let idle = match (e.active, e.last_used_at) {
                (0, Some(t)) => duration(now.saturating_sub(t)),
                (0, None) => "-".into(),
                _ => "busy".into(),
            };
            body.push(vec![
                p.pid.to_string(),
                e.model.clone(),
                e.engine.to_string(),
                e.backend
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.state.to_string(),
                e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                rss,
                up,
                idle,
                e.requests_served.to_string(),
                e.queued.to_string(),
            ]);
            if let Some(reason) = e
                .reason
                .as_ref()
                .filter(|_| e.state == crate::supervisor::Phase::Failed)
            {
                notes.push(format!("{} {}: {reason}", p.pid, e.model));
            }
            if let Some(fallback) = &e.fallback {
                notes.push(format!("{} {}: fallback: {fallback}", p.pid, e.model));
            }
        }
    }
    let width = terminal_width();
    let mut out = fitted(
        &[
            "GEMMACTL", "MODEL", "ENGINE", "BACKEND", "STATE", "PID", "RSS", "UPTIME", "IDLE",
            "SERVED", "QUEUE",
        ],
        &body,
        &Fit {
            right: &[6, 7, 8, 9, 10],
            // Kept longest: the model and its state, then what runs it and whether it is busy.
            drop_order: &[9, 7, 0, 5, 6, 10, 8, 2, 3],
            flexible: None,
        },
        width,
    );
    for note in notes {
        out.push('\n');
        let note = format!("└ {note}");
        out.push_str(&super::text::wrap(&note, width));
    }
    out
}

/// Registered and catalogue models: `models list` and the shell's `/models`.
pub fn models(rows: &[Listed]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let status = match (&r.path, r.registered, r.size) {
                (Some(p), true, _) if r.engine == EngineKind::Remote => p.display().to_string(),
                (Some(p), true, Some(_)) => p.display().to_string(),
                (Some(p), true, None) => format!("{} (missing)", p.display()),
                _ => format!("available: gemmactl models pull {}", r.name),
            };
            vec![
                r.name.clone(),
                r.kind.as_str().to_string(),
                r.engine.to_string(),
                r.size.map(human_bytes).unwrap_or_else(|| "-".to_string()),
                status,
            ]
        })
        .collect();
    fitted(
        &["NAME", "KIND", "ENGINE", "SIZE", "PATH/STATUS"],
        &body,
        &Fit {
            right: &[],
            drop_order: &[2, 3, 1],
            flexible: Some(4),
        },
        terminal_width(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_two_spaces_apart_and_lines_unpadded() {
        let out = render(
            &["NAME", "KIND"],
            &[
                vec!["g".into(), "base".into()],
                vec!["longer".into(), "instruct".into()],
            ],
            &[],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME    KIND");
        assert_eq!(lines[1], "g       base");
        assert_eq!(lines[2], "longer  instruct");
    }

    #[test]
    fn stored_text_in_a_cell_cannot_reach_the_terminal_raw() {
        let out = render(
            &["ID", "TITLE"],
            &[vec!["1".into(), "\u{1b}[2Jgone\u{7}\u{c}".into()]],
            &[],
        );
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{c}'));
        assert!(out.contains("␛[2Jgone␇␌"), "{out}");
    }

    #[test]
    fn a_narrow_terminal_drops_columns_in_order_then_wraps_text_between_words() {
        let header = ["ID", "UPDATED (UTC)", "MSGS", "MODEL", "TITLE"];
        let rows = vec![vec![
            "12".to_string(),
            "2025-03-01 10:00:01".to_string(),
            "4".to_string(),
            "gemma3-270m".to_string(),
            "A question about the capital of France and its river".to_string(),
        ]];
        let fit = Fit {
            right: &[2],
            drop_order: &[2, 3, 1],
            flexible: Some(4),
        };
        let wide = fitted(&header, &rows, &fit, Some(120));
        assert!(
            wide.starts_with("ID  UPDATED (UTC)        MSGS  MODEL"),
            "{wide}"
        );
        let medium = fitted(&header, &rows, &fit, Some(50));
        assert!(
            medium.starts_with("ID  UPDATED (UTC)        TITLE"),
            "{medium}"
        );
        let narrow = fitted(&header, &rows, &fit, Some(40));
        assert!(narrow.starts_with("ID  TITLE"), "{narrow}");
        for (table, width) in [(&wide, 120), (&medium, 50), (&narrow, 40)] {
            assert!(
                table
                    .lines()
                    .all(|l| console::measure_text_width(l) <= width),
                "{table}"
            );
            // Every word of the title is still whole.
            for word in rows[0][4].split(' ') {
                assert!(
                    table.split_whitespace().any(|w| w == word),
                    "{word} in {table}"
                );
            }
        }
    }
}

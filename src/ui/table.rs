//! Tables on stdout, laid out by comfy-table: plain columns two spaces apart, wrapped at word
//! boundaries to the terminal's width when stdout is one (a pipe gets full lines).

use std::io::IsTerminal;

use comfy_table::{presets, CellAlignment, ColumnConstraint, ContentArrangement, Table, Width};

use super::text::{duration, short_time};
use crate::models::{human_bytes, EngineKind, Listed};
use crate::store::ConversationSummary;
use crate::supervisor::status::{rss_bytes, ProcessStatus};

/// Renders `rows` under `header`. Columns listed in `right` are right-aligned.
pub fn render(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    if let Some(width) = terminal_width() {
        table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(width);
    }
    table.set_header(header.iter().copied());
    for row in rows {
        table.add_row(row.iter().map(String::as_str));
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
    render(
        &["ID", "UPDATED (UTC)", "MSGS", "MODEL", "TITLE"],
        &body,
        &[2],
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
    let mut out = render(
        &[
            "GEMMACTL", "MODEL", "ENGINE", "BACKEND", "STATE", "PID", "RSS", "UPTIME", "IDLE",
            "SERVED", "QUEUE",
        ],
        &body,
        &[6, 7, 8, 9, 10],
    );
    for note in notes {
        out.push_str("\n└ ");
        out.push_str(&note);
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
    render(
        &["NAME", "KIND", "ENGINE", "SIZE", "PATH/STATUS"],
        &body,
        &[],
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
}

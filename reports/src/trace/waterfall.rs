//! The terminal waterfall: one line per span, indented by depth, with its
//! start offset from the trace's start, its duration, a bar placed on the
//! trace's timeline and its status; a header per trace and the error
//! messages under it. Every line fits in the width asked for (80 columns
//! by default), counted in characters.

use std::fmt::Write;

use super::{
    RunInfo, Trace, display_name, error_messages, failed, format_duration, format_time, status_word,
};
use engine::spans::SpanRecord;

/// The width the CLI asks for: a terminal's default.
pub const WIDTH: usize = 80;

/// Narrower than this, the bar would have no room; the columns are laid
/// out for this width instead.
const MIN_WIDTH: usize = 60;
const TIME_W: usize = 8;
const STATUS_W: usize = 6;
/// Indentation stops growing past this depth so that deep trees keep
/// room for names.
const MAX_INDENT_DEPTH: usize = 8;

/// The waterfall of all of the run's traces, in time order.
pub fn waterfall(run: RunInfo, spans: &[SpanRecord], width: usize) -> String {
    let width = width.max(MIN_WIDTH);
    let traces = super::traces(spans);
    let mut out = String::new();
    let summary = format!(
        "run {} · dag {} · {} trace{} · {} span{}",
        one_line(run.run_id),
        one_line(run.dag),
        traces.len(),
        if traces.len() == 1 { "" } else { "s" },
        spans.len(),
        if spans.len() == 1 { "" } else { "s" },
    );
    push_line(&mut out, &fit(&summary, width));
    for trace in &traces {
        out.push('\n');
        render_trace(&mut out, run, trace, &traces, width);
    }
    out
}

/// The columns: name, start offset, duration, `|bar|`, status, separated
/// by single spaces; the name takes what the others leave, the bar a
/// third of the width.
struct Layout {
    name: usize,
    bar: usize,
}

impl Layout {
    fn for_width(width: usize) -> Layout {
        let bar = width / 3 - 2;
        let name = width - bar - 2 - 2 * TIME_W - STATUS_W - 4;
        Layout { name, bar }
    }
}

fn render_trace(out: &mut String, run: RunInfo, trace: &Trace, all: &[Trace], width: usize) {
    let layout = Layout::for_width(width);
    push_line(
        out,
        &fit(
            &format!(
                "trace {} · {}",
                one_line(trace.trace_id),
                resume_text(trace.resume)
            ),
            width,
        ),
    );
    push_line(
        out,
        &fit(
            &format!("run {} · dag {}", one_line(run.run_id), one_line(run.dag)),
            width,
        ),
    );
    push_line(
        out,
        &fit(
            &format!(
                "started {} · took {}",
                format_time(trace.start),
                format_duration(trace.end.saturating_sub(trace.start))
            ),
            width,
        ),
    );
    for link in &trace.links {
        let text = match all.iter().find(|t| t.trace_id == link.trace_id) {
            Some(linked) => format!(
                "follows trace {} ({})",
                one_line(&link.trace_id),
                resume_text(linked.resume)
            ),
            None => format!(
                "links to trace {} span {}",
                one_line(&link.trace_id),
                one_line(&link.span_id)
            ),
        };
        push_line(out, &fit(&text, width));
    }
    let header = format!(
        "{:<name$} {:>TIME_W$} {:>TIME_W$} {:<bar$} {}",
        "SPAN",
        "START",
        "DURATION",
        "TIMELINE",
        "STATUS",
        name = layout.name,
        bar = layout.bar + 2,
    );
    push_line(out, &fit(&header, width));
    for row in &trace.rows {
        let span = row.span;
        let indent = "  ".repeat(row.depth.min(MAX_INDENT_DEPTH));
        let marker = if row.orphan { "?" } else { "" };
        let name = fit(
            &format!("{indent}{marker}{}", one_line(&display_name(span))),
            layout.name,
        );
        let line = format!(
            "{name:<name_w$} {:>TIME_W$} {:>TIME_W$} |{}| {}",
            format!(
                "+{}",
                format_duration(span.start_unix_nano.saturating_sub(trace.start))
            ),
            format_duration(span.duration_nanos()),
            bar(trace, span, layout.bar),
            status_word(&span.status),
            name_w = layout.name,
        );
        push_line(out, &fit(&line, width));
    }
    if trace.rows.iter().any(|r| r.orphan) {
        push_line(
            out,
            &fit(
                "? its parent span was not stored: shown at the top level",
                width,
            ),
        );
    }
    let errors: Vec<usize> = (0..trace.rows.len())
        .filter(|&i| failed(trace.rows[i].span))
        .collect();
    if !errors.is_empty() {
        push_line(out, "errors:");
        for i in errors {
            let path = one_line(&trace.path(i));
            for message in error_messages(trace.rows[i].span) {
                // The message's first line after the span's path at 2
                // spaces, the rest of it at 4, so that where one message
                // ends and the next begins shows.
                let text = format!("{path}: {message}");
                let wrapped = text.lines().flat_map(|l| wrap(&one_line(l), width - 4));
                for (n, line) in wrapped.enumerate() {
                    let indent = if n == 0 { "  " } else { "    " };
                    push_line(out, &format!("{indent}{line}"));
                }
            }
        }
    }
}

/// "original run", "resume 2".
pub(super) fn resume_text(resume: u64) -> String {
    if resume == 0 {
        "original run".to_string()
    } else {
        format!("resume {resume}")
    }
}

/// The span's bar: the cells of the timeline it covers, each end rounded
/// to the nearest cell boundary, at least one cell so that a span too
/// short to see still shows where it happened.
fn bar(trace: &Trace, span: &SpanRecord, cells: usize) -> String {
    let total = trace.duration() as u128;
    let cells_u = cells as u128;
    let at = |t: u64| {
        let offset = t.saturating_sub(trace.start) as u128;
        ((offset * cells_u + total / 2) / total).min(cells_u) as usize
    };
    let from = at(span.start_unix_nano).min(cells - 1);
    let to = at(span.end_unix_nano).max(from + 1);
    let mut out = String::with_capacity(cells * 3);
    for cell in 0..cells {
        out.push(if (from..to).contains(&cell) {
            '█'
        } else {
            ' '
        });
    }
    out
}

fn push_line(out: &mut String, line: &str) {
    let _ = writeln!(out, "{}", line.trim_end());
}

/// `text` with control characters (line breaks, tabs, escape sequences
/// that would move a terminal's cursor) as spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` cut to `width` characters, ending with `…` when cut.
pub(super) fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` broken into lines of at most `width` characters, at spaces where
/// it can, inside words that are longer than a line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = line.chars().count();
            let gap = usize::from(used > 0);
            if used + gap + word.len() <= width {
                if gap == 1 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than a whole line: split it.
            let rest = word.split_off(width);
            line.extend(word.iter());
            lines.push(std::mem::take(&mut line));
            word = rest;
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

//! A run's stored spans, viewed without a collector: as a waterfall in the
//! terminal ([`waterfall`]), as one self-contained HTML page ([`html`]),
//! or as OTLP JSON for other tools ([`otlp_json`]).
//!
//! All three start from the same model: the spans grouped into traces (one
//! per run, plus one per resume), each trace's spans as a tree in start
//! order. Stored spans are not trusted to form a proper tree: a span whose
//! parent was never stored (an exporter crashed, a batch was lost) is shown
//! at the top level and marked, and spans whose parent links go round in a
//! circle are shown the same way, so that no stored span is ever left out.

mod html;
mod otlp;
mod waterfall;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use engine::spans::{SpanLink, SpanRecord, SpanStatus, attr};

pub use html::html;
pub use otlp::otlp_json;
pub use waterfall::{WIDTH, waterfall};

/// What the viewers say about the run besides its spans.
#[derive(Debug, Clone, Copy)]
pub struct RunInfo<'a> {
    pub run_id: &'a str,
    pub dag: &'a str,
}

/// One trace: the spans of one execution of the run (the original, or a
/// resume).
#[derive(Debug)]
pub struct Trace<'a> {
    pub trace_id: &'a str,
    /// Every span of the trace in tree order: a parent, then its children
    /// by start time, each followed by its own descendants.
    pub rows: Vec<Row<'a>>,
    /// The earliest start and the latest end of the trace's spans, which
    /// the offsets and bars are relative to.
    pub start: u64,
    pub end: u64,
    /// 0 for the original run, N for its Nth resume: the root span's
    /// `flux.resume`, else the trace's place among the run's traces.
    pub resume: u64,
    /// The root span's links (a resume's root links to the original's).
    pub links: Vec<&'a SpanLink>,
}

#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub span: &'a SpanRecord,
    pub depth: usize,
    /// The span names a parent that is not among the trace's spans (or
    /// its parent links form a cycle); it is shown at the top level.
    pub orphan: bool,
    /// The index in [`Trace::rows`] of the row above it in the tree.
    pub parent: Option<usize>,
}

impl Trace<'_> {
    /// The trace's length, at least one nanosecond so that it can divide.
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start).max(1)
    }

    /// The names from the top-level span down to row `index`, without the
    /// top-level one when it is the run's root (every path would start
    /// with it): "task load › attempt 2".
    pub fn path(&self, index: usize) -> String {
        let mut names = vec![self.rows[index].span.name.as_str()];
        let mut at = self.rows[index].parent;
        while let Some(i) = at {
            let row = &self.rows[i];
            if row.parent.is_some() || row.orphan {
                names.push(&row.span.name);
            }
            at = row.parent;
        }
        names.reverse();
        names.join(" › ")
    }
}

/// The run's spans grouped into traces, the traces in order of their
/// first span's start.
pub fn traces(spans: &[SpanRecord]) -> Vec<Trace<'_>> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_trace: HashMap<&str, Vec<&SpanRecord>> = HashMap::new();
    for span in spans {
        by_trace
            .entry(&span.trace_id)
            .or_insert_with(|| {
                order.push(&span.trace_id);
                Vec::new()
            })
            .push(span);
    }
    let mut traces: Vec<Trace> = order
        .iter()
        .map(|id| build_trace(id, &by_trace[id]))
        .collect();
    // Stable: traces starting at the same nanosecond keep stored order.
    traces.sort_by_key(|t| t.start);
    for (place, trace) in traces.iter_mut().enumerate() {
        if trace.resume == u64::MAX {
            trace.resume = place as u64;
        }
    }
    traces
}

fn build_trace<'a>(trace_id: &'a str, spans: &[&'a SpanRecord]) -> Trace<'a> {
    // Spans sorted by start (stable, so stored order breaks ties): every
    // list of children built from this order is in start order too.
    let mut sorted: Vec<&SpanRecord> = spans.to_vec();
    sorted.sort_by_key(|s| s.start_unix_nano);
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, span) in sorted.iter().enumerate() {
        // A duplicated span id (not possible from the checkpoint, whose key
        // forbids it) keeps its first span as the parent of the children.
        index.entry(span.span_id.as_str()).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); sorted.len()];
    let mut tops: Vec<(usize, bool)> = Vec::new();
    for (i, span) in sorted.iter().enumerate() {
        match span.parent_span_id.as_deref().filter(|p| !p.is_empty()) {
            None => tops.push((i, false)),
            Some(parent) => match index.get(parent) {
                Some(&p) if p != i => children[p].push(i),
                _ => tops.push((i, true)),
            },
        }
    }
    let mut rows = Vec::with_capacity(sorted.len());
    let mut visited = vec![false; sorted.len()];
    for &(top, orphan) in &tops {
        visit(top, orphan, &sorted, &children, &mut visited, &mut rows);
    }
    // What is left hangs off a cycle of parent links: each such span in
    // start order becomes a top-level row with what hangs below it.
    for i in 0..sorted.len() {
        if !visited[i] {
            visit(i, true, &sorted, &children, &mut visited, &mut rows);
        }
    }
    let start = sorted.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = sorted
        .iter()
        .map(|s| s.end_unix_nano.max(s.start_unix_nano))
        .max()
        .unwrap_or(start);
    let roots: Vec<&SpanRecord> = rows
        .iter()
        .filter(|r| r.depth == 0 && !r.orphan)
        .map(|r| r.span)
        .collect();
    let resume = roots
        .iter()
        .find_map(|s| s.attribute(attr::RESUME).and_then(|v| v.as_u64()))
        // Filled in by `traces` from the trace's place once all are sorted.
        .unwrap_or(u64::MAX);
    let links = roots.iter().flat_map(|s| s.links.iter()).collect();
    Trace {
        trace_id,
        rows,
        start,
        end,
        resume,
        links,
    }
}

/// Appends `top` and its descendants in tree order. Iterative, so that a
/// very deep chain of spans cannot overflow the stack.
fn visit<'a>(
    top: usize,
    orphan: bool,
    sorted: &[&'a SpanRecord],
    children: &[Vec<usize>],
    visited: &mut [bool],
    rows: &mut Vec<Row<'a>>,
) {
    let mut stack: Vec<(usize, usize, Option<usize>)> = vec![(top, 0, None)];
    while let Some((i, depth, parent)) = stack.pop() {
        if visited[i] {
            continue;
        }
        visited[i] = true;
        let row = rows.len();
        rows.push(Row {
            span: sorted[i],
            depth,
            orphan: orphan && i == top,
            parent,
        });
        for &child in children[i].iter().rev() {
            stack.push((child, depth + 1, Some(row)));
        }
    }
}

/// `ok`, `error` or `unset`, as the viewers show a span's status.
/// The attribute a task kind's step span names what it acts on with (the
/// object an `s3.put` writes, the query an `athena.query` runs).
pub const STEP_TARGET: &str = "flux.step.target";

/// How a span is labelled in the waterfall and the page: its name, and
/// for a step what it acts on, so that four `s3.put` rows say which
/// object each wrote.
pub fn display_name(span: &SpanRecord) -> String {
    match span.attribute(STEP_TARGET).and_then(|v| v.as_str()) {
        Some(target) if !target.is_empty() => {
            let target = target.lines().next().unwrap_or(target);
            format!("{} {target}", span.name)
        }
        _ => span.name.clone(),
    }
}

pub fn status_word(status: &SpanStatus) -> &'static str {
    match status {
        SpanStatus::Unset => "unset",
        SpanStatus::Ok => "ok",
        SpanStatus::Error { .. } => "error",
    }
}

/// What went wrong in `span`: its error status's message, then the
/// `exception.message` of each `exception` event that says something
/// else. Empty for a span with neither.
pub fn error_messages(span: &SpanRecord) -> Vec<String> {
    let mut messages: Vec<String> = Vec::new();
    if let SpanStatus::Error { message } = &span.status {
        messages.push(message.clone());
    }
    for event in span.events.iter().filter(|e| e.name == "exception") {
        let message = event
            .attributes
            .iter()
            .find(|(k, _)| k == "exception.message")
            .map(|(_, v)| value_text(v))
            .unwrap_or_default();
        if !messages.contains(&message) {
            messages.push(message);
        }
    }
    messages.retain(|m| !m.is_empty());
    if messages.is_empty() && matches!(span.status, SpanStatus::Error { .. }) {
        messages.push("(no message)".to_string());
    }
    messages
}

/// Whether the viewers list `span` among the errors.
pub fn failed(span: &SpanRecord) -> bool {
    matches!(span.status, SpanStatus::Error { .. })
        || span.events.iter().any(|e| e.name == "exception")
}

/// An attribute value as text: strings as they are, anything else as JSON.
pub fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A duration the way the viewers write it: short, and precise enough to
/// compare attempts: `850ns`, `420µs`, `12.5ms`, `1.50s`, `2m05s`,
/// `3h07m`.
pub fn format_duration(nanos: u64) -> String {
    const MICRO: u64 = 1_000;
    const MILLI: u64 = 1_000_000;
    const SECOND: u64 = 1_000_000_000;
    match nanos {
        0 => "0s".to_string(),
        n if n < MICRO => format!("{n}ns"),
        n if n < MILLI => format!("{}µs", n / MICRO),
        n if n < SECOND => format!("{:.1}ms", n as f64 / MILLI as f64),
        n if n < 60 * SECOND => format!("{:.2}s", n as f64 / SECOND as f64),
        n if n < 3600 * SECOND => {
            let s = n / SECOND;
            format!("{}m{:02}s", s / 60, s % 60)
        }
        n => {
            let m = n / SECOND / 60;
            format!("{}h{:02}m", m / 60, m % 60)
        }
    }
}

/// A span's start time as UTC, to the millisecond.
pub fn format_time(unix_nano: u64) -> String {
    i64::try_from(unix_nano)
        .ok()
        .map(chrono::DateTime::from_timestamp_nanos)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| format!("{unix_nano} ns"))
}

//! The trace page: one self-contained HTML file (inline CSS, no script,
//! nothing fetched) with each trace's span tree, a bar per span placed on
//! the trace's timeline, and a `<details>` per span with its times,
//! attributes, events, links and errors. Every piece of text from a span
//! is escaped.

use std::fmt::Write;

use super::{
    RunInfo, Trace, display_name, error_messages, failed, format_duration, format_time,
    status_word, value_text,
};
use crate::escape;
use engine::spans::SpanRecord;

/// The page's style: system fonts, nothing to download. Bars are
/// absolutely positioned inside their row's track, in percent of the
/// trace's duration, so the page needs no script to lay them out.
const STYLE: &str = "\
:root{--fg:#1f2933;--muted:#616e7c;--line:#d9e2ec;--panel:#f5f7fa;--accent:#2f6fab;--bad:#b42318;--bad-bg:#fdecea}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1200px;padding:28px 20px 48px;color:var(--fg);background:#fff;font:14px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,Arial,sans-serif}
h1{font-size:24px;margin:0 0 4px;overflow-wrap:anywhere}
h2{font-size:17px;margin:0 0 4px;overflow-wrap:anywhere}
h3{font-size:14px;margin:14px 0 6px}
.sub,.meta{color:var(--muted);margin:0 0 10px;overflow-wrap:anywhere}
section.trace{margin:0 0 40px}
.grid{display:grid;grid-template-columns:minmax(180px,32%) 1fr 80px 56px;grid-template-areas:\"name track dur st\";gap:0 10px;align-items:center}
.grid>.name{grid-area:name}.grid>.track,.grid>.axis,.grid>.timeline{grid-area:track}.grid>.dur{grid-area:dur}.grid>.st{grid-area:st}
.axis{position:relative;height:16px;font-size:11px;color:var(--muted);border-bottom:1px solid var(--line)}
.axis .tick{position:absolute;top:0;transform:translateX(-50%);white-space:nowrap;font-variant-numeric:tabular-nums}
.axis .tick.first{transform:none}.axis .tick.last{transform:translateX(-100%)}
.head{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;border-bottom:1px solid var(--line);padding:2px 4px}
details.span{border-bottom:1px solid var(--line)}
details.span>summary{list-style:none;cursor:pointer;padding:2px 4px}
details.span>summary::-webkit-details-marker{display:none}
details.span[open]>summary{background:var(--panel)}
.name{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.track{position:relative;height:14px;background:var(--panel);border-radius:2px}
.bar{position:absolute;top:2px;bottom:2px;min-width:2px;background:var(--accent);border-radius:2px}
.dur{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.st{font-size:12px;color:var(--muted)}
.err>summary .bar{background:var(--bad)}
.err>summary .st,.err>summary .name{color:var(--bad);font-weight:600}
.orphan{color:var(--muted);font-style:italic}
.body{padding:6px 12px 12px 24px;font-size:13px}
table{border-collapse:collapse;margin:4px 0}
th,td{padding:2px 10px 2px 0;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{font-weight:600;color:var(--muted);white-space:nowrap}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
pre.error{white-space:pre-wrap;overflow-wrap:anywhere;color:var(--bad);background:var(--bad-bg);padding:6px 8px;border-radius:4px;margin:4px 0}
.errors{margin-top:14px;background:var(--bad-bg);border-radius:6px;padding:8px 14px}
.errors h3{margin-top:0;color:var(--bad)}
.empty{color:var(--muted);font-style:italic}
/* Phones: the timeline gets a row of its own under the span's name. */
@media (max-width:639px){body{padding:20px 12px 40px}.grid{grid-template-columns:1fr auto auto;grid-template-areas:\"name dur st\" \"track track track\";gap:2px 8px}.head>.timeline{display:none}.axis-row>.name,.axis-row>.dur,.axis-row>.st{display:none}.body{padding:6px 4px 10px 8px}}
@media print{body{max-width:none;padding:0}details.span{break-inside:avoid}}
";

/// The whole page for the run's spans.
pub fn html(run: RunInfo, spans: &[SpanRecord]) -> String {
    let traces = super::traces(spans);
    let mut out = String::new();
    let title = escape(&format!("trace of run {} ({})", run.run_id, run.dag));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<header>\n\
         <h1>Run {} · dag {}</h1>\n<p class=\"sub\">{} trace{} · {} span{} · the original run first, then each resume</p>\n</header>\n",
        escape(run.run_id),
        escape(run.dag),
        traces.len(),
        if traces.len() == 1 { "" } else { "s" },
        spans.len(),
        if spans.len() == 1 { "" } else { "s" },
    );
    if traces.is_empty() {
        out.push_str("<p class=\"empty\">No spans are stored for this run.</p>\n");
    }
    for trace in &traces {
        render_trace(&mut out, trace, &traces);
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn anchor(trace_id: &str) -> String {
    escape(&format!("trace-{trace_id}"))
}

fn render_trace(out: &mut String, trace: &Trace, all: &[Trace]) {
    let _ = writeln!(
        out,
        "<section class=\"trace\" id=\"{}\">\n<h2>Trace <code>{}</code> · {}</h2>",
        anchor(trace.trace_id),
        escape(trace.trace_id),
        super::waterfall::resume_text(trace.resume)
    );
    let _ = write!(
        out,
        "<p class=\"meta\">started {} · took {}",
        escape(&format_time(trace.start)),
        escape(&format_duration(trace.end.saturating_sub(trace.start)))
    );
    for link in &trace.links {
        match all.iter().find(|t| t.trace_id == link.trace_id) {
            Some(linked) => {
                let _ = write!(
                    out,
                    " · follows <a href=\"#{}\">trace <code>{}</code> ({})</a>",
                    anchor(&link.trace_id),
                    escape(&link.trace_id),
                    super::waterfall::resume_text(linked.resume)
                );
            }
            None => {
                let _ = write!(
                    out,
                    " · links to trace <code>{}</code> span <code>{}</code>",
                    escape(&link.trace_id),
                    escape(&link.span_id)
                );
            }
        }
    }
    out.push_str("</p>\n");
    if let Some(root) = trace.rows.first().map(|r| r.span)
        && !root.resource.is_empty()
    {
        out.push_str("<details><summary>resource</summary>\n");
        attributes_table(out, &root.resource);
        out.push_str("</details>\n");
    }
    out.push_str(
        "<div class=\"grid head\"><span class=\"name\">span</span><span class=\"timeline\">timeline</span><span class=\"dur\">duration</span><span class=\"st\">status</span></div>\n",
    );
    time_axis(out, trace.duration());
    for (i, row) in trace.rows.iter().enumerate() {
        let span = row.span;
        let total = trace.duration() as f64;
        let left = span.start_unix_nano.saturating_sub(trace.start) as f64 / total * 100.0;
        let width = span.duration_nanos() as f64 / total * 100.0;
        let class = if failed(span) { "span err" } else { "span" };
        let _ = write!(
            out,
            "<details class=\"{class}\"><summary class=\"grid\" title=\"{}\">\
             <span class=\"name\" style=\"padding-left:{}px\">{}{}</span>\
             <span class=\"track\"><span class=\"bar\" style=\"left:{left:.3}%;width:{width:.3}%\"></span></span>\
             <span class=\"dur\">{}</span><span class=\"st\">{}</span></summary>\n<div class=\"body\">\n",
            escape(&trace.path(i)),
            row.depth.min(20) * 16,
            if row.orphan {
                "<span class=\"orphan\">(parent not stored)</span> "
            } else {
                ""
            },
            escape(&display_name(span)),
            escape(&format_duration(span.duration_nanos())),
            status_word(&span.status),
        );
        for message in error_messages(span) {
            let _ = writeln!(out, "<pre class=\"error\">{}</pre>", escape(&message));
        }
        let mut facts: Vec<(String, serde_json::Value)> = vec![
            ("start".into(), format_time(span.start_unix_nano).into()),
            (
                "offset".into(),
                format!(
                    "+{}",
                    format_duration(span.start_unix_nano.saturating_sub(trace.start))
                )
                .into(),
            ),
            (
                "duration".into(),
                format_duration(span.duration_nanos()).into(),
            ),
            ("kind".into(), span.kind.clone().into()),
            ("span id".into(), span.span_id.clone().into()),
        ];
        if let Some(parent) = &span.parent_span_id {
            facts.push(("parent span id".into(), parent.clone().into()));
        }
        attributes_table(out, &facts);
        if !span.attributes.is_empty() {
            out.push_str("<h3>attributes</h3>\n");
            attributes_table(out, &span.attributes);
        }
        if !span.events.is_empty() {
            out.push_str("<h3>events</h3>\n");
            for event in &span.events {
                let _ = writeln!(
                    out,
                    "<div><code>+{}</code> {}</div>",
                    escape(&format_duration(
                        event.time_unix_nano.saturating_sub(span.start_unix_nano)
                    )),
                    escape(&event.name)
                );
                attributes_table(out, &event.attributes);
            }
        }
        if !span.links.is_empty() {
            out.push_str("<h3>links</h3>\n");
            for link in &span.links {
                let _ = writeln!(
                    out,
                    "<div>trace <a href=\"#{}\"><code>{}</code></a> span <code>{}</code></div>",
                    anchor(&link.trace_id),
                    escape(&link.trace_id),
                    escape(&link.span_id)
                );
                attributes_table(out, &link.attributes);
            }
        }
        out.push_str("</div>\n</details>\n");
    }
    let errors: Vec<usize> = (0..trace.rows.len())
        .filter(|&i| failed(trace.rows[i].span))
        .collect();
    if !errors.is_empty() {
        out.push_str("<div class=\"errors\">\n<h3>errors</h3>\n");
        for i in errors {
            for message in error_messages(trace.rows[i].span) {
                let _ = writeln!(
                    out,
                    "<div><strong>{}</strong><pre class=\"error\">{}</pre></div>",
                    escape(&trace.path(i)),
                    escape(&message)
                );
            }
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
}

/// The time axis over the timeline column: offsets from the trace's
/// start at a quarter of its length each.
fn time_axis(out: &mut String, total_nanos: u64) {
    out.push_str(
        "<div class=\"grid axis-row\" aria-hidden=\"true\"><span class=\"name\"></span><span class=\"axis\">",
    );
    for quarter in 0..=4u64 {
        let class = match quarter {
            0 => "tick first",
            4 => "tick last",
            _ => "tick",
        };
        let at = total_nanos / 4 * quarter + total_nanos % 4 * quarter / 4;
        let _ = write!(
            out,
            "<span class=\"{class}\" style=\"left:{}%\">{}</span>",
            quarter * 25,
            escape(&if quarter == 0 {
                "0s".to_string()
            } else {
                format!("+{}", format_duration(at))
            })
        );
    }
    out.push_str("</span><span class=\"dur\"></span><span class=\"st\"></span></div>\n");
}

fn attributes_table(out: &mut String, attributes: &[(String, serde_json::Value)]) {
    if attributes.is_empty() {
        return;
    }
    out.push_str("<table>\n");
    for (key, value) in attributes {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(key),
            escape(&value_text(value))
        );
    }
    out.push_str("</table>\n");
}

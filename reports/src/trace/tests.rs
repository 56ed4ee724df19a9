use super::*;
use crate::escape;
use engine::spans::{SpanEvent, SpanLink, SpanRecord, SpanStatus};
use serde_json::json;

/// 2026-11-30 20:00:00 UTC.
const T0: u64 = 1_796_068_800_000_000_000;
const MS: u64 = 1_000_000;
const TRACE_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
const TRACE_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";
const TIMEOUT: &str = "timed out after 1s";
const EXIT: &str = "exit code 3 <b>report</b> & more";
const EXCEPTION: &str = "KeyError: 'city' in <module>";

fn sid(n: u32) -> String {
    format!("{n:016x}")
}

/// A span of trace `trace` from `start_ms` to `end_ms` after T0.
fn span(
    trace: &str,
    id: u32,
    parent: Option<u32>,
    name: &str,
    start_ms: u64,
    end_ms: u64,
) -> SpanRecord {
    SpanRecord {
        trace_id: trace.to_string(),
        span_id: sid(id),
        parent_span_id: parent.map(sid),
        name: name.to_string(),
        kind: "internal".to_string(),
        start_unix_nano: T0 + start_ms * MS,
        end_unix_nano: T0 + end_ms * MS,
        status: SpanStatus::Ok,
        attributes: vec![("flux.run_id".to_string(), json!("r-1"))],
        events: vec![],
        links: vec![],
        resource: vec![
            ("service.name".to_string(), json!("flux-engine")),
            ("service.version".to_string(), json!("0.1.0")),
            ("host.name".to_string(), json!("box")),
        ],
        scope: "flux-engine".to_string(),
    }
}

fn failing(mut s: SpanRecord, message: &str) -> SpanRecord {
    s.status = SpanStatus::Error {
        message: message.to_string(),
    };
    s
}

/// A run with a retried task (two attempts 2 s apart), a failing task
/// with an exception event, a span whose parent was never stored, and a
/// resume whose root links to the original's root.
fn run_spans() -> Vec<SpanRecord> {
    let mut root = span(TRACE_A, 1, None, "run rental", 0, 10_000);
    root.attributes.push(("flux.dag".into(), json!("rental")));
    let mut attempt = failing(span(TRACE_A, 8, Some(7), "attempt 1", 6_500, 7_000), EXIT);
    attempt.events.push(SpanEvent {
        name: "exception".into(),
        time_unix_nano: T0 + 6_900 * MS,
        attributes: vec![("exception.message".into(), json!(EXCEPTION))],
    });
    attempt.attributes.push(("flux.attempt".into(), json!(1)));
    attempt
        .attributes
        .push(("tags".into(), json!(["a", true, 1.5])));
    let mut resumed = span(TRACE_B, 11, None, "run rental", 60_000, 62_000);
    resumed.attributes.push(("flux.resume".into(), json!(1)));
    resumed.links.push(SpanLink {
        trace_id: TRACE_A.into(),
        span_id: sid(1),
        attributes: vec![],
    });
    vec![
        // Stored out of order: the trace of the resume first.
        resumed,
        span(TRACE_B, 12, Some(11), "task report", 60_100, 61_900),
        span(TRACE_B, 13, Some(12), "attempt 2", 60_100, 61_900),
        root,
        span(TRACE_A, 4, Some(1), "task load", 1_200, 6_200),
        failing(
            span(TRACE_A, 5, Some(4), "attempt 1", 1_200, 2_200),
            TIMEOUT,
        ),
        span(TRACE_A, 6, Some(4), "attempt 2", 4_200, 6_200),
        span(TRACE_A, 2, Some(1), "task extract", 100, 1_100),
        span(TRACE_A, 3, Some(2), "attempt 1", 100, 1_100),
        failing(
            span(TRACE_A, 7, Some(1), "task report", 6_500, 7_000),
            "attempt 1 failed",
        ),
        attempt,
        span(TRACE_A, 9, Some(0xdead), "s3.put", 7_500, 8_000),
    ]
}

fn info() -> RunInfo<'static> {
    RunInfo {
        run_id: "r-1",
        dag: "rental",
    }
}

fn shape(trace: &Trace) -> Vec<(String, usize, bool)> {
    trace
        .rows
        .iter()
        .map(|r| (r.span.name.clone(), r.depth, r.orphan))
        .collect()
}

#[test]
fn spans_become_traces_in_time_order_each_a_tree_with_orphans_at_the_top() {
    let spans = run_spans();
    let traces = traces(&spans);
    assert_eq!(traces.len(), 2);
    let (a, b) = (&traces[0], &traces[1]);
    assert_eq!(a.trace_id, TRACE_A);
    assert_eq!(a.resume, 0);
    assert!(a.links.is_empty());
    let expected: Vec<(String, usize, bool)> = [
        ("run rental", 0, false),
        ("task extract", 1, false),
        ("attempt 1", 2, false),
        ("task load", 1, false),
        ("attempt 1", 2, false),
        ("attempt 2", 2, false),
        ("task report", 1, false),
        ("attempt 1", 2, false),
        ("s3.put", 0, true),
    ]
    .iter()
    .map(|(n, d, o)| (n.to_string(), *d, *o))
    .collect();
    assert_eq!(shape(a), expected);
    assert_eq!((a.start, a.end), (T0, T0 + 10_000 * MS));
    assert_eq!(b.trace_id, TRACE_B);
    assert_eq!(b.resume, 1);
    assert_eq!(b.links.len(), 1);
    assert_eq!(b.links[0].trace_id, TRACE_A);
    assert_eq!(b.links[0].span_id, sid(1));
    assert_eq!(shape(b).len(), 3);
    assert_eq!(a.path(5), "task load › attempt 2");
    assert_eq!(a.path(8), "s3.put");
}

#[test]
fn spans_whose_parents_form_a_cycle_are_all_still_shown() {
    let spans = vec![
        span(TRACE_A, 1, Some(2), "x", 0, 10),
        span(TRACE_A, 2, Some(1), "y", 5, 10),
        span(TRACE_A, 3, Some(3), "self", 6, 10),
        span(TRACE_A, 4, Some(2), "under y", 7, 8),
    ];
    let traces = traces(&spans);
    let mut names: Vec<String> = traces[0].rows.iter().map(|r| r.span.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["self", "under y", "x", "y"]);
    assert!(traces[0].rows.iter().any(|r| r.orphan));
}

#[test]
fn a_resume_without_flux_resume_is_numbered_by_its_place() {
    let mut spans = run_spans();
    for s in &mut spans {
        s.attributes.retain(|(k, _)| k != "flux.resume");
    }
    let traces = traces(&spans);
    assert_eq!(traces.iter().map(|t| t.resume).collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn durations_are_short_and_keep_their_unit() {
    let cases = [
        (0, "0s"),
        (850, "850ns"),
        (420_000, "420µs"),
        (12_500_000, "12.5ms"),
        (1_500_000_000, "1.50s"),
        (125_000_000_000, "2m05s"),
        ((3 * 3600 + 7 * 60) * 1_000_000_000, "3h07m"),
    ];
    for (nanos, text) in cases {
        assert_eq!(format_duration(nanos), text, "{nanos} ns");
    }
}

/// The cells of a waterfall line's bar that are filled.
fn filled(line: &str) -> Vec<usize> {
    let bar: Vec<char> = line
        .split('|')
        .nth(1)
        .unwrap_or_else(|| panic!("no bar in {line:?}"))
        .chars()
        .collect();
    (0..bar.len()).filter(|&i| bar[i] == '█').collect()
}

#[test]
fn the_waterfall_has_a_line_per_span_with_offsets_durations_bars_and_statuses() {
    let spans = run_spans();
    let text = waterfall(info(), &spans, WIDTH);
    for line in text.lines() {
        assert!(
            line.chars().count() <= WIDTH,
            "{} columns: {line:?}",
            line.chars().count()
        );
    }
    let lines: Vec<&str> = text.lines().collect();
    let find = |prefix: &str, after: usize| -> usize {
        (after..lines.len())
            .find(|&i| lines[i].trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} after {after}:\n{text}"))
    };
    let header_a = find(&format!("trace {TRACE_A}"), 0);
    let header_b = find(&format!("trace {TRACE_B}"), 0);
    assert!(header_a < header_b, "{text}");
    assert!(lines[0].contains("r-1") && lines[0].contains("rental"));
    assert!(lines[header_a].ends_with("· original run"), "{text}");
    assert!(lines[header_b].ends_with("· resume 1"), "{text}");
    // Each trace's header names the run and the DAG.
    for header in [header_a, header_b] {
        assert!(
            lines[header + 1] == "run r-1 · dag rental"
                && lines[header + 2].starts_with("started 2026-11-30 20:0"),
            "{text}"
        );
    }
    assert!(
        lines[header_b..]
            .iter()
            .any(|l| l.contains(&format!("follows trace {TRACE_A} (original run)"))),
        "{text}"
    );

    let load = find("task load", header_a);
    let first = find("attempt 1", load);
    let second = find("attempt 2", load);
    assert_eq!(second, first + 1, "{text}");
    // Indented one level under the task.
    let indent = |l: &str| l.len() - l.trim_start().len();
    assert_eq!(indent(lines[first]), indent(lines[load]) + 2);
    // Offsets, durations and statuses, from the spans' times.
    let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
    assert!(words(first).contains(&"+1.20s") && words(first).contains(&"1.00s"));
    assert!(words(second).contains(&"+4.20s") && words(second).contains(&"2.00s"));
    assert_eq!(words(first).last(), Some(&"error"));
    assert_eq!(words(second).last(), Some(&"ok"));
    // The bars: 1.2 s to 2.2 s and 4.2 s to 6.2 s of a 10 s trace on the
    // same timeline, the retry's delay blank between them.
    let (a1, a2) = (filled(lines[first]), filled(lines[second]));
    let cells = lines[first].split('|').nth(1).unwrap().chars().count() as f64;
    assert_eq!(a1[0], (0.12 * cells).round() as usize);
    assert_eq!(*a1.last().unwrap(), (0.22 * cells).round() as usize - 1);
    assert_eq!(a2[0], (0.42 * cells).round() as usize);
    assert_eq!(*a2.last().unwrap(), (0.62 * cells).round() as usize - 1);
    assert!(a1.last().unwrap() + 1 < a2[0], "no gap: {text}");
    // The root spans the whole timeline.
    let root = find("run rental", header_a);
    assert_eq!(filled(lines[root]).len(), cells as usize);

    // The orphan is at the top level and marked.
    let orphan = find("?s3.put", header_a);
    assert!(orphan < header_b);
    assert!(text.contains("parent span was not stored"));

    // The errors footer of trace A has every message, with the span.
    let errors = find("errors:", header_a);
    assert!(errors < header_b);
    let footer = lines[errors..header_b].join("\n");
    for needle in [
        format!("task load › attempt 1: {TIMEOUT}"),
        format!("task report › attempt 1: {EXIT}"),
        format!("task report › attempt 1: {EXCEPTION}"),
        "task report: attempt 1 failed".to_string(),
    ] {
        assert!(footer.contains(&needle), "{needle:?} not in\n{footer}");
    }
}

#[test]
fn long_names_and_messages_are_cut_or_wrapped_to_the_width() {
    let long = "a_task_with_a_name_much_longer_than_the_column";
    let mut spans = vec![
        span(TRACE_A, 1, None, "run d", 0, 1_000),
        failing(
            span(TRACE_A, 2, Some(1), &format!("task {long}"), 0, 500),
            &format!("{}\nsecond line {}", "word ".repeat(40), "x".repeat(200)),
        ),
    ];
    spans[0].name = format!("run {long}\u{1b}[2J");
    for width in [WIDTH, 100, 10] {
        let text = waterfall(info(), &spans, width);
        for line in text.lines() {
            assert!(line.chars().count() <= width.max(60), "{width}: {line:?}");
            assert!(!line.contains('\u{1b}'), "{line:?}");
        }
        assert!(text.contains("…"), "{text}");
        assert!(text.contains("second line"), "{text}");
        // Wrapped, not cut: all 200 x's are there.
        assert_eq!(text.matches('x').count(), 200, "{text}");
    }
}

#[test]
fn the_page_has_every_span_error_and_attribute_escaped_and_nothing_fetched() {
    let spans = run_spans();
    let page = html(info(), &spans);
    for span in &spans {
        assert!(page.contains(&escape(&span.name)), "{}", span.name);
        assert!(page.contains(&span.span_id));
    }
    for message in [TIMEOUT, EXIT, EXCEPTION, "attempt 1 failed"] {
        assert!(page.contains(&escape(message)), "{message}");
    }
    assert!(!page.contains("<b>report</b>"));
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert!(!page.contains("<script"));
    assert!(!page.contains("<link"));
    // Both traces, and the resume's link to the original's section.
    assert!(page.contains(&format!("id=\"trace-{TRACE_A}\"")));
    assert!(page.contains(&format!("id=\"trace-{TRACE_B}\"")));
    assert!(page.contains(&format!("href=\"#trace-{TRACE_A}\"")));
    // The retried attempt's bar: from 42% to 62% of the 10 s trace.
    assert!(page.contains("left:42.000%;width:20.000%"), "{page}");
    // Failed spans are marked, and their count matches.
    let failed_spans = spans.iter().filter(|s| failed(s)).count();
    assert_eq!(
        page.matches("<details class=\"span err\">").count(),
        failed_spans
    );
    assert_eq!(page.matches("<details class=\"span").count(), spans.len());
    // Attributes and the resource.
    assert!(page.contains("<th>flux.attempt</th><td>1</td>"));
    assert!(page.contains("<th>host.name</th><td>box</td>"));
    assert!(page.contains("(parent not stored)"));
}

#[test]
fn a_page_without_spans_says_so() {
    let page = html(info(), &[]);
    assert!(page.contains("No spans are stored"));
    assert!(page.ends_with("</html>\n"));
}

#[test]
fn otlp_json_follows_the_protobuf_json_mapping() {
    let spans = run_spans();
    let request = otlp_json(&spans);
    let resource_spans = request["resourceSpans"].as_array().unwrap();
    assert_eq!(resource_spans.len(), 1);
    let attributes = resource_spans[0]["resource"]["attributes"]
        .as_array()
        .unwrap();
    assert_eq!(
        attributes[0],
        json!({"key": "service.name", "value": {"stringValue": "flux-engine"}})
    );
    let scope_spans = resource_spans[0]["scopeSpans"].as_array().unwrap();
    assert_eq!(scope_spans.len(), 1);
    assert_eq!(scope_spans[0]["scope"]["name"], "flux-engine");
    let out = scope_spans[0]["spans"].as_array().unwrap();
    assert_eq!(out.len(), spans.len());
    for (json, span) in out.iter().zip(&spans) {
        assert_eq!(json["traceId"], span.trace_id.as_str());
        assert_eq!(json["spanId"], span.span_id.as_str());
        assert_eq!(
            json.get("parentSpanId").and_then(|v| v.as_str()),
            span.parent_span_id.as_deref()
        );
        assert_eq!(json["startTimeUnixNano"], span.start_unix_nano.to_string());
        assert_eq!(json["endTimeUnixNano"], span.end_unix_nano.to_string());
        assert_eq!(json["kind"], 1);
        let code = match &span.status {
            SpanStatus::Unset => 0,
            SpanStatus::Ok => 1,
            SpanStatus::Error { .. } => 2,
        };
        assert_eq!(json["status"]["code"], code);
    }
    let attempt = out.iter().find(|s| s["spanId"] == sid(8).as_str()).unwrap();
    assert_eq!(attempt["status"]["message"], EXIT);
    let attrs = attempt["attributes"].as_array().unwrap();
    assert!(attrs.contains(&json!({"key": "flux.attempt", "value": {"intValue": "1"}})));
    assert!(
        attrs.contains(&json!({"key": "tags", "value": {"arrayValue": {"values": [
            {"stringValue": "a"}, {"boolValue": true}, {"doubleValue": 1.5}
        ]}}}))
    );
    assert_eq!(
        attempt["events"][0],
        json!({
            "timeUnixNano": (T0 + 6_900 * MS).to_string(),
            "name": "exception",
            "attributes": [{"key": "exception.message", "value": {"stringValue": EXCEPTION}}],
        })
    );
    let resumed = &out[0];
    assert_eq!(
        resumed["links"],
        json!([{"traceId": TRACE_A, "spanId": sid(1), "attributes": []}])
    );
}

#[test]
fn spans_of_other_resources_and_scopes_get_groups_of_their_own() {
    let mut spans = run_spans();
    spans[1].resource[2].1 = json!("other-host");
    spans[2].scope = "flux-engine.tasks".into();
    spans[3].kind = "client".into();
    let request = otlp_json(&spans);
    let groups = request["resourceSpans"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let counts: Vec<usize> = groups[0]["scopeSpans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spans"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, [spans.len() - 2, 1]);
    assert_eq!(
        groups[1]["scopeSpans"][0]["spans"][0]["spanId"],
        sid(12).as_str()
    );
    // The same attributes in another order are the same resource.
    let mut reordered = run_spans();
    reordered[0].resource.reverse();
    let request = otlp_json(&reordered);
    assert_eq!(request["resourceSpans"].as_array().unwrap().len(), 1);
    assert_eq!(otlp::span_kind("client"), 3);
    assert_eq!(otlp::span_kind("SPAN_KIND_SERVER"), 2);
    assert_eq!(otlp::span_kind("mystery"), 0);
}

/// Steps are labelled with what they act on: four uploads are four
/// different rows, in the waterfall and on the page.
#[test]
fn step_rows_say_which_object_they_wrote() {
    let mut spans = vec![span(TRACE_A, 1, None, "run rental", 0, 1_000)];
    for (i, file) in [
        "locations.csv",
        "users.csv",
        "vehicles.csv",
        "rental_transactions.csv",
    ]
    .iter()
    .enumerate()
    {
        let mut put = span(TRACE_A, 2 + i as u32, Some(1), "s3.put", 10, 20);
        put.attributes.push((
            STEP_TARGET.to_string(),
            json!(format!("s3://flux-rental/raw/{file}")),
        ));
        spans.push(put);
    }
    let text = waterfall(info(), &spans, 160);
    let page = html(info(), &spans);
    for file in [
        "locations.csv",
        "users.csv",
        "vehicles.csv",
        "rental_transactions.csv",
    ] {
        let label = format!("s3.put s3://flux-rental/raw/{file}");
        assert!(text.contains(&label), "{label} in\n{text}");
        assert!(page.contains(&escape(&label)), "{label} on the page");
    }
    // A span without a target keeps its name alone.
    assert!(text.contains("run rental"));
}

//! `flux-engine trace`: spans stored in a state dir's checkpoint through
//! the engine's API, viewed by the real binary as a waterfall, an HTML page
//! and OTLP JSON.
//!
//! The OTLP JSON is checked by an independent parser: the OpenTelemetry
//! protobuf classes (`opentelemetry-proto` on PyPI) and protobuf's own
//! `json_format.Parse`, which rejects unknown fields and wrongly typed
//! values. Without them that test says SKIPPED loudly and passes, unless
//! `FLUX_REQUIRE_CHECKERS=1` (CI).

mod common;

use std::process::{Command, Stdio};

use common::*;
use engine::spans::{SpanEvent, SpanLink, SpanRecord, SpanStatus};
use engine::state_dir::StateDir;
use serde_json::{Value, json};

const RUN: &str = "r-20261130-trace";
const DAG: &str = "rental";
/// 2026-11-30 20:00:00 UTC.
const T0: u64 = 1_796_068_800_000_000_000;
const MS: u64 = 1_000_000;
const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";
const TIMEOUT: &str = "attempt timed out after 1s";
const EXIT: &str = "exit code 3 from <report.py> & friends";
const EXCEPTION: &str = "KeyError: 'city'";

fn sid(n: u32) -> String {
    format!("{n:016x}")
}

fn span(
    trace: &str,
    id: u32,
    parent: Option<u32>,
    name: &str,
    from_ms: u64,
    to_ms: u64,
) -> SpanRecord {
    SpanRecord {
        trace_id: trace.to_string(),
        span_id: sid(id),
        parent_span_id: parent.map(sid),
        name: name.to_string(),
        kind: "internal".to_string(),
        start_unix_nano: T0 + from_ms * MS,
        end_unix_nano: T0 + to_ms * MS,
        status: SpanStatus::Ok,
        attributes: vec![
            ("flux.run_id".to_string(), json!(RUN)),
            ("flux.dag".to_string(), json!(DAG)),
        ],
        events: vec![],
        links: vec![],
        resource: vec![
            ("service.name".to_string(), json!("flux-engine")),
            ("service.version".to_string(), json!("0.1.0")),
            ("host.name".to_string(), json!("build-1")),
        ],
        scope: "flux-engine".to_string(),
    }
}

fn with_task(mut s: SpanRecord, task: &str, attempt: Option<i64>) -> SpanRecord {
    s.attributes.push(("flux.task_id".into(), json!(task)));
    s.attributes.push(("flux.task_type".into(), json!("shell")));
    if let Some(n) = attempt {
        s.attributes.push(("flux.attempt".into(), json!(n)));
    }
    s
}

fn failing(mut s: SpanRecord, message: &str) -> SpanRecord {
    s.status = SpanStatus::Error {
        message: message.to_string(),
    };
    s.attributes.push(("flux.status".into(), json!("failed")));
    s.events.push(SpanEvent {
        name: "exception".into(),
        time_unix_nano: s.end_unix_nano,
        attributes: vec![("exception.message".into(), json!(message))],
    });
    s
}

/// The run's spans, and the waterfall's rows in the order expected: the
/// original trace (a retried task whose attempts are 2 s apart, a failing
/// task whose attempt also recorded an exception of its own), then the
/// resume, whose root links to the original's.
fn fixture() -> (Vec<SpanRecord>, Vec<(&'static str, usize)>) {
    let mut report_attempt = failing(
        with_task(
            span(TRACE_A, 8, Some(7), "attempt 1", 6_500, 7_000),
            "report",
            Some(1),
        ),
        EXIT,
    );
    report_attempt.events.push(SpanEvent {
        name: "exception".into(),
        time_unix_nano: T0 + 6_900 * MS,
        attributes: vec![
            ("exception.type".into(), json!("KeyError")),
            ("exception.message".into(), json!(EXCEPTION)),
        ],
    });
    report_attempt
        .attributes
        .push(("flux.outputs".into(), json!(["a.csv", "b.csv"])));
    report_attempt
        .attributes
        .push(("ratio".into(), json!(0.25)));
    report_attempt
        .attributes
        .push(("cached".into(), json!(false)));
    let mut resumed = span(TRACE_B, 21, None, "run rental", 60_000, 62_500);
    resumed.attributes.push(("flux.resume".into(), json!(1)));
    resumed.links.push(SpanLink {
        trace_id: TRACE_A.into(),
        span_id: sid(1),
        attributes: vec![("flux.link".into(), json!("resumes"))],
    });
    let spans = vec![
        span(TRACE_A, 1, None, "run rental", 0, 10_000),
        with_task(
            span(TRACE_A, 2, Some(1), "task extract", 100, 1_100),
            "extract",
            None,
        ),
        with_task(
            span(TRACE_A, 3, Some(2), "attempt 1", 100, 1_100),
            "extract",
            Some(1),
        ),
        with_task(
            span(TRACE_A, 4, Some(1), "task load", 1_200, 6_200),
            "load",
            None,
        ),
        failing(
            with_task(
                span(TRACE_A, 5, Some(4), "attempt 1", 1_200, 2_200),
                "load",
                Some(1),
            ),
            TIMEOUT,
        ),
        with_task(
            span(TRACE_A, 6, Some(4), "attempt 2", 4_200, 6_200),
            "load",
            Some(2),
        ),
        failing(
            with_task(
                span(TRACE_A, 7, Some(1), "task report", 6_500, 7_000),
                "report",
                None,
            ),
            EXIT,
        ),
        report_attempt,
        span(TRACE_A, 9, Some(8), "s3.put", 6_600, 6_650),
        resumed,
        with_task(
            span(TRACE_B, 22, Some(21), "task report", 60_100, 62_400),
            "report",
            None,
        ),
        with_task(
            span(TRACE_B, 23, Some(22), "attempt 2", 60_100, 62_400),
            "report",
            Some(2),
        ),
    ];
    let rows = vec![
        ("run rental", 0),
        ("task extract", 1),
        ("attempt 1", 2),
        ("task load", 1),
        ("attempt 1", 2),
        ("attempt 2", 2),
        ("task report", 1),
        ("attempt 1", 2),
        ("s3.put", 3),
        ("run rental", 0),
        ("task report", 1),
        ("attempt 2", 2),
    ];
    (spans, rows)
}

/// A state dir with the run and, in two batches (the second re-delivering
/// part of the first), its spans.
fn state_with_spans(s: &Scratch, spans: &[SpanRecord]) -> std::path::PathBuf {
    let state = s.path("state");
    let mut checkpoint = StateDir::new(&state).open_checkpoint().expect("checkpoint");
    let tasks = ["extract", "load", "report"]
        .iter()
        .map(|t| (t.to_string(), "shell".to_string(), "h".to_string()))
        .collect::<Vec<_>>();
    checkpoint
        .create_run(RUN, DAG, "/dags/rental.toml", &json!({}), "local", &tasks)
        .expect("create run");
    checkpoint
        .insert_spans(RUN, &spans[..spans.len() / 2])
        .expect("insert");
    checkpoint.insert_spans(RUN, spans).expect("insert again");
    assert_eq!(checkpoint.spans(RUN).unwrap().len(), spans.len());
    state
}

/// A duration as the waterfall writes those of the fixture (all under a
/// minute): `1.50s` from a second on, `100.0ms` below, `0s` for none.
fn short(nanos: u64) -> String {
    match nanos {
        0 => "0s".to_string(),
        n if n < 1_000_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n => format!("{:.2}s", n as f64 / 1e9),
    }
}

fn ok_stdout(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} exited {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

#[test]
fn the_waterfall_shows_every_stored_span_in_tree_order_within_80_columns() {
    let s = Scratch::new();
    let (spans, rows) = fixture();
    let state = state_with_spans(&s, &spans);
    let out = ok_stdout(&flux(&state, &["trace", RUN]), "trace");
    for line in out.lines() {
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line:?}\n{out}",
            line.chars().count()
        );
    }
    let lines: Vec<&str> = out.lines().collect();

    // One header per trace, the original first, the resume linking to it.
    let header_a = lines
        .iter()
        .position(|l| l.starts_with(&format!("trace {TRACE_A}")));
    let header_b = lines
        .iter()
        .position(|l| l.starts_with(&format!("trace {TRACE_B}")));
    let (Some(header_a), Some(header_b)) = (header_a, header_b) else {
        panic!("no trace headers:\n{out}");
    };
    assert!(header_a < header_b, "{out}");
    assert!(lines[header_b].contains("resume 1"), "{out}");
    assert!(
        lines[header_b..]
            .iter()
            .any(|l| l.contains(&format!("follows trace {TRACE_A}"))),
        "{out}"
    );
    assert!(out.contains(RUN) && out.contains(DAG), "{out}");

    // A row per span, in tree order, indented two spaces per level, with
    // the span's offset from its trace's start, its duration and status.
    let span_lines: Vec<&str> = lines.iter().copied().filter(|l| l.contains('|')).collect();
    assert_eq!(span_lines.len(), spans.len(), "{out}");
    let by_order = tree_order(&spans);
    for ((line, (name, depth)), span) in span_lines.iter().zip(&rows).zip(&by_order) {
        assert_eq!(span.name, *name, "the fixture's expected order");
        assert!(
            line.starts_with(&format!("{}{name}", "  ".repeat(*depth))),
            "{name} at depth {depth}: {line:?}"
        );
        let trace_start = if span.trace_id == TRACE_A {
            T0
        } else {
            T0 + 60_000 * MS
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let offset = format!("+{}", short(span.start_unix_nano - trace_start));
        assert!(words.contains(&offset.as_str()), "{offset} in {line:?}");
        let duration = short(span.end_unix_nano - span.start_unix_nano);
        assert!(words.contains(&duration.as_str()), "{duration} in {line:?}");
        let status = match span.status {
            SpanStatus::Error { .. } => "error",
            SpanStatus::Ok => "ok",
            SpanStatus::Unset => "unset",
        };
        assert_eq!(words.last(), Some(&status), "{line:?}");
    }

    // The retried task's attempts are separate rows whose bars leave the
    // retry's delay blank between them.
    let load = span_lines
        .iter()
        .position(|l| l.trim_start().starts_with("task load"))
        .unwrap();
    let bar = |l: &str| {
        l.split('|')
            .nth(1)
            .unwrap_or_default()
            .chars()
            .collect::<Vec<char>>()
    };
    let (first, second) = (bar(span_lines[load + 1]), bar(span_lines[load + 2]));
    let last_of_first = first.iter().rposition(|&c| c != ' ').expect("a bar");
    let first_of_second = second.iter().position(|&c| c != ' ').expect("a bar");
    assert!(last_of_first + 1 < first_of_second, "{out}");

    // The errors under trace A: every failed span's message.
    let footer = lines[header_a..header_b].join("\n");
    for message in [TIMEOUT, EXIT, EXCEPTION] {
        assert!(
            footer.contains(message),
            "{message:?} not under trace A:\n{out}"
        );
    }
}

/// The spans in the order the waterfall lists them: each trace (by start)
/// as a tree, children by start time.
fn tree_order(spans: &[SpanRecord]) -> Vec<&SpanRecord> {
    let mut traces: Vec<&str> = Vec::new();
    for s in spans {
        if !traces.contains(&s.trace_id.as_str()) {
            traces.push(&s.trace_id);
        }
    }
    let start = |t: &str| {
        spans
            .iter()
            .filter(|s| s.trace_id == t)
            .map(|s| s.start_unix_nano)
            .min()
    };
    traces.sort_by_key(|t| start(t));
    fn below<'a>(
        spans: &'a [SpanRecord],
        trace: &str,
        parent: Option<&str>,
        out: &mut Vec<&'a SpanRecord>,
    ) {
        let mut children: Vec<&SpanRecord> = spans
            .iter()
            .filter(|s| s.trace_id == trace && s.parent_span_id.as_deref() == parent)
            .collect();
        children.sort_by_key(|s| s.start_unix_nano);
        for child in children {
            out.push(child);
            below(spans, trace, Some(&child.span_id), out);
        }
    }
    let mut out = Vec::new();
    for t in traces {
        below(spans, t, None, &mut out);
    }
    out
}

#[test]
fn the_page_has_every_span_and_error_and_fetches_nothing() {
    let s = Scratch::new();
    let (spans, _) = fixture();
    let state = state_with_spans(&s, &spans);
    let page_path = s.path("trace.html");
    let out = ok_stdout(
        &flux(
            &state,
            &["trace", RUN, "--html", page_path.to_str().unwrap()],
        ),
        "trace --html",
    );
    assert_eq!(out.trim(), page_path.display().to_string());
    let page = std::fs::read_to_string(&page_path).expect("the page");
    assert!(page.starts_with("<!DOCTYPE html>"));
    for span in &spans {
        assert!(page.contains(&html_escape(&span.name)), "{}", span.name);
        assert!(page.contains(&span.span_id), "{}", span.span_id);
    }
    for message in [TIMEOUT, EXIT, EXCEPTION] {
        assert!(page.contains(&html_escape(message)), "{message}");
    }
    assert!(!page.contains("<report.py>"), "unescaped text");
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert!(!page.contains("<script"));
    for trace in [TRACE_A, TRACE_B] {
        assert!(page.contains(trace));
    }
    // Attributes are on the page, with each span.
    assert!(page.contains("flux.task_type") && page.contains("build-1"));
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Parses an OTLP JSON file into `ExportTraceServiceRequest` with the
/// protobuf classes, then prints what it read as plain JSON. OTLP/JSON
/// writes ids as hex where proto3 JSON expects base64, so ids are
/// converted first (and must be hex of the right length).
const OTLP_CHECK: &str = r#"
import base64, json, sys
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

def b64(hex_id, size):
    raw = bytes.fromhex(hex_id)
    assert len(raw) == size, f"{hex_id!r} is not {size} bytes"
    return base64.b64encode(raw).decode()

doc = json.load(open(sys.argv[1]))
for rs in doc["resourceSpans"]:
    for ss in rs["scopeSpans"]:
        for span in ss["spans"]:
            span["traceId"] = b64(span["traceId"], 16)
            span["spanId"] = b64(span["spanId"], 8)
            if "parentSpanId" in span:
                span["parentSpanId"] = b64(span["parentSpanId"], 8)
            for link in span.get("links", []):
                link["traceId"] = b64(link["traceId"], 16)
                link["spanId"] = b64(link["spanId"], 8)

request = json_format.Parse(json.dumps(doc), ExportTraceServiceRequest())

def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind is None:
        return None
    return getattr(v, kind)

def attrs(kvs):
    return [[kv.key, value(kv.value)] for kv in kvs]

out = []
for rs in request.resource_spans:
    for ss in rs.scope_spans:
        for s in ss.spans:
            out.append({
                "resource": attrs(rs.resource.attributes),
                "scope": ss.scope.name,
                "trace_id": s.trace_id.hex(),
                "span_id": s.span_id.hex(),
                "parent_span_id": s.parent_span_id.hex() or None,
                "name": s.name,
                "kind": s.kind,
                "start": s.start_time_unix_nano,
                "end": s.end_time_unix_nano,
                "status": [s.status.code, s.status.message],
                "attributes": attrs(s.attributes),
                "events": [[e.name, e.time_unix_nano, attrs(e.attributes)] for e in s.events],
                "links": [[l.trace_id.hex(), l.span_id.hex(), attrs(l.attributes)] for l in s.links],
            })
json.dump(out, sys.stdout)
"#;

fn python_otlp() -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").stdin(Stdio::null());
    cmd
}

/// What the Python side prints for `span`, computed from the SpanRecord.
fn expected(span: &SpanRecord) -> Value {
    let attrs = |list: &[(String, Value)]| -> Value {
        list.iter()
            .map(|(k, v)| json!([k, v]))
            .collect::<Vec<_>>()
            .into()
    };
    let kind = match span.kind.as_str() {
        "internal" => 1,
        other => panic!("the fixture has only internal spans, not {other}"),
    };
    let status = match &span.status {
        SpanStatus::Unset => json!([0, ""]),
        SpanStatus::Ok => json!([1, ""]),
        SpanStatus::Error { message } => json!([2, message]),
    };
    json!({
        "resource": attrs(&span.resource),
        "scope": span.scope,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": kind,
        "start": span.start_unix_nano,
        "end": span.end_unix_nano,
        "status": status,
        "attributes": attrs(&span.attributes),
        "events": span.events.iter().map(|e| json!([e.name, e.time_unix_nano, attrs(&e.attributes)])).collect::<Vec<_>>(),
        "links": span.links.iter().map(|l| json!([l.trace_id, l.span_id, attrs(&l.attributes)])).collect::<Vec<_>>(),
    })
}

#[test]
fn the_otlp_json_parses_as_an_export_trace_service_request_with_the_stored_values() {
    let available = python_otlp()
        .arg("import google.protobuf.json_format, opentelemetry.proto.collector.trace.v1.trace_service_pb2")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        checker_missing(
            "SKIPPED: the OTLP JSON check needs opentelemetry-proto; install with: python3 -m pip install opentelemetry-proto==1.45.2",
        );
        return;
    }
    let s = Scratch::new();
    let (spans, _) = fixture();
    let state = state_with_spans(&s, &spans);
    let file = s.path("trace.otlp.json");
    let out = ok_stdout(
        &flux(
            &state,
            &["trace", RUN, "--otlp-json", file.to_str().unwrap()],
        ),
        "trace --otlp-json",
    );
    assert_eq!(out.trim(), file.display().to_string());
    let parsed = python_otlp()
        .arg(OTLP_CHECK)
        .arg(&file)
        .output()
        .expect("python3");
    assert!(
        parsed.status.success(),
        "protobuf rejected the OTLP JSON:\n{}\n--- file\n{}",
        text(&parsed.stderr),
        std::fs::read_to_string(&file).unwrap_or_default()
    );
    let parsed: Vec<Value> = serde_json::from_slice(&parsed.stdout).expect("the checker's JSON");
    // The file lists spans by start time, as the checkpoint returns them.
    let mut stored = spans.clone();
    stored.sort_by_key(|s| s.start_unix_nano);
    assert_eq!(parsed.len(), stored.len());
    for (got, span) in parsed.iter().zip(&stored) {
        assert_eq!(got, &expected(span), "span {}", span.name);
    }
}

#[test]
fn an_unknown_run_is_named_with_how_to_find_runs() {
    let s = Scratch::new();
    let (spans, _) = fixture();
    let state = state_with_spans(&s, &spans);
    let output = flux(&state, &["trace", "no-such-run"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("no-such-run") && stderr.contains("flux-engine runs"),
        "{stderr}"
    );
    // The same exit code as `show` for an unknown run.
    assert_eq!(
        flux(&state, &["show", "no-such-run"]).status.code(),
        Some(2)
    );

    let empty = s.path("empty-state");
    let output = flux(&empty, &["trace", RUN]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("no runs"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_run_without_spans_says_so() {
    let s = Scratch::new();
    let state = state_with_spans(&s, &[]);
    let output = flux(&state, &["trace", RUN]);
    let out = ok_stdout(&output, "trace");
    assert!(
        out.contains("no spans stored") && out.contains(RUN),
        "{out}"
    );
    let page = s.path("empty.html");
    ok_stdout(
        &flux(&state, &["trace", RUN, "--html", page.to_str().unwrap()]),
        "trace --html",
    );
    let page = std::fs::read_to_string(page).unwrap();
    assert!(page.contains("No spans are stored"));
}

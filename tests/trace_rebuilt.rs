//! The `task` and `attempt` spans are not stored as span rows: the
//! checkpoint rebuilds them from the attempts rows the scheduler commits
//! (issue 11). With `FLUX_STORE_REBUILDABLE_SPANS=1` the recorders store
//! them as rows as well, which is what these tests compare the rebuilt
//! spans with: the same span ids, names, parents, statuses, attributes,
//! events and resource, and times within a few milliseconds (the
//! scheduler and the recorders read the clock separately). Covered: a
//! failed then retried task, a failing task, a timed-out attempt, a
//! resume (a second trace), and a run cancelled with an attempt running
//! and a task waiting to retry.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Scratch, text};
use engine::checkpoint::Checkpoint;
use engine::spans::{SpanEvent, SpanRecord};

/// A retried task (fails once, then succeeds after 1 s), a failing task
/// with a dependent, and a task that times out.
const DAG: &str = r#"
[dag]
name = "rebuilt"

[tasks.first]
type = "shell"
command = "true"

[tasks.flaky]
type = "shell"
depends_on = ["first"]
command = "test -f flaky.ok || { touch flaky.ok; exit 3; }"
retry = { max_attempts = 2, interval_seconds = 1, jitter = "none" }

[tasks.broken]
type = "shell"
depends_on = ["first"]
command = "echo the disk is on fire >&2; exit 1"

[tasks.after_broken]
type = "shell"
depends_on = ["broken"]
command = "true"

[tasks.slow]
type = "shell"
command = "sleep 10"
timeout_seconds = 1
"#;

/// A task that runs until cancelled and one that waits a minute to retry.
const CANCELLED_DAG: &str = r#"
[dag]
name = "cancelled"

[tasks.wait]
type = "shell"
command = "sleep 30"

[tasks.retrying]
type = "shell"
command = "exit 2"
retry = { max_attempts = 3, interval_seconds = 60, jitter = "none" }
"#;

/// How far the scheduler's clock readings may be from the recorders'.
const CLOCK_SLACK_NANOS: u64 = 200_000_000;

fn store_all(on: bool) -> Vec<(&'static str, &'static str)> {
    if on {
        vec![("FLUX_STORE_REBUILDABLE_SPANS", "1")]
    } else {
        Vec::new()
    }
}

/// `flux-engine ARGS` in `dir` with `env`; no collector.
fn flux_in(s: &Scratch, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = common::command(&s.path("state"));
    command
        .current_dir(dir)
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("FLUX_STORE_REBUILDABLE_SPANS");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("start flux-engine")
}

fn dag_dir(s: &Scratch, text: &str) -> std::path::PathBuf {
    let dir = s.path("dag");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dag.toml"), text).unwrap();
    dir
}

fn the_run_id(s: &Scratch) -> String {
    let runs: Vec<_> = std::fs::read_dir(s.path("state").join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn checkpoint(s: &Scratch) -> Checkpoint {
    Checkpoint::open_read_only(&s.path("state").join("flux.db"))
        .expect("checkpoint")
        .expect("a checkpoint exists")
}

/// The names of the spans kept as rows (not rebuilt).
fn stored_names(s: &Scratch, run_id: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(s.path("state").join("flux.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM spans WHERE run_id = ?1 ORDER BY name")
        .unwrap();
    stmt.query_map([run_id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn sorted_attributes(attributes: &[(String, serde_json::Value)]) -> Vec<String> {
    let mut out: Vec<String> = attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.sort();
    out
}

fn events(events: &[SpanEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {:?}", e.name, sorted_attributes(&e.attributes)))
        .collect()
}

fn near(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= CLOCK_SLACK_NANOS
}

/// Every task and attempt span stored as a row (the run stored them all)
/// has a rebuilt twin with the same id that says the same; returns how
/// many were compared.
fn assert_rebuilt_as_stored(s: &Scratch, run_id: &str) -> usize {
    let cp = checkpoint(s);
    let stored = cp.spans(run_id).unwrap();
    let rebuilt: HashMap<(String, String), SpanRecord> = cp
        .rebuilt_spans(run_id)
        .unwrap()
        .into_iter()
        .map(|r| ((r.trace_id.clone(), r.span_id.clone()), r))
        .collect();
    let mut compared = 0;
    for span in stored
        .iter()
        .filter(|s| s.name.starts_with("task ") || s.name.starts_with("attempt "))
    {
        let twin = rebuilt
            .get(&(span.trace_id.clone(), span.span_id.clone()))
            .unwrap_or_else(|| panic!("{} ({}) was not rebuilt", span.name, span.span_id));
        let what = format!("{} of {:?}", span.name, span.attribute("flux.task_id"));
        assert_eq!(twin.name, span.name, "{what}");
        assert_eq!(twin.parent_span_id, span.parent_span_id, "{what}");
        assert_eq!(twin.kind, span.kind, "{what}");
        assert_eq!(twin.status, span.status, "{what}");
        assert_eq!(
            sorted_attributes(&twin.attributes),
            sorted_attributes(&span.attributes),
            "{what}"
        );
        assert_eq!(events(&twin.events), events(&span.events), "{what}");
        for (a, b) in twin.events.iter().zip(&span.events) {
            assert!(
                near(a.time_unix_nano, b.time_unix_nano),
                "{what}: {a:?} {b:?}"
            );
        }
        assert_eq!(twin.links, span.links, "{what}");
        assert_eq!(twin.resource, span.resource, "{what}");
        assert_eq!(twin.scope, span.scope, "{what}");
        assert!(
            near(twin.start_unix_nano, span.start_unix_nano)
                && near(twin.end_unix_nano, span.end_unix_nano),
            "{what}: rebuilt {}..{}, stored {}..{}",
            twin.start_unix_nano,
            twin.end_unix_nano,
            span.start_unix_nano,
            span.end_unix_nano
        );
        compared += 1;
    }
    // Nothing rebuilt that was not recorded.
    assert_eq!(compared, rebuilt.len());
    compared
}

/// Per span what a reader sees, without ids, times, the run id and the
/// scratch folder (messages name the attempts' logs).
fn comparable(s: &Scratch, spans: &[SpanRecord], run_id: &str) -> Vec<String> {
    let scratch = s
        .path("")
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string();
    let name_of: HashMap<&str, &str> = spans
        .iter()
        .map(|s| (s.span_id.as_str(), s.name.as_str()))
        .collect();
    let mut out: Vec<String> = spans
        .iter()
        .map(|s| {
            let parent = s
                .parent_span_id
                .as_deref()
                .and_then(|p| name_of.get(p))
                .copied()
                .unwrap_or("");
            format!(
                "{} parent={parent:?} status={:?} attributes={:?} events={:?} links={} resource={:?}",
                s.name,
                s.status,
                sorted_attributes(&s.attributes),
                events(&s.events),
                s.links.len(),
                s.resource
            )
            .replace(run_id, "RUN")
            .replace(scratch.as_str(), "SCRATCH")
        })
        .collect();
    out.sort();
    out
}

/// Every span lies within its parent's time (the run's, the task's).
fn assert_nested(spans: &[SpanRecord]) {
    let by_id: HashMap<(&str, &str), &SpanRecord> = spans
        .iter()
        .map(|s| ((s.trace_id.as_str(), s.span_id.as_str()), s))
        .collect();
    for span in spans {
        let Some(parent) = span
            .parent_span_id
            .as_deref()
            .and_then(|p| by_id.get(&(span.trace_id.as_str(), p)))
        else {
            continue;
        };
        assert!(
            parent.start_unix_nano <= span.start_unix_nano
                && span.end_unix_nano <= parent.end_unix_nano,
            "{} ({}..{}) is not within {} ({}..{})",
            span.name,
            span.start_unix_nano,
            span.end_unix_nano,
            parent.name,
            parent.start_unix_nano,
            parent.end_unix_nano
        );
    }
}

/// The run and its resume, with every span stored or with task and
/// attempt spans rebuilt: the state dir's scratch, run id.
fn run_and_resume(store_everything: bool) -> (Scratch, String) {
    let s = Scratch::new();
    let dir = dag_dir(&s, DAG);
    let env = store_all(store_everything);
    let first = flux_in(&s, &dir, &["run", "dag.toml"], &env);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let run_id = the_run_id(&s);
    let resumed = flux_in(&s, &dir, &["resume", &run_id], &env);
    assert_eq!(resumed.status.code(), Some(1), "{}", text(&resumed.stderr));
    (s, run_id)
}

#[test]
fn rebuilt_task_and_attempt_spans_equal_the_stored_ones_over_a_run_and_its_resume() {
    let (all, all_run) = run_and_resume(true);
    // First trace: 5 task spans (after_broken never starts), attempts:
    // first 1, flaky 2, broken 1, slow 1; the resume: broken and slow
    // again (after_broken is upstream_failed again).
    let compared = assert_rebuilt_as_stored(&all, &all_run);
    assert_eq!(compared, 4 + 5 + 2 + 2, "task and attempt spans compared");

    let (rebuilt, rebuilt_run) = run_and_resume(false);
    // Kept as rows: the two run spans only.
    assert_eq!(
        stored_names(&rebuilt, &rebuilt_run),
        ["run rebuilt", "run rebuilt"]
    );
    let spans = checkpoint(&rebuilt).spans(&rebuilt_run).unwrap();
    assert_nested(&spans);
    assert_eq!(
        comparable(&rebuilt, &spans, &rebuilt_run),
        comparable(&all, &checkpoint(&all).spans(&all_run).unwrap(), &all_run)
    );
    // The failed attempt reads as before: status, message and exception.
    let timed_out = spans
        .iter()
        .find(|s| {
            s.name == "attempt 1" && s.attribute("flux.task_id") == Some(&serde_json::json!("slow"))
        })
        .expect("slow's attempt 1");
    assert_eq!(
        timed_out.attribute("flux.status"),
        Some(&serde_json::json!("timed_out"))
    );
    assert_eq!(
        timed_out.status,
        engine::spans::SpanStatus::Error {
            message: "timed out after 1 s (timeout_seconds)".into()
        }
    );
    // Two traces, each with its own run span over its task spans.
    let traces: std::collections::BTreeSet<&str> =
        spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 2);
    // `flux-engine trace` shows them.
    let shown = flux_in(&rebuilt, &rebuilt.path(""), &["trace", &rebuilt_run], &[]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let out = text(&shown.stdout);
    assert!(
        out.contains("task slow") && out.contains("timed out after 1 s"),
        "{out}"
    );
}

/// Interrupts a run of [`CANCELLED_DAG`] once `wait` runs and `retrying`
/// waits to retry.
fn cancelled_run(store_everything: bool) -> (Scratch, String) {
    let s = Scratch::new();
    let dir = dag_dir(&s, CANCELLED_DAG);
    let mut command = common::command(&s.path("state"));
    command
        .current_dir(&dir)
        .args(["run", "dag.toml"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("FLUX_STORE_REBUILDABLE_SPANS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in store_all(store_everything) {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    let started = Instant::now();
    let attempt_ran = |task: &str| {
        std::fs::read_dir(s.path("state").join("runs"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .is_some_and(|e| e.path().join(task).join("1").exists())
    };
    while !(attempt_ran("wait") && attempt_ran("retrying")) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the attempts never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // `retrying`'s attempt fails at once; then it waits a minute.
    std::thread::sleep(Duration::from_millis(500));
    common::signal(child.id(), libc::SIGINT);
    let output = child.wait_with_output().unwrap();
    assert_ne!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let run_id = the_run_id(&s);
    (s, run_id)
}

#[test]
fn a_cancelled_runs_rebuilt_spans_equal_the_stored_ones() {
    let (all, all_run) = cancelled_run(true);
    // wait: task and attempt 1; retrying: task and attempt 1.
    assert_eq!(assert_rebuilt_as_stored(&all, &all_run), 4);
    let (rebuilt, rebuilt_run) = cancelled_run(false);
    // Kept as rows: the run span only.
    assert_eq!(stored_names(&rebuilt, &rebuilt_run), ["run cancelled"]);
    let spans = checkpoint(&rebuilt).spans(&rebuilt_run).unwrap();
    assert_nested(&spans);
    assert_eq!(
        comparable(&rebuilt, &spans, &rebuilt_run),
        comparable(&all, &checkpoint(&all).spans(&all_run).unwrap(), &all_run)
    );
    let mut statuses: Vec<String> = spans
        .iter()
        .filter(|s| s.name != "run cancelled")
        .map(|s| {
            format!(
                "{} {}: {}",
                s.attribute("flux.task_id").unwrap(),
                s.name,
                s.attribute("flux.status").unwrap()
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "\"retrying\" attempt 1: \"failed\"",
            "\"retrying\" task retrying: \"cancelled\"",
            "\"wait\" attempt 1: \"cancelled\"",
            "\"wait\" task wait: \"cancelled\"",
        ]
    );
}

//! `flux-engine resume`: a failed run continues under the same run id,
//! succeeded tasks are not executed again and their outputs are reused,
//! changed tasks (and `--from` tasks) re-run with their descendants.
//!
//! Every task appends `TASK_ID RUN_ID` to a counter file whose path is
//! passed with `--param`, so the file is an independent record of what
//! really executed, and under which run id.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::{Value, json};

/// The test DAG. `extract` passes an output downstream; `transform` fails
/// until the marker file exists; `load` records its inputs; `side` and
/// `side_report` are a branch that succeeds independently.
fn dag_text(dir: &Path, side_version: &str) -> String {
    format!(
        r#"[dag]
name = "resumable"

[params]
# Runs pass --param counter=...; nothing may write to the default.
counter = "{default_counter}"
marker = "{marker}"

[tasks.extract]
type = "shell"
command = '''echo "${{task.id}} ${{run.id}}" >> '${{params.counter}}'; echo '{{"rows": 7}}' > "$FLUX_OUTPUT"'''

[tasks.transform]
type = "shell"
depends_on = ["extract"]
command = '''echo "${{task.id}} ${{run.id}}" >> '${{params.counter}}'; test -f '${{params.marker}}' '''

[tasks.load]
type = "shell"
depends_on = ["transform", "extract"]
command = '''echo "${{task.id}} ${{run.id}}" >> '${{params.counter}}'; cp "$FLUX_INPUTS" "load-inputs-${{run.id}}.json"'''

[tasks.side]
type = "shell"
depends_on = ["extract"]
command = '''echo "${{task.id}} ${{run.id}}" >> '${{params.counter}}'; echo {side_version} > /dev/null'''

[tasks.side_report]
type = "shell"
depends_on = ["side"]
command = '''echo "${{task.id}} ${{run.id}}" >> '${{params.counter}}' '''
"#,
        default_counter = dir.join("default-counter.txt").display(),
        marker = dir.join("marker").display(),
    )
}

struct Fixture {
    s: Scratch,
    dag: PathBuf,
    counter: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let s = Scratch::new();
        let dag = s.write("resumable.toml", &dag_text(s.dir.path(), "v1"));
        let counter = s.path("counter.txt");
        Fixture { s, dag, counter }
    }

    fn state(&self) -> PathBuf {
        self.s.path("state")
    }

    fn flux(&self, args: &[&str]) -> Output {
        let out = flux(&self.state(), args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("panicked"), "the binary panicked:\n{all}");
        out
    }

    /// A new run with the counter passed as a parameter; returns its run
    /// id as the tasks recorded it.
    fn run(&self, expect: i32) -> String {
        let before = lines(&self.counter).len();
        let out = self.flux(&[
            "run",
            self.dag.to_str().unwrap(),
            "--max-parallel",
            "2",
            "--param",
            &format!("counter={}", self.counter.display()),
        ]);
        expect_code(&out, expect, "run");
        let new = &lines(&self.counter)[before..];
        let id = new
            .first()
            .and_then(|l| l.split_whitespace().nth(1))
            .expect("a task recorded the run id")
            .to_string();
        assert!(
            new.iter().all(|l| l.ends_with(&format!(" {id}"))),
            "{new:?}"
        );
        id
    }

    fn resume(&self, args: &[&str], expect: i32) -> Output {
        let mut all = vec!["resume", "--max-parallel", "2"];
        all.extend_from_slice(args);
        let out = self.flux(&all);
        expect_code(&out, expect, &format!("resume {args:?}"));
        out
    }

    /// How many times each task executed in run `id`.
    fn counts(&self, id: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in lines(&self.counter) {
            let (task, run) = line.split_once(' ').expect("`TASK RUN` lines");
            if run == id {
                *counts.entry(task.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    fn marker(&self) {
        std::fs::write(self.s.path("marker"), "").unwrap();
    }

    fn edit_side(&self, version: &str) {
        std::fs::write(&self.dag, dag_text(self.s.dir.path(), version)).unwrap();
    }

    fn status(&self, id: &str) -> (String, BTreeMap<String, String>) {
        let report = show(&self.state(), id);
        let tasks = tasks_by_id(&report)
            .into_iter()
            .map(|(k, v)| (k, v["status"].as_str().unwrap().to_string()))
            .collect();
        (report["status"].as_str().unwrap().to_string(), tasks)
    }

    /// Runs once (fails at `transform`), then creates the marker.
    fn failed_run(&self) -> String {
        let id = self.run(1);
        assert_eq!(
            self.counts(&id),
            counts(&[
                ("extract", 1),
                ("transform", 1),
                ("side", 1),
                ("side_report", 1)
            ]),
            "the first run"
        );
        self.marker();
        id
    }
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// `after - before`, per task, leaving out zeros.
fn delta(
    before: &BTreeMap<String, usize>,
    after: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn expect_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn resume_after_a_failure_reuses_succeeded_tasks_under_the_same_run_id() {
    let f = Fixture::new();
    let id = f.failed_run();
    let (status, tasks) = f.status(&id);
    assert_eq!(status, "failed");
    assert_eq!(tasks["transform"], "failed");
    assert_eq!(tasks["load"], "upstream_failed");
    assert_eq!(tasks["extract"], "succeeded");

    let out = f.resume(&[&id], 0);
    assert!(
        !stderr(&out).contains("changed since the run started"),
        "nothing changed:\n{}",
        stderr(&out)
    );
    // Succeeded tasks ran once overall; the failed one and its descendant ran.
    assert_eq!(
        f.counts(&id),
        counts(&[
            ("extract", 1),
            ("transform", 2),
            ("load", 1),
            ("side", 1),
            ("side_report", 1)
        ])
    );
    // Every line of the counter is of this one run.
    assert!(lines(&f.counter).iter().all(|l| l.ends_with(&id)));
    assert!(
        !f.s.path("default-counter.txt").exists(),
        "resume lost the run's --param counter"
    );

    // Same run id: still one run, now succeeded.
    let listed = runs(&f.state());
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["run_id"], id.as_str());
    assert_eq!(listed[0]["status"], "succeeded");
    assert_eq!(listed[0]["resume_count"], 1);

    // The reused output of `extract` reached `load`.
    let inputs: Value = serde_json::from_str(
        &std::fs::read_to_string(f.s.path(&format!("load-inputs-{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        inputs,
        json!({ "extract": { "rows": 7 }, "transform": null })
    );
    let report = show(&f.state(), &id);
    let tasks = tasks_by_id(&report);
    assert!(
        tasks.values().all(|t| t["status"] == "succeeded"),
        "{report}"
    );
    assert_eq!(tasks["extract"]["output"], json!({ "rows": 7 }));
    assert_eq!(tasks["extract"]["attempts"], 1);
    // Attempt numbers continue across the resume.
    assert_eq!(tasks["transform"]["attempts"], 2);
    assert_eq!(tasks["load"]["attempts"], 1);
}

#[test]
fn a_task_changed_since_the_run_started_reruns_with_its_descendants() {
    let f = Fixture::new();
    let id = f.failed_run();
    // `side` succeeded; change its command before resuming.
    f.edit_side("v2");
    let before = f.counts(&id);
    let out = f.resume(&[&id], 0);
    let err = stderr(&out);
    assert!(
        err.contains("`side` changed since the run started"),
        "no note about the change:\n{err}"
    );
    assert!(!err.contains("`extract` changed"), "{err}");
    assert_eq!(
        delta(&before, &f.counts(&id)),
        counts(&[
            ("transform", 1),
            ("load", 1),
            ("side", 1),
            ("side_report", 1)
        ])
    );

    // Resuming again with no change runs nothing.
    let before = f.counts(&id);
    let out = f.resume(&[&id], 0);
    assert!(!stderr(&out).contains("changed since"), "{}", stderr(&out));
    assert_eq!(delta(&before, &f.counts(&id)), counts(&[]));

    // A change of a task whose descendants are the whole downstream.
    let text = std::fs::read_to_string(&f.dag)
        .unwrap()
        .replace(r#"'{"rows": 7}'"#, r#"'{"rows": 8}'"#);
    std::fs::write(&f.dag, text).unwrap();
    let before = f.counts(&id);
    let out = f.resume(&[&id], 0);
    assert!(
        stderr(&out).contains("`extract` changed since the run started"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        delta(&before, &f.counts(&id)),
        counts(&[
            ("extract", 1),
            ("transform", 1),
            ("load", 1),
            ("side", 1),
            ("side_report", 1)
        ])
    );
    let inputs: Value = serde_json::from_str(
        &std::fs::read_to_string(f.s.path(&format!("load-inputs-{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(inputs["extract"], json!({ "rows": 8 }));
    assert_eq!(runs(&f.state()).len(), 1);
}

#[test]
fn resume_from_a_task_reruns_exactly_it_and_its_descendants() {
    let f = Fixture::new();
    let id = f.failed_run();
    f.resume(&[&id], 0);

    let before = f.counts(&id);
    let out = f.resume(&[&id, "--from", "side"], 0);
    assert!(!stderr(&out).contains("changed since"), "{}", stderr(&out));
    assert_eq!(
        delta(&before, &f.counts(&id)),
        counts(&[("side", 1), ("side_report", 1)])
    );

    let before = f.counts(&id);
    f.resume(&[&id, "--from", "transform"], 0);
    assert_eq!(
        delta(&before, &f.counts(&id)),
        counts(&[("transform", 1), ("load", 1)])
    );
    // `load` still saw the reused output of `extract`.
    let inputs: Value = serde_json::from_str(
        &std::fs::read_to_string(f.s.path(&format!("load-inputs-{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(inputs["extract"], json!({ "rows": 7 }));

    // Two --from at once: the union of their descendants.
    let before = f.counts(&id);
    f.resume(&[&id, "--from", "load", "--from", "side_report"], 0);
    assert_eq!(
        delta(&before, &f.counts(&id)),
        counts(&[("load", 1), ("side_report", 1)])
    );
    let (status, _) = f.status(&id);
    assert_eq!(status, "succeeded");
    assert_eq!(runs(&f.state()).len(), 1);
}

#[test]
fn resume_latest_continues_the_newest_run() {
    let f = Fixture::new();
    let older = f.run(1);
    let newer = f.run(1);
    assert_ne!(older, newer);
    f.marker();
    let before_older = f.counts(&older);
    let before_newer = f.counts(&newer);
    f.resume(&["--latest"], 0);
    assert_eq!(f.counts(&older), before_older, "the older run was touched");
    assert_eq!(
        delta(&before_newer, &f.counts(&newer)),
        counts(&[("transform", 1), ("load", 1)])
    );
    let listed = runs(&f.state());
    let summary: Vec<(&str, &str)> = listed
        .iter()
        .map(|r| (r["run_id"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [(newer.as_str(), "succeeded"), (older.as_str(), "failed")]
    );
}

#[test]
fn resuming_an_unknown_run_is_an_input_error() {
    let f = Fixture::new();
    // No runs at all.
    let out = f.resume(&["--latest"], 2);
    assert!(stderr(&out).contains("no runs"), "{}", stderr(&out));
    let out = f.resume(&["20990101T000000Z-abcdef"], 2);
    assert!(
        stderr(&out).contains("no run with id `20990101T000000Z-abcdef`"),
        "{}",
        stderr(&out)
    );
    // With a run in the state dir.
    let id = f.failed_run();
    let out = f.resume(&["nosuch"], 2);
    let err = stderr(&out);
    assert!(err.contains("`nosuch`") && err.contains("no run"), "{err}");
    assert_eq!(f.status(&id).0, "failed", "the real run was touched");
}

#[test]
fn resume_from_an_unknown_task_suggests_the_nearest_one() {
    let f = Fixture::new();
    let id = f.failed_run();
    let before = f.counts(&id);
    let out = f.resume(&[&id, "--from", "transfrom"], 2);
    let err = stderr(&out);
    assert!(
        err.contains("--from transfrom") && err.contains("did you mean `transform`?"),
        "{err}"
    );
    let out = f.resume(&[&id, "--from", "nosuch"], 2);
    assert!(
        stderr(&out).contains("no task `nosuch`"),
        "{}",
        stderr(&out)
    );
    // Nothing ran and the run is as it was.
    assert_eq!(f.counts(&id), before);
    let listed = runs(&f.state());
    assert_eq!(listed[0]["status"], "failed");
    assert_eq!(listed[0]["resume_count"], 0);
}

#[test]
fn resuming_a_run_whose_dag_became_invalid_reports_the_dag_errors() {
    let f = Fixture::new();
    let id = f.failed_run();
    let text = std::fs::read_to_string(&f.dag).unwrap();
    let broken = text.replacen("depends_on = [\"extract\"]", "depends_on = [\"extrct\"]", 1);
    std::fs::write(&f.dag, &broken).unwrap();
    let before = f.counts(&id);
    let out = f.resume(&[&id], 2);
    let err = stderr(&out);
    // The place of the bad id, computed from the text.
    let offset = broken.find("\"extrct\"").unwrap();
    let line = broken[..offset].matches('\n').count() + 1;
    let col = offset - broken[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    assert!(
        err.contains(&format!("{}:{line}:{col}: error:", f.dag.display())),
        "{err}"
    );
    assert!(err.contains("did you mean `extract`?"), "{err}");
    assert_eq!(f.counts(&id), before);
}

/// The edit-resume loop: a run that failed is resumed from an edited copy
/// of its DAG file (`--dag`); the copy must be the same DAG; the run reads
/// the copy from then on. Resuming the succeeded run again, unchanged,
/// does nothing and leaves its record (status, end, resume count) as it
/// was.
#[test]
fn an_edited_copy_resumes_the_run_and_a_succeeded_run_has_nothing_to_do() {
    let s = Scratch::new();
    let state = s.path("state");
    let original = s.write(
        "loop.toml",
        "[dag]\nname = \"loop\"\n\n[tasks.a]\ntype = \"noop\"\n\n[tasks.b]\ntype = \"shell\"\ndepends_on = [\"a\"]\ncommand = \"exit 3\"\n",
    );
    let out = flux(&state, &["run", original.to_str().unwrap()]);
    expect_code(&out, 1, "the first run fails at b");
    let run_id = runs(&state)[0]["run_id"].as_str().unwrap().to_string();

    let other = s.write(
        "other.toml",
        "[dag]\nname = \"other\"\n\n[tasks.b]\ntype = \"noop\"\n",
    );
    let out = flux(
        &state,
        &["resume", &run_id, "--dag", other.to_str().unwrap()],
    );
    expect_code(&out, 2, "another DAG's file");
    assert!(
        stderr(&out).contains("is of the DAG `loop`"),
        "{}",
        stderr(&out)
    );

    let edited = s.write(
        "edited.toml",
        "[dag]\nname = \"loop\"\n\n[tasks.a]\ntype = \"noop\"\n\n[tasks.b]\ntype = \"shell\"\ndepends_on = [\"a\"]\ncommand = \"true\"\n",
    );
    let out = flux(
        &state,
        &["resume", &run_id, "--dag", edited.to_str().unwrap()],
    );
    expect_code(&out, 0, "the edited copy fixes b");
    assert!(stderr(&out).contains("edited.toml"), "{}", stderr(&out));
    let shown = show(&state, &run_id);
    assert!(
        shown["dag_path"].as_str().unwrap().ends_with("edited.toml"),
        "{shown}"
    );
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["resume_count"], 1);
    let ended = shown["ended_at"].clone();

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = flux(&state, &["resume", &run_id]);
    expect_code(&out, 0, "nothing to do");
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));
    let after = show(&state, &run_id);
    assert_eq!(after["ended_at"], ended, "the record is untouched");
    assert_eq!(after["resume_count"], 1);
    assert_eq!(after["status"], "succeeded");
}

/// A resume runs a task under the type the DAG file gives it now, and
/// `show` reports that type, not the one the run began with.
#[test]
fn a_task_whose_type_changed_is_shown_with_its_new_type_after_resume() {
    let s = Scratch::new();
    let dag = s.path("dag.toml");
    let state = s.path("state");
    std::fs::write(
        &dag,
        "[dag]\nname = \"retyped\"\n\n[tasks.t]\ntype = \"shell\"\ncommand = \"exit 1\"\n",
    )
    .unwrap();
    let out = flux(&state, &["run", dag.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let run_id = runs(&state)[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(tasks_by_id(&show(&state, &run_id))["t"]["type"], "shell");

    std::fs::write(
        &dag,
        "[dag]\nname = \"retyped\"\n\n[tasks.t]\ntype = \"noop\"\n",
    )
    .unwrap();
    let out = flux(&state, &["resume", &run_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let tasks = tasks_by_id(&show(&state, &run_id));
    assert_eq!(tasks["t"]["status"], "succeeded");
    assert_eq!(tasks["t"]["type"], "noop");
}

//! Crash safety: SIGKILL the real binary at several points of a run, resume,
//! and check that the run ends exactly as an uninterrupted one does, with no
//! task that the checkpoint recorded as succeeded executed again.
//!
//! Every task appends `TASK_ID FLUX_RUN_ID FLUX_ATTEMPT` to a counter file as
//! it starts, so the file is an independent record of what really executed.
//! Tasks run in process groups of their own, which the engine's reaper
//! kills when the engine dies (tests/orphans.rs checks that); each task
//! records its group id (`$$`) so that the test can also kill any that are
//! left itself, and in both cases waits until they are gone before it
//! takes the snapshot the checks compare against.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// One task of the test DAG: its id, dependencies, the number it adds to
/// the sum of its inputs, and how long it sleeps.
struct Spec {
    id: &'static str,
    deps: &'static [&'static str],
    weight: u64,
    sleep: &'static str,
}

/// Fan-out from `src`, two levels of partial fan-in, fan-in to `c`, fan-out
/// again and a final join: 12 tasks.
const TASKS: &[Spec] = &[
    Spec {
        id: "src",
        deps: &[],
        weight: 1,
        sleep: "0.1",
    },
    Spec {
        id: "a1",
        deps: &["src"],
        weight: 2,
        sleep: "0.15",
    },
    Spec {
        id: "a2",
        deps: &["src"],
        weight: 3,
        sleep: "0.1",
    },
    Spec {
        id: "a3",
        deps: &["src"],
        weight: 5,
        sleep: "0.2",
    },
    Spec {
        id: "a4",
        deps: &["src"],
        weight: 7,
        sleep: "0.1",
    },
    Spec {
        id: "b1",
        deps: &["a1", "a2"],
        weight: 11,
        sleep: "0.1",
    },
    Spec {
        id: "b2",
        deps: &["a2", "a3"],
        weight: 13,
        sleep: "0.15",
    },
    Spec {
        id: "b3",
        deps: &["a3", "a4"],
        weight: 17,
        sleep: "0.1",
    },
    Spec {
        id: "c",
        deps: &["b1", "b2", "b3"],
        weight: 19,
        sleep: "0.2",
    },
    Spec {
        id: "d1",
        deps: &["c"],
        weight: 23,
        sleep: "0.1",
    },
    Spec {
        id: "d2",
        deps: &["c"],
        weight: 29,
        sleep: "0.15",
    },
    Spec {
        id: "sink",
        deps: &["d1", "d2"],
        weight: 31,
        sleep: "0.1",
    },
];

const LIMIT: Duration = Duration::from_secs(20);

/// The DAG file. Each task records its process group and a counter line,
/// says hello on stdout, sleeps, then outputs `{"v": weight + the sum of
/// its inputs' v, "task": id}`.
fn dag_toml() -> String {
    let mut toml =
        String::from("[dag]\nname = \"crash\"\n\n[params]\ncounter = \"\"\npids = \"\"\n");
    for t in TASKS {
        let deps: Vec<String> = t.deps.iter().map(|d| format!("\"{d}\"")).collect();
        toml.push_str(&format!(
            r#"
[tasks.{id}]
type = "shell"
depends_on = [{deps}]
command = '''
echo $$ >> '${{params.pids}}'
echo "$FLUX_TASK_ID $FLUX_RUN_ID $FLUX_ATTEMPT" >> '${{params.counter}}'
echo "task $FLUX_TASK_ID attempt $FLUX_ATTEMPT"
sleep {sleep}
sum={weight}
for n in $(grep -o '"v":[0-9]*' "$FLUX_INPUTS" | cut -d: -f2); do sum=$((sum + n)); done
printf '{{"v":%d,"task":"%s"}}' "$sum" "$FLUX_TASK_ID" > "$FLUX_OUTPUT"
'''
"#,
            id = t.id,
            deps = deps.join(", "),
            sleep = t.sleep,
            weight = t.weight,
        ));
    }
    toml
}

/// The outputs the DAG must produce, computed from `TASKS` alone.
fn expected_outputs() -> BTreeMap<String, Value> {
    fn v(id: &str) -> u64 {
        let spec = TASKS.iter().find(|t| t.id == id).unwrap();
        spec.weight + spec.deps.iter().map(|d| v(d)).sum::<u64>()
    }
    TASKS
        .iter()
        .map(|t| (t.id.to_string(), json!({"v": v(t.id), "task": t.id})))
        .collect()
}

/// One line of the counter file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Line {
    task: String,
    run: String,
    attempt: u32,
}

fn counter_lines(path: &Path) -> Vec<Line> {
    lines(path)
        .iter()
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(parts.len(), 3, "malformed counter line {l:?}");
            Line {
                task: parts[0].to_string(),
                run: parts[1].to_string(),
                attempt: parts[2].parse().expect("attempt number"),
            }
        })
        .collect()
}

struct Files {
    _scratch: Scratch,
    dag: PathBuf,
    state: PathBuf,
    counter: PathBuf,
    pids: PathBuf,
    logs: PathBuf,
}

impl Files {
    fn new() -> Self {
        let scratch = Scratch::new();
        let dag = scratch.write("crash.toml", &dag_toml());
        let logs = scratch.path("engine-logs");
        std::fs::create_dir(&logs).unwrap();
        Files {
            dag,
            state: scratch.path("state"),
            counter: scratch.path("counter.log"),
            pids: scratch.path("pids.log"),
            logs,
            _scratch: scratch,
        }
    }

    fn run_args(&self) -> Vec<String> {
        vec![
            "run".into(),
            self.dag.display().to_string(),
            "--param".into(),
            format!("counter={}", self.counter.display()),
            "--param".into(),
            format!("pids={}", self.pids.display()),
            "--max-parallel".into(),
            "3".into(),
        ]
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }
}

/// Runs the binary to its end (at most `LIMIT`) and returns its exit code.
fn run_to_end(files: &Files, args: &[String], name: &str) -> i32 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = files.log(name);
    let mut child = spawn(&files.state, &args, &log);
    let Some(status) = wait_timeout(&mut child, LIMIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`{}` did not finish in {LIMIT:?}\n{}",
            args.join(" "),
            logs(&log)
        );
    };
    status
        .code()
        .unwrap_or_else(|| panic!("{name} ended by a signal: {status}\n{}", logs(&log)))
}

/// The outputs of an uninterrupted run, computed once for all tests.
fn reference_outputs() -> &'static BTreeMap<String, Value> {
    static REFERENCE: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let files = Files::new();
        let code = run_to_end(&files, &files.run_args(), "reference");
        assert_eq!(
            code,
            0,
            "the reference run failed\n{}",
            logs(&files.log("reference"))
        );
        let listed = runs(&files.state);
        assert_eq!(listed.len(), 1, "one run expected: {listed:?}");
        let run_id = str_of(&listed[0], "run_id").to_string();
        let report = show(&files.state, &run_id);
        assert_eq!(str_of(&report, "status"), "succeeded");
        // Without a crash every task runs exactly once, as attempt 1.
        let mut seen: Vec<(String, u32)> = counter_lines(&files.counter)
            .into_iter()
            .map(|l| {
                assert_eq!(l.run, run_id);
                (l.task, l.attempt)
            })
            .collect();
        seen.sort();
        let mut want: Vec<(String, u32)> = TASKS.iter().map(|t| (t.id.to_string(), 1)).collect();
        want.sort();
        assert_eq!(
            seen, want,
            "the reference run executed tasks other than once each"
        );
        let outputs: BTreeMap<String, Value> = tasks_by_id(&report)
            .into_iter()
            .map(|(id, t)| (id, t["output"].clone()))
            .collect();
        assert_eq!(
            outputs,
            expected_outputs(),
            "the reference run's outputs are wrong"
        );
        outputs
    })
}

/// After the engine died: kill its orphaned task processes (or let them
/// finish), and wait until none is left and nothing more is written.
fn quiesce(files: &Files, kill_orphans: bool) {
    let deadline = Instant::now() + LIMIT;
    let marker = task_env_marker(&files.state);
    let mut last: Option<(usize, usize)> = None;
    loop {
        let groups: Vec<i32> = lines(&files.pids)
            .iter()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        // A recorded group id may since name another process: touch only
        // the groups whose leader is a task of this test's state dir.
        let ours: Vec<i32> = groups
            .iter()
            .copied()
            .filter(|&g| own_process_alive(g, &marker))
            .collect();
        if kill_orphans {
            for &g in &ours {
                kill_group(g);
            }
        }
        let alive = !ours.is_empty();
        let now = (groups.len(), lines(&files.counter).len());
        if !alive && last == Some(now) {
            return;
        }
        last = Some(now);
        assert!(
            Instant::now() < deadline,
            "orphaned task processes did not end in {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// Where to SIGKILL the engine in one phase.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// As soon as the run has a folder in the state dir.
    Start,
    /// Once this many more tasks have started (counter lines appeared).
    Lines(usize),
}

/// Runs the DAG, SIGKILLs the engine at `kills[0]`, then resumes and kills
/// each resume at the following points, and finally resumes to the end.
/// Checks the checkpoint against the counter file after every kill, and the
/// final result against the reference run.
fn crash_and_resume(name: &str, kills: &[KillAt], kill_orphans: bool) {
    let started = Instant::now();
    let reference = reference_outputs().clone();
    let files = Files::new();
    let mut run_id: Option<String> = None;
    // Tasks recorded succeeded before some resume: (attempts recorded then,
    // counter lines at that moment).
    let mut protected: BTreeMap<String, (u64, usize)> = BTreeMap::new();

    for (phase, &kill) in kills.iter().enumerate() {
        let args = match &run_id {
            None => files.run_args(),
            // Alternate the two ways of naming the run.
            Some(id) if phase % 2 == 1 => vec!["resume".into(), id.clone()],
            Some(_) => vec!["resume".into(), "--latest".into()],
        };
        let before = lines(&files.counter).len();
        let log = files.log(&format!("phase{phase}"));
        let str_args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = spawn(&files.state, &str_args, &log);
        let runs_dir = files.state.join("runs");
        let reached = wait_until(LIMIT, || {
            let point = match kill {
                KillAt::Start => std::fs::read_dir(&runs_dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false),
                KillAt::Lines(k) => lines(&files.counter).len() >= before + k,
            };
            point || matches!(child.try_wait(), Ok(Some(_)))
        });
        assert!(
            reached,
            "phase {phase}: kill point {kill:?} never came\n{}",
            logs(&log)
        );
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        // Normally the kill ends it; on a very slow machine the engine may
        // have finished first, which must then be a success.
        if status.code().is_some() {
            assert_eq!(
                status.code(),
                Some(0),
                "phase {phase} failed\n{}",
                logs(&log)
            );
        }
        quiesce(&files, kill_orphans);
        let snapshot = counter_lines(&files.counter);

        let listed = runs(&files.state);
        let Some(id) = run_id
            .clone()
            .or_else(|| listed.first().map(|r| str_of(r, "run_id").to_string()))
        else {
            // Killed before the run was recorded: then nothing may have run,
            // and the state dir must still take a new run, which a resume
            // afterwards must leave alone (every task is protected).
            assert!(matches!(kill, KillAt::Start));
            assert!(
                snapshot.is_empty(),
                "tasks ran although no run was recorded: {snapshot:?}"
            );
            eprintln!("{name}: phase {phase} killed before the run was recorded");
            let code = run_to_end(&files, &files.run_args(), "fresh");
            assert_eq!(
                code,
                0,
                "a run after the crash failed\n{}",
                logs(&files.log("fresh"))
            );
            let listed = runs(&files.state);
            assert_eq!(listed.len(), 1, "{listed:?}");
            let id = str_of(&listed[0], "run_id").to_string();
            let done = counter_lines(&files.counter).len();
            for (tid, t) in tasks_by_id(&show(&files.state, &id)) {
                assert_eq!(str_of(&t, "status"), "succeeded", "{tid}: {t}");
                protected.insert(tid, (t["attempts"].as_u64().unwrap(), done));
            }
            run_id = Some(id);
            continue;
        };
        run_id = Some(id.clone());
        assert_eq!(
            listed.len(),
            1,
            "a resume must not create a run: {listed:?}"
        );
        assert_eq!(str_of(&listed[0], "run_id"), id);

        let report = show(&files.state, &id);
        let tasks = tasks_by_id(&report);
        assert_eq!(
            tasks.keys().cloned().collect::<BTreeSet<_>>(),
            TASKS
                .iter()
                .map(|t| t.id.to_string())
                .collect::<BTreeSet<_>>(),
            "show lists other tasks than the DAG's"
        );
        let all_done = tasks.values().all(|t| str_of(t, "status") == "succeeded");
        let want_status = if all_done { "succeeded" } else { "interrupted" };
        assert_eq!(
            str_of(&report, "status"),
            want_status,
            "run status after SIGKILL: {report}"
        );
        assert_eq!(
            str_of(&listed[0], "status"),
            want_status,
            "runs after SIGKILL: {listed:?}"
        );

        // The checkpoint is recorded before acting: no process ran an
        // attempt the checkpoint does not know of, and every succeeded
        // attempt really ran.
        for line in &snapshot {
            assert_eq!(line.run, id, "FLUX_RUN_ID differs from the run id");
            let recorded = tasks[&line.task]["attempts"].as_u64().unwrap();
            assert!(
                u64::from(line.attempt) <= recorded,
                "{} attempt {} ran but the checkpoint records only {recorded} attempt(s): {report}",
                line.task,
                line.attempt
            );
        }
        for (tid, t) in &tasks {
            if str_of(t, "status") == "succeeded" {
                let attempts = t["attempts"].as_u64().unwrap();
                assert!(
                    snapshot
                        .iter()
                        .any(|l| &l.task == tid && u64::from(l.attempt) == attempts),
                    "{tid} is recorded succeeded in attempt {attempts}, which never ran"
                );
                protected
                    .entry(tid.clone())
                    .or_insert((attempts, snapshot.len()));
            }
        }
        eprintln!(
            "{name}: phase {phase} killed at {kill:?} with {} line(s), {} task(s) succeeded",
            snapshot.len(),
            tasks
                .values()
                .filter(|t| str_of(t, "status") == "succeeded")
                .count()
        );
    }

    let id = run_id.expect("a run id");
    let code = run_to_end(&files, &["resume".into(), id.clone()], "final");
    assert_eq!(
        code,
        0,
        "the final resume failed\n{}",
        logs(&files.log("final"))
    );

    let report = show(&files.state, &id);
    assert_eq!(str_of(&report, "status"), "succeeded", "{report}");
    let listed = runs(&files.state);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(str_of(&listed[0], "status"), "succeeded", "{listed:?}");
    let tasks = tasks_by_id(&report);
    for (tid, t) in &tasks {
        assert_eq!(str_of(t, "status"), "succeeded", "task {tid}: {t}");
    }
    let outputs: BTreeMap<String, Value> = tasks
        .iter()
        .map(|(id, t)| (id.clone(), t["output"].clone()))
        .collect();
    assert_eq!(
        outputs, reference,
        "outputs differ from an uninterrupted run"
    );
    assert_eq!(outputs, expected_outputs());

    let all = counter_lines(&files.counter);
    let mut seen = BTreeSet::new();
    for line in &all {
        assert_eq!(line.run, id, "FLUX_RUN_ID differs from the run id");
        assert!(
            seen.insert((line.task.clone(), line.attempt)),
            "{} attempt {} executed twice",
            line.task,
            line.attempt
        );
    }
    for spec in TASKS {
        let attempts = tasks[spec.id]["attempts"].as_u64().unwrap();
        let mine: Vec<u64> = all
            .iter()
            .filter(|l| l.task == spec.id)
            .map(|l| u64::from(l.attempt))
            .collect();
        assert!(!mine.is_empty(), "{} never ran", spec.id);
        // The attempt that succeeded last is the highest one that ran.
        assert_eq!(
            mine.iter().max(),
            Some(&attempts),
            "{}: counter attempts {mine:?}, checkpoint says {attempts}",
            spec.id
        );
        let stdout = files
            .state
            .join("runs")
            .join(&id)
            .join(spec.id)
            .join(attempts.to_string())
            .join("stdout.log");
        let text = std::fs::read_to_string(&stdout)
            .unwrap_or_else(|e| panic!("{}: {e}", stdout.display()));
        assert_eq!(text.trim(), format!("task {} attempt {attempts}", spec.id));
    }
    // No task recorded succeeded before a resume ran again afterwards.
    for (tid, (attempts, at)) in &protected {
        let again: Vec<&Line> = all[*at..].iter().filter(|l| &l.task == tid).collect();
        assert!(
            again.is_empty(),
            "{tid} was recorded succeeded before a resume but executed again: {again:?}"
        );
        assert_eq!(
            tasks[tid]["attempts"].as_u64(),
            Some(*attempts),
            "{tid}: attempts changed after it had succeeded"
        );
    }
    eprintln!(
        "{name}: ok, {} task execution(s) for {} tasks, {:?}",
        all.len(),
        TASKS.len(),
        started.elapsed()
    );
}

#[test]
fn sigkill_right_after_start_then_resume() {
    crash_and_resume("start", &[KillAt::Start], true);
}

#[test]
fn sigkill_after_the_first_task_started_then_resume() {
    crash_and_resume("first", &[KillAt::Lines(1)], false);
}

#[test]
fn sigkill_during_the_fan_out_then_resume() {
    crash_and_resume("fan-out", &[KillAt::Lines(4)], true);
}

#[test]
fn sigkill_mid_run_then_resume() {
    crash_and_resume("mid", &[KillAt::Lines(7)], false);
}

#[test]
fn sigkill_near_the_end_then_resume() {
    crash_and_resume("end", &[KillAt::Lines(11)], true);
}

#[test]
fn sigkill_the_run_and_then_the_resume() {
    crash_and_resume(
        "double",
        &[KillAt::Lines(3), KillAt::Lines(4), KillAt::Start],
        true,
    );
}

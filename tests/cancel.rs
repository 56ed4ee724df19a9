//! Ctrl-C (SIGINT), SIGTERM and timeouts: the engine stops what runs, kills
//! every process a task started (pipelines and background children too),
//! records the outcome, and a cancelled run resumes to the end.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(20);

/// `slow` runs `sleep 30` in a pipeline and in the background and `slow2`
/// runs a plain `sleep 30`, but only while the marker file exists; `quick`
/// is independent and ends at once; `after` needs all three. Every task
/// appends `TASK ATTEMPT` to `counter` as it starts.
const CANCEL_DAG: &str = r#"
[dag]
name = "cancel"

[params]
dir = ""

[tasks.slow]
type = "shell"
command = '''
echo "$FLUX_TASK_ID $FLUX_ATTEMPT" >> '${params.dir}/counter'
if [ -e '${params.dir}/marker' ]; then
  sleep 30 &
  echo $! > '${params.dir}/slow-bg.pid'
  sh -c 'echo $$ > "$0"; exec sleep 30' '${params.dir}/slow-fg.pid' | cat
  wait
fi
echo '{"done": "slow"}' > "$FLUX_OUTPUT"
'''

[tasks.slow2]
type = "shell"
command = '''
echo "$FLUX_TASK_ID $FLUX_ATTEMPT" >> '${params.dir}/counter'
if [ -e '${params.dir}/marker' ]; then
  sh -c 'echo $$ > "$0"; exec sleep 30' '${params.dir}/slow2.pid'
fi
echo '{"done": "slow2"}' > "$FLUX_OUTPUT"
'''

[tasks.quick]
type = "shell"
command = '''
echo "$FLUX_TASK_ID $FLUX_ATTEMPT" >> '${params.dir}/counter'
echo '{"done": "quick"}' > "$FLUX_OUTPUT"
'''

[tasks.after]
type = "shell"
depends_on = ["slow", "slow2", "quick"]
command = '''
echo "$FLUX_TASK_ID $FLUX_ATTEMPT" >> '${params.dir}/counter'
cat "$FLUX_INPUTS" > "$FLUX_OUTPUT"
'''
"#;

fn status_of(report: &serde_json::Value, task: &str) -> String {
    let tasks = tasks_by_id(report);
    str_of(&tasks[task], "status").to_string()
}

/// Waits (at most 5 s) until none of `pids` is a live task process of the
/// state dir `state`.
fn wait_gone(pids: &[i32], state: &Path) -> bool {
    let marker = task_env_marker(state);
    wait_until(Duration::from_secs(5), || {
        pids.iter().all(|&p| !own_process_alive(p, &marker))
    })
}

fn counter_count(dir: &Path, task: &str) -> usize {
    lines(&dir.join("counter"))
        .iter()
        .filter(|l| l.split_whitespace().next() == Some(task))
        .count()
}

/// Starts the DAG, waits until both sleepers run and `quick` succeeded,
/// sends `sig` to the engine and checks the cancellation, then resumes.
fn cancel_with(sig: i32) {
    let started = Instant::now();
    let scratch = Scratch::new();
    let dir = scratch.path("work");
    std::fs::create_dir(&dir).unwrap();
    let dag = scratch.write("cancel.toml", CANCEL_DAG);
    let state = scratch.path("state");
    let marker = dir.join("marker");
    std::fs::write(&marker, "").unwrap();
    let log = scratch.path("engine");
    let param = format!("dir={}", dir.display());
    let mut child = spawn(
        &state,
        &[
            "run",
            dag.to_str().unwrap(),
            "--param",
            &param,
            "--max-parallel",
            "4",
        ],
        &log,
    );

    // Wait until all three sleeps run.
    let pid_files = ["slow-bg.pid", "slow-fg.pid", "slow2.pid"];
    let marker_env = task_env_marker(&state);
    let mut pids: Vec<i32> = Vec::new();
    let all_running = wait_until(LIMIT, || {
        pids = pid_files
            .iter()
            .filter_map(|f| read_pid(&dir.join(f)))
            .filter(|&p| own_process_alive(p, &marker_env))
            .collect();
        pids.len() == pid_files.len() || matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(
        all_running && pids.len() == pid_files.len(),
        "the sleeps never all ran\n{}",
        logs(&log)
    );
    let runs_now = runs(&state);
    assert_eq!(runs_now.len(), 1, "{runs_now:?}");
    let run_id = str_of(&runs_now[0], "run_id").to_string();
    assert_eq!(str_of(&runs_now[0], "status"), "running");
    // `quick` is independent: let it finish before the signal.
    let quick_done = wait_until(LIMIT, || {
        status_of(&show(&state, &run_id), "quick") == "succeeded"
    });
    assert!(quick_done, "quick never succeeded\n{}", logs(&log));

    signal(child.id(), sig);
    let signalled = Instant::now();
    let Some(status) = wait_timeout(&mut child, Duration::from_secs(10)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the engine did not exit within 10 s of signal {sig}\n{}",
            logs(&log)
        );
    };
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(130),
        "exit status after signal {sig}: {status}\n{}",
        logs(&log)
    );
    assert!(
        wait_gone(&pids, &state),
        "task processes survived the cancel: {:?}",
        pids.iter()
            .filter(|&&p| own_process_alive(p, &marker_env))
            .collect::<Vec<_>>()
    );

    let report = show(&state, &run_id);
    assert_eq!(str_of(&report, "status"), "cancelled", "{report}");
    assert_eq!(status_of(&report, "slow"), "cancelled", "{report}");
    assert_eq!(status_of(&report, "slow2"), "cancelled", "{report}");
    assert_eq!(status_of(&report, "quick"), "succeeded", "{report}");
    let after = status_of(&report, "after");
    assert!(
        after == "pending" || after == "cancelled",
        "`after` never started, yet is {after}: {report}"
    );
    assert_eq!(
        counter_count(&dir, "after"),
        0,
        "`after` ran before its inputs"
    );
    let attempts: Vec<(String, String)> = report["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                str_of(a, "task_id").to_string(),
                str_of(a, "status").to_string(),
            )
        })
        .collect();
    for task in ["slow", "slow2"] {
        assert!(
            attempts.contains(&(task.to_string(), "cancelled".to_string())),
            "{task}'s attempt is not recorded cancelled: {attempts:?}"
        );
    }
    let listed = runs(&state);
    assert_eq!(str_of(&listed[0], "status"), "cancelled", "{listed:?}");

    // Resume without the marker: the sleepers end at once.
    std::fs::remove_file(&marker).unwrap();
    let resume_log = scratch.path("resume");
    let mut resume = spawn(&state, &["resume", &run_id], &resume_log);
    let status = wait_timeout(&mut resume, LIMIT).unwrap_or_else(|| {
        let _ = resume.kill();
        panic!("resume did not finish\n{}", logs(&resume_log))
    });
    assert_eq!(
        status.code(),
        Some(0),
        "resume failed\n{}",
        logs(&resume_log)
    );
    let report = show(&state, &run_id);
    assert_eq!(str_of(&report, "status"), "succeeded", "{report}");
    let tasks = tasks_by_id(&report);
    for (task, attempts) in [("slow", 2), ("slow2", 2), ("quick", 1), ("after", 1)] {
        assert_eq!(str_of(&tasks[task], "status"), "succeeded", "{report}");
        assert_eq!(tasks[task]["attempts"], json!(attempts), "{task}: {report}");
    }
    assert_eq!(counter_count(&dir, "quick"), 1, "quick ran again on resume");
    assert_eq!(counter_count(&dir, "slow"), 2);
    assert_eq!(
        tasks["after"]["output"],
        json!({
            "slow": {"done": "slow"},
            "slow2": {"done": "slow2"},
            "quick": {"done": "quick"},
        })
    );
    eprintln!(
        "signal {sig}: exit 130 {took:?} after the signal; test took {:?}",
        started.elapsed()
    );
}

#[test]
fn sigint_cancels_the_run_kills_its_processes_and_resume_finishes_it() {
    cancel_with(libc::SIGINT);
}

#[test]
fn sigterm_cancels_the_run_kills_its_processes_and_resume_finishes_it() {
    cancel_with(libc::SIGTERM);
}

#[test]
fn a_timeout_fails_the_task_and_kills_its_background_children() {
    let started = Instant::now();
    let scratch = Scratch::new();
    let pid_file = scratch.path("bg.pid");
    let dag = scratch.write(
        "timeout.toml",
        &format!(
            r#"
[dag]
name = "timeout"

[tasks.hang]
type = "shell"
timeout_seconds = 1
command = '''
sleep 30 &
echo $! > '{pid}'
wait
'''

[tasks.next]
type = "shell"
depends_on = ["hang"]
command = "true"
"#,
            pid = pid_file.display()
        ),
    );
    let state = scratch.path("state");
    let log = scratch.path("engine");
    let mut child = spawn(&state, &["run", dag.to_str().unwrap()], &log);
    let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("a 1 s timeout did not end the run\n{}", logs(&log))
    });
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "{}", logs(&log));
    assert!(
        took >= Duration::from_millis(900),
        "the run failed before the timeout could fire ({took:?})\n{}",
        logs(&log)
    );
    assert!(
        took < Duration::from_secs(10),
        "a 1 s timeout took {took:?} to fail the run"
    );
    let pid = read_pid(&pid_file).expect("the task wrote its background pid");
    assert!(
        wait_gone(&[pid], &state),
        "the background `sleep 30` ({pid}) outlived the timeout"
    );

    let listed = runs(&state);
    assert_eq!(listed.len(), 1);
    let run_id = str_of(&listed[0], "run_id").to_string();
    let report = show(&state, &run_id);
    assert_eq!(str_of(&report, "status"), "failed", "{report}");
    let tasks = tasks_by_id(&report);
    assert_eq!(str_of(&tasks["hang"], "status"), "failed", "{report}");
    let error = str_of(&tasks["hang"], "error").to_lowercase();
    assert!(
        error.contains("timed out") || error.contains("timeout"),
        "the error does not mention the timeout: {error:?}"
    );
    assert_eq!(tasks["hang"]["attempts"], json!(1), "{report}");
    assert_eq!(
        str_of(&tasks["next"], "status"),
        "upstream_failed",
        "{report}"
    );
    eprintln!("timeout: run failed after {took:?}");
}

//! Nothing a run starts outlives it: an attempt's processes end with the
//! attempt, a killed engine's task processes end within seconds of it
//! (SIGKILL included, through the reaper), a closed terminal (SIGHUP)
//! cancels the run like Ctrl-C, and a second run in the same state dir is
//! refused at once rather than breaking the first one's writes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A DAG whose one task starts a background `sleep` and sleeps itself,
/// writing both process ids next to the DAG file.
fn sleeper(s: &Scratch, seconds: u32) -> String {
    let dag = format!(
        r#"[dag]
name = "sleeper"

[tasks.nap]
type = "shell"
command = "sleep {seconds} & echo $! > bg.pid; echo $$ > fg.pid; sleep {seconds}"
"#
    );
    s.write("sleeper.toml", &dag).display().to_string()
}

/// Waits until the task wrote both of its process ids.
fn task_pids(s: &Scratch) -> (i32, i32) {
    let (fg, bg) = (s.path("fg.pid"), s.path("bg.pid"));
    assert!(
        wait_until(Duration::from_secs(30), || read_pid(&fg).is_some()
            && read_pid(&bg).is_some()),
        "the task never started"
    );
    (read_pid(&fg).unwrap(), read_pid(&bg).unwrap())
}

/// Whether any of `pids` still runs as a task process of `state`, waiting
/// up to `limit` for them to go.
fn gone_within(pids: &[i32], state: &Path, limit: Duration) -> Result<Duration, Vec<i32>> {
    let marker = task_env_marker(state);
    let start = Instant::now();
    loop {
        let alive: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&p| own_process_alive(p, &marker))
            .collect();
        if alive.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(alive);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_sigkilled_engine_leaves_no_task_process_behind() {
    let s = Scratch::new();
    let dag = sleeper(&s, 300);
    let state = s.path("state");
    let mut engine = spawn(&state, &["run", &dag], &s.path("run"));
    let (fg, bg) = task_pids(&s);
    engine.kill().unwrap(); // SIGKILL: nothing runs in the engine any more
    engine.wait().unwrap();
    let took = gone_within(&[fg, bg], &state, Duration::from_secs(5)).unwrap_or_else(|alive| {
        for p in &alive {
            kill_group(*p);
        }
        panic!("task processes {alive:?} outlived the killed engine by 5 s")
    });
    eprintln!("the task's processes were gone {took:?} after the engine's SIGKILL");
}

#[test]
fn a_hangup_cancels_the_run_and_stops_its_tasks() {
    let s = Scratch::new();
    let dag = sleeper(&s, 300);
    let state = s.path("state");
    let mut engine = spawn(&state, &["run", &dag], &s.path("run"));
    let (fg, bg) = task_pids(&s);
    signal(engine.id(), libc::SIGHUP);
    let status = wait_timeout(&mut engine, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the engine ignored SIGHUP\n{}", logs(&s.path("run"))));
    assert_eq!(status.code(), Some(130), "{}", logs(&s.path("run")));
    gone_within(&[fg, bg], &state, Duration::from_secs(5))
        .unwrap_or_else(|alive| panic!("task processes {alive:?} survived the hang-up"));
    let run = &runs(&state)[0];
    assert_eq!(str_of(run, "status"), "cancelled", "{run}");
    let tasks = tasks_by_id(&show(&state, str_of(run, "run_id")));
    assert_eq!(str_of(&tasks["nap"], "status"), "cancelled");
}

#[test]
fn an_attempts_background_processes_end_with_it() {
    let s = Scratch::new();
    let dag = s.write(
        "background.toml",
        "[dag]\nname = \"background\"\n\n[tasks.start]\ntype = \"shell\"\ncommand = \"sleep 300 & echo $! > bg.pid\"\n",
    );
    let state = s.path("state");
    let out = flux(&state, &["run", dag.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bg = read_pid(&s.path("bg.pid")).expect("the task wrote its background pid");
    gone_within(&[bg], &state, Duration::from_secs(5))
        .unwrap_or_else(|alive| panic!("{alive:?} outlived the attempt that started it"));
}

#[test]
fn a_second_run_in_the_same_state_dir_is_refused_at_once() {
    let s = Scratch::new();
    let dag = sleeper(&s, 300);
    let state = s.path("state");
    let mut first = spawn(&state, &["run", &dag], &s.path("first"));
    let (fg, bg) = task_pids(&s);
    let first_id = str_of(&runs(&state)[0], "run_id").to_string();

    let started = Instant::now();
    let second = flux(&state, &["run", &dag]);
    let took = started.elapsed();
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(5), "refused only after {took:?}");
    assert!(err.contains("another run is going on"), "{err}");
    assert!(err.contains(&first_id), "the message names the run: {err}");
    assert!(
        err.contains("--state-dir"),
        "the message says what to do: {err}"
    );
    // The refused run left no trace, and the first one runs on.
    assert_eq!(runs(&state).len(), 1);
    assert!(
        first.try_wait().unwrap().is_none(),
        "{}",
        logs(&s.path("first"))
    );
    let resumed = flux(&state, &["resume", "--latest"]);
    assert_eq!(resumed.status.code(), Some(2), "{}", text(&resumed.stderr));

    signal(first.id(), libc::SIGTERM);
    wait_timeout(&mut first, Duration::from_secs(20)).expect("the first run stops on SIGTERM");
    gone_within(&[fg, bg], &state, Duration::from_secs(5)).expect("its tasks stop with it");
    // Free again: the next run goes ahead.
    let third = s.write(
        "quick.toml",
        "[dag]\nname = \"quick\"\n\n[tasks.a]\ntype = \"noop\"\n",
    );
    let out = flux(&state, &["run", third.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

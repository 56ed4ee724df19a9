//! The exported state machines executed by a third-party interpreter
//! (`aws-local-stepfunctions`, through tests/common/sfn_local.rs), every
//! Task state overridden: the order of the task states respects the DAG,
//! a task failing once is retried and the execution succeeds, and a task
//! failing every time ends the execution failed after the cleanup states
//! (EMR terminate) ran.
//!
//! The DAG's edges come from the DAG file, loaded by the engine's own
//! loader; the order comes from the interpreter's records.

mod common;

use std::path::PathBuf;

use common::sfn_local::{Execution, Phase, RunOptions, available, run_state_machine};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `flux-engine export --sfn DAG` as JSON.
fn export(dag: &str) -> Value {
    let state = tempfile::tempdir().unwrap();
    let path = repo().join(dag);
    let output = common::flux(state.path(), &["export", "--sfn", path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "export --sfn {dag} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the export is JSON")
}

/// Every (dependency, task) edge of a DAG file.
fn edges(dag: &str) -> Vec<(String, String)> {
    let loaded = engine::dag::load(&repo().join(dag), &[], &tasks::registry())
        .unwrap_or_else(|e| panic!("{dag}: {e}"));
    loaded
        .tasks
        .iter()
        .flat_map(|t| t.depends_on.iter().map(|d| (d.clone(), t.id.clone())))
        .collect()
}

/// Every pair (a, b) of tasks that run Task states (not `noop`, which
/// becomes a `Pass` state the interpreter does not hand to a handler)
/// where b depends on a directly or through other tasks.
fn ordered_pairs(dag: &str) -> Vec<(String, String)> {
    let loaded = engine::dag::load(&repo().join(dag), &[], &tasks::registry())
        .unwrap_or_else(|e| panic!("{dag}: {e}"));
    let edges = edges(dag);
    let working: Vec<&str> = loaded
        .tasks
        .iter()
        .filter(|t| t.kind != "noop")
        .map(|t| t.id.as_str())
        .collect();
    let mut pairs = Vec::new();
    for &from in &working {
        let mut reached: Vec<&str> = vec![from];
        let mut i = 0;
        while i < reached.len() {
            let here = reached[i];
            for (a, b) in &edges {
                if a == here && !reached.contains(&b.as_str()) {
                    reached.push(b);
                }
            }
            i += 1;
        }
        for to in reached.into_iter().skip(1) {
            if working.contains(&to) {
                pairs.push((from.to_string(), to.to_string()));
            }
        }
    }
    pairs
}

/// Whether a recorded Task state belongs to task `id`: it is named `id`
/// or `id.Suffix`.
fn of_task(state: &str, id: &str) -> bool {
    state == id
        || state
            .strip_prefix(id)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn first_start(run: &Execution, id: &str) -> Option<u64> {
    run.events
        .iter()
        .filter(|e| e.phase == Phase::Start && of_task(&e.state, id))
        .map(|e| e.seq)
        .min()
}

fn last_event(run: &Execution, id: &str) -> Option<u64> {
    run.events
        .iter()
        .filter(|e| of_task(&e.state, id))
        .map(|e| e.seq)
        .max()
}

fn assert_order(dag: &str, run: &Execution) {
    let pairs = ordered_pairs(dag);
    assert!(
        !pairs.is_empty(),
        "{dag} has no ordered pair of task states"
    );
    for (before, after) in pairs {
        let (Some(done), Some(start)) = (last_event(run, &before), first_start(run, &after)) else {
            panic!(
                "{dag}: `{before}` or `{after}` ran no Task state\n{}",
                run.describe()
            );
        };
        assert!(
            done < start,
            "{dag}: `{after}` started before `{before}` ended\n{}",
            run.describe()
        );
    }
}

#[test]
fn exported_state_machines_run_tasks_in_dag_order() {
    if !available("exported_state_machines_run_tasks_in_dag_order") {
        return;
    }
    for dag in ["dags/rental.toml", "dags/sfn_example.toml"] {
        let run = run_state_machine(&export(dag), &RunOptions::new());
        assert_eq!(run.status, "SUCCEEDED", "{dag}\n{}", run.describe());
        assert_order(dag, &run);
    }
}

#[test]
fn a_spark_step_failing_once_is_retried_and_the_execution_succeeds() {
    if !available("a_spark_step_failing_once_is_retried_and_the_execution_succeeds") {
        return;
    }
    let dag = "dags/rental.toml";
    let run = run_state_machine(&export(dag), &RunOptions::new().fail_once("clean"));
    assert_eq!(run.status, "SUCCEEDED", "{}", run.describe());
    assert_eq!(run.calls("clean"), 2, "{}", run.describe());
    assert_order(dag, &run);
}

#[test]
fn a_spark_step_failing_always_fails_the_execution_after_terminating_the_cluster() {
    if !available("a_spark_step_failing_always_fails_the_execution_after_terminating_the_cluster") {
        return;
    }
    let dag = "dags/rental.toml";
    let run = run_state_machine(&export(dag), &RunOptions::new().fail_always("clean"));
    assert_eq!(run.status, "FAILED", "{}", run.describe());
    assert_eq!(
        run.error.as_deref(),
        Some("clean.Failed"),
        "{}",
        run.describe()
    );
    // The retry policy of the DAG: max_attempts = 2.
    assert_eq!(run.calls("clean"), 2, "{}", run.describe());
    // A cluster-terminating Task state ran after the last failure.
    let last_fail = run
        .events
        .iter()
        .filter(|e| e.state == "clean" && e.phase == Phase::Fail)
        .map(|e| e.seq)
        .max()
        .expect("clean failed");
    let terminated = run.events.iter().any(|e| {
        e.seq > last_fail && e.phase == Phase::Start && terminates_cluster(&export(dag), &e.state)
    });
    assert!(
        terminated,
        "no EMR terminate after the failure\n{}",
        run.describe()
    );
    // No task that depends on clean started.
    for (before, after) in edges(dag) {
        if before == "clean" {
            assert_eq!(
                first_start(&run, &after),
                None,
                "{after} started\n{}",
                run.describe()
            );
        }
    }
}

/// Whether `state` (anywhere in the definition) is a Task that terminates
/// an EMR cluster.
fn terminates_cluster(definition: &Value, state: &str) -> bool {
    fn find<'a>(states: &'a Value, name: &str) -> Option<&'a Value> {
        let map = states.as_object()?;
        if let Some(found) = map.get(name) {
            return Some(found);
        }
        map.values().find_map(|s| {
            s["Branches"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(s.get("Iterator"))
                .chain(s.get("ItemProcessor"))
                .find_map(|b| find(&b["States"], name))
        })
    }
    find(&definition["States"], state)
        .and_then(|s| s["Resource"].as_str())
        .is_some_and(|r| r.contains("elasticmapreduce:terminateCluster"))
}

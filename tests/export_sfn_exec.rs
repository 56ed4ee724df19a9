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
    export_args(dag, &[])
}

/// `flux-engine export --sfn DAG ARGS...` as JSON.
fn export_args(dag: &str, args: &[&str]) -> Value {
    let state = tempfile::tempdir().unwrap();
    let path = repo().join(dag);
    let mut all = vec!["export", "--sfn", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = common::flux(state.path(), &all);
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

/// Every Task call's input, by (state, call number). An EMR Serverless
/// job run's `ClientToken` is `States.UUID()`, new at every call: it is
/// checked to be there and left out of the comparison.
fn task_inputs(run: &Execution) -> std::collections::BTreeMap<(String, u64), Value> {
    run.events
        .iter()
        .filter(|e| e.phase == Phase::Start)
        .map(|e| {
            let mut input = e.input.clone().expect("inputs are recorded");
            if let Some(token) = input.as_object_mut().and_then(|o| o.remove("ClientToken")) {
                assert_eq!(token.as_str().map(str::len), Some(36), "{token}");
            }
            ((e.state.clone(), e.call), input)
        })
        .collect()
}

/// Parameters given in the execution input mean what the same values
/// given at export mean: the interpreter, evaluating the intrinsic
/// functions, hands every Task the same input as the state machine
/// exported with `--inline-params --param` the same values.
#[test]
fn execution_params_mean_what_export_params_mean() {
    if !available("execution_params_mean_what_export_params_mean") {
        return;
    }
    for dag in common::EXPORTABLE {
        let loaded = engine::dag::load(&repo().join(dag), &[], &tasks::registry())
            .unwrap_or_else(|e| panic!("{dag}: {e}"));
        let overrides: Vec<(String, String)> = loaded
            .params
            .keys()
            .filter(|name| !loaded.path_params.contains(*name))
            .map(|name| {
                // Values the DAG's validation accepts: bucket names take
                // `-`, database names `_`, numbers stay numbers.
                let value = if loaded.params[name].parse::<f64>().is_ok() {
                    "0.25".to_string()
                } else if name.contains("bucket") {
                    format!("other-{}", name.replace('_', "-"))
                } else {
                    format!("other_{name}")
                };
                (name.clone(), value)
            })
            .collect();
        assert!(!overrides.is_empty(), "{dag} has no parameter to override");
        let run = |definition: &Value, input: Value| {
            let run = run_state_machine(definition, &RunOptions::new().record_input().input(input));
            assert_eq!(run.status, "SUCCEEDED", "{dag}\n{}", run.describe());
            task_inputs(&run)
        };
        let runtime = export(dag);

        // No input: the defaults, as the DAG declares them.
        let defaults = run(&runtime, serde_json::json!({}));
        let inline_defaults = run(
            &export_args(dag, &["--inline-params"]),
            serde_json::json!({}),
        );
        assert_eq!(defaults, inline_defaults, "{dag}: defaults differ");

        // Every parameter given at execution.
        let params: serde_json::Map<String, Value> = overrides
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let given = run(&runtime, serde_json::json!({ "params": params }));
        let mut args = vec!["--inline-params".to_string()];
        for (k, v) in &overrides {
            args.push("--param".into());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let inline_given = run(&export_args(dag, &args), serde_json::json!({}));
        assert_eq!(given, inline_given, "{dag}: given parameters differ");
        // The values reached the tasks (so the comparison above compared something).
        let text = format!("{given:?}");
        for (_, v) in &overrides {
            assert!(text.contains(v.as_str()), "{dag}: {v} reached no task");
        }
        assert_ne!(defaults, given, "{dag}");

        // One parameter given: the others keep their defaults.
        let (name, value) = &overrides[0];
        let one = run(&runtime, serde_json::json!({ "params": { name: value } }));
        let inline_one = run(
            &export_args(
                dag,
                &["--inline-params", "--param", &format!("{name}={value}")],
            ),
            serde_json::json!({}),
        );
        assert_eq!(one, inline_one, "{dag}: one given parameter");
    }
}

//! The Step Functions harness: Amazon States Language state machines run
//! in `aws-local-stepfunctions` (npm, a third-party ASL interpreter) with
//! every Task state overridden by a local handler
//! (exporters/tests/sfn_local/run.cjs) that records when each task state
//! starts, ends or fails and returns a plausible service response.
//!
//! These tests check the harness itself on small handwritten definitions
//! (order, Parallel, Retry, Catch → cleanup → Fail, a Choice/Wait poll
//! loop, Map, an Athena `expect`-style check), so that the exporter's
//! tests can trust it on exported state machines. The [`sfn_local`]
//! module below is meant to be lifted as is into tests/common/.
//!
//! Needs `node` and the package, pinned in
//! exporters/tests/sfn_local/package.json, installed under
//! `$FLUX_NPM_PREFIX` (default `$HOME/.cache/flux-engine/npm`):
//! `npm install --save-exact --prefix ~/.cache/flux-engine/npm aws-local-stepfunctions@3.0.0`.
//! Without them each test says SKIPPED loudly and passes, unless
//! `FLUX_REQUIRE_CHECKERS=1` (CI), where it fails.

mod common;

use common::sfn_local;
use serde_json::{Value, json};
use sfn_local::{Phase, RunOptions, available, run_state_machine, try_run_state_machine};

// ---------------------------------------------------------------------------
// The tests. Expected values come from the definitions written here.

const CREATE_CLUSTER: &str = "arn:aws:states:::elasticmapreduce:createCluster.sync";
const ADD_STEP: &str = "arn:aws:states:::elasticmapreduce:addStep.sync";
const TERMINATE: &str = "arn:aws:states:::elasticmapreduce:terminateCluster.sync";
const HEAD_OBJECT: &str = "arn:aws:states:::aws-sdk:s3:headObject";
const START_CRAWLER: &str = "arn:aws:states:::aws-sdk:glue:startCrawler";
const GET_CRAWLER: &str = "arn:aws:states:::aws-sdk:glue:getCrawler";
const START_QUERY: &str = "arn:aws:states:::athena:startQueryExecution.sync";
const QUERY_RESULTS: &str = "arn:aws:states:::athena:getQueryResults";
const LAMBDA: &str = "arn:aws:states:::lambda:invoke";

fn task(resource: &str, parameters: Value) -> Value {
    json!({"Type": "Task", "Resource": resource, "Parameters": parameters})
}

/// `state` with `fields` merged in.
fn with(mut state: Value, fields: Value) -> Value {
    let map = state.as_object_mut().unwrap();
    for (k, v) in fields.as_object().unwrap() {
        map.insert(k.clone(), v.clone());
    }
    state
}

fn add_step(name: &str) -> Value {
    task(
        ADD_STEP,
        json!({"ClusterId.$": "$.cluster.ClusterId", "Step": {"Name": name, "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "s3://b/job.py"]}}}),
    )
}

#[test]
fn a_sequence_runs_in_order_and_passes_plausible_responses_along() {
    if !available("a_sequence_runs_in_order_and_passes_plausible_responses_along") {
        return;
    }
    let definition = json!({
        "Comment": "A then B: B reads A's ClusterId",
        "StartAt": "A",
        "States": {
            "A": with(task(CREATE_CLUSTER, json!({"Name": "c", "ReleaseLabel": "emr-7.5.0", "Instances": {}})),
                      json!({"ResultSelector": {"ClusterId.$": "$.ClusterId"}, "ResultPath": "$.cluster", "Next": "B"})),
            "B": with(add_step("b"), json!({"ResultPath": "$.step", "End": true})),
        }
    });
    let run = run_state_machine(&definition, &RunOptions::new().input(json!({"run": "r1"})));
    assert_eq!(run.status, "SUCCEEDED", "{}", run.describe());
    assert_eq!(
        run.trace(),
        [
            ("A", Phase::Start),
            ("A", Phase::End),
            ("B", Phase::Start),
            ("B", Phase::End)
        ],
        "{}",
        run.describe()
    );
    assert_eq!((run.calls("A"), run.calls("B")), (1, 1));
    assert_eq!(
        run.output,
        json!({"run": "r1", "cluster": {"ClusterId": "j-LOCAL"}, "step": {"StepId": "s-LOCAL"}})
    );
    assert_eq!(run.entered, ["A", "B"]);
    assert_eq!(run.raw["harness"]["version"], sfn_local::pinned_version());
}

#[test]
fn a_parallel_runs_its_branches_together_and_waits_for_both() {
    if !available("a_parallel_runs_its_branches_together_and_waits_for_both") {
        return;
    }
    let definition = json!({
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "A1", "States": {
                        "A1": with(task(HEAD_OBJECT, json!({"Bucket": "b", "Key": "k"})), json!({"Next": "A2"})),
                        "A2": with(task(LAMBDA, json!({"FunctionName": "f", "Payload": {}})), json!({"End": true})),
                    }},
                    {"StartAt": "B", "States": {
                        "B": with(task(START_QUERY, json!({"QueryString": "SELECT 1", "WorkGroup": "primary"})), json!({"End": true})),
                    }},
                ],
                "ResultPath": "$.branches",
                "Next": "C"
            },
            "C": with(task(LAMBDA, json!({"FunctionName": "g", "Payload": {}})), json!({"ResultPath": null, "End": true})),
        }
    });
    let run = run_state_machine(&definition, &RunOptions::new());
    let d = run.describe();
    assert_eq!(run.status, "SUCCEEDED", "{d}");
    for state in ["A1", "A2", "B", "C"] {
        assert_eq!(run.calls(state), 1, "{state}: {d}");
    }
    // Within a branch, in order; after the Parallel, C only once both ended.
    run.assert_all_before("A1", "A2");
    run.assert_all_before("A2", "C");
    run.assert_all_before("B", "C");
    // The branches overlap: both started before either's first task ended.
    let first_end = run.first("A1", Phase::End).unwrap();
    assert!(
        run.first("B", Phase::Start).unwrap() < first_end
            && run.first("B", Phase::Start).unwrap() < run.first("B", Phase::End).unwrap()
            && run.first("A1", Phase::Start).unwrap() < run.first("B", Phase::End).unwrap(),
        "the branches did not run concurrently:\n{d}"
    );
    // The Parallel's output is one result per branch, in branch order.
    let branches = &run.output["branches"];
    assert_eq!(branches[0]["Payload"]["state"], "A2", "{}", run.output);
    assert_eq!(
        branches[1]["QueryExecution"]["Status"]["State"], "SUCCEEDED",
        "{}",
        run.output
    );
}

#[test]
fn a_task_that_fails_once_is_retried_and_the_execution_succeeds() {
    if !available("a_task_that_fails_once_is_retried_and_the_execution_succeeds") {
        return;
    }
    // IntervalSeconds 60: the run takes milliseconds only because the
    // harness overrides retry intervals to 0.
    let definition = |errors: Value| {
        json!({
            "StartAt": "A",
            "States": {
                "A": with(task(HEAD_OBJECT, json!({"Bucket": "b", "Key": "k"})), json!({"ResultPath": null, "Next": "B"})),
                "B": with(add_step("b"), json!({
                    "Retry": [{"ErrorEquals": errors, "IntervalSeconds": 60, "MaxAttempts": 2, "BackoffRate": 2.0}],
                    "Next": "C"
                })),
                "C": with(task(LAMBDA, json!({"FunctionName": "f", "Payload": {}})), json!({"End": true})),
            }
        })
    };
    let input = json!({"cluster": {"ClusterId": "j-1"}});
    let started = std::time::Instant::now();
    let run = run_state_machine(
        &definition(json!(["States.ALL"])),
        &RunOptions::new().input(input.clone()).fail_once("B"),
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "the retry interval was not overridden"
    );
    assert_eq!(run.status, "SUCCEEDED", "{}", run.describe());
    assert_eq!(run.calls("B"), 2, "{}", run.describe());
    assert_eq!(
        run.trace(),
        [
            ("A", Phase::Start),
            ("A", Phase::End),
            ("B", Phase::Start),
            ("B", Phase::Fail),
            ("B", Phase::Start),
            ("B", Phase::End),
            ("C", Phase::Start),
            ("C", Phase::End)
        ],
        "{}",
        run.describe()
    );
    assert_eq!(run.events[3].error.as_deref(), Some("States.TaskFailed"));

    // A custom error that the retrier names is retried too...
    let run = run_state_machine(
        &definition(json!(["Custom.Transient"])),
        &RunOptions::new()
            .input(input.clone())
            .fail_once_with("B", "Custom.Transient"),
    );
    assert_eq!(run.status, "SUCCEEDED", "{}", run.describe());
    assert_eq!(run.calls("B"), 2);

    // ... one it does not name is not: the execution fails on B's error.
    let run = run_state_machine(
        &definition(json!(["Custom.Transient"])),
        &RunOptions::new()
            .input(input)
            .fail_once_with("B", "Custom.Fatal"),
    );
    assert_eq!(run.status, "FAILED", "{}", run.describe());
    assert_eq!(run.error.as_deref(), Some("Custom.Fatal"));
    assert_eq!(
        (run.calls("B"), run.calls("C")),
        (1, 0),
        "{}",
        run.describe()
    );
}

/// Create a cluster, run a step (retried once), terminate; any failure of
/// the step is caught: Cleanup terminates the cluster, then Failed.
fn cluster_with_cleanup() -> Value {
    json!({
        "StartAt": "Create",
        "States": {
            "Create": with(task(CREATE_CLUSTER, json!({"Name": "c", "ReleaseLabel": "emr-7.5.0", "Instances": {}})),
                           json!({"ResultPath": "$.cluster", "Next": "Work"})),
            "Work": with(add_step("work"), json!({
                "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 10, "MaxAttempts": 1}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Cleanup"}],
                "ResultPath": "$.work",
                "Next": "Terminate"
            })),
            "Terminate": with(task(TERMINATE, json!({"ClusterId.$": "$.cluster.ClusterId"})),
                              json!({"ResultPath": null, "End": true})),
            "Cleanup": with(task(TERMINATE, json!({"ClusterId.$": "$.cluster.ClusterId"})),
                            json!({"ResultPath": null, "Next": "Failed"})),
            "Failed": {"Type": "Fail", "Error": "Work.Failed", "Cause": "the task `work` failed"},
        }
    })
}

#[test]
fn a_task_that_always_fails_is_caught_cleaned_up_and_fails_the_execution() {
    if !available("a_task_that_always_fails_is_caught_cleaned_up_and_fails_the_execution") {
        return;
    }
    let run = run_state_machine(
        &cluster_with_cleanup(),
        &RunOptions::new().fail_always("Work").record_input(),
    );
    let d = run.describe();
    assert_eq!(run.status, "FAILED", "{d}");
    assert_eq!(run.error.as_deref(), Some("Work.Failed"), "{d}");
    assert_eq!(run.cause.as_deref(), Some("the task `work` failed"), "{d}");
    // 1 attempt + MaxAttempts 1 retry, then caught.
    assert_eq!(run.calls("Work"), 2, "{d}");
    assert_eq!(run.calls("Cleanup"), 1, "{d}");
    assert_eq!(run.calls("Terminate"), 0, "{d}");
    run.assert_all_before("Create", "Work");
    run.assert_all_before("Work", "Cleanup");
    assert_eq!(
        run.last("Cleanup", Phase::End),
        run.events.last().map(|e| e.seq),
        "{d}"
    );
    assert_eq!(
        run.entered.last().map(String::as_str),
        Some("Failed"),
        "{d}"
    );
    // The cleanup terminates the cluster that Create made.
    assert_eq!(
        run.input("Cleanup", 1),
        Some(&json!({"ClusterId": "j-LOCAL"})),
        "{d}"
    );

    // The same machine without the failure takes the normal path.
    let run = run_state_machine(&cluster_with_cleanup(), &RunOptions::new());
    assert_eq!(run.status, "SUCCEEDED", "{}", run.describe());
    assert_eq!(
        run.started(),
        ["Create", "Work", "Terminate"],
        "{}",
        run.describe()
    );
    assert_eq!(run.output["work"], json!({"StepId": "s-LOCAL"}));

    // A failure the Retry does not get past, whatever the error's name.
    let run = run_state_machine(
        &cluster_with_cleanup(),
        &RunOptions::new().fail_always_with("Work", "Custom.Error"),
    );
    assert_eq!(run.status, "FAILED");
    assert_eq!(run.started(), ["Create", "Work", "Work", "Cleanup"]);
}

/// Start a crawler, then Wait → Poll (getCrawler) → Check until READY,
/// then succeed or fail on the last crawl's status. (While RUNNING the
/// harness's crawler has no LastCrawl, as on its first crawl: a Choice
/// must not read it before State is READY.)
fn crawl_loop() -> Value {
    json!({
        "StartAt": "Start",
        "States": {
            "Start": with(task(START_CRAWLER, json!({"Name": "rental-crawl"})),
                          json!({"ResultPath": null, "Next": "Wait"})),
            "Wait": {"Type": "Wait", "Seconds": 30, "Next": "Poll"},
            "Poll": with(task(GET_CRAWLER, json!({"Name": "rental-crawl"})),
                         json!({"ResultPath": "$.crawler", "Next": "Check"})),
            "Check": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.crawler.Crawler.State", "StringEquals": "READY", "Next": "Result"}],
                "Default": "Wait"
            },
            "Result": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.crawler.Crawler.LastCrawl.Status", "StringEquals": "SUCCEEDED", "Next": "Done"}],
                "Default": "CrawlFailed"
            },
            "Done": {"Type": "Succeed"},
            "CrawlFailed": {"Type": "Fail", "Error": "Crawl.Failed", "Cause": "the crawl failed"},
        }
    })
}

#[test]
fn a_choice_loop_polls_a_crawler_until_it_is_ready() {
    if !available("a_choice_loop_polls_a_crawler_until_it_is_ready") {
        return;
    }
    // Without overriding Wait to 0 this run would take 90 s.
    let started = std::time::Instant::now();
    let run = run_state_machine(&crawl_loop(), &RunOptions::new().running_polls("Poll", 2));
    assert!(started.elapsed().as_secs() < 30, "Wait was not overridden");
    let d = run.describe();
    assert_eq!(run.status, "SUCCEEDED", "{d}");
    assert_eq!(run.started(), ["Start", "Poll", "Poll", "Poll"], "{d}");
    assert_eq!(run.times_entered("Wait"), 3, "{d}");
    assert_eq!(run.times_entered("Check"), 3, "{d}");
    assert_eq!(run.times_entered("Result"), 1, "{d}");
    assert_eq!(run.entered.last().map(String::as_str), Some("Done"), "{d}");
    run.assert_all_before("Start", "Poll");

    // READY at once: one poll.
    let run = run_state_machine(&crawl_loop(), &RunOptions::new());
    assert_eq!(run.status, "SUCCEEDED", "{}", run.describe());
    assert_eq!(run.calls("Poll"), 1);

    // A failed crawl fails the execution, after the polls.
    let run = run_state_machine(
        &crawl_loop(),
        &RunOptions::new()
            .running_polls("Poll", 1)
            .last_crawl("Poll", "FAILED"),
    );
    assert_eq!(run.status, "FAILED", "{}", run.describe());
    assert_eq!(run.error.as_deref(), Some("Crawl.Failed"));
    assert_eq!(run.calls("Poll"), 2);
    assert_eq!(run.entered.last().map(String::as_str), Some("CrawlFailed"));
}

#[test]
fn an_athena_check_reads_the_counts_row_and_fails_on_a_violation() {
    if !available("an_athena_check_reads_the_counts_row_and_fails_on_a_violation") {
        return;
    }
    // The shape of an `expect` check: row 0 is the header, row 1 the counts.
    let definition = json!({
        "StartAt": "Query",
        "States": {
            "Query": with(task(START_QUERY, json!({"QueryString": "SELECT ...", "WorkGroup": "primary"})),
                          json!({"ResultSelector": {"QueryExecutionId.$": "$.QueryExecution.QueryExecutionId"},
                                 "ResultPath": "$.q", "Next": "Counts"})),
            "Counts": with(task(QUERY_RESULTS, json!({"QueryExecutionId.$": "$.q.QueryExecutionId"})),
                           json!({"ResultSelector": {"counts.$": "$.ResultSet.Rows[1].Data"},
                                  "ResultPath": "$.expect", "Next": "Check"})),
            "Check": {
                "Type": "Choice",
                "Choices": [
                    {"Not": {"Variable": "$.expect.counts[0].VarCharValue", "StringEquals": "0"}, "Next": "ExpectFailed"},
                    {"Not": {"Variable": "$.expect.counts[1].VarCharValue", "StringEquals": "0"}, "Next": "ExpectFailed"},
                ],
                "Default": "Passed"
            },
            "ExpectFailed": {"Type": "Fail", "Error": "Query.ExpectFailed", "Cause": "a check failed"},
            "Passed": {"Type": "Succeed"},
        }
    });
    let run = run_state_machine(&definition, &RunOptions::new());
    assert_eq!(run.status, "SUCCEEDED", "{}", run.describe());
    assert_eq!(run.output["q"]["QueryExecutionId"], "q-LOCAL");
    assert_eq!(run.output["expect"]["counts"].as_array().unwrap().len(), 16);

    let run = run_state_machine(
        &definition,
        &RunOptions::new()
            .query_columns("Counts", 2)
            .query_value("Counts", "3"),
    );
    assert_eq!(run.status, "FAILED", "{}", run.describe());
    assert_eq!(run.error.as_deref(), Some("Query.ExpectFailed"));

    // No data row: the path to row 1 fails at run time.
    let run = run_state_machine(&definition, &RunOptions::new().query_rows("Counts", 0));
    assert_eq!(run.status, "FAILED", "{}", run.describe());
    assert_eq!(
        run.error.as_deref(),
        Some("States.Runtime"),
        "{}",
        run.describe()
    );

    // An exact response replaces the plausible one.
    let run = run_state_machine(
        &definition,
        &RunOptions::new().respond(
            "Counts",
            &json!({"ResultSet": {"Rows": [{"Data": []}, {"Data": [{"VarCharValue": "0"}, {"VarCharValue": "1"}]}]}}),
        ),
    );
    assert_eq!(run.error.as_deref(), Some("Query.ExpectFailed"));
}

#[test]
fn tasks_inside_a_map_are_overridden_too() {
    if !available("tasks_inside_a_map_are_overridden_too") {
        return;
    }
    let definition = json!({
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.keys",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "Head",
                    "States": {"Head": with(task(HEAD_OBJECT, json!({"Bucket": "b", "Key.$": "$"})), json!({"End": true}))}
                },
                "Next": "After"
            },
            "After": with(task(LAMBDA, json!({"FunctionName": "f", "Payload": {}})), json!({"End": true})),
        }
    });
    let run = run_state_machine(
        &definition,
        &RunOptions::new().input(json!({"keys": ["a", "b", "c"]})),
    );
    assert_eq!(run.status, "SUCCEEDED", "{}", run.describe());
    assert_eq!(run.calls("Head"), 3);
    run.assert_all_before("Head", "After");
}

#[test]
fn the_harness_reports_its_own_errors() {
    if !available("the_harness_reports_its_own_errors") {
        return;
    }
    let definition = json!({"StartAt": "A", "States": {"A": with(task(LAMBDA, json!({"FunctionName": "f"})), json!({"End": true}))}});
    // A mistyped state name is an error of the test, not a silent no-op.
    let err = try_run_state_machine(&definition, &RunOptions::new().fail_once("a")).unwrap_err();
    assert!(err.contains("no Task state of that name"), "{err}");
    // A definition the interpreter rejects: Next to a state that does not exist.
    let broken = json!({"StartAt": "A", "States": {"A": with(task(LAMBDA, json!({})), json!({"Next": "Nowhere"}))}});
    let err = try_run_state_machine(&broken, &RunOptions::new()).unwrap_err();
    assert!(err.contains("rejects the definition"), "{err}");
}

#[test]
fn the_context_object_names_the_execution() {
    if !available("the_context_object_names_the_execution") {
        return;
    }
    // Exported machines build per-execution S3 prefixes from $$.Execution.Name.
    let definition = json!({
        "StartAt": "Where",
        "States": {
            "Where": {"Type": "Pass", "Parameters": {"prefix.$": "States.Format('s3://b/out/{}/', $$.Execution.Name)", "id.$": "$$.Execution.Id"}, "Next": "Write"},
            "Write": with(task(LAMBDA, json!({"FunctionName": "f", "Payload": {"prefix.$": "$.prefix"}})), json!({"ResultPath": null, "End": true})),
        }
    });
    let run = run_state_machine(&definition, &RunOptions::new().record_input());
    assert_eq!(run.status, "SUCCEEDED", "{}", run.describe());
    assert_eq!(run.output["prefix"], "s3://b/out/local-execution/");
    let run = run_state_machine(
        &definition,
        &RunOptions::new().execution_name("run-7").record_input(),
    );
    assert_eq!(
        run.input("Write", 1),
        Some(&json!({"FunctionName": "f", "Payload": {"prefix": "s3://b/out/run-7/"}}))
    );
    assert!(
        run.output["id"].as_str().unwrap().ends_with(":run-7"),
        "{}",
        run.output
    );
}

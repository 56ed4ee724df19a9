//! Executions of the rental state machine as runs: the rental DAG is
//! deployed to moto (whose CloudFormation creates what it supports; the
//! test says which resource types it checked), then executions shaped
//! like real ones (`.sync` tasks with retries, a catch to the cluster's
//! stop, Parallel branches, more than one page of history) are served by
//! the test proxy's fake executions (moto runs no `.sync` integration and
//! implements no `RedriveExecution`), recorded with `runs --sfn`, and
//! read with `show`, `trace` and `resume`. The expected tasks are written
//! from the histories below, not from the engine's output.

mod common;

use std::process::Output;

use common::aws_endpoint::{AwsEndpoint, REGION};
use common::{Scratch, text};
use serde_json::{Value, json};

const BUCKET: &str = "flux-rental";

fn rental() -> String {
    format!("{}/dags/rental.toml", env!("CARGO_MANIFEST_DIR"))
}

fn flux(aws: &AwsEndpoint, s: &Scratch, args: &[&str]) -> Output {
    let mut command = common::command(&s.path("state"));
    aws.configure(&mut command);
    // The report function's package holds a small stand-in binary: the
    // test's flux-engine is a debug build of several hundred MB.
    command
        .env("FLUX_REPORT_BINARY", s.path("bootstrap-binary"))
        .args(args)
        .output()
        .expect("flux-engine runs")
}

fn sign(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

fn moto_json(aws: &mut AwsEndpoint, target: &str, service: &str, body: Value) -> Value {
    aws.call(json!({
        "op": "moto", "method": "POST", "path": "/",
        "body": body.to_string(),
        "headers": {
            "X-Amz-Target": target,
            "Content-Type": "application/x-amz-json-1.1",
            "Authorization": sign(service),
        },
    }))
}

fn moto_query(aws: &mut AwsEndpoint, service: &str, query: &str) -> String {
    let answer = aws.call(json!({
        "op": "moto", "method": "POST", "path": "/",
        "body": query,
        "headers": {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": sign(service),
        },
    }));
    match &answer["body"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A history being written: ids in order, each event after `previous`.
struct History {
    events: Vec<Value>,
    at: f64,
}

impl History {
    fn new(start: f64) -> History {
        History {
            events: Vec::new(),
            at: start,
        }
    }

    fn push(&mut self, previous: i64, kind: &str, details: Option<(&str, Value)>) -> i64 {
        let id = self.events.len() as i64 + 1;
        self.at += 1.5;
        let mut event =
            json!({"id": id, "previousEventId": previous, "timestamp": self.at, "type": kind});
        if let Some((key, value)) = details {
            event[key] = value;
        }
        self.events.push(event);
        id
    }

    fn entered(&mut self, previous: i64, kind: &str, state: &str) -> i64 {
        self.push(
            previous,
            &format!("{kind}StateEntered"),
            Some((
                "stateEnteredEventDetails",
                json!({"name": state, "input": "{}"}),
            )),
        )
    }

    fn exited(&mut self, previous: i64, kind: &str, state: &str) -> i64 {
        self.push(
            previous,
            &format!("{kind}StateExited"),
            Some((
                "stateExitedEventDetails",
                json!({"name": state, "output": "{}"}),
            )),
        )
    }

    /// A Task state's work: scheduled, started, (submitted,) then each
    /// outcome in turn (`Err(error)` a failure retried or caught).
    fn task(
        &mut self,
        previous: i64,
        state: &str,
        sync: bool,
        outcomes: &[Result<(), &str>],
    ) -> i64 {
        let mut last = self.entered(previous, "Task", state);
        for outcome in outcomes {
            last = self.push(
                last,
                "TaskScheduled",
                Some(("taskScheduledEventDetails", json!({"resourceType": "elasticmapreduce", "resource": "addStep.sync", "region": REGION, "parameters": "{}"}))),
            );
            last = self.push(
                last,
                "TaskStarted",
                Some((
                    "taskStartedEventDetails",
                    json!({"resourceType": "elasticmapreduce", "resource": "addStep.sync"}),
                )),
            );
            if sync {
                last = self.push(last, "TaskSubmitted", Some(("taskSubmittedEventDetails", json!({"resourceType": "elasticmapreduce", "resource": "addStep.sync", "output": "{}"}))));
            }
            last = match outcome {
                Ok(()) => self.push(last, "TaskSucceeded", Some(("taskSucceededEventDetails", json!({"resourceType": "elasticmapreduce", "resource": "addStep.sync", "output": "{}"})))),
                Err(error) => self.push(
                    last,
                    "TaskFailed",
                    Some(("taskFailedEventDetails", json!({"resourceType": "elasticmapreduce", "resource": "addStep.sync", "error": error, "cause": format!("{{\"Step\":{{\"Status\":{{\"FailureDetails\":{{\"Reason\":\"{error} in the step\"}}}}}}}}")}))),
                ),
            };
        }
        if outcomes.last().is_some_and(|o| o.is_ok()) {
            last = self.exited(last, "Task", state);
        }
        last
    }
}

/// The rental execution up to the Spark jobs: parameters, the ingest
/// branch (four checks and the scripts' Parallel), the cluster, `clean`
/// failing once then succeeding; then the two metrics jobs in Parallel 2,
/// `user_transaction_metrics` failing twice and caught (its stop of the
/// cluster, `user_transaction_metrics.Failed`), which fails the execution.
fn failed_rental_history(start: f64) -> (Vec<Value>, i64) {
    let mut h = History::new(start);
    let mut last = h.push(
        0,
        "ExecutionStarted",
        Some((
            "executionStartedEventDetails",
            json!({"input": "{}", "roleArn": "arn:aws:iam::123456789012:role/x"}),
        )),
    );
    last = h.entered(last, "Choice", "Execution parameters");
    last = h.exited(last, "Choice", "Execution parameters");
    last = h.entered(last, "Pass", "No parameters given");
    last = h.exited(last, "Pass", "No parameters given");
    let p1 = h.entered(last, "Parallel", "Parallel 1");
    let p1_started = h.push(p1, "ParallelStateStarted", None);
    let mut branch_ends = Vec::new();
    for task in [
        "ingest_locations",
        "ingest_users",
        "ingest_vehicles",
        "ingest_transactions",
    ] {
        branch_ends.push(h.task(p1_started, task, false, &[Ok(())]));
    }
    let up = h.entered(p1_started, "Parallel", "upload_scripts");
    let up_started = h.push(up, "ParallelStateStarted", None);
    let mut inner = up_started;
    for i in 1..=4 {
        inner = h.task(
            up_started,
            &format!("upload_scripts.Head{i}"),
            false,
            &[Ok(())],
        );
    }
    let up_done = h.push(inner, "ParallelStateSucceeded", None);
    branch_ends.push(h.exited(up_done, "Parallel", "upload_scripts"));
    let p1_done = h.push(*branch_ends.last().unwrap(), "ParallelStateSucceeded", None);
    last = h.exited(p1_done, "Parallel", "Parallel 1");
    last = h.task(last, "Create EMR cluster", true, &[Ok(())]);
    last = h.task(last, "clean", true, &[Err("States.TaskFailed"), Ok(())]);
    let p2 = h.entered(last, "Parallel", "Parallel 2");
    let p2_started = h.push(p2, "ParallelStateStarted", None);
    h.task(p2_started, "vehicle_location_metrics", true, &[Ok(())]);
    let utm = h.task(
        p2_started,
        "user_transaction_metrics",
        true,
        &[Err("States.TaskFailed"), Err("States.TaskFailed")],
    );
    let stop = h.task(
        utm,
        "user_transaction_metrics.StopCluster",
        false,
        &[Ok(())],
    );
    let failed = h.entered(stop, "Fail", "user_transaction_metrics.Failed");
    let p2_failed = h.push(failed, "ParallelStateFailed", None);
    let end = h.push(
        p2_failed,
        "ExecutionFailed",
        Some(("executionFailedEventDetails", json!({"error": "user_transaction_metrics.Failed", "cause": "task user_transaction_metrics failed"}))),
    );
    (h.events, end)
}

fn fake_execution(
    aws: &mut AwsEndpoint,
    machine: &str,
    name: &str,
    status: &str,
    events: Vec<Value>,
    definition: &str,
    extra: Value,
) {
    // Started just before its first event.
    let start = events
        .first()
        .and_then(|e| e["timestamp"].as_f64())
        .unwrap_or_default()
        - 1.0;
    let stop = events
        .last()
        .and_then(|e| e["timestamp"].as_f64())
        .unwrap_or(start);
    let mut execution = json!({
        "executionArn": format!("{}:{name}", machine.replace(":stateMachine:", ":execution:")),
        "stateMachineArn": machine,
        "name": name,
        "status": status,
        "startDate": start,
        "input": "{\"params\": {}}",
    });
    if status != "RUNNING" {
        execution["stopDate"] = json!(stop);
    }
    if let Some(obj) = extra.get("execution").and_then(|e| e.as_object()) {
        for (k, v) in obj {
            execution[k] = v.clone();
        }
    }
    let mut command = json!({
        "op": "fake_execution",
        "execution": execution,
        "history": events,
        "page_size": 7,
        "definition": definition,
        "state_machine_type": "STANDARD",
    });
    if let Some(after) = extra.get("after_redrive") {
        command["after_redrive"] = after.clone();
    }
    aws.call(command);
}

fn task<'a>(shown: &'a Value, id: &str) -> &'a Value {
    shown["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in {shown}"))
}

#[test]
fn rental_executions_are_runs_with_tasks_attempts_traces_and_redrives() {
    let s = Scratch::new();
    s.write("bootstrap-binary", "#!/bin/sh\necho stand-in\n");
    let mut aws = AwsEndpoint::start();
    let rental = rental();

    // From nothing: the bucket is missing, and deploy says how to get it.
    let out = flux(&aws, &s, &["deploy", &rental]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "the bucket {BUCKET} does not exist: add --create-bucket"
        )),
        "{}",
        text(&out.stderr)
    );
    assert!(aws.requests_of("CreateChangeSet").is_empty());

    // Deploy: what moto's CloudFormation creates, checked through each
    // service's own API.
    let out = flux(&aws, &s, &["deploy", &rental, "--create-bucket"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("created the bucket {BUCKET} in {REGION}")),
        "{stderr}"
    );
    let machine = text(&out.stdout).trim().to_string();
    let resources = moto_query(
        &mut aws,
        "cloudformation",
        "Action=DescribeStackResources&StackName=rental&Version=2010-05-15",
    );
    for kind in [
        "AWS::StepFunctions::StateMachine",
        "AWS::IAM::Role",
        "AWS::Lambda::Function",
    ] {
        assert!(resources.contains(kind), "{kind} in {resources}");
    }
    let function = aws.call(json!({
        "op": "moto", "method": "GET", "path": "/2015-03-31/functions/flux-engine-report",
        "headers": {"Authorization": sign("lambda")},
    }));
    assert_eq!(function["status"], 200, "{function}");
    assert_eq!(
        function["body"]["Configuration"]["Runtime"],
        "provided.al2023"
    );
    let code_key = function["body"]["Code"]["Location"].to_string();
    let _ = code_key;
    let described = moto_json(
        &mut aws,
        "AWSStepFunctions.DescribeStateMachine",
        "states",
        json!({"stateMachineArn": machine}),
    );
    let definition = described["body"]["definition"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        definition.contains("user_transaction_metrics.StopCluster"),
        "{definition}"
    );
    // Fn::Sub filled the account-specific values in.
    assert!(!definition.contains("${"), "{definition}");
    assert!(
        definition.contains("function:flux-engine-report")
            || definition.contains("flux-engine-report"),
        "{definition}"
    );
    // The scripts are where the steps read them.
    assert!(aws.object(BUCKET, "scripts/rental_clean.py").is_some());
    eprintln!(
        "checked in moto: AWS::StepFunctions::StateMachine, AWS::IAM::Role, AWS::Lambda::Function; \
         not checkable (moto's CloudFormation does not create them): AWS::Glue::Database, AWS::Glue::Crawler, AWS::Athena::WorkGroup"
    );

    // A failed execution and a succeeded one, started elsewhere.
    let start = 1_796_000_000.0; // 2026-12-01
    let (failed, _) = failed_rental_history(start);
    fake_execution(
        &mut aws,
        &machine,
        "nightly-1",
        "FAILED",
        failed.clone(),
        &definition,
        json!({}),
    );
    let out = flux(&aws, &s, &["runs", "--sfn", &rental]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("recorded 1 execution(s)"),
        "{}",
        text(&out.stderr)
    );
    let runs = flux(&aws, &s, &["runs"]);
    let listing = text(&runs.stdout);
    assert!(
        listing.contains("nightly-1") && listing.contains("sfn") && listing.contains("failed"),
        "{listing}"
    );

    aws.call(json!({"op": "clear_requests"}));
    let shown = flux(&aws, &s, &["show", "nightly-1", "--format", "json"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    // Every page read, each once.
    let pages = aws.requests_of("GetExecutionHistory");
    assert_eq!(pages.len(), failed.len().div_ceil(7), "{pages:?}");
    assert_eq!(shown["status"], "failed");
    for ingest in [
        "ingest_locations",
        "ingest_users",
        "ingest_vehicles",
        "ingest_transactions",
        "upload_scripts",
    ] {
        assert_eq!(task(&shown, ingest)["status"], "succeeded", "{ingest}");
        assert_eq!(task(&shown, ingest)["attempts"], 1, "{ingest}");
    }
    assert_eq!(task(&shown, "clean")["status"], "succeeded");
    assert_eq!(task(&shown, "clean")["attempts"], 2);
    assert_eq!(
        task(&shown, "vehicle_location_metrics")["status"],
        "succeeded"
    );
    let utm = task(&shown, "user_transaction_metrics");
    assert_eq!(utm["status"], "failed");
    assert_eq!(utm["attempts"], 2);
    assert!(
        utm["error"]
            .as_str()
            .unwrap()
            .starts_with("States.TaskFailed: "),
        "{utm}"
    );
    assert!(
        utm["error"].as_str().unwrap().contains("in the step"),
        "{utm}"
    );
    for downstream in ["crawl", "record_counts", "top_vehicles", "report"] {
        assert_eq!(
            task(&shown, downstream)["status"],
            "upstream_failed",
            "{downstream}"
        );
    }
    let clean_attempts: Vec<&Value> = shown["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["task_id"] == "clean")
        .collect();
    assert_eq!(clean_attempts[0]["status"], "failed");
    assert_eq!(clean_attempts[1]["status"], "succeeded");

    // The trace, from the same history.
    let otlp = s.path("trace.json");
    let out = flux(
        &aws,
        &s,
        &["trace", "nightly-1", "--otlp-json", otlp.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&otlp).unwrap()).unwrap();
    let spans = trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap();
    let attempts_of_utm = spans
        .iter()
        .filter(|span| {
            span["name"].as_str().unwrap().starts_with("attempt ")
                && span["attributes"]
                    .to_string()
                    .contains("user_transaction_metrics")
        })
        .count();
    assert_eq!(attempts_of_utm, 2);
    assert!(spans.iter().any(|span| span["name"] == "run rental"));

    // resume: refused while the definition differs (deployed since).
    fake_execution(
        &mut aws,
        &machine,
        "nightly-1",
        "FAILED",
        failed.clone(),
        "{\"StartAt\": \"old\", \"States\": {}}",
        json!({}),
    );
    let out = flux(&aws, &s, &["resume", "nightly-1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("deployed again since"),
        "{}",
        text(&out.stderr)
    );
    assert!(aws.requests_of("RedriveExecution").is_empty());

    // resume: a redrive that reruns the failed job and succeeds.
    let mut after = History::new(start + 10_000.0);
    after.events = Vec::new();
    let base = failed.len() as i64;
    let redriven = json!({"id": base + 1, "previousEventId": base, "timestamp": start + 10_000.0, "type": "ExecutionRedriven", "executionRedrivenEventDetails": {"redriveCount": 1}});
    let mut tail = History::new(start + 10_001.0);
    let t = tail.task(0, "user_transaction_metrics", true, &[Ok(())]);
    let done = tail.push(
        t,
        "ExecutionSucceeded",
        Some(("executionSucceededEventDetails", json!({"output": "{}"}))),
    );
    let _ = done;
    let mut after_events = vec![redriven];
    for mut e in tail.events {
        e["id"] = json!(e["id"].as_i64().unwrap() + base + 1);
        let prev = e["previousEventId"].as_i64().unwrap();
        e["previousEventId"] = json!(if prev == 0 { base + 1 } else { prev + base + 1 });
        after_events.push(e);
    }
    fake_execution(
        &mut aws,
        &machine,
        "nightly-1",
        "FAILED",
        failed,
        &definition,
        json!({"after_redrive": {"status": "SUCCEEDED", "events": after_events}}),
    );
    let out = flux(&aws, &s, &["resume", "nightly-1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let redrives = aws.requests_of("RedriveExecution");
    assert_eq!(redrives.len(), 1);
    assert!(
        redrives[0]["body"]["clientToken"]
            .as_str()
            .unwrap()
            .starts_with("nightly-1-")
    );
    let shown = flux(&aws, &s, &["show", "nightly-1", "--format", "json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["resume_count"], 1);
    let utm = task(&shown, "user_transaction_metrics");
    assert_eq!(utm["status"], "succeeded");
    assert_eq!(utm["attempts"], 3);

    // resume of a succeeded execution, and of one past 14 days: refused.
    let out = flux(&aws, &s, &["resume", "nightly-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nothing to redrive"),
        "{}",
        text(&out.stderr)
    );
    let (old, _) = failed_rental_history(start - 40.0 * 86_400.0);
    fake_execution(
        &mut aws,
        &machine,
        "old-1",
        "FAILED",
        old,
        &definition,
        json!({}),
    );
    let out = flux(&aws, &s, &["runs", "--sfn", &rental]);
    assert!(out.status.success());
    let out = flux(&aws, &s, &["resume", "old-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("more than 14 days"),
        "{}",
        text(&out.stderr)
    );
}

/// A running execution (started elsewhere): `runs` shows it running,
/// `follow` shows its progress; Ctrl-C detaches (exit 130, the execution
/// goes on), and with `--stop-on-interrupt` stops it (`StopExecution`),
/// after which the run is cancelled.
#[test]
fn ctrl_c_detaches_from_an_execution_or_stops_it() {
    let s = Scratch::new();
    s.write("bootstrap-binary", "#!/bin/sh\necho stand-in\n");
    let mut aws = AwsEndpoint::start();
    aws.create_bucket(BUCKET);
    let rental = rental();
    let out = flux(&aws, &s, &["deploy", &rental]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let machine = text(&out.stdout).trim().to_string();
    let definition = moto_json(
        &mut aws,
        "AWSStepFunctions.DescribeStateMachine",
        "states",
        json!({"stateMachineArn": machine}),
    )["body"]["definition"]
        .as_str()
        .unwrap()
        .to_string();
    // Up to `clean`'s first step, still running.
    let (failed, _) = failed_rental_history(1_796_000_000.0);
    let running: Vec<Value> = failed
        .iter()
        .take_while(|e| e["type"] != "TaskFailed")
        .cloned()
        .collect();
    fake_execution(
        &mut aws,
        &machine,
        "live-1",
        "RUNNING",
        running,
        &definition,
        json!({}),
    );
    let out = flux(&aws, &s, &["runs", "--sfn", &rental]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&flux(&aws, &s, &["runs"]).stdout);
    assert!(
        listing.contains("live-1") && listing.contains("running"),
        "{listing}"
    );

    let out = follow_then_interrupt(&aws, &s, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("detached") && stdout.contains("flux-engine follow live-1"),
        "{stdout}"
    );
    assert!(stderr.contains("clean: attempt 1 started"), "{stderr}");
    assert!(aws.requests_of("StopExecution").is_empty());
    let shown: Value =
        serde_json::from_slice(&flux(&aws, &s, &["show", "live-1", "--format", "json"]).stdout)
            .unwrap();
    assert_eq!(shown["status"], "running");
    assert_eq!(task(&shown, "clean")["status"], "running");

    let out = follow_then_interrupt(&aws, &s, &["--stop-on-interrupt"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert_eq!(aws.requests_of("StopExecution").len(), 1);
    let shown: Value =
        serde_json::from_slice(&flux(&aws, &s, &["show", "live-1", "--format", "json"]).stdout)
            .unwrap();
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(task(&shown, "clean")["status"], "cancelled");
}

/// `follow live-1 EXTRA...`, interrupted with SIGINT after 2 s.
fn follow_then_interrupt(aws: &AwsEndpoint, s: &Scratch, extra: &[&str]) -> Output {
    let mut command = common::command(&s.path("state"));
    aws.configure(&mut command);
    command
        .args(["follow", "live-1"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("flux-engine follows");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait_with_output().unwrap()
}

//! `deploy`, `start`, `runs`, `show`, `trace`, `destroy` against a local
//! AWS endpoint (moto's server behind the harness's proxy, see
//! `tests/common/aws_endpoint.rs`), with moto's Step Functions
//! interpreter on: DAGs of `noop` tasks run as `Pass` states, and an
//! `s3_ingest` whose object is missing fails its `headObject`.
//! What the stack holds is read back from moto directly.

mod common;

use std::path::Path;
use std::process::Output;

use common::aws_endpoint::{AwsEndpoint, REGION};
use common::{Scratch, text};
use serde_json::{Value, json};

const BUCKET: &str = "flux-ops";

fn noop_dag(s: &Scratch, name: &str, extra_task: bool) -> std::path::PathBuf {
    let extra = if extra_task {
        "\n[tasks.c]\ntype = \"noop\"\ndepends_on = [\"b\"]\n"
    } else {
        ""
    };
    s.write(
        &format!("{name}.toml"),
        &format!(
            r#"
[dag]
name = "{name}"

[params]
greeting = "hello"

[aws]
region = "{REGION}"

[tasks.a]
type = "noop"

[tasks.b]
type = "noop"
depends_on = ["a"]
{extra}"#
        ),
    )
}

/// A DAG whose second task checks for an object: missing unless deployed
/// with `--upload-data`.
fn ingest_dag(s: &Scratch) -> std::path::PathBuf {
    s.write("data/users.csv", "user_id,name\n7,Ada\n");
    s.write(
        "ingest.toml",
        &format!(
            r#"
[dag]
name = "opsingest"

[aws]
region = "{REGION}"

[tasks.start]
type = "noop"

[tasks.ingest]
type = "s3_ingest"
depends_on = ["start"]
source = "data/users.csv"
destination = "s3://{BUCKET}/raw/"
retry = {{ max_attempts = 2, interval_seconds = 1, backoff_rate = 1.0 }}

[tasks.after]
type = "noop"
depends_on = ["ingest"]
"#
        ),
    )
}

fn flux(aws: &AwsEndpoint, s: &Scratch, args: &[&str]) -> Output {
    let mut command = common::command(&s.path("state"));
    aws.configure(&mut command);
    command.args(args).output().expect("flux-engine runs")
}

fn sign(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

/// A Step Functions call to moto directly.
fn sfn(aws: &mut AwsEndpoint, operation: &str, body: Value) -> Value {
    aws.call(json!({
        "op": "moto", "method": "POST", "path": "/",
        "body": body.to_string(),
        "headers": {
            "X-Amz-Target": format!("AWSStepFunctions.{operation}"),
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": sign("states"),
        },
    }))
}

/// A CloudFormation call (query protocol) to moto directly; the XML.
fn cloudformation(aws: &mut AwsEndpoint, query: &str) -> String {
    let answer = aws.call(json!({
        "op": "moto", "method": "POST", "path": "/",
        "body": format!("{query}&Version=2010-05-15"),
        "headers": {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": sign("cloudformation"),
        },
    }));
    match &answer["body"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn interpreter_on(aws: &mut AwsEndpoint) {
    aws.moto(
        "POST",
        "/moto-api/config",
        json!({"stepfunctions": {"execute_state_machine": true}}),
    );
}

fn export_sfn(aws: &AwsEndpoint, s: &Scratch, dag: &Path) -> Value {
    let out = flux(aws, s, &["export", "--sfn", dag.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the export is JSON")
}

#[test]
fn deploy_creates_the_stack_then_changes_nothing_then_publishes_a_new_version() {
    let s = Scratch::new();
    let mut aws = AwsEndpoint::start();
    let dag = noop_dag(&s, "opsdemo", false);
    let dag_arg = dag.to_str().unwrap();

    // --dry-run shows the change set and leaves nothing behind.
    let out = flux(&aws, &s, &["deploy", dag_arg, "--dry-run"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("+ Add StateMachine (AWS::StepFunctions::StateMachine)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("+ Add StateMachineRole (AWS::IAM::Role)"),
        "{stderr}"
    );
    assert!(aws.requests_of("ExecuteChangeSet").is_empty());
    let listed = sfn(&mut aws, "ListStateMachines", json!({}));
    assert_eq!(listed["body"]["stateMachines"], json!([]), "{listed}");

    let out = flux(&aws, &s, &["deploy", dag_arg]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let arn = text(&out.stdout).trim().to_string();
    assert!(
        arn.starts_with("arn:aws:states:") && arn.ends_with(":stateMachine:opsdemo"),
        "{arn}"
    );
    assert!(stderr.contains("CREATE_COMPLETE"), "{stderr}");
    // The state machine runs the `--sfn` export, under the stack's role.
    let described = sfn(
        &mut aws,
        "DescribeStateMachine",
        json!({"stateMachineArn": arn}),
    );
    let definition: Value =
        serde_json::from_str(described["body"]["definition"].as_str().unwrap()).unwrap();
    assert_eq!(definition, export_sfn(&aws, &s, &dag));
    let resources = cloudformation(&mut aws, "Action=DescribeStackResources&StackName=opsdemo");
    assert!(resources.contains("AWS::IAM::Role"), "{resources}");
    let role = described["body"]["roleArn"].as_str().unwrap().to_string();
    let role_name = role.rsplit('/').next().unwrap();
    assert!(
        resources.contains(role_name),
        "the role {role} is the stack's: {resources}"
    );
    // One version, published by this deploy.
    let v1 = sfn(
        &mut aws,
        "DescribeStateMachine",
        json!({"stateMachineArn": format!("{arn}:1")}),
    );
    assert_eq!(v1["status"], 200, "{v1}");
    assert!(
        stderr.contains(&format!("published version {arn}:1")),
        "{stderr}"
    );

    // The same DAG again: nothing applied, no version.
    aws.call(json!({"op": "clear_requests"}));
    let out = flux(&aws, &s, &["deploy", dag_arg]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no changes"), "{stderr}");
    assert_eq!(text(&out.stdout).trim(), arn);
    assert!(aws.requests_of("ExecuteChangeSet").is_empty());
    assert!(aws.requests_of("PublishStateMachineVersion").is_empty());
    let v2 = sfn(
        &mut aws,
        "DescribeStateMachine",
        json!({"stateMachineArn": format!("{arn}:2")}),
    );
    assert_ne!(v2["status"], 200, "no second version: {v2}");

    // A changed DAG: the state machine is updated and version 2 published.
    noop_dag(&s, "opsdemo", true);
    let out = flux(&aws, &s, &["deploy", dag_arg]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("~ Modify StateMachine"), "{stderr}");
    assert_eq!(aws.requests_of("ExecuteChangeSet").len(), 1);
    let described = sfn(
        &mut aws,
        "DescribeStateMachine",
        json!({"stateMachineArn": arn}),
    );
    let definition: Value =
        serde_json::from_str(described["body"]["definition"].as_str().unwrap()).unwrap();
    assert!(definition.to_string().contains("\"c\""), "{definition}");
    let v2 = sfn(
        &mut aws,
        "DescribeStateMachine",
        json!({"stateMachineArn": format!("{arn}:2")}),
    );
    assert_eq!(v2["status"], 200, "{v2}");

    // An earlier version is started by its ARN (moto 5.2.1 answers a
    // StartExecution of a version with a 500, so only the request is
    // checked, and that the failure is reported with the version's ARN).
    let out = flux(&aws, &s, &["start", dag_arg, "--version", "1", "--no-wait"]);
    if !out.status.success() {
        assert!(
            text(&out.stderr).contains(&format!("{arn}:1")),
            "{}",
            text(&out.stderr)
        );
    }
    let started = aws.requests_of("StartExecution");
    // (the SDK retries a 500: every try names the version)
    assert!(!started.is_empty());
    for request in &started {
        assert_eq!(request["body"]["stateMachineArn"], format!("{arn}:1"));
    }

    // destroy asks on a terminal; without one it needs --yes.
    let out = flux(&aws, &s, &["destroy", dag_arg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = flux(&aws, &s, &["destroy", dag_arg, "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = sfn(&mut aws, "ListStateMachines", json!({}));
    assert_eq!(listed["body"]["stateMachines"], json!([]), "{listed}");
}

/// A DAG deployed, then its state machine handed to moto's interpreter.
/// moto keeps the interpreter's state machines apart from the others
/// (CloudFormation creates the latter), so the deployed definition is
/// read back and created again, same name and ARN, with the interpreter
/// on. The interpreter answers a second StartExecution in a region with a
/// 500, so each execution gets its own endpoint.
fn deployed(dag: fn(&Scratch) -> std::path::PathBuf) -> (Scratch, AwsEndpoint, std::path::PathBuf) {
    let s = Scratch::new();
    let mut aws = AwsEndpoint::start();
    aws.create_bucket(BUCKET);
    let path = dag(&s);
    let out = flux(&aws, &s, &["deploy", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let arn = text(&out.stdout).trim().to_string();
    let described = sfn(
        &mut aws,
        "DescribeStateMachine",
        json!({"stateMachineArn": arn}),
    );
    assert_eq!(described["status"], 200, "{described}");
    interpreter_on(&mut aws);
    let created = sfn(
        &mut aws,
        "CreateStateMachine",
        json!({
            "name": described["body"]["name"],
            "definition": described["body"]["definition"],
            "roleArn": described["body"]["roleArn"],
        }),
    );
    assert_eq!(created["body"]["stateMachineArn"], arn, "{created}");
    (s, aws, path)
}

#[test]
fn start_follows_an_execution_to_success_and_it_is_a_run() {
    let (s, mut aws, good) = deployed(|s| noop_dag(s, "opsgood", false));

    // Success: exit 0, every task succeeded once. A --param is the
    // execution's input; the others keep their deployed defaults.
    let out = flux(
        &aws,
        &s,
        &["start", good.to_str().unwrap(), "--param", "greeting=hi"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    let started = aws.requests_of("StartExecution");
    assert_eq!(started.len(), 1);
    let input: Value = serde_json::from_str(started[0]["body"]["input"].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({"params": {"greeting": "hi"}}));
    let runs = flux(&aws, &s, &["runs", "--format", "json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    let good_run = runs[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(runs[0]["target"], "sfn");
    assert_eq!(runs[0]["status"], "succeeded");
    let table = text(&flux(&aws, &s, &["runs"]).stdout);
    assert!(
        table.contains(&good_run) && table.contains("sfn"),
        "{table}"
    );
    let shown = flux(&aws, &s, &["show", &good_run, "--format", "json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let tasks = shown["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for task in tasks {
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["attempts"], 1, "{task}");
    }
    let arn = shown["external_work"][0]["value"]["arn"].as_str().unwrap();
    assert!(arn.contains(":execution:opsgood:"), "{arn}");
    assert!(
        arn.ends_with(&good_run),
        "the execution is named after the run: {arn}"
    );

    // The trace: run, task and attempt spans with a local run's names.
    let otlp = s.path("trace.json");
    let out = flux(
        &aws,
        &s,
        &["trace", &good_run, "--otlp-json", otlp.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&otlp).unwrap()).unwrap();
    let names: Vec<String> = trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| span["name"].as_str().unwrap().to_string())
        .collect();
    for name in ["run opsgood", "task a", "task b", "attempt 1"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let page = s.path("trace.html");
    let out = flux(
        &aws,
        &s,
        &["trace", &good_run, "--html", page.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("task a") && html.contains(&good_run),
        "{html}"
    );

    // `runs --sfn` finds nothing new: the execution is a run already.
    let out = flux(&aws, &s, &["runs", "--sfn", good.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("recorded 0 execution(s)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn start_follows_a_failing_execution_and_exits_1() {
    let (s, mut aws, bad) = deployed(ingest_dag);
    // The object is missing: the check fails twice, the execution fails.
    // Started without waiting, then followed.
    let out = flux(&aws, &s, &["start", bad.to_str().unwrap(), "--no-wait"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.trim().contains(":execution:opsingest:"), "{stdout}");
    let runs = flux(&aws, &s, &["runs", "--format", "json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let bad_run = runs[0]["run_id"].as_str().unwrap().to_string();
    assert!(stdout.trim().ends_with(&bad_run), "{stdout}");
    let out = flux(&aws, &s, &["follow", &bad_run]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    // The summary is the execution's end, not a moment before it.
    assert!(
        stdout.contains("upstream_failed") && stdout.contains("failed in"),
        "{stdout}"
    );
    assert!(
        stderr.contains("ingest: attempt 1 failed") && stderr.contains("retrying in 1.0s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("execution FAILED: ingest.Failed"),
        "{stderr}"
    );
    let runs = flux(&aws, &s, &["runs", "--format", "json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "failed");
    let shown = flux(&aws, &s, &["show", &bad_run, "--format", "json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let status = |id: &str| {
        shown["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(status("start")["status"], "succeeded");
    assert_eq!(status("ingest")["status"], "failed");
    assert_eq!(status("ingest")["attempts"], 2, "{shown}");
    assert_eq!(status("after")["status"], "upstream_failed");
    assert!(
        status("ingest")["error"]
            .as_str()
            .unwrap()
            .contains("NotFound")
            || status("ingest")["error"].as_str().unwrap().contains("404"),
        "{shown}"
    );

    // --upload-data puts the file where the check looks, once.
    let out = flux(
        &aws,
        &s,
        &["deploy", bad.to_str().unwrap(), "--upload-data"],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("uploaded s3://{BUCKET}/raw/users.csv")),
        "{stderr}"
    );
    assert_eq!(
        aws.object(BUCKET, "raw/users.csv").as_deref(),
        Some("user_id,name\n7,Ada\n")
    );
    let out = flux(
        &aws,
        &s,
        &["deploy", bad.to_str().unwrap(), "--upload-data"],
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("unchanged s3://{BUCKET}/raw/users.csv")),
        "{stderr}"
    );
}

//! The export of small DAGs written here, checked against what the DAG
//! text says (expected values are derived from the TOML, not copied from
//! the exporter's output): the task kinds' translations as the exporter
//! puts them together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use engine::Dag;
use exporters::sfn::{Document, ExportError, params};
use serde_json::{Value, json};

fn export(dag: &Dag) -> Result<String, ExportError> {
    exporters::sfn::export(dag, &tasks::registry(), Document::StateMachine)
}

fn export_inline(dag: &Dag) -> Result<String, ExportError> {
    exporters::sfn::export(dag, &tasks::registry(), Document::StateMachineWithValues)
}

const AWS_CLUSTER: &str = r#"
[aws]
emr_mode = "cluster"
release_label = "emr-7.5.0"
instance_type = "m5.xlarge"
instance_count = 3
service_role = "EMR_DefaultRole"
job_flow_role = "EMR_EC2_DefaultRole"
scripts_prefix = "s3://${params.bucket}/scripts"
athena_workgroup = "primary"
report_function = "flux-report"
"#;

/// A small pipeline: ingest → two Spark jobs in parallel → crawl → a
/// gated query → report.
fn pipeline(aws: &str) -> String {
    format!(
        r#"
[dag]
name = "mini"

[params]
bucket = "bkt"

[defaults]
retry = {{ max_attempts = 4, interval_seconds = 3, backoff_rate = 1.5, max_delay_seconds = 20, jitter = "full" }}
timeout_seconds = 120

{aws}

[tasks.ingest]
type = "s3_ingest"
source = "data/a.csv"
destination = "s3://${{params.bucket}}/raw/"

[tasks.job_a]
type = "emr_spark"
depends_on = ["ingest"]
script = "../jobs/job_a.py"
py_files = ["../jobs/common.py"]
args = ["--in", "s3://${{params.bucket}}/raw/"]
spark_conf = {{ "spark.x" = "1" }}
retry = {{ max_attempts = 1 }}

[tasks.job_b]
type = "emr_spark"
depends_on = ["ingest"]
script = "s3://elsewhere/job_b.py"
timeout_seconds = 900

[tasks.crawl]
type = "glue_crawler"
depends_on = ["job_a", "job_b"]
database = "db"
targets = ["s3://${{params.bucket}}/processed/"]

[tasks.gate]
type = "athena_query"
depends_on = ["crawl"]
database = "db"
output = "s3://${{params.bucket}}/q/gate/"
sql = "SELECT 1 AS n"
expect = {{ rows = 1, columns = {{ n = {{ max = 0, not_null = true }} }} }}

[tasks.report]
type = "report"
depends_on = ["gate", "job_a"]
output = "s3://${{params.bucket}}/report.html"
sections = [{{ title = "Gate", from = "gate", chart = "table" }}]
"#
    )
}

fn load(text: &str, overrides: &[(&str, &str)]) -> Dag {
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    engine::dag::load_str(
        Path::new("/nowhere/dags/test.toml"),
        text,
        &overrides,
        &tasks::registry(),
    )
    .unwrap_or_else(|e| panic!("the test DAG is invalid: {e}"))
}

fn exported(text: &str) -> Value {
    let out = export_inline(&load(text, &[])).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).expect("the export is JSON")
}

fn export_errors(text: &str) -> String {
    match export(&load(text, &[])) {
        Ok(_) => panic!("the export should fail"),
        Err(e) => e.to_string(),
    }
}

/// The top-level states' names (sorted).
fn names(scope: &Value) -> Vec<String> {
    // serde_json's Value sorts keys: this is the set of names; the flow
    // order is read with `top_level_order`.
    scope["States"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// The top-level flow: from StartAt along Next.
fn top_level_order(machine: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = machine["StartAt"].as_str().map(str::to_string);
    while let Some(name) = at {
        let state = &machine["States"][&name];
        out.push(name);
        at = state["Next"].as_str().map(str::to_string);
    }
    out
}

#[test]
fn the_cluster_lives_from_the_first_to_the_last_spark_task() {
    let m = exported(&pipeline(AWS_CLUSTER));
    assert_eq!(
        top_level_order(&m),
        [
            "ingest",
            "Create EMR cluster",
            "Parallel 1",
            "Terminate EMR cluster",
            "crawl",
            "gate",
            "report"
        ]
    );
    assert_eq!(m["StartAt"], "ingest");
    assert_eq!(
        m["States"]["Create EMR cluster"]["Resource"],
        "arn:aws:states:::elasticmapreduce:createCluster.sync"
    );
    let create = &m["States"]["Create EMR cluster"]["Parameters"];
    assert_eq!(create["ReleaseLabel"], "emr-7.5.0");
    assert_eq!(create["Instances"]["InstanceCount"], 3);
    assert_eq!(create["Instances"]["KeepJobFlowAliveWhenNoSteps"], true);
    assert_eq!(create["ServiceRole"], "EMR_DefaultRole");
    assert_eq!(create["JobFlowRole"], "EMR_EC2_DefaultRole");
    assert_eq!(
        m["States"]["Terminate EMR cluster"]["Resource"],
        "arn:aws:states:::elasticmapreduce:terminateCluster"
    );
    assert!(names(&m).contains(&"EMR cluster not created".to_string()));
}

#[test]
fn spark_steps_run_spark_submit_from_the_scripts_prefix() {
    let m = exported(&pipeline(AWS_CLUSTER));
    let branches = m["States"]["Parallel 1"]["Branches"].as_array().unwrap();
    assert_eq!(branches.len(), 2);
    assert_eq!(branches[0]["StartAt"], "job_a");
    assert_eq!(branches[1]["StartAt"], "job_b");
    let job_a = &branches[0]["States"]["job_a"];
    assert_eq!(
        job_a["Resource"],
        "arn:aws:states:::elasticmapreduce:addStep.sync"
    );
    assert_eq!(job_a["Parameters"]["ClusterId.$"], "$.cluster.ClusterId");
    let step = &job_a["Parameters"]["Step"]["HadoopJarStep"];
    assert_eq!(step["Jar"], "command-runner.jar");
    // scripts_prefix = s3://${params.bucket}/scripts (a `/` is added).
    assert_eq!(
        step["Args"],
        json!([
            "spark-submit",
            "--deploy-mode",
            "cluster",
            "--py-files",
            "s3://bkt/scripts/common.py",
            "--conf",
            "spark.x=1",
            "s3://bkt/scripts/job_a.py",
            "--in",
            "s3://bkt/raw/"
        ])
    );
    // An s3:// script is used as it is.
    let job_b_args = &branches[1]["States"]["job_b"]["Parameters"]["Step"]["HadoopJarStep"]["Args"];
    assert_eq!(
        job_b_args,
        &json!([
            "spark-submit",
            "--deploy-mode",
            "cluster",
            "s3://elsewhere/job_b.py"
        ])
    );
    // job_a: max_attempts = 1, so no Retry; the default timeout, 120.
    assert!(job_a.get("Retry").is_none());
    assert_eq!(job_a["TimeoutSeconds"], 120);
    assert_eq!(branches[1]["States"]["job_b"]["TimeoutSeconds"], 900);
}

#[test]
fn failures_inside_the_cluster_window_terminate_it_then_fail_naming_the_task() {
    let m = exported(&pipeline(AWS_CLUSTER));
    let branch = &m["States"]["Parallel 1"]["Branches"][1]["States"];
    let job_b = &branch["job_b"];
    assert_eq!(job_b["Catch"][0]["ErrorEquals"], json!(["States.ALL"]));
    assert_eq!(job_b["Catch"][0]["Next"], "job_b.StopCluster");
    // The error goes beside the state data, which keeps the cluster id.
    assert_eq!(job_b["Catch"][0]["ResultPath"], "$.error");
    let stop = &branch["job_b.StopCluster"];
    assert_eq!(
        stop["Resource"],
        "arn:aws:states:::elasticmapreduce:terminateCluster"
    );
    assert_eq!(stop["Next"], "job_b.Failed");
    assert_eq!(stop["Catch"][0]["Next"], "job_b.Failed");
    assert_eq!(branch["job_b.Failed"]["Type"], "Fail");
    assert_eq!(branch["job_b.Failed"]["Error"], "job_b.Failed");
    assert!(
        branch["job_b.Failed"]["Cause"]
            .as_str()
            .unwrap()
            .contains("`job_b`")
    );
    // Outside the window a failure goes straight to its Fail state.
    assert_eq!(m["States"]["ingest"]["Catch"][0]["Next"], "ingest.Failed");
    assert_eq!(m["States"]["report"]["Catch"][0]["Next"], "report.Failed");
    assert!(m["States"].get("report.StopCluster").is_none());
}

#[test]
fn retry_and_timeout_follow_the_policy() {
    let m = exported(&pipeline(AWS_CLUSTER));
    // [defaults] retry = 4 attempts, 3 s, ×1.5, at most 20 s, full jitter.
    assert_eq!(
        m["States"]["report"]["Retry"],
        json!([{
            "ErrorEquals": ["States.ALL"],
            "IntervalSeconds": 3,
            "MaxAttempts": 3,
            "BackoffRate": 1.5,
            "MaxDelaySeconds": 20,
            "JitterStrategy": "FULL"
        }])
    );
    assert_eq!(m["States"]["report"]["TimeoutSeconds"], 120);
    // The crawler's retry is on its wrapper, restarting the whole crawl.
    assert_eq!(m["States"]["crawl"]["Type"], "Parallel");
    assert_eq!(m["States"]["crawl"]["Retry"][0]["MaxAttempts"], 3);
}

#[test]
fn ingest_verifies_the_object_the_engine_would_upload() {
    let m = exported(&pipeline(AWS_CLUSTER));
    let ingest = &m["States"]["ingest"];
    assert_eq!(ingest["Resource"], "arn:aws:states:::aws-sdk:s3:headObject");
    assert_eq!(
        ingest["Parameters"],
        json!({"Bucket": "bkt", "Key": "raw/a.csv"})
    );
}

#[test]
fn the_crawler_is_started_then_polled_until_ready() {
    let m = exported(&pipeline(AWS_CLUSTER));
    let crawl = &m["States"]["crawl"]["Branches"][0];
    assert_eq!(crawl["StartAt"], "crawl.Start");
    let s = &crawl["States"];
    assert_eq!(
        s["crawl.Start"]["Resource"],
        "arn:aws:states:::aws-sdk:glue:startCrawler"
    );
    // Crawler name: DAG name + task id.
    assert_eq!(s["crawl.Start"]["Parameters"]["Name"], "mini-crawl");
    assert_eq!(
        s["crawl.Start"]["Retry"][0]["ErrorEquals"],
        json!(["Glue.CrawlerRunningException"])
    );
    assert_eq!(s["crawl.Wait"]["Next"], "crawl.Poll");
    assert_eq!(
        s["crawl.Poll"]["Resource"],
        "arn:aws:states:::aws-sdk:glue:getCrawler"
    );
    assert_eq!(s["crawl.Check"]["Type"], "Choice");
    assert_eq!(s["crawl.Check"]["Default"], "crawl.Count");
    assert_eq!(s["crawl.Count"]["Next"], "crawl.Wait");
    // 120 s of timeout at one poll per 30 s: 4 polls.
    assert_eq!(
        s["crawl.Check"]["Choices"][1]["NumericGreaterThanEquals"],
        4
    );
    assert_eq!(s["crawl.CrawlFailed"]["Type"], "Fail");
    assert_eq!(s["crawl.Result"]["Default"], "crawl.CrawlFailed");
}

#[test]
fn expect_checks_become_a_check_query_and_a_choice() {
    let m = exported(&pipeline(AWS_CLUSTER));
    let gate = &m["States"]["gate"];
    assert_eq!(gate["Type"], "Parallel");
    let s = &gate["Branches"][0]["States"];
    let query = &s["gate.Query"]["Parameters"];
    assert_eq!(query["QueryString"], "SELECT 1 AS n");
    assert_eq!(query["QueryExecutionContext"]["Database"], "db");
    assert_eq!(query["WorkGroup"], "primary");
    assert_eq!(
        query["ResultConfiguration"]["OutputLocation.$"],
        "States.Format('s3://bkt/q/gate/{}/', $$.Execution.Name)"
    );
    let check_sql = s["gate.Expect"]["Parameters"]["QueryString"]
        .as_str()
        .unwrap();
    // rows = 1, then n max 0 and n not_null, in the order written.
    assert!(check_sql.contains("CASE WHEN count(*) = 1 THEN 0 ELSE 1 END AS check_0"));
    assert!(check_sql.contains("count_if(\"n\" > 0) AS check_1"));
    assert!(check_sql.contains("count_if(\"n\" IS NULL) AS check_2"));
    assert!(check_sql.ends_with("FROM (\nSELECT 1 AS n\n) AS flux_expect"));
    assert_eq!(
        s["gate.ExpectCounts"]["Resource"],
        "arn:aws:states:::athena:getQueryResults"
    );
    let choices = s["gate.Check"]["Choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    assert_eq!(
        choices[2]["Not"]["Variable"],
        "$.expect.counts[2].VarCharValue"
    );
    assert_eq!(choices[2]["Next"], "gate.ExpectFailed");
    assert_eq!(s["gate.ExpectFailed"]["Error"], "gate.ExpectFailed");
    assert_eq!(s["gate.Check"]["Default"], "gate.Passed");
}

#[test]
fn the_report_is_a_lambda_with_its_fields_and_inputs() {
    let m = exported(&pipeline(AWS_CLUSTER));
    let report = &m["States"]["report"];
    assert_eq!(report["Resource"], "arn:aws:states:::lambda:invoke");
    assert_eq!(report["Parameters"]["FunctionName"], "flux-report");
    let payload = &report["Parameters"]["Payload"];
    assert_eq!(payload["dag"], "mini");
    assert_eq!(payload["fields"]["output"], "s3://bkt/report.html");
    assert_eq!(
        payload["inputs"]["gate"]["results_prefix.$"],
        "States.Format('s3://bkt/q/gate/{}/', $$.Execution.Name)"
    );
    assert_eq!(payload["inputs"]["job_a"]["kind"], "emr_spark");
}

#[test]
fn serverless_mode_starts_job_runs_and_needs_no_cluster() {
    let aws = r#"
[aws]
emr_mode = "serverless"
application_id = "app-1"
execution_role_arn = "arn:aws:iam::123456789012:role/jobs"
scripts_prefix = "s3://bkt/scripts/"
athena_workgroup = "primary"
report_function = "flux-report"
"#;
    let m = exported(&pipeline(aws));
    assert!(m["States"].get("Create EMR cluster").is_none());
    let job_a = &m["States"]["Parallel 1"]["Branches"][0]["States"]["job_a"];
    assert_eq!(
        job_a["Resource"],
        "arn:aws:states:::emr-serverless:startJobRun.sync"
    );
    let p = &job_a["Parameters"];
    assert_eq!(p["ApplicationId"], "app-1");
    assert_eq!(p["ExecutionRoleArn"], "arn:aws:iam::123456789012:role/jobs");
    let driver = &p["JobDriver"]["SparkSubmit"];
    assert_eq!(driver["EntryPoint"], "s3://bkt/scripts/job_a.py");
    assert_eq!(
        driver["EntryPointArguments"],
        json!(["--in", "s3://bkt/raw/"])
    );
    assert_eq!(
        driver["SparkSubmitParameters"],
        "--py-files s3://bkt/scripts/common.py --conf spark.x=1"
    );
    assert_eq!(job_a["Catch"][0]["Next"], "job_a.Failed");
}

#[test]
fn missing_settings_are_errors_that_name_them() {
    let err = export_errors(&pipeline("[aws]\nathena_workgroup = \"primary\"\n"));
    assert!(err.contains("[aws] emr_mode is missing"), "{err}");
    assert!(err.contains("[aws] scripts_prefix is missing"), "{err}");
    assert!(err.contains("[aws] report_function is missing"), "{err}");
    assert!(!err.contains("athena_workgroup is missing"), "{err}");
    let cluster_without_roles = AWS_CLUSTER
        .replace("service_role = \"EMR_DefaultRole\"\n", "")
        .replace("instance_count = 3\n", "");
    let err = export_errors(&pipeline(&cluster_without_roles));
    assert!(err.contains("[aws] service_role is missing"), "{err}");
    assert!(err.contains("[aws] instance_count is missing"), "{err}");
}

#[test]
fn unknown_settings_are_errors_with_a_suggestion() {
    let err = export_errors(&pipeline(
        &AWS_CLUSTER.replace("release_label", "relase_label"),
    ));
    assert!(err.contains("unknown setting `relase_label`"), "{err}");
    assert!(err.contains("did you mean `release_label`"), "{err}");
}

#[test]
fn inline_params_are_substituted_at_export_time_with_overrides() {
    let dag = load(&pipeline(AWS_CLUSTER), &[("bucket", "prod-bucket")]);
    let m: Value = serde_json::from_str(&export_inline(&dag).unwrap()).unwrap();
    assert_eq!(m["States"]["ingest"]["Parameters"]["Bucket"], "prod-bucket");
    assert_ne!(m["StartAt"], params::ENTRY);
}

#[test]
fn params_are_execution_input_merged_into_the_defaults() {
    let dag = load(&pipeline(AWS_CLUSTER), &[("bucket", "prod-bucket")]);
    let m: Value = serde_json::from_str(&export(&dag).unwrap()).unwrap();
    // The entry states: a Choice on $.params, then the merge with the
    // default given at export (the override, not the DAG's "bkt").
    assert_eq!(m["StartAt"], params::ENTRY);
    assert_eq!(m["States"][params::ENTRY]["Type"], "Choice");
    let collect = &m["States"]["Collect parameters"];
    assert_eq!(
        collect["Parameters"],
        json!({"defaults": {"bucket": "prod-bucket"}, "given.$": "$.params"})
    );
    assert_eq!(
        m["States"]["Merge parameters"]["Parameters"]["params.$"],
        "States.JsonMerge($.params.defaults, $.params.given, false)"
    );
    // After the merge the flow is the DAG's: ingest's branch comes first.
    let first_task = m["States"]["Merge parameters"]["Next"].as_str().unwrap();
    assert!(m["States"].get(first_task).is_some());
    // `destination = "s3://${params.bucket}/raw/"` → the bucket is read.
    let ingest = &m["States"]["ingest"]["Parameters"];
    assert_eq!(ingest["Bucket.$"], "$.params.bucket");
    assert_eq!(ingest["Key"], "raw/a.csv");
    assert!(ingest.get("Bucket").is_none());
    // `args = ["--in", "s3://${params.bucket}/raw/"]`: a list with a
    // parameter is built by States.Array.
    let text = serde_json::to_string(&m).unwrap();
    assert!(
        text.contains(r#"'--in', States.Format('s3://{}/raw/', $.params.bucket)"#),
        "{text}"
    );
    // The per-execution query output keeps the execution's name after the bucket.
    assert!(
        text.contains(r#"States.Format('s3://{}/q/gate/{}/', $.params.bucket, $$.Execution.Name)"#),
        "{text}"
    );
    // The value at export appears nowhere outside the defaults.
    assert_eq!(text.matches("prod-bucket").count(), 1, "{text}");
    // Nothing of the private markers is left.
    assert!(!text.contains('\u{E000}') && !text.contains('\u{E001}'));
}

#[test]
fn a_dag_without_params_has_no_entry_states() {
    let text = pipeline(AWS_CLUSTER)
        .replace("[params]\nbucket = \"bkt\"\n", "")
        .replace("${params.bucket}", "bkt");
    let m = exported(&text);
    let runtime: Value = serde_json::from_str(&export(&load(&text, &[])).unwrap()).unwrap();
    assert_eq!(m, runtime);
}

#[test]
fn a_parameter_the_export_must_read_is_an_error_that_says_so() {
    let text = pipeline(AWS_CLUSTER)
        .replace(
            "bucket = \"bkt\"",
            "bucket = \"bkt\"\nreport_uri = \"s3://bkt/report.html\"",
        )
        .replace(
            "output = \"s3://${params.bucket}/report.html\"",
            "output = \"${params.report_uri}\"",
        )
        .replace(
            "output = \"s3://${params.bucket}/q/gate/\"",
            "output = \"${params.report_uri}\"",
        );
    let err = export_errors(&text);
    assert!(
        err.contains("`output` must be an s3:// prefix, found \"${params.report_uri}\""),
        "{err}"
    );
    assert!(
        err.contains("keep the part the export needs fixed"),
        "{err}"
    );
}

#[test]
fn shell_tasks_and_run_ids_cannot_be_exported() {
    let text = r#"
[dag]
name = "s"
[tasks.a]
type = "shell"
command = "echo hi"
[tasks.b]
type = "noop"
output = { run = "${run.id}" }
"#;
    let err = export_errors(text);
    assert!(err.contains("task `a` (shell)"), "{err}");
    assert!(err.contains("no production equivalent"), "{err}");
    assert!(
        err.contains("task `b`, field `output`: `${run.id}`"),
        "{err}"
    );
}

#[test]
fn the_output_is_byte_identical_for_the_same_input() {
    let a = export_inline(&load(&pipeline(AWS_CLUSTER), &[])).unwrap();
    let b = export_inline(&load(&pipeline(AWS_CLUSTER), &[])).unwrap();
    assert_eq!(a, b);
    // And reads in flow order: Comment and StartAt first.
    assert!(a.starts_with("{\n  \"Comment\": "), "{a}");
}

/// Follows a scope from `StartAt` along `Next` (the success path), as an
/// execution would, with `done` the tasks certain to have finished; a
/// `Parallel` adds what all its branches finish, each branch starting
/// from the same `done`. Asserts that each task state (named after its
/// task) starts only after all its dependencies. Returns the finished set.
fn run_in_order(
    scope: &Value,
    mut done: BTreeSet<String>,
    deps: &BTreeMap<String, Vec<String>>,
) -> BTreeSet<String> {
    let states = scope["States"].as_object().unwrap();
    let mut at = scope["StartAt"].as_str().map(str::to_string);
    let mut seen: BTreeSet<String> = at.iter().cloned().collect();
    while let Some(name) = at {
        let state = &states[&name];
        if let Some(task_deps) = deps.get(&name) {
            for dep in task_deps {
                assert!(done.contains(dep), "`{name}` may start before `{dep}`");
            }
        }
        if let Some(branches) = state["Branches"].as_array() {
            let mut all = done.clone();
            for branch in branches {
                all.extend(run_in_order(branch, done.clone(), deps));
            }
            done = all;
        }
        if deps.contains_key(&name) {
            done.insert(name.clone());
        }
        // A Choice goes on at its Default (the parameters' entry states
        // join again right after); a poll loop's Choice leads back, so a
        // state seen before ends the walk.
        at = state["Next"]
            .as_str()
            .or(state["Default"].as_str())
            .filter(|next| seen.insert(next.to_string()))
            .map(str::to_string);
    }
    done
}

#[test]
fn the_pipeline_runs_every_task_after_its_dependencies() {
    let dag = load(&pipeline(AWS_CLUSTER), &[]);
    let deps: BTreeMap<String, Vec<String>> = dag
        .tasks
        .iter()
        .map(|t| (t.id.clone(), t.depends_on.clone()))
        .collect();
    let m: Value = serde_json::from_str(&export(&dag).unwrap()).unwrap();
    let done = run_in_order(&m, BTreeSet::new(), &deps);
    assert_eq!(done.len(), dag.tasks.len());
}

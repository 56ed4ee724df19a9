//! `flux-engine run DAG --target aws` against a local AWS endpoint (moto's
//! server behind the harness's fault-injecting proxy, see
//! `tests/common/aws_endpoint.rs`): what the engine asks of S3 and EMR is
//! read back from the proxy's log and from moto, and compared with what
//! the DAG and the files on disk say it must be.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::aws_endpoint::{AwsEndpoint, REGION};
use common::{Scratch, text};
use serde_json::{Value, json};
use sha2::Digest;

const BUCKET: &str = "flux-demo";

/// A DAG of an upload (three files, one large enough for a multipart
/// upload at the test's threshold), a Spark job on EMR and a local task
/// after it.
fn project(s: &Scratch) -> std::path::PathBuf {
    s.write(
        "data/locations.csv",
        "location_id,name\n1,Harbour\n2,Airport\n",
    );
    s.write("data/users.csv", "user_id,name\n7,Ada\n");
    // About 140 kB of varied lines: three parts at the test's part size.
    let big: String = (0..12_000)
        .map(|i| format!("{i:06},{}\n", i * 7919 % 10_007))
        .collect();
    s.write("data/transactions.csv", &big);
    s.write("jobs/job.py", "print('the job')\n");
    s.write("jobs/common.py", "SHARED = 1\n");
    s.write(
        "dag.toml",
        &format!(
            r#"
[dag]
name = "awsdemo"

[aws]
region = "{REGION}"
emr_mode = "cluster"
release_label = "emr-7.5.0"
instance_type = "m5.xlarge"
instance_count = 2
service_role = "EMR_DefaultRole"
job_flow_role = "EMR_EC2_DefaultRole"
log_uri = "s3://{BUCKET}/logs/emr/"
scripts_prefix = "s3://{BUCKET}/scripts/"

[tasks.ingest]
type = "s3_ingest"
source = "data"
destination = "s3://{BUCKET}/raw/"

[tasks.job]
type = "emr_spark"
depends_on = ["ingest"]
script = "jobs/job.py"
py_files = ["jobs/common.py"]
args = ["--raw", "s3://{BUCKET}/raw/", "--out", "s3://{BUCKET}/out/"]
spark_conf = {{ "spark.sql.shuffle.partitions" = "4" }}

[tasks.after]
type = "shell"
depends_on = ["job"]
command = "echo after"
"#
        ),
    )
}

/// The engine on the endpoint, with a multipart threshold of 100 kB.
fn run_on(aws: &AwsEndpoint, s: &Scratch, args: &[&str]) -> Output {
    let mut command = common::command(&s.path("state"));
    aws.configure(&mut command);
    command
        .env("FLUX_S3_MULTIPART_THRESHOLD", "100000")
        .env("FLUX_S3_PART_SIZE", "50000")
        .current_dir(s.path(""))
        .args(args)
        .output()
        .expect("the engine starts")
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn base64_sha256(bytes: &[u8]) -> String {
    use std::process::{Command, Stdio};
    // Computed by openssl-free means: Python's hashlib and base64, so that
    // the expectation does not come from the code under test.
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys,hashlib,base64;print(base64.b64encode(hashlib.sha256(sys.stdin.buffer.read()).digest()).decode())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout).trim().to_string()
}

fn run_id_of(output: &Output) -> String {
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    all.split_whitespace()
        .find(|w| w.len() > 16 && w.starts_with("20") && w.contains('T') && w.contains('-'))
        .map(|w| {
            w.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .unwrap_or_else(|| panic!("no run id in:\n{all}"))
}

fn body(request: &Value) -> Value {
    match &request["body"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        other => other.clone(),
    }
}

#[test]
fn a_dag_runs_on_aws_uploads_once_and_runs_its_step_on_a_cluster_it_terminates() {
    let s = Scratch::new();
    let dag = project(&s);
    let mut aws = AwsEndpoint::start();
    aws.create_bucket(BUCKET);
    aws.call(json!({"op": "step_outcome", "step_id": "*", "state": "COMPLETED", "after_polls": 2}));

    let out = run_on(&aws, &s, &["run", dag.to_str().unwrap(), "--target", "aws"]);
    assert!(
        out.status.success(),
        "the run failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let run_id = run_id_of(&out);

    // Every file is in the bucket, byte for byte, with the SHA-256 S3
    // verifies sent along.
    let requests = aws.requests();
    for name in ["locations.csv", "users.csv", "transactions.csv"] {
        let local = std::fs::read(s.path(&format!("data/{name}"))).unwrap();
        let stored = aws.object(BUCKET, &format!("raw/{name}")).expect(name);
        assert_eq!(stored.as_bytes(), &local[..], "raw/{name}");
        let _ = sha256_hex(&local);
    }
    let small = std::fs::read(s.path("data/locations.csv")).unwrap();
    let put = requests
        .iter()
        .find(|r| r["operation"] == "PutObject" && r["key"] == "raw/locations.csv")
        .expect("a PutObject of raw/locations.csv");
    assert_eq!(
        put["headers"]["x-amz-checksum-sha256"].as_str(),
        Some(base64_sha256(&small).as_str()),
        "{put}"
    );
    // The large file went up in parts, each with its own checksum.
    let parts: Vec<&Value> = requests
        .iter()
        .filter(|r| r["operation"] == "UploadPart" && r["key"] == "raw/transactions.csv")
        .collect();
    let big = std::fs::metadata(s.path("data/transactions.csv"))
        .unwrap()
        .len();
    assert!(big > 100_000, "the file is over the multipart threshold");
    assert_eq!(
        parts.len() as u64,
        big.div_ceil(50_000),
        "{big} bytes in parts of 50,000"
    );
    assert!(
        parts.iter().all(|p| p["headers"]["x-amz-checksum-sha256"]
            .as_str()
            .is_some_and(|c| c.len() == 44)),
        "{parts:?}"
    );

    // The scripts are where the export references them.
    for name in ["job.py", "common.py"] {
        let local = std::fs::read_to_string(s.path(&format!("jobs/{name}"))).unwrap();
        assert_eq!(
            aws.object(BUCKET, &format!("scripts/{name}")),
            Some(local),
            "{name}"
        );
    }

    // One cluster, tagged with the DAG and the run.
    let created: Vec<&Value> = requests
        .iter()
        .filter(|r| r["operation"] == "RunJobFlow")
        .collect();
    assert_eq!(created.len(), 1);
    let tags = body(created[0])["Tags"].clone();
    assert!(
        tags.as_array()
            .unwrap()
            .contains(&json!({"Key": "flux-engine:dag", "Value": "awsdemo"})),
        "{tags}"
    );
    assert!(
        tags.as_array()
            .unwrap()
            .contains(&json!({"Key": "flux-engine:run", "Value": run_id})),
        "{tags}"
    );

    // One step, with the uploaded scripts and the DAG's arguments.
    let added: Vec<&Value> = requests
        .iter()
        .filter(|r| r["operation"] == "AddJobFlowSteps")
        .collect();
    assert_eq!(added.len(), 1);
    let step = &body(added[0])["Steps"][0];
    assert_eq!(step["Name"], "job");
    assert_eq!(
        step["HadoopJarStep"]["Args"],
        json!([
            "spark-submit",
            "--deploy-mode",
            "cluster",
            "--py-files",
            format!("s3://{BUCKET}/scripts/common.py"),
            "--conf",
            "spark.sql.shuffle.partitions=4",
            format!("s3://{BUCKET}/scripts/job.py"),
            "--raw",
            format!("s3://{BUCKET}/raw/"),
            "--out",
            format!("s3://{BUCKET}/out/"),
        ])
    );
    assert!(
        requests
            .iter()
            .filter(|r| r["operation"] == "DescribeStep")
            .count()
            >= 3,
        "the step was polled until it completed"
    );

    // The cluster was terminated when the run ended.
    let cluster_id = body(added[0])["JobFlowId"].as_str().unwrap().to_string();
    let terminated: Vec<&Value> = requests
        .iter()
        .filter(|r| r["operation"] == "TerminateJobFlows")
        .collect();
    assert_eq!(terminated.len(), 1, "{terminated:?}");
    assert_eq!(body(terminated[0])["JobFlowIds"], json!([cluster_id]));

    // `show` names the work started in AWS, with console links.
    let table = common::flux(&s.path("state"), &["show", &run_id]);
    let table = text(&table.stdout);
    assert!(table.contains("work started in AWS"), "{table}");
    assert!(
        table.contains(&format!("cluster_id={cluster_id}")),
        "{table}"
    );
    assert!(table.contains("console.aws.amazon.com/emr/"), "{table}");

    // The local task after the step ran.
    let show = common::show(&s.path("state"), &run_id);
    let tasks = common::tasks_by_id(&show);
    assert_eq!(tasks["after"]["status"], "succeeded", "{show}");
    assert_eq!(show["target"], "aws", "{show}");

    // A second run uploads nothing: every object's recorded SHA-256 matches.
    aws.call(json!({"op": "clear_requests"}));
    let again = run_on(&aws, &s, &["run", dag.to_str().unwrap(), "--target", "aws"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let puts: Vec<Value> = aws
        .requests()
        .into_iter()
        .filter(|r| {
            matches!(
                r["operation"].as_str(),
                Some("PutObject" | "UploadPart" | "CreateMultipartUpload")
            )
        })
        .collect();
    assert!(
        puts.is_empty(),
        "the unchanged files were uploaded again: {puts:?}"
    );
    let show = common::show(&s.path("state"), &run_id_of(&again));
    let ingest = &common::tasks_by_id(&show)["ingest"]["output"];
    assert_eq!(ingest["skipped"], 3, "{ingest}");
    assert_eq!(ingest["uploaded"], 0, "{ingest}");
}

#[test]
fn a_failed_step_fails_its_task_with_the_log_and_the_cluster_goes() {
    let s = Scratch::new();
    let dag = project(&s);
    let mut aws = AwsEndpoint::start();
    aws.create_bucket(BUCKET);
    let log_file = format!("s3://{BUCKET}/logs/emr/j-X/steps/s-X/stderr.gz");
    aws.call(json!({
        "op": "step_outcome", "step_id": "*", "state": "FAILED", "after_polls": 1,
        "failure": {"Reason": "Job failed", "Message": "Exception in thread main", "LogFile": log_file},
    }));
    let out = run_on(&aws, &s, &["run", dag.to_str().unwrap(), "--target", "aws"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let show = common::show(&s.path("state"), &run_id_of(&out));
    let tasks = common::tasks_by_id(&show);
    assert_eq!(tasks["job"]["status"], "failed");
    let error = tasks["job"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("FAILED") && error.contains("Job failed"),
        "{error}"
    );
    assert!(
        error.contains(&log_file),
        "the log location is named: {error}"
    );
    assert_eq!(tasks["after"]["status"], "upstream_failed");
    let requests = aws.requests();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r["operation"] == "TerminateJobFlows")
            .count(),
        1
    );
    assert!(
        !requests.iter().any(|r| r["operation"] == "CancelSteps"),
        "a step that ended is not cancelled"
    );
}

fn wait_for_operation(aws: &mut AwsEndpoint, operation: &str, limit: Duration) -> Vec<Value> {
    let mut found = Vec::new();
    common::wait_until(limit, || {
        found = aws.requests_of(operation);
        !found.is_empty()
    });
    found
}

#[test]
fn sigint_during_a_step_cancels_it_and_terminates_the_cluster() {
    let s = Scratch::new();
    let dag = project(&s);
    let mut aws = AwsEndpoint::start();
    aws.create_bucket(BUCKET);
    let mut command = common::command(&s.path("state"));
    aws.configure(&mut command);
    let mut child = command
        .current_dir(s.path(""))
        .args(["run", dag.to_str().unwrap(), "--target", "aws"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let added = wait_for_operation(&mut aws, "DescribeStep", Duration::from_secs(60));
    assert!(!added.is_empty(), "the step was never polled");
    common::signal(child.id(), libc::SIGINT);
    let status = common::wait_timeout(&mut child, Duration::from_secs(60)).expect("the run ends");
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130), "{}", text(&out.stderr));
    let requests = aws.requests();
    let polled = requests
        .iter()
        .find(|r| r["operation"] == "DescribeStep")
        .unwrap();
    let step_id = body(polled)["StepId"].clone();
    let cancels: Vec<&Value> = requests
        .iter()
        .filter(|r| r["operation"] == "CancelSteps")
        .collect();
    assert_eq!(cancels.len(), 1, "{}", text(&out.stderr));
    assert_eq!(body(cancels[0])["StepIds"], json!([step_id]));
    let cancel_at = cancels[0]["seq"].as_i64().unwrap();
    let terminate = requests
        .iter()
        .find(|r| r["operation"] == "TerminateJobFlows")
        .expect("the cluster is terminated");
    assert!(
        terminate["seq"].as_i64().unwrap() > cancel_at,
        "cancel, then terminate"
    );
}

#[test]
fn sigkill_during_a_step_then_resume_polls_the_same_step() {
    let s = Scratch::new();
    let dag = project(&s);
    let mut aws = AwsEndpoint::start();
    aws.create_bucket(BUCKET);
    let mut command = common::command(&s.path("state"));
    aws.configure(&mut command);
    let mut child = command
        .current_dir(s.path(""))
        .args(["run", dag.to_str().unwrap(), "--target", "aws"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let polled = wait_for_operation(&mut aws, "DescribeStep", Duration::from_secs(60));
    assert!(!polled.is_empty(), "the step was never polled");
    child.kill().unwrap();
    child.wait().unwrap();
    let step_id = body(&polled[0])["StepId"].as_str().unwrap().to_string();

    aws.call(
        json!({"op": "step_outcome", "step_id": step_id, "state": "COMPLETED", "after_polls": 1}),
    );
    aws.call(json!({"op": "clear_requests"}));
    let out = run_on(&aws, &s, &["resume", "--latest"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let requests = aws.requests();
    let count = |op: &str| requests.iter().filter(|r| r["operation"] == op).count();
    assert_eq!(count("AddJobFlowSteps"), 0, "no second step");
    assert_eq!(count("RunJobFlow"), 0, "the run's cluster is reused");
    let polled_after: Vec<Value> = requests
        .iter()
        .filter(|r| r["operation"] == "DescribeStep")
        .map(|r| body(r)["StepId"].clone())
        .collect();
    assert!(!polled_after.is_empty());
    assert!(
        polled_after.iter().all(|id| id == &json!(step_id)),
        "{polled_after:?}"
    );
    assert_eq!(count("TerminateJobFlows"), 1);
    assert!(
        text(&out.stderr).contains(&format!("reconnected to EMR step {step_id}")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_credential_is_an_error_before_any_task() {
    let s = Scratch::new();
    let dag = project(&s);
    let aws = AwsEndpoint::start();
    let mut command = common::command(&s.path("state"));
    aws.configure(&mut command);
    let out = command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["run", dag.to_str().unwrap(), "--target", "aws"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("no AWS credentials") && err.contains("AWS_PROFILE"),
        "{err}"
    );
    assert!(
        !Path::new(&s.path("state/flux.db")).exists(),
        "nothing was recorded"
    );
}

/// An Athena result as moto's static results queue takes it: a header row
/// (as Athena returns it for a SELECT) and the rows, all as text.
fn athena_result(columns: &[(&str, &str)], rows: &[&[&str]]) -> Value {
    let row = |values: Vec<&str>| json!({"Data": values.iter().map(|v| json!({"VarCharValue": v})).collect::<Vec<_>>()});
    let mut all = vec![row(columns.iter().map(|(n, _)| *n).collect())];
    all.extend(rows.iter().map(|r| row(r.to_vec())));
    json!({
        "rows": all,
        "column_info": columns.iter().map(|(n, t)| json!({"Name": n, "Type": t})).collect::<Vec<_>>(),
    })
}

/// The rental DAG's seven queries' results, in the DAG's order (moto binds
/// each queued result to the next query started).
fn rental_results() -> Vec<Value> {
    let tables = [
        "locations",
        "users",
        "vehicles",
        "rentals_clean",
        "quarantine",
        "location_performance",
        "vehicle_type_performance",
        "vehicle_performance",
        "daily_metrics",
        "user_metrics",
    ];
    let counts: Vec<[String; 2]> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| [t.to_string(), (10 * (i + 1)).to_string()])
        .collect();
    let count_rows: Vec<Vec<&str>> = counts
        .iter()
        .map(|r| vec![r[0].as_str(), r[1].as_str()])
        .collect();
    let count_refs: Vec<&[&str]> = count_rows.iter().map(|r| r.as_slice()).collect();
    vec![
        athena_result(
            &[("table_name", "varchar"), ("record_count", "bigint")],
            &count_refs,
        ),
        athena_result(
            &[
                ("total_revenue", "double"),
                ("total_rentals", "bigint"),
                ("active_users", "bigint"),
                ("avg_rental_hours", "double"),
                ("rented_vehicles", "bigint"),
            ],
            &[&["123456.5", "2000", "310", "26.25", "140"]],
        ),
        athena_result(
            &[
                ("vehicle_id", "varchar"),
                ("brand", "varchar"),
                ("vehicle_type", "varchar"),
                ("total_revenue", "double"),
                ("total_transactions", "bigint"),
                ("vehicle", "varchar"),
            ],
            &[
                &[
                    "VH-TOP-001",
                    "Tesla",
                    "sedan",
                    "5400.0",
                    "12",
                    "Tesla sedan (VH-TOP-001)",
                ],
                &["VH-002", "Ford", "suv", "4100.0", "9", "Ford suv (VH-002)"],
            ],
        ),
        athena_result(
            &[
                ("location_id", "varchar"),
                ("location_name", "varchar"),
                ("city", "varchar"),
                ("state", "varchar"),
                ("total_revenue", "double"),
                ("total_transactions", "bigint"),
            ],
            &[&["L1", "Harbour Point", "Seattle", "WA", "9000.0", "40"]],
        ),
        athena_result(
            &[
                ("vehicle_type", "varchar"),
                ("total_revenue", "double"),
                ("total_transactions", "bigint"),
                ("avg_transaction_amount", "double"),
                ("avg_rental_hours", "double"),
            ],
            &[
                &["sedan", "70000.0", "1200", "58.3", "25.0"],
                &["suv", "53456.5", "800", "66.8", "28.1"],
            ],
        ),
        athena_result(
            &[
                ("rental_date", "varchar"),
                ("total_revenue", "double"),
                ("total_transactions", "bigint"),
            ],
            &[
                &["2024-01-01", "1000.0", "10"],
                &["2024-01-02", "1500.0", "14"],
            ],
        ),
        athena_result(
            &[("check_name", "varchar"), ("failures", "bigint")],
            &[
                &["a", "0"],
                &["b", "0"],
                &["c", "0"],
                &["d", "0"],
                &["e", "0"],
                &["f", "0"],
            ],
        ),
    ]
}

/// Puts an object into moto directly (as the Spark job would have).
fn put_object(aws: &mut AwsEndpoint, bucket: &str, key: &str, text: &str) {
    let answer = aws.call(json!({
        "op": "moto", "method": "PUT", "path": format!("/{bucket}/{key}"), "body": text,
        "headers": {"Authorization": format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/s3/aws4_request, SignedHeaders=host, Signature=0"
        )},
    }));
    assert_eq!(answer["status"], 200, "{answer}");
}

/// The endpoint ready for the rental DAG: its bucket, crawls that finish
/// at once, steps that complete, the cleaning job's counts where the job
/// writes them, the queries' results queued.
fn rental_endpoint() -> AwsEndpoint {
    let mut aws = AwsEndpoint::start();
    aws.create_bucket("flux-rental");
    aws.moto(
        "POST",
        "/moto-api/state-manager/set-transition",
        json!({"model_name": "glue::crawl", "transition": {"progression": "immediate"}}),
    );
    aws.call(json!({"op": "step_outcome", "step_id": "*", "state": "COMPLETED", "after_polls": 1}));
    put_object(
        &mut aws,
        "flux-rental",
        "processed/job_counts/clean.json",
        r#"{"files": {"rental_transactions.csv": {"read": 2000, "clean": 1990, "quarantined": 10}}, "quarantine_reasons": {"bad date": 10}}"#,
    );
    let answer = aws.moto(
        "POST",
        "/moto-api/static/athena/query-results",
        json!({"account_id": "123456789012", "region": REGION, "results": rental_results()}),
    );
    assert_eq!(answer["status"], 201, "{answer}");
    aws
}

fn rental_args(extra: &[&str]) -> Vec<String> {
    let dag = common::root().join("dags/rental.toml");
    let mut args = vec![
        "run".to_string(),
        dag.display().to_string(),
        "--target".into(),
        "aws".into(),
    ];
    // One task at a time: moto hands out the queued query results in the
    // order the queries start.
    args.extend(["--max-parallel".to_string(), "1".to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

#[test]
fn the_rental_dag_runs_end_to_end_on_aws() {
    let s = Scratch::new();
    let mut aws = rental_endpoint();
    let args = rental_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_on(&aws, &s, &args);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let requests = aws.requests();
    let count = |op: &str| requests.iter().filter(|r| r["operation"] == op).count();

    // The raw files and the job scripts, byte for byte.
    let sample = common::root().join("dags/data/rental-sample");
    for name in [
        "locations.csv",
        "users.csv",
        "vehicles.csv",
        "rental_transactions.csv",
    ] {
        let local = std::fs::read_to_string(sample.join(name)).unwrap();
        assert_eq!(
            aws.object("flux-rental", &format!("raw/{name}")),
            Some(local),
            "{name}"
        );
    }
    for name in [
        "rental_clean.py",
        "rental_common.py",
        "rental_vehicle_location_metrics.py",
        "rental_user_transaction_metrics.py",
    ] {
        let local = std::fs::read_to_string(common::root().join("pyspark").join(name)).unwrap();
        assert_eq!(
            aws.object("flux-rental", &format!("scripts/{name}")),
            Some(local),
            "{name}"
        );
    }

    // One cluster, three steps with the DAG's arguments, then terminated.
    assert_eq!(count("RunJobFlow"), 1);
    let steps: Vec<Value> = requests
        .iter()
        .filter(|r| r["operation"] == "AddJobFlowSteps")
        .map(|r| body(r)["Steps"][0].clone())
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s["Name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "clean",
            "vehicle_location_metrics",
            "user_transaction_metrics"
        ]
    );
    // As dags/rental.toml writes the clean task, bucket substituted.
    assert_eq!(
        steps[0]["HadoopJarStep"]["Args"],
        json!([
            "spark-submit",
            "--deploy-mode",
            "cluster",
            "--py-files",
            "s3://flux-rental/scripts/rental_common.py",
            "--conf",
            "spark.sql.shuffle.partitions=8",
            "s3://flux-rental/scripts/rental_clean.py",
            "--raw",
            "s3://flux-rental/raw/",
            "--output",
            "s3://flux-rental/processed/clean/",
            "--quarantine",
            "s3://flux-rental/processed/quarantine/",
            "--counts-out",
            "s3://flux-rental/processed/job_counts/clean.json",
            "--max-quarantine-ratio",
            "0.05",
        ])
    );
    assert_eq!(count("TerminateJobFlows"), 1);

    // The crawler, created with the DAG's database and targets, started and polled.
    let created: Vec<Value> = requests
        .iter()
        .filter(|r| r["operation"] == "CreateCrawler")
        .map(body)
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["Name"], "rental-crawl");
    assert_eq!(created[0]["DatabaseName"], "rental");
    let paths: Vec<&str> = created[0]["Targets"]["S3Targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["Path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "s3://flux-rental/processed/clean/",
            "s3://flux-rental/processed/quarantine/",
            "s3://flux-rental/processed/vehicle_location/",
            "s3://flux-rental/processed/user_transaction/",
        ]
    );
    assert_eq!(count("StartCrawler"), 1);
    assert!(count("GetCrawler") >= 2);

    // Seven queries in the primary workgroup, their results read back.
    let started: Vec<Value> = requests
        .iter()
        .filter(|r| r["operation"] == "StartQueryExecution")
        .map(body)
        .collect();
    assert_eq!(started.len(), 7);
    assert!(
        started.iter().all(|q| q["WorkGroup"] == "primary"),
        "{started:?}"
    );
    assert!(count("GetQueryResults") >= 7);

    // The report, rendered from those results and uploaded.
    let html = aws
        .object("flux-rental", "analytics/report/rental_report.html")
        .expect("the report was uploaded");
    assert!(
        html.contains("VH-TOP-001"),
        "the top vehicle is in the report"
    );
    assert!(
        html.contains("Harbour Point"),
        "the top location is in the report"
    );
    assert!(
        html.contains("rental_transactions.csv"),
        "the row counts are in the report"
    );
}

#[test]
fn throttling_and_server_errors_on_every_service_are_retried_and_traced() {
    let s = Scratch::new();
    let mut aws = rental_endpoint();
    for (service, operation, kind) in [
        ("s3", "PutObject", "throttle"),
        ("s3", "HeadObject", "5xx"),
        ("elasticmapreduce", "RunJobFlow", "5xx"),
        ("elasticmapreduce", "DescribeStep", "throttle"),
        ("glue", "GetCrawler", "throttle"),
        ("glue", "StartCrawler", "5xx"),
        ("athena", "StartQueryExecution", "throttle"),
        ("athena", "GetQueryResults", "5xx"),
    ] {
        aws.call(json!({"op": "fault", "service": service, "operation": operation, "count": 1, "kind": kind}));
    }
    let args = rental_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_on(&aws, &s, &args);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let faults = aws.call(json!({"op": "faults"}))["faults"].clone();
    assert!(
        faults.as_array().unwrap().iter().all(|f| f["fired"] == 1),
        "every fault was met: {faults}"
    );

    // Each retried request is one span with two tries.
    let run_id = run_id_of(&out);
    let otlp = s.path("trace.json");
    let traced = common::flux(
        &s.path("state"),
        &["trace", &run_id, "--otlp-json", otlp.to_str().unwrap()],
    );
    assert!(traced.status.success(), "{}", text(&traced.stderr));
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&otlp).unwrap()).unwrap();
    let mut retried: Vec<String> = Vec::new();
    for resource in trace["resourceSpans"].as_array().unwrap() {
        for scope in resource["scopeSpans"].as_array().unwrap() {
            for span in scope["spans"].as_array().unwrap() {
                let attribute = |key: &str| {
                    span["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|a| a["key"] == key)
                        .map(|a| a["value"].clone())
                };
                let tries = attribute("flux.aws.tries").and_then(|v| {
                    v["intValue"]
                        .as_str()
                        .and_then(|n| n.parse::<i64>().ok())
                        .or(v["intValue"].as_i64())
                });
                if tries == Some(2) {
                    retried.push(
                        attribute("rpc.method")
                            .map(|v| v["stringValue"].as_str().unwrap_or("").to_string())
                            .unwrap_or_default(),
                    );
                }
            }
        }
    }
    retried.sort();
    let mut expected = vec![
        "PutObject",
        "HeadObject",
        "RunJobFlow",
        "DescribeStep",
        "GetCrawler",
        "StartCrawler",
        "StartQueryExecution",
        "GetQueryResults",
    ];
    expected.sort();
    assert_eq!(retried, expected);
}

/// The policy `export --iam --for-run` writes for the rental DAG.
fn run_policy() -> Value {
    let out = common::command(Path::new("/nonexistent-state"))
        .current_dir(common::root())
        .args(["export", "--iam", "--for-run", "dags/rental.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_rental_dag_runs_with_nothing_but_the_policy_export_writes_for_it() {
    let s = Scratch::new();
    let mut aws = rental_endpoint();
    let policy = run_policy();
    aws.call(json!({"op": "allow_only", "policy": policy}));
    let args = rental_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_on(&aws, &s, &args);
    let refused: Vec<Value> = aws
        .requests()
        .into_iter()
        .filter(|r| r["refused"] == true)
        .collect();
    assert!(
        refused.is_empty(),
        "requests the policy does not grant: {refused:?}"
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The proxy does refuse what the policy leaves out: without the
    // uploads' statement the first upload is denied and the run fails.
    let s = Scratch::new();
    let mut aws = rental_endpoint();
    let mut narrower = policy.clone();
    narrower["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|statement| statement["Sid"] != "RunUploads");
    aws.call(json!({"op": "allow_only", "policy": narrower}));
    let out = run_on(&aws, &s, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        aws.requests()
            .iter()
            .any(|r| r["refused"] == true
                && r["key"].as_str().is_some_and(|k| k.starts_with("raw/"))),
        "an upload to raw/ was refused"
    );
}

#[test]
fn a_serverless_job_runs_as_a_job_run_of_the_application() {
    let s = Scratch::new();
    let dag = project(&s);
    // The same project, its Spark task on EMR Serverless.
    let serverless = std::fs::read_to_string(&dag).unwrap().replace(
        "emr_mode = \"cluster\"",
        "emr_mode = \"serverless\"\napplication_id = \"${params.app}\"\nexecution_role_arn = \"arn:aws:iam::123456789012:role/flux-jobs\"",
    );
    let serverless = serverless.replace("[aws]", "[params]\napp = \"none\"\n\n[aws]");
    let serverless = serverless
        .lines()
        .filter(|l| {
            ![
                "release_label",
                "instance_type",
                "instance_count",
                "service_role",
                "job_flow_role",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&dag, serverless).unwrap();
    let mut aws = AwsEndpoint::start();
    aws.create_bucket(BUCKET);
    let created = aws.call(json!({
        "op": "moto", "method": "POST", "path": "/applications",
        "body": {"name": "flux", "releaseLabel": "emr-7.5.0", "type": "SPARK", "clientToken": "t"},
        "headers": {"Authorization": format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/emr-serverless/aws4_request, SignedHeaders=host, Signature=0"
        ), "Content-Type": "application/json"},
    }));
    let app = created["body"]["applicationId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();

    let out = run_on(
        &aws,
        &s,
        &[
            "run",
            dag.to_str().unwrap(),
            "--target",
            "aws",
            "--param",
            &format!("app={app}"),
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let requests = aws.requests();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r["operation"] == "RunJobFlow")
            .count(),
        0
    );
    let started: Vec<Value> = requests
        .iter()
        .filter(|r| r["operation"] == "StartJobRun")
        .map(body)
        .collect();
    assert_eq!(started.len(), 1, "{requests:?}");
    let run = &started[0];
    assert_eq!(
        run["executionRoleArn"],
        "arn:aws:iam::123456789012:role/flux-jobs"
    );
    let driver = &run["jobDriver"]["sparkSubmit"];
    assert_eq!(
        driver["entryPoint"],
        format!("s3://{BUCKET}/scripts/job.py")
    );
    assert_eq!(
        driver["entryPointArguments"],
        json!([
            "--raw",
            format!("s3://{BUCKET}/raw/"),
            "--out",
            format!("s3://{BUCKET}/out/")
        ])
    );
    assert_eq!(
        driver["sparkSubmitParameters"],
        format!("--py-files s3://{BUCKET}/scripts/common.py --conf spark.sql.shuffle.partitions=4")
    );
    assert_eq!(run["tags"]["flux-engine:dag"], "awsdemo");
    let show = common::show(&s.path("state"), &run_id_of(&out));
    let work = show["external_work"].as_array().unwrap();
    assert!(
        work.iter()
            .any(|w| w["key"] == "emr.job_run" && w["value"]["application_id"] == app.as_str()),
        "{show}"
    );
}

#[test]
fn a_given_cluster_gets_the_steps_and_is_left_running() {
    let s = Scratch::new();
    let dag = project(&s);
    let given = std::fs::read_to_string(&dag).unwrap().replace(
        "[aws]",
        "[params]\ncluster = \"none\"\n\n[aws]\ncluster_id = \"${params.cluster}\"",
    );
    std::fs::write(&dag, given).unwrap();
    let mut aws = AwsEndpoint::start();
    aws.create_bucket(BUCKET);
    aws.call(json!({"op": "step_outcome", "step_id": "*", "state": "COMPLETED", "after_polls": 1}));
    // A cluster of the user's own, started outside the run.
    let created = aws.call(json!({
        "op": "moto", "method": "POST", "path": "/",
        "body": {
            "Name": "mine", "ReleaseLabel": "emr-7.5.0",
            "Instances": {"InstanceCount": 1, "MasterInstanceType": "m5.xlarge", "KeepJobFlowAliveWhenNoSteps": true},
            "JobFlowRole": "EMR_EC2_DefaultRole", "ServiceRole": "EMR_DefaultRole",
        },
        "headers": {
            "Authorization": format!(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/elasticmapreduce/aws4_request, SignedHeaders=host, Signature=0"
            ),
            "X-Amz-Target": "ElasticMapReduce.RunJobFlow",
            "Content-Type": "application/x-amz-json-1.1",
        },
    }));
    let cluster = created["body"]["JobFlowId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string();

    let out = run_on(
        &aws,
        &s,
        &[
            "run",
            dag.to_str().unwrap(),
            "--target",
            "aws",
            "--param",
            &format!("cluster={cluster}"),
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let requests = aws.requests();
    let count = |op: &str| requests.iter().filter(|r| r["operation"] == op).count();
    assert_eq!(count("RunJobFlow"), 0, "no cluster created");
    assert_eq!(
        count("TerminateJobFlows"),
        0,
        "the given cluster is left running"
    );
    let added: Vec<Value> = requests
        .iter()
        .filter(|r| r["operation"] == "AddJobFlowSteps")
        .map(body)
        .collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["JobFlowId"], cluster.as_str());
}

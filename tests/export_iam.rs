//! `flux-engine export --iam` as a user meets it: one JSON document with
//! the role policy and the trust policy, byte-identical output, `-o`,
//! `--param`, export errors, and an independent checker of IAM policies
//! (`parliament`, from PyPI) on the role policy of every exportable DAG
//! under dags/.
//!
//! `parliament` is run as `python3 -c "...parliament.cli..."` (its own
//! entry point, whatever the state of pyenv's shims). Without it the
//! checker test says SKIPPED loudly and passes, unless
//! `FLUX_REQUIRE_CHECKERS=1` (CI).
//! parliament checks identity policies only: the trust policy (a resource
//! policy with a `Principal` and no `Resource`) is not given to it.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

fn export(s: &Scratch, args: &[&str]) -> Output {
    export_with(s, "--iam", args)
}

fn exported(s: &Scratch, args: &[&str]) -> String {
    let out = export(s, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "export --iam {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn the_document_holds_the_role_and_trust_policies_and_is_byte_identical() {
    let s = Scratch::new();
    for dag in EXPORTABLE {
        let first = exported(&s, &[dag]);
        assert_eq!(first, exported(&s, &[dag]), "two exports of {dag} differ");
        let doc: Value = serde_json::from_str(&first).expect("the export is JSON");
        // (serde_json lists an object's keys sorted.)
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        let has_report = std::fs::read_to_string(root().join(dag))
            .unwrap()
            .contains("type = \"report\"");
        if has_report {
            assert_eq!(
                keys,
                [
                    "ReportFunctionRolePolicy",
                    "ReportFunctionTrustPolicy",
                    "RolePolicy",
                    "TrustPolicy"
                ]
            );
            assert_eq!(
                doc["ReportFunctionTrustPolicy"]["Statement"][0]["Principal"]["Service"],
                "lambda.amazonaws.com"
            );
        } else {
            assert_eq!(keys, ["RolePolicy", "TrustPolicy"]);
        }
        assert_eq!(doc["RolePolicy"]["Version"], "2012-10-17");
        assert!(
            !doc["RolePolicy"]["Statement"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            doc["TrustPolicy"]["Statement"][0]["Principal"]["Service"],
            "states.amazonaws.com"
        );
        let file = s.path("policy.json");
        let out = export(&s, &[dag, "-o", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "-o must leave stdout empty");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    }
}

#[test]
fn params_given_on_the_command_line_are_substituted() {
    let s = Scratch::new();
    let default = exported(&s, &["dags/rental.toml"]);
    let other = exported(&s, &["dags/rental.toml", "--param", "bucket=prod-data"]);
    assert!(default.contains("arn:aws:s3:::flux-rental/raw/users.csv"));
    assert!(!other.contains("flux-rental"), "the default bucket is left");
    assert!(other.contains("arn:aws:s3:::prod-data/raw/users.csv"));
}

#[test]
fn a_dag_that_cannot_be_exported_fails_the_same_way() {
    let s = Scratch::new();
    let out = export(&s, &["dags/example.toml"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("task `extract` (shell)"), "{err}");
    let out = command(&s.path("state"))
        .current_dir(root())
        .args(["export", "--iam", "--sfn", "dags/rental.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--iam and --sfn are exclusive");
}

/// Whether parliament runs here; without it a test says SKIPPED loudly
/// (and fails under `FLUX_REQUIRE_CHECKERS=1`, as in CI).
fn parliament_available() -> bool {
    let available = parliament()
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        let message = "SKIPPED: parliament is not installed; install with: python3 -m pip install parliament==1.6.4";
        if std::env::var_os("FLUX_REQUIRE_CHECKERS").is_some_and(|v| v == "1") {
            panic!("{message} (FLUX_REQUIRE_CHECKERS=1)");
        }
        eprintln!("\n!!!!!!!! {message}\n");
    }
    available
}

/// parliament's command-line entry point, run by the python3 on the PATH.
fn parliament() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import sys; from parliament.cli import cli; sys.exit(cli())",
    ]);
    cmd
}

#[test]
fn parliament_finds_nothing_in_the_role_policy_of_every_exportable_dag() {
    if !parliament_available() {
        return;
    }
    let s = Scratch::new();
    let mut function_policies = 0;
    for dag in EXPORTABLE {
        let doc: Value = serde_json::from_str(&exported(&s, &[dag])).unwrap();
        for key in ["RolePolicy", "ReportFunctionRolePolicy"] {
            if key != "RolePolicy" && doc.get(key).is_none() {
                continue;
            }
            function_policies += usize::from(key != "RolePolicy");
            let file = s.path("role_policy.json");
            std::fs::write(&file, serde_json::to_string_pretty(&doc[key]).unwrap()).unwrap();
            // The policy goes in on stdin: parliament refuses --file when its
            // stdin is not a terminal, as under `cargo test`.
            let out = parliament()
                .args(["--json", "--minimum_severity", "INFO"])
                .stdin(std::fs::File::open(&file).unwrap())
                .output()
                .expect("run parliament");
            let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(
                out.status.success() && said.trim().is_empty(),
                "parliament reports findings on the {key} of {dag}:\n{said}"
            );
        }
    }
    // dags/rental.toml has a report: its function's role was checked.
    assert!(
        function_policies >= 1,
        "no report function role was checked"
    );
    // And it does find what it should: the checker is really looking.
    let bad = s.write(
        "bad.json",
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}"#,
    );
    let out = parliament()
        .args(["--json", "--minimum_severity", "INFO"])
        .stdin(std::fs::File::open(&bad).unwrap())
        .output()
        .expect("run parliament");
    assert!(
        text(&out.stdout).contains("RESOURCE_STAR"),
        "parliament should flag s3:GetObject on *: {}",
        text(&out.stdout)
    );
}

#[test]
fn parliament_finds_nothing_in_the_policy_for_running_every_exportable_dag_on_aws() {
    if !parliament_available() {
        return;
    }
    let s = Scratch::new();
    for dag in EXPORTABLE {
        let out = export(&s, &["--for-run", dag]);
        assert!(out.status.success(), "{dag}: {}", text(&out.stderr));
        let policy: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(policy["Version"], "2012-10-17", "{dag}: a policy document");
        assert!(
            !policy["Statement"].as_array().unwrap().is_empty(),
            "{dag}: the run needs something"
        );
        let file = s.write("run_policy.json", &text(&out.stdout));
        let checked = parliament()
            .args(["--json", "--minimum_severity", "INFO"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .expect("run parliament");
        let said = format!("{}{}", text(&checked.stdout), text(&checked.stderr));
        assert!(
            checked.status.success() && said.trim().is_empty(),
            "parliament reports findings on the run policy of {dag}:\n{said}"
        );
    }
}

/// The report function's role grants exactly what the rental DAG's
/// report reads and writes (dags/rental.toml's fields, written out here
/// with the default bucket): list and read its queries' results, read the
/// cleaning job's counts, write the report, log to its own group.
#[test]
fn the_report_function_role_reads_the_inputs_and_writes_the_report() {
    use std::collections::BTreeSet;
    let s = Scratch::new();
    let doc: Value = serde_json::from_str(&exported(&s, &["dags/rental.toml"])).unwrap();
    let bucket = "flux-rental";
    let queries = [
        "record_counts",
        "summary",
        "top_vehicles",
        "top_locations",
        "revenue_by_vehicle_type",
        "daily_trend",
        "quality_checks",
    ];
    let prefixes: BTreeSet<String> = queries
        .iter()
        .map(|q| format!("analytics/queries/{q}/*"))
        .collect();
    let mut reads: BTreeSet<String> = prefixes
        .iter()
        .map(|p| format!("arn:aws:s3:::{bucket}/{p}"))
        .collect();
    reads.insert(format!(
        "arn:aws:s3:::{bucket}/processed/job_counts/clean.json"
    ));
    let output = format!("arn:aws:s3:::{bucket}/analytics/report/rental_report.html");

    let statements = doc["ReportFunctionRolePolicy"]["Statement"]
        .as_array()
        .unwrap();
    let by_sid = |sid: &str| {
        statements
            .iter()
            .find(|st| st["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}: {statements:?}"))
    };
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let read = by_sid("ReportReadInputs");
    assert_eq!(read["Action"], serde_json::json!(["s3:GetObject"]));
    assert_eq!(strings(&read["Resource"]), reads);
    let list = by_sid("ReportListResults1");
    assert_eq!(list["Action"], serde_json::json!(["s3:ListBucket"]));
    assert_eq!(
        list["Resource"],
        serde_json::json!([format!("arn:aws:s3:::{bucket}")])
    );
    assert_eq!(
        strings(&list["Condition"]["StringLike"]["s3:prefix"]),
        prefixes
    );
    let write = by_sid("ReportWriteReport");
    assert_eq!(write["Action"], serde_json::json!(["s3:PutObject"]));
    assert_eq!(write["Resource"], serde_json::json!([output]));
    // dags/rental.toml: region eu-west-1, no account, function flux-engine-report.
    assert_eq!(
        by_sid("ReportFunctionLogs")["Resource"],
        serde_json::json!(["arn:aws:logs:eu-west-1:*:log-group:/aws/lambda/flux-engine-report:*"])
    );
    assert_eq!(statements.len(), 4, "{statements:?}");
    assert_eq!(
        doc["ReportFunctionTrustPolicy"]["Statement"][0]["Action"],
        "sts:AssumeRole"
    );
}

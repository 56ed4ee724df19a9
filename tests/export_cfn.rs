//! `flux-engine export --cfn` as a user meets it: a CloudFormation
//! template with the state machine, its role, the Glue database and
//! crawlers, the Athena workgroup and the optional bucket; byte-identical
//! output, `-o`, flags that exclude each other, and an independent checker
//! of CloudFormation templates (`cfn-lint`, from PyPI) on the template of
//! every exportable DAG under dags/ (and of a DAG with its own workgroup,
//! and one whose report function is given by ARN).
//!
//! The expected values are the DAGs' fields, written out here; the state
//! machine and the role policy are compared with `--sfn` and `--iam` once
//! the template's substitutions are resolved with the parameters'
//! defaults.
//!
//! `cfn-lint` is run as `python3 -c "...cfnlint.runner..."` (its own entry
//! point, whatever the state of pyenv's shims). Without it the checker test says SKIPPED loudly and
//! passes, unless `FLUX_REQUIRE_CHECKERS=1` (CI). Neither errors nor
//! warnings are allowed.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

fn exported(s: &Scratch, flag: &str, args: &[&str]) -> String {
    let out = export_with(s, flag, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "export {flag} {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn template(s: &Scratch, args: &[&str]) -> Value {
    serde_json::from_str(&exported(s, "--cfn", args)).expect("the template is JSON")
}

/// The template's resources of one type, by logical id.
fn of_type<'a>(t: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

/// Replaces every `${NAME}` in `s` by `values[NAME]`.
fn resolve_text(s: &str, values: &[(&str, String)]) -> String {
    let mut s = s.to_string();
    for (name, value) in values {
        s = s.replace(&format!("${{{name}}}"), value);
    }
    assert!(!s.contains("${"), "unresolved substitution in {s}");
    s
}

/// `Fn::Sub` and `Ref` resolved with `values` (parameters and pseudo
/// parameters).
fn resolve(v: &Value, values: &[(&str, String)]) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("Fn::Sub") => {
            Value::String(resolve_text(m["Fn::Sub"].as_str().unwrap(), values))
        }
        Value::Object(m) if m.len() == 1 && m.contains_key("Ref") => {
            let name = m["Ref"].as_str().unwrap();
            let (_, value) = values
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("no value for Ref {name}"));
            Value::String(value.clone())
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), resolve(v, values)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, values)).collect()),
        other => other.clone(),
    }
}

/// The definition (`DefinitionString`, through `Fn::Sub` when it names
/// parameters or resources) with the parameters' defaults and the
/// created report function's name filled in.
fn definition(t: &Value) -> Value {
    let props = &t["Resources"]["StateMachine"]["Properties"];
    let mut defaults: Vec<(&str, String)> = t["Parameters"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, p)| Some((k.as_str(), p["Default"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    // The report function the template creates: `Ref` is its name.
    if let Some(name) = t["Resources"]["ReportFunction"]["Properties"]["FunctionName"].as_str() {
        defaults.push(("ReportFunction", name.to_string()));
    }
    let text = match &props["DefinitionString"] {
        Value::String(text) => text.clone(),
        sub => resolve_text(
            sub["Fn::Sub"]
                .as_str()
                .expect("DefinitionString is a string or Fn::Sub"),
            &defaults,
        ),
    };
    serde_json::from_str(&text).expect("the definition is JSON")
}

#[test]
fn the_template_is_byte_identical_and_holds_the_export() {
    let s = Scratch::new();
    for dag in EXPORTABLE {
        let first = exported(&s, "--cfn", &[dag]);
        assert_eq!(
            first,
            exported(&s, "--cfn", &[dag]),
            "two exports of {dag} differ"
        );
        let t: Value = serde_json::from_str(&first).expect("the template is JSON");
        assert_eq!(t["AWSTemplateFormatVersion"], "2010-09-09");
        let sm = &t["Resources"]["StateMachine"];
        assert_eq!(sm["Type"], "AWS::StepFunctions::StateMachine");
        assert_eq!(
            sm["Properties"]["RoleArn"],
            json!({"Fn::GetAtt": ["StateMachineRole", "Arn"]})
        );
        // The definition is the --sfn export once substituted.
        let asl: Value = serde_json::from_str(&exported(&s, "--sfn", &[dag])).unwrap();
        assert_eq!(definition(&t), asl, "{dag}: the definition is not --sfn's");
        assert_eq!(t["Resources"]["StateMachineRole"]["Type"], "AWS::IAM::Role");
        assert_eq!(
            t["Outputs"]["StateMachineArn"]["Value"],
            json!({"Ref": "StateMachine"})
        );
        assert_eq!(
            t["Outputs"]["RoleArn"]["Value"],
            json!({"Fn::GetAtt": ["StateMachineRole", "Arn"]})
        );
        let file = s.path("template.json");
        let out = run_in_root(&s, &["export", "--cfn", dag, "-o", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "-o must leave stdout empty");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    }
}

#[test]
fn the_rental_template_has_the_dags_resources_and_parameters() {
    let s = Scratch::new();
    let t = template(&s, &["dags/rental.toml"]);
    // dags/rental.toml: [aws] and the defaults of its params.
    let (bucket, database, region) = ("flux-rental", "rental", "eu-west-1");
    let params = &t["Parameters"];
    assert_eq!(params["EmrServiceRole"]["Default"], "EMR_DefaultRole");
    assert_eq!(params["EmrJobFlowRole"]["Default"], "EMR_EC2_DefaultRole");
    assert!(
        params["ReportImageUri"].get("Default").is_none(),
        "the image is built and pushed by the deployer: no default"
    );
    assert!(params.get("ReportFunction").is_none());
    assert!(
        params["GlueCrawlerRoleArn"].get("Default").is_none(),
        "[aws] has no crawler role: the deployer gives it"
    );
    assert_eq!(params["CreateBucket"]["Default"], "false");
    assert!(params.get("EmrServerlessExecutionRoleArn").is_none());

    let databases = of_type(&t, "AWS::Glue::Database");
    assert_eq!(databases.len(), 1, "{databases:?}");
    let (db_id, db) = databases[0];
    assert_eq!(db["Properties"]["DatabaseInput"]["Name"], database);
    assert_eq!(
        db["Properties"]["CatalogId"],
        json!({"Ref": "AWS::AccountId"})
    );

    // One crawler, the task `crawl`, named as the state machine starts it.
    let crawlers = of_type(&t, "AWS::Glue::Crawler");
    assert_eq!(crawlers.len(), 1, "{crawlers:?}");
    let props = &crawlers[0].1["Properties"];
    assert_eq!(props["Name"], "rental-crawl");
    assert_eq!(props["Role"], json!({"Ref": "GlueCrawlerRoleArn"}));
    assert_eq!(props["DatabaseName"], json!({"Ref": db_id}));
    let targets: Vec<Value> = [
        "processed/clean/",
        "processed/quarantine/",
        "processed/vehicle_location/",
        "processed/user_transaction/",
    ]
    .iter()
    .map(|p| json!({"Path": format!("s3://{bucket}/{p}")}))
    .collect();
    assert_eq!(props["Targets"]["S3Targets"], Value::Array(targets));
    let asl = exported(&s, "--sfn", &["dags/rental.toml"]);
    assert!(asl.contains("\"Name\": \"rental-crawl\""));

    // The workgroup is "primary", which every account has: not created.
    assert!(of_type(&t, "AWS::Athena::WorkGroup").is_empty());

    let buckets = of_type(&t, "AWS::S3::Bucket");
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].1["Condition"], "CreateBucket");
    assert_eq!(buckets[0].1["Properties"]["BucketName"], bucket);
    assert_eq!(
        t["Conditions"]["CreateBucket"],
        json!({"Fn::Equals": [{"Ref": "CreateBucket"}, "true"]})
    );

    // The role: --iam's role policy once resolved in rental.toml's region
    // (it names no account: --iam writes `*`); the trust policy keyed on
    // the stack's account.
    let role = &t["Resources"]["StateMachineRole"]["Properties"];
    let iam: Value = serde_json::from_str(&exported(&s, "--iam", &["dags/rental.toml"])).unwrap();
    let values = [
        ("AWS::Partition", "aws".to_string()),
        ("AWS::Region", region.to_string()),
        ("AWS::AccountId", "*".to_string()),
        ("EmrServiceRole", "EMR_DefaultRole".to_string()),
        ("EmrJobFlowRole", "EMR_EC2_DefaultRole".to_string()),
        ("ReportFunction", "flux-engine-report".to_string()),
    ];
    assert_eq!(
        resolve(&role["Policies"][0]["PolicyDocument"], &values),
        iam["RolePolicy"]
    );
    let trust = &role["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Principal"]["Service"], "states.amazonaws.com");
    assert_eq!(
        trust["Condition"]["StringEquals"]["aws:SourceAccount"],
        json!({"Ref": "AWS::AccountId"})
    );
    // The definition refers to the parameters, not to the values.
    let def = &t["Resources"]["StateMachine"]["Properties"];
    let raw = def["DefinitionString"]["Fn::Sub"].as_str().unwrap();
    assert!(
        raw.contains("\"ServiceRole\": \"${EmrServiceRole}\""),
        "{raw}"
    );
    // ... and ReportFunction (a `Ref`: its name) is the function the
    // template creates.
    assert!(raw.contains("\"FunctionName\": \"${ReportFunction}\""));
    assert!(!raw.contains("EMR_DefaultRole"));

    // The report function: the zip package deploy uploads (no
    // report_image in the DAG), its own role, named as [aws]
    // report_function, and the state machine may invoke only it.
    let functions = of_type(&t, "AWS::Lambda::Function");
    assert_eq!(functions.len(), 1, "{functions:?}");
    let (id, function) = functions[0];
    assert_eq!(id, "ReportFunction");
    let f = &function["Properties"];
    assert_eq!(f["FunctionName"], "flux-engine-report");
    assert_eq!(f["PackageType"], Value::Null, "a zip, the default");
    assert_eq!(f["Runtime"], "provided.al2023");
    assert_eq!(f["Handler"], "bootstrap");
    assert_eq!(
        f["Code"],
        json!({"S3Bucket": {"Ref": "ReportCodeBucket"}, "S3Key": {"Ref": "ReportCodeKey"}})
    );
    assert_eq!(
        f["Role"],
        json!({"Fn::GetAtt": ["ReportFunctionRole", "Arn"]})
    );
    let timeout = f["Timeout"].as_u64().unwrap();
    assert!((60..=900).contains(&timeout), "{timeout}");
    assert!(f["MemorySize"].as_u64().unwrap() >= 512);
    let function_role = &t["Resources"]["ReportFunctionRole"]["Properties"];
    assert_eq!(
        function_role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "lambda.amazonaws.com"
    );
    assert_eq!(
        resolve(&function_role["Policies"][0]["PolicyDocument"], &values),
        iam["ReportFunctionRolePolicy"]
    );
    let policy = role["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    let invoke: Vec<&Value> = policy
        .iter()
        .filter(|st| st["Action"].to_string().contains("lambda:"))
        .collect();
    assert_eq!(invoke.len(), 1);
    assert_eq!(invoke[0]["Action"], json!(["lambda:InvokeFunction"]));
    assert_eq!(
        invoke[0]["Resource"],
        json!([{"Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${ReportFunction}"}])
    );
    assert_eq!(
        t["Outputs"]["ReportFunctionArn"]["Value"],
        json!({"Fn::GetAtt": ["ReportFunction", "Arn"]})
    );
}

/// A report whose `report_function` is an ARN.
const ARN_DAG: &str = r#"
[dag]
name = "arn_test"
[aws]
region = "eu-central-1"
athena_workgroup = "primary"
report_function = "arn:aws:lambda:eu-central-1:111122223333:function:my-report"
[tasks.q]
type = "athena_query"
database = "db"
output = "s3://bkt/q/"
sql = "SELECT 1 AS n"
[tasks.report]
type = "report"
depends_on = ["q"]
output = "s3://bkt/r/report.html"
tiles = [{ label = "N", from = "q", column = "n" }]
"#;

/// `report_function` given as an ARN: the function is created under the
/// name in it, and the state machine and its policy use the created
/// function's ARN.
#[test]
fn a_report_function_arn_names_the_created_function() {
    let s = Scratch::new();
    let dag = s.write("arn.toml", ARN_DAG);
    let t = template(&s, &[dag.to_str().unwrap()]);
    let f = &t["Resources"]["ReportFunction"]["Properties"];
    assert_eq!(f["FunctionName"], "my-report");
    let arn = json!({"Fn::GetAtt": ["ReportFunction", "Arn"]});
    let props = &t["Resources"]["StateMachine"]["Properties"];
    let text = props["DefinitionString"]["Fn::Sub"].as_str().unwrap();
    assert!(
        text.contains("\"FunctionName\": \"${ReportFunction.Arn}\""),
        "{text}"
    );
    let policy = &t["Resources"]["StateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"];
    let invoke = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["Sid"] == "InvokeReportFunction")
        .unwrap();
    assert_eq!(invoke["Resource"], json!([arn]));
    // The function's role: the prefix of q's results, the report object.
    let function_policy =
        t["Resources"]["ReportFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
            .to_string();
    assert!(
        function_policy.contains("arn:${AWS::Partition}:s3:::bkt/q/*"),
        "{function_policy}"
    );
    assert!(function_policy.contains("arn:${AWS::Partition}:s3:::bkt/r/report.html"));
    assert!(function_policy.contains("log-group:/aws/lambda/my-report:*"));
    assert!(!function_policy.contains("111122223333"));
}

#[test]
fn serverless_takes_the_execution_role_as_a_parameter() {
    let s = Scratch::new();
    let t = template(&s, &["dags/sfn_example.toml", "--param", "bucket=my-bkt"]);
    // dags/sfn_example.toml's [aws].
    assert_eq!(
        t["Parameters"]["EmrServerlessExecutionRoleArn"]["Default"],
        "arn:aws:iam::123456789012:role/flux-example-emr-serverless"
    );
    assert!(t["Parameters"].get("EmrServiceRole").is_none());
    assert!(t["Parameters"].get("GlueCrawlerRoleArn").is_none());
    assert!(of_type(&t, "AWS::Glue::Crawler").is_empty());
    // The query's database, `example`, is created.
    let databases = of_type(&t, "AWS::Glue::Database");
    assert_eq!(databases.len(), 1);
    assert_eq!(
        databases[0].1["Properties"]["DatabaseInput"]["Name"],
        "example"
    );
    assert_eq!(
        of_type(&t, "AWS::S3::Bucket")[0].1["Properties"]["BucketName"],
        "my-bkt"
    );
    let policy = t["Resources"]["StateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        .to_string();
    assert!(
        policy.contains(r#"{"Ref":"EmrServerlessExecutionRoleArn"}"#),
        "{policy}"
    );
    assert!(!policy.contains("123456789012"), "{policy}");
}

/// A DAG with a workgroup of its own and two queries.
const WORKGROUP_DAG: &str = r#"
[dag]
name = "wg_test"
[params]
bucket = "bkt-wg"
[aws]
region = "eu-central-1"
athena_workgroup = "flux-wg"
[tasks.a]
type = "athena_query"
database = "db_a"
output = "s3://${params.bucket}/analytics/queries/a/"
sql = "SELECT 1"
[tasks.b]
type = "athena_query"
depends_on = ["a"]
database = "db_a"
output = "s3://${params.bucket}/analytics/queries/b/"
sql = "SELECT 2"
"#;

#[test]
fn a_workgroup_of_its_own_is_created_with_the_common_results_prefix() {
    let s = Scratch::new();
    let dag = s.write("wg.toml", WORKGROUP_DAG);
    let t = template(&s, &[dag.to_str().unwrap()]);
    let groups = of_type(&t, "AWS::Athena::WorkGroup");
    assert_eq!(groups.len(), 1);
    let props = &groups[0].1["Properties"];
    assert_eq!(props["Name"], "flux-wg");
    assert_eq!(
        props["WorkGroupConfiguration"]["ResultConfiguration"]["OutputLocation"],
        "s3://bkt-wg/analytics/queries/"
    );
    assert_eq!(of_type(&t, "AWS::Glue::Database").len(), 1);
    // Neither EMR nor a report: no parameters for them.
    for p in ["EmrServiceRole", "ReportImageUri", "GlueCrawlerRoleArn"] {
        assert!(t["Parameters"].get(p).is_none(), "{p}");
    }
    assert!(of_type(&t, "AWS::Lambda::Function").is_empty());
}

#[test]
fn cfn_excludes_sfn_and_iam_and_fails_as_they_do() {
    let s = Scratch::new();
    for other in ["--sfn", "--iam"] {
        let out = run_in_root(&s, &["export", "--cfn", other, "dags/rental.toml"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--cfn and {other} are exclusive: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    let out = run_in_root(&s, &["export", "--cfn", "dags/example.toml"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("task `extract` (shell)"), "{err}");
}

/// cfn-lint's command-line entry point, run by the python3 on the PATH
/// (the package has no `__main__`).
fn cfn_lint() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import sys; from cfnlint.runner import main; sys.exit(main())",
    ]);
    cmd
}

#[test]
fn cfn_lint_reports_no_error_on_the_template_of_every_exportable_dag() {
    let available = cfn_lint()
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        let message = "SKIPPED: cfn-lint is not installed; install with: python3 -m pip install cfn-lint==1.58.0";
        if std::env::var_os("FLUX_REQUIRE_CHECKERS").is_some_and(|v| v == "1") {
            panic!("{message} (FLUX_REQUIRE_CHECKERS=1)");
        }
        eprintln!("\n!!!!!!!! {message}\n");
        return;
    }
    let s = Scratch::new();
    let workgroup_dag = s.write("wg.toml", WORKGROUP_DAG);
    let arn_dag = s.write("arn.toml", ARN_DAG);
    let mut dags: Vec<&str> = EXPORTABLE.to_vec();
    dags.push(workgroup_dag.to_str().unwrap());
    dags.push(arn_dag.to_str().unwrap());
    for (i, dag) in dags.iter().enumerate() {
        let file = s.write(&format!("template{i}.json"), &exported(&s, "--cfn", &[dag]));
        // Errors exit with bit 2 set, warnings with 4, informational
        // findings with 8: none is allowed.
        let out = cfn_lint()
            .args(["--format", "parseable", "--"])
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .expect("run cfn-lint");
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 && said.trim().is_empty(),
            "cfn-lint reports findings (exit {code}) on the template of {dag}:\n{said}"
        );
    }
    // And it does find what it should: the checker is really looking.
    let bad = s.write(
        "bad.json",
        r#"{"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"C": {"Type": "AWS::Glue::Crawler", "Properties": {"Role": "r", "Targets": {"S3Targets": [{"Path": 3}]}, "Bogus": 1}}}}"#,
    );
    let out = cfn_lint()
        .args(["--format", "parseable", "--"])
        .arg(&bad)
        .stdin(Stdio::null())
        .output()
        .expect("run cfn-lint");
    assert!(
        out.status.code().is_some_and(|c| c & 2 != 0),
        "cfn-lint should flag an unknown property: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

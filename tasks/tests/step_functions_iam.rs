//! The IAM policies of whole DAGs, checked against what the DAG text
//! says: every task's grants as the exporter puts them together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use engine::Dag;
use exporters::sfn::{Document, ExportError};
use serde_json::Value;

fn export(dag: &Dag) -> Result<String, ExportError> {
    exporters::sfn::export(dag, &tasks::registry(), Document::Iam)
}

fn load_file(relative: &str, overrides: &[(&str, &str)]) -> Dag {
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    engine::dag::load(&path, &overrides, &tasks::registry())
        .unwrap_or_else(|e| panic!("{relative} is invalid: {e}"))
}

fn load_text(text: &str) -> Dag {
    engine::dag::load_str(
        Path::new("/nowhere/dags/test.toml"),
        text,
        &[],
        &tasks::registry(),
    )
    .unwrap_or_else(|e| panic!("the test DAG is invalid: {e}"))
}

fn policy(dag: &Dag) -> Value {
    serde_json::from_str(&export(dag).unwrap_or_else(|e| panic!("{e}"))).unwrap()
}

/// Action → every resource some statement grants it on.
fn grants(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for st in doc["RolePolicy"]["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow");
        for action in st["Action"].as_array().unwrap() {
            let entry = out.entry(action.as_str().unwrap().to_string()).or_default();
            for r in st["Resource"].as_array().unwrap() {
                entry.insert(r.as_str().unwrap().to_string());
            }
        }
    }
    out
}

fn assert_grant(g: &BTreeMap<String, BTreeSet<String>>, action: &str, resource: &str) {
    assert!(
        g.get(action).is_some_and(|r| r.contains(resource)),
        "{action} is not granted on {resource}; grants: {g:#?}"
    );
}

/// The statement granting `action` on `resource`.
fn statement_for<'a>(doc: &'a Value, action: &str, resource: &str) -> &'a Value {
    doc["RolePolicy"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| {
            st["Action"].as_array().unwrap().iter().any(|a| a == action)
                && st["Resource"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == resource)
        })
        .unwrap_or_else(|| panic!("no statement grants {action} on {resource}"))
}

/// A field of a task, `${params.X}` replaced by the DAG's values.
fn field(dag: &Dag, task: &engine::dag::TaskDef, key: &str) -> Vec<String> {
    let subst = |s: &str| {
        let mut s = s.to_string();
        for (k, v) in &dag.params {
            s = s.replace(&format!("${{params.{k}}}"), v);
        }
        s
    };
    match task.fields.get(key) {
        Some(toml::Value::String(s)) => vec![subst(s)],
        Some(toml::Value::Array(a)) => a.iter().map(|v| subst(v.as_str().unwrap())).collect(),
        _ => Vec::new(),
    }
}

fn aws(dag: &Dag, key: &str) -> String {
    dag.aws[key].as_str().unwrap().to_string()
}

#[test]
fn the_rental_policy_grants_what_each_task_needs() {
    let dag = load_file("dags/rental.toml", &[]);
    let doc = policy(&dag);
    let g = grants(&doc);
    let region = aws(&dag, "region");
    // rental.toml names no account_id.
    let arn = |service: &str, rest: &str| format!("arn:aws:{service}:{region}:*:{rest}");
    let mut crawlers = 0;
    for task in &dag.tasks {
        match task.kind.as_str() {
            "glue_crawler" => {
                crawlers += 1;
                let crawler = arn("glue", &format!("crawler/{}-{}", dag.name, task.id));
                assert_grant(&g, "glue:StartCrawler", &crawler);
                assert_grant(&g, "glue:GetCrawler", &crawler);
            }
            "athena_query" => {
                let db = &field(&dag, task, "database")[0];
                for action in [
                    "glue:GetDatabase",
                    "glue:GetTable",
                    "glue:GetTables",
                    "glue:GetPartition",
                    "glue:GetPartitions",
                ] {
                    assert_grant(&g, action, &arn("glue", "catalog"));
                    assert_grant(&g, action, &arn("glue", &format!("database/{db}")));
                    assert_grant(&g, action, &arn("glue", &format!("table/{db}/*")));
                }
                let output = &field(&dag, task, "output")[0];
                let objects = format!("arn:aws:s3:::{}*", output.strip_prefix("s3://").unwrap());
                for action in ["s3:PutObject", "s3:GetObject"] {
                    assert_grant(&g, action, &objects);
                }
                if task.fields.contains_key("expect") {
                    let checks = format!(
                        "arn:aws:s3:::{}_expect/*",
                        output.strip_prefix("s3://").unwrap()
                    );
                    assert_grant(&g, "s3:PutObject", &checks);
                }
            }
            "s3_ingest" => {
                let dest = &field(&dag, task, "destination")[0];
                for source in field(&dag, task, "source") {
                    if source.ends_with(".csv") {
                        let name = source.rsplit('/').next().unwrap();
                        let object =
                            format!("arn:aws:s3:::{}{name}", dest.strip_prefix("s3://").unwrap());
                        assert_grant(&g, "s3:GetObject", &object);
                    }
                }
            }
            "emr_spark" => {
                for uri in field(&dag, task, "reads")
                    .iter()
                    .chain(&field(&dag, task, "writes"))
                {
                    let objects = format!("arn:aws:s3:::{}*", uri.strip_prefix("s3://").unwrap());
                    assert_grant(&g, "s3:GetObject", &objects);
                }
            }
            _ => {}
        }
    }
    assert_eq!(crawlers, 1);
    let workgroup = arn(
        "athena",
        &format!("workgroup/{}", aws(&dag, "athena_workgroup")),
    );
    for action in [
        "athena:StartQueryExecution",
        "athena:GetQueryExecution",
        "athena:StopQueryExecution",
        "athena:GetQueryResults",
    ] {
        assert_grant(&g, action, &workgroup);
    }
    assert_grant(
        &g,
        "lambda:InvokeFunction",
        &arn(
            "lambda",
            &format!("function:{}", aws(&dag, "report_function")),
        ),
    );
    let cluster = arn("elasticmapreduce", "cluster/*");
    for action in [
        "DescribeCluster",
        "TerminateJobFlows",
        "AddJobFlowSteps",
        "DescribeStep",
        "CancelSteps",
    ] {
        assert_grant(&g, &format!("elasticmapreduce:{action}"), &cluster);
    }
    assert_eq!(
        statement_for(&doc, "elasticmapreduce:AddJobFlowSteps", &cluster)["Condition"]["StringEquals"]
            ["aws:ResourceTag/flux-engine:dag"],
        dag.name.as_str()
    );
    for (role, service) in [
        ("service_role", "elasticmapreduce.amazonaws.com"),
        ("job_flow_role", "ec2.amazonaws.com"),
    ] {
        let role = format!("arn:aws:iam::*:role/{}", aws(&dag, role));
        assert_grant(&g, "iam:PassRole", &role);
        assert_eq!(
            statement_for(&doc, "iam:PassRole", &role)["Condition"]["StringEquals"]["iam:PassedToService"],
            service
        );
    }
    assert_eq!(
        g["iam:PassRole"].len(),
        2,
        "PassRole only for the EMR roles"
    );
    for rule in [
        "StepFunctionsGetEventForEMRRunJobFlowRule",
        "StepFunctionsGetEventForEMRAddJobFlowStepsRule",
    ] {
        for action in ["events:PutTargets", "events:PutRule", "events:DescribeRule"] {
            assert_grant(&g, action, &arn("events", &format!("rule/{rule}")));
        }
    }
    // `*` only for RunJobFlow, which has no resource type.
    for (action, resources) in &g {
        if resources.contains("*") {
            assert_eq!(action, "elasticmapreduce:RunJobFlow");
            assert_eq!(resources.len(), 1);
        }
    }
    assert_eq!(
        statement_for(&doc, "elasticmapreduce:RunJobFlow", "*")["Condition"]["StringEquals"]["aws:RequestTag/flux-engine:dag"],
        dag.name.as_str()
    );
    assert!(
        doc["TrustPolicy"]["Statement"][0]
            .get("Condition")
            .is_none()
    );
    assert_eq!(
        doc["TrustPolicy"]["Statement"][0]["Principal"]["Service"],
        "states.amazonaws.com"
    );
}

#[test]
fn serverless_runs_the_application_and_passes_only_the_execution_role() {
    let dag = load_file("dags/sfn_example.toml", &[]);
    let doc = policy(&dag);
    let g = grants(&doc);
    let region = aws(&dag, "region");
    let app = format!(
        "arn:aws:emr-serverless:{region}:*:/applications/{}",
        aws(&dag, "application_id")
    );
    assert_grant(&g, "emr-serverless:StartJobRun", &app);
    assert_grant(&g, "emr-serverless:GetJobRun", &format!("{app}/jobruns/*"));
    assert_grant(
        &g,
        "emr-serverless:CancelJobRun",
        &format!("{app}/jobruns/*"),
    );
    let role = aws(&dag, "execution_role_arn");
    assert_eq!(g["iam:PassRole"], BTreeSet::from([role.clone()]));
    assert_eq!(
        statement_for(&doc, "iam:PassRole", &role)["Condition"]["StringEquals"]["iam:PassedToService"],
        "emr-serverless.amazonaws.com"
    );
    assert_grant(
        &g,
        "events:PutRule",
        &format!("arn:aws:events:{region}:*:rule/StepFunctionsGetEventsForEMRServerlessJobRule"),
    );
    assert!(
        !g.keys().any(|a| a.starts_with("elasticmapreduce:")),
        "{g:#?}"
    );
    assert!(
        !g.keys()
            .any(|a| a.starts_with("lambda:") || a.starts_with("glue:StartCrawler")),
        "{g:#?}"
    );
}

#[test]
fn a_dag_without_emr_has_no_emr_passrole_or_rule_statement() {
    let dag = load_text(
        r#"
[dag]
name = "q"
[aws]
region = "eu-central-1"
account_id = "111122223333"
athena_workgroup = "wg"
report_function = "arn:aws:lambda:eu-central-1:111122223333:function:rep"
[tasks.count]
type = "athena_query"
database = "db"
output = "s3://bkt-q/out"
sql = "SELECT 1"
[tasks.report]
type = "report"
depends_on = ["count"]
title = "t"
output = "s3://bkt-q/reports/report.html"
sections = [{ title = "n", from = "count", chart = "table" }]
"#,
    );
    let doc = policy(&dag);
    let g = grants(&doc);
    for prefix in [
        "elasticmapreduce:",
        "emr-serverless:",
        "iam:",
        "events:",
        "glue:StartCrawler",
    ] {
        assert!(!g.keys().any(|a| a.starts_with(prefix)), "{prefix}: {g:#?}");
    }
    // The account is used.
    assert_grant(
        &g,
        "glue:GetTable",
        "arn:aws:glue:eu-central-1:111122223333:table/db/*",
    );
    assert_grant(
        &g,
        "athena:StartQueryExecution",
        "arn:aws:athena:eu-central-1:111122223333:workgroup/wg",
    );
    assert!(
        !g.contains_key("athena:GetQueryResults"),
        "no expect, no getQueryResults"
    );
    // An output without a trailing slash is the folder of that name.
    assert_grant(&g, "s3:PutObject", "arn:aws:s3:::bkt-q/out/*");
    assert_grant(
        &g,
        "lambda:InvokeFunction",
        "arn:aws:lambda:eu-central-1:111122223333:function:rep",
    );
    assert!(g.values().flatten().all(|r| r != "*"), "{g:#?}");
    assert_eq!(
        doc["TrustPolicy"]["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"],
        "111122223333"
    );
}

#[test]
fn account_ids_are_checked_and_the_output_is_deterministic() {
    let dag = load_file("dags/rental.toml", &[("bucket", "other")]);
    assert_eq!(export(&dag).unwrap(), export(&dag).unwrap());
    assert!(
        export(&dag)
            .unwrap()
            .contains("arn:aws:s3:::other/raw/users.csv")
    );
    let bad =
        load_text("[dag]\nname = \"x\"\n[aws]\naccount_id = \"12\"\n[tasks.a]\ntype = \"noop\"\n");
    let err = export(&bad).unwrap_err().to_string();
    assert!(
        err.contains("[aws] account_id must be the 12 digits"),
        "{err}"
    );
}

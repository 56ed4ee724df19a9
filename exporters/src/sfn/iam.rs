//! `flux-engine export --iam`: the IAM policy of the state machine's
//! execution role, and its trust policy, as one JSON document:
//!
//! ```json
//! {"RolePolicy": {"Version": "2012-10-17", "Statement": [...]},
//!  "TrustPolicy": {"Version": "2012-10-17", "Statement": [...]}}
//! ```
//!
//! The policy is read off the exported state machine itself: every `Task`
//! state's `Resource` (the integration) and `Parameters` (crawler names,
//! workgroup, database, bucket and key, function, EMR roles) decide what
//! is granted, so the policy follows the export. Only what the role
//! itself calls is granted: the Spark jobs run as the EMR roles (cluster)
//! or the job runs' execution role (serverless), whose own policies are
//! the deployment's business.
//!
//! | integration | actions | resources |
//! |---|---|---|
//! | `elasticmapreduce:createCluster.sync` | `RunJobFlow` | `*`, with `aws:RequestTag/flux-engine:dag` = the DAG's name (RunJobFlow has no resource type) |
//! | it, `addStep.sync`, `terminateCluster` | `DescribeCluster`, `TerminateJobFlows`, `AddJobFlowSteps`, `DescribeStep`, `CancelSteps` | `cluster/*` with `aws:ResourceTag/flux-engine:dag` = the DAG's name (the cluster id exists only at run time) |
//! | the same | `iam:PassRole` | `service_role` (to `elasticmapreduce.amazonaws.com`), and the role of `job_flow_role` (to `ec2.amazonaws.com`; the instance profile is assumed to hold the role of the same name, as EMR's defaults do) |
//! | `emr-serverless:startJobRun.sync` | `StartJobRun`; `GetJobRun`, `CancelJobRun`; `iam:PassRole` | the application; its `jobruns/*`; `execution_role_arn` (to `emr-serverless.amazonaws.com`) |
//! | `.sync` on EMR and EMR Serverless | `events:PutTargets`, `PutRule`, `DescribeRule` | the managed rules `StepFunctionsGetEventForEMRRunJobFlowRule`, `StepFunctionsGetEventForEMRAddJobFlowStepsRule`, `StepFunctionsGetEventsForEMRServerlessJobRule` |
//! | `aws-sdk:glue:startCrawler`, `getCrawler` | `glue:StartCrawler`, `glue:GetCrawler` | each crawler |
//! | `athena:startQueryExecution.sync`, `getQueryResults` | `StartQueryExecution`, `GetQueryExecution`, `StopQueryExecution`, `GetQueryResults` | the workgroup |
//! | Athena, catalog | `glue:GetDatabase`, `GetTable`, `GetTables`, `GetPartition`, `GetPartitions` | the catalog, each database queried (`default` without one) and its tables |
//! | Athena, results | `s3:PutObject`, `AbortMultipartUpload`, `GetObject`; `GetBucketLocation`; `ListBucket` with `s3:prefix` | each query's output prefix (`_expect` ones included) |
//! | Athena, data | `s3:GetObject`; `ListBucket` with `s3:prefix` | what the queried tables may hold: the crawlers' `targets` and the Spark tasks' `reads` and `writes` |
//! | `aws-sdk:s3:headObject` | `s3:GetObject` (what HeadObject needs) | each object, by key |
//! | `lambda:invoke` | `lambda:InvokeFunction` | the function |
//!
//! With a `report` task the document also holds the report Lambda
//! function's role (`ReportFunctionRolePolicy`, `ReportFunctionTrustPolicy`
//! for `lambda.amazonaws.com`), read off the invocation's payload: logs to
//! its own log group `/aws/lambda/NAME`; `s3:ListBucket` with `s3:prefix`
//! and `s3:GetObject` on each query results prefix it reads; `s3:GetObject`
//! on each `output_json`; `s3:PutObject` on the report's `output` object.
//!
//! `Resource: "*"` appears once, for `elasticmapreduce:RunJobFlow`, which
//! supports no resource-level permission (it is narrowed by the request
//! tag instead). The region comes from `[aws] region` and the account from
//! `[aws] account_id`; either missing is `*` in the ARNs (and no
//! `aws:SourceAccount` condition in the trust policy). Queries that name
//! tables of another database, or tables whose data lie outside the
//! prefixes above, need a statement of their own.

use std::collections::{BTreeMap, BTreeSet};

use engine::Dag;

use super::ExportError;
use super::json::{Json, Obj};
use super::settings::Settings;
use super::states::{TaskCtx, split_s3};

/// The EventBridge rules Step Functions manages for the `.sync`
/// integrations the export uses.
pub const RULE_RUN_JOB_FLOW: &str = "StepFunctionsGetEventForEMRRunJobFlowRule";
pub const RULE_ADD_STEPS: &str = "StepFunctionsGetEventForEMRAddJobFlowStepsRule";
pub const RULE_SERVERLESS_JOB: &str = "StepFunctionsGetEventsForEMRServerlessJobRule";

/// The tag `createCluster` puts on the cluster, which the policy keys on.
const DAG_TAG: &str = "flux-engine:dag";

const CREATE_CLUSTER: &str = "arn:aws:states:::elasticmapreduce:createCluster.sync";
const ADD_STEP: &str = "arn:aws:states:::elasticmapreduce:addStep.sync";
const TERMINATE_CLUSTER: &str = "arn:aws:states:::elasticmapreduce:terminateCluster";
const START_JOB_RUN: &str = "arn:aws:states:::emr-serverless:startJobRun.sync";
const START_CRAWLER: &str = "arn:aws:states:::aws-sdk:glue:startCrawler";
const GET_CRAWLER: &str = "arn:aws:states:::aws-sdk:glue:getCrawler";
const START_QUERY: &str = "arn:aws:states:::athena:startQueryExecution.sync";
const GET_QUERY_RESULTS: &str = "arn:aws:states:::athena:getQueryResults";
const HEAD_OBJECT: &str = "arn:aws:states:::aws-sdk:s3:headObject";
const LAMBDA_INVOKE: &str = "arn:aws:states:::lambda:invoke";

/// The document as pretty-printed JSON, ending with a newline; the same
/// DAG and parameters give the same bytes.
pub fn export(dag: &Dag) -> Result<String, ExportError> {
    let doc = policies(dag)?;
    let mut text = serde_json::to_string_pretty(&doc)
        .map_err(|e| ExportError(vec![format!("cannot write the JSON: {e}")]))?;
    text.push('\n');
    Ok(text)
}

/// `{"RolePolicy": ..., "TrustPolicy": ...}` for the DAG's state machine,
/// and `"ReportFunctionRolePolicy"`, `"ReportFunctionTrustPolicy"` for the
/// report Lambda function's role when the DAG has a `report` task.
pub fn policies(dag: &Dag) -> Result<Json, ExportError> {
    let machine = super::state_machine_with_values(dag)?;
    let settings = Settings::from_dag(dag).map_err(ExportError)?;
    let mut tasks = Vec::new();
    task_states(&machine, &mut tasks);
    let data = data_prefixes(dag, &settings).map_err(|e| ExportError(vec![e]))?;
    let ctx = Arns::new(&settings);
    let mut doc = Obj::new()
        .with("RolePolicy", role_policy(&dag.name, &ctx, &tasks, &data))
        .with("TrustPolicy", trust_policy(&ctx));
    if let Some(function) = report_function(&ctx, &tasks) {
        doc.set("ReportFunctionRolePolicy", function.role_policy);
        doc.set("ReportFunctionTrustPolicy", function.trust_policy);
    }
    Ok(doc.into())
}

/// The report Lambda function the state machine invokes, and its role.
pub(crate) struct ReportFunction {
    /// The function's name (`[aws] report_function`, or the name in its
    /// ARN).
    pub name: String,
    pub role_policy: Json,
    pub trust_policy: Json,
}

/// The report function's name from `[aws] report_function`: a name, or
/// the function name inside an ARN (`arn:…:function:NAME[:QUALIFIER]`).
pub(crate) fn function_name(function: &str) -> &str {
    match function.split_once(":function:") {
        Some((_, rest)) if function.starts_with("arn:") => rest.split(':').next().unwrap_or(rest),
        _ => function,
    }
}

/// The role of the report function, read off the `lambda:invoke` states'
/// payloads (`exporters/src/sfn/report.rs` writes them): its CloudWatch
/// Logs group; `s3:ListBucket` (with `s3:prefix`) and `s3:GetObject` on
/// the query results prefixes it picks the `.csv` from; `s3:GetObject` on
/// the `output_json` counts objects; `s3:PutObject` on the report objects.
/// `None` without a `report` task.
fn report_function(arns: &Arns, tasks: &[(String, Obj)]) -> Option<ReportFunction> {
    let invokes: Vec<&Obj> = tasks
        .iter()
        .filter(|(r, _)| r == LAMBDA_INVOKE)
        .map(|(_, p)| p)
        .collect();
    let name = function_name(invokes.iter().find_map(|p| text(p, "FunctionName"))?).to_string();
    let mut reads: BTreeSet<String> = BTreeSet::new();
    let mut listed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut writes: BTreeSet<String> = BTreeSet::new();
    for p in &invokes {
        let Some(Json::Object(payload)) = p.get("Payload") else {
            continue;
        };
        if let Some(Json::Object(fields)) = payload.get("fields")
            && let Some((bucket, key)) = text(fields, "output").and_then(split_s3)
        {
            writes.insert(arns.s3(&format!("{bucket}/{key}")));
        }
        let Some(Json::Object(inputs)) = payload.get("inputs") else {
            continue;
        };
        for (_, input) in &inputs.0 {
            let Json::Object(input) = input else { continue };
            let results = text(input, "results_prefix.$")
                .and_then(per_execution_prefix)
                .or_else(|| text(input, "results_prefix").map(str::to_string));
            if let Some((bucket, objects, prefixes)) = results.as_deref().and_then(s3_places) {
                reads.extend(objects.iter().map(|o| arns.s3(o)));
                listed.entry(bucket).or_default().extend(prefixes);
            }
            if let Some((bucket, key)) = text(input, "output_json").and_then(split_s3) {
                reads.insert(arns.s3(&format!("{bucket}/{key}")));
            }
        }
    }
    let mut statements: Vec<Json> = vec![
        statement(
            "ReportFunctionLogs",
            &[
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
            ],
            [arns.arn("logs", &format!("log-group:/aws/lambda/{name}:*"))],
        )
        .into(),
    ];
    if !reads.is_empty() {
        statements.push(statement("ReportReadInputs", &["s3:GetObject"], reads).into());
    }
    for (i, (bucket, prefixes)) in listed.iter().enumerate() {
        let prefixes: Vec<String> = prefixes.iter().cloned().collect();
        statements.push(
            statement(
                &format!("ReportListResults{}", i + 1),
                &["s3:ListBucket"],
                [arns.s3(bucket)],
            )
            .with("Condition", condition("StringLike", "s3:prefix", prefixes))
            .into(),
        );
    }
    if !writes.is_empty() {
        statements.push(statement("ReportWriteReport", &["s3:PutObject"], writes).into());
    }
    let trust = Obj::new()
        .with("Effect", "Allow")
        .with(
            "Principal",
            Obj::new().with("Service", "lambda.amazonaws.com"),
        )
        .with("Action", "sts:AssumeRole");
    Some(ReportFunction {
        name,
        role_policy: Obj::new()
            .with("Version", "2012-10-17")
            .with("Statement", statements)
            .into(),
        trust_policy: Obj::new()
            .with("Version", "2012-10-17")
            .with("Statement", vec![Json::from(trust)])
            .into(),
    })
}

/// The report function of the DAG's state machine, if it has one: for the
/// CloudFormation template, which creates it.
pub(crate) fn report_function_of(dag: &Dag) -> Result<Option<ReportFunction>, ExportError> {
    let machine = super::state_machine_with_values(dag)?;
    let settings = Settings::from_dag(dag).map_err(ExportError)?;
    let mut tasks = Vec::new();
    task_states(&machine, &mut tasks);
    Ok(report_function(&Arns::new(&settings), &tasks))
}

/// Partition, region and account for ARNs (`*` where unknown).
struct Arns {
    partition: &'static str,
    region: String,
    account: String,
    known_account: Option<String>,
}

impl Arns {
    fn new(settings: &Settings) -> Self {
        let region = settings.region.clone().unwrap_or_else(|| "*".into());
        let partition = if region.starts_with("cn-") {
            "aws-cn"
        } else if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        };
        Arns {
            partition,
            account: settings.account_id.clone().unwrap_or_else(|| "*".into()),
            known_account: settings.account_id.clone(),
            region,
        }
    }

    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    fn role(&self, name: &str) -> String {
        if name.starts_with("arn:") {
            return name.to_string();
        }
        format!("arn:{}:iam::{}:role/{name}", self.partition, self.account)
    }

    fn s3(&self, bucket_and_key: &str) -> String {
        format!("arn:{}:s3:::{bucket_and_key}", self.partition)
    }
}

/// Every `Task` state's `Resource` and `Parameters`, branches included.
fn task_states(json: &Json, out: &mut Vec<(String, Obj)>) {
    match json {
        Json::Object(obj) => {
            if let (Some(Json::Str(t)), Some(Json::Str(resource))) =
                (obj.get("Type"), obj.get("Resource"))
                && t == "Task"
            {
                let params = match obj.get("Parameters") {
                    Some(Json::Object(p)) => p.clone(),
                    _ => Obj::new(),
                };
                out.push((resource.clone(), params));
            }
            for (_, v) in &obj.0 {
                task_states(v, out);
            }
        }
        Json::Array(items) => items.iter().for_each(|v| task_states(v, out)),
        _ => {}
    }
}

fn text<'a>(obj: &'a Obj, key: &str) -> Option<&'a str> {
    match obj.get(key) {
        Some(Json::Str(s)) => Some(s),
        _ => None,
    }
}

/// The prefix of a per-execution location, `States.Format('PREFIX{}/',
/// $$.Execution.Name)` as `states::per_execution` writes it, unescaped.
pub(crate) fn per_execution_prefix(intrinsic: &str) -> Option<String> {
    let inner = intrinsic
        .strip_prefix("States.Format('")?
        .strip_suffix("{}/', $$.Execution.Name)")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Where the tables Athena queries may have their data: the crawlers'
/// targets and the Spark tasks' `reads` and `writes` (substituted).
fn data_prefixes(dag: &Dag, settings: &Settings) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for task in &dag.tasks {
        let keys: &[&str] = match task.kind.as_str() {
            "glue_crawler" => &["targets"],
            "emr_spark" => &["reads", "writes"],
            _ => continue,
        };
        let ctx = TaskCtx::new(dag, task, settings)?;
        for key in keys {
            for uri in ctx.strings(key)? {
                if uri.starts_with("s3://") {
                    out.insert(uri);
                }
            }
        }
    }
    Ok(out)
}

/// `s3://b/p/` as the object pattern `b/p/*`; `s3://b/p/x` (no slash at
/// the end) as `b/p/x` and `b/p/x/*`. With the `s3:prefix` patterns of
/// the same places, by bucket.
fn s3_places(uri: &str) -> Option<(String, Vec<String>, Vec<String>)> {
    let (bucket, key) = split_s3(uri)?;
    if key.is_empty() || key.ends_with('/') {
        Some((
            bucket.clone(),
            vec![format!("{bucket}/{key}*")],
            vec![format!("{key}*")],
        ))
    } else {
        Some((
            bucket.clone(),
            vec![format!("{bucket}/{key}"), format!("{bucket}/{key}/*")],
            vec![key.clone(), format!("{key}/*")],
        ))
    }
}

fn statement(sid: &str, actions: &[&str], resources: impl IntoIterator<Item = String>) -> Obj {
    let resources: BTreeSet<String> = resources.into_iter().collect();
    let resources: Vec<String> = resources.into_iter().collect();
    Obj::new()
        .with("Sid", sid)
        .with("Effect", "Allow")
        .with(
            "Action",
            actions.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        )
        .with("Resource", resources)
}

fn condition(op: &str, key: &str, value: impl Into<Json>) -> Obj {
    Obj::new().with(op, Obj::new().with(key, value))
}

fn role_policy(
    dag_name: &str,
    arns: &Arns,
    tasks: &[(String, Obj)],
    data: &BTreeSet<String>,
) -> Json {
    let uses = |resource: &str| tasks.iter().any(|(r, _)| r == resource);
    let params_of = |resource: &'static str| {
        tasks
            .iter()
            .filter(move |(r, _)| r == resource)
            .map(|(_, p)| p)
    };
    let mut statements: Vec<Json> = Vec::new();
    let mut rules: BTreeSet<String> = BTreeSet::new();

    // EMR on EC2.
    if uses(CREATE_CLUSTER) {
        statements.push(
            statement(
                "EmrCreateClusterOfThisDag",
                &["elasticmapreduce:RunJobFlow"],
                ["*".to_string()],
            )
            .with(
                "Condition",
                condition(
                    "StringEquals",
                    &format!("aws:RequestTag/{DAG_TAG}"),
                    dag_name,
                ),
            )
            .into(),
        );
        rules.insert(RULE_RUN_JOB_FLOW.into());
    }
    let mut cluster_actions = Vec::new();
    if uses(CREATE_CLUSTER) || uses(TERMINATE_CLUSTER) {
        cluster_actions.extend([
            "elasticmapreduce:DescribeCluster",
            "elasticmapreduce:TerminateJobFlows",
        ]);
    }
    if uses(ADD_STEP) {
        cluster_actions.extend([
            "elasticmapreduce:AddJobFlowSteps",
            "elasticmapreduce:DescribeStep",
            "elasticmapreduce:CancelSteps",
        ]);
        rules.insert(RULE_ADD_STEPS.into());
    }
    if !cluster_actions.is_empty() {
        statements.push(
            statement(
                "EmrClustersOfThisDag",
                &cluster_actions,
                [arns.arn("elasticmapreduce", "cluster/*")],
            )
            .with(
                "Condition",
                condition(
                    "StringEquals",
                    &format!("aws:ResourceTag/{DAG_TAG}"),
                    dag_name,
                ),
            )
            .into(),
        );
    }
    let mut pass: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for p in params_of(CREATE_CLUSTER) {
        if let Some(role) = text(p, "ServiceRole") {
            pass.entry("elasticmapreduce.amazonaws.com")
                .or_default()
                .insert(arns.role(role));
        }
        if let Some(profile) = text(p, "JobFlowRole") {
            // An instance profile's name or ARN: its role of the same name.
            let name = profile.rsplit('/').next().unwrap_or(profile);
            pass.entry("ec2.amazonaws.com")
                .or_default()
                .insert(arns.role(name));
        }
    }

    // EMR Serverless.
    let apps: BTreeSet<&str> = params_of(START_JOB_RUN)
        .filter_map(|p| text(p, "ApplicationId"))
        .collect();
    if !apps.is_empty() {
        statements.push(
            statement(
                "EmrServerlessStartJobRun",
                &["emr-serverless:StartJobRun"],
                apps.iter()
                    .map(|a| arns.arn("emr-serverless", &format!("/applications/{a}"))),
            )
            .into(),
        );
        statements.push(
            statement(
                "EmrServerlessJobRuns",
                &["emr-serverless:GetJobRun", "emr-serverless:CancelJobRun"],
                apps.iter()
                    .map(|a| arns.arn("emr-serverless", &format!("/applications/{a}/jobruns/*"))),
            )
            .into(),
        );
        rules.insert(RULE_SERVERLESS_JOB.into());
        for p in params_of(START_JOB_RUN) {
            if let Some(role) = text(p, "ExecutionRoleArn") {
                pass.entry("emr-serverless.amazonaws.com")
                    .or_default()
                    .insert(arns.role(role));
            }
        }
    }
    for (service, roles) in &pass {
        let sid = match *service {
            "elasticmapreduce.amazonaws.com" => "PassEmrServiceRole",
            "ec2.amazonaws.com" => "PassEmrInstanceProfileRole",
            _ => "PassEmrServerlessExecutionRole",
        };
        statements.push(
            statement(sid, &["iam:PassRole"], roles.iter().cloned())
                .with(
                    "Condition",
                    condition("StringEquals", "iam:PassedToService", *service),
                )
                .into(),
        );
    }
    if !rules.is_empty() {
        statements.push(
            statement(
                "SyncIntegrationEventRules",
                &["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                rules
                    .iter()
                    .map(|r| arns.arn("events", &format!("rule/{r}"))),
            )
            .into(),
        );
    }

    // Glue crawlers.
    let crawlers: BTreeSet<String> = tasks
        .iter()
        .filter(|(r, _)| r == START_CRAWLER || r == GET_CRAWLER)
        .filter_map(|(_, p)| text(p, "Name"))
        .map(|n| arns.arn("glue", &format!("crawler/{n}")))
        .collect();
    if !crawlers.is_empty() {
        statements.push(
            statement(
                "GlueCrawlers",
                &["glue:StartCrawler", "glue:GetCrawler"],
                crawlers,
            )
            .into(),
        );
    }

    // Athena, its catalog and its S3 locations.
    let mut object_reads: BTreeSet<String> = BTreeSet::new();
    let mut listed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let queries: Vec<&Obj> = params_of(START_QUERY).collect();
    if !queries.is_empty() {
        let workgroups: BTreeSet<String> = queries
            .iter()
            .filter_map(|p| text(p, "WorkGroup"))
            .map(|w| arns.arn("athena", &format!("workgroup/{w}")))
            .collect();
        let mut actions = vec![
            "athena:StartQueryExecution",
            "athena:GetQueryExecution",
            "athena:StopQueryExecution",
        ];
        if uses(GET_QUERY_RESULTS) {
            actions.push("athena:GetQueryResults");
        }
        statements.push(statement("AthenaQueries", &actions, workgroups).into());
        let databases: BTreeSet<&str> = queries
            .iter()
            .map(|p| match p.get("QueryExecutionContext") {
                Some(Json::Object(c)) => text(c, "Database").unwrap_or("default"),
                _ => "default",
            })
            .collect();
        let mut catalog = vec![arns.arn("glue", "catalog")];
        for db in &databases {
            catalog.push(arns.arn("glue", &format!("database/{db}")));
            catalog.push(arns.arn("glue", &format!("table/{db}/*")));
        }
        statements.push(
            statement(
                "GlueCatalogForAthena",
                &[
                    "glue:GetDatabase",
                    "glue:GetTable",
                    "glue:GetTables",
                    "glue:GetPartition",
                    "glue:GetPartitions",
                ],
                catalog,
            )
            .into(),
        );
        let mut results: BTreeSet<String> = BTreeSet::new();
        let mut result_buckets: BTreeSet<String> = BTreeSet::new();
        for p in &queries {
            let Some(Json::Object(rc)) = p.get("ResultConfiguration") else {
                continue;
            };
            let prefix = text(rc, "OutputLocation.$")
                .and_then(per_execution_prefix)
                .or_else(|| text(rc, "OutputLocation").map(str::to_string));
            if let Some((bucket, objects, prefixes)) = prefix.as_deref().and_then(s3_places) {
                results.extend(objects.iter().map(|o| arns.s3(o)));
                object_reads.extend(objects.iter().map(|o| arns.s3(o)));
                listed.entry(bucket.clone()).or_default().extend(prefixes);
                result_buckets.insert(arns.s3(&bucket));
            }
        }
        if !results.is_empty() {
            statements.push(
                statement(
                    "AthenaQueryResultsWrite",
                    &["s3:PutObject", "s3:AbortMultipartUpload"],
                    results,
                )
                .into(),
            );
            statements.push(
                statement(
                    "AthenaQueryResultsBucketLocation",
                    &["s3:GetBucketLocation"],
                    result_buckets,
                )
                .into(),
            );
        }
        for uri in data {
            if let Some((bucket, objects, prefixes)) = s3_places(uri) {
                object_reads.extend(objects.iter().map(|o| arns.s3(o)));
                listed.entry(bucket).or_default().extend(prefixes);
            }
        }
    }

    // s3_ingest's checks: HeadObject needs s3:GetObject on the object.
    for p in params_of(HEAD_OBJECT) {
        if let (Some(bucket), Some(key)) = (text(p, "Bucket"), text(p, "Key")) {
            object_reads.insert(arns.s3(&format!("{bucket}/{key}")));
        }
    }
    if !object_reads.is_empty() {
        statements.push(statement("S3ReadObjects", &["s3:GetObject"], object_reads).into());
    }
    for (i, (bucket, prefixes)) in listed.iter().enumerate() {
        let prefixes: Vec<String> = prefixes.iter().cloned().collect();
        statements.push(
            statement(
                &format!("S3ListBucket{}", i + 1),
                &["s3:ListBucket"],
                [arns.s3(bucket)],
            )
            .with("Condition", condition("StringLike", "s3:prefix", prefixes))
            .into(),
        );
    }

    // The report's Lambda function.
    let functions: BTreeSet<String> = params_of(LAMBDA_INVOKE)
        .filter_map(|p| text(p, "FunctionName"))
        .map(|f| {
            if f.starts_with("arn:") {
                f.to_string()
            } else {
                arns.arn("lambda", &format!("function:{f}"))
            }
        })
        .collect();
    if !functions.is_empty() {
        statements.push(
            statement(
                "InvokeReportFunction",
                &["lambda:InvokeFunction"],
                functions,
            )
            .into(),
        );
    }

    Obj::new()
        .with("Version", "2012-10-17")
        .with("Statement", statements)
        .into()
}

fn trust_policy(arns: &Arns) -> Json {
    trust_policy_for(arns.known_account.as_deref().map(Json::from))
}

/// The state machine role's trust policy: Step Functions may assume it,
/// only on behalf of `source_account` when one is given (a literal id
/// here, the stack's account in the CloudFormation template).
pub(crate) fn trust_policy_for(source_account: Option<Json>) -> Json {
    let statement = Obj::new()
        .with("Effect", "Allow")
        .with(
            "Principal",
            Obj::new().with("Service", "states.amazonaws.com"),
        )
        .with("Action", "sts:AssumeRole")
        .with_opt(
            "Condition",
            source_account.map(|a| condition("StringEquals", "aws:SourceAccount", a)),
        );
    Obj::new()
        .with("Version", "2012-10-17")
        .with("Statement", vec![Json::from(statement)])
        .into()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use serde_json::Value;

    use super::*;
    use crate::sfn::states::per_execution;

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
                    let objects =
                        format!("arn:aws:s3:::{}*", output.strip_prefix("s3://").unwrap());
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
                            let object = format!(
                                "arn:aws:s3:::{}{name}",
                                dest.strip_prefix("s3://").unwrap()
                            );
                            assert_grant(&g, "s3:GetObject", &object);
                        }
                    }
                }
                "emr_spark" => {
                    for uri in field(&dag, task, "reads")
                        .iter()
                        .chain(&field(&dag, task, "writes"))
                    {
                        let objects =
                            format!("arn:aws:s3:::{}*", uri.strip_prefix("s3://").unwrap());
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
            &format!(
                "arn:aws:events:{region}:*:rule/StepFunctionsGetEventsForEMRServerlessJobRule"
            ),
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
        let bad = load_text(
            "[dag]\nname = \"x\"\n[aws]\naccount_id = \"12\"\n[tasks.a]\ntype = \"noop\"\n",
        );
        let err = export(&bad).unwrap_err().to_string();
        assert!(
            err.contains("[aws] account_id must be the 12 digits"),
            "{err}"
        );
    }

    #[test]
    fn per_execution_prefixes_read_back() {
        for prefix in ["s3://b/q/x/", "s3://b/it's{x}\\/"] {
            assert_eq!(
                per_execution_prefix(&per_execution(prefix)).as_deref(),
                Some(prefix)
            );
        }
        assert_eq!(per_execution_prefix("$.x"), None);
    }

    #[test]
    fn s3_places_are_prefixes_or_objects() {
        assert_eq!(
            s3_places("s3://b/p/"),
            Some(("b".into(), vec!["b/p/*".into()], vec!["p/*".into()]))
        );
        assert_eq!(
            s3_places("s3://b/p/x.json"),
            Some((
                "b".into(),
                vec!["b/p/x.json".into(), "b/p/x.json/*".into()],
                vec!["p/x.json".into(), "p/x.json/*".into()]
            ))
        );
    }
}

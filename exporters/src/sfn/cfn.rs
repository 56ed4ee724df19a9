//! `flux-engine export --cfn`: a CloudFormation template (JSON) that
//! deploys the exported state machine with what it needs:
//!
//! | resource | logical id | when |
//! |---|---|---|
//! | `AWS::StepFunctions::StateMachine` (`Definition` = the `--sfn` export, as a JSON object) | `StateMachine` | always |
//! | `AWS::IAM::Role` (the `--iam` trust policy and role policy, inline) | `StateMachineRole` | always |
//! | `AWS::Glue::Database` | `GlueDatabase` + name | each database a crawler fills or a query names (`default` exists already) |
//! | `AWS::Glue::Crawler`, named as `startCrawler` names it (`DAG-TASK`) | `GlueCrawler` + task id | each `glue_crawler` task |
//! | `AWS::Athena::WorkGroup` | `AthenaWorkGroup` | `athena_query` tasks, unless the workgroup is `primary` (every account has it) |
//! | `AWS::S3::Bucket` (retained on delete) | `Bucket` | the `CreateBucket` parameter is `true` (default `false`) |
//! | `AWS::Lambda::Function` (`PackageType: Image`, 1024 MB, 300 s), named `[aws] report_function` (the name part of an ARN) | `ReportFunction` | a `report` task |
//! | `AWS::IAM::Role` of that function (the `--iam` document's `ReportFunctionRolePolicy`, trusting `lambda.amazonaws.com`) | `ReportFunctionRole` | a `report` task |
//!
//! The report function runs `flux-engine lambda report` from the image
//! `docker/report-lambda.Dockerfile` builds; the required parameter
//! `ReportImageUri` (no default) is that image in ECR. The state machine
//! invokes the function the template creates (its name, or its ARN when
//! `report_function` is an ARN), and its role may invoke only that one.
//!
//! Account-specific values are template parameters whose defaults are the
//! `[aws]` values: `EmrServiceRole`, `EmrJobFlowRole` (cluster),
//! `EmrServerlessExecutionRoleArn` (serverless),
//! `GlueCrawlerRoleArn` (crawlers; no default: `[aws]` has no such
//! setting). The definition refers to them through
//! `DefinitionSubstitutions`, the policy through `Fn::Sub`; ARNs are built
//! with `AWS::Partition`, `AWS::Region` and `AWS::AccountId`, so the
//! template names no account. The bucket is the one of `scripts_prefix`
//! (else of the first query output or crawler target); like every
//! parameter of the DAG it is fixed at export time.
//!
//! Outputs: `StateMachineArn`, `RoleArn`, and `ReportFunctionArn` with a
//! `report` task.

use std::collections::BTreeSet;

use engine::Dag;

use super::ExportError;
use super::json::{Json, Obj};
use super::settings::{Emr, Settings};
use super::states::{TaskCtx, split_s3};

/// The template as pretty-printed JSON, ending with a newline; the same
/// DAG and parameters give the same bytes.
pub fn export(dag: &Dag) -> Result<String, ExportError> {
    let doc = template(dag)?;
    let mut text = serde_json::to_string_pretty(&doc)
        .map_err(|e| ExportError(vec![format!("cannot write the JSON: {e}")]))?;
    text.push('\n');
    Ok(text)
}

/// A template parameter standing for an `[aws]` value.
struct Param {
    name: &'static str,
    default: Option<String>,
    description: &'static str,
}

/// A `glue_crawler` task: its id, the crawler's name, its database and
/// its S3 targets (substituted).
struct Crawler {
    task: String,
    name: String,
    database: Option<String>,
    targets: Vec<String>,
}

/// The CloudFormation template as a JSON tree.
pub fn template(dag: &Dag) -> Result<Json, ExportError> {
    let mut machine = super::state_machine(dag)?;
    let settings = Settings::from_dag(dag).map_err(ExportError)?;
    let doc = super::iam::policies(dag)?;
    let Json::Object(doc) = doc else {
        unreachable!("policies() is an object")
    };
    let role_policy = doc
        .get("RolePolicy")
        .cloned()
        .expect("policies() has a RolePolicy");

    let mut params: Vec<Param> = Vec::new();
    match &settings.emr {
        Some(Emr::Cluster {
            service_role,
            job_flow_role,
            ..
        }) => {
            params.push(Param {
                name: "EmrServiceRole",
                default: Some(service_role.clone()),
                description: "The EMR service role (name or ARN) the cluster is created with",
            });
            params.push(Param {
                name: "EmrJobFlowRole",
                default: Some(job_flow_role.clone()),
                description: "The instance profile of the EMR cluster's nodes (its role has the same name)",
            });
        }
        Some(Emr::Serverless {
            execution_role_arn, ..
        }) => params.push(Param {
            name: "EmrServerlessExecutionRoleArn",
            default: Some(execution_role_arn.clone()),
            description: "The ARN of the role the EMR Serverless job runs assume",
        }),
        None => {}
    }
    let report = super::iam::report_function_of(dag)?;
    if report.is_some() {
        params.push(Param {
            name: "ReportImageUri",
            default: None,
            description: "The ECR image URI (REPOSITORY_URI:TAG or @sha256:...) of flux-engine's report Lambda image (docker/report-lambda.Dockerfile)",
        });
    }

    // What the DAG's tasks name: databases, crawlers, query outputs, buckets.
    let mut databases: BTreeSet<String> = BTreeSet::new();
    let mut crawlers: Vec<Crawler> = Vec::new();
    let mut outputs: Vec<String> = Vec::new();
    // The state machine was exported, so these fields read.
    let mut read = |task: &engine::dag::TaskDef| -> Result<(), String> {
        let ctx = TaskCtx::new(dag, task, &settings)?;
        let database = ctx.opt_str("database")?;
        if let Some(db) = &database
            && db != "default"
        {
            databases.insert(db.clone());
        }
        if task.kind == "glue_crawler" {
            crawlers.push(Crawler {
                task: task.id.clone(),
                name: super::glue::crawler_name(&dag.name, &task.id),
                database,
                targets: ctx.strings("targets")?,
            });
        } else {
            outputs.push(ctx.str("output")?);
        }
        Ok(())
    };
    let errors: Vec<String> = dag
        .tasks
        .iter()
        .filter(|t| matches!(t.kind.as_str(), "glue_crawler" | "athena_query"))
        .filter_map(|t| read(t).err())
        .collect();
    if !errors.is_empty() {
        return Err(ExportError(errors));
    }
    if !crawlers.is_empty() {
        params.push(Param {
            name: "GlueCrawlerRoleArn",
            default: None,
            description: "The ARN of the role the Glue crawlers run as (reads their S3 targets, writes the Glue catalog)",
        });
    }

    // The definition, with the account-specific values as substitutions.
    check_no_placeholders(&machine)?;
    substitute_definition(&mut machine, &settings);
    let mut substitutions = Obj::new();
    for p in &params {
        if !matches!(p.name, "GlueCrawlerRoleArn" | "ReportImageUri") {
            substitutions.set(p.name, reference(p.name));
        }
    }
    if report.is_some() {
        // The function the template creates: by name as the export names
        // it, or by ARN when `[aws] report_function` is an ARN.
        substitutions.set("ReportFunction", report_function_ref(&settings));
    }

    let mut parameters = Obj::new();
    for p in &params {
        parameters.set(
            p.name,
            Obj::new()
                .with("Type", "String")
                .with("Description", p.description)
                .with_opt("Default", p.default.as_deref()),
        );
    }
    let bucket = bucket_of(&settings, &outputs, &crawlers);
    let mut conditions = Obj::new();
    if bucket.is_some() {
        parameters.set(
            "CreateBucket",
            Obj::new()
                .with("Type", "String")
                .with(
                    "Description",
                    "\"true\" creates the bucket the DAG uses; \"false\" (the default) when it exists already",
                )
                .with("AllowedValues", vec![Json::from("true"), Json::from("false")])
                .with("Default", "false"),
        );
        conditions.set(
            "CreateBucket",
            Obj::new().with(
                "Fn::Equals",
                vec![reference("CreateBucket"), Json::from("true")],
            ),
        );
    }

    let mut resources = Obj::new();
    let role_policy = sub_policy(role_policy, &settings);
    resources.set(
        "StateMachineRole",
        iam_role(
            format!(
                "The execution role of the Step Functions state machine of the flux-engine DAG {}",
                dag.name
            ),
            trust_policy(),
            format!("flux-engine-{}", dag.name),
            role_policy,
        ),
    );
    let mut machine_props = Obj::new()
        .with("StateMachineName", dag.name.as_str())
        .with("StateMachineType", "STANDARD")
        .with("RoleArn", get_att("StateMachineRole", "Arn"))
        .with("Definition", machine);
    if !substitutions.0.is_empty() {
        machine_props.set("DefinitionSubstitutions", substitutions);
    }
    resources.set(
        "StateMachine",
        Obj::new()
            .with("Type", "AWS::StepFunctions::StateMachine")
            .with("Properties", machine_props),
    );

    if let Some(function) = report {
        resources.set(
            "ReportFunctionRole",
            iam_role(
                format!(
                    "The role of the report Lambda function of the flux-engine DAG {}",
                    dag.name
                ),
                function.trust_policy,
                format!("flux-engine-{}-report", dag.name),
                sub_policy(function.role_policy, &settings),
            ),
        );
        resources.set(
            "ReportFunction",
            Obj::new().with("Type", "AWS::Lambda::Function").with(
                "Properties",
                Obj::new()
                    .with("FunctionName", function.name.as_str())
                    .with(
                        "Description",
                        format!(
                            "flux-engine's report code for the DAG {}: query results and counts from S3 to the HTML report",
                            dag.name
                        ),
                    )
                    .with("PackageType", "Image")
                    .with("Code", Obj::new().with("ImageUri", reference("ReportImageUri")))
                    .with("Role", get_att("ReportFunctionRole", "Arn"))
                    .with("Architectures", vec![Json::from("x86_64")])
                    .with("MemorySize", REPORT_MEMORY_MB)
                    .with("Timeout", REPORT_TIMEOUT_SECONDS),
            ),
        );
    }

    let mut ids: BTreeSet<String> = resources.0.iter().map(|(k, _)| k.clone()).collect();
    let mut database_ids: Vec<(String, String)> = Vec::new();
    for db in &databases {
        let id = logical_id("GlueDatabase", db, &mut ids);
        resources.set(
            &id,
            Obj::new().with("Type", "AWS::Glue::Database").with(
                "Properties",
                Obj::new()
                    .with("CatalogId", reference("AWS::AccountId"))
                    .with(
                        "DatabaseInput",
                        Obj::new().with("Name", db.as_str()).with(
                            "Description",
                            format!("Tables of the flux-engine DAG {}", dag.name),
                        ),
                    ),
            ),
        );
        database_ids.push((db.clone(), id));
    }
    for Crawler {
        task: task_id,
        name,
        database,
        targets,
    } in &crawlers
    {
        let id = logical_id("GlueCrawler", task_id, &mut ids);
        let database_name =
            database.as_ref().map(
                |db| match database_ids.iter().find(|(name, _)| name == db) {
                    Some((_, id)) => reference(id),
                    None => Json::from(db.as_str()),
                },
            );
        let targets: Vec<Json> = targets
            .iter()
            .map(|t| Obj::new().with("Path", t.as_str()).into())
            .collect();
        resources.set(
            &id,
            Obj::new().with("Type", "AWS::Glue::Crawler").with(
                "Properties",
                Obj::new()
                    .with("Name", name.as_str())
                    .with(
                        "Description",
                        format!(
                            "The glue_crawler task {task_id} of the flux-engine DAG {}",
                            dag.name
                        ),
                    )
                    .with("Role", reference("GlueCrawlerRoleArn"))
                    .with_opt("DatabaseName", database_name)
                    .with("Targets", Obj::new().with("S3Targets", targets)),
            ),
        );
    }
    if let Some(workgroup) = &settings.athena_workgroup
        && !outputs.is_empty()
        && workgroup != "primary"
    {
        resources.set(
            "AthenaWorkGroup",
            Obj::new().with("Type", "AWS::Athena::WorkGroup").with(
                "Properties",
                Obj::new()
                    .with("Name", workgroup.as_str())
                    .with(
                        "Description",
                        format!("Athena queries of the flux-engine DAG {}", dag.name),
                    )
                    .with("State", "ENABLED")
                    .with(
                        "WorkGroupConfiguration",
                        Obj::new()
                            // Each query sets its own output location.
                            .with("EnforceWorkGroupConfiguration", false)
                            .with(
                                "ResultConfiguration",
                                Obj::new().with("OutputLocation", results_prefix(&outputs)),
                            ),
                    ),
            ),
        );
    }
    if let Some(bucket) = &bucket {
        resources.set(
            "Bucket",
            Obj::new()
                .with("Type", "AWS::S3::Bucket")
                .with("Condition", "CreateBucket")
                .with("DeletionPolicy", "Retain")
                .with("UpdateReplacePolicy", "Retain")
                .with(
                    "Properties",
                    Obj::new().with("BucketName", bucket.as_str()).with(
                        "PublicAccessBlockConfiguration",
                        Obj::new()
                            .with("BlockPublicAcls", true)
                            .with("BlockPublicPolicy", true)
                            .with("IgnorePublicAcls", true)
                            .with("RestrictPublicBuckets", true),
                    ),
                ),
        );
    }

    let description = format!(
        "The flux-engine DAG {}, exported by flux-engine export --cfn: the Step Functions state machine (its execution input may override the parameters), its role, and the Glue, Athena and S3 resources it uses, for the parameter values at export",
        dag.name
    );
    let mut template = Obj::new()
        .with("AWSTemplateFormatVersion", "2010-09-09")
        .with("Description", description);
    if !parameters.0.is_empty() {
        template.set("Parameters", parameters);
    }
    if !conditions.0.is_empty() {
        template.set("Conditions", conditions);
    }
    let has_report = resources.get("ReportFunction").is_some();
    template.set("Resources", resources);
    let mut outputs = Obj::new()
        .with(
            "StateMachineArn",
            Obj::new()
                .with("Description", "The state machine to start executions of")
                .with("Value", reference("StateMachine")),
        )
        .with(
            "RoleArn",
            Obj::new()
                .with("Description", "The state machine's execution role")
                .with("Value", get_att("StateMachineRole", "Arn")),
        );
    if has_report {
        outputs.set(
            "ReportFunctionArn",
            Obj::new()
                .with("Description", "The report Lambda function")
                .with("Value", get_att("ReportFunction", "Arn")),
        );
    }
    template.set("Outputs", outputs);
    Ok(template.into())
}

/// The report function's memory: the query results and the HTML are held
/// in memory, a few MB for a report's worth of rows; more memory also
/// buys CPU.
const REPORT_MEMORY_MB: u32 = 1024;
/// The report function's timeout: reading a few objects, rendering and
/// writing one takes seconds; Lambda's maximum is 900.
const REPORT_TIMEOUT_SECONDS: u32 = 300;

/// The created report function as the state machine and its policy name
/// it: `Ref` gives its name, `Fn::GetAtt` its ARN (when `[aws]
/// report_function` is an ARN).
fn report_function_ref(settings: &Settings) -> Json {
    match settings.report_function.as_deref() {
        Some(f) if f.starts_with("arn:") => get_att("ReportFunction", "Arn"),
        _ => reference("ReportFunction"),
    }
}

/// An `AWS::IAM::Role` with one inline policy.
fn iam_role(description: String, trust: Json, policy_name: String, policy: Json) -> Obj {
    Obj::new().with("Type", "AWS::IAM::Role").with(
        "Properties",
        Obj::new()
            .with("Description", description)
            .with("AssumeRolePolicyDocument", trust)
            .with(
                "Policies",
                vec![Json::from(
                    Obj::new()
                        .with("PolicyName", policy_name)
                        .with("PolicyDocument", policy),
                )],
            ),
    )
}

fn reference(name: &str) -> Json {
    Obj::new().with("Ref", name).into()
}

fn get_att(resource: &str, attribute: &str) -> Json {
    Obj::new()
        .with(
            "Fn::GetAtt",
            vec![Json::from(resource), Json::from(attribute)],
        )
        .into()
}

/// `prefix` + the alphanumeric characters of `name`, each run after a
/// separator capitalised; `2`, `3`, ... appended if taken.
fn logical_id(prefix: &str, name: &str, taken: &mut BTreeSet<String>) -> String {
    let mut id = prefix.to_string();
    let mut upper = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(if upper { c.to_ascii_uppercase() } else { c });
            upper = false;
        } else {
            upper = true;
        }
    }
    let mut unique = id.clone();
    let mut n = 2;
    while taken.contains(&unique) {
        unique = format!("{id}{n}");
        n += 1;
    }
    taken.insert(unique.clone());
    unique
}

/// The bucket the DAG uses: that of `scripts_prefix`, else of the first
/// query output, else of the first crawler target.
fn bucket_of(settings: &Settings, outputs: &[String], crawlers: &[Crawler]) -> Option<String> {
    settings
        .scripts_prefix
        .iter()
        .chain(outputs)
        .chain(crawlers.iter().flat_map(|c| &c.targets))
        .find_map(|uri| split_s3(uri).map(|(bucket, _)| bucket))
}

/// The longest common folder of the query outputs (`s3://b/analytics/
/// queries/`), at least the first output's bucket.
fn results_prefix(outputs: &[String]) -> String {
    let first = &outputs[0];
    let mut common = first.len();
    for o in &outputs[1..] {
        common = common.min(
            first
                .bytes()
                .zip(o.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    let mut prefix = &first[..common];
    if let Some(slash) = prefix.rfind('/') {
        prefix = &first[..=slash];
    }
    let bucket_root = split_s3(first).map(|(b, _)| format!("s3://{b}/"));
    match bucket_root {
        Some(root) if prefix.len() < root.len() => root,
        _ => prefix.to_string(),
    }
}

/// `DefinitionSubstitutions` replaces every `${...}` in the definition, so
/// none may come from the DAG itself.
fn check_no_placeholders(machine: &Json) -> Result<(), ExportError> {
    fn walk(json: &Json) -> Option<String> {
        match json {
            Json::Str(s) if s.contains("${") => Some(s.clone()),
            Json::Array(items) => items.iter().find_map(walk),
            Json::Object(obj) => obj.0.iter().find_map(|(k, v)| {
                if k.contains("${") {
                    Some(k.clone())
                } else {
                    walk(v)
                }
            }),
            _ => None,
        }
    }
    match walk(machine) {
        Some(text) => Err(ExportError(vec![format!(
            "the state machine holds `${{` ({text:?}), which CloudFormation's DefinitionSubstitutions would replace; export with --sfn and deploy it another way"
        )])),
        None => Ok(()),
    }
}

/// The `[aws]` values in the definition's `Parameters` become `${Param}`.
fn substitute_definition(json: &mut Json, settings: &Settings) {
    let mut pairs: Vec<(&str, &str, &str)> = Vec::new();
    match &settings.emr {
        Some(Emr::Cluster {
            service_role,
            job_flow_role,
            ..
        }) => {
            pairs.push(("ServiceRole", service_role, "${EmrServiceRole}"));
            pairs.push(("JobFlowRole", job_flow_role, "${EmrJobFlowRole}"));
        }
        Some(Emr::Serverless {
            execution_role_arn, ..
        }) => pairs.push((
            "ExecutionRoleArn",
            execution_role_arn,
            "${EmrServerlessExecutionRoleArn}",
        )),
        None => {}
    }
    if let Some(f) = &settings.report_function {
        pairs.push(("FunctionName", f, "${ReportFunction}"));
    }
    fn walk(json: &mut Json, pairs: &[(&str, &str, &str)]) {
        match json {
            Json::Array(items) => items.iter_mut().for_each(|v| walk(v, pairs)),
            Json::Object(obj) => {
                for (k, v) in &mut obj.0 {
                    if let Json::Str(s) = v
                        && let Some((_, _, to)) =
                            pairs.iter().find(|(key, from, _)| k == key && s == from)
                    {
                        *v = Json::from(*to);
                    } else {
                        walk(v, pairs);
                    }
                }
            }
            _ => {}
        }
    }
    walk(json, &pairs);
}

/// The trust policy of `--iam`, with the stack's account as the source
/// account whatever `[aws] account_id` says.
fn trust_policy() -> Json {
    super::iam::trust_policy_for(Some(reference("AWS::AccountId")))
}

/// The `--iam` role policy with its ARNs in the stack's partition, region
/// and account, and the account-specific values as parameters.
fn sub_policy(policy: Json, settings: &Settings) -> Json {
    fn walk(json: Json, settings: &Settings, in_resource: bool) -> Json {
        match json {
            Json::Str(s) if in_resource => sub_arn(&s, settings),
            Json::Array(items) => Json::Array(
                items
                    .into_iter()
                    .map(|v| walk(v, settings, in_resource))
                    .collect(),
            ),
            Json::Object(obj) => Json::Object(Obj(obj
                .0
                .into_iter()
                .map(|(k, v)| {
                    let resource = k == "Resource";
                    (k, walk(v, settings, resource))
                })
                .collect())),
            other => other,
        }
    }
    walk(policy, settings, false)
}

fn sub_arn(arn: &str, settings: &Settings) -> Json {
    let mut whole: Vec<(&str, &str)> = Vec::new();
    let mut roles: Vec<(&str, &str)> = Vec::new();
    match &settings.emr {
        Some(Emr::Cluster {
            service_role,
            job_flow_role,
            ..
        }) => {
            for (value, param) in [
                (service_role, "EmrServiceRole"),
                (job_flow_role, "EmrJobFlowRole"),
            ] {
                if value.starts_with("arn:") {
                    whole.push((value, param));
                } else {
                    roles.push((value, param));
                }
            }
        }
        Some(Emr::Serverless {
            execution_role_arn, ..
        }) => whole.push((execution_role_arn, "EmrServerlessExecutionRoleArn")),
        None => {}
    }
    let function = settings.report_function.as_deref();
    if let Some(f) = function
        && f == arn
        && f.starts_with("arn:")
    {
        return report_function_ref(settings);
    }
    if let Some((_, param)) = whole.iter().find(|(value, _)| *value == arn) {
        return reference(param);
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Json::from(arn);
    }
    let region = match parts[3] {
        "" => "",
        r if r == "*" || Some(r) == settings.region.as_deref() => "${AWS::Region}",
        r => r,
    };
    let account = match parts[4] {
        "" => "",
        a if a == "*" || Some(a) == settings.account_id.as_deref() => "${AWS::AccountId}",
        a => a,
    };
    let mut rest = parts[5].to_string();
    if parts[2] == "iam"
        && let Some(name) = rest.strip_prefix("role/")
        && let Some((_, param)) = roles.iter().find(|(value, _)| *value == name)
    {
        rest = format!("role/${{{param}}}");
    }
    if parts[2] == "lambda"
        && let Some(f) = function
        && rest == format!("function:{f}")
    {
        rest = "function:${ReportFunction}".into();
    }
    Obj::new()
        .with(
            "Fn::Sub",
            format!(
                "arn:${{AWS::Partition}}:{}:{region}:{account}:{rest}",
                parts[2]
            ),
        )
        .into()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn logical_ids_are_alphanumeric_and_unique() {
        let mut taken = BTreeSet::new();
        assert_eq!(
            logical_id("GlueCrawler", "crawl_raw", &mut taken),
            "GlueCrawlerCrawlRaw"
        );
        assert_eq!(
            logical_id("GlueCrawler", "crawl-raw", &mut taken),
            "GlueCrawlerCrawlRaw2"
        );
    }

    #[test]
    fn the_results_prefix_is_the_common_folder() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            results_prefix(&o(&["s3://b/a/q/x/", "s3://b/a/q/y/"])),
            "s3://b/a/q/"
        );
        assert_eq!(results_prefix(&o(&["s3://b/x/", "s3://b/y/"])), "s3://b/");
        assert_eq!(results_prefix(&o(&["s3://b/one/"])), "s3://b/one/");
    }

    #[test]
    fn policy_arns_use_the_stack_and_the_parameters() {
        let settings = Settings {
            region: Some("eu-west-1".into()),
            account_id: None,
            emr: Some(Emr::Cluster {
                release_label: "emr-7.5.0".into(),
                instance_type: "m5.xlarge".into(),
                instance_count: 3,
                service_role: "EMR_DefaultRole".into(),
                job_flow_role: "EMR_EC2_DefaultRole".into(),
                log_uri: None,
                idle_timeout_seconds: 3600,
            }),
            scripts_prefix: None,
            athena_workgroup: None,
            report_function: Some("rep".into()),
        };
        let sub = |arn: &str| serde_json::to_string(&sub_arn(arn, &settings)).unwrap();
        assert_eq!(
            sub("arn:aws:iam::*:role/EMR_DefaultRole"),
            r#"{"Fn::Sub":"arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${EmrServiceRole}"}"#
        );
        assert_eq!(
            sub("arn:aws:lambda:eu-west-1:*:function:rep"),
            r#"{"Fn::Sub":"arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${ReportFunction}"}"#
        );
        assert_eq!(
            sub("arn:aws:s3:::b/k"),
            r#"{"Fn::Sub":"arn:${AWS::Partition}:s3:::b/k"}"#
        );
        assert_eq!(sub("*"), r#""*""#);
    }
}

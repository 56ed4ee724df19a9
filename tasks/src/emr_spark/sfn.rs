//! `emr_spark` in Step Functions: each job a step on one EMR cluster that
//! lives from just before the first Spark task to just after the last
//! (`emr_mode = "cluster"`), or an EMR Serverless job run (`"serverless"`).
//!
//! The script and `py_files` are local paths in the DAG; production reads
//! them from `scripts_prefix` by file name (an `s3://` path is kept as it
//! is). `args` are passed unchanged: their `s3://` URIs are what the job
//! reads and writes on EMR. `spark_conf` becomes `--conf key=value`.
//!
//! # `[aws]` settings
//!
//! | setting | needed when | meaning |
//! |---|---|---|
//! | `emr_mode` | an `emr_spark` task | `"cluster"` (EMR on EC2) or `"serverless"` (EMR Serverless) |
//! | `release_label` | cluster | e.g. `"emr-7.5.0"` |
//! | `instance_type` | cluster | the primary and core nodes' type, e.g. `"m5.xlarge"` |
//! | `instance_count` | cluster | nodes, primary included (1 to 500) |
//! | `service_role` | cluster | EMR's service role (`EMR_DefaultRole`) |
//! | `job_flow_role` | cluster | the nodes' instance profile (`EMR_EC2_DefaultRole`) |
//! | `log_uri` | optional, cluster | `s3://` prefix for the cluster's logs |
//! | `idle_timeout_seconds` | optional, cluster | EMR's auto-termination after idling (default 3600): the backstop for an execution stopped from outside, which no `Catch` sees |
//! | `application_id` | serverless | the EMR Serverless application |
//! | `execution_role_arn` | serverless | the job runs' role |
//! | `scripts_prefix` | an `emr_spark` task | the `s3://` prefix holding the PySpark scripts and `py_files` (by file name) |
//!
//! # IAM
//!
//! | integration | actions | resources |
//! |---|---|---|
//! | `elasticmapreduce:createCluster.sync` | `RunJobFlow` | `*`, with `aws:RequestTag/flux-engine:dag` = the DAG's name (RunJobFlow has no resource type) |
//! | it, `addStep.sync`, `terminateCluster` | `DescribeCluster`, `TerminateJobFlows`, `AddJobFlowSteps`, `DescribeStep`, `CancelSteps` | `cluster/*` with `aws:ResourceTag/flux-engine:dag` = the DAG's name (the cluster id exists only at run time) |
//! | the same | `iam:PassRole` | `service_role` (to `elasticmapreduce.amazonaws.com`), and the role of `job_flow_role` (to `ec2.amazonaws.com`; the instance profile is assumed to hold the role of the same name, as EMR's defaults do) |
//! | `emr-serverless:startJobRun.sync` | `StartJobRun`; `GetJobRun`, `CancelJobRun`; `iam:PassRole` | the application; its `jobruns/*`; `execution_role_arn` (to `emr-serverless.amazonaws.com`) |
//! | `.sync` on EMR and EMR Serverless | `events:PutTargets`, `PutRule`, `DescribeRule` | the managed rules `StepFunctionsGetEventForEMRRunJobFlowRule`, `StepFunctionsGetEventForEMRAddJobFlowStepsRule`, `StepFunctionsGetEventsForEMRServerlessJobRule` |
//!
//! The jobs themselves run as the EMR roles, whose policies are the
//! deployment's business. A job's `reads` and `writes` are data the DAG's
//! queries may read. In the template, the roles are parameters
//! (`EmrServiceRole`, `EmrJobFlowRole`, `EmrServerlessExecutionRoleArn`)
//! defaulting to the settings, and the bucket of `scripts_prefix` is the
//! DAG's code bucket.

use std::path::Path;
use std::sync::Arc;

use exporters::sfn::cfn::{
    ArnRewrite, BucketUse, Deployment, Parameter, Substitution, Upload, reference,
};
use exporters::sfn::iam::{Grant, Permission};
use exporters::sfn::json::{Json, Obj};
use exporters::sfn::settings::{AwsSettings, KindSettings};
use exporters::sfn::states::{catch_all, fail};
use exporters::sfn::{
    ProductionOutput, Session, SessionStates, StepFunctions, TaskContext, TaskExport,
};

use super::{EmrSpark, SparkJob};
use crate::s3::{S3Uri, s3_location};

pub const CREATE_CLUSTER: &str = "Create EMR cluster";
pub const TERMINATE_CLUSTER: &str = "Terminate EMR cluster";
pub const CLUSTER_NOT_CREATED: &str = "EMR cluster not created";
pub const CLUSTER_NOT_TERMINATED: &str = "EMR cluster not terminated";
/// The suffix of a task's cleanup state on the way to its `Fail` state.
pub const STOP_CLUSTER: &str = "StopCluster";

/// Where `createCluster` puts the cluster id in the state data, for the
/// steps and the cleanup states.
const CLUSTER_ID_PATH: &str = "$.cluster.ClusterId";

/// The tag `createCluster` puts on the cluster, which the policy keys on.
pub(super) const DAG_TAG: &str = "flux-engine:dag";

/// The EventBridge rules Step Functions manages for the `.sync`
/// integrations used here.
pub const RULE_RUN_JOB_FLOW: &str = "StepFunctionsGetEventForEMRRunJobFlowRule";
pub const RULE_ADD_STEPS: &str = "StepFunctionsGetEventForEMRAddJobFlowStepsRule";
pub const RULE_SERVERLESS_JOB: &str = "StepFunctionsGetEventsForEMRServerlessJobRule";

const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 3600;

/// The `[aws]` settings of `emr_spark` tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct EmrSettings {
    /// `None` when the DAG has no `emr_spark` task.
    pub emr: Option<Emr>,
    /// Ends with `/` when the DAG has an `emr_spark` task.
    pub scripts_prefix: Option<String>,
    /// `run --target aws` only: a running cluster to add the steps to,
    /// instead of one the run creates (and terminates). The export ignores
    /// it: the state machine always creates its cluster.
    pub cluster_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Emr {
    Cluster {
        release_label: String,
        instance_type: String,
        instance_count: u64,
        service_role: String,
        job_flow_role: String,
        log_uri: Option<String>,
        idle_timeout_seconds: u64,
    },
    Serverless {
        application_id: String,
        execution_role_arn: String,
    },
}

impl KindSettings for EmrSettings {
    const KEYS: &'static [&'static str] = &[
        "emr_mode",
        "release_label",
        "instance_type",
        "instance_count",
        "service_role",
        "job_flow_role",
        "log_uri",
        "idle_timeout_seconds",
        "application_id",
        "execution_role_arn",
        "scripts_prefix",
        "cluster_id",
    ];

    fn read(aws: &mut AwsSettings, first: Option<&str>) -> Option<EmrSettings> {
        let emr = first.and_then(|task| read_emr(aws, task));
        let scripts_prefix = match first {
            Some(task) => aws
                .string(
                    "scripts_prefix",
                    Some(&format!(
                        "task `{task}` is an emr_spark task, whose script production reads from S3; add for example scripts_prefix = \"s3://my-bucket/scripts/\""
                    )),
                )
                .and_then(|p| {
                    if p.starts_with("s3://") && p.len() > "s3://".len() {
                        Some(if p.ends_with('/') { p } else { format!("{p}/") })
                    } else {
                        aws.error(format!(
                            "[aws] scripts_prefix must be an s3:// prefix, found {p:?}"
                        ));
                        None
                    }
                }),
            None => aws.string("scripts_prefix", None),
        };
        let cluster_id = aws.string("cluster_id", None);
        Some(EmrSettings {
            emr,
            scripts_prefix,
            cluster_id,
        })
    }
}

impl StepFunctions for EmrSpark {
    type Settings = EmrSettings;

    /// The scripts' upload, the cluster of the run (created with the DAG's
    /// tag, so the same tag-scoped statements as the state machine's), its
    /// steps, the job's `output_json` and the step logs quoted on failure.
    fn run_grants(&self, task: &TaskContext, job: &SparkJob, settings: &EmrSettings) -> Vec<Grant> {
        let arns = task.arns();
        let mut grants = Vec::new();
        if let Some(prefix) = settings
            .scripts_prefix
            .as_deref()
            .and_then(|p| S3Uri::parse(p).ok())
        {
            grants.extend(crate::aws::object_grants(
                "RunScripts",
                arns,
                &prefix.as_prefix(),
                &["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
            ));
        }
        if let Some(uri) = &job.output_json {
            grants.extend(crate::aws::object_grants(
                "RunJobOutputs",
                arns,
                uri,
                &["s3:GetObject"],
            ));
        }
        if let Some(Emr::Cluster { log_uri, .. }) = &settings.emr
            && let Some(logs) = log_uri.as_deref().and_then(|l| S3Uri::parse(l).ok())
        {
            grants.extend(crate::aws::object_grants(
                "RunStepLogs",
                arns,
                &logs.as_prefix(),
                &["s3:GetObject"],
            ));
        }
        if let (Some(Emr::Cluster { .. }), Some(cluster_id)) = (&settings.emr, &settings.cluster_id)
        {
            // A cluster of the user's: its steps only, on it alone.
            grants.push(Grant::statement(
                "EmrGivenCluster",
                &[
                    "elasticmapreduce:DescribeCluster",
                    "elasticmapreduce:AddJobFlowSteps",
                    "elasticmapreduce:DescribeStep",
                    "elasticmapreduce:CancelSteps",
                ],
                [arns.arn("elasticmapreduce", &format!("cluster/{cluster_id}"))],
            ));
        } else if let Some(emr @ Emr::Cluster { .. }) = &settings.emr {
            // The state machine's own needs (the .sync integration's event
            // rule) are not the engine's.
            grants.extend(cluster_grants(task, emr).into_iter().filter(|g| {
                !matches!(&g.permission, Permission::Statement { sid, .. } if sid.starts_with("SyncIntegration"))
            }));
            grants.push(Grant::statement(
                "EmrCreateClusterOfThisDag",
                &["elasticmapreduce:AddTags"],
                ["*".to_string()],
            ));
            grants.push(cluster_grant(
                task,
                &[
                    "elasticmapreduce:AddJobFlowSteps",
                    "elasticmapreduce:DescribeStep",
                    "elasticmapreduce:CancelSteps",
                ],
            ));
        }
        if let Some(Emr::Serverless {
            application_id,
            execution_role_arn,
        }) = &settings.emr
        {
            let app = format!("/applications/{application_id}");
            grants.extend([
                Grant::statement(
                    "EmrServerlessStartJobRun",
                    &["emr-serverless:StartJobRun"],
                    [arns.arn("emr-serverless", &app)],
                ),
                // The job runs are started with the DAG's and the run's tags.
                Grant::statement(
                    "EmrServerlessJobRuns",
                    &[
                        "emr-serverless:GetJobRun",
                        "emr-serverless:CancelJobRun",
                        "emr-serverless:TagResource",
                    ],
                    [arns.arn("emr-serverless", &format!("{app}/jobruns/*"))],
                ),
                Grant::statement(
                    "PassEmrServerlessExecutionRole",
                    &["iam:PassRole"],
                    [arns.role(execution_role_arn)],
                )
                .when(
                    "StringEquals",
                    "iam:PassedToService",
                    "emr-serverless.amazonaws.com",
                ),
            ]);
        }
        grants
    }

    fn translate(
        &self,
        task: &TaskContext,
        job: &SparkJob,
        settings: &EmrSettings,
    ) -> Result<TaskExport, String> {
        let emr = settings
            .emr
            .as_ref()
            .ok_or_else(|| task.error("[aws] emr_mode is missing"))?;
        let prefix = settings
            .scripts_prefix
            .as_deref()
            .ok_or_else(|| task.error("[aws] scripts_prefix is missing"))?;
        let script = in_scripts(task, &job.script, prefix)?;
        let py_files = job
            .py_files
            .iter()
            .map(|p| in_scripts(task, p, prefix))
            .collect::<Result<Vec<_>, _>>()?;
        let args = job.args.clone();
        let conf: Vec<String> = job
            .spark_conf
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let submission = Submission {
            comment: format!("{}; spark-submit {script}", task.comment()),
            script,
            py_files,
            conf,
            args,
        };
        let mut export = match emr {
            Emr::Cluster { .. } => {
                let mut export = cluster_step(task, submission);
                export.session = Some(Arc::new(Cluster {
                    dag: task.dag.name.clone(),
                    emr: emr.clone(),
                    grants: cluster_grants(task, emr),
                }));
                export
            }
            Emr::Serverless {
                application_id,
                execution_role_arn,
            } => serverless_run(task, submission, application_id, execution_role_arn),
        };
        export.data = job
            .reads
            .iter()
            .chain(&job.writes)
            .map(|p| s3_location(&p.as_written_uri()))
            .collect();
        Ok(export)
    }

    fn production_output(&self, job: &SparkJob) -> Option<ProductionOutput> {
        job.output_json
            .as_ref()
            .map(|uri| ProductionOutput::Object {
                uri: uri.to_string(),
            })
    }

    fn deployment(
        &self,
        settings: &EmrSettings,
        tasks: &[(&TaskContext, SparkJob)],
    ) -> Result<Deployment, String> {
        let mut deployment = Deployment::default();
        // The scripts and `py_files` of this machine, where the steps
        // read them.
        if let Some(prefix) = settings.scripts_prefix.as_deref() {
            for (task, job) in tasks {
                for path in std::iter::once(&job.script).chain(&job.py_files) {
                    let local = task.local(path);
                    if local.starts_with("s3://") {
                        continue;
                    }
                    let uri = in_scripts(task, &local, prefix)?;
                    let upload = Upload {
                        local: task.dag.dir.join(&local),
                        uri,
                        data: false,
                    };
                    if !deployment.uploads.contains(&upload) {
                        deployment.uploads.push(upload);
                    }
                }
            }
        }
        let mut role =
            |name: &'static str, value: &str, description: &'static str, key: &'static str| {
                deployment.parameters.push(Parameter {
                    name,
                    description,
                    default: Some(value.to_string()),
                    configures: "AWS::StepFunctions::StateMachine",
                });
                deployment.substitutions.push(Substitution {
                    key,
                    value: value.to_string(),
                    name,
                    to: reference(name),
                });
                deployment.arn_rewrites.push(if value.starts_with("arn:") {
                    ArnRewrite::Whole {
                        arn: value.to_string(),
                        to: reference(name),
                    }
                } else {
                    ArnRewrite::Resource {
                        service: "iam",
                        from: format!("role/{value}"),
                        to: format!("role/${{{name}}}"),
                    }
                });
            };
        match &settings.emr {
            Some(Emr::Cluster {
                service_role,
                job_flow_role,
                ..
            }) => {
                role(
                    "EmrServiceRole",
                    service_role,
                    "The EMR service role (name or ARN) the cluster is created with",
                    "ServiceRole",
                );
                role(
                    "EmrJobFlowRole",
                    job_flow_role,
                    "The instance profile of the EMR cluster's nodes (its role has the same name)",
                    "JobFlowRole",
                );
            }
            Some(Emr::Serverless {
                execution_role_arn, ..
            }) => {
                deployment.parameters.push(Parameter {
                    name: "EmrServerlessExecutionRoleArn",
                    description: "The ARN of the role the EMR Serverless job runs assume",
                    default: Some(execution_role_arn.clone()),
                    configures: "AWS::StepFunctions::StateMachine",
                });
                deployment.substitutions.push(Substitution {
                    key: "ExecutionRoleArn",
                    value: execution_role_arn.clone(),
                    name: "EmrServerlessExecutionRoleArn",
                    to: reference("EmrServerlessExecutionRoleArn"),
                });
                deployment.arn_rewrites.push(ArnRewrite::Whole {
                    arn: execution_role_arn.clone(),
                    to: reference("EmrServerlessExecutionRoleArn"),
                });
            }
            None => {}
        }
        if let Some(uri) = settings
            .scripts_prefix
            .as_deref()
            .and_then(|p| S3Uri::parse(p).ok())
        {
            deployment
                .buckets
                .push((BucketUse::Code, uri.bucket().to_string()));
        }
        Ok(deployment)
    }
}

/// What a job submits, as production sees it.
struct Submission {
    comment: String,
    /// Under `scripts_prefix`.
    script: String,
    py_files: Vec<String>,
    /// `key=value`.
    conf: Vec<String>,
    args: Vec<String>,
}

/// The arguments of `command-runner.jar` for a job: `spark-submit
/// --deploy-mode cluster`, the job's files and settings, the script and
/// its arguments. The export's step and `run --target aws` both use it.
pub(super) fn spark_submit_args(
    script: String,
    py_files: &[String],
    conf: &[String],
    args: &[String],
) -> Vec<String> {
    let mut submit: Vec<String> = vec![
        "spark-submit".into(),
        "--deploy-mode".into(),
        "cluster".into(),
    ];
    if !py_files.is_empty() {
        submit.push("--py-files".into());
        submit.push(py_files.join(","));
    }
    for c in conf {
        submit.push("--conf".into());
        submit.push(c.clone());
    }
    submit.push(script);
    submit.extend(args.iter().cloned());
    submit
}

/// An EMR Serverless job run's `SparkSubmitParameters`: the job's files
/// and settings (`None` for none). The export's state and `run --target
/// aws` both use it.
pub(super) fn spark_submit_parameters(py_files: &[String], conf: &[String]) -> Option<String> {
    let mut parameters: Vec<String> = Vec::new();
    if !py_files.is_empty() {
        parameters.push(format!("--py-files {}", py_files.join(",")));
    }
    for c in conf {
        parameters.push(format!("--conf {c}"));
    }
    (!parameters.is_empty()).then(|| parameters.join(" "))
}

/// The job as a step on the cluster: `command-runner.jar spark-submit
/// --deploy-mode cluster`.
fn cluster_step(task: &TaskContext, job: Submission) -> TaskExport {
    let Submission {
        comment,
        script,
        py_files,
        conf,
        args,
    } = job;
    let submit = spark_submit_args(script, &py_files, &conf, &args);
    let state = task.task_state(
        comment,
        "arn:aws:states:::elasticmapreduce:addStep.sync",
        Obj::new().with("ClusterId.$", CLUSTER_ID_PATH).with(
            "Step",
            Obj::new()
                .with("Name", task.id())
                // The state machine decides what a failure means; the
                // cluster stays for the cleanup.
                .with("ActionOnFailure", "CONTINUE")
                .with(
                    "HadoopJarStep",
                    Obj::new()
                        .with("Jar", "command-runner.jar")
                        .with("Args", submit),
                ),
        ),
    );
    TaskExport::task(state).with_grants(vec![
        cluster_grant(
            task,
            &[
                "elasticmapreduce:AddJobFlowSteps",
                "elasticmapreduce:DescribeStep",
                "elasticmapreduce:CancelSteps",
            ],
        ),
        rule_grant(task, RULE_ADD_STEPS),
    ])
}

/// The job as an EMR Serverless job run of the application, as its
/// execution role.
fn serverless_run(
    task: &TaskContext,
    job: Submission,
    application_id: &str,
    execution_role_arn: &str,
) -> TaskExport {
    let Submission {
        comment,
        script,
        py_files,
        conf,
        args,
    } = job;
    let submit_parameters = spark_submit_parameters(&py_files, &conf);
    let driver = Obj::new()
        .with("EntryPoint", script)
        .with("EntryPointArguments", args)
        .with_opt("SparkSubmitParameters", submit_parameters);
    let state = task.task_state(
        comment,
        "arn:aws:states:::emr-serverless:startJobRun.sync",
        Obj::new()
            .with("ApplicationId", application_id)
            .with("ExecutionRoleArn", execution_role_arn)
            .with("Name", task.id())
            // An idempotency token per attempt: a retry is a new run.
            .with("ClientToken.$", "States.UUID()")
            .with("JobDriver", Obj::new().with("SparkSubmit", driver)),
    );
    let arns = task.arns();
    let app = format!("/applications/{application_id}");
    TaskExport::task(state).with_grants(vec![
        Grant::statement(
            "EmrServerlessStartJobRun",
            &["emr-serverless:StartJobRun"],
            [arns.arn("emr-serverless", &app)],
        ),
        Grant::statement(
            "EmrServerlessJobRuns",
            &["emr-serverless:GetJobRun", "emr-serverless:CancelJobRun"],
            [arns.arn("emr-serverless", &format!("{app}/jobruns/*"))],
        ),
        Grant::statement(
            "PassEmrServerlessExecutionRole",
            &["iam:PassRole"],
            [arns.role(execution_role_arn)],
        )
        .when(
            "StringEquals",
            "iam:PassedToService",
            "emr-serverless.amazonaws.com",
        ),
        rule_grant(task, RULE_SERVERLESS_JOB),
    ])
}

/// The cluster settings, or the serverless ones, as `emr_mode` says;
/// `task` is the first Spark task, which makes them required.
fn read_emr(aws: &mut AwsSettings, task: &str) -> Option<Emr> {
    let why = format!("task `{task}` is an emr_spark task");
    let mode = aws.string("emr_mode", Some(&format!(
        "{why}; add emr_mode = \"cluster\" (EMR on EC2) or \"serverless\" (EMR Serverless) under [aws]"
    )))?;
    match mode.as_str() {
        "cluster" => {
            let why = format!("{why} and emr_mode is \"cluster\"");
            let need = |aws: &mut AwsSettings, key: &str, example: &str| {
                aws.string(
                    key,
                    Some(&format!("{why}; add for example {key} = {example:?}")),
                )
            };
            let release_label = need(aws, "release_label", "emr-7.5.0");
            let instance_type = need(aws, "instance_type", "m5.xlarge");
            let instance_count = aws.count(
                "instance_count",
                1,
                500,
                Some(&format!("{why}; add for example instance_count = 3")),
            );
            let service_role = need(aws, "service_role", "EMR_DefaultRole");
            let job_flow_role = need(aws, "job_flow_role", "EMR_EC2_DefaultRole");
            let log_uri = aws.string("log_uri", None);
            if let Some(uri) = &log_uri
                && !uri.starts_with("s3://")
            {
                aws.error(format!(
                    "[aws] log_uri must be an s3:// prefix, found {uri:?}"
                ));
            }
            let idle_timeout_seconds = aws
                .count("idle_timeout_seconds", 60, 604_800, None)
                .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECONDS);
            Some(Emr::Cluster {
                release_label: release_label?,
                instance_type: instance_type?,
                instance_count: instance_count?,
                service_role: service_role?,
                job_flow_role: job_flow_role?,
                log_uri,
                idle_timeout_seconds,
            })
        }
        "serverless" => {
            let why = format!("{why} and emr_mode is \"serverless\"");
            let application_id = aws.string(
                "application_id",
                Some(&format!("{why}; add the EMR Serverless application's id, e.g. application_id = \"00fabcdefg123456\"")),
            );
            let execution_role_arn = aws.string(
                "execution_role_arn",
                Some(&format!("{why}; add the job runs' role, e.g. execution_role_arn = \"arn:aws:iam::123456789012:role/flux-emr-serverless\"")),
            );
            Some(Emr::Serverless {
                application_id: application_id?,
                execution_role_arn: execution_role_arn?,
            })
        }
        other => {
            aws.error(format!(
                "[aws] emr_mode must be \"cluster\" or \"serverless\", found {other:?}"
            ));
            None
        }
    }
}

/// Where production finds `path`: under `scripts_prefix` by file name.
fn in_scripts(task: &TaskContext, path: &str, prefix: &str) -> Result<String, String> {
    if path.starts_with("s3://") {
        return Ok(path.to_string());
    }
    let name = Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| task.error(format!("`{path}` names no file")))?;
    Ok(format!("{prefix}{name}"))
}

/// `actions` on the clusters of this DAG (by their tag).
fn cluster_grant(task: &TaskContext, actions: &[&str]) -> Grant {
    Grant::statement(
        "EmrClustersOfThisDag",
        actions,
        [task.arns().arn("elasticmapreduce", "cluster/*")],
    )
    .when(
        "StringEquals",
        &format!("aws:ResourceTag/{DAG_TAG}"),
        task.dag.name.as_str(),
    )
}

/// The managed rule a `.sync` integration needs.
fn rule_grant(task: &TaskContext, rule: &str) -> Grant {
    Grant::statement(
        "SyncIntegrationEventRules",
        &["events:PutTargets", "events:PutRule", "events:DescribeRule"],
        [task.arns().arn("events", &format!("rule/{rule}"))],
    )
}

/// What creating and terminating the cluster needs.
fn cluster_grants(task: &TaskContext, emr: &Emr) -> Vec<Grant> {
    let Emr::Cluster {
        service_role,
        job_flow_role,
        ..
    } = emr
    else {
        return Vec::new();
    };
    let arns = task.arns();
    // An instance profile's name or ARN: its role of the same name.
    let profile_role = job_flow_role.rsplit('/').next().unwrap_or(job_flow_role);
    vec![
        Grant::statement(
            "EmrCreateClusterOfThisDag",
            &["elasticmapreduce:RunJobFlow"],
            ["*".to_string()],
        )
        .when(
            "StringEquals",
            &format!("aws:RequestTag/{DAG_TAG}"),
            task.dag.name.as_str(),
        ),
        cluster_grant(
            task,
            &[
                "elasticmapreduce:DescribeCluster",
                "elasticmapreduce:TerminateJobFlows",
            ],
        ),
        Grant::statement(
            "PassEmrInstanceProfileRole",
            &["iam:PassRole"],
            [arns.role(profile_role)],
        )
        .when("StringEquals", "iam:PassedToService", "ec2.amazonaws.com"),
        Grant::statement(
            "PassEmrServiceRole",
            &["iam:PassRole"],
            [arns.role(service_role)],
        )
        .when(
            "StringEquals",
            "iam:PassedToService",
            "elasticmapreduce.amazonaws.com",
        ),
        rule_grant(task, RULE_RUN_JOB_FLOW),
    ]
}

/// The EMR cluster the Spark tasks of a DAG share (cluster mode).
struct Cluster {
    dag: String,
    emr: Emr,
    grants: Vec<Grant>,
}

impl Session for Cluster {
    fn key(&self) -> &str {
        "emr-cluster"
    }

    /// The cluster's creation, waited for (`.sync`), its id kept in the
    /// state data. `KeepJobFlowAliveWhenNoSteps` keeps it between steps;
    /// the idle auto-termination is the backstop for an execution stopped
    /// from outside (or timed out as a whole), which no `Catch` sees.
    fn open(&self, first_task: &str) -> SessionStates {
        let Emr::Cluster {
            release_label,
            instance_type,
            instance_count,
            service_role,
            job_flow_role,
            log_uri,
            idle_timeout_seconds,
        } = &self.emr
        else {
            return SessionStates {
                flow: Vec::new(),
                others: Vec::new(),
            };
        };
        let dag_name = self.dag.as_str();
        let parameters = Obj::new()
            .with("Name", format!("flux-{dag_name}"))
            .with("ReleaseLabel", release_label)
            .with(
                "Applications",
                vec![Json::from(Obj::new().with("Name", "Spark"))],
            )
            .with("ServiceRole", service_role)
            .with("JobFlowRole", job_flow_role)
            .with_opt("LogUri", log_uri.clone())
            .with("VisibleToAllUsers", true)
            .with(
                "AutoTerminationPolicy",
                Obj::new().with("IdleTimeout", *idle_timeout_seconds),
            )
            .with(
                "Instances",
                Obj::new()
                    .with("InstanceCount", *instance_count)
                    .with("MasterInstanceType", instance_type)
                    .with("SlaveInstanceType", instance_type)
                    .with("KeepJobFlowAliveWhenNoSteps", true),
            )
            .with(
                "Tags",
                vec![
                    Json::from(Obj::new().with("Key", DAG_TAG).with("Value", dag_name)),
                    Json::from(
                        Obj::new()
                            .with("Key", "flux-engine:execution")
                            .with("Value.$", "$$.Execution.Name"),
                    ),
                ],
            );
        let create = Obj::new()
            .with("Type", "Task")
            .with(
                "Comment",
                format!("The EMR cluster for the Spark tasks, from `{first_task}` on; terminated after the last one and on every failure path"),
            )
            .with("Resource", "arn:aws:states:::elasticmapreduce:createCluster.sync")
            .with("Parameters", parameters)
            .with(
                "ResultSelector",
                Obj::new().with("ClusterId.$", "$.ClusterId"),
            )
            .with("ResultPath", "$.cluster")
            .with("Catch", catch_all(CLUSTER_NOT_CREATED));
        SessionStates {
            flow: vec![(CREATE_CLUSTER.to_string(), create)],
            others: vec![(
                CLUSTER_NOT_CREATED.to_string(),
                fail(
                    "EMR.ClusterNotCreated",
                    &format!(
                        "the EMR cluster for the Spark tasks (the first is `{first_task}`) could not be created"
                    ),
                ),
            )],
        }
    }

    fn close(&self) -> SessionStates {
        SessionStates {
            flow: vec![(
                TERMINATE_CLUSTER.to_string(),
                terminate_cluster(
                    "The last Spark task is done: the cluster goes",
                    CLUSTER_NOT_TERMINATED,
                ),
            )],
            others: vec![(
                CLUSTER_NOT_TERMINATED.to_string(),
                fail(
                    "EMR.ClusterNotTerminated",
                    "the EMR cluster could not be terminated; it terminates itself after idle_timeout_seconds, or terminate it in the EMR console",
                ),
            )],
        }
    }

    fn cleanup(&self, task: &str, failed: &str) -> (String, Obj) {
        (
            format!("{task}.{STOP_CLUSTER}"),
            terminate_cluster(
                &format!("`{task}` failed: terminate the EMR cluster before failing"),
                failed,
            )
            .with("Next", failed),
        )
    }

    fn grants(&self) -> Vec<Grant> {
        self.grants.clone()
    }
}

/// Terminates the cluster; retried, since a cluster left running costs
/// money until its idle timeout. On failure it goes on to `on_failure`.
fn terminate_cluster(comment: &str, on_failure: &str) -> Obj {
    Obj::new()
        .with("Type", "Task")
        .with("Comment", comment)
        .with(
            "Resource",
            "arn:aws:states:::elasticmapreduce:terminateCluster",
        )
        .with(
            "Parameters",
            Obj::new().with("ClusterId.$", CLUSTER_ID_PATH),
        )
        .with("ResultPath", Json::Null)
        .with(
            "Retry",
            vec![Json::from(
                Obj::new()
                    .with("ErrorEquals", vec![Json::from("States.ALL")])
                    .with("IntervalSeconds", 5u64)
                    .with("MaxAttempts", 5u64)
                    .with("BackoffRate", 2.0),
            )],
        )
        .with(
            "Catch",
            vec![Json::from(
                Obj::new()
                    .with("ErrorEquals", vec![Json::from("States.ALL")])
                    .with("ResultPath", "$.terminate_error")
                    .with("Next", on_failure),
            )],
        )
}

//! `emr_spark` on EMR: each job as a step on one cluster that lives from
//! just before the first Spark task to just after the last (`cluster`
//! mode), or as an EMR Serverless job run (`serverless` mode).
//!
//! The script and `py_files` are local paths in the DAG; production reads
//! them from `scripts_prefix` by file name (an `s3://` path is kept as it
//! is). `args` are passed unchanged: their `s3://` URIs are what the job
//! reads and writes on EMR. `spark_conf` becomes `--conf key=value`.

use std::path::Path;

use super::json::{Json, Obj};
use super::settings::{Emr, Settings};
use super::states::{TaskCtx, Translated};

pub const CREATE_CLUSTER: &str = "Create EMR cluster";
pub const TERMINATE_CLUSTER: &str = "Terminate EMR cluster";
pub const CLUSTER_NOT_CREATED: &str = "EMR cluster not created";
pub const CLUSTER_NOT_TERMINATED: &str = "EMR cluster not terminated";
/// The suffix of a task's cleanup state on the way to its `Fail` state.
pub const STOP_CLUSTER: &str = "StopCluster";

/// Where `createCluster` puts the cluster id in the state data, for the
/// steps and the cleanup states.
const CLUSTER_ID_PATH: &str = "$.cluster.ClusterId";

pub fn translate(ctx: &TaskCtx) -> Result<Translated, String> {
    let emr = ctx
        .settings
        .emr
        .as_ref()
        .ok_or_else(|| ctx.error("[aws] emr_mode is missing"))?;
    let prefix = ctx
        .settings
        .scripts_prefix
        .as_deref()
        .ok_or_else(|| ctx.error("[aws] scripts_prefix is missing"))?;
    let script = in_scripts(ctx, &ctx.str("script")?, prefix)?;
    let py_files = ctx
        .strings("py_files")?
        .iter()
        .map(|p| in_scripts(ctx, p, prefix))
        .collect::<Result<Vec<_>, _>>()?;
    let args = ctx.strings("args")?;
    let conf: Vec<String> = match ctx.fields.get("spark_conf") {
        None => Vec::new(),
        Some(toml::Value::Table(table)) => table
            .iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect(),
        Some(other) => {
            return Err(ctx.error(format!("`spark_conf` must be a table, found {other}")));
        }
    };
    let comment = format!("{}; spark-submit {script}", ctx.comment());
    let state = match emr {
        Emr::Cluster { .. } => {
            let mut submit: Vec<String> = vec![
                "spark-submit".into(),
                "--deploy-mode".into(),
                "cluster".into(),
            ];
            if !py_files.is_empty() {
                submit.push("--py-files".into());
                submit.push(py_files.join(","));
            }
            for c in &conf {
                submit.push("--conf".into());
                submit.push(c.clone());
            }
            submit.push(script);
            submit.extend(args);
            ctx.task_state(
                comment,
                "arn:aws:states:::elasticmapreduce:addStep.sync",
                Obj::new().with("ClusterId.$", CLUSTER_ID_PATH).with(
                    "Step",
                    Obj::new()
                        .with("Name", ctx.id())
                        // The state machine decides what a failure
                        // means; the cluster stays for the cleanup.
                        .with("ActionOnFailure", "CONTINUE")
                        .with(
                            "HadoopJarStep",
                            Obj::new()
                                .with("Jar", "command-runner.jar")
                                .with("Args", submit),
                        ),
                ),
            )
        }
        Emr::Serverless {
            application_id,
            execution_role_arn,
        } => {
            let mut submit_parameters: Vec<String> = Vec::new();
            if !py_files.is_empty() {
                submit_parameters.push(format!("--py-files {}", py_files.join(",")));
            }
            for c in &conf {
                submit_parameters.push(format!("--conf {c}"));
            }
            let driver = Obj::new()
                .with("EntryPoint", script)
                .with("EntryPointArguments", args)
                .with_opt(
                    "SparkSubmitParameters",
                    (!submit_parameters.is_empty()).then(|| submit_parameters.join(" ")),
                );
            ctx.task_state(
                comment,
                "arn:aws:states:::emr-serverless:startJobRun.sync",
                Obj::new()
                    .with("ApplicationId", application_id)
                    .with("ExecutionRoleArn", execution_role_arn)
                    .with("Name", ctx.id())
                    // An idempotency token per attempt: a retry is a new run.
                    .with("ClientToken.$", "States.UUID()")
                    .with("JobDriver", Obj::new().with("SparkSubmit", driver)),
            )
        }
    };
    Ok(Translated {
        state,
        catches: true,
    })
}

/// Where production finds `path`: under `scripts_prefix` by file name.
fn in_scripts(ctx: &TaskCtx, path: &str, prefix: &str) -> Result<String, String> {
    if path.starts_with("s3://") {
        return Ok(path.to_string());
    }
    let name = Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ctx.error(format!("`{path}` names no file")))?;
    Ok(format!("{prefix}{name}"))
}

/// The cluster's creation, waited for (`.sync`), its id kept in the state
/// data. `KeepJobFlowAliveWhenNoSteps` keeps it between steps; the idle
/// auto-termination is the backstop for an execution stopped from outside
/// (or timed out as a whole), which no `Catch` sees.
pub fn create_cluster(dag_name: &str, settings: &Settings, first_task: &str) -> Option<Obj> {
    let Some(Emr::Cluster {
        release_label,
        instance_type,
        instance_count,
        service_role,
        job_flow_role,
        log_uri,
        idle_timeout_seconds,
    }) = &settings.emr
    else {
        return None;
    };
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
                Json::from(
                    Obj::new()
                        .with("Key", "flux-engine:dag")
                        .with("Value", dag_name),
                ),
                Json::from(
                    Obj::new()
                        .with("Key", "flux-engine:execution")
                        .with("Value.$", "$$.Execution.Name"),
                ),
            ],
        );
    Some(
        Obj::new()
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
            .with("Catch", super::states::catch_all(CLUSTER_NOT_CREATED)),
    )
}

/// Terminates the cluster; retried, since a cluster left running costs
/// money until its idle timeout. On failure it goes on to `on_failure`.
pub fn terminate_cluster(comment: &str, on_failure: &str) -> Obj {
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

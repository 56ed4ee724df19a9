//! `emr_spark` on AWS (`run --target aws`), cluster mode: the job runs as a
//! step of an EMR cluster the run creates, exactly as the exported state
//! machine runs it (the same `spark-submit` arguments, the same script
//! objects under `[aws] scripts_prefix`).
//!
//! * The script and its `py_files` are uploaded to `scripts_prefix` first
//!   (skipped when unchanged, as `s3_ingest` does).
//! * The run's Spark tasks share one cluster, created by the first of them
//!   (`RunJobFlow`, tagged `flux-engine:dag` and `flux-engine:run`, kept
//!   alive between steps, with EMR's idle auto-termination as the backstop
//!   for an engine killed without a resume) and terminated when the run
//!   ends, however it ends.
//! * Durable: the cluster id and each step id are recorded in the
//!   checkpoint (the attempt's [`engine::WorkJournal`]) before the engine
//!   waits on them. A resume after a crash finds them and polls the same
//!   step instead of adding another; a step that already failed or was
//!   cancelled is replaced by a new one, as a retry is.
//! * The step is polled every [`POLL_SECONDS`] (`FLUX_AWS_POLL_SECONDS`),
//!   backing off while EMR throttles; each change of state is logged.
//! * A failed step fails the attempt with EMR's reason, the step's log
//!   location and the last lines of its `stderr` under `[aws] log_uri`.
//! * A step whose attempt is dropped (a timeout, Ctrl-C) is cancelled
//!   (`CancelSteps`) before the run ends.
//!
//! With `emr_mode = "serverless"` the job is a job run of
//! `[aws] application_id` as `execution_role_arn` (`StartJobRun` with the
//! export's entry point, arguments and `SparkSubmitParameters`, a client
//! token per attempt, tagged like a cluster), journaled, polled with
//! `GetJobRun` and cancelled (`CancelJobRun`) when its attempt is dropped.
//!
//! `[aws] cluster_id` names a running cluster of your own instead: the
//! steps go there and the run neither creates nor terminates a cluster.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_emr::types::{
    ActionOnFailure, Application, AutoTerminationPolicy, ClusterState, HadoopJarStepConfig,
    JobFlowInstancesConfig, StepConfig, StepState, Tag,
};
use engine::{Attempt, TaskAction, TaskFailure};
use serde_json::json;
use tokio::sync::Mutex;
use tracing::Instrument;

use super::sfn::{DAG_TAG, Emr, spark_submit_args};
use super::{EmrSpark, SparkJob};
use crate::aws::{AwsRun, OnAws, Poll, StopOnDrop, error_text, say, throttled};
use crate::s3::S3Uri;

/// The default seconds between two polls of a step.
pub const POLL_SECONDS: f64 = 15.0;
/// The tag naming the run that created a cluster.
pub const RUN_TAG: &str = "flux-engine:run";
/// The journal key of the run's cluster (run-wide).
const CLUSTER_KEY: &str = "emr.cluster";
/// The journal key of a task's step.
const STEP_KEY: &str = "emr.step";
/// Lines of a failed step's `stderr` quoted in the failure.
const STDERR_LINES: usize = 20;

/// What the EMR backend keeps for the run in this process.
#[derive(Default)]
struct ClusterUse {
    /// The run's cluster as this process knows it.
    cluster_id: Option<String>,
}

/// The backend's state, shared by the run's Spark tasks.
#[derive(Default)]
pub(super) struct EmrOnAws {
    cluster: Mutex<ClusterUse>,
}

fn state() -> &'static EmrOnAws {
    static STATE: std::sync::OnceLock<EmrOnAws> = std::sync::OnceLock::new();
    STATE.get_or_init(EmrOnAws::default)
}

impl OnAws for EmrSpark {
    fn aws_action(&self, job: SparkJob, aws: &Arc<AwsRun>) -> Arc<dyn TaskAction> {
        Arc::new(Step {
            job,
            aws: aws.clone(),
        })
    }

    /// Waits for the steps being cancelled, then terminates the run's
    /// cluster (the one recorded for the run, also when an earlier,
    /// killed process created it).
    async fn end_of_aws_run(&self, aws: &Arc<AwsRun>) {
        // Steps being cancelled go before their cluster.
        aws.finish_cleanups().await;
        let known = state().cluster.lock().await.cluster_id.clone();
        let recorded = aws
            .run_journal()
            .and_then(|j| j.recorded_for_run(CLUSTER_KEY).ok().flatten())
            .and_then(|v| v["cluster_id"].as_str().map(str::to_string));
        let Some(cluster_id) = known.or(recorded) else {
            return;
        };
        if let Ok(described) = aws
            .emr
            .describe_cluster()
            .cluster_id(&cluster_id)
            .send()
            .await
            && described
                .cluster()
                .and_then(|c| c.status())
                .and_then(|s| s.state())
                .is_some_and(|s| {
                    matches!(
                        s,
                        ClusterState::Terminated | ClusterState::TerminatedWithErrors
                    )
                })
        {
            return;
        }
        match aws
            .emr
            .terminate_job_flows()
            .job_flow_ids(&cluster_id)
            .send()
            .await
        {
            Ok(_) => say(&format!("EMR cluster {cluster_id} terminated")),
            Err(e) => say(&format!(
                "warning: cannot terminate EMR cluster {cluster_id}: {}; terminate it in the console: {}",
                error_text(&e),
                cluster_link(aws, &cluster_id)
            )),
        }
        state().cluster.lock().await.cluster_id = None;
    }
}

struct Step {
    job: SparkJob,
    aws: Arc<AwsRun>,
}

#[async_trait]
impl TaskAction for Step {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let (emr, scripts_prefix, log_uri) = self.settings()?;
        let script = self.upload_scripts(attempt, &scripts_prefix).await?;
        if let Emr::Serverless {
            application_id,
            execution_role_arn,
        } = &emr
        {
            let span = crate::steps::step(&tracing::Span::current(), "emr.job_run", &script);
            let ran = self
                .serverless(attempt, application_id, execution_role_arn, &script)
                .instrument(span.clone())
                .await;
            crate::steps::finish(&span, &ran);
            ran?;
            return self.output().await;
        }
        let cluster_id = self.cluster(attempt, &emr).await?;
        let (step_id, reconnected) = self.step(attempt, &cluster_id, &script).await?;
        if reconnected {
            attempt.progress.change(&format!(
                "reconnected to EMR step {step_id} on {cluster_id}"
            ));
        }
        let mut guard = StopOnDrop::new(
            &self.aws,
            format!("EMR step {step_id}"),
            "cancelled",
            self.aws
                .emr
                .cancel_steps()
                .cluster_id(&cluster_id)
                .step_ids(&step_id)
                .send(),
        );
        let span = crate::steps::step(&tracing::Span::current(), "emr.step", &step_id);
        let ended = self
            .wait(attempt, &cluster_id, &step_id)
            .instrument(span.clone())
            .await;
        guard.armed = !matches!(ended, Ok(_) | Err(Ended::Step(_)));
        let ended = match ended {
            Ok(()) => Ok(()),
            Err(Ended::Step(failure)) | Err(Ended::Polling(failure)) => Err(failure),
        };
        crate::steps::finish(&span, &ended);
        if let Err(mut failure) = ended {
            if let Some(tail) = self
                .stderr_tail(log_uri.as_deref(), &cluster_id, &step_id)
                .await
            {
                failure.message += &format!("\nthe last lines of its stderr:\n{tail}");
            }
            return Err(failure);
        }
        self.output().await
    }
}

/// Why waiting on a step ended without success.
enum Ended {
    /// The step ended (failed, cancelled, interrupted).
    Step(TaskFailure),
    /// EMR could not be asked (the step may still run).
    Polling(TaskFailure),
}

impl Step {
    fn settings(&self) -> Result<(Emr, String, Option<String>), TaskFailure> {
        let settings = self.aws.settings::<EmrSpark>().ok_or_else(|| {
            TaskFailure::new("the DAG's [aws] section has no settings for emr_spark tasks")
        })?;
        let emr = settings.emr.clone().ok_or_else(|| {
            TaskFailure::new(
                "[aws] emr_mode is missing: add emr_mode = \"cluster\" and the cluster's settings",
            )
        })?;
        let prefix = settings.scripts_prefix.clone().ok_or_else(|| {
            TaskFailure::new("[aws] scripts_prefix is missing: add for example scripts_prefix = \"s3://my-bucket/scripts/\"")
        })?;
        let log_uri = match &emr {
            Emr::Cluster { log_uri, .. } => log_uri.clone(),
            Emr::Serverless { .. } => None,
        };
        Ok((emr, prefix, log_uri))
    }

    /// Uploads the script and its `py_files` under `prefix` (the objects
    /// the export references); the script's URI.
    async fn upload_scripts(&self, attempt: &Attempt, prefix: &str) -> Result<String, TaskFailure> {
        let mut script = None;
        for path in std::iter::once(&self.job.script).chain(&self.job.py_files) {
            let uri = if path.starts_with("s3://") {
                path.clone()
            } else {
                let local = attempt.dag_dir.join(path);
                let name = Path::new(path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| TaskFailure::new(format!("`{path}` names no file")))?;
                let uri: S3Uri = format!("{prefix}{name}")
                    .parse()
                    .map_err(|e| TaskFailure::new(format!("[aws] scripts_prefix {prefix}: {e}")))?;
                crate::s3_ingest::upload_file(&self.aws, &local, &uri, &attempt.progress).await?;
                uri.to_string()
            };
            script.get_or_insert(uri);
        }
        Ok(script.unwrap_or_default())
    }

    fn cluster_link(&self, cluster_id: &str) -> String {
        cluster_link(&self.aws, cluster_id)
    }

    /// `[aws] cluster_id`, checked to be up: the run adds its steps to it
    /// and leaves it running.
    async fn given_cluster(&self, id: &str) -> Result<String, TaskFailure> {
        let described = self
            .aws
            .emr
            .describe_cluster()
            .cluster_id(id)
            .send()
            .await
            .map_err(|e| {
                TaskFailure::new(format!(
                    "cannot describe [aws] cluster_id {id}: {}",
                    error_text(&e)
                ))
            })?;
        let state = described
            .cluster()
            .and_then(|c| c.status())
            .and_then(|s| s.state())
            .cloned();
        match state {
            Some(
                ClusterState::Starting
                | ClusterState::Bootstrapping
                | ClusterState::Running
                | ClusterState::Waiting,
            ) => Ok(id.to_string()),
            other => Err(TaskFailure::new(format!(
                "[aws] cluster_id {id} is {}: start a cluster and set its id, or remove cluster_id to let the run create one",
                other.map_or("in no known state".to_string(), |s| s.as_str().to_string())
            ))),
        }
    }

    /// The run's cluster: `[aws] cluster_id` if set; else the one this
    /// process or an earlier one of the run created, if it is still
    /// alive; else a new one.
    async fn cluster(&self, attempt: &Attempt, emr: &Emr) -> Result<String, TaskFailure> {
        if let Some(id) = self
            .aws
            .settings::<EmrSpark>()
            .and_then(|s| s.cluster_id.clone())
        {
            return self.given_cluster(&id).await;
        }
        let mut cluster = state().cluster.lock().await;
        let recorded = attempt
            .journal
            .recorded_for_run(CLUSTER_KEY)?
            .and_then(|v| v["cluster_id"].as_str().map(str::to_string));
        if let Some(id) = cluster.cluster_id.clone().or(recorded) {
            let described = self
                .aws
                .emr
                .describe_cluster()
                .cluster_id(&id)
                .send()
                .await
                .map_err(|e| {
                    TaskFailure::new(format!(
                        "cannot describe the run's EMR cluster {id}: {}",
                        error_text(&e)
                    ))
                })?;
            let alive = described
                .cluster()
                .and_then(|c| c.status())
                .and_then(|s| s.state())
                .is_some_and(|s| {
                    matches!(
                        s,
                        ClusterState::Starting
                            | ClusterState::Bootstrapping
                            | ClusterState::Running
                            | ClusterState::Waiting
                    )
                });
            if alive {
                cluster.cluster_id = Some(id.clone());
                return Ok(id);
            }
        }
        let Emr::Cluster {
            release_label,
            instance_type,
            instance_count,
            service_role,
            job_flow_role,
            log_uri,
            idle_timeout_seconds,
        } = emr
        else {
            return Err(TaskFailure::new("emr_mode is not \"cluster\""));
        };
        let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
        let created = self
            .aws
            .emr
            .run_job_flow()
            .name(format!("flux-{}-{}", self.aws.dag, attempt.run_id))
            .release_label(release_label)
            .applications(Application::builder().name("Spark").build())
            .service_role(service_role)
            .job_flow_role(job_flow_role)
            .set_log_uri(log_uri.clone())
            .visible_to_all_users(true)
            .auto_termination_policy(
                AutoTerminationPolicy::builder()
                    .idle_timeout(*idle_timeout_seconds as i64)
                    .build(),
            )
            .instances(
                JobFlowInstancesConfig::builder()
                    .instance_count(*instance_count as i32)
                    .master_instance_type(instance_type)
                    .slave_instance_type(instance_type)
                    .keep_job_flow_alive_when_no_steps(true)
                    .build(),
            )
            .tags(tag(DAG_TAG, &self.aws.dag))
            .tags(tag(RUN_TAG, &attempt.run_id))
            .send()
            .await
            .map_err(|e| {
                TaskFailure::new(format!("cannot create the EMR cluster: {}", error_text(&e)))
            })?;
        let id = created
            .job_flow_id()
            .ok_or_else(|| TaskFailure::new("RunJobFlow gave no cluster id"))?
            .to_string();
        // Recorded before anything waits on it: a crash from here on
        // leaves a cluster the resume (or the end of the run) finds.
        let console = self.cluster_link(&id);
        attempt
            .journal
            .record_for_run(CLUSTER_KEY, &json!({"cluster_id": id, "console": console}))?;
        cluster.cluster_id = Some(id.clone());
        attempt.progress.change(&format!(
            "EMR cluster {id} created for run {} ({console})",
            attempt.run_id
        ));
        Ok(id)
    }

    /// The task's step: the one recorded for it if it is still running or
    /// already done on this cluster (a resume), else a new one. Whether
    /// it was found rather than added.
    async fn step(
        &self,
        attempt: &Attempt,
        cluster_id: &str,
        script: &str,
    ) -> Result<(String, bool), TaskFailure> {
        if let Some(recorded) = attempt.journal.recorded(STEP_KEY)?
            && recorded["cluster_id"].as_str() == Some(cluster_id)
            && let Some(step_id) = recorded["step_id"].as_str()
        {
            let state = self.step_state(cluster_id, step_id).await;
            if matches!(
                state,
                Ok(StepState::Pending | StepState::Running | StepState::Completed)
            ) {
                return Ok((step_id.to_string(), true));
            }
        }
        let conf: Vec<String> = self
            .job
            .spark_conf
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let py_files: Vec<String> = self
            .job
            .py_files
            .iter()
            .map(|p| match p.starts_with("s3://") {
                true => p.clone(),
                false => {
                    let name = Path::new(p)
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or(p);
                    format!("{}{name}", script_prefix(script))
                }
            })
            .collect();
        let args = spark_submit_args(script.to_string(), &py_files, &conf, &self.job.args);
        let added = self
            .aws
            .emr
            .add_job_flow_steps()
            .job_flow_id(cluster_id)
            .steps(
                StepConfig::builder()
                    .name(&attempt.task_id)
                    .action_on_failure(ActionOnFailure::Continue)
                    .hadoop_jar_step(
                        HadoopJarStepConfig::builder()
                            .jar("command-runner.jar")
                            .set_args(Some(args))
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                TaskFailure::new(format!(
                    "cannot add the step to EMR cluster {cluster_id}: {}",
                    error_text(&e)
                ))
            })?;
        let step_id = added
            .step_ids()
            .first()
            .ok_or_else(|| TaskFailure::new("AddJobFlowSteps gave no step id"))?
            .clone();
        attempt.journal.record(
            STEP_KEY,
            &json!({
                "cluster_id": cluster_id,
                "step_id": step_id,
                "console": self.cluster_link(cluster_id),
            }),
        )?;
        Ok((step_id, false))
    }

    async fn step_state(
        &self,
        cluster_id: &str,
        step_id: &str,
    ) -> Result<
        StepState,
        aws_sdk_emr::error::SdkError<aws_sdk_emr::operation::describe_step::DescribeStepError>,
    > {
        let described = self
            .aws
            .emr
            .describe_step()
            .cluster_id(cluster_id)
            .step_id(step_id)
            .send()
            .await?;
        Ok(described
            .step()
            .and_then(|s| s.status())
            .and_then(|s| s.state())
            .cloned()
            .unwrap_or(StepState::Pending))
    }

    /// Polls the step until it ends; logs each change of state.
    async fn wait(&self, attempt: &Attempt, cluster_id: &str, step_id: &str) -> Result<(), Ended> {
        let poll = Poll::from_env(POLL_SECONDS);
        let mut last: Option<StepState> = None;
        let mut throttled_in_a_row = 0;
        loop {
            let described = self
                .aws
                .emr
                .describe_step()
                .cluster_id(cluster_id)
                .step_id(step_id)
                .send()
                .await;
            let step = match described {
                Ok(d) => {
                    throttled_in_a_row = 0;
                    d.step().cloned()
                }
                Err(e) if throttled(&e) => {
                    throttled_in_a_row += 1;
                    tokio::time::sleep(poll.delay(throttled_in_a_row)).await;
                    continue;
                }
                Err(e) => {
                    return Err(Ended::Polling(TaskFailure::new(format!(
                        "cannot ask EMR about step {step_id} on {cluster_id}: {}",
                        error_text(&e)
                    ))));
                }
            };
            let status = step.as_ref().and_then(|s| s.status());
            let state = status
                .and_then(|s| s.state())
                .cloned()
                .unwrap_or(StepState::Pending);
            if last.as_ref() != Some(&state) {
                tracing::info!(
                    target: "flux_engine::trace",
                    { flux.emr.step_id = step_id, flux.emr.state = state.as_str() },
                    "emr.step.state"
                );
                attempt.progress.change(&format!(
                    "EMR step {step_id} on {cluster_id}: {}",
                    state.as_str()
                ));
                last = Some(state.clone());
            }
            match state {
                StepState::Completed => return Ok(()),
                StepState::Failed | StepState::Cancelled | StepState::Interrupted => {
                    let details = status.and_then(|s| s.failure_details());
                    let reason = details
                        .map(|d| {
                            [d.reason(), d.message()]
                                .into_iter()
                                .flatten()
                                .collect::<Vec<_>>()
                                .join(": ")
                        })
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "EMR gave no reason".into());
                    let log = details
                        .and_then(|d| d.log_file())
                        .map(|l| format!("; its log: {l}"))
                        .unwrap_or_default();
                    return Err(Ended::Step(TaskFailure::new(format!(
                        "EMR step {step_id} on cluster {cluster_id} ended {}: {reason}{log} ({})",
                        state.as_str(),
                        self.cluster_link(cluster_id)
                    ))));
                }
                _ => tokio::time::sleep(poll.delay(0)).await,
            }
        }
    }

    /// The last lines of the step's `stderr.gz` under `log_uri`, if EMR
    /// has written it (it can take a while: a few tries).
    async fn stderr_tail(
        &self,
        log_uri: Option<&str>,
        cluster_id: &str,
        step_id: &str,
    ) -> Option<String> {
        let base = log_uri?;
        let base = if base.ends_with('/') {
            base.to_string()
        } else {
            format!("{base}/")
        };
        let uri: S3Uri = format!("{base}{cluster_id}/steps/{step_id}/stderr.gz")
            .parse()
            .ok()?;
        for _ in 0..3 {
            if let Ok(object) = self
                .aws
                .s3
                .get_object()
                .bucket(uri.bucket())
                .key(uri.key())
                .send()
                .await
                && let Ok(bytes) = object.body.collect().await
            {
                let mut text = String::new();
                let bytes = bytes.into_bytes();
                let mut decoder = flate2::read::GzDecoder::new(&bytes[..]);
                decoder.read_to_string(&mut text).ok()?;
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n");
                return Some(format!("({uri})\n{tail}"));
            }
            tokio::time::sleep(
                Poll::from_env(POLL_SECONDS)
                    .interval
                    .min(Duration::from_secs(5)),
            )
            .await;
        }
        None
    }

    /// The task's output: the object `output_json` names, read from S3.
    async fn output(&self) -> Result<Option<serde_json::Value>, TaskFailure> {
        let Some(uri) = &self.job.output_json else {
            return Ok(None);
        };
        let failed =
            |e: String| TaskFailure::new(format!("cannot read the job's output_json {uri}: {e}"));
        let object = self
            .aws
            .s3
            .get_object()
            .bucket(uri.bucket())
            .key(uri.key())
            .send()
            .await
            .map_err(|e| failed(error_text(&e)))?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?;
        serde_json::from_slice(&bytes.into_bytes())
            .map(Some)
            .map_err(|e| failed(format!("not JSON: {e}")))
    }
}

/// The journal key of a task's EMR Serverless job run.
const JOB_RUN_KEY: &str = "emr.job_run";

impl Step {
    /// The job as an EMR Serverless job run of `application_id`, as the
    /// export's state starts it: started (or, after a crash, found again)
    /// and polled until it ends.
    async fn serverless(
        &self,
        attempt: &Attempt,
        application_id: &str,
        execution_role_arn: &str,
        script: &str,
    ) -> Result<(), TaskFailure> {
        use aws_sdk_emrserverless::types::{JobDriver, JobRunState, SparkSubmit};
        let client = &self.aws.emr_serverless;
        let link = self.aws.console_link(&format!(
            "emr/home?region={}#/serverless-applications/{application_id}",
            self.aws.region
        ));
        let mut job_run_id = None;
        if let Some(recorded) = attempt.journal.recorded(JOB_RUN_KEY)?
            && recorded["application_id"].as_str() == Some(application_id)
            && let Some(id) = recorded["job_run_id"].as_str()
            && let Ok(found) = client
                .get_job_run()
                .application_id(application_id)
                .job_run_id(id)
                .send()
                .await
            && !matches!(
                found.job_run().map(|r| r.state()),
                Some(JobRunState::Failed | JobRunState::Cancelled | JobRunState::Cancelling)
            )
        {
            attempt
                .progress
                .change(&format!("reconnected to EMR Serverless job run {id}"));
            job_run_id = Some(id.to_string());
        }
        let job_run_id = match job_run_id {
            Some(id) => id,
            None => {
                let conf: Vec<String> = self
                    .job
                    .spark_conf
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let py_files: Vec<String> = self
                    .job
                    .py_files
                    .iter()
                    .map(|p| match p.starts_with("s3://") {
                        true => p.clone(),
                        false => {
                            let name = Path::new(p)
                                .file_name()
                                .and_then(|n| n.to_str())
                                .unwrap_or(p);
                            format!("{}{name}", script_prefix(script))
                        }
                    })
                    .collect();
                let driver = SparkSubmit::builder()
                    .entry_point(script)
                    .set_entry_point_arguments(Some(self.job.args.clone()))
                    .set_spark_submit_parameters(super::sfn::spark_submit_parameters(
                        &py_files, &conf,
                    ))
                    .build()
                    .map_err(|e| TaskFailure::new(format!("the job run: {e}")))?;
                let started = client
                    .start_job_run()
                    .application_id(application_id)
                    .execution_role_arn(execution_role_arn)
                    .name(&attempt.task_id)
                    .client_token(crate::athena_query::client_token(&attempt.attempt_id))
                    .job_driver(JobDriver::SparkSubmit(driver))
                    .tags(DAG_TAG, &self.aws.dag)
                    .tags(RUN_TAG, &attempt.run_id)
                    .send()
                    .await
                    .map_err(|e| {
                        TaskFailure::new(format!(
                            "cannot start the EMR Serverless job run on application {application_id}: {}",
                            error_text(&e)
                        ))
                    })?;
                let id = started.job_run_id().to_string();
                attempt.journal.record(
                    JOB_RUN_KEY,
                    &json!({"application_id": application_id, "job_run_id": id, "console": link}),
                )?;
                id
            }
        };
        let mut guard = StopOnDrop::new(
            &self.aws,
            format!("EMR Serverless job run {job_run_id}"),
            "cancelled",
            client
                .cancel_job_run()
                .application_id(application_id)
                .job_run_id(&job_run_id)
                .send(),
        );
        let poll = Poll::from_env(POLL_SECONDS);
        let mut last = None;
        let mut throttled_in_a_row = 0;
        let ended = loop {
            let found = match client
                .get_job_run()
                .application_id(application_id)
                .job_run_id(&job_run_id)
                .send()
                .await
            {
                Ok(found) => {
                    throttled_in_a_row = 0;
                    found
                }
                Err(e) if throttled(&e) => {
                    throttled_in_a_row += 1;
                    tokio::time::sleep(poll.delay(throttled_in_a_row)).await;
                    continue;
                }
                Err(e) => {
                    break Err(TaskFailure::new(format!(
                        "cannot ask EMR Serverless about job run {job_run_id}: {}",
                        error_text(&e)
                    )));
                }
            };
            let Some(run) = found.job_run() else {
                tokio::time::sleep(poll.delay(0)).await;
                continue;
            };
            let state = run.state().clone();
            if last.as_ref() != Some(&state) {
                tracing::info!(
                    target: "flux_engine::trace",
                    { flux.emr.job_run_id = job_run_id.as_str(), flux.emr.state = state.as_str() },
                    "emr.job_run.state"
                );
                attempt.progress.change(&format!(
                    "EMR Serverless job run {job_run_id}: {}",
                    state.as_str()
                ));
                last = Some(state.clone());
            }
            match state {
                JobRunState::Success => break Ok(()),
                JobRunState::Failed | JobRunState::Cancelled => {
                    guard.armed = false;
                    break Err(TaskFailure::new(format!(
                        "EMR Serverless job run {job_run_id} ended {}: {} ({link})",
                        state.as_str(),
                        Some(run.state_details())
                            .filter(|d| !d.is_empty())
                            .unwrap_or("EMR Serverless gave no reason")
                    )));
                }
                _ => tokio::time::sleep(poll.delay(0)).await,
            }
        };
        if ended.is_ok() {
            guard.armed = false;
        }
        ended
    }
}

/// The cluster's page in the EMR console.
fn cluster_link(aws: &AwsRun, cluster_id: &str) -> String {
    aws.console_link(&format!(
        "emr/home?region={}#/clusterDetails/{cluster_id}",
        aws.region
    ))
}

/// `s3://bucket/scripts/` of `s3://bucket/scripts/job.py`.
fn script_prefix(script: &str) -> &str {
    match script.rfind('/') {
        Some(i) => &script[..=i],
        None => script,
    }
}

//! `s3_ingest` in Step Functions: in production the data is already in S3
//! (the files are uploaded when the state machine is deployed, to the keys
//! the engine would use), so the task *verifies* it: one
//! `aws-sdk:s3:headObject` per object, which succeeds when the object is
//! there and fails the task (after its retries) when it is not.
//!
//! The objects are the ones the local run would upload, listed by the
//! same code ([`super::files`]); a source that does not exist on the
//! exporting machine is taken as a file of that name. One object is a
//! single `Task` state named after the task; several are the branches of
//! a `Parallel` named after the task, checked at once.
//!
//! IAM: `s3:GetObject` (what `HeadObject` needs) on each object, in the
//! statement `S3ReadObjects`.

use exporters::sfn::cfn::{Deployment, Upload};
use exporters::sfn::iam::Grant;
use exporters::sfn::json::{Json, Obj};
use exporters::sfn::{StepFunctions, TaskContext, TaskExport};

use super::files::{self, Absent};
use super::{S3Ingest, S3IngestConfig};

/// More objects than this is an error: each is a state, and a state
/// machine definition is limited in size (1 MB).
pub const MAX_OBJECTS: usize = 200;

impl StepFunctions for S3Ingest {
    /// Uploads (single or multipart) and the `HeadObject` that decides
    /// a skip, on the destination prefix.
    fn run_grants(
        &self,
        task: &TaskContext,
        config: &S3IngestConfig,
        _settings: &(),
    ) -> Vec<Grant> {
        crate::aws::object_grants(
            "RunUploads",
            task.arns(),
            &config.destination.as_prefix(),
            &["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
        )
    }

    type Settings = ();

    fn translate(
        &self,
        task: &TaskContext,
        config: &S3IngestConfig,
        _settings: &(),
    ) -> Result<TaskExport, String> {
        let destination = config.destination.as_prefix();
        let (bucket, prefix) = (destination.bucket(), destination.key());
        let found = local_files(task, config)?;
        let keys: Vec<String> = found
            .iter()
            .map(|f| format!("{prefix}{}", f.relative))
            .collect();
        if keys.is_empty() {
            return Err(task.error(
                "its sources hold no file to upload, so there is nothing to verify in production",
            ));
        }
        if keys.len() > MAX_OBJECTS {
            return Err(task.error(format!(
                "{} objects to verify; the export checks at most {MAX_OBJECTS} per task: ingest fewer, larger files or split the task",
                keys.len()
            )));
        }
        let grants = vec![Grant::statement(
            "S3ReadObjects",
            &["s3:GetObject"],
            keys.iter()
                .map(|key| task.arns().s3(&format!("{bucket}/{key}"))),
        )];
        let head = |key: &str| {
            task.task_state(
                format!("Checks that s3://{bucket}/{key} is there"),
                "arn:aws:states:::aws-sdk:s3:headObject",
                Obj::new().with("Bucket", bucket).with("Key", key),
            )
        };
        if let [key] = keys.as_slice() {
            let state = head(key).with(
                "Comment",
                format!("{}; verifies s3://{bucket}/{key}", task.comment()),
            );
            return Ok(TaskExport::task(state).with_grants(grants));
        }
        let branches: Vec<Json> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let name = task.helper(&format!("Head{}", i + 1));
                Obj::new()
                    .with("StartAt", name.as_str())
                    .with(
                        "States",
                        Obj::new().with(&name, head(key).with("End", true)),
                    )
                    .into()
            })
            .collect();
        let state = Obj::new()
            .with("Type", "Parallel")
            .with(
                "Comment",
                format!(
                    "{}; verifies {} objects under s3://{bucket}/{prefix}",
                    task.comment(),
                    keys.len()
                ),
            )
            .with("Branches", branches)
            .with("ResultPath", Json::Null);
        Ok(TaskExport::task(state).with_grants(grants))
    }

    /// The files the state machine verifies, for `deploy --upload-data`.
    fn deployment(
        &self,
        _settings: &(),
        tasks: &[(&TaskContext, S3IngestConfig)],
    ) -> Result<Deployment, String> {
        let mut deployment = Deployment::default();
        for (task, config) in tasks {
            let destination = config.destination.as_prefix();
            for file in local_files(task, config)? {
                deployment.uploads.push(Upload {
                    local: file.path,
                    uri: format!(
                        "s3://{}/{}{}",
                        destination.bucket(),
                        destination.key(),
                        file.relative
                    ),
                    data: true,
                });
            }
        }
        Ok(deployment)
    }
}

/// The files the local run would upload, listed by the same code; a
/// source that does not exist on this machine is taken as a file of that
/// name.
fn local_files(
    task: &TaskContext,
    config: &S3IngestConfig,
) -> Result<Vec<files::SourceFile>, String> {
    let sources: Vec<String> = config.source.0.iter().map(|s| task.local(s)).collect();
    files::list(
        &sources,
        &task.dag.dir,
        &config.include.0,
        &config.destination.as_prefix(),
        Absent::IsAFile,
    )
    .map_err(|e| task.error(e.message))
}

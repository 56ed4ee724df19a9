//! `shell`: runs `command` with `sh -c` in the DAG file's folder.
//!
//! ```toml
//! [tasks.extract]
//! type = "shell"
//! command = "echo ${params.greeting} > out.txt"
//! env = { LANG = "C" }        # optional, added to the inherited environment
//! ```
//!
//! The command sees `FLUX_RUN_ID`, `FLUX_TASK_ID`, `FLUX_ATTEMPT` (1, 2, …),
//! `FLUX_ATTEMPT_ID`, `FLUX_SCRATCH_DIR` (an empty folder of its own),
//! `FLUX_INPUTS` (a JSON file with the outputs of its dependencies, by task
//! id) and `FLUX_OUTPUT` (a file path: JSON written there becomes the task's
//! output). Exit code 0 is success. stdout and stderr go to
//! `STATE_DIR/runs/RUN/TASK/ATTEMPT/{stdout,stderr}.log`.
//!
//! The command runs in a process group of its own; a timeout or a cancel
//! kills the whole group, so `sleep 100 | cat` does not outlive its task.

mod config;

use std::sync::Arc;

use async_trait::async_trait;
use engine::{Attempt, Kind, TaskAction, TaskFailure};
use exporters::sfn::{StepFunctions, TaskContext, TaskExport};

use crate::process::{Logs, failure, run_logged};
pub use config::ShellConfig;

pub struct Shell;

impl Kind for Shell {
    const NAME: &'static str = "shell";
    const SUMMARY: &'static str =
        "runs `command` with sh -c in the DAG file's folder; exit code 0 is success";
    type Config = ShellConfig;

    fn action(&self, config: ShellConfig) -> Arc<dyn TaskAction> {
        Arc::new(ShellAction(config))
    }
}

struct ShellAction(ShellConfig);

/// `shell` has no production form: a command on the engine's machine has
/// no counterpart in a managed service that the export could choose for
/// the user.
impl StepFunctions for Shell {
    type Settings = ();

    fn not_exportable(&self, task_id: &str) -> Option<String> {
        Some(format!(
            "task `{task_id}` (shell): shell tasks have no production equivalent in Step Functions (the command runs on this machine); \
             use emr_spark for a Spark job, athena_query for SQL, s3_ingest for files that must be in S3, \
             report for the report, or noop for a placeholder"
        ))
    }

    fn translate(
        &self,
        task: &TaskContext,
        _config: &ShellConfig,
        _settings: &(),
    ) -> Result<TaskExport, String> {
        Err(self
            .not_exportable(task.id())
            .unwrap_or_else(|| task.error("cannot be exported")))
    }
}

#[async_trait]
impl TaskAction for ShellAction {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let dir = &attempt.log_dir;
        std::fs::create_dir_all(&attempt.scratch_dir).map_err(|e| {
            failure(
                &format!("cannot create {}", attempt.scratch_dir.display()),
                e,
            )
        })?;
        let logs = Logs::in_dir(dir);
        let output_path = dir.join("output.json");
        let inputs_path = dir.join("inputs.json");
        let inputs =
            serde_json::to_vec(&attempt.inputs).map_err(|e| failure("cannot encode inputs", e))?;
        std::fs::write(&inputs_path, inputs)
            .map_err(|e| failure(&format!("cannot write {}", inputs_path.display()), e))?;

        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(&self.0.command)
            .current_dir(&attempt.dag_dir)
            .envs(&self.0.env)
            .env("FLUX_RUN_ID", &attempt.run_id)
            .env("FLUX_TASK_ID", &attempt.task_id)
            .env("FLUX_ATTEMPT", attempt.number.to_string())
            .env("FLUX_ATTEMPT_ID", &attempt.attempt_id)
            .env("FLUX_SCRATCH_DIR", &attempt.scratch_dir)
            .env("FLUX_INPUTS", &inputs_path)
            .env("FLUX_OUTPUT", &output_path);
        if let Some(traceparent) = &attempt.traceparent {
            command.env("TRACEPARENT", traceparent);
        }
        run_logged(command, "command", &logs).await?;
        match std::fs::read(&output_path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                TaskFailure::new(format!(
                    "the command wrote invalid JSON to $FLUX_OUTPUT ({}): {e}",
                    output_path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failure(
                &format!("cannot read {}", output_path.display()),
                e,
            )),
        }
    }
}

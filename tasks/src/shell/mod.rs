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
        let bytes = match read_output_file(&output_path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(message) => return Err(TaskFailure::new(message)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            TaskFailure::new(format!(
                "the command wrote invalid JSON to $FLUX_OUTPUT ({}): {e}",
                output_path.display()
            ))
        })
    }

    /// A command's attempt opens no step span and records no event: what
    /// it does is in its logs, and its span (rebuilt from the attempts
    /// row) still gives its `TRACEPARENT`.
    fn traces_inside(&self) -> bool {
        false
    }
}

/// `$FLUX_OUTPUT` holding more than this is refused unread: outputs are
/// limited to [`engine::scheduler::MAX_OUTPUT_BYTES`] once compacted, and
/// this leaves room for any pretty-printing a command may do.
pub const MAX_OUTPUT_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The bytes of `$FLUX_OUTPUT` (`None` if the command wrote none), or a
/// message saying why they cannot be the output. The command controls
/// what is at that path: a FIFO or a device there must get an error, not
/// hang the attempt or fill memory.
fn read_output_file(path: &std::path::Path) -> Result<Option<Vec<u8>>, String> {
    use engine::read_limit::{ReadLimitError, describe, read_limited_from};
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO nobody writes to returns at once instead
    // of waiting for a writer; it changes nothing for a regular file.
    let file = match std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let kind = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .file_type();
    if !kind.is_file() {
        return Err(format!(
            "$FLUX_OUTPUT ({}) is {}, not a regular file: write the output's JSON to that path as a plain file",
            path.display(),
            describe(&kind)
        ));
    }
    read_limited_from(file, MAX_OUTPUT_FILE_BYTES)
        .map(Some)
        .map_err(|e| match e {
            ReadLimitError::TooLarge { .. } => format!(
                "$FLUX_OUTPUT ({}) holds more than {MAX_OUTPUT_FILE_BYTES} bytes; outputs are limited to {} bytes (as in Step Functions): write large results to a file and pass its path",
                path.display(),
                engine::scheduler::MAX_OUTPUT_BYTES
            ),
            ReadLimitError::Io(e) => format!("cannot read {}: {e}", path.display()),
        })
}

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

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use engine::{Attempt, FieldError, Fields, TaskAction, TaskFailure, TaskKind};

use crate::process::{Logs, failure, run_logged};

pub struct Shell;

impl TaskKind for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn summary(&self) -> &'static str {
        "runs `command` with sh -c in the DAG file's folder; exit code 0 is success"
    }

    fn parse(&self, fields: &Fields) -> Result<Arc<dyn TaskAction>, FieldError> {
        let command = fields.required_str("command")?;
        if command.trim().is_empty() {
            return Err(FieldError::field("command", "`command` is empty")
                .help("give the shell command to run"));
        }
        let env: BTreeMap<String, String> = fields.optional("env")?.unwrap_or_default();
        Ok(Arc::new(ShellAction { command, env }))
    }
}

struct ShellAction {
    command: String,
    env: BTreeMap<String, String>,
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
            .arg(&self.command)
            .current_dir(&attempt.dag_dir)
            .envs(&self.env)
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

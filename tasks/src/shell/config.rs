//! A `shell` task's fields.

use std::collections::BTreeMap;

use engine::{FieldError, TaskConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ShellConfig {
    /// Run with `sh -c` in the DAG file's folder.
    pub command: String,
    /// Added to the inherited environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl TaskConfig for ShellConfig {
    fn check(&self) -> Result<(), FieldError> {
        if self.command.trim().is_empty() {
            return Err(FieldError::field("command", "`command` is empty")
                .help("give the shell command to run"));
        }
        Ok(())
    }
}

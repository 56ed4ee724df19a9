//! The contract between the engine and a kind of task.
//!
//! A [`TaskKind`] reads its own fields from the task's TOML table and turns
//! them into a [`TaskAction`], which the scheduler runs once per attempt. The
//! engine never looks inside a kind's fields, so adding a kind touches its
//! own folder and one line that registers it in a [`Registry`].
//!
//! # The idempotency contract
//!
//! The engine runs a task *at least once*: if the engine is killed after a
//! task did its work but before the success was committed, resume runs the
//! task again. Each attempt gets its own `attempt_id`
//! (`RUN_ID.TASK_ID.N`) and its own empty scratch folder; a kind whose side
//! effect must not happen twice keys it on `run_id` and `task_id` (stable
//! across attempts and resumes) or checks whether its output already exists.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// A kind of task: `shell`, `noop`, and later the AWS-shaped kinds.
pub trait TaskKind: Send + Sync {
    /// The `type = "..."` name in a DAG file.
    fn name(&self) -> &'static str;

    /// One line for `flux-engine validate` and the docs.
    fn summary(&self) -> &'static str;

    /// Reads the kind's own fields (already substituted) and checks them.
    /// Fields the kind never asks for are reported as unknown by the engine.
    fn parse(&self, fields: &Fields) -> Result<Arc<dyn TaskAction>, FieldError>;
}

/// A parsed task, ready to run any number of attempts.
#[async_trait]
pub trait TaskAction: Send + Sync {
    /// Runs one attempt. The future may be dropped at any await point (on a
    /// timeout or a cancel); an action that starts processes must make sure
    /// dropping it stops them.
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure>;
}

/// What one attempt of a task knows about itself.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub run_id: String,
    pub task_id: String,
    /// 1-based; continues counting across resumes.
    pub number: u32,
    /// `RUN_ID.TASK_ID.N`, unique per attempt: use it as an idempotency key.
    pub attempt_id: String,
    /// The folder of the DAG file, where relative paths start.
    pub dag_dir: PathBuf,
    /// Where this attempt's logs go (`stdout.log`, `stderr.log`).
    pub log_dir: PathBuf,
    /// An empty folder that belongs to this attempt alone.
    pub scratch_dir: PathBuf,
    /// The state dir's root: where local backends keep what outlives a run
    /// (the local S3 buckets, the local catalog).
    pub state_root: PathBuf,
    /// The outputs of the task's dependencies, by task id.
    pub inputs: BTreeMap<String, serde_json::Value>,
    /// The attempt span's W3C `traceparent` when the run is traced: task
    /// kinds pass it to their processes as `TRACEPARENT`, so that a
    /// script using OpenTelemetry joins the trace.
    pub traceparent: Option<String>,
}

/// Why an attempt failed, in words for the person reading `show`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct TaskFailure {
    pub message: String,
}

impl TaskFailure {
    pub fn new(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
        }
    }
}

/// A problem with one of a task's fields.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct FieldError {
    /// The field at fault; `None` for the task as a whole.
    pub field: Option<String>,
    pub message: String,
    pub help: Option<String>,
}

impl FieldError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: Some(field.to_string()),
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A task's own fields, with a record of which ones the kind asked for so
/// that every other one can be reported as an unknown field.
pub struct Fields {
    table: toml::Table,
    asked: RefCell<Vec<&'static str>>,
}

impl Fields {
    pub fn new(table: toml::Table) -> Self {
        Fields {
            table,
            asked: RefCell::new(Vec::new()),
        }
    }

    fn get(&self, name: &'static str) -> Option<&toml::Value> {
        self.asked.borrow_mut().push(name);
        self.table.get(name)
    }

    pub fn optional_str(&self, name: &'static str) -> Result<Option<String>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(FieldError::field(
                name,
                format!("`{name}` must be a string, found {}", other.type_str()),
            )),
        }
    }

    pub fn required_str(&self, name: &'static str) -> Result<String, FieldError> {
        self.optional_str(name)?.ok_or_else(|| {
            FieldError {
                field: None,
                message: format!("missing field `{name}`"),
                help: None,
            }
            .help(format!("add `{name} = \"...\"` to the task"))
        })
    }

    /// Deserializes one field with serde, for kinds with structured fields.
    pub fn optional<T: DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => value
                .clone()
                .try_into()
                .map(Some)
                .map_err(|e: toml::de::Error| {
                    FieldError::field(name, format!("`{name}`: {}", e.message()))
                }),
        }
    }

    /// A field that holds one string or a list of strings.
    pub fn optional_strings(&self, name: &'static str) -> Result<Option<Vec<String>>, FieldError> {
        let wrong = |found: &str| {
            FieldError::field(
                name,
                format!("`{name}` must be a string or a list of strings, found {found}"),
            )
        };
        match self.get(name) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(wrong(&format!("a list holding {}", other.type_str()))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(wrong(other.type_str())),
        }
    }

    /// Field names present in the table that the kind never asked for.
    pub fn unknown(&self) -> Vec<String> {
        let asked = self.asked.borrow();
        self.table
            .keys()
            .filter(|k| !asked.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    /// Field names the kind asked for, for "did you mean" suggestions.
    pub fn asked(&self) -> Vec<&'static str> {
        self.asked.borrow().clone()
    }
}

/// The task kinds a DAG may use, by name.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn TaskKind>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, kind: Arc<dyn TaskKind>) -> &mut Self {
        self.kinds.insert(kind.name(), kind);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn TaskKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn TaskKind>> {
        self.kinds.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_report_what_the_kind_did_not_ask_for() {
        let fields = Fields::new(toml::from_str("command = 'x'\ncomand = 'y'").unwrap());
        assert_eq!(fields.required_str("command").unwrap(), "x");
        assert_eq!(fields.unknown(), vec!["comand".to_string()]);
        assert_eq!(fields.asked(), vec!["command"]);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let fields = Fields::new(toml::from_str("command = 3").unwrap());
        let err = fields.required_str("command").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("command"));
        assert!(err.message.contains("must be a string"), "{err}");
        let missing = Fields::new(toml::Table::new())
            .required_str("command")
            .unwrap_err();
        assert!(missing.message.contains("missing field `command`"));
    }
}

//! One task on its way to Step Functions: what a kind's translation is
//! given ([`TaskContext`]) and what it gives back ([`TaskExport`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::Dag;
use engine::config::TaskConfig;
use engine::dag::TaskDef;
use engine::template::{self, Vars};

use super::iam::{Arns, Grant, S3Location};
use super::json::{Json, Obj};
use super::params::Markers;

/// Stands for `${run.id}` while a task's fields are substituted: a NUL
/// cannot occur in TOML text, so finding one afterwards means the field
/// used a value that exists only when the engine runs the task.
const NO_RUN_ID: &str = "\u{0}";

/// One DAG task, ready to translate: its fields substituted with the
/// parameters' values, or with markers standing for them when the state
/// machine reads them from its input ([`super::params`]).
pub struct TaskContext<'a> {
    pub dag: &'a Dag,
    pub task: &'a TaskDef,
    /// The kind's fields with `${...}` substituted.
    pub fields: toml::Table,
    /// `timeout_seconds`, for `TimeoutSeconds`.
    pub timeout: Option<u64>,
    arns: &'a Arns,
    /// The markers in the fields and the parameters' values, when the
    /// fields hold markers.
    symbolic: Option<(&'a Markers, &'a BTreeMap<String, String>)>,
    /// Where each task's output is in production, by task id.
    outputs: &'a BTreeMap<String, ProductionOutput>,
}

/// Where a task's output is in production, for the tasks that read it
/// there (the report reads query results and counts from S3).
#[derive(Debug, Clone, PartialEq)]
pub enum ProductionOutput {
    /// Query results: each execution's under `PREFIX` + the execution's
    /// name + `/`.
    QueryResults { prefix: String },
    /// One object (`s3://…`).
    Object { uri: String },
}

impl<'a> TaskContext<'a> {
    pub(crate) fn new(
        dag: &'a Dag,
        task: &'a TaskDef,
        arns: &'a Arns,
        symbolic: Option<(&'a Markers, &'a BTreeMap<String, String>)>,
        outputs: &'a BTreeMap<String, ProductionOutput>,
    ) -> Result<Self, String> {
        let vars = Vars {
            params: dag.params.clone(),
            run_id: NO_RUN_ID.into(),
            task_id: task.id.clone(),
            dag_dir: dag.dir.display().to_string(),
        };
        let fields = template::substitute_table(&task.fields, &vars)
            .map_err(|e| format!("task `{}`: {}; {}", task.id, e.message, e.help))?;
        for (key, value) in &fields {
            if engine::dag::mentions(value, NO_RUN_ID) {
                return Err(format!(
                    "task `{}`, field `{key}`: `${{run.id}}` has no value at export time (each Step Functions execution is a run); use a parameter instead",
                    task.id
                ));
            }
        }
        Ok(TaskContext {
            dag,
            task,
            fields,
            timeout: task.timeout.map(|t| t.as_secs().max(1)),
            arns,
            symbolic,
            outputs,
        })
    }

    /// The task's fields as its kind's typed config.
    pub fn config<C: TaskConfig>(&self) -> Result<C, String> {
        engine::config::parse::<C>(&self.fields).map_err(|e| self.error(e.message))
    }

    /// The task's fields as its kind's typed config, parameters written in
    /// with their values at export even where the fields hold markers.
    pub fn config_with_values<C: TaskConfig>(&self) -> Result<C, String> {
        let fields = match self.symbolic {
            Some(_) => self.with_values(&toml::Value::Table(self.fields.clone())),
            None => return self.config(),
        };
        let toml::Value::Table(fields) = fields else {
            return self.config();
        };
        engine::config::parse::<C>(&fields).map_err(|e| self.error(e.message))
    }

    fn with_values(&self, value: &toml::Value) -> toml::Value {
        match value {
            toml::Value::String(s) => toml::Value::String(self.local(s)),
            toml::Value::Array(items) => {
                toml::Value::Array(items.iter().map(|v| self.with_values(v)).collect())
            }
            toml::Value::Table(table) => toml::Value::Table(
                table
                    .iter()
                    .map(|(k, v)| (k.clone(), self.with_values(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `text` as a value on this machine, for what the export reads here
    /// (a file's path): parameter markers replaced by their values.
    pub fn local(&self, text: &str) -> String {
        match self.symbolic {
            Some((markers, values)) => markers.concrete(text, values),
            None => text.to_string(),
        }
    }

    /// Partition, region and account, for the ARNs of grants.
    pub fn arns(&self) -> &Arns {
        self.arns
    }

    /// Where the dependency `id`'s output is in production, if anything
    /// reads it there.
    pub fn upstream_output(&self, id: &str) -> Option<&ProductionOutput> {
        self.outputs.get(id)
    }

    pub fn id(&self) -> &str {
        &self.task.id
    }

    /// `id.suffix`, the name of one of the task's helper states.
    pub fn helper(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.task.id)
    }

    pub fn error(&self, message: impl std::fmt::Display) -> String {
        format!("task `{}` ({}): {message}", self.task.id, self.task.kind)
    }

    /// The task's description, or what it is, for `Comment`s.
    pub fn comment(&self) -> String {
        match &self.task.description {
            Some(d) => format!("{} task `{}`: {d}", self.task.kind, self.task.id),
            None => format!("{} task `{}`", self.task.kind, self.task.id),
        }
    }

    /// A `Task` state with the task's `TimeoutSeconds`; `ResultPath` null
    /// (the state data passes through unchanged) unless the caller sets it.
    pub fn task_state(&self, comment: impl Into<String>, resource: &str, parameters: Obj) -> Obj {
        Obj::new()
            .with("Type", "Task")
            .with("Comment", comment.into())
            .with("Resource", resource)
            .with("Parameters", parameters)
            .with("ResultPath", Json::Null)
            .with_opt("TimeoutSeconds", self.timeout)
    }

    /// A `Parallel` state of one branch named after the task: how a task of
    /// several states is retried and caught as a whole, as the engine
    /// retries a whole attempt. `states` are in flow order, the first runs
    /// first.
    pub fn wrapper(&self, comment: impl Into<String>, states: Vec<(String, Obj)>) -> Obj {
        let start = states[0].0.clone();
        Obj::new()
            .with("Type", "Parallel")
            .with("Comment", comment.into())
            .with(
                "Branches",
                vec![Json::from(Obj::new().with("StartAt", start).with(
                    "States",
                    Obj(states.into_iter().map(|(n, s)| (n, s.into())).collect()),
                ))],
            )
            .with("ResultPath", Json::Null)
    }
}

/// A task's translation: the state named after the task, what it needs
/// around it, and the grants it needs.
pub struct TaskExport {
    /// Without `Retry`, `Catch` and `Next`/`End`, which the assembler adds.
    pub state: Obj,
    /// Whether the state takes `Retry` and `Catch` (a `Task` or a
    /// `Parallel`; a `Pass` cannot fail and takes neither).
    pub catches: bool,
    /// A resource the task shares with others of the DAG (an EMR cluster),
    /// opened before the first of them and closed after the last.
    pub session: Option<Arc<dyn Session>>,
    /// What the roles need for the task's states.
    pub grants: Vec<Grant>,
    /// Where the data the task reads or writes lies: what queries of the
    /// DAG may read.
    pub data: Vec<S3Location>,
}

impl TaskExport {
    /// A state that may fail: it takes the task's `Retry` and `Catch`.
    pub fn task(state: Obj) -> Self {
        TaskExport {
            state,
            catches: true,
            session: None,
            grants: Vec::new(),
            data: Vec::new(),
        }
    }

    /// A state that cannot fail (a `Pass`).
    pub fn pass(state: Obj) -> Self {
        TaskExport {
            catches: false,
            ..TaskExport::task(state)
        }
    }

    pub fn with_grants(mut self, grants: Vec<Grant>) -> Self {
        self.grants = grants;
        self
    }
}

/// The states that open or close a [`Session`], by name.
pub struct SessionStates {
    /// In flow order: the first is entered, the last goes on (the
    /// assembler adds its `Next`).
    pub flow: Vec<(String, Obj)>,
    /// Others, reached from the flow (its `Fail` states).
    pub others: Vec<(String, Obj)>,
}

/// A resource several tasks share, such as an EMR cluster: the export
/// opens it before the first top-level part of the state machine that
/// holds such a task, closes it after the last, and closes it on the way
/// to the `Fail` state of every task in between (a failed execution
/// leaves nothing running).
pub trait Session: Send + Sync {
    /// Tasks whose sessions have the same key share one.
    fn key(&self) -> &str;

    /// The states that open it. `first_task` is the DAG's first task
    /// that needs it.
    fn open(&self, first_task: &str) -> SessionStates;

    /// The states that close it after its last task.
    fn close(&self) -> SessionStates;

    /// The state a failing task inside the window goes through to
    /// `failed`, its `Fail` state: its name (`TASK.Suffix`) and the state,
    /// with its `Next`.
    fn cleanup(&self, task: &str, failed: &str) -> (String, Obj);

    /// What the state machine's role needs to open and close it.
    fn grants(&self) -> Vec<Grant>;
}

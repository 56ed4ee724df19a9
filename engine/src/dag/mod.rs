//! The DAG model: a validated DAG, its tasks as the file declares them,
//! and a task resolved for one run. [`load`] (the loader, in its own
//! module) is the only way to make one from a file.
//!
//! Loading never panics and never guesses: unknown fields, unknown types,
//! unknown dependencies and cycles are errors with a place in the file.

mod load;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::kind::{Registry, TaskAction};
use crate::retry::RetryPolicy;
use crate::template::{self, Vars};

pub use load::{MAX_DAG_FILE_BYTES, MAX_DIAGNOSTICS, load, load_str};

/// Task ids become Step Functions state names (at most 80 characters, with
/// room for a `.Suffix` on helper states) and folder names on disk.
pub const MAX_TASK_ID_LEN: usize = 64;

/// The fields every task has, whatever its kind.
pub const TASK_COMMON_FIELDS: &[&str] = &[
    "type",
    "depends_on",
    "retry",
    "timeout_seconds",
    "description",
];

/// A validated DAG.
#[derive(Clone)]
pub struct Dag {
    pub name: String,
    pub description: Option<String>,
    /// The DAG file, absolute.
    pub path: PathBuf,
    /// The DAG file's folder: where shell tasks run and `${dag.dir}` points.
    pub dir: PathBuf,
    /// Parameter values after `--param` overrides, as strings.
    pub params: BTreeMap<String, String>,
    /// The parameters declared `type = "path"`: files on this machine,
    /// which an export keeps as values rather than making them inputs.
    pub path_params: BTreeSet<String>,
    /// Tasks in the order the file declares them.
    pub tasks: Vec<TaskDef>,
    /// Edges point from a dependency to its dependent; node weights are
    /// indexes into `tasks` (and equal the node index).
    pub graph: DiGraph<usize, ()>,
    /// The `[aws]` section (empty if absent), with `${params.NAME}` and
    /// `${dag.dir}` substituted: what only a production export needs. The
    /// engine runs nothing from it, so its keys are checked by the
    /// exporter that reads them, not here.
    pub aws: toml::Table,
    /// The `[aws]` section as written, for an exporter that substitutes
    /// parameters its own way (as execution input, say).
    pub aws_unsubstituted: toml::Table,
}

/// One task as the file declares it, before run-time substitution.
#[derive(Clone)]
pub struct TaskDef {
    pub id: String,
    pub kind: String,
    pub description: Option<String>,
    pub depends_on: Vec<String>,
    pub retry: RetryPolicy,
    pub timeout: Option<Duration>,
    /// The kind's own fields, unsubstituted.
    pub fields: toml::Table,
}

/// A task with its fields substituted for one run, parsed by its kind.
#[derive(Clone)]
pub struct ResolvedTask {
    pub action: Arc<dyn TaskAction>,
    /// SHA-256 of everything that defines what the task does in this run;
    /// resume re-runs a succeeded task whose hash changed.
    pub definition_hash: String,
}

impl Dag {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.id == id)
    }

    /// Ids of the task's direct dependencies, as indexes.
    pub fn dependencies(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(index), petgraph::Direction::Incoming)
            .map(|n| n.index())
    }

    pub fn dependents(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(index), petgraph::Direction::Outgoing)
            .map(|n| n.index())
    }

    /// The task and everything downstream of it, as indexes.
    pub fn descendants(&self, index: usize) -> Vec<usize> {
        let mut seen = vec![false; self.tasks.len()];
        let mut stack = vec![index];
        let mut out = Vec::new();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            out.push(i);
            stack.extend(self.dependents(i));
        }
        out.sort_unstable();
        out
    }

    pub fn vars(&self, run_id: &str, task_id: &str) -> Vars {
        Vars {
            params: self.params.clone(),
            run_id: run_id.to_string(),
            task_id: task_id.to_string(),
            dag_dir: self.dir.display().to_string(),
        }
    }

    /// Substitutes and parses one task for a run.
    pub fn resolve(
        &self,
        index: usize,
        run_id: &str,
        registry: &Registry,
    ) -> Result<ResolvedTask, String> {
        let task = &self.tasks[index];
        let vars = self.vars(run_id, &task.id);
        let fields = template::substitute_table(&task.fields, &vars)
            .map_err(|e| format!("task `{}`: {}; {}", task.id, e.message, e.help))?;
        let kind = registry
            .get(&task.kind)
            .ok_or_else(|| format!("task `{}`: unknown type `{}`", task.id, task.kind))?;
        let action = kind
            .parse(&fields)
            .map_err(|e| format!("task `{}`: {}", task.id, e.message))?;
        #[derive(Serialize)]
        struct Definition<'a> {
            kind: &'a str,
            fields: &'a toml::Table,
            depends_on: &'a [String],
            retry: &'a RetryPolicy,
            timeout_ms: Option<u128>,
        }
        let definition = serde_json::to_vec(&Definition {
            kind: &task.kind,
            fields: &fields,
            depends_on: &task.depends_on,
            retry: &task.retry,
            timeout_ms: task.timeout.map(|t| t.as_millis()),
        })
        .map_err(|e| format!("task `{}`: {e}", task.id))?;
        let definition_hash = format!("{:x}", Sha256::digest(&definition));
        Ok(ResolvedTask {
            action,
            definition_hash,
        })
    }
}

/// Whether any string inside `value` contains `needle`.
pub fn mentions(value: &toml::Value, needle: &str) -> bool {
    match value {
        toml::Value::String(s) => s.contains(needle),
        toml::Value::Array(items) => items.iter().any(|v| mentions(v, needle)),
        toml::Value::Table(table) => table.values().any(|v| mentions(v, needle)),
        _ => false,
    }
}

pub fn valid_task_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && id.len() <= MAX_TASK_ID_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

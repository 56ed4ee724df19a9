//! What every task's translation shares: its substituted fields, the
//! `Retry` from its retry policy, the state shapes, and the kinds with no
//! helper states (`noop`, and `shell`, which has no production form).

use engine::Dag;
use engine::dag::TaskDef;
use engine::retry::{Jitter, RetryPolicy};
use engine::template::{self, Vars};

use super::json::{Json, Obj};
use super::settings::Settings;

/// Stands for `${run.id}` while a task's fields are substituted: a NUL
/// cannot occur in TOML text, so finding one afterwards means the field
/// used a value that exists only when the engine runs the task.
const NO_RUN_ID: &str = "\u{0}";

/// One DAG task, ready to translate.
pub struct TaskCtx<'a> {
    pub dag: &'a Dag,
    pub task: &'a TaskDef,
    /// The kind's fields with `${...}` substituted (params at export time).
    pub fields: toml::Table,
    pub settings: &'a Settings,
    /// `timeout_seconds`, for `TimeoutSeconds`.
    pub timeout: Option<u64>,
    /// The parameters' values when `dag` stands for them with markers
    /// ([`super::params::symbolic`]).
    values: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// A task's translation: the state named after the task, and for tasks of
/// several steps, the states inside it.
pub struct Translated {
    /// Without `Retry`, `Catch` and `Next`/`End`, which the assembler adds.
    pub state: Obj,
    /// Whether the state takes `Retry` and `Catch` (a `Task` or a
    /// `Parallel`; a `Pass` cannot fail and takes neither).
    pub catches: bool,
}

impl<'a> TaskCtx<'a> {
    pub fn new(dag: &'a Dag, task: &'a TaskDef, settings: &'a Settings) -> Result<Self, String> {
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
        Ok(TaskCtx {
            dag,
            task,
            fields,
            settings,
            timeout: task.timeout.map(|t| t.as_secs().max(1)),
            values: None,
        })
    }

    /// The same task, its fields holding parameter markers whose values
    /// are `values` (`None`: the fields hold values).
    pub fn with_values(
        mut self,
        values: Option<&'a std::collections::BTreeMap<String, String>>,
    ) -> Self {
        self.values = values;
        self
    }

    /// `text` as a value on this machine, for what the export reads here
    /// (a file's path): parameter markers replaced by their values.
    pub fn local(&self, text: &str) -> String {
        match self.values {
            Some(values) => super::params::concrete(text, values),
            None => text.to_string(),
        }
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

    pub fn opt_str(&self, key: &str) -> Result<Option<String>, String> {
        match self.fields.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.error(format!("`{key}` must be a string, found {other}"))),
        }
    }

    pub fn str(&self, key: &str) -> Result<String, String> {
        self.opt_str(key)?
            .ok_or_else(|| self.error(format!("missing field `{key}`")))
    }

    /// A string or a list of strings; empty when absent.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        match self.fields.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::String(s)) => Ok(vec![s.clone()]),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.error(format!("`{key}` must hold strings, found {v}")))
                })
                .collect(),
            Some(other) => {
                Err(self.error(format!("`{key}` must be a list of strings, found {other}")))
            }
        }
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

/// The `Retry` of a task's state: its retry policy, field for field (see
/// `engine::retry`); `None` when the policy allows one attempt only.
pub fn retriers(policy: &RetryPolicy) -> Option<Json> {
    if policy.max_attempts <= 1 {
        return None;
    }
    let retrier = Obj::new()
        .with("ErrorEquals", vec![Json::from("States.ALL")])
        .with("IntervalSeconds", policy.interval_seconds)
        .with("MaxAttempts", policy.max_attempts - 1)
        .with("BackoffRate", policy.backoff_rate)
        .with_opt("MaxDelaySeconds", policy.max_delay_seconds)
        .with(
            "JitterStrategy",
            match policy.jitter {
                Jitter::Full => "FULL",
                Jitter::None => "NONE",
            },
        );
    Some(vec![Json::from(retrier)].into())
}

/// A `Catch` of every error, keeping the state data (the EMR cluster id
/// is in it) and putting the error beside it.
pub fn catch_all(next: &str) -> Json {
    vec![Json::from(
        Obj::new()
            .with("ErrorEquals", vec![Json::from("States.ALL")])
            .with("ResultPath", "$.error")
            .with("Next", next),
    )]
    .into()
}

pub fn fail(error: &str, cause: &str) -> Obj {
    Obj::new()
        .with("Type", "Fail")
        .with("Error", error)
        .with("Cause", cause)
}

/// `noop`: a `Pass`. Its `output` is not carried: in production nothing
/// downstream reads task outputs from the state data.
pub fn noop(ctx: &TaskCtx) -> Translated {
    Translated {
        state: Obj::new()
            .with("Type", "Pass")
            .with("Comment", ctx.comment())
            .with("ResultPath", Json::Null),
        catches: false,
    }
}

/// `shell` has no production form: a command on the engine's machine has
/// no counterpart in a managed service that the export could choose for
/// the user.
pub fn shell(task: &TaskDef) -> String {
    format!(
        "task `{}` (shell): shell tasks have no production equivalent in Step Functions (the command runs on this machine); \
         use emr_spark for a Spark job, athena_query for SQL, s3_ingest for files that must be in S3, \
         report for the report, or noop for a placeholder",
        task.id
    )
}

/// `s3://bucket/key` as (bucket, key); the key may be empty.
pub fn split_s3(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

/// A `States.Format` string literal: `'`, `{`, `}` and `\` are escaped
/// with a backslash, as intrinsic functions require.
pub(super) fn format_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '\'' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `PREFIX` + the execution's name + `/`, as an intrinsic: each execution
/// of the state machine writes its query results under a prefix of its
/// own, so the report finds them without passing ids around.
pub fn per_execution(prefix: &str) -> String {
    let prefix = if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    format!(
        "States.Format('{}{{}}/', $$.Execution.Name)",
        format_literal(&prefix)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_maps_field_for_field() {
        let policy = RetryPolicy {
            max_attempts: 3,
            interval_seconds: 2,
            backoff_rate: 1.5,
            max_delay_seconds: Some(60),
            jitter: Jitter::Full,
        };
        let text = serde_json::to_string(&retriers(&policy).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"[{"ErrorEquals":["States.ALL"],"IntervalSeconds":2,"MaxAttempts":2,"BackoffRate":1.5,"MaxDelaySeconds":60,"JitterStrategy":"FULL"}]"#
        );
        assert!(retriers(&RetryPolicy::default()).is_none());
    }

    #[test]
    fn s3_uris_split_into_bucket_and_key() {
        assert_eq!(
            split_s3("s3://b/raw/x.csv"),
            Some(("b".into(), "raw/x.csv".into()))
        );
        assert_eq!(split_s3("s3://b"), Some(("b".into(), String::new())));
        assert_eq!(split_s3("s3:///x"), None);
        assert_eq!(split_s3("/tmp/x"), None);
    }

    #[test]
    fn format_literals_are_escaped() {
        assert_eq!(
            per_execution("s3://b/it's{x}"),
            r"States.Format('s3://b/it\'s\{x\}/{}/', $$.Execution.Name)"
        );
    }
}

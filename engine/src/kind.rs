//! The contract between the engine and a kind of task.
//!
//! A kind declares its fields as a typed config ([`crate::config`]) and
//! implements [`Kind`]: the config becomes a [`TaskAction`], its local
//! backend, which the scheduler runs once per attempt. The engine sees a
//! kind through the object-safe [`TaskKind`], which every [`Kind`] is, and
//! finds it by name in a [`Registry`]. A kind's other faces (its Step
//! Functions translation, later its AWS backend) are defined by the crates
//! that use them and kept beside it in the registry
//! ([`Registry::add_face`]); the engine never looks at them, nor inside a
//! kind's fields.
//!
//! # The idempotency contract
//!
//! The engine runs a task *at least once*: if the engine is killed after a
//! task did its work but before the success was committed, resume runs the
//! task again. Each attempt gets its own `attempt_id`
//! (`RUN_ID.TASK_ID.N`) and its own empty scratch folder; a kind whose side
//! effect must not happen twice keys it on `run_id` and `task_id` (stable
//! across attempts and resumes) or checks whether its output already exists.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::config::{self, TaskConfig};

/// A kind of task, written with its typed config: `shell`, `noop`, the
/// AWS-shaped kinds of the `tasks` crate, a test's own.
pub trait Kind: Send + Sync + 'static {
    /// The `type = "..."` name in a DAG file.
    const NAME: &'static str;
    /// One line for `flux-engine validate` and the docs.
    const SUMMARY: &'static str;
    /// The kind's own fields.
    type Config: TaskConfig;

    /// The local backend: what runs each attempt of a task with `config`.
    fn action(&self, config: Self::Config) -> Arc<dyn TaskAction>;

    /// Called once when a run or resume ends, however it ends: gives back
    /// what the kind kept for the run's tasks (a warm Spark server).
    fn end_of_run(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called once before a run (or resume) starts its first task, and
    /// only when the run has tasks of this kind to run: checks that the
    /// kind can do its work here, so that a machine problem (a missing
    /// tool, a broken environment) stops the run at once, with its fix,
    /// instead of failing every task after its retries. What it found is
    /// recorded on the run's span ([`Preflight::attributes`]) and told to
    /// the person watching ([`Preflight::notes`]). An `Err` is a message
    /// for that person and ends the run before anything is recorded.
    fn preflight(&self) -> impl Future<Output = Result<Preflight, String>> + Send {
        async { Ok(Preflight::default()) }
    }
}

/// What a kind's [`Kind::preflight`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// `flux.`-prefixed keys and their values, set on the run's span (and
    /// so kept in the checkpoint's trace): what `show` reports about the
    /// environment the run used.
    pub attributes: Vec<(String, String)>,
    /// One line each, said before the first task starts (a choice the
    /// kind made that the user may not expect).
    pub notes: Vec<String>,
}

/// A kind as the engine uses it (object-safe); every [`Kind`] is one.
pub trait TaskKind: Send + Sync {
    fn name(&self) -> &'static str;

    fn summary(&self) -> &'static str;

    /// The kind's own fields, in the order its config declares them; any
    /// other field of a task (besides the common ones) is unknown.
    fn fields(&self) -> &'static [&'static str];

    /// Reads the kind's own fields (already substituted) and checks them.
    fn parse(&self, fields: &toml::Table) -> Result<Arc<dyn TaskAction>, FieldError>;

    /// The tasks the fields name as inputs, each with the field naming it
    /// (`sections[2].from`): validation requires each to be among the
    /// task's `depends_on`. Empty when the fields do not parse.
    fn references(&self, fields: &toml::Table) -> Vec<(String, String)>;

    /// The files the fields name (see [`TaskConfig::files`]), relative to
    /// the DAG's folder. Empty when the fields do not parse.
    fn files(&self, fields: &toml::Table) -> Vec<(String, std::path::PathBuf)>;

    /// The data locations the fields name (see
    /// [`TaskConfig::locations`]). Empty when the fields do not parse.
    fn locations(&self, fields: &toml::Table) -> Vec<crate::config::Location>;

    /// See [`Kind::end_of_run`].
    fn end_of_run(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// See [`Kind::preflight`].
    fn preflight(&self) -> Pin<Box<dyn Future<Output = Result<Preflight, String>> + Send + '_>>;
}

impl<K: Kind> TaskKind for K {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn summary(&self) -> &'static str {
        K::SUMMARY
    }

    fn fields(&self) -> &'static [&'static str] {
        config::field_names::<K::Config>()
    }

    fn parse(&self, fields: &toml::Table) -> Result<Arc<dyn TaskAction>, FieldError> {
        config::parse::<K::Config>(fields).map(|config| self.action(config))
    }

    fn references(&self, fields: &toml::Table) -> Vec<(String, String)> {
        if !<K::Config as TaskConfig>::READS_TASKS {
            return Vec::new();
        }
        config::parse::<K::Config>(fields)
            .map(|config| config.references())
            .unwrap_or_default()
    }

    fn files(&self, fields: &toml::Table) -> Vec<(String, std::path::PathBuf)> {
        if !<K::Config as TaskConfig>::NAMES_FILES {
            return Vec::new();
        }
        config::parse::<K::Config>(fields)
            .map(|config| config.files())
            .unwrap_or_default()
    }

    fn locations(&self, fields: &toml::Table) -> Vec<crate::config::Location> {
        if !<K::Config as TaskConfig>::NAMES_LOCATIONS {
            return Vec::new();
        }
        config::parse::<K::Config>(fields)
            .map(|config| config.locations())
            .unwrap_or_default()
    }

    fn end_of_run(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(Kind::end_of_run(self))
    }

    fn preflight(&self) -> Pin<Box<dyn Future<Output = Result<Preflight, String>> + Send + '_>> {
        Box::pin(Kind::preflight(self))
    }
}

/// The fields of a task's `table` that `kind` does not take, the fields
/// every task has aside: what validation reports as unknown.
pub fn unknown_fields<'t>(kind: &dyn TaskKind, table: &'t toml::Table) -> Vec<&'t String> {
    let known = kind.fields();
    table
        .keys()
        .filter(|k| {
            !known.contains(&k.as_str()) && !crate::dag::TASK_COMMON_FIELDS.contains(&k.as_str())
        })
        .collect()
}

/// A parsed task, ready to run any number of attempts.
#[async_trait]
pub trait TaskAction: Send + Sync {
    /// Runs one attempt. The future may be dropped at any await point (on a
    /// timeout or a cancel); an action that starts processes must make sure
    /// dropping it stops them.
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure>;

    /// Whether an attempt opens spans or records events that belong in its
    /// attempt's span (a kind's steps, its warnings). A kind that does
    /// neither says `false`: when the scheduler records the attempt spans
    /// itself (no collector), its attempts then run without a `tracing`
    /// span. The span is rebuilt from the attempts row all the same, and
    /// `traceparent` is made from the ids the scheduler chose (issue 11: a
    /// `tracing` span per attempt was most of what recording still cost a
    /// run of short tasks).
    fn traces_inside(&self) -> bool {
        true
    }
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
    /// Where the attempt records work it starts outside this process
    /// before waiting on it, and finds what an earlier attempt started.
    pub journal: crate::WorkJournal,
    /// Where the attempt says what it is doing, for the person watching.
    pub progress: crate::scheduler::TaskProgress,
}

/// Why an attempt failed, in words for the person reading `show`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct TaskFailure {
    pub message: String,
    /// Whether trying again may help. A configuration error (a query that
    /// does not parse, a file that is not there, a report reading a task
    /// it does not depend on) fails the same way every time: the task
    /// fails at once whatever its retry policy.
    pub retryable: bool,
}

impl TaskFailure {
    pub fn new(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix (see [`TaskFailure::retryable`]).
    pub fn permanent(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            retryable: false,
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

/// The task kinds a DAG may use, by name, with each kind's other faces.
///
/// Kinds are kept in the order they were registered: the order in which
/// they are consulted where a document gathers what each kind contributes
/// (an export's `[aws]` settings and IAM statements). [`Registry::names`]
/// is sorted, for messages.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: Vec<Arc<dyn TaskKind>>,
    by_name: BTreeMap<&'static str, usize>,
    faces: HashMap<(TypeId, &'static str), Arc<dyn Any + Send + Sync>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind; a kind of the same name is replaced, in its place.
    pub fn register(&mut self, kind: Arc<dyn TaskKind>) -> &mut Self {
        match self.by_name.get(kind.name()) {
            Some(&i) => self.kinds[i] = kind,
            None => {
                self.by_name.insert(kind.name(), self.kinds.len());
                self.kinds.push(kind);
            }
        }
        self
    }

    /// Keeps `face` (for example `Arc<dyn SomeTrait>`) as the kind
    /// `name`'s face of type `F`, for the crate that defines `F` to find
    /// with [`Registry::face`].
    pub fn add_face<F: ?Sized + Send + Sync + 'static>(
        &mut self,
        name: &'static str,
        face: Arc<F>,
    ) -> &mut Self {
        self.faces.insert((TypeId::of::<F>(), name), Arc::new(face));
        self
    }

    /// The kind `name`'s face of type `F`, if it has one.
    pub fn face<F: ?Sized + Send + Sync + 'static>(&self, name: &str) -> Option<&Arc<F>> {
        let (&name, _) = self.by_name.get_key_value(name)?;
        self.faces
            .get(&(TypeId::of::<F>(), name))
            .and_then(|face| face.downcast_ref::<Arc<F>>())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn TaskKind>> {
        self.by_name.get(name).map(|&i| &self.kinds[i])
    }

    /// The kinds' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }

    /// The kinds in the order they were registered.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn TaskKind>> {
        self.kinds.iter()
    }

    /// Runs every kind's [`Kind::end_of_run`], in registration order.
    pub async fn end_of_run(&self) {
        for kind in &self.kinds {
            kind.end_of_run().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Words {
        text: String,
    }

    impl TaskConfig for Words {}

    struct Echo;

    struct EchoAction(String);

    #[async_trait]
    impl TaskAction for EchoAction {
        async fn run(&self, _: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
            Ok(Some(self.0.clone().into()))
        }
    }

    impl Kind for Echo {
        const NAME: &'static str = "echo";
        const SUMMARY: &'static str = "says its text";
        type Config = Words;

        fn action(&self, config: Words) -> Arc<dyn TaskAction> {
            Arc::new(EchoAction(config.text))
        }
    }

    trait Greets: Send + Sync {
        fn greeting(&self) -> &'static str;
    }

    impl Greets for Echo {
        fn greeting(&self) -> &'static str {
            "hello"
        }
    }

    #[test]
    fn a_typed_kind_is_a_task_kind_with_its_config_fields() {
        let kind: Arc<dyn TaskKind> = Arc::new(Echo);
        assert_eq!(kind.fields(), ["text"]);
        assert!(kind.parse(&toml::from_str("text = 'x'").unwrap()).is_ok());
        let err = kind
            .parse(&toml::from_str("text = 1").unwrap())
            .err()
            .unwrap();
        assert_eq!(err.field.as_deref(), Some("text"));
    }

    #[test]
    fn faces_are_found_by_kind_and_type_and_names_are_sorted() {
        let echo = Arc::new(Echo);
        let mut registry = Registry::new();
        registry.register(echo.clone());
        registry.register(Arc::new(Echo2));
        registry.add_face::<dyn Greets>("echo", echo);
        let face = registry.face::<dyn Greets>("echo").expect("the face");
        assert_eq!(face.greeting(), "hello");
        assert!(registry.face::<dyn Greets>("a_echo").is_none());
        assert!(registry.face::<dyn Greets>("nope").is_none());
        assert_eq!(registry.names().collect::<Vec<_>>(), ["a_echo", "echo"]);
        let order: Vec<&str> = registry.kinds().map(|k| k.name()).collect();
        assert_eq!(order, ["echo", "a_echo"]);
    }

    struct Echo2;

    impl Kind for Echo2 {
        const NAME: &'static str = "a_echo";
        const SUMMARY: &'static str = "registered second, named first";
        type Config = Words;

        fn action(&self, config: Words) -> Arc<dyn TaskAction> {
            Arc::new(EchoAction(config.text))
        }
    }
}

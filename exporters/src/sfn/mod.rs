//! `flux-engine export --sfn`: a DAG as an AWS Step Functions state
//! machine (Amazon States Language), meaning in production what it means
//! on the engine: the same order, parallelism, retries, timeouts and
//! failures.
//!
//! * [`structure`]: the DAG as nested sequences and `Parallel` branches,
//!   and what happens to a DAG that is not series-parallel.
//! * [`settings`]: the DAG's `[aws]` section.
//! * one module per task kind: `emr` (`emr_spark`), `glue`
//!   (`glue_crawler`), `athena` (`athena_query`), `s3` (`s3_ingest`),
//!   `report`; `states` holds what they share, and `noop` and `shell`.
//! * [`cfn`]: `export --cfn`, a CloudFormation template deploying the
//!   state machine, its role and the Glue, Athena and S3 resources.
//! * [`iam`]: `export --iam`, the execution role's policy and trust
//!   policy, read off the exported state machine.
//! * [`json`]: ordered JSON, so that the output is deterministic and reads
//!   in flow order.
//!
//! # Rules every task follows
//!
//! * The state that does a task's work is named after the task id; helper
//!   states are `ID.Suffix` (`crawl.Wait`). States that belong to no task
//!   have names with spaces (`Create EMR cluster`, `Parallel 2`), which no
//!   task id can have.
//! * A task of several states is one `Parallel` of one branch named after
//!   the task, so that its retry policy restarts the whole task, as the
//!   engine restarts a whole attempt.
//! * `retry` becomes `Retry` on `States.ALL` (`MaxAttempts` =
//!   `max_attempts - 1`, `IntervalSeconds`, `BackoffRate`,
//!   `MaxDelaySeconds`, `JitterStrategy`), none for one attempt;
//!   `timeout_seconds` becomes `TimeoutSeconds` on each `Task` state.
//! * A `Catch` of every error leads to `ID.Failed`, a `Fail` state whose
//!   error is `ID.Failed` and whose cause names the task, through
//!   `ID.StopCluster` (terminating the EMR cluster) while a cluster is up.
//!   A failure inside a `Parallel` fails the `Parallel` with the same
//!   error, so the execution ends with the error of the task that failed.
//!   (The engine lets independent branches finish; Step Functions stops
//!   them. Either way the run fails.)
//! * Parameters are execution input: the state machine starts by merging
//!   the input's `params` into the defaults (the DAG's, or `--param` at
//!   export) and every state reads `$.params` (see [`params`] for how, and
//!   what stays fixed at export: path parameters, and the IAM policy and
//!   resources computed from the values). `${run.id}` has no export-time
//!   value and is an error; the per-execution locations use the
//!   execution's name instead.
//! * Task outputs are not passed in the state data (`ResultPath` null):
//!   what a downstream task reads in production it reads from S3 (query
//!   results under a per-execution prefix, `output_json` objects).

mod athena;
pub mod cfn;
mod emr;
mod glue;
pub mod iam;
pub mod json;
pub mod params;
mod report;
mod s3;
pub mod settings;
mod states;
pub mod structure;

use std::fmt;

use engine::Dag;

use json::{Json, Obj};
use settings::{Emr, Settings};
use states::{TaskCtx, Translated, catch_all, fail, retriers};
use structure::Plan;

/// Why a DAG cannot be exported: every problem found, one per line.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportError(pub Vec<String>);

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, message) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ExportError {}

/// The state machine as pretty-printed JSON, ending with a newline. The
/// same DAG and parameters give the same bytes.
pub fn export(dag: &Dag) -> Result<String, ExportError> {
    to_text(&state_machine(dag)?)
}

/// [`export`] with the parameters' values written in (`export --sfn
/// --inline-params`): a state machine for these values only, which
/// ignores its execution input.
pub fn export_inline(dag: &Dag) -> Result<String, ExportError> {
    to_text(&state_machine_with_values(dag)?)
}

fn to_text(machine: &Json) -> Result<String, ExportError> {
    let mut text = serde_json::to_string_pretty(machine)
        .map_err(|e| ExportError(vec![format!("cannot write the JSON: {e}")]))?;
    text.push('\n');
    Ok(text)
}

/// The state machine as exported: its parameters read from the
/// execution's input, with the DAG's defaults (see [`params`]).
pub fn state_machine(dag: &Dag) -> Result<Json, ExportError> {
    // With the values first: an error there is the DAG's, and reads as
    // the user wrote it.
    assemble(dag, None)?;
    let symbolic = params::symbolic(dag)?;
    let mut machine = assemble(&symbolic, Some(&dag.params)).map_err(|e| {
        ExportError(
            e.0.into_iter()
                .map(|m| {
                    format!(
                        "{}; the value depends on a parameter, which the state machine reads when it runs: keep the part the export needs fixed in the DAG (for example s3://${{params.bucket}}/raw/ rather than ${{params.raw_uri}})",
                        params::as_reference(&m)
                    )
                })
                .collect(),
        )
    })?;
    let used = params::bind(&mut machine).map_err(|e| ExportError(vec![e]))?;
    if !used.is_empty() {
        let defaults = used
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    dag.params.get(name).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let Json::Object(top) = &mut machine else {
            unreachable!("assemble() returns an object")
        };
        let first = match top.get("StartAt") {
            Some(Json::Str(first)) => first.clone(),
            _ => unreachable!("assemble() sets StartAt"),
        };
        let Some(Json::Object(states)) = top
            .0
            .iter_mut()
            .find(|(k, _)| k == "States")
            .map(|(_, v)| v)
        else {
            unreachable!("assemble() sets States")
        };
        let mut with_entry = Obj(Vec::new());
        for (name, state) in params::entry_states(&defaults, &first) {
            with_entry.set(&name, state);
        }
        with_entry.0.append(&mut states.0);
        *states = with_entry;
        top.set("StartAt", params::ENTRY);
    }
    check_names(&machine).map_err(|e| ExportError(vec![e]))?;
    Ok(machine)
}

/// The state machine with the parameters' values written in: what the
/// IAM policy and the CloudFormation resources are computed from.
pub fn state_machine_with_values(dag: &Dag) -> Result<Json, ExportError> {
    assemble(dag, None)
}

/// The state machine of `dag`; `values` are the parameters' values when
/// `dag` is [`params::symbolic`], for what the export reads on this
/// machine.
fn assemble(
    dag: &Dag,
    values: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Json, ExportError> {
    let settings = Settings::from_dag(dag).map_err(ExportError)?;
    let mut errors = Vec::new();
    let mut translated = Vec::with_capacity(dag.tasks.len());
    for task in &dag.tasks {
        // A shell task cannot be exported whatever its fields hold: say so first.
        if task.kind == "shell" {
            errors.push(states::shell(task));
            translated.push(None);
            continue;
        }
        let result = TaskCtx::new(dag, task, &settings).and_then(|ctx| {
            let ctx = ctx.with_values(values);
            match task.kind.as_str() {
                "emr_spark" => emr::translate(&ctx),
                "glue_crawler" => glue::translate(&ctx),
                "athena_query" => athena::translate(&ctx),
                "s3_ingest" => s3::translate(&ctx),
                "report" => report::translate(&ctx),
                "noop" => Ok(states::noop(&ctx)),
                other => Err(ctx.error(format!(
                    "the task kind `{other}` has no Step Functions translation"
                ))),
            }
        });
        match result {
            Ok(t) => translated.push(Some(t)),
            Err(e) => {
                errors.push(e);
                translated.push(None);
            }
        }
    }
    if !errors.is_empty() {
        return Err(ExportError(errors));
    }
    let mut edges = Vec::new();
    for i in 0..dag.tasks.len() {
        edges.extend(dag.dependencies(i).map(|d| (d, i)));
    }
    let plan = structure::plan(dag.tasks.len(), &edges);
    let mut assembler = Assembler {
        dag,
        settings: &settings,
        translated,
        parallels: 0,
    };
    let root = assembler.name(&plan);
    let mut top: Vec<(Node, bool)> = match root {
        Node::Seq(parts) => parts.into_iter().map(|p| (p, false)).collect(),
        other => vec![(other, false)],
    };
    if matches!(settings.emr, Some(Emr::Cluster { .. })) {
        let spark: Vec<usize> = top
            .iter()
            .enumerate()
            .filter(|(_, (node, _))| assembler.has_spark(node))
            .map(|(i, _)| i)
            .collect();
        if let (Some(&first), Some(&last)) = (spark.first(), spark.last()) {
            for part in &mut top[first..=last] {
                part.1 = true;
            }
            top.insert(last + 1, (Node::TerminateCluster, false));
            top.insert(first, (Node::CreateCluster, false));
        }
    }
    let mut scope = Obj::new();
    for k in 0..top.len() {
        let next = top.get(k + 1).map(|(n, _)| assembler.entry(n));
        let (node, in_window) = &top[k];
        assembler.emit(node, next.as_deref(), *in_window, &mut scope);
    }
    let description = dag
        .description
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    let machine = Obj::new()
        .with(
            "Comment",
            format!(
                "The flux-engine DAG `{}`{description}, exported by `flux-engine export --sfn`; the execution input's `params` override the DAG's parameters; edit the DAG and export again rather than editing this file",
                dag.name
            ),
        )
        .with("StartAt", assembler.entry(&top[0].0))
        .with("States", scope);
    let machine = Json::from(machine);
    check_names(&machine).map_err(|e| ExportError(vec![e]))?;
    Ok(machine)
}

/// The plan with names for its `Parallel` states, and the cluster's states.
enum Node {
    Task(usize),
    Seq(Vec<Node>),
    Par(String, Vec<Node>),
    CreateCluster,
    TerminateCluster,
}

struct Assembler<'a> {
    dag: &'a Dag,
    settings: &'a Settings,
    translated: Vec<Option<Translated>>,
    parallels: usize,
}

impl Assembler<'_> {
    /// Numbers the `Parallel` states in plan order (pre-order), so that
    /// the numbers read top to bottom.
    fn name(&mut self, plan: &Plan) -> Node {
        match plan {
            Plan::Task(i) => Node::Task(*i),
            Plan::Sequence(parts) => Node::Seq(parts.iter().map(|p| self.name(p)).collect()),
            Plan::Parallel(branches) => {
                self.parallels += 1;
                let name = format!("Parallel {}", self.parallels);
                Node::Par(name, branches.iter().map(|b| self.name(b)).collect())
            }
        }
    }

    fn has_spark(&self, node: &Node) -> bool {
        match node {
            Node::Task(i) => self.dag.tasks[*i].kind == "emr_spark",
            Node::Seq(parts) | Node::Par(_, parts) => parts.iter().any(|p| self.has_spark(p)),
            Node::CreateCluster | Node::TerminateCluster => false,
        }
    }

    /// The name of the state a node starts with.
    fn entry(&self, node: &Node) -> String {
        match node {
            Node::Task(i) => self.dag.tasks[*i].id.clone(),
            Node::Seq(parts) => self.entry(&parts[0]),
            Node::Par(name, _) => name.clone(),
            Node::CreateCluster => emr::CREATE_CLUSTER.into(),
            Node::TerminateCluster => emr::TERMINATE_CLUSTER.into(),
        }
    }

    /// Adds the states of `node` to `scope`, the last one going on to
    /// `next` (or ending the scope). `in_window`: an EMR cluster is up, so
    /// every failure path terminates it first.
    fn emit(&mut self, node: &Node, next: Option<&str>, in_window: bool, scope: &mut Obj) {
        match node {
            Node::Task(i) => self.emit_task(*i, next, in_window, scope),
            Node::Seq(parts) => {
                for (k, part) in parts.iter().enumerate() {
                    let after = match parts.get(k + 1) {
                        Some(p) => Some(self.entry(p)),
                        None => next.map(str::to_string),
                    };
                    self.emit(part, after.as_deref(), in_window, scope);
                }
            }
            Node::Par(name, branches) => {
                let mut json_branches = Vec::new();
                let mut starts = Vec::new();
                for branch in branches {
                    let mut inner = Obj::new();
                    self.emit(branch, None, in_window, &mut inner);
                    let start = self.entry(branch);
                    starts.push(format!("`{start}`"));
                    json_branches.push(Json::from(
                        Obj::new().with("StartAt", start).with("States", inner),
                    ));
                }
                let mut state = Obj::new()
                    .with("Type", "Parallel")
                    .with(
                        "Comment",
                        format!("Independent parts of the DAG, run at once: the branches starting at {}", starts.join(", ")),
                    )
                    .with("Branches", json_branches)
                    .with("ResultPath", Json::Null);
                flow(&mut state, next);
                scope.set(name, state);
            }
            Node::CreateCluster => {
                let first = self
                    .dag
                    .tasks
                    .iter()
                    .find(|t| t.kind == "emr_spark")
                    .map_or("", |t| t.id.as_str());
                if let Some(mut state) = emr::create_cluster(&self.dag.name, self.settings, first) {
                    flow(&mut state, next);
                    scope.set(emr::CREATE_CLUSTER, state);
                    scope.set(
                        emr::CLUSTER_NOT_CREATED,
                        fail(
                            "EMR.ClusterNotCreated",
                            &format!("the EMR cluster for the Spark tasks (the first is `{first}`) could not be created"),
                        ),
                    );
                }
            }
            Node::TerminateCluster => {
                let mut state = emr::terminate_cluster(
                    "The last Spark task is done: the cluster goes",
                    emr::CLUSTER_NOT_TERMINATED,
                );
                flow(&mut state, next);
                scope.set(emr::TERMINATE_CLUSTER, state);
                scope.set(
                    emr::CLUSTER_NOT_TERMINATED,
                    fail(
                        "EMR.ClusterNotTerminated",
                        "the EMR cluster could not be terminated; it terminates itself after idle_timeout_seconds, or terminate it in the EMR console",
                    ),
                );
            }
        }
    }

    fn emit_task(&mut self, i: usize, next: Option<&str>, in_window: bool, scope: &mut Obj) {
        let dag = self.dag;
        let task = &dag.tasks[i];
        let Translated { mut state, catches } = self.translated[i]
            .take()
            .expect("each task is in the plan once");
        let failed = format!("{}.Failed", task.id);
        let stop = format!("{}.{}", task.id, emr::STOP_CLUSTER);
        if catches {
            if let Some(retry) = retriers(&task.retry) {
                state.set("Retry", retry);
            }
            let first = if in_window {
                stop.as_str()
            } else {
                failed.as_str()
            };
            state.set("Catch", catch_all(first));
        }
        flow(&mut state, next);
        scope.set(&task.id, state);
        if catches {
            if in_window {
                let cleanup = emr::terminate_cluster(
                    &format!(
                        "`{}` failed: terminate the EMR cluster before failing",
                        task.id
                    ),
                    &failed,
                )
                .with("Next", failed.as_str());
                scope.set(&stop, cleanup);
            }
            scope.set(
                &failed,
                fail(
                    &failed,
                    &format!(
                        "task `{}` ({}) failed; its error is in the execution history, at the state `{}`",
                        task.id, task.kind, task.id
                    ),
                ),
            );
        }
    }
}

fn flow(state: &mut Obj, next: Option<&str>) {
    match next {
        Some(n) => state.set("Next", n),
        None => state.set("End", true),
    }
}

/// State names are unique in the whole machine (branches included) and at
/// most 80 characters: Step Functions' rules. The naming scheme keeps
/// them; this makes sure.
fn check_names(machine: &Json) -> Result<(), String> {
    fn walk(scope: &Json, seen: &mut std::collections::HashSet<String>) -> Result<(), String> {
        let Json::Object(scope) = scope else {
            return Ok(());
        };
        let Some(Json::Object(states)) = scope.get("States") else {
            return Ok(());
        };
        for (name, state) in &states.0 {
            if name.chars().count() > 80 {
                return Err(format!(
                    "the state name `{name}` is longer than 80 characters"
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(format!("two states are named `{name}`"));
            }
            if let Json::Object(state) = state
                && let Some(Json::Array(branches)) = state.get("Branches")
            {
                for branch in branches {
                    walk(branch, seen)?;
                }
            }
        }
        Ok(())
    }
    walk(machine, &mut std::collections::HashSet::new())
}

#[cfg(test)]
mod tests;

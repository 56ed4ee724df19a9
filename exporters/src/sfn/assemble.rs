//! The state machine put together from the tasks' translations: the DAG's
//! [`structure`](super::structure) as sequences and `Parallel` branches,
//! each task's `Retry`, `Catch` and `Fail` state, and the states that open
//! and close the sessions tasks share (an EMR cluster).

use std::collections::HashSet;
use std::sync::Arc;

use engine::Dag;

use super::json::{Json, Obj};
use super::states::{catch_all, fail, retriers};
use super::structure::{self, Plan};
use super::task::{Session, SessionStates, TaskExport};

/// The state machine of `dag` from its tasks' translations (in task
/// order).
pub fn state_machine(dag: &Dag, exports: Vec<TaskExport>) -> Result<Json, String> {
    let mut edges = Vec::new();
    for i in 0..dag.tasks.len() {
        edges.extend(dag.dependencies(i).map(|d| (d, i)));
    }
    let plan = structure::plan(dag.tasks.len(), &edges);
    let sessions = sessions(&exports);
    let mut assembler = Assembler {
        dag,
        exports: exports.into_iter().map(Some).collect(),
        sessions: sessions.iter().map(|(s, _)| s.clone()).collect(),
        parallels: 0,
    };
    let root = assembler.name(&plan);
    let mut top: Vec<(Node, Vec<usize>)> = match root {
        Node::Seq(parts) => parts.into_iter().map(|p| (p, Vec::new())).collect(),
        other => vec![(other, Vec::new())],
    };
    // Each session is open from before the first top-level part holding a
    // task that needs it to after the last such part.
    for (s, (_, first_task)) in sessions.iter().enumerate() {
        let holding: Vec<usize> = top
            .iter()
            .enumerate()
            .filter(|(_, (node, _))| assembler.needs(node, s))
            .map(|(i, _)| i)
            .collect();
        if let (Some(&first), Some(&last)) = (holding.first(), holding.last()) {
            for part in &mut top[first..=last] {
                part.1.push(s);
            }
            top.insert(last + 1, (Node::Close(s), Vec::new()));
            top.insert(first, (Node::Open(s, *first_task), Vec::new()));
        }
    }
    let mut scope = Obj::new();
    for k in 0..top.len() {
        let next = top.get(k + 1).map(|(n, _)| assembler.entry(n));
        let (node, open) = &top[k];
        assembler.emit(node, next.as_deref(), open, &mut scope);
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
    check_names(&machine)?;
    Ok(machine)
}

/// The distinct sessions the tasks need, each with the first task (in
/// DAG order) that needs it.
pub fn sessions(exports: &[TaskExport]) -> Vec<(Arc<dyn Session>, usize)> {
    let mut out: Vec<(Arc<dyn Session>, usize)> = Vec::new();
    for (i, export) in exports.iter().enumerate() {
        if let Some(session) = &export.session
            && !out.iter().any(|(s, _)| s.key() == session.key())
        {
            out.push((session.clone(), i));
        }
    }
    out
}

/// The plan with names for its `Parallel` states, and the sessions' states.
enum Node {
    Task(usize),
    Seq(Vec<Node>),
    Par(String, Vec<Node>),
    /// Opens session `s`, whose first task is the one given.
    Open(usize, usize),
    Close(usize),
}

struct Assembler<'a> {
    dag: &'a Dag,
    exports: Vec<Option<TaskExport>>,
    sessions: Vec<Arc<dyn Session>>,
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

    /// Whether a task under `node` needs session `s`.
    fn needs(&self, node: &Node, s: usize) -> bool {
        match node {
            Node::Task(i) => self.exports[*i]
                .as_ref()
                .and_then(|e| e.session.as_ref())
                .is_some_and(|session| session.key() == self.sessions[s].key()),
            Node::Seq(parts) | Node::Par(_, parts) => parts.iter().any(|p| self.needs(p, s)),
            Node::Open(..) | Node::Close(_) => false,
        }
    }

    /// The name of the state a node starts with.
    fn entry(&self, node: &Node) -> String {
        match node {
            Node::Task(i) => self.dag.tasks[*i].id.clone(),
            Node::Seq(parts) => self.entry(&parts[0]),
            Node::Par(name, _) => name.clone(),
            Node::Open(s, first) => first_name(self.sessions[*s].open(&self.dag.tasks[*first].id)),
            Node::Close(s) => first_name(self.sessions[*s].close()),
        }
    }

    /// Adds the states of `node` to `scope`, the last one going on to
    /// `next` (or ending the scope). `open`: the sessions open around it,
    /// which every failure path closes first.
    fn emit(&mut self, node: &Node, next: Option<&str>, open: &[usize], scope: &mut Obj) {
        match node {
            Node::Task(i) => self.emit_task(*i, next, open, scope),
            Node::Seq(parts) => {
                for (k, part) in parts.iter().enumerate() {
                    let after = match parts.get(k + 1) {
                        Some(p) => Some(self.entry(p)),
                        None => next.map(str::to_string),
                    };
                    self.emit(part, after.as_deref(), open, scope);
                }
            }
            Node::Par(name, branches) => {
                let mut json_branches = Vec::new();
                let mut starts = Vec::new();
                for branch in branches {
                    let mut inner = Obj::new();
                    self.emit(branch, None, open, &mut inner);
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
            Node::Open(s, first) => {
                let states = self.sessions[*s].open(&self.dag.tasks[*first].id);
                emit_steps(states, next, scope);
            }
            Node::Close(s) => emit_steps(self.sessions[*s].close(), next, scope),
        }
    }

    fn emit_task(&mut self, i: usize, next: Option<&str>, open: &[usize], scope: &mut Obj) {
        let task = &self.dag.tasks[i];
        let TaskExport {
            mut state, catches, ..
        } = self.exports[i]
            .take()
            .expect("each task is in the plan once");
        let failed = format!("{}.Failed", task.id);
        // A failure closes the open sessions, innermost first, then fails.
        let mut cleanups: Vec<(String, Obj)> = Vec::new();
        if catches {
            let mut to = failed.clone();
            for &s in open.iter().rev() {
                let (name, cleanup) = self.sessions[s].cleanup(&task.id, &to);
                to = name.clone();
                cleanups.push((name, cleanup));
            }
            cleanups.reverse();
            if let Some(retry) = retriers(&task.retry) {
                state.set("Retry", retry);
            }
            state.set("Catch", catch_all(&to));
        }
        flow(&mut state, next);
        scope.set(&task.id, state);
        if catches {
            for (name, cleanup) in cleanups {
                scope.set(&name, cleanup);
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

/// A session's states: the flow ones in order (the last going on to
/// `next`), then the others.
fn emit_steps(states: SessionStates, next: Option<&str>, scope: &mut Obj) {
    let SessionStates {
        flow: mut steps,
        others,
    } = states;
    if let Some((_, last)) = steps.last_mut() {
        flow(last, next);
    }
    for (name, state) in steps.into_iter().chain(others) {
        scope.set(&name, state);
    }
}

/// The name of the state a session's states start with.
fn first_name(states: SessionStates) -> String {
    states
        .flow
        .into_iter()
        .next()
        .map(|(name, _)| name)
        .unwrap_or_default()
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
pub fn check_names(machine: &Json) -> Result<(), String> {
    fn walk(scope: &Json, seen: &mut HashSet<String>) -> Result<(), String> {
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
    walk(machine, &mut HashSet::new())
}

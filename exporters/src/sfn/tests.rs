//! The exporter on kinds of its own (it knows none of the real ones): the
//! structure of any DAG, a session's window and cleanup path, and the
//! policy gathered kind by kind. The real kinds' translations are tested
//! in the `tasks` crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use engine::{Attempt, Dag, Kind, Registry, TaskAction, TaskConfig, TaskFailure};
use proptest::prelude::*;
use serde_json::Value;

use super::iam::Grant;
use super::json::{Json, Obj};
use super::settings::{AwsSettings, KindSettings};
use super::*;

/// A kind whose task is one `Task` state; `shared = true` needs the
/// session `lease`.
struct Step;

#[derive(serde::Deserialize)]
struct StepFields {
    #[serde(default)]
    shared: bool,
}

impl TaskConfig for StepFields {}

struct Nothing;

#[async_trait]
impl TaskAction for Nothing {
    async fn run(&self, _: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        Ok(None)
    }
}

impl Kind for Step {
    const NAME: &'static str = "step";
    const SUMMARY: &'static str = "one state";
    type Config = StepFields;

    fn action(&self, _: StepFields) -> Arc<dyn TaskAction> {
        Arc::new(Nothing)
    }
}

/// The `[aws]` setting `step_setting`, which nothing needs.
struct StepSettings;

impl KindSettings for StepSettings {
    const KEYS: &'static [&'static str] = &["step_setting"];

    fn read(_: &mut AwsSettings, _: Option<&str>) -> Option<StepSettings> {
        Some(StepSettings)
    }
}

impl StepFunctions for Step {
    type Settings = StepSettings;

    fn translate(
        &self,
        task: &TaskContext,
        config: &StepFields,
        _: &StepSettings,
    ) -> Result<TaskExport, String> {
        let mut export = TaskExport::task(task.task_state(
            task.comment(),
            "arn:aws:states:::step:run",
            Obj::new().with("Task", task.id()),
        ))
        .with_grants(vec![Grant::statement(
            "Steps",
            &["step:Run"],
            [format!("step/{}", task.id())],
        )]);
        if config.shared {
            export.session = Some(Arc::new(Lease));
        }
        Ok(export)
    }
}

/// A resource the shared steps hold while they run.
struct Lease;

impl Session for Lease {
    fn key(&self) -> &str {
        "lease"
    }

    fn open(&self, first_task: &str) -> SessionStates {
        SessionStates {
            flow: vec![(
                "Take lease".into(),
                Obj::new()
                    .with("Type", "Pass")
                    .with("Comment", format!("for `{first_task}` on")),
            )],
            others: Vec::new(),
        }
    }

    fn close(&self) -> SessionStates {
        SessionStates {
            flow: vec![("Give lease back".into(), Obj::new().with("Type", "Pass"))],
            others: vec![("Lease kept".into(), Obj::new().with("Type", "Fail"))],
        }
    }

    fn cleanup(&self, task: &str, failed: &str) -> (String, Obj) {
        (
            format!("{task}.GiveBack"),
            Obj::new().with("Type", "Pass").with("Next", failed),
        )
    }

    fn grants(&self) -> Vec<Grant> {
        vec![Grant::statement(
            "Lease",
            &["lease:Take"],
            ["lease/*".to_string()],
        )]
    }
}

/// A kind that is a `Pass` and needs nothing.
struct Mark;

impl Kind for Mark {
    const NAME: &'static str = "mark";
    const SUMMARY: &'static str = "a pass";
    type Config = StepFields;

    fn action(&self, _: StepFields) -> Arc<dyn TaskAction> {
        Arc::new(Nothing)
    }
}

impl StepFunctions for Mark {
    type Settings = ();

    fn translate(&self, task: &TaskContext, _: &StepFields, _: &()) -> Result<TaskExport, String> {
        Ok(TaskExport::pass(
            Obj::new()
                .with("Type", "Pass")
                .with("ResultPath", Json::Null)
                .with_opt("Comment", task.task.description.clone()),
        ))
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    register(&mut registry, Mark);
    register(&mut registry, Step);
    registry
}

fn load(text: &str) -> Dag {
    engine::dag::load_str(Path::new("/nowhere/test.toml"), text, &[], &registry())
        .unwrap_or_else(|e| panic!("the test DAG is invalid: {e}"))
}

fn exported(text: &str) -> Value {
    let out = export(&load(text), &registry(), Document::StateMachineWithValues)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).expect("the export is JSON")
}

#[test]
fn a_session_is_open_around_the_tasks_that_need_it_and_closed_on_failure() {
    let m = exported(
        r#"
[dag]
name = "leased"
[tasks.a]
type = "step"
[tasks.b]
type = "step"
shared = true
depends_on = ["a"]
[tasks.c]
type = "step"
depends_on = ["b"]
[tasks.d]
type = "step"
shared = true
depends_on = ["c"]
[tasks.e]
type = "mark"
depends_on = ["d"]
"#,
    );
    let order = top_level_order(&m);
    assert_eq!(
        order,
        ["a", "Take lease", "b", "c", "d", "Give lease back", "e"]
    );
    assert_eq!(m["States"]["Take lease"]["Comment"], "for `b` on");
    // Inside the window every failure gives the lease back first, also
    // for a task that does not need it itself.
    for task in ["b", "c", "d"] {
        assert_eq!(
            m["States"][task]["Catch"][0]["Next"],
            format!("{task}.GiveBack")
        );
        assert_eq!(
            m["States"][format!("{task}.GiveBack")]["Next"],
            format!("{task}.Failed")
        );
    }
    assert_eq!(m["States"]["a"]["Catch"][0]["Next"], "a.Failed");
    assert!(m["States"].get("a.GiveBack").is_none());
    // A pass cannot fail: no Catch, no Fail state.
    assert!(m["States"]["e"].get("Catch").is_none());
    assert!(m["States"].get("e.Failed").is_none());
    assert_eq!(m["States"]["Lease kept"]["Type"], "Fail");
}

#[test]
fn the_policy_gathers_kind_by_kind_the_session_before_its_first_task() {
    let dag = load(
        r#"
[dag]
name = "granted"
[tasks.one]
type = "step"
shared = true
[tasks.two]
type = "step"
shared = true
depends_on = ["one"]
"#,
    );
    let doc: Value =
        serde_json::from_str(&export(&dag, &registry(), Document::Iam).unwrap()).unwrap();
    let statements = doc["RolePolicy"]["Statement"].as_array().unwrap();
    let sids: Vec<&str> = statements
        .iter()
        .map(|s| s["Sid"].as_str().unwrap())
        .collect();
    assert_eq!(sids, ["Lease", "Steps"]);
    assert_eq!(
        statements[1]["Resource"],
        serde_json::json!(["step/one", "step/two"])
    );
}

#[test]
fn settings_are_the_kinds_and_a_kind_without_a_face_is_named() {
    let dag = load("[dag]\nname = \"s\"\n[aws]\nstep_settin = 1\n[tasks.a]\ntype = \"step\"\n");
    let err = export(&dag, &registry(), Document::StateMachine)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown setting `step_settin`"), "{err}");
    assert!(err.contains("did you mean `step_setting`"), "{err}");
    assert!(
        err.contains("known settings: region, account_id, step_setting"),
        "{err}"
    );

    let mut bare = Registry::new();
    bare.register(Arc::new(Step));
    let dag = engine::dag::load_str(
        Path::new("/nowhere/test.toml"),
        "[dag]\nname = \"s\"\n[tasks.a]\ntype = \"step\"\n",
        &[],
        &bare,
    )
    .unwrap();
    let err = export(&dag, &bare, Document::StateMachine)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("task `a` (step): the task kind `step` has no Step Functions translation"),
        "{err}"
    );
}

/// The top-level flow: from StartAt along Next.
fn top_level_order(machine: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = machine["StartAt"].as_str().map(str::to_string);
    while let Some(name) = at {
        let state = &machine["States"][&name];
        out.push(name);
        at = state["Next"].as_str().map(str::to_string);
    }
    out
}

/// A DAG of `mark` tasks (passes) with the given edges, as TOML.
fn pass_dag(n: usize, edges: &[(usize, usize)]) -> String {
    let mut text = String::from("[dag]\nname = \"random\"\n");
    for t in 0..n {
        let deps: Vec<String> = edges
            .iter()
            .filter(|(_, to)| *to == t)
            .map(|(from, _)| format!("\"t{from}\""))
            .collect();
        text.push_str(&format!(
            "[tasks.t{t}]\ntype = \"mark\"\ndepends_on = [{}]\n",
            deps.join(", ")
        ));
    }
    text
}

/// Every state name of a scope and its branches, with its state.
fn all_states(scope: &Value, out: &mut Vec<(String, Value)>) {
    if let Some(states) = scope["States"].as_object() {
        for (name, state) in states {
            out.push((name.clone(), state.clone()));
            if let Some(branches) = state["Branches"].as_array() {
                for b in branches {
                    all_states(b, out);
                }
            }
        }
    }
}

/// Follows a scope from `StartAt` along `Next` (the success path), as an
/// execution would, with `done` the tasks certain to have finished; a
/// `Parallel` adds what all its branches finish, each branch starting
/// from the same `done`. Asserts that each task state (named after its
/// task) starts only after all its dependencies. Returns the finished set.
fn run_in_order(
    scope: &Value,
    mut done: BTreeSet<String>,
    deps: &BTreeMap<String, Vec<String>>,
) -> BTreeSet<String> {
    let states = scope["States"].as_object().unwrap();
    let mut at = scope["StartAt"].as_str().map(str::to_string);
    let mut seen: BTreeSet<String> = at.iter().cloned().collect();
    while let Some(name) = at {
        let state = &states[&name];
        if let Some(task_deps) = deps.get(&name) {
            for dep in task_deps {
                assert!(done.contains(dep), "`{name}` may start before `{dep}`");
            }
        }
        if let Some(branches) = state["Branches"].as_array() {
            let mut all = done.clone();
            for branch in branches {
                all.extend(run_in_order(branch, done.clone(), deps));
            }
            done = all;
        }
        if deps.contains_key(&name) {
            done.insert(name.clone());
        }
        // A Choice goes on at its Default (the parameters' entry states
        // join again right after); a poll loop's Choice leads back, so a
        // state seen before ends the walk.
        at = state["Next"]
            .as_str()
            .or(state["Default"].as_str())
            .filter(|next| seen.insert(next.to_string()))
            .map(str::to_string);
    }
    done
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any DAG exports with each task's state exactly once, every `Next`
    /// and `StartAt` naming a state of its own scope.
    #[test]
    fn random_dags_export_each_task_once(
        (n, edges) in (1usize..10).prop_flat_map(|n| {
            (Just(n), proptest::collection::vec((0..n, 0..n), 0..20))
        }).prop_map(|(n, pairs)| {
            let mut edges: Vec<(usize, usize)> = pairs
                .into_iter()
                .filter(|(a, b)| a < b)
                .collect();
            edges.sort_unstable();
            edges.dedup();
            (n, edges)
        })
    ) {
        let m = exported(&pass_dag(n, &edges));
        // Every linear order the machine allows respects the DAG.
        let mut deps: BTreeMap<String, Vec<String>> =
            (0..n).map(|t| (format!("t{t}"), Vec::new())).collect();
        for (from, to) in &edges {
            deps.get_mut(&format!("t{to}")).unwrap().push(format!("t{from}"));
        }
        prop_assert_eq!(run_in_order(&m, BTreeSet::new(), &deps).len(), n);
        let mut states = Vec::new();
        all_states(&m, &mut states);
        for t in 0..n {
            let id = format!("t{t}");
            prop_assert_eq!(states.iter().filter(|(name, _)| *name == id).count(), 1);
        }
        fn scopes_close(scope: &Value) -> bool {
            let states = scope["States"].as_object().unwrap();
            states.contains_key(scope["StartAt"].as_str().unwrap())
                && states.values().all(|s| {
                    s["Next"].as_str().is_none_or(|next| states.contains_key(next))
                        && s["Branches"]
                            .as_array()
                            .is_none_or(|bs| bs.iter().all(scopes_close))
                })
        }
        prop_assert!(scopes_close(&m));
    }
}

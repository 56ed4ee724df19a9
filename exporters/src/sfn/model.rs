//! The export of one DAG, built once per command and shared by `--sfn`,
//! `--iam` and `--cfn`: the `[aws]` settings as each kind reads them,
//! each task translated with the parameters' values (what the policies and
//! the template are computed from, and where every error is reported as
//! the DAG is written), and each kind's deployment. The state machine
//! that reads its parameters from the execution input is translated again
//! from the DAG with markers for the parameters ([`super::params`]), when
//! a command asks for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use engine::{Dag, Registry};

use super::ExportError;
use super::assemble;
use super::cfn::Deployment;
use super::iam::{self, Arns, Grant, Role, S3Location};
use super::json::{Json, Obj};
use super::kind::{AnySettings, StepFunctionsFace, face};
use super::params::{self, Markers};
use super::settings::{AwsSettings, COMMON, Common};
use super::task::{ProductionOutput, TaskContext, TaskExport};

/// One DAG's export.
pub struct ExportModel<'a> {
    dag: &'a Dag,
    registry: &'a Registry,
    common: Common,
    arns: Arns,
    /// Each task's face, by task index.
    faces: Vec<Arc<dyn StepFunctionsFace>>,
    /// The kinds with a face, in registration order, with their settings.
    kinds: Vec<(&'static str, Box<AnySettings>)>,
    /// Each task translated with the parameters' values.
    exports: Vec<TaskExport>,
    deployments: Vec<Deployment>,
}

impl<'a> ExportModel<'a> {
    /// Reads the settings, translates every task and gathers the kinds'
    /// deployments; every problem found is reported.
    pub fn build(dag: &'a Dag, registry: &'a Registry) -> Result<Self, ExportError> {
        let (common, kinds) = read_settings(dag, registry)?;
        let arns = Arns::new(&common);
        let faces = task_faces(dag, registry)?;
        let exports = translate(dag, &faces, &kinds, &arns, None)?;
        let outputs = BTreeMap::new();
        let mut deployments = Vec::new();
        let mut errors = Vec::new();
        for (name, settings) in &kinds {
            let Some(face) = face(registry, name) else {
                continue;
            };
            let contexts: Vec<TaskContext> = dag
                .tasks
                .iter()
                .filter(|t| t.kind == *name)
                .filter_map(|t| TaskContext::new(dag, t, &arns, None, &outputs).ok())
                .collect();
            let refs: Vec<&TaskContext> = contexts.iter().collect();
            match face.deployment(settings.as_ref(), &refs) {
                Ok(d) => deployments.push(d),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(ExportError(errors));
        }
        Ok(ExportModel {
            dag,
            registry,
            common,
            arns,
            faces,
            kinds,
            exports,
            deployments,
        })
    }

    pub fn dag(&self) -> &Dag {
        self.dag
    }

    pub fn common(&self) -> &Common {
        &self.common
    }

    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    /// The state machine as exported: its parameters read from the
    /// execution's input, with the DAG's defaults (see [`super::params`]).
    pub fn state_machine(&self) -> Result<Json, ExportError> {
        let dag = self.dag;
        let (symbolic, markers) = params::symbolic(dag)?;
        let wrap = |errors: Vec<String>| {
            ExportError(
                errors
                    .into_iter()
                    .map(|m| {
                        format!(
                            "{}; the value depends on a parameter, which the state machine reads when it runs: keep the part the export needs fixed in the DAG (for example s3://${{params.bucket}}/raw/ rather than ${{params.raw_uri}})",
                            markers.as_reference(&m)
                        )
                    })
                    .collect(),
            )
        };
        let (_, kinds) = read_settings(&symbolic, self.registry).map_err(|e| wrap(e.0))?;
        let exports = translate(
            &symbolic,
            &self.faces,
            &kinds,
            &self.arns,
            Some((&markers, &dag.params)),
        )
        .map_err(|e| wrap(e.0))?;
        let mut machine = assemble::state_machine(&symbolic, exports).map_err(|e| wrap(vec![e]))?;
        let used = markers
            .bind(&mut machine)
            .map_err(|e| ExportError(vec![e]))?;
        if !used.is_empty() {
            let defaults: BTreeMap<String, String> = used
                .iter()
                .map(|name| {
                    (
                        name.clone(),
                        dag.params.get(name).cloned().unwrap_or_default(),
                    )
                })
                .collect();
            prepend_entry_states(&mut machine, &defaults);
        }
        assemble::check_names(&machine).map_err(|e| ExportError(vec![e]))?;
        Ok(machine)
    }

    /// The state machine with the parameters' values written in: what the
    /// IAM policy and the CloudFormation resources are computed from.
    pub fn state_machine_with_values(&self) -> Result<Json, ExportError> {
        let exports = translate(self.dag, &self.faces, &self.kinds, &self.arns, None)?;
        assemble::state_machine(self.dag, exports).map_err(|e| ExportError(vec![e]))
    }

    /// `{"RolePolicy": ..., "TrustPolicy": ...}`, then each other role's
    /// `NAMERolePolicy` and `NAMETrustPolicy`.
    pub fn policies(&self) -> Json {
        let mut doc = Obj::new()
            .with("RolePolicy", self.role_policy(STATE_MACHINE))
            .with("TrustPolicy", self.arns.trust_policy());
        for role in self.deployments.iter().flat_map(|d| &d.roles) {
            doc.set(
                &format!("{}RolePolicy", role.name),
                self.role_policy(role.name),
            );
            doc.set(
                &format!("{}TrustPolicy", role.name),
                iam::role_trust_policy(role),
            );
        }
        doc.into()
    }

    /// The policy of the role `name` (`StateMachine` for the state
    /// machine's): its grants gathered kind by kind in registration order,
    /// each kind's tasks in DAG order, a session's grants before the first
    /// task that needs it.
    pub fn role_policy(&self, name: &str) -> Json {
        let role = match name {
            STATE_MACHINE => Role::StateMachine,
            _ => self
                .deployments
                .iter()
                .flat_map(|d| &d.roles)
                .find(|r| r.name == name)
                .map_or(Role::StateMachine, |r| Role::Named(r.name)),
        };
        let mut grants: Vec<Grant> = Vec::new();
        for spec in self.deployments.iter().flat_map(|d| &d.roles) {
            if Role::Named(spec.name) == role {
                grants.extend(spec.grants.iter().cloned());
            }
        }
        let mut sessions: BTreeSet<String> = BTreeSet::new();
        for (kind, _) in &self.kinds {
            for (task, export) in self.dag.tasks.iter().zip(&self.exports) {
                if task.kind != *kind {
                    continue;
                }
                if let Some(session) = &export.session
                    && sessions.insert(session.key().to_string())
                {
                    grants.extend(session.grants());
                }
                grants.extend(export.grants.iter().cloned());
            }
        }
        grants.retain(|g| g.role == role);
        let data: Vec<S3Location> = self
            .exports
            .iter()
            .flat_map(|e| &e.data)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        iam::policy(&grants, &data, &self.arns)
    }
}

/// `export --iam --for-run`: the policy the engine's own credentials
/// need to run `dag` with `run --target aws`, from each task's
/// [`StepFunctionsFace::run_grants`], kinds in registration order and
/// their tasks in DAG order, with read access to every data location the
/// DAG's tasks declare (what its queries read). Tasks of kinds without a
/// Step Functions face run locally and need nothing.
pub fn run_policy(dag: &Dag, registry: &Registry) -> Result<Json, ExportError> {
    let (common, kinds) = read_settings(dag, registry)?;
    let arns = Arns::new(&common);
    let outputs = BTreeMap::new();
    let mut grants: Vec<Grant> = Vec::new();
    let mut data: BTreeSet<S3Location> = BTreeSet::new();
    let mut errors = Vec::new();
    for (name, settings) in &kinds {
        let Some(face) = face(registry, name) else {
            continue;
        };
        for task in dag.tasks.iter().filter(|t| t.kind == *name) {
            let context = match TaskContext::new(dag, task, &arns, None, &outputs) {
                Ok(context) => context,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match face.run_grants(&context, settings.as_ref()) {
                Ok(more) => grants.extend(more),
                Err(e) => errors.push(e),
            }
            if let Ok(export) = face.translate(&context, settings.as_ref()) {
                data.extend(export.data);
            }
        }
    }
    if !errors.is_empty() {
        return Err(ExportError(errors));
    }
    let data: Vec<S3Location> = data.into_iter().collect();
    Ok(iam::policy(&grants, &data, &arns))
}

/// The state machine's role among the roles.
const STATE_MACHINE: &str = "StateMachine";

/// `region` and `account_id`, and every kind's settings (kinds without a
/// Step Functions face have none), in registration order.
#[allow(clippy::type_complexity)]
/// The DAG's `[aws]` settings as every kind with a Step Functions face
/// reads them (`region` and `account_id`, then each kind's, in
/// registration order); every problem found is reported. The export
/// reads them so, and so does a run with `--target aws`.
pub fn read_settings(
    dag: &Dag,
    registry: &Registry,
) -> Result<(Common, Vec<(&'static str, Box<AnySettings>)>), ExportError> {
    let exportable: Vec<(&'static str, &Arc<dyn StepFunctionsFace>)> = registry
        .kinds()
        .filter_map(|k| face(registry, k.name()).map(|f| (k.name(), f)))
        .collect();
    let mut known: Vec<&str> = COMMON.to_vec();
    for (_, face) in &exportable {
        for key in face.known_settings() {
            if !known.contains(key) {
                known.push(key);
            }
        }
    }
    let mut aws = AwsSettings::new(dag, &known);
    let common = aws.common();
    let mut kinds = Vec::new();
    for (name, face) in exportable {
        let first = dag
            .tasks
            .iter()
            .find(|t| t.kind == name)
            .map(|t| t.id.as_str());
        if let Some(settings) = face.read_settings(&mut aws, first) {
            kinds.push((name, settings));
        }
    }
    aws.finish().map_err(ExportError)?;
    Ok((common, kinds))
}

/// Each task's Step Functions face; a kind without one is an error.
fn task_faces(
    dag: &Dag,
    registry: &Registry,
) -> Result<Vec<Arc<dyn StepFunctionsFace>>, ExportError> {
    let mut errors = Vec::new();
    let mut faces = Vec::new();
    for task in &dag.tasks {
        match face(registry, &task.kind) {
            Some(face) => faces.push(face.clone()),
            None => errors.push(format!(
                "task `{}` ({}): the task kind `{}` has no Step Functions translation",
                task.id, task.kind, task.kind
            )),
        }
    }
    if errors.is_empty() {
        Ok(faces)
    } else {
        Err(ExportError(errors))
    }
}

/// Every task of `dag` translated, with markers for the parameters when
/// `symbolic` is given.
fn translate(
    dag: &Dag,
    faces: &[Arc<dyn StepFunctionsFace>],
    kinds: &[(&'static str, Box<AnySettings>)],
    arns: &Arns,
    symbolic: Option<(&Markers, &BTreeMap<String, String>)>,
) -> Result<Vec<TaskExport>, ExportError> {
    // What a task reads of another's output is known before any task is
    // translated (a report may be declared before its inputs).
    let none = BTreeMap::new();
    let mut outputs: BTreeMap<String, ProductionOutput> = BTreeMap::new();
    for (task, face) in dag.tasks.iter().zip(faces) {
        if face.not_exportable(&task.id).is_some() {
            continue;
        }
        if let Ok(ctx) = TaskContext::new(dag, task, arns, symbolic, &none)
            && let Ok(Some(output)) = face.production_output(&ctx)
        {
            outputs.insert(task.id.clone(), output);
        }
    }
    let mut errors = Vec::new();
    let mut exports = Vec::with_capacity(dag.tasks.len());
    for (task, face) in dag.tasks.iter().zip(faces) {
        // A task that can never be exported says so whatever its fields.
        if let Some(why) = face.not_exportable(&task.id) {
            errors.push(why);
            continue;
        }
        let settings = kinds
            .iter()
            .find(|(name, _)| *name == task.kind)
            .map(|(_, s)| s.as_ref());
        let result = TaskContext::new(dag, task, arns, symbolic, &outputs).and_then(|ctx| {
            let settings = settings.ok_or_else(|| {
                ctx.error(format!("the settings of `{}` were not read", task.kind))
            })?;
            face.translate(&ctx, settings)
        });
        match result {
            Ok(export) => exports.push(export),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(exports)
    } else {
        Err(ExportError(errors))
    }
}

/// Puts the states that merge the execution's `params` into `defaults`
/// before the machine's first state.
fn prepend_entry_states(machine: &mut Json, defaults: &BTreeMap<String, String>) {
    let Json::Object(top) = machine else {
        return;
    };
    let Some(Json::Str(first)) = top.get("StartAt").cloned() else {
        return;
    };
    let Some(Json::Object(states)) = top
        .0
        .iter_mut()
        .find(|(k, _)| k == "States")
        .map(|(_, v)| v)
    else {
        return;
    };
    let mut with_entry = Obj(Vec::new());
    for (name, state) in params::entry_states(defaults, &first) {
        with_entry.set(&name, state);
    }
    with_entry.0.append(&mut states.0);
    *states = with_entry;
    top.set("StartAt", params::ENTRY);
}

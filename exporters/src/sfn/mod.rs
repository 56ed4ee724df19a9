//! `flux-engine export --sfn`: a DAG as an AWS Step Functions state
//! machine (Amazon States Language), meaning in production what it means
//! on the engine: the same order, parallelism, retries, timeouts and
//! failures.
//!
//! This crate knows no task kind. Each kind says, in its own folder of
//! the `tasks` crate, what its tasks become ([`StepFunctions`]): its
//! states, the IAM grants they need, the `[aws]` settings it reads and
//! what it adds to the CloudFormation template; the exporter puts those
//! together:
//!
//! * [`kind`]: the face a kind implements, and [`register`].
//! * [`task`]: what a translation is given and gives back, and the
//!   sessions tasks share (an EMR cluster).
//! * [`model`]: one DAG's export, built once per command.
//! * [`structure`]: the DAG as nested sequences and `Parallel` branches,
//!   and what happens to a DAG that is not series-parallel;
//!   [`assemble`] the state machine from them.
//! * [`params`]: parameters as execution input.
//! * [`settings`]: the DAG's `[aws]` section.
//! * [`iam`]: `export --iam`, the policies from the kinds' grants.
//! * [`cfn`]: `export --cfn`, the template from the kinds' deployments.
//! * [`states`]: state shapes the kinds share; [`json`]: ordered JSON, so
//!   that the output is deterministic and reads in flow order.
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

pub mod assemble;
pub mod cfn;
pub mod iam;
pub mod json;
pub mod kind;
pub mod model;
pub mod params;
pub mod settings;
pub mod states;
pub mod structure;
pub mod task;

use std::fmt;

use engine::{Dag, Registry};

pub use kind::{StepFunctions, StepFunctionsFace, register};
pub use model::ExportModel;
pub use task::{ProductionOutput, Session, SessionStates, TaskContext, TaskExport};

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

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// `--sfn`: the state machine, reading its parameters from the
    /// execution input.
    StateMachine,
    /// `--sfn --inline-params`: the state machine with the parameters'
    /// values written in (for these values only; it ignores its input).
    StateMachineWithValues,
    /// `--iam`: the roles' policies.
    Iam,
    /// `--iam --for-run`: the policy the engine's own credentials need for
    /// `run --target aws`.
    IamForRun,
    /// `--cfn`: a CloudFormation template deploying them.
    CloudFormation,
}

/// `document` of `dag`, whose task kinds are in `registry`, as
/// pretty-printed JSON ending with a newline; the same DAG and parameters
/// give the same bytes.
pub fn export(dag: &Dag, registry: &Registry, document: Document) -> Result<String, ExportError> {
    if document == Document::IamForRun {
        return to_text(&model::run_policy(dag, registry)?);
    }
    let model = ExportModel::build(dag, registry)?;
    let json = match document {
        Document::StateMachine => model.state_machine()?,
        Document::StateMachineWithValues => model.state_machine_with_values()?,
        Document::Iam => model.policies(),
        Document::IamForRun => model::run_policy(dag, registry)?,
        Document::CloudFormation => cfn::template(&model)?,
    };
    to_text(&json)
}

fn to_text(machine: &json::Json) -> Result<String, ExportError> {
    let mut text = serde_json::to_string_pretty(machine)
        .map_err(|e| ExportError(vec![format!("cannot write the JSON: {e}")]))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests;

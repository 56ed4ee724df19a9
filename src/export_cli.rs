//! `flux-engine export --sfn DAG [--param k=v]... [-o FILE]`: the DAG as an
//! AWS Step Functions state machine (Amazon States Language JSON); `--iam`
//! instead writes its execution role's policy and trust policy, `--cfn` a
//! CloudFormation template deploying them.

use std::path::Path;

use engine::Registry;
use exporters::sfn::Document;

use crate::exit::Exit;

/// What `export` writes.
#[derive(Clone, Copy)]
pub enum Target {
    /// `--sfn`: the state machine.
    StateMachine,
    /// `--sfn --inline-params`: the state machine with the parameters'
    /// values written in.
    StateMachineInline,
    /// `--iam`: its role's policies, `{"RolePolicy": ..., "TrustPolicy": ...}`.
    Iam,
    /// `--iam --for-run`: the policy of the engine's own credentials.
    IamForRun,
    /// `--cfn`: a CloudFormation template deploying them.
    CloudFormation,
}

/// Loads the DAG with its `--param` overrides and writes `target` to
/// `output`, or stdout. A DAG that is invalid or cannot be exported (a
/// missing `[aws]` setting, a `shell` task) exits 2.
pub fn export(
    target: Target,
    dag: &Path,
    params: &[(String, String)],
    output: Option<&Path>,
    registry: &Registry,
) -> Result<u8, Exit> {
    let loaded = engine::dag::load(dag, params, registry)?;
    let (document, what) = match target {
        Target::StateMachine => (Document::StateMachine, "to Step Functions"),
        Target::StateMachineInline => (Document::StateMachineWithValues, "to Step Functions"),
        Target::Iam => (Document::Iam, "the IAM policy"),
        Target::IamForRun => (Document::IamForRun, "the IAM policy for `run --target aws`"),
        Target::CloudFormation => (Document::CloudFormation, "the CloudFormation template"),
    };
    let text = exporters::sfn::export(&loaded, registry, document).map_err(|e| {
        Exit::diagnostics(format_args!(
            "{}: cannot export {what}:
{e}",
            dag.display()
        ))
    })?;
    write(&text, output)
}

fn write(text: &str, output: Option<&Path>) -> Result<u8, Exit> {
    match output {
        None => print!("{text}"),
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| Exit::failure(format_args!("cannot write {}: {e}", path.display())))?;
            // Said on stderr: stdout stays empty for scripts, as before.
            eprintln!("wrote {} ({} bytes)", path.display(), text.len());
        }
    }
    Ok(0)
}

//! `flux-engine export --sfn DAG [--param k=v]... [-o FILE]`: the DAG as an
//! AWS Step Functions state machine (Amazon States Language JSON); `--iam`
//! instead writes its execution role's policy and trust policy, `--cfn` a
//! CloudFormation template deploying them.

use std::path::Path;

use engine::Registry;

use crate::Exit;

/// Loads the DAG with its `--param` overrides and writes the state
/// machine to `output`, or stdout. A DAG that is invalid or cannot be
/// exported (a missing `[aws]` setting, a `shell` task) exits 2.
pub fn sfn(
    dag: &Path,
    params: &[(String, String)],
    output: Option<&Path>,
    registry: &Registry,
) -> Result<u8, Exit> {
    let loaded = engine::dag::load(dag, params, registry).map_err(|e| Exit(2, format!("{e}")))?;
    let text = exporters::sfn::export(&loaded).map_err(|e| {
        Exit(
            2,
            format!("{}: cannot export to Step Functions:\n{e}", dag.display()),
        )
    })?;
    write(&text, output)
}

/// `--iam`: the state machine role's policies, as `{"RolePolicy": ...,
/// "TrustPolicy": ...}`; the same errors as `--sfn`.
pub fn iam(
    dag: &Path,
    params: &[(String, String)],
    output: Option<&Path>,
    registry: &Registry,
) -> Result<u8, Exit> {
    let loaded = engine::dag::load(dag, params, registry).map_err(|e| Exit(2, format!("{e}")))?;
    let text = exporters::sfn::iam::export(&loaded).map_err(|e| {
        Exit(
            2,
            format!("{}: cannot export the IAM policy:\n{e}", dag.display()),
        )
    })?;
    write(&text, output)
}

/// `--cfn`: the CloudFormation template; the same errors as `--sfn`.
pub fn cfn(
    dag: &Path,
    params: &[(String, String)],
    output: Option<&Path>,
    registry: &Registry,
) -> Result<u8, Exit> {
    let loaded = engine::dag::load(dag, params, registry).map_err(|e| Exit(2, format!("{e}")))?;
    let text = exporters::sfn::cfn::export(&loaded).map_err(|e| {
        Exit(
            2,
            format!(
                "{}: cannot export the CloudFormation template:\n{e}",
                dag.display()
            ),
        )
    })?;
    write(&text, output)
}

fn write(text: &str, output: Option<&Path>) -> Result<u8, Exit> {
    match output {
        None => print!("{text}"),
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Exit(1, format!("error: cannot write {}: {e}", path.display())))?,
    }
    Ok(0)
}

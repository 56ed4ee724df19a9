//! `report`: a `lambda:invoke` of `[aws] report_function`, a Lambda
//! function that runs flux-engine's report code (the `reports` crate).
//!
//! The payload holds everything the function needs and nothing it would
//! have to guess:
//!
//! ```json
//! {"dag": "rental", "task": "report", "execution": "<execution name>",
//!  "fields": { the task's fields, params substituted },
//!  "inputs": {"summary": {"kind": "athena_query",
//!                         "results_prefix": "s3://…/summary/<execution name>/"},
//!             "clean": {"kind": "emr_spark", "output_json": "s3://…/clean.json"}}}
//! ```
//!
//! One entry per dependency, in `depends_on` order: an `athena_query`'s
//! results prefix (this execution's `QUERY_ID.csv` is the one `.csv`
//! directly under it, or the newest after a retry), an `emr_spark` task's
//! `output_json`; other kinds give their kind only. The function writes
//! the HTML to the task's `output` and returns `{"report": "s3://…html",
//! "bytes": N}`.
//!
//! The function ships with flux-engine: `flux-engine lambda report` is its
//! Runtime API loop, `docker/report-lambda.Dockerfile` its container image,
//! and its code is the local `report` task's (`tasks/src/report/aws.rs`
//! reads S3, `tasks/src/report/mod.rs` builds and renders). `export --cfn`
//! creates it (`AWS::Lambda::Function` from the `ReportImageUri`
//! parameter) with a role that may read only the inputs named here and
//! write only `output` (`iam.rs`); `flux-engine report-payload FILE`
//! renders one payload outside Lambda.

use super::json::{Json, Obj, from_toml};
use super::states::{TaskCtx, Translated, per_execution};

pub fn translate(ctx: &TaskCtx) -> Result<Translated, String> {
    let function = ctx
        .settings
        .report_function
        .as_deref()
        .ok_or_else(|| ctx.error("[aws] report_function is missing"))?;
    check_keys(ctx)?;
    let mut inputs = Obj::new();
    for dep in &ctx.task.depends_on {
        let Some(index) = ctx.dag.index_of(dep) else {
            continue;
        };
        let upstream = &ctx.dag.tasks[index];
        let sub = super::states::TaskCtx::new(ctx.dag, upstream, ctx.settings)?;
        let mut entry = Obj::new().with("kind", upstream.kind.as_str());
        match upstream.kind.as_str() {
            "athena_query" => {
                let output = sub.str("output")?;
                entry.set("results_prefix.$", per_execution(&output));
            }
            "emr_spark" => {
                if let Some(json) = sub.opt_str("output_json")? {
                    entry.set("output_json", json);
                }
            }
            _ => {}
        }
        inputs.set(dep, entry);
    }
    let fields = from_toml(&toml::Value::Table(ctx.fields.clone()));
    let payload = Obj::new()
        .with("dag", ctx.dag.name.as_str())
        .with("task", ctx.id())
        .with("execution.$", "$$.Execution.Name")
        .with("fields", fields)
        .with("inputs", inputs);
    let state = ctx.task_state(
        format!(
            "{}; rendered by the Lambda function `{function}`",
            ctx.comment()
        ),
        "arn:aws:states:::lambda:invoke",
        Obj::new()
            .with("FunctionName", function)
            .with("Payload", payload),
    );
    Ok(Translated {
        state,
        catches: true,
    })
}

/// Payload keys ending in `.$` are paths to Step Functions; a field of the
/// task named so would be read as one.
fn check_keys(ctx: &TaskCtx) -> Result<(), String> {
    fn walk(value: &Json, path: &str) -> Result<(), String> {
        match value {
            Json::Object(obj) => {
                for (k, v) in &obj.0 {
                    if k.ends_with(".$") {
                        return Err(format!(
                            "`{path}{k}` ends with `.$`, which Step Functions reads as a path; rename it"
                        ));
                    }
                    walk(v, &format!("{path}{k}."))?;
                }
                Ok(())
            }
            Json::Array(items) => items.iter().try_for_each(|v| walk(v, path)),
            _ => Ok(()),
        }
    }
    walk(&from_toml(&toml::Value::Table(ctx.fields.clone())), "").map_err(|e| ctx.error(e))
}

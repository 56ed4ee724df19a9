//! `report` in Step Functions: a `lambda:invoke` of `[aws]
//! report_function`, a Lambda function that runs this kind's own code
//! ([`super::aws`]; `flux-engine lambda report`, the image
//! `docker/report-lambda.Dockerfile`).
//!
//! The invocation's payload is a [`Payload`]: everything the function
//! needs and nothing it would have to guess:
//!
//! ```json
//! {"dag": "rental", "task": "report", "execution.$": "$$.Execution.Name",
//!  "fields": { the task's fields, params substituted },
//!  "inputs": {"summary": {"kind": "athena_query",
//!                         "results_prefix.$": "States.Format('s3://…/summary/{}/', $$.Execution.Name)"},
//!             "clean": {"kind": "emr_spark", "output_json": "s3://…/clean.json"}}}
//! ```
//!
//! One entry per dependency, in `depends_on` order, with where its output
//! is in production (a query's results prefix of this execution, a Spark
//! job's `output_json`); other kinds give their kind only. The function
//! writes the HTML to the task's `output` and returns `{"report":
//! "s3://…html", "bytes": N}`.
//!
//! `export --cfn` creates the function (`ReportFunction`, from the image
//! in the `ReportImageUri` parameter, 1024 MB, 300 s) with a role of its
//! own (`ReportFunctionRole`) that may write its logs, read the inputs
//! named here (`s3:ListBucket` with `s3:prefix` and `s3:GetObject` on each
//! query results prefix, `s3:GetObject` on each `output_json`) and write
//! the report object, nothing else; `export --iam` gives that role's
//! policies as `ReportFunctionRolePolicy` and `ReportFunctionTrustPolicy`.
//! The state machine's role may invoke that function only
//! (`lambda:InvokeFunction`).

use exporters::sfn::cfn::{
    ArnRewrite, Deployment, LogicalId, Parameter, Resource, Substitution, get_att, reference,
};
use exporters::sfn::iam::{Grant, Role, RoleSpec, s3_places};
use exporters::sfn::json::{Json, Obj, from_toml};
use exporters::sfn::settings::{AwsSettings, KindSettings};
use exporters::sfn::states::per_execution;
use exporters::sfn::{ProductionOutput, StepFunctions, TaskContext, TaskExport};
use indexmap::IndexMap;

use super::aws::{InputRef, Payload};
use super::{Report, ReportSpec};
use crate::s3::S3Uri;

/// The role of the function, among the template's roles.
const FUNCTION_ROLE: Role = Role::Named("ReportFunction");

/// The report function's memory: the query results and the HTML are held
/// in memory, a few MB for a report's worth of rows; more memory also
/// buys CPU.
const REPORT_MEMORY_MB: u32 = 1024;
/// The report function's timeout: reading a few objects, rendering and
/// writing one takes seconds; Lambda's maximum is 900.
const REPORT_TIMEOUT_SECONDS: u32 = 300;

/// The `[aws]` setting of `report` tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSettings {
    /// A name or an ARN.
    pub function: Option<String>,
    /// `[aws] report_image`: the function from this container image
    /// instead of the zip package `deploy` uploads.
    pub image: Option<String>,
}

impl Payload {
    /// The payload as the report state's `Payload`: `execution` and each
    /// `results_prefix` hold a path or intrinsic, which Step Functions
    /// resolves when the state runs (their keys end with `.$`).
    pub fn state_parameters(&self) -> Json {
        let mut inputs = Obj::new();
        for (id, input) in &self.inputs {
            let mut entry = Obj::new().with("kind", input.kind.as_str());
            if let Some(prefix) = &input.results_prefix {
                entry.set("results_prefix.$", prefix.as_str());
            }
            if let Some(json) = &input.output_json {
                entry.set("output_json", json.as_str());
            }
            inputs.set(id, entry);
        }
        Obj::new()
            .with("dag", self.dag.as_str())
            .with("task", self.task.as_str())
            .with("execution.$", self.execution.as_str())
            .with(
                "fields",
                from_toml(&toml::Value::Table(self.fields.clone())),
            )
            .with("inputs", inputs)
            .into()
    }
}

impl KindSettings for ReportSettings {
    const KEYS: &'static [&'static str] = &["report_function", "report_image"];

    fn read(aws: &mut AwsSettings, first: Option<&str>) -> Option<ReportSettings> {
        let function = aws.string(
            "report_function",
            first
                .map(|task| format!("task `{task}` is a report task, which runs as a Lambda function; add for example report_function = \"flux-report\""))
                .as_deref(),
        );
        let image = aws.string("report_image", None);
        Some(ReportSettings { function, image })
    }
}

impl StepFunctions for Report {
    type Settings = ReportSettings;

    /// The upload of the HTML. The query results it reads are the ones
    /// the `athena_query` tasks' grants already let the same credentials
    /// read.
    fn run_grants(
        &self,
        task: &TaskContext,
        spec: &ReportSpec,
        _settings: &ReportSettings,
    ) -> Vec<Grant> {
        vec![Grant::statement(
            "RunReportUpload",
            &["s3:PutObject"],
            [task
                .arns()
                .s3(&format!("{}/{}", spec.output.bucket(), spec.output.key()))],
        )]
    }

    /// The payload carries the fields as written (parameters read from
    /// the execution's input), and the function checks them when it runs:
    /// here only the grants read them, with the values at export.
    fn config(task: &TaskContext) -> Result<ReportSpec, String> {
        task.config_with_values()
    }

    fn translate(
        &self,
        task: &TaskContext,
        spec: &ReportSpec,
        settings: &ReportSettings,
    ) -> Result<TaskExport, String> {
        let function = settings
            .function
            .as_deref()
            .ok_or_else(|| task.error("[aws] report_function is missing"))?;
        check_keys(task)?;
        let arns = task.arns();
        let mut inputs = IndexMap::new();
        let mut grants = vec![Grant::statement(
            "InvokeReportFunction",
            &["lambda:InvokeFunction"],
            [if function.starts_with("arn:") {
                function.to_string()
            } else {
                arns.arn("lambda", &format!("function:{function}"))
            }],
        )];
        for dep in &task.task.depends_on {
            let Some(upstream) = task.dag.index_of(dep).map(|i| &task.dag.tasks[i]) else {
                continue;
            };
            let mut input = InputRef {
                kind: upstream.kind.clone(),
                results_prefix: None,
                output_json: None,
            };
            match task.upstream_output(dep) {
                Some(ProductionOutput::QueryResults { prefix }) => {
                    input.results_prefix = Some(per_execution(prefix));
                    let prefix = if prefix.ends_with('/') {
                        prefix.clone()
                    } else {
                        format!("{prefix}/")
                    };
                    let uri = S3Uri::parse(&prefix).map_err(|e| task.error(e))?;
                    let (objects, prefixes) = s3_places(uri.bucket(), uri.key());
                    grants.push(
                        Grant::statement(
                            "ReportReadInputs",
                            &["s3:GetObject"],
                            objects.iter().map(|o| arns.s3(o)),
                        )
                        .to(FUNCTION_ROLE),
                    );
                    grants.push(
                        Grant::list("ReportListResults", uri.bucket(), prefixes).to(FUNCTION_ROLE),
                    );
                }
                Some(ProductionOutput::Object { uri }) => {
                    input.output_json = Some(uri.clone());
                    let object = S3Uri::parse(uri).map_err(|e| task.error(e))?;
                    grants.push(
                        Grant::statement(
                            "ReportReadInputs",
                            &["s3:GetObject"],
                            [arns.s3(&format!("{}/{}", object.bucket(), object.key()))],
                        )
                        .to(FUNCTION_ROLE),
                    );
                }
                None => {}
            }
            inputs.insert(dep.clone(), input);
        }
        grants.push(
            Grant::statement(
                "ReportWriteReport",
                &["s3:PutObject"],
                [arns.s3(&format!("{}/{}", spec.output.bucket(), spec.output.key()))],
            )
            .to(FUNCTION_ROLE),
        );
        let payload = Payload {
            dag: task.dag.name.clone(),
            task: task.id().to_string(),
            execution: "$$.Execution.Name".into(),
            fields: task.fields.clone(),
            inputs,
        };
        let state = task.task_state(
            format!(
                "{}; rendered by the Lambda function `{function}`",
                task.comment()
            ),
            "arn:aws:states:::lambda:invoke",
            Obj::new()
                .with("FunctionName", function)
                .with("Payload", payload.state_parameters()),
        );
        Ok(TaskExport::task(state).with_grants(grants))
    }

    fn deployment(
        &self,
        settings: &ReportSettings,
        tasks: &[(&TaskContext, ReportSpec)],
    ) -> Result<Deployment, String> {
        let mut deployment = Deployment::default();
        let (Some(function), Some((task, spec))) = (&settings.function, tasks.first()) else {
            return Ok(deployment);
        };
        let dag = &task.dag.name;
        let name = function_name(function);
        // The function the template creates: by name as the export names
        // it, or by ARN when `[aws] report_function` is an ARN.
        let created = if function.starts_with("arn:") {
            get_att("ReportFunction", "Arn")
        } else {
            reference("ReportFunction")
        };
        // The code: the zip package `flux-engine deploy` uploads (the
        // binary for the `provided.al2023` runtime), or with `[aws]
        // report_image` a container image.
        let (package, code) = match &settings.image {
            Some(image) => {
                deployment.parameters.push(Parameter {
                    name: "ReportImageUri",
                    description: "The ECR image URI (REPOSITORY_URI:TAG or @sha256:...) of flux-engine's report Lambda image (docker/report-lambda.Dockerfile)",
                    default: Some(image.clone()),
                    configures: "AWS::Lambda::Function",
                });
                (
                    Obj::new().with("PackageType", "Image"),
                    Obj::new().with("ImageUri", reference("ReportImageUri")),
                )
            }
            None => {
                deployment.parameters.push(Parameter {
                    name: "ReportCodeBucket",
                    description: "The bucket holding the report function's zip package",
                    default: Some(spec.output.bucket().to_string()),
                    configures: "AWS::Lambda::Function",
                });
                deployment.parameters.push(Parameter {
                    name: "ReportCodeKey",
                    description: "The key of the report function's zip package (flux-engine's binary as `bootstrap` for the provided.al2023 runtime); flux-engine deploy uploads it and sets this",
                    default: None,
                    configures: "AWS::Lambda::Function",
                });
                (
                    Obj::new()
                        .with("Runtime", "provided.al2023")
                        .with("Handler", "bootstrap"),
                    Obj::new()
                        .with("S3Bucket", reference("ReportCodeBucket"))
                        .with("S3Key", reference("ReportCodeKey")),
                )
            }
        };
        deployment.substitutions.push(Substitution {
            key: "FunctionName",
            value: function.clone(),
            name: "ReportFunction",
            to: created.clone(),
        });
        if function.starts_with("arn:") {
            deployment.arn_rewrites.push(ArnRewrite::Whole {
                arn: function.clone(),
                to: created,
            });
        } else {
            deployment.arn_rewrites.push(ArnRewrite::Resource {
                service: "lambda",
                from: format!("function:{function}"),
                to: "function:${ReportFunction}".into(),
            });
        }
        deployment.roles.push(RoleSpec {
            name: "ReportFunction",
            trusted_service: "lambda.amazonaws.com",
            description: format!(
                "The role of the report Lambda function of the flux-engine DAG {dag}"
            ),
            policy_name: format!("flux-engine-{dag}-report"),
            grants: vec![
                Grant::statement(
                    "ReportFunctionLogs",
                    &[
                        "logs:CreateLogGroup",
                        "logs:CreateLogStream",
                        "logs:PutLogEvents",
                    ],
                    [task
                        .arns()
                        .arn("logs", &format!("log-group:/aws/lambda/{name}:*"))],
                )
                .to(FUNCTION_ROLE),
            ],
        });
        deployment.resources.push(Resource {
            key: "ReportFunction".into(),
            logical_id: LogicalId::Fixed("ReportFunction"),
            body: Obj::new().with("Type", "AWS::Lambda::Function").with(
                "Properties",
                Obj::new()
                    .with("FunctionName", name)
                    .with(
                        "Description",
                        format!(
                            "flux-engine's report code for the DAG {dag}: query results and counts from S3 to the HTML report"
                        ),
                    )
                    .merged(package)
                    .with("Code", code)
                    .with("Role", get_att("ReportFunctionRole", "Arn"))
                    .with("Architectures", vec![Json::from("x86_64")])
                    .with("MemorySize", REPORT_MEMORY_MB)
                    .with("Timeout", REPORT_TIMEOUT_SECONDS),
            ),
            sort_name: None,
            role: Some("ReportFunction"),
        });
        deployment.outputs.push((
            "ReportFunctionArn".into(),
            Obj::new()
                .with("Description", "The report Lambda function")
                .with("Value", get_att("ReportFunction", "Arn")),
        ));
        Ok(deployment)
    }
}

/// The report function's name from `[aws] report_function`: a name, or
/// the function name inside an ARN (`arn:…:function:NAME[:QUALIFIER]`).
pub fn function_name(function: &str) -> &str {
    match function.split_once(":function:") {
        Some((_, rest)) if function.starts_with("arn:") => rest.split(':').next().unwrap_or(rest),
        _ => function,
    }
}

/// Payload keys ending in `.$` are paths to Step Functions; a field of the
/// task named so would be read as one.
fn check_keys(task: &TaskContext) -> Result<(), String> {
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
    walk(&from_toml(&toml::Value::Table(task.fields.clone())), "").map_err(|e| task.error(e))
}

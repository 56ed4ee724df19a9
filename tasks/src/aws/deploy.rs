//! `flux-engine deploy` and `destroy`: the DAG's CloudFormation stack
//! (`export --cfn`) with what it needs from this machine, created or
//! updated through a change set whose summary is printed before it is
//! applied; a state machine version per deploy that changed it.
//!
//! What is uploaded, each skipped when the object already has the same
//! SHA-256 (the uploads of `s3_ingest`): the kinds' files production
//! reads (`Deployment::uploads`: the PySpark scripts; the data
//! `s3_ingest` verifies only with `--upload-data`), the report function's
//! zip package, and the template itself when it is too big to send in the
//! request. The package and the template go under
//! `s3://BUCKET/flux-engine/STACK/`, BUCKET being the stack's main bucket
//! (the one `CreateBucket` would create).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_cloudformation::types::{Capability, ChangeSetType, Parameter, Tag};
use engine::scheduler::TaskProgress;
use engine::{Dag, Registry};
use exporters::sfn::cfn::{Upload, bucket_of};
use exporters::sfn::model::ExportModel;
use exporters::sfn::{Document, export};

use super::{AwsRun, Poll, error_text};
use crate::s3::S3Uri;

/// CloudFormation's limit on a template sent in the request; a bigger one
/// goes through S3 (`TemplateURL`, up to 1 MB).
const TEMPLATE_BODY_LIMIT: usize = 51_200;

/// The tag every stack `deploy` makes carries, with the DAG's name.
pub const DAG_TAG: &str = "flux-engine:dag";

/// The stack of a DAG: its name, kept to what CloudFormation accepts
/// (letters, digits, hyphens; a letter first).
pub fn stack_name(dag: &Dag) -> String {
    let mut name: String = dag
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name = format!("flux-{name}");
    }
    name.truncate(128);
    name
}

/// What `deploy` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Print the change set and stop: nothing uploaded, nothing changed.
    pub dry_run: bool,
    /// Also upload the data `s3_ingest` tasks verify.
    pub upload_data: bool,
    /// Create the buckets the uploads go to when they do not exist.
    pub create_buckets: bool,
    /// The binary the report function's package holds (default: this
    /// flux-engine).
    pub report_binary: Option<PathBuf>,
}

/// What a deploy did.
#[derive(Debug, Clone, Default)]
pub struct Deployed {
    pub stack: String,
    pub state_machine_arn: Option<String>,
    /// The version published by this deploy.
    pub version_arn: Option<String>,
    pub changed: bool,
}

/// Where `deploy` keeps its own objects for the stack.
fn artifacts_prefix(bucket: &str, stack: &str) -> String {
    format!("s3://{bucket}/flux-engine/{stack}/")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The glibc of Amazon Linux 2023, which the `provided.al2023` runtime is.
const LAMBDA_GLIBC: (u32, u32) = (2, 34);

/// The newest glibc symbol version a dynamically linked binary asks for
/// (`GLIBC_2.35` among its version needs), read from the strings of its
/// dynamic section; `None` for a binary that names none (static, musl, a
/// script).
pub fn newest_glibc(binary: &[u8]) -> Option<(u32, u32)> {
    const TAG: &[u8] = b"GLIBC_";
    let mut newest = None;
    let mut at = 0;
    while let Some(found) = binary[at..].windows(TAG.len()).position(|w| w == TAG) {
        let start = at + found + TAG.len();
        let digits: Vec<u8> = binary[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .copied()
            .collect();
        // A version string ends with its NUL in the string table.
        let ends = binary.get(start + digits.len()) == Some(&0);
        if ends && let Ok(text) = std::str::from_utf8(&digits) {
            let mut parts = text.split('.').map(|p| p.parse::<u32>());
            if let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) {
                newest = newest.max(Some((major, minor)));
            }
        }
        at = start;
    }
    newest
}

/// The report function's package for the `provided.al2023` runtime: the
/// binary, and a `bootstrap` that runs its Runtime API loop. Entries
/// carry a fixed time so that the same binary makes the same package.
pub fn report_package(binary: &Path) -> Result<Vec<u8>, String> {
    use zip::write::SimpleFileOptions;
    let bytes = std::fs::read(binary)
        .map_err(|e| format!("cannot read {} to package it: {e}", binary.display()))?;
    if let Some((major, minor)) = newest_glibc(&bytes)
        && (major, minor) > LAMBDA_GLIBC
    {
        return Err(format!(
            "{} needs glibc {major}.{minor}, and Lambda's provided.al2023 runtime has {}.{}: the function would not start. Build the binary on a system with glibc {}.{} or older (Amazon Linux 2023, Debian 11) and name it with FLUX_REPORT_BINARY, or deploy the container image ([aws] report_image)",
            binary.display(),
            LAMBDA_GLIBC.0,
            LAMBDA_GLIBC.1,
            LAMBDA_GLIBC.0,
            LAMBDA_GLIBC.1
        ));
    }
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o755)
        .large_file(bytes.len() as u64 >= u32::MAX as u64);
    let fail =
        |e: zip::result::ZipError| format!("cannot write the report function's package: {e}");
    zip.start_file("bootstrap", options).map_err(fail)?;
    zip.write_all(b"#!/bin/sh\n# The Lambda runtime runs this; flux-engine serves the Runtime API.\nexec \"${LAMBDA_TASK_ROOT:-.}/flux-engine\" lambda report\n")
        .map_err(|e| format!("cannot write the report function's package: {e}"))?;
    zip.start_file("flux-engine", options).map_err(fail)?;
    zip.write_all(&bytes)
        .map_err(|e| format!("cannot write the report function's package: {e}"))?;
    Ok(zip.finish().map_err(fail)?.into_inner())
}

/// Checks that `bucket` exists; creates it (in the run's region) when
/// asked to, else says how.
async fn ensure_bucket(
    aws: &AwsRun,
    bucket: &str,
    create: bool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), String> {
    let missing = match aws.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => false,
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            if status == Some(404) {
                true
            } else {
                return Err(format!(
                    "cannot reach the bucket {bucket}: {}",
                    error_text(&e)
                ));
            }
        }
    };
    if !missing {
        return Ok(());
    }
    if !create {
        return Err(format!(
            "the bucket {bucket} does not exist: add --create-bucket to create it in {}, or create it yourself",
            aws.region
        ));
    }
    let mut request = aws.s3.create_bucket().bucket(bucket);
    if aws.region != "us-east-1" {
        request = request.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    aws.region.as_str(),
                ))
                .build(),
        );
    }
    request
        .send()
        .await
        .map_err(|e| format!("cannot create the bucket {bucket}: {}", error_text(&e)))?;
    say(&format!("created the bucket {bucket} in {}", aws.region));
    Ok(())
}

/// Uploads `bytes` to `uri` unless the object there has the same
/// SHA-256 (written to a temporary file so that the uploads of
/// `s3_ingest` do it: multipart when big, checksummed).
async fn upload_bytes(aws: &AwsRun, bytes: &[u8], uri: &str) -> Result<bool, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary folder: {e}"))?;
    let path = dir.path().join("object");
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    upload_path(aws, &path, uri).await
}

/// Uploads a file unless it is there already; whether it was uploaded.
async fn upload_path(aws: &AwsRun, path: &Path, uri: &str) -> Result<bool, String> {
    let target = S3Uri::parse(uri).map_err(|e| format!("{uri}: {e}"))?;
    let record = crate::s3_ingest::aws::upload_file(aws, path, &target, &TaskProgress::none())
        .await
        .map_err(|e| format!("cannot upload {} to {uri}: {}", path.display(), e.message))?;
    Ok(!record.skipped())
}

/// The template's parameters `deploy` gives values to: those without a
/// default that `deploy` knows (the package's key, the crawlers' role
/// from `[aws] glue_crawler_role`). Any other without a default is an
/// error naming it.
fn parameters(
    model: &ExportModel,
    package: Option<(&str, &str)>,
    glue_role: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let mut values = Vec::new();
    let mut missing = Vec::new();
    for p in model.deployments().iter().flat_map(|d| &d.parameters) {
        if values.iter().any(|(n, _)| n == p.name) {
            continue;
        }
        match (p.name, &p.default, package, glue_role) {
            ("ReportCodeBucket", _, Some((bucket, _)), _) => {
                values.push((p.name.to_string(), bucket.to_string()))
            }
            ("ReportCodeKey", _, Some((_, key)), _) => {
                values.push((p.name.to_string(), key.to_string()))
            }
            ("GlueCrawlerRoleArn", None, _, Some(role)) => {
                values.push((p.name.to_string(), role.to_string()))
            }
            (_, Some(_), _, _) => {}
            (name, None, _, _) => missing.push(format!("{name} ({})", p.description)),
        }
    }
    if missing.is_empty() {
        Ok(values)
    } else {
        Err(format!(
            "the stack needs values deploy cannot find: {}; set them in the DAG's [aws] section (glue_crawler_role = \"arn:aws:iam::ACCOUNT:role/NAME\" for the crawlers)",
            missing.join(", ")
        ))
    }
}

/// The stack's status, or `None` if there is no such stack.
async fn stack_status(aws: &AwsRun, stack: &str) -> Result<Option<String>, String> {
    match aws
        .cloudformation
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .stacks()
            .first()
            .and_then(|s| s.stack_status())
            .map(|s| s.as_str().to_string())
            .filter(|s| s != "DELETE_COMPLETE")),
        Err(e) if error_text(&e).contains("does not exist") => Ok(None),
        Err(e) => Err(format!(
            "cannot describe the stack {stack}: {}",
            error_text(&e)
        )),
    }
}

/// The stack's outputs.
pub async fn outputs(aws: &AwsRun, stack: &str) -> Result<Vec<(String, String)>, String> {
    let out = aws
        .cloudformation
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read the stack {stack} (deploy the DAG first with `flux-engine deploy`): {}",
                error_text(&e)
            )
        })?;
    Ok(out
        .stacks()
        .first()
        .map(|s| {
            s.outputs()
                .iter()
                .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// The deployed state machine of `dag`: its stack's `StateMachineArn`
/// output, else the physical id of its `StateMachine` resource (the
/// ARN; moto's change sets leave the outputs empty).
pub async fn state_machine_arn(aws: &AwsRun, dag: &Dag) -> Result<String, String> {
    let stack = stack_name(dag);
    if let Some((_, arn)) = outputs(aws, &stack)
        .await?
        .into_iter()
        .find(|(k, _)| k == "StateMachineArn")
    {
        return Ok(arn);
    }
    let resource = aws
        .cloudformation
        .describe_stack_resource()
        .stack_name(&stack)
        .logical_resource_id("StateMachine")
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read the stack {stack}'s state machine: {}",
                error_text(&e)
            )
        })?;
    resource
        .stack_resource_detail()
        .and_then(|r| r.physical_resource_id())
        .filter(|id| id.starts_with("arn:"))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "the stack {stack} holds no state machine; deploy the DAG with `flux-engine deploy`"
            )
        })
}

/// One line per change: `+ Add`, `~ Modify` (with replacement), `- Remove`.
fn change_lines(changes: &[aws_sdk_cloudformation::types::Change]) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut state_machine = false;
    for change in changes {
        let Some(r) = change.resource_change() else {
            continue;
        };
        let action = r.action().map(|a| a.as_str()).unwrap_or("?");
        let sign = match action {
            "Add" => "+",
            "Remove" => "-",
            "Modify" => "~",
            _ => "*",
        };
        let kind = r.resource_type().unwrap_or("?");
        if kind == "AWS::StepFunctions::StateMachine" && action != "Remove" {
            state_machine = true;
        }
        let replacement = match r.replacement().map(|x| x.as_str()) {
            Some("True") => " (replaced)",
            Some("Conditional") => " (may be replaced)",
            _ => "",
        };
        lines.push(format!(
            "  {sign} {action} {} ({kind}){replacement}",
            r.logical_resource_id().unwrap_or("?")
        ));
    }
    (lines, state_machine)
}

/// Deploys `dag` (loaded with its `--param` values); `say` prints a line
/// for the person deploying.
pub async fn deploy(
    aws: &AwsRun,
    dag: &Dag,
    registry: &Registry,
    options: &DeployOptions,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Deployed, String> {
    let stack = stack_name(dag);
    let model = ExportModel::build(dag, registry).map_err(|e| e.to_string())?;
    let template = export(dag, registry, Document::CloudFormation).map_err(|e| e.to_string())?;
    let bucket = bucket_of(model.deployments());
    let prefix = bucket.as_deref().map(|b| artifacts_prefix(b, &stack));
    let needs_package = model
        .deployments()
        .iter()
        .flat_map(|d| &d.parameters)
        .any(|p| p.name == "ReportCodeKey");

    // The report function's package, named by its content so that a new
    // binary changes the stack and the same one does not.
    let package = if needs_package {
        let prefix = prefix.as_deref().ok_or(
            "the report function's package needs a bucket: give the DAG an [aws] scripts_prefix",
        )?;
        let binary = match &options.report_binary {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("cannot find this flux-engine binary to package it: {e}"))?,
        };
        let bytes = report_package(&binary)?;
        let uri = format!("{prefix}report-{}.zip", &sha256_hex(&bytes)[..16]);
        say(&format!(
            "report function package: {} ({:.1} MB zipped)",
            uri,
            bytes.len() as f64 / 1e6
        ));
        Some((bytes, uri))
    } else {
        None
    };
    let package_location = package.as_ref().and_then(|(_, uri)| {
        let parsed = S3Uri::parse(uri).ok()?;
        Some((parsed.bucket().to_string(), parsed.key().to_string()))
    });
    let glue_role = aws
        .settings::<crate::glue_crawler::GlueCrawler>()
        .and_then(|s| s.crawler_role.clone());
    let values = parameters(
        &model,
        package_location
            .as_ref()
            .map(|(b, k)| (b.as_str(), k.as_str())),
        glue_role.as_deref(),
    )?;

    let uploads: Vec<&Upload> = model
        .deployments()
        .iter()
        .flat_map(|d| &d.uploads)
        .filter(|u| options.upload_data || !u.data)
        .collect();
    // The buckets the uploads go to must exist before the stack does.
    let mut buckets: Vec<String> = uploads
        .iter()
        .filter_map(|u| S3Uri::parse(&u.uri).ok().map(|p| p.bucket().to_string()))
        .chain(
            bucket
                .clone()
                .filter(|_| package.is_some() || template.len() > TEMPLATE_BODY_LIMIT),
        )
        .collect();
    buckets.sort();
    buckets.dedup();
    for name in &buckets {
        ensure_bucket(aws, name, options.create_buckets && !options.dry_run, say).await?;
    }
    if options.dry_run {
        for upload in &uploads {
            say(&format!(
                "would upload {} to {} (if changed)",
                upload.local.display(),
                upload.uri
            ));
        }
    } else {
        for upload in &uploads {
            let sent = upload_path(aws, &upload.local, &upload.uri).await?;
            say(&format!(
                "{} {}",
                if sent { "uploaded" } else { "unchanged" },
                upload.uri
            ));
        }
        if let Some((bytes, uri)) = &package {
            let sent = upload_bytes(aws, bytes, uri).await?;
            say(&format!(
                "{} {uri}",
                if sent { "uploaded" } else { "unchanged" }
            ));
        }
    }

    // The template: in the request, or through S3 when too big.
    let template_url = if template.len() > TEMPLATE_BODY_LIMIT {
        let prefix = prefix.as_deref().ok_or(format!(
            "the template is {} bytes, more than CloudFormation takes in a request ({TEMPLATE_BODY_LIMIT}), and the DAG names no bucket to put it in: give it an [aws] scripts_prefix",
            template.len()
        ))?;
        let uri = format!(
            "{prefix}template-{}.json",
            &sha256_hex(template.as_bytes())[..16]
        );
        upload_bytes(aws, template.as_bytes(), &uri).await?;
        let parsed = S3Uri::parse(&uri).map_err(|e| e.to_string())?;
        Some(format!(
            "https://{}.s3.{}.amazonaws.com/{}",
            parsed.bucket(),
            aws.region,
            parsed.key()
        ))
    } else {
        None
    };

    let status = stack_status(aws, &stack).await?;
    let change_type = match status.as_deref() {
        None | Some("REVIEW_IN_PROGRESS") => ChangeSetType::Create,
        Some("ROLLBACK_COMPLETE") | Some("ROLLBACK_FAILED") => {
            return Err(format!(
                "the stack {stack} failed its creation ({}) and can only be deleted: `flux-engine destroy` the DAG, then deploy again",
                status.unwrap_or_default()
            ));
        }
        Some(s) if s.ends_with("_IN_PROGRESS") => {
            return Err(format!(
                "the stack {stack} is busy ({s}); deploy again when it is done"
            ));
        }
        Some(_) => ChangeSetType::Update,
    };
    let change_set = format!(
        "flux-engine-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")
    );
    let mut request = aws
        .cloudformation
        .create_change_set()
        .stack_name(&stack)
        .change_set_name(&change_set)
        .change_set_type(change_type.clone())
        .capabilities(Capability::CapabilityIam)
        .capabilities(Capability::CapabilityNamedIam)
        .tags(Tag::builder().key(DAG_TAG).value(&dag.name).build())
        .description(format!("flux-engine deploy of the DAG {}", dag.name));
    request = match &template_url {
        Some(url) => request.template_url(url),
        None => request.template_body(&template),
    };
    for (key, value) in &values {
        request = request.parameters(
            Parameter::builder()
                .parameter_key(key)
                .parameter_value(value)
                .build(),
        );
    }
    let created = request.send().await.map_err(|e| {
        format!(
            "CloudFormation refused the change set for the stack {stack}: {}",
            error_text(&e)
        )
    })?;
    let change_set_id = created.id().unwrap_or(&change_set).to_string();

    // Wait for the change set to be computed.
    let poll = Poll::from_env(2.0);
    let described = loop {
        let out = aws
            .cloudformation
            .describe_change_set()
            .stack_name(&stack)
            .change_set_name(&change_set_id)
            .send()
            .await
            .map_err(|e| format!("cannot read the change set: {}", error_text(&e)))?;
        let status = out
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if status == "CREATE_COMPLETE" || status == "FAILED" {
            break out;
        }
        tokio::time::sleep(poll.delay(0)).await;
    };
    let mut deployed = Deployed {
        stack: stack.clone(),
        ..Deployed::default()
    };
    let delete_change_set = || async {
        let _ = aws
            .cloudformation
            .delete_change_set()
            .stack_name(&stack)
            .change_set_name(&change_set_id)
            .send()
            .await;
    };
    if described.status().map(|s| s.as_str()) == Some("FAILED") {
        let reason = described.status_reason().unwrap_or("no reason given");
        delete_change_set().await;
        if reason.contains("didn't contain changes") || reason.contains("No updates") {
            say(&format!("stack {stack}: no changes, nothing to apply"));
            deployed.state_machine_arn = state_machine_arn(aws, dag).await.ok();
            return Ok(deployed);
        }
        return Err(format!(
            "CloudFormation could not compute the changes to the stack {stack}: {reason}"
        ));
    }
    let (lines, state_machine_changed) = change_lines(described.changes());
    say(&format!(
        "stack {stack}: {} change(s) to {}:",
        lines.len(),
        if change_type == ChangeSetType::Create {
            "create it"
        } else {
            "apply"
        }
    ));
    for line in &lines {
        say(line);
    }
    if options.dry_run {
        delete_change_set().await;
        if change_type == ChangeSetType::Create {
            // The empty stack a creating change set leaves behind.
            let _ = aws
                .cloudformation
                .delete_stack()
                .stack_name(&stack)
                .send()
                .await;
        }
        say("--dry-run: nothing uploaded, nothing applied");
        return Ok(deployed);
    }
    aws.cloudformation
        .execute_change_set()
        .stack_name(&stack)
        .change_set_name(&change_set_id)
        .send()
        .await
        .map_err(|e| format!("cannot apply the change set: {}", error_text(&e)))?;
    wait_for_stack(aws, &stack, &poll, say).await?;
    deployed.changed = true;
    let arn = state_machine_arn(aws, dag).await?;
    if state_machine_changed {
        let out = aws
            .sfn
            .publish_state_machine_version()
            .state_machine_arn(&arn)
            .description(format!(
                "flux-engine deploy of {} (template sha256 {})",
                dag.name,
                &sha256_hex(template.as_bytes())[..16]
            ))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the stack is deployed, but publishing a version of {arn} failed: {}",
                    error_text(&e)
                )
            })?;
        say(&format!(
            "published version {}",
            out.state_machine_version_arn()
        ));
        deployed.version_arn = Some(out.state_machine_version_arn().to_string());
    }
    deployed.state_machine_arn = Some(arn);
    Ok(deployed)
}

/// Waits until the stack's operation ends; an error quotes the events
/// that failed.
async fn wait_for_stack(
    aws: &AwsRun,
    stack: &str,
    poll: &Poll,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3 * 3600);
    let mut last = String::new();
    loop {
        let status = stack_status(aws, stack)
            .await?
            .unwrap_or_else(|| "DELETE_COMPLETE".into());
        if status != last {
            say(&format!("stack {stack}: {status}"));
            last = status.clone();
        }
        if status.ends_with("_IN_PROGRESS") {
            if std::time::Instant::now() > deadline {
                return Err(format!("the stack {stack} is still {status} after 3 hours"));
            }
            tokio::time::sleep(poll.delay(0)).await;
            continue;
        }
        if status.ends_with("ROLLBACK_COMPLETE") || status.ends_with("_FAILED") {
            let reasons = failed_events(aws, stack).await;
            return Err(format!("the stack {stack} ended {status}{reasons}"));
        }
        return Ok(());
    }
}

async fn failed_events(aws: &AwsRun, stack: &str) -> String {
    let Ok(out) = aws
        .cloudformation
        .describe_stack_events()
        .stack_name(stack)
        .send()
        .await
    else {
        return String::new();
    };
    let reasons: Vec<String> = out
        .stack_events()
        .iter()
        .filter(|e| {
            e.resource_status()
                .is_some_and(|s| s.as_str().ends_with("_FAILED"))
        })
        .take(5)
        .map(|e| {
            format!(
                "\n  {} ({}): {}",
                e.logical_resource_id().unwrap_or("?"),
                e.resource_type().unwrap_or("?"),
                e.resource_status_reason().unwrap_or("no reason given")
            )
        })
        .collect();
    reasons.concat()
}

/// What `destroy` removes, for the confirmation.
pub struct Teardown {
    pub stack: String,
    pub exists: bool,
    /// The scripts `deploy` uploaded, and its own prefix (package,
    /// templates).
    pub objects: Vec<String>,
    pub artifacts: Option<String>,
}

pub async fn plan_teardown(
    aws: &AwsRun,
    dag: &Dag,
    registry: &Registry,
) -> Result<Teardown, String> {
    let stack = stack_name(dag);
    let model = ExportModel::build(dag, registry).map_err(|e| e.to_string())?;
    let exists = stack_status(aws, &stack).await?.is_some();
    let objects = model
        .deployments()
        .iter()
        .flat_map(|d| &d.uploads)
        .filter(|u| !u.data)
        .map(|u| u.uri.clone())
        .collect();
    let artifacts = bucket_of(model.deployments()).map(|b| artifacts_prefix(&b, &stack));
    Ok(Teardown {
        stack,
        exists,
        objects,
        artifacts,
    })
}

/// Deletes the stack (waiting for it) and the objects `deploy` uploaded
/// (not the data, nor what executions wrote).
pub async fn destroy(
    aws: &AwsRun,
    teardown: &Teardown,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), String> {
    if teardown.exists {
        aws.cloudformation
            .delete_stack()
            .stack_name(&teardown.stack)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot delete the stack {}: {}",
                    teardown.stack,
                    error_text(&e)
                )
            })?;
        wait_for_stack(aws, &teardown.stack, &Poll::from_env(2.0), say).await?;
    }
    let mut keys: Vec<(String, String)> = Vec::new();
    for uri in &teardown.objects {
        if let Ok(u) = S3Uri::parse(uri) {
            keys.push((u.bucket().to_string(), u.key().to_string()));
        }
    }
    if let Some(prefix) = &teardown.artifacts
        && let Ok(p) = S3Uri::parse(prefix)
    {
        let mut token = None;
        loop {
            let out = aws
                .s3
                .list_objects_v2()
                .bucket(p.bucket())
                .prefix(p.key())
                .set_continuation_token(token)
                .send()
                .await;
            let Ok(out) = out else { break };
            for object in out.contents() {
                if let Some(key) = object.key() {
                    keys.push((p.bucket().to_string(), key.to_string()));
                }
            }
            token = out.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    for (bucket, key) in keys {
        match aws
            .s3
            .delete_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => say(&format!("deleted s3://{bucket}/{key}")),
            Err(e) => say(&format!(
                "could not delete s3://{bucket}/{key}: {}",
                error_text(&e)
            )),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_glibc_a_binary_needs_is_read_from_its_strings() {
        let binary = b"\x7fELF...\0GLIBC_2.2.5\0GLIBC_2.34\0memcpy\0GLIBC_2.35\0GLIBC_PRIVATE\0";
        assert_eq!(newest_glibc(binary), Some((2, 35)));
        // Text that only looks like it (no NUL after) is not a version.
        assert_eq!(newest_glibc(b"see GLIBC_2.99 in the docs"), None);
        assert_eq!(newest_glibc(b"#!/bin/sh\necho hi\n"), None);
    }

    #[test]
    fn a_binary_newer_than_lambdas_glibc_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new");
        std::fs::write(&new, b"\x7fELF\0GLIBC_2.35\0").unwrap();
        let message = report_package(&new).unwrap_err();
        assert!(
            message.contains("glibc 2.35") && message.contains("2.34"),
            "{message}"
        );
        assert!(
            message.contains("FLUX_REPORT_BINARY") && message.contains("report_image"),
            "{message}"
        );
        let old = dir.path().join("old");
        std::fs::write(&old, b"\x7fELF\0GLIBC_2.34\0").unwrap();
        let package = report_package(&old).unwrap();
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(package)).unwrap();
        let names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"bootstrap".to_string()));
        let mode = zip.by_name("bootstrap").unwrap().unix_mode().unwrap();
        assert_eq!(mode & 0o777, 0o755);
        // The same binary makes the same package.
        assert_eq!(report_package(&old).unwrap(), report_package(&old).unwrap());
    }
}

//! The report Lambda function (`flux-engine lambda report`, the container
//! image's entry point) and its one-shot form for debugging
//! (`flux-engine report-payload PAYLOAD.json`). Both hand the payload
//! `export --sfn` writes to `tasks::report::aws::render`.

use std::path::Path;

use engine::read_limit::ReadLimitError;
use tasks::report::aws;

use crate::exit::Exit;

/// Lambda's own limit on a synchronous invocation's payload; a larger file
/// is not a payload Step Functions could have sent.
const MAX_PAYLOAD_BYTES: u64 = 6 * 1024 * 1024;

/// What the Lambda runtime needs from its environment. `lambda_runtime`
/// panics on a missing one; checking first turns that into a message.
const RUNTIME_VARIABLES: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// Renders once from a payload file; prints `{"report", "bytes"}`.
pub fn report_payload(path: &Path) -> Result<u8, Exit> {
    // Bounded by what is read: a pipe or a device reports no size.
    let text = match engine::read_limit::read_limited(path, MAX_PAYLOAD_BYTES) {
        Ok(text) => text,
        Err(ReadLimitError::TooLarge { size, kind, .. }) => {
            let what = match size {
                Some(size) => format!("is {size} bytes"),
                None => format!("({kind}) gave more than {MAX_PAYLOAD_BYTES} bytes"),
            };
            return Err(Exit::invalid(format_args!(
                "{} {what}; a Lambda payload is at most {MAX_PAYLOAD_BYTES}",
                path.display()
            )));
        }
        Err(ReadLimitError::Io(e)) => {
            return Err(Exit::invalid(format_args!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let payload: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Exit::invalid(format_args!("{} is not JSON: {e}", path.display())))?;
    let result = crate::async_runtime()?.block_on(async {
        let client = aws::s3_client().await;
        aws::render(&client, &payload).await
    });
    match result {
        Ok(output) => {
            println!("{output}");
            Ok(0)
        }
        Err(e) => Err(Exit::failure(e)),
    }
}

/// The Lambda Runtime API loop: each invocation's payload is rendered and
/// its result (or error) posted back, until the sandbox is stopped.
pub fn report_function() -> Result<u8, Exit> {
    let missing: Vec<&str> = RUNTIME_VARIABLES
        .iter()
        .copied()
        .filter(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()))
        .collect();
    if !missing.is_empty() {
        return Err(Exit::invalid(format_args!(
            "`flux-engine lambda report` runs inside AWS Lambda, which sets {}; missing: {}. To render one payload outside Lambda use `flux-engine report-payload PAYLOAD.json`",
            RUNTIME_VARIABLES.join(", "),
            missing.join(", ")
        )));
    }
    if std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .is_none()
    {
        return Err(Exit::invalid(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE is not a whole number of MB",
        ));
    }
    crate::async_runtime()?
        .block_on(async {
            // One client for every invocation of this sandbox: its
            // connections and credentials are reused.
            // (A client is a handle: cloning it shares them.)
            let client = aws::s3_client().await;
            lambda_runtime::run(lambda_runtime::service_fn(
                move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
                    let client = client.clone();
                    async move {
                        aws::render(&client, &event.payload).await.map_err(|e| {
                            lambda_runtime::Diagnostic {
                                error_type: "ReportFailed".to_string(),
                                error_message: e.message,
                            }
                        })
                    }
                },
            ))
            .await
        })
        .map_err(|e| Exit::failure(format_args!("the Lambda runtime stopped: {e}")))?;
    Ok(0)
}

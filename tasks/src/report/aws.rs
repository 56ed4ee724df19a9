//! The `report` task on AWS: what the Lambda function behind
//! `[aws] report_function` runs (`flux-engine lambda report`, or once from
//! a file with `flux-engine report-payload`).
//!
//! Step Functions invokes it with the payload `export --sfn` writes (see
//! the kind's [`super::sfn`]):
//!
//! ```json
//! {"dag": "rental", "task": "report", "execution": "<execution name>",
//!  "fields": { the task's fields, params substituted },
//!  "inputs": {"summary": {"kind": "athena_query",
//!                         "results_prefix": "s3://…/summary/<execution name>/"},
//!             "clean": {"kind": "emr_spark", "output_json": "s3://…/clean.json"}}}
//! ```
//!
//! The fields are checked by the same parser as the local task's, every
//! input the report names is read from S3 first, and then the same code
//! as the local task's builds the report and renders the HTML, which goes
//! to `fields.output` (`text/html`). An `athena_query` input is the one
//! `.csv` object directly under its `results_prefix` (the newest by
//! `LastModified` when a retried query left several); its `.csv.metadata`
//! is not read, so column types are judged by the values (a table writes a
//! column of whole numbers with thousands separators and one of fractions
//! with two decimals, as locally for an output without `columns`). An
//! `emr_spark` input is its `output_json` object, the cleaning job's
//! counts. The result is `{"report": "s3://…html", "bytes": N}`.
//!
//! The S3 client comes from the standard AWS configuration (environment,
//! profile, the Lambda function's role); `AWS_ENDPOINT_URL` or
//! `AWS_ENDPOINT_URL_S3` points it at another endpoint, and then buckets
//! are addressed by path, as local S3 servers expect.

use std::collections::BTreeMap;

use indexmap::IndexMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use engine::TaskFailure;
use serde::Deserialize;

use super::{QueryData, ReportSource, ReportSpec, missing_input};
use crate::s3::S3Uri;

/// A query result or counts object larger than this is refused rather than
/// read into the function's memory: a report shows at most a few thousand
/// rows, so a result this large is a query that forgot its `LIMIT`.
pub const MAX_INPUT_BYTES: i64 = 256 * 1024 * 1024;

/// The invocation payload: what the exported state machine's report
/// state sends (built by the kind's translation, `super::sfn`) and what
/// the function reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Payload {
    pub dag: String,
    pub task: String,
    /// The execution's name (in the state, `$$.Execution.Name`).
    pub execution: String,
    /// The task's fields, parameters substituted.
    #[serde(deserialize_with = "json_fields")]
    pub fields: toml::Table,
    /// One entry per dependency, in `depends_on` order.
    #[serde(default)]
    pub inputs: IndexMap<String, InputRef>,
}

/// Where one dependency's output is.
#[derive(Debug, Clone, Deserialize)]
pub struct InputRef {
    /// The dependency's task kind.
    pub kind: String,
    /// A query's results of this execution (in the state, an intrinsic
    /// giving the prefix under the execution's name).
    pub results_prefix: Option<String>,
    /// An object the dependency wrote (the cleaning job's counts).
    pub output_json: Option<String>,
}

/// The payload's `fields` as TOML, as a DAG file gives them. JSON has no
/// TOML equivalent for null; everything else converts.
fn json_fields<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<toml::Table, D::Error> {
    let fields = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
    match toml::Value::try_from(&fields) {
        Ok(toml::Value::Table(table)) => Ok(table),
        Ok(other) => Err(serde::de::Error::custom(format!(
            "`fields` is a {}, not a table of the report task's fields",
            other.type_str()
        ))),
        Err(e) => Err(serde::de::Error::custom(format!(
            "`fields` cannot be read as a report task's fields: {e}"
        ))),
    }
}

/// An S3 client from the standard AWS configuration. Path-style
/// addressing when an endpoint URL is configured, because a local S3
/// endpoint (`http://127.0.0.1:PORT`) has no per-bucket host names.
pub async fn s3_client() -> Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await;
    let custom_endpoint = shared.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(custom_endpoint)
        .build();
    Client::from_conf(config)
}

/// HTTPS with rustls on ring, the platform's root certificates (the
/// container image installs `ca-certificates`).
pub(crate) fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Renders the report a payload describes and writes it to S3. Every
/// error names the DAG, the task and, where one is at fault, the field and
/// the S3 object.
pub async fn render(
    client: &Client,
    payload: &serde_json::Value,
) -> Result<serde_json::Value, TaskFailure> {
    let payload = Payload::deserialize(payload).map_err(|e| {
        TaskFailure::new(format!(
            "the report payload is not what `flux-engine export --sfn` writes: {e} (expected {{\"dag\", \"task\", \"execution\", \"fields\", \"inputs\"}})"
        ))
    })?;
    let context = format!(
        "report task `{}` of DAG `{}`, execution `{}`",
        payload.task, payload.dag, payload.execution
    );
    render_payload(client, &payload)
        .await
        .map_err(|e| TaskFailure::new(format!("{context}: {}", e.message)))
}

async fn render_payload(
    client: &Client,
    payload: &Payload,
) -> Result<serde_json::Value, TaskFailure> {
    let spec = parse_fields(&payload.fields)?;
    let mut source = Prefetched::default();
    for (field, from) in spec.query_inputs() {
        let input = input_ref(payload, &field, &from)?;
        let prefix = match (&input.kind[..], &input.results_prefix) {
            ("athena_query", Some(prefix)) => prefix,
            _ => {
                return Err(TaskFailure::new(format!(
                    "`{field}` = \"{from}\": `{from}` is a `{}` task without a `results_prefix`; tiles and bar, line and table sections read an athena_query result (a row_counts section reads the cleaning job's counts instead)",
                    input.kind
                )));
            }
        };
        let data = read_query_result(client, &field, &from, prefix).await?;
        source.queries.insert(from, data);
    }
    for (field, from) in spec.counts_inputs() {
        if source.counts.contains_key(&from) {
            continue;
        }
        let input = input_ref(payload, &field, &from)?;
        let Some(location) = &input.output_json else {
            return Err(TaskFailure::new(format!(
                "`{field}` = \"{from}\": `{from}` (a `{}` task) has no `output_json`; a row_counts section reads the counts JSON an emr_spark task writes to its `output_json`",
                input.kind
            )));
        };
        let uri = parse_uri(&field, &from, "output_json", location)?;
        let bytes = get_object(client, &uri).await.map_err(|e| {
            TaskFailure::new(format!(
                "`{field}` = \"{from}\": cannot read the counts {uri}: {e}"
            ))
        })?;
        let counts = serde_json::from_slice(&bytes).map_err(|e| {
            TaskFailure::new(format!("`{field}` = \"{from}\": {uri} is not JSON: {e}"))
        })?;
        source.counts.insert(from, counts);
    }

    let report = spec.build(&source, &payload.execution, &payload.task)?;
    upload_html(client, &spec, &report).await
}

/// Renders `report` and writes it to the spec's `output`; what the task
/// outputs.
async fn upload_html(
    client: &Client,
    spec: &ReportSpec,
    report: &reports::Report,
) -> Result<serde_json::Value, TaskFailure> {
    let html = reports::to_html(report);
    let bytes = html.len();
    client
        .put_object()
        .bucket(spec.output.bucket())
        .key(spec.output.key())
        .content_type("text/html; charset=utf-8")
        .body(ByteStream::from(html.into_bytes()))
        .send()
        .await
        .map_err(|e| {
            TaskFailure::new(format!(
                "`output`: cannot write the report to {}: {}",
                spec.output,
                DisplayErrorContext(&e)
            ))
        })?;
    Ok(serde_json::json!({"report": spec.output.to_string(), "bytes": bytes}))
}

/// The payload's `fields`, checked as the local task kind checks a DAG
/// file's, unknown fields included.
fn parse_fields(table: &toml::Table) -> Result<ReportSpec, TaskFailure> {
    let spec = engine::config::parse::<ReportSpec>(table).map_err(|e| {
        let field = e.field.as_deref().unwrap_or("fields");
        let help = e.help.map(|h| format!(" ({h})")).unwrap_or_default();
        TaskFailure::new(format!("field `{field}`: {}{help}", e.message))
    })?;
    let known = engine::config::field_names::<ReportSpec>();
    let unknown: Vec<&String> = table
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(TaskFailure::new(format!(
            "unknown field(s) {} in `fields`; a report task accepts: {}",
            unknown
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", "),
            known.join(", ")
        )));
    }
    Ok(spec)
}

fn input_ref<'a>(
    payload: &'a Payload,
    field: &str,
    from: &str,
) -> Result<&'a InputRef, TaskFailure> {
    payload.inputs.get(from).ok_or_else(|| {
        let mut names: Vec<&str> = payload.inputs.keys().map(String::as_str).collect();
        names.sort_unstable();
        missing_input(field, from, &payload.task, names.into_iter())
    })
}

fn parse_uri(field: &str, from: &str, what: &str, text: &str) -> Result<S3Uri, TaskFailure> {
    S3Uri::parse(text).map_err(|e| {
        TaskFailure::new(format!(
            "`{field}` = \"{from}\": `inputs.{from}.{what}` `{text}`: {e}"
        ))
    })
}

/// The query result under `prefix`: the one `.csv` object directly under
/// it, or the newest of several (a retried query writes a second one).
async fn read_query_result(
    client: &Client,
    field: &str,
    from: &str,
    prefix: &str,
) -> Result<QueryData, TaskFailure> {
    let prefix = parse_uri(field, from, "results_prefix", prefix)?.as_prefix();
    let mut newest: Option<(aws_sdk_s3::primitives::DateTime, String)> = None;
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(prefix.bucket())
            .prefix(prefix.key())
            .delimiter("/")
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| {
                TaskFailure::new(format!(
                    "`{field}` = \"{from}\": cannot list the query results under {prefix}: {}",
                    DisplayErrorContext(&e)
                ))
            })?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            let name = &key[prefix.key().len().min(key.len())..];
            if !name.ends_with(".csv") || name.contains('/') {
                continue;
            }
            let modified = object
                .last_modified()
                .cloned()
                .unwrap_or(aws_sdk_s3::primitives::DateTime::from_secs(0));
            // Ties (same second) go to the greater key, so the choice does
            // not depend on listing order.
            let newer = newest
                .as_ref()
                .is_none_or(|(t, k)| (modified, key) > (*t, k.as_str()));
            if newer {
                newest = Some((modified, key.to_string()));
            }
        }
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => break,
        }
    }
    let Some((_, key)) = newest else {
        return Err(TaskFailure::new(format!(
            "`{field}` = \"{from}\": no query result (`.csv` object) directly under {prefix}; the athena_query task `{from}` writes its result there in this execution"
        )));
    };
    let uri = S3Uri::new(prefix.bucket(), &key)
        .map_err(|e| TaskFailure::new(format!("`{field}` = \"{from}\": object `{key}`: {e}")))?;
    let bytes = get_object(client, &uri).await.map_err(|e| {
        TaskFailure::new(format!(
            "`{field}` = \"{from}\": cannot read the query result {uri}: {e}"
        ))
    })?;
    Ok(QueryData {
        location: uri.to_string(),
        bytes,
        types: BTreeMap::new(),
    })
}

async fn get_object(client: &Client, uri: &S3Uri) -> Result<Vec<u8>, String> {
    let object = client
        .get_object()
        .bucket(uri.bucket())
        .key(uri.key())
        .send()
        .await
        .map_err(|e| DisplayErrorContext(&e).to_string())?;
    if object.content_length().is_some_and(|n| n > MAX_INPUT_BYTES) {
        return Err(format!(
            "it is {} bytes, more than the {MAX_INPUT_BYTES} a report reads",
            object.content_length().unwrap_or_default()
        ));
    }
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| format!("reading the body failed: {e}"))?;
    Ok(bytes.into_bytes().to_vec())
}

/// The inputs, read from S3 before the report is built.
#[derive(Default)]
struct Prefetched {
    queries: BTreeMap<String, QueryData>,
    counts: BTreeMap<String, serde_json::Value>,
}

impl ReportSource for Prefetched {
    fn query_result(&self, field: &str, from: &str) -> Result<QueryData, TaskFailure> {
        self.queries.get(from).cloned().ok_or_else(|| {
            TaskFailure::new(format!(
                "`{field}` = \"{from}\": the result of `{from}` was not read"
            ))
        })
    }

    fn row_counts(&self, field: &str, from: &str) -> Result<serde_json::Value, TaskFailure> {
        self.counts.get(from).cloned().ok_or_else(|| {
            TaskFailure::new(format!(
                "`{field}` = \"{from}\": the counts of `{from}` were not read"
            ))
        })
    }
}

#[cfg(test)]
mod tests;

/// The `report` task in a run with `--target aws`: the upstream query
/// results read from S3 where Athena wrote them (the exact objects the
/// queries' outputs name), the same report built and rendered as
/// locally, and the HTML uploaded to `output`.
struct ReportOnAws {
    spec: ReportSpec,
    aws: std::sync::Arc<crate::aws::AwsRun>,
}

impl crate::aws::OnAws for super::Report {
    fn aws_action(
        &self,
        spec: ReportSpec,
        aws: &std::sync::Arc<crate::aws::AwsRun>,
    ) -> std::sync::Arc<dyn engine::TaskAction> {
        std::sync::Arc::new(ReportOnAws {
            spec,
            aws: aws.clone(),
        })
    }
}

#[async_trait::async_trait]
impl engine::TaskAction for ReportOnAws {
    async fn run(
        &self,
        attempt: &engine::Attempt,
    ) -> Result<Option<serde_json::Value>, TaskFailure> {
        let spec = &self.spec;
        let client = &self.aws.s3;
        let mut source = Prefetched::default();
        for (field, from) in spec.query_inputs() {
            let output = super::input(attempt, &field, &from)?;
            let (uri, types) = super::query_result_of(output, &field, &from)?;
            let bytes = get_object(client, &uri).await.map_err(|e| {
                TaskFailure::new(format!(
                    "`{field}` = \"{from}\": cannot read the query result {uri}: {e}"
                ))
            })?;
            source.queries.insert(
                from,
                QueryData {
                    location: uri.to_string(),
                    bytes,
                    types,
                },
            );
        }
        for (field, from) in spec.counts_inputs() {
            // The Spark task's output is its counts JSON, as locally.
            let counts = super::input(attempt, &field, &from)?.clone();
            source.counts.insert(from, counts);
        }
        let report = spec.build(&source, &attempt.run_id, &attempt.task_id)?;
        upload_html(client, spec, &report).await.map(Some)
    }
}

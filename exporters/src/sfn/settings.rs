//! The DAG's `[aws]` section: what only production needs.
//!
//! | setting | needed when | meaning |
//! |---|---|---|
//! | `region` | never by `--sfn` | the AWS region, for the ARNs of `--iam` (`*` when absent) |
//! | `account_id` | never by `--sfn` | the 12-digit AWS account, for the ARNs and trust condition of `--iam` (`*` when absent) |
//! | `emr_mode` | an `emr_spark` task | `"cluster"` (EMR on EC2) or `"serverless"` (EMR Serverless) |
//! | `release_label` | cluster | e.g. `"emr-7.5.0"` |
//! | `instance_type` | cluster | the primary and core nodes' type, e.g. `"m5.xlarge"` |
//! | `instance_count` | cluster | nodes, primary included (1 to 500) |
//! | `service_role` | cluster | EMR's service role (`EMR_DefaultRole`) |
//! | `job_flow_role` | cluster | the nodes' instance profile (`EMR_EC2_DefaultRole`) |
//! | `log_uri` | optional, cluster | `s3://` prefix for the cluster's logs |
//! | `idle_timeout_seconds` | optional, cluster | EMR's auto-termination after idling (default 3600): the backstop for an execution stopped from outside, which no `Catch` sees |
//! | `application_id` | serverless | the EMR Serverless application |
//! | `execution_role_arn` | serverless | the job runs' role |
//! | `scripts_prefix` | an `emr_spark` task | the `s3://` prefix holding the PySpark scripts and `py_files` (by file name) |
//! | `athena_workgroup` | an `athena_query` task | the Athena workgroup |
//! | `report_function` | a `report` task | the Lambda function (name or ARN) that runs flux-engine's report code |
//!
//! A setting a task of the DAG needs and that is missing is an error that
//! names it; the exporter never writes a placeholder. Unknown settings are
//! errors too (no silent typos), with the nearest known name.

use engine::Dag;
use engine::diagnostic::nearest;

pub const KNOWN: &[&str] = &[
    "region",
    "account_id",
    "emr_mode",
    "release_label",
    "instance_type",
    "instance_count",
    "service_role",
    "job_flow_role",
    "log_uri",
    "idle_timeout_seconds",
    "application_id",
    "execution_role_arn",
    "scripts_prefix",
    "athena_workgroup",
    "report_function",
];

const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 3600;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub region: Option<String>,
    /// 12 digits.
    pub account_id: Option<String>,
    pub emr: Option<Emr>,
    /// Ends with `/`.
    pub scripts_prefix: Option<String>,
    pub athena_workgroup: Option<String>,
    pub report_function: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Emr {
    Cluster {
        release_label: String,
        instance_type: String,
        instance_count: u64,
        service_role: String,
        job_flow_role: String,
        log_uri: Option<String>,
        idle_timeout_seconds: u64,
    },
    Serverless {
        application_id: String,
        execution_role_arn: String,
    },
}

impl Settings {
    /// Reads `dag.aws`, requiring what the DAG's task kinds need. Every
    /// problem is reported, not just the first.
    pub fn from_dag(dag: &Dag) -> Result<Settings, Vec<String>> {
        let first_of = |kind: &str| dag.tasks.iter().find(|t| t.kind == kind).map(|t| &t.id);
        let mut reader = Reader {
            aws: &dag.aws,
            errors: Vec::new(),
        };
        for key in dag.aws.keys() {
            if !KNOWN.contains(&key.as_str()) {
                let hint = nearest(key, KNOWN.iter().copied())
                    .map(|n| format!("did you mean `{n}`? "))
                    .unwrap_or_default();
                reader.errors.push(format!(
                    "[aws] has an unknown setting `{key}`: {hint}known settings: {}",
                    KNOWN.join(", ")
                ));
            }
        }
        let region = reader.string("region", None);
        let account_id = reader.string("account_id", None).and_then(|a| {
            if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) {
                Some(a)
            } else {
                reader.errors.push(format!(
                    "[aws] account_id must be the 12 digits of an AWS account, found {a:?}"
                ));
                None
            }
        });
        let emr = first_of("emr_spark").and_then(|task| {
            let why = format!("task `{task}` is an emr_spark task");
            let mode = reader.string("emr_mode", Some(&format!(
                "{why}; add emr_mode = \"cluster\" (EMR on EC2) or \"serverless\" (EMR Serverless) under [aws]"
            )))?;
            match mode.as_str() {
                "cluster" => {
                    let why = format!("{why} and emr_mode is \"cluster\"");
                    let need = |r: &mut Reader, key: &str, example: &str| {
                        r.string(key, Some(&format!("{why}; add for example {key} = {example:?}")))
                    };
                    let release_label = need(&mut reader, "release_label", "emr-7.5.0");
                    let instance_type = need(&mut reader, "instance_type", "m5.xlarge");
                    let instance_count = reader.count(
                        "instance_count",
                        1,
                        500,
                        Some(&format!("{why}; add for example instance_count = 3")),
                    );
                    let service_role = need(&mut reader, "service_role", "EMR_DefaultRole");
                    let job_flow_role = need(&mut reader, "job_flow_role", "EMR_EC2_DefaultRole");
                    let log_uri = reader.string("log_uri", None);
                    if let Some(uri) = &log_uri
                        && !uri.starts_with("s3://")
                    {
                        reader.errors.push(format!(
                            "[aws] log_uri must be an s3:// prefix, found {uri:?}"
                        ));
                    }
                    let idle_timeout_seconds = reader
                        .count("idle_timeout_seconds", 60, 604_800, None)
                        .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECONDS);
                    Some(Emr::Cluster {
                        release_label: release_label?,
                        instance_type: instance_type?,
                        instance_count: instance_count?,
                        service_role: service_role?,
                        job_flow_role: job_flow_role?,
                        log_uri,
                        idle_timeout_seconds,
                    })
                }
                "serverless" => {
                    let why = format!("{why} and emr_mode is \"serverless\"");
                    let application_id = reader.string(
                        "application_id",
                        Some(&format!("{why}; add the EMR Serverless application's id, e.g. application_id = \"00fabcdefg123456\"")),
                    );
                    let execution_role_arn = reader.string(
                        "execution_role_arn",
                        Some(&format!("{why}; add the job runs' role, e.g. execution_role_arn = \"arn:aws:iam::123456789012:role/flux-emr-serverless\"")),
                    );
                    Some(Emr::Serverless {
                        application_id: application_id?,
                        execution_role_arn: execution_role_arn?,
                    })
                }
                other => {
                    reader.errors.push(format!(
                        "[aws] emr_mode must be \"cluster\" or \"serverless\", found {other:?}"
                    ));
                    None
                }
            }
        });
        let scripts_prefix = match first_of("emr_spark") {
            Some(task) => reader
                .string(
                    "scripts_prefix",
                    Some(&format!(
                        "task `{task}` is an emr_spark task, whose script production reads from S3; add for example scripts_prefix = \"s3://my-bucket/scripts/\""
                    )),
                )
                .and_then(|p| {
                    if p.starts_with("s3://") && p.len() > "s3://".len() {
                        Some(if p.ends_with('/') { p } else { format!("{p}/") })
                    } else {
                        reader.errors.push(format!(
                            "[aws] scripts_prefix must be an s3:// prefix, found {p:?}"
                        ));
                        None
                    }
                }),
            None => reader.string("scripts_prefix", None),
        };
        let athena_workgroup = reader.string(
            "athena_workgroup",
            first_of("athena_query")
                .map(|task| format!("task `{task}` is an athena_query task; add for example athena_workgroup = \"primary\""))
                .as_deref(),
        );
        let report_function = reader.string(
            "report_function",
            first_of("report")
                .map(|task| format!("task `{task}` is a report task, which runs as a Lambda function; add for example report_function = \"flux-report\""))
                .as_deref(),
        );
        if reader.errors.is_empty() {
            Ok(Settings {
                region,
                account_id,
                emr,
                scripts_prefix,
                athena_workgroup,
                report_function,
            })
        } else {
            Err(reader.errors)
        }
    }
}

struct Reader<'a> {
    aws: &'a toml::Table,
    errors: Vec<String>,
}

impl Reader<'_> {
    /// A non-empty string setting. `required` says why it is needed, and
    /// makes its absence an error.
    fn string(&mut self, key: &str, required: Option<&str>) -> Option<String> {
        match self.aws.get(key) {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(other) => {
                self.errors.push(format!(
                    "[aws] {key} must be a non-empty string, found {other}"
                ));
                None
            }
            None => {
                if let Some(why) = required {
                    self.errors.push(format!("[aws] {key} is missing: {why}"));
                }
                None
            }
        }
    }

    fn count(&mut self, key: &str, min: u64, max: u64, required: Option<&str>) -> Option<u64> {
        match self.aws.get(key) {
            Some(toml::Value::Integer(n)) if (min as i64..=max as i64).contains(n) => {
                Some(*n as u64)
            }
            // A `${params.X}` setting arrives as text; accept its number.
            Some(toml::Value::String(s))
                if s.trim()
                    .parse::<u64>()
                    .is_ok_and(|n| (min..=max).contains(&n)) =>
            {
                s.trim().parse().ok()
            }
            Some(other) => {
                self.errors.push(format!(
                    "[aws] {key} must be a whole number from {min} to {max}, found {other}"
                ));
                None
            }
            None => {
                if let Some(why) = required {
                    self.errors.push(format!("[aws] {key} is missing: {why}"));
                }
                None
            }
        }
    }
}

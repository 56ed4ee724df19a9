//! A finished OpenTelemetry span as the checkpoint keeps it, so that a
//! run's trace can be viewed later without a collector (`flux-engine
//! trace RUN_ID`). The shape follows OTLP's `Span`: ids in lowercase hex,
//! times in nanoseconds since the Unix epoch, attributes as JSON values.

use serde::{Deserialize, Serialize};

/// One finished span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// `None` for a trace's root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// OTLP's span kind: `internal`, `client`, `server`, `producer`, `consumer`.
    pub kind: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status: SpanStatus,
    /// In the order they were set; values are strings, numbers, booleans
    /// or arrays of them.
    pub attributes: Vec<(String, serde_json::Value)>,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
    /// The resource the span came from (`service.name`, `service.version`,
    /// `host.name`, ...).
    pub resource: Vec<(String, serde_json::Value)>,
    /// The instrumentation scope's name (`flux-engine`).
    pub scope: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "lowercase")]
pub enum SpanStatus {
    Unset,
    Ok,
    Error { message: String },
}

/// Something that happened at a point in a span: an `exception` (with
/// `exception.message`), a retry's scheduled delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Vec<(String, serde_json::Value)>,
}

/// A link to a span of another trace: a resumed run's root span links to
/// the root span of the run it resumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: Vec<(String, serde_json::Value)>,
}

impl SpanRecord {
    /// The value of attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&serde_json::Value> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

/// Attribute keys flux-engine sets (all with the `flux.` prefix).
pub mod attr {
    pub const RUN_ID: &str = "flux.run_id";
    pub const DAG: &str = "flux.dag";
    pub const TASK_ID: &str = "flux.task_id";
    pub const TASK_TYPE: &str = "flux.task_type";
    pub const ATTEMPT: &str = "flux.attempt";
    /// The final status: a run's (`succeeded`, `failed`, `cancelled`), a
    /// task's (`succeeded`, `failed`, `upstream_failed`, `skipped`), an
    /// attempt's (`succeeded`, `failed`, `timed_out`, `cancelled`).
    pub const STATUS: &str = "flux.status";
    /// On a resumed run's root span: how many times the run was resumed.
    pub const RESUME: &str = "flux.resume";

    /// The keys the engine itself sets; any other `flux.` key on a run's
    /// span comes from a kind's preflight (`flux.spark.version`).
    pub const ENGINE_OWN: &[&str] = &[RUN_ID, DAG, TASK_ID, TASK_TYPE, ATTEMPT, STATUS, RESUME];
}

/// The error message a task's span ends with, by the task's status when
/// it ended (`None`: it ended well): what the scheduler records and what
/// a span rebuilt from the checkpoint shows. A failed task's attempt
/// span holds the whole message; the task's names the attempt.
pub fn task_error(status: &str, last_attempt: u32) -> Option<String> {
    match status {
        "succeeded" => None,
        "failed" => Some(format!("attempt {last_attempt} failed")),
        other => Some(other.to_string()),
    }
}

/// Span names: `run <dag>`, `task <id>`, `attempt <n>`; steps inside a
/// task kind have names of their own (`s3.put`, `spark.submit`, ...).
pub mod name {
    pub fn run(dag: &str) -> String {
        format!("run {dag}")
    }
    pub fn task(id: &str) -> String {
        format!("task {id}")
    }
    pub fn attempt(n: u32) -> String {
        format!("attempt {n}")
    }
}

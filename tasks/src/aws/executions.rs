//! Step Functions executions of a deployed DAG, read as runs: starting
//! one, reading its history (every page, each event once), its
//! definition, redriving it, and the trace its history gives.

use std::collections::BTreeMap;

use aws_sdk_sfn::types::HistoryEvent;
use engine::Dag;
use engine::checkpoint::RunStatus;
use engine::spans::{SpanRecord, SpanStatus, attr, name};

use super::history::{self, Event, Mapped, TaskShape};
use super::{AwsRun, error_text};

/// The target recorded with a run that is a Step Functions execution.
pub const TARGET: &str = "sfn";

/// The run-wide external work key holding the execution's ARN.
pub const EXECUTION_KEY: &str = "execution";

/// How long after its end Step Functions can redrive an execution.
pub const REDRIVE_DAYS: i64 = 14;

/// An execution as `DescribeExecution` tells it.
#[derive(Debug, Clone)]
pub struct Execution {
    pub arn: String,
    pub state_machine_arn: String,
    pub name: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`,
    /// `PENDING_REDRIVE`.
    pub status: String,
    pub start_ms: i64,
    pub stop_ms: Option<i64>,
    pub input: Option<String>,
    pub redrive_count: u32,
    /// `REDRIVABLE`, `NOT_REDRIVABLE`, ... when the service says.
    pub redrive_status: Option<String>,
    pub redrive_status_reason: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

impl Execution {
    pub fn is_running(&self) -> bool {
        matches!(self.status.as_str(), "RUNNING" | "PENDING_REDRIVE")
    }

    pub fn run_status(&self) -> RunStatus {
        match self.status.as_str() {
            "SUCCEEDED" => RunStatus::Succeeded,
            "FAILED" | "TIMED_OUT" => RunStatus::Failed,
            "ABORTED" => RunStatus::Cancelled,
            _ => RunStatus::Running,
        }
    }
}

fn millis(t: &aws_smithy_types::DateTime) -> i64 {
    t.to_millis().unwrap_or_default()
}

/// The tasks of `dag` as the history mapping needs them.
pub fn task_shapes(dag: &Dag) -> Vec<TaskShape> {
    dag.tasks
        .iter()
        .map(|t| TaskShape {
            id: t.id.clone(),
            depends_on: t.depends_on.clone(),
        })
        .collect()
}

/// The execution input for `--param` values: the state machine merges
/// `params` into the defaults it was exported with.
pub fn input(params: &[(String, String)]) -> String {
    let params: BTreeMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::json!({ "params": params }).to_string()
}

/// Starts an execution of `state_machine` (an ARN, or a version's ARN)
/// named `name`; its ARN.
pub async fn start(
    aws: &AwsRun,
    state_machine: &str,
    name: &str,
    input: &str,
) -> Result<String, String> {
    let out = aws
        .sfn
        .start_execution()
        .state_machine_arn(state_machine)
        .name(name)
        .input(input)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot start an execution of {state_machine}: {}",
                error_text(&e)
            )
        })?;
    Ok(out.execution_arn().to_string())
}

pub async fn describe(aws: &AwsRun, arn: &str) -> Result<Execution, String> {
    let out = aws
        .sfn
        .describe_execution()
        .execution_arn(arn)
        .send()
        .await
        .map_err(|e| format!("cannot describe the execution {arn}: {}", error_text(&e)))?;
    Ok(Execution {
        arn: out.execution_arn().to_string(),
        state_machine_arn: out.state_machine_arn().to_string(),
        name: out.name().unwrap_or_default().to_string(),
        status: out.status().as_str().to_string(),
        start_ms: millis(out.start_date()),
        stop_ms: out.stop_date().map(millis),
        input: out.input().map(str::to_string),
        redrive_count: out.redrive_count().unwrap_or(0).max(0) as u32,
        redrive_status: out.redrive_status().map(|s| s.as_str().to_string()),
        redrive_status_reason: out.redrive_status_reason().map(str::to_string),
        error: out.error().map(str::to_string),
        cause: out.cause().map(str::to_string),
    })
}

/// The definition the execution runs (a redriven execution keeps the one
/// it started with).
pub async fn definition(aws: &AwsRun, arn: &str) -> Result<String, String> {
    let out = aws
        .sfn
        .describe_state_machine_for_execution()
        .execution_arn(arn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read the definition of the execution {arn}: {}",
                error_text(&e)
            )
        })?;
    Ok(out.definition().to_string())
}

/// The state machine's current definition and type.
pub async fn state_machine(aws: &AwsRun, arn: &str) -> Result<(String, String), String> {
    let out = aws
        .sfn
        .describe_state_machine()
        .state_machine_arn(arn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot describe the state machine {arn}: {}",
                error_text(&e)
            )
        })?;
    Ok((
        out.definition().to_string(),
        out.r#type().as_str().to_string(),
    ))
}

/// Executions of `state_machine`, newest first (every page).
pub async fn list(aws: &AwsRun, state_machine: &str) -> Result<Vec<Execution>, String> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = aws
            .sfn
            .list_executions()
            .state_machine_arn(state_machine)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot list the executions of {state_machine}: {}",
                    error_text(&e)
                )
            })?;
        for e in out.executions() {
            found.push(Execution {
                arn: e.execution_arn().to_string(),
                state_machine_arn: e.state_machine_arn().to_string(),
                name: e.name().to_string(),
                status: e.status().as_str().to_string(),
                start_ms: millis(e.start_date()),
                stop_ms: e.stop_date().map(millis),
                input: None,
                redrive_count: e.redrive_count().unwrap_or(0).max(0) as u32,
                redrive_status: None,
                redrive_status_reason: None,
                error: None,
                cause: None,
            });
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(found);
        }
    }
}

/// Stops a running execution.
pub async fn stop(aws: &AwsRun, arn: &str) -> Result<(), String> {
    aws.sfn
        .stop_execution()
        .execution_arn(arn)
        .cause("stopped from flux-engine (Ctrl-C with --stop-on-interrupt)")
        .send()
        .await
        .map_err(|e| format!("cannot stop the execution {arn}: {}", error_text(&e)))?;
    Ok(())
}

/// Redrives a failed, aborted or timed-out execution; `token` makes a
/// repeat of the same request a no-op.
pub async fn redrive(aws: &AwsRun, arn: &str, token: &str) -> Result<(), String> {
    aws.sfn
        .redrive_execution()
        .execution_arn(arn)
        .client_token(token)
        .send()
        .await
        .map_err(|e| {
            format!(
                "Step Functions refused to redrive {arn}: {}",
                error_text(&e)
            )
        })?;
    Ok(())
}

fn event_of(e: &HistoryEvent) -> Event {
    let state = e
        .state_entered_event_details()
        .map(|d| d.name().to_string())
        .or_else(|| e.state_exited_event_details().map(|d| d.name().to_string()));
    macro_rules! failure {
        ($($getter:ident),*) => {
            None$(.or_else(|| e.$getter().map(|d| (d.error().map(str::to_string), d.cause().map(str::to_string)))))*
        };
    }
    let (error, cause) = failure!(
        task_failed_event_details,
        task_start_failed_event_details,
        task_submit_failed_event_details,
        task_timed_out_event_details,
        execution_failed_event_details,
        execution_aborted_event_details,
        execution_timed_out_event_details,
        lambda_function_failed_event_details,
        lambda_function_start_failed_event_details,
        lambda_function_timed_out_event_details,
        activity_failed_event_details,
        activity_timed_out_event_details
    )
    .unwrap_or((None, None));
    Event {
        id: e.id(),
        previous: e.previous_event_id(),
        at_ms: millis(e.timestamp()),
        kind: e.r#type().as_str().to_string(),
        state,
        error,
        cause,
    }
}

/// An execution's history, read incrementally: the first read pages
/// through it from the start; later reads page backwards from the newest
/// event until one already held, so each event is fetched about once.
#[derive(Debug, Default)]
pub struct History {
    pub events: Vec<Event>,
    /// Pages requested so far.
    pub pages: u32,
}

impl History {
    /// Reads the events added since the last read; how many there were.
    pub async fn read(&mut self, aws: &AwsRun, arn: &str) -> Result<usize, String> {
        let newest = self.events.last().map(|e| e.id);
        let mut fresh: Vec<Event> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = aws
                .sfn
                .get_execution_history()
                .execution_arn(arn)
                .max_results(1000)
                .reverse_order(newest.is_some())
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "cannot read the history of the execution {arn}: {}",
                        error_text(&e)
                    )
                })?;
            self.pages += 1;
            // Every event past the newest held, whatever order the page
            // is in (a service that ignores `reverseOrder`, as moto's
            // does, still gives each new event once).
            let mut reached_known = false;
            for e in out.events() {
                if newest.is_some_and(|n| e.id() <= n) {
                    reached_known = true;
                } else {
                    fresh.push(event_of(e));
                }
            }
            token = out.next_token().map(str::to_string);
            if reached_known || token.is_none() {
                break;
            }
        }
        fresh.sort_by_key(|e| e.id);
        fresh.dedup_by_key(|e| e.id);
        let n = fresh.len();
        self.events.extend(fresh);
        Ok(n)
    }
}

/// An execution's history and definition, mapped onto the DAG's tasks.
pub struct Observed {
    pub execution: Execution,
    pub mapped: Mapped,
}

/// Reads the execution (`DescribeExecution`), its history (through
/// `history`, incrementally) and definition, and maps them onto `dag`.
pub async fn observe(
    aws: &AwsRun,
    dag: &Dag,
    arn: &str,
    history: &mut History,
    definition: &mut Option<history::Definition>,
) -> Result<Observed, String> {
    // The status first: events up to it are then in the history read
    // after it.
    let execution = describe(aws, arn).await?;
    history.read(aws, arn).await?;
    if definition.is_none() {
        *definition = Some(history::Definition::parse(
            &self::definition(aws, arn).await?,
        ));
    }
    let mapped = history::map(
        &task_shapes(dag),
        definition.as_ref().expect("read above"),
        &history.events,
    );
    Ok(Observed { execution, mapped })
}

/// A 16- or 32-hex-digit id derived from `parts`, so that the trace of an
/// execution is the same however often it is rebuilt.
fn derived_id(parts: &[&str], hex_digits: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(hex_digits);
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
        if out.len() >= hex_digits {
            break;
        }
    }
    out.truncate(hex_digits);
    out
}

fn nanos(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or_default()
}

/// The run, task and attempt spans of an execution, with the attribute
/// names of a local run's, built from the mapped history. Unfinished
/// parts end at `now_ms`.
pub fn spans(
    run_id: &str,
    dag: &Dag,
    execution: &Execution,
    mapped: &Mapped,
    now_ms: i64,
) -> Vec<SpanRecord> {
    let trace_id = derived_id(&[&execution.arn, "trace"], 32);
    let now = history::timestamp(now_ms);
    let status_of = |status: &str, error: Option<&String>| match (status, error) {
        ("succeeded", _) => SpanStatus::Ok,
        ("failed" | "cancelled" | "upstream_failed", Some(e)) => {
            SpanStatus::Error { message: e.clone() }
        }
        ("failed", None) => SpanStatus::Error {
            message: "failed".into(),
        },
        _ => SpanStatus::Unset,
    };
    let resource = vec![
        (
            "service.name".to_string(),
            serde_json::Value::from("flux-engine"),
        ),
        (
            "service.version".to_string(),
            serde_json::Value::from(env!("CARGO_PKG_VERSION")),
        ),
    ];
    let run_span_id = derived_id(&[&execution.arn, "run"], 16);
    let run_start = mapped
        .started_at
        .clone()
        .unwrap_or_else(|| history::timestamp(execution.start_ms));
    let run_end = mapped.run.ended_at.clone().unwrap_or_else(|| now.clone());
    let mut spans = vec![SpanRecord {
        trace_id: trace_id.clone(),
        span_id: run_span_id.clone(),
        parent_span_id: None,
        name: name::run(&dag.name),
        kind: "internal".into(),
        start_unix_nano: nanos(&run_start),
        end_unix_nano: nanos(&run_end),
        status: status_of(mapped.run.status.as_str(), mapped.error.as_ref()),
        attributes: vec![
            (attr::RUN_ID.into(), run_id.into()),
            (attr::DAG.into(), dag.name.clone().into()),
            (attr::STATUS.into(), mapped.run.status.as_str().into()),
            (attr::RESUME.into(), mapped.run.resume_count.into()),
            ("flux.target".into(), TARGET.into()),
            ("aws.sfn.execution_arn".into(), execution.arn.clone().into()),
        ],
        events: Vec::new(),
        links: Vec::new(),
        resource: resource.clone(),
        scope: "flux-engine".into(),
    }];
    for task in &mapped.run.tasks {
        let Some(first) = task.attempts.first() else {
            continue;
        };
        let kind = dag
            .tasks
            .iter()
            .find(|t| t.id == task.id)
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        let task_span_id = derived_id(&[&execution.arn, "task", &task.id], 16);
        let task_end = task.ended_at.clone().unwrap_or_else(|| now.clone());
        spans.push(SpanRecord {
            trace_id: trace_id.clone(),
            span_id: task_span_id.clone(),
            parent_span_id: Some(run_span_id.clone()),
            name: name::task(&task.id),
            kind: "internal".into(),
            start_unix_nano: nanos(&first.started_at),
            end_unix_nano: nanos(&task_end),
            status: status_of(task.status.as_str(), task.error.as_ref()),
            attributes: vec![
                (attr::TASK_ID.into(), task.id.clone().into()),
                (attr::TASK_TYPE.into(), kind.into()),
                (attr::STATUS.into(), task.status.as_str().into()),
            ],
            events: Vec::new(),
            links: Vec::new(),
            resource: Vec::new(),
            scope: "flux-engine".into(),
        });
        for attempt in &task.attempts {
            let number = attempt.attempt.to_string();
            spans.push(SpanRecord {
                trace_id: trace_id.clone(),
                span_id: derived_id(&[&execution.arn, "attempt", &task.id, &number], 16),
                parent_span_id: Some(task_span_id.clone()),
                name: name::attempt(attempt.attempt),
                kind: "internal".into(),
                start_unix_nano: nanos(&attempt.started_at),
                end_unix_nano: nanos(attempt.ended_at.as_deref().unwrap_or(&now)),
                status: status_of(&attempt.status, attempt.error.as_ref()),
                attributes: vec![
                    (attr::TASK_ID.into(), task.id.clone().into()),
                    (attr::ATTEMPT.into(), attempt.attempt.into()),
                    (attr::STATUS.into(), attempt.status.clone().into()),
                ],
                events: Vec::new(),
                links: Vec::new(),
                resource: Vec::new(),
                scope: "flux-engine".into(),
            });
        }
    }
    spans
}

/// Why Step Functions cannot redrive `execution` (whose state machine
/// now has `current_definition`, and ran `ran_definition`), or `None`.
pub fn cannot_redrive(
    execution: &Execution,
    ran_definition: &str,
    current_definition: &str,
    machine_type: &str,
    now_ms: i64,
) -> Option<String> {
    let start_again = "start a new execution with `flux-engine start DAG`";
    if machine_type == "EXPRESS" {
        return Some(format!(
            "the state machine is an Express one, whose executions cannot be redriven; {start_again}"
        ));
    }
    match execution.status.as_str() {
        "FAILED" | "ABORTED" | "TIMED_OUT" => {}
        "SUCCEEDED" => {
            return Some(format!(
                "the execution succeeded: there is nothing to redrive; {start_again} to run it again"
            ));
        }
        other => {
            return Some(format!(
                "the execution is {other}: only a failed, aborted or timed-out execution can be redriven; `flux-engine follow RUN` follows it"
            ));
        }
    }
    if let Some(stop) = execution.stop_ms
        && now_ms - stop > REDRIVE_DAYS * 24 * 3600 * 1000
    {
        return Some(format!(
            "the execution ended more than {REDRIVE_DAYS} days ago ({}), past what Step Functions can redrive; {start_again}",
            history::timestamp(stop)
        ));
    }
    if execution.redrive_status.as_deref() == Some("NOT_REDRIVABLE") {
        return Some(format!(
            "Step Functions says it cannot be redriven: {}; {start_again}",
            execution
                .redrive_status_reason
                .as_deref()
                .unwrap_or("no reason given")
        ));
    }
    let normalize = |d: &str| {
        serde_json::from_str::<serde_json::Value>(d)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| d.to_string())
    };
    if normalize(ran_definition) != normalize(current_definition) {
        return Some(format!(
            "the state machine was deployed again since the execution started: a redrive would run the definition the execution started with, not the deployed one; {start_again} (or `flux-engine deploy` the DAG as it was, then resume)"
        ));
    }
    None
}

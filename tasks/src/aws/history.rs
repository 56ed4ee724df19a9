//! A Step Functions execution's history mapped onto the DAG's tasks: the
//! same tasks, attempts, statuses and errors a local run records, so that
//! `show`, `runs` and `trace` read an execution as they read a run.
//!
//! The export names the state doing a task's work after the task id and
//! its helper states `ID.Suffix` (`crawl.Wait`, `clean.StopCluster`,
//! `clean.Failed`); states of no task have names with spaces. History
//! events carry a state name only on `*StateEntered`/`*StateExited`; every
//! other event belongs to the state of the event its `previousEventId`
//! points to, so names are inherited along that chain.
//!
//! An attempt of task `T` is, by the type of state `T` in the definition:
//! a `Task` state: `TaskScheduled` to `TaskSucceeded` or a failure
//! (`TaskFailed`, `TaskTimedOut`, `TaskStartFailed`, `TaskSubmitFailed`);
//! a `Parallel` (a task of several states): `ParallelStateStarted` to
//! `ParallelStateSucceeded` or `ParallelStateFailed`, the error being the
//! last one seen inside; any other state (a `Pass` for `noop`): entered to
//! exited. A retry opens the next attempt. Entering `T.Failed` or
//! `T.StopCluster` (the catch path) means the task failed for good.

use std::collections::HashMap;

use engine::checkpoint::{AttemptRecord, ObservedRun, ObservedTask, RunStatus, TaskStatus};

/// One history event, reduced to what the mapping reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub previous: i64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The event type as the API names it (`TaskScheduled`).
    pub kind: String,
    /// The state's name, on `*StateEntered` and `*StateExited`.
    pub state: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// A task of the DAG, as the mapping needs it.
#[derive(Debug, Clone)]
pub struct TaskShape {
    pub id: String,
    pub depends_on: Vec<String>,
}

/// The execution as the history tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub run: ObservedRun,
    pub started_at: Option<String>,
    /// The execution's error and cause, when it failed.
    pub error: Option<String>,
}

/// What the mapping knows of the definition: each state's type, and the
/// `Error`/`Cause` of `Fail` states.
#[derive(Debug, Default, Clone)]
pub struct Definition {
    types: HashMap<String, String>,
    fails: HashMap<String, String>,
    /// A state's first retrier: interval, backoff rate, maximum delay
    /// (seconds).
    retries: HashMap<String, (f64, f64, Option<f64>)>,
}

impl Definition {
    /// Reads an Amazon States Language document (nested `Parallel`
    /// branches included). A definition that does not parse gives an
    /// empty map: attempts are then read from entered/exited events.
    pub fn parse(asl: &str) -> Definition {
        let mut definition = Definition::default();
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(asl) {
            definition.collect(&json);
        }
        definition
    }

    fn collect(&mut self, machine: &serde_json::Value) {
        let Some(states) = machine.get("States").and_then(|s| s.as_object()) else {
            return;
        };
        for (name, state) in states {
            let kind = state.get("Type").and_then(|t| t.as_str()).unwrap_or("");
            self.types.insert(name.clone(), kind.to_string());
            if kind == "Fail" {
                let error = state.get("Error").and_then(|e| e.as_str());
                let cause = state.get("Cause").and_then(|c| c.as_str());
                let text = match (error, cause) {
                    (Some(e), Some(c)) => format!("{e}: {c}"),
                    (Some(e), None) => e.to_string(),
                    (None, Some(c)) => c.to_string(),
                    (None, None) => name.clone(),
                };
                self.fails.insert(name.clone(), text);
            }
            if let Some(retrier) = state
                .get("Retry")
                .and_then(|r| r.as_array())
                .and_then(|r| r.first())
            {
                let number = |key: &str| retrier.get(key).and_then(|v| v.as_f64());
                self.retries.insert(
                    name.clone(),
                    (
                        number("IntervalSeconds").unwrap_or(1.0),
                        number("BackoffRate").unwrap_or(2.0),
                        number("MaxDelaySeconds"),
                    ),
                );
            }
            for branch in state
                .get("Branches")
                .and_then(|b| b.as_array())
                .into_iter()
                .flatten()
            {
                self.collect(branch);
            }
            if let Some(iterator) = state.get("ItemProcessor").or_else(|| state.get("Iterator")) {
                self.collect(iterator);
            }
        }
    }

    /// How long Step Functions waits before trying `state` again after
    /// its attempt `attempt` failed (its first retrier; jitter aside).
    pub fn retry_delay(&self, state: &str, attempt: u32) -> Option<std::time::Duration> {
        let (interval, backoff, max) = self.retries.get(state)?;
        let mut delay = interval * backoff.powi(attempt.saturating_sub(1) as i32);
        if let Some(max) = max {
            delay = delay.min(*max);
        }
        std::time::Duration::try_from_secs_f64(delay).ok()
    }

    fn type_of(&self, state: &str) -> Option<&str> {
        self.types.get(state).map(String::as_str)
    }
}

/// How long a cause is kept in an error (an EMR step's cause is a JSON
/// document of the whole step).
const CAUSE_LIMIT: usize = 2000;

/// `error: cause`, the cause shortened.
fn error_text(error: Option<&str>, cause: Option<&str>) -> String {
    let cause = cause.map(|c| {
        if c.len() > CAUSE_LIMIT {
            let mut end = CAUSE_LIMIT;
            while !c.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &c[..end])
        } else {
            c.to_string()
        }
    });
    match (error, cause) {
        (Some(e), Some(c)) if !c.is_empty() => format!("{e}: {c}"),
        (Some(e), _) => e.to_string(),
        (None, Some(c)) => c,
        (None, None) => "failed (the history gives no error)".to_string(),
    }
}

/// An epoch time in milliseconds as the checkpoint stores times.
pub fn timestamp(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

const TASK_FAILURES: &[&str] = &[
    "TaskFailed",
    "TaskTimedOut",
    "TaskStartFailed",
    "TaskSubmitFailed",
    "LambdaFunctionFailed",
    "LambdaFunctionTimedOut",
    "LambdaFunctionStartFailed",
    "ActivityFailed",
    "ActivityTimedOut",
];

#[derive(Default)]
struct TaskState {
    attempts: Vec<AttemptRecord>,
    open: bool,
    /// The last error seen inside the current attempt (a Parallel's).
    inner_error: Option<String>,
    /// The catch path was entered after the last attempt.
    gave_up: Option<i64>,
}

impl TaskState {
    fn open(&mut self, at_ms: i64) {
        if self.open {
            // A new attempt without an end of the last: it failed.
            let error = self
                .inner_error
                .take()
                .unwrap_or_else(|| "failed".to_string());
            self.close(at_ms, "failed", Some(error));
        }
        let attempt = self.attempts.len() as u32 + 1;
        self.attempts.push(AttemptRecord {
            task_id: String::new(),
            attempt,
            status: "running".into(),
            started_at: timestamp(at_ms),
            ended_at: None,
            error: None,
        });
        self.open = true;
        self.inner_error = None;
        self.gave_up = None;
    }

    fn close(&mut self, at_ms: i64, status: &str, error: Option<String>) {
        if !self.open {
            return;
        }
        if let Some(last) = self.attempts.last_mut() {
            last.status = status.to_string();
            last.ended_at = Some(timestamp(at_ms));
            last.error = error;
        }
        self.open = false;
    }
}

/// Maps `events` (in id order, as `GetExecutionHistory` pages them) onto
/// `tasks`. `definition` is the execution's state machine.
pub fn map(tasks: &[TaskShape], definition: &Definition, events: &[Event]) -> Mapped {
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    // The task a state belongs to: its own name, or the part before the
    // first `.` that is a task id (the longest such prefix).
    let owner = |state: &str| -> Option<usize> {
        if let Some(i) = ids.iter().position(|id| *id == state) {
            return Some(i);
        }
        ids.iter()
            .enumerate()
            .filter(|(_, id)| {
                state.len() > id.len()
                    && state.starts_with(**id)
                    && state.as_bytes()[id.len()] == b'.'
            })
            .max_by_key(|(_, id)| id.len())
            .map(|(i, _)| i)
    };
    let mut names: HashMap<i64, Option<String>> = HashMap::new();
    let mut states: Vec<TaskState> = tasks.iter().map(|_| TaskState::default()).collect();
    let mut status = RunStatus::Running;
    let mut started_at = None;
    let mut ended_at = None;
    let mut error = None;
    let mut redrives = 0u32;
    for event in events {
        let state = if event.kind.ends_with("StateEntered") || event.kind.ends_with("StateExited") {
            event.state.clone()
        } else {
            names.get(&event.previous).cloned().flatten()
        };
        names.insert(event.id, state.clone());
        match event.kind.as_str() {
            "ExecutionStarted" => {
                started_at = Some(timestamp(event.at_ms));
                status = RunStatus::Running;
            }
            "ExecutionSucceeded" => {
                status = RunStatus::Succeeded;
                ended_at = Some(timestamp(event.at_ms));
            }
            "ExecutionFailed" | "ExecutionTimedOut" => {
                status = RunStatus::Failed;
                ended_at = Some(timestamp(event.at_ms));
                error = Some(match event.kind.as_str() {
                    "ExecutionTimedOut" => format!(
                        "the execution timed out: {}",
                        error_text(event.error.as_deref(), event.cause.as_deref())
                    ),
                    _ => error_text(event.error.as_deref(), event.cause.as_deref()),
                });
            }
            "ExecutionAborted" => {
                status = RunStatus::Cancelled;
                ended_at = Some(timestamp(event.at_ms));
                error = Some(format!(
                    "the execution was stopped{}",
                    event
                        .cause
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                ));
            }
            "ExecutionRedriven" => {
                redrives += 1;
                status = RunStatus::Running;
                ended_at = None;
                error = None;
            }
            _ => {}
        }
        let Some(state) = state else { continue };
        let Some(task) = owner(&state) else { continue };
        let own = state == ids[task];
        let main_type = definition.type_of(ids[task]);
        let s = &mut states[task];
        let kind = event.kind.as_str();
        let failure = || error_text(event.error.as_deref(), event.cause.as_deref());
        if !own {
            // A helper state: the catch path, or the inside of a task of
            // several states.
            let suffix = &state[ids[task].len() + 1..];
            let catch_path = suffix == "Failed" || suffix == "StopCluster";
            if catch_path && kind.ends_with("StateEntered") {
                if s.open {
                    let e = s.inner_error.take().or_else(|| Some("failed".into()));
                    s.close(event.at_ms, "failed", e);
                }
                s.gave_up.get_or_insert(event.at_ms);
            } else if catch_path {
                continue;
            } else if TASK_FAILURES.contains(&kind) {
                s.inner_error = Some(failure());
            } else if kind == "FailStateEntered" {
                s.inner_error = Some(
                    definition
                        .fails
                        .get(&state)
                        .cloned()
                        .unwrap_or_else(|| state.clone()),
                );
            } else if main_type == Some("Parallel") {
                match kind {
                    // A retry of the whole task starts from a branch
                    // event's context.
                    "ParallelStateStarted" if !s.open => s.open(event.at_ms),
                    "ParallelStateSucceeded" => s.close(event.at_ms, "succeeded", None),
                    "ParallelStateFailed" => {
                        let e = s.inner_error.take().unwrap_or_else(|| "failed".into());
                        s.close(event.at_ms, "failed", Some(e));
                    }
                    _ => {}
                }
            }
            continue;
        }
        match main_type {
            Some("Task") => match kind {
                "TaskScheduled" => s.open(event.at_ms),
                "TaskSucceeded" => s.close(event.at_ms, "succeeded", None),
                k if TASK_FAILURES.contains(&k) => s.close(event.at_ms, "failed", Some(failure())),
                _ => {}
            },
            Some("Parallel") => match kind {
                "ParallelStateStarted" => s.open(event.at_ms),
                "ParallelStateSucceeded" => s.close(event.at_ms, "succeeded", None),
                "ParallelStateFailed" => {
                    let e = s.inner_error.take().unwrap_or_else(|| "failed".into());
                    s.close(event.at_ms, "failed", Some(e));
                }
                _ => {}
            },
            _ => {
                if kind.ends_with("StateEntered") {
                    s.open(event.at_ms);
                } else if kind.ends_with("StateExited") {
                    s.close(event.at_ms, "succeeded", None);
                } else if TASK_FAILURES.contains(&kind) {
                    s.close(event.at_ms, "failed", Some(failure()));
                }
            }
        }
    }
    let end_ms = events.last().map(|e| e.at_ms);
    let ended = status != RunStatus::Running;
    // Final statuses, in DAG order so that a task's dependencies are
    // settled before it.
    let mut observed: Vec<ObservedTask> = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.iter().enumerate() {
        let s = &mut states[i];
        if ended && s.open {
            let at = end_ms.unwrap_or_default();
            s.close(at, "cancelled", Some("stopped with the execution".into()));
        }
        let last = s.attempts.last();
        let (task_status, task_error) = match last {
            Some(a) if a.status == "succeeded" => (TaskStatus::Succeeded, None),
            Some(a) if a.status == "running" => (TaskStatus::Running, None),
            Some(a) if a.status == "cancelled" => (TaskStatus::Cancelled, a.error.clone()),
            Some(a) => {
                if ended || s.gave_up.is_some() {
                    (TaskStatus::Failed, a.error.clone())
                } else {
                    // Failed, and Step Functions retries it.
                    (TaskStatus::Running, a.error.clone())
                }
            }
            None if !ended => (TaskStatus::Pending, None),
            None if status == RunStatus::Succeeded => (TaskStatus::Succeeded, None),
            None => {
                let upstream_failed = task.depends_on.iter().any(|d| {
                    observed.iter().any(|o| {
                        &o.id == d
                            && matches!(o.status, TaskStatus::Failed | TaskStatus::UpstreamFailed)
                    })
                });
                if upstream_failed {
                    (TaskStatus::UpstreamFailed, None)
                } else {
                    (TaskStatus::Cancelled, None)
                }
            }
        };
        let ended_at = match task_status {
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled => last
                .and_then(|a| a.ended_at.clone())
                .or_else(|| ended_at.clone()),
            TaskStatus::UpstreamFailed => ended_at.clone(),
            _ => None,
        };
        let attempts = s
            .attempts
            .iter()
            .map(|a| AttemptRecord {
                task_id: task.id.clone(),
                ..a.clone()
            })
            .collect();
        observed.push(ObservedTask {
            id: task.id.clone(),
            status: task_status,
            ended_at,
            error: task_error,
            attempts,
        });
    }
    Mapped {
        run: ObservedRun {
            status,
            ended_at,
            resume_count: redrives,
            tasks: observed,
        },
        started_at,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a history: each event after the one before unless told.
    struct Writer {
        events: Vec<Event>,
    }

    impl Writer {
        fn new() -> Writer {
            Writer { events: Vec::new() }
        }

        fn push(&mut self, previous: i64, kind: &str, state: Option<&str>) -> i64 {
            let id = self.events.len() as i64 + 1;
            self.events.push(Event {
                id,
                previous,
                at_ms: 1_000 * id,
                kind: kind.to_string(),
                state: state.map(str::to_string),
                error: None,
                cause: None,
            });
            id
        }

        fn fail(&mut self, previous: i64, kind: &str, error: &str, cause: &str) -> i64 {
            let id = self.push(previous, kind, None);
            let event = self.events.last_mut().expect("just pushed");
            event.error = Some(error.to_string());
            event.cause = Some(cause.to_string());
            id
        }
    }

    const CRAWL: &str = r#"{"StartAt": "crawl", "States": {
        "crawl": {"Type": "Parallel", "End": true, "Branches": [{"StartAt": "crawl.Start", "States": {
            "crawl.Start": {"Type": "Task", "Resource": "x", "Next": "crawl.Check"},
            "crawl.Check": {"Type": "Choice", "Choices": [], "Default": "crawl.CrawlFailed"},
            "crawl.CrawlFailed": {"Type": "Fail", "Error": "Glue.CrawlFailed", "Cause": "the crawl did not succeed"}}}]},
        "report": {"Type": "Pass", "End": true}}}"#;

    fn shapes() -> Vec<TaskShape> {
        vec![
            TaskShape {
                id: "crawl".into(),
                depends_on: vec![],
            },
            TaskShape {
                id: "report".into(),
                depends_on: vec!["crawl".into()],
            },
        ]
    }

    #[test]
    fn a_retried_parallel_task_has_an_attempt_per_try_with_the_inner_error() {
        let mut h = Writer::new();
        let start = h.push(0, "ExecutionStarted", None);
        let entered = h.push(start, "ParallelStateEntered", Some("crawl"));
        let started = h.push(entered, "ParallelStateStarted", None);
        let inner = h.push(started, "TaskStateEntered", Some("crawl.Start"));
        let scheduled = h.push(inner, "TaskScheduled", None);
        let failed = h.fail(
            scheduled,
            "TaskFailed",
            "Glue.EntityNotFoundException",
            "no crawler",
        );
        let branch_failed = h.push(failed, "ParallelStateFailed", None);
        // The retry's start follows the failure, not the entered event.
        let again = h.push(branch_failed, "ParallelStateStarted", None);
        let inner = h.push(again, "TaskStateEntered", Some("crawl.Start"));
        let scheduled = h.push(inner, "TaskScheduled", None);
        let ok = h.push(scheduled, "TaskSucceeded", None);
        let exited = h.push(ok, "TaskStateExited", Some("crawl.Start"));
        let done = h.push(exited, "ParallelStateSucceeded", None);
        let out = h.push(done, "ParallelStateExited", Some("crawl"));
        let report = h.push(out, "PassStateEntered", Some("report"));
        let report_out = h.push(report, "PassStateExited", Some("report"));
        h.push(report_out, "ExecutionSucceeded", None);

        let mapped = map(&shapes(), &Definition::parse(CRAWL), &h.events);
        assert_eq!(mapped.run.status, RunStatus::Succeeded);
        let crawl = &mapped.run.tasks[0];
        assert_eq!(crawl.status, TaskStatus::Succeeded);
        let statuses: Vec<&str> = crawl.attempts.iter().map(|a| a.status.as_str()).collect();
        assert_eq!(statuses, ["failed", "succeeded"]);
        assert_eq!(
            crawl.attempts[0].error.as_deref(),
            Some("Glue.EntityNotFoundException: no crawler")
        );
        // Attempt times are the events' (1 s apart here).
        assert_eq!(crawl.attempts[0].started_at, timestamp(3_000));
        assert_eq!(crawl.attempts[0].ended_at, Some(timestamp(7_000)));
        assert_eq!(crawl.attempts[1].started_at, timestamp(8_000));
        assert_eq!(mapped.run.tasks[1].status, TaskStatus::Succeeded);
        assert_eq!(mapped.run.tasks[1].attempts.len(), 1);
    }

    #[test]
    fn a_fail_state_inside_names_its_error_and_the_dependents_never_ran() {
        let mut h = Writer::new();
        let start = h.push(0, "ExecutionStarted", None);
        let entered = h.push(start, "ParallelStateEntered", Some("crawl"));
        let started = h.push(entered, "ParallelStateStarted", None);
        let check = h.push(started, "ChoiceStateEntered", Some("crawl.Check"));
        let fail = h.push(check, "FailStateEntered", Some("crawl.CrawlFailed"));
        let branch_failed = h.push(fail, "ParallelStateFailed", None);
        let caught = h.push(branch_failed, "FailStateEntered", Some("crawl.Failed"));
        h.fail(
            caught,
            "ExecutionFailed",
            "crawl.Failed",
            "task crawl failed",
        );

        let mapped = map(&shapes(), &Definition::parse(CRAWL), &h.events);
        assert_eq!(mapped.run.status, RunStatus::Failed);
        assert_eq!(
            mapped.error.as_deref(),
            Some("crawl.Failed: task crawl failed")
        );
        let crawl = &mapped.run.tasks[0];
        assert_eq!(crawl.status, TaskStatus::Failed);
        assert_eq!(
            crawl.error.as_deref(),
            Some("Glue.CrawlFailed: the crawl did not succeed")
        );
        assert_eq!(mapped.run.tasks[1].status, TaskStatus::UpstreamFailed);
        assert!(mapped.run.tasks[1].attempts.is_empty());
    }

    #[test]
    fn a_running_execution_shows_a_running_attempt_and_an_abort_cancels_it() {
        let mut h = Writer::new();
        let start = h.push(0, "ExecutionStarted", None);
        let entered = h.push(start, "ParallelStateEntered", Some("crawl"));
        h.push(entered, "ParallelStateStarted", None);
        let definition = Definition::parse(CRAWL);
        let running = map(&shapes(), &definition, &h.events);
        assert_eq!(running.run.status, RunStatus::Running);
        assert_eq!(running.run.tasks[0].status, TaskStatus::Running);
        assert_eq!(running.run.tasks[0].attempts[0].status, "running");
        assert_eq!(running.run.tasks[1].status, TaskStatus::Pending);

        h.fail(3, "ExecutionAborted", "", "stopped by a person");
        let aborted = map(&shapes(), &definition, &h.events);
        assert_eq!(aborted.run.status, RunStatus::Cancelled);
        assert_eq!(aborted.run.tasks[0].status, TaskStatus::Cancelled);
        assert_eq!(aborted.run.tasks[0].attempts[0].status, "cancelled");
        // Its dependency was stopped, not failed.
        assert_eq!(aborted.run.tasks[1].status, TaskStatus::Cancelled);
    }
}

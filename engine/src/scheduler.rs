//! Runs a validated DAG: starts each task as soon as all its dependencies
//! succeeded, at most `max_parallel` attempts at once, retries and times out
//! attempts, and records every state change in the checkpoint before acting
//! on it.
//!
//! The scheduler is one loop that owns all run state; attempts run as tokio
//! tasks and report back through a `JoinSet`. Changes that happen together
//! (several attempts finishing, several tasks starting) are committed in one
//! transaction, which is what keeps the durable checkpoint cheap.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinError, JoinSet};
use tracing::{Instrument, Span, field, info_span};

use crate::checkpoint::{
    AttemptSpanEnd, AttemptSpanStart, AttemptStatus, Change, Checkpoint, CheckpointError,
    RunStatus, TaskSpanEnd, TaskStatus,
};
use crate::dag::{Dag, ResolvedTask};
use crate::kind::{Attempt, TaskAction, TaskFailure};
use crate::span_recorder::SpanIds;
use crate::state_dir::StateDir;

/// The `tracing` target of the scheduler's spans: a `task` or `attempt`
/// span with it is one the checkpoint can rebuild from the attempts rows
/// (see [`crate::span_recorder`]).
pub const SPAN_TARGET: &str = module_path!();

/// The largest output a task may pass downstream, the same limit as a
/// Step Functions state's payload, so that what runs here runs there.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// What the scheduler tells the outside world (the CLI's progress display).
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// Something the user should know about how the run was planned (for
    /// example a task that changed since the run started), said before any
    /// task starts.
    Note(String),
    AttemptStarted {
        task_id: String,
        attempt: u32,
    },
    AttemptFailed {
        task_id: String,
        attempt: u32,
        error: String,
        /// `Some(delay)` when the task will be tried again after `delay`.
        retry_in: Option<Duration>,
    },
    TaskEnded {
        task_id: String,
        status: TaskStatus,
    },
    /// What a running attempt is doing (`EMR step s-1: RUNNING`, `12/40
    /// MiB`). `lasting` says it is a change a log should keep (a state
    /// change); otherwise it only refreshes a live display (a count).
    AttemptProgress {
        task_id: String,
        attempt: u32,
        message: String,
        lasting: bool,
    },
}

/// How a task kind tells the person watching what its attempt is doing.
#[derive(Clone)]
pub struct TaskProgress {
    observer: Option<Arc<dyn Observer>>,
    task_id: String,
    attempt: u32,
}

impl std::fmt::Debug for TaskProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskProgress")
            .field("task_id", &self.task_id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl TaskProgress {
    pub fn new(observer: Arc<dyn Observer>, task_id: &str, attempt: u32) -> Self {
        TaskProgress {
            observer: Some(observer),
            task_id: task_id.to_string(),
            attempt,
        }
    }

    /// Progress nobody watches (tests of task kinds).
    pub fn none() -> Self {
        TaskProgress {
            observer: None,
            task_id: String::new(),
            attempt: 0,
        }
    }

    /// A change worth a line in a log (a state change of work in AWS).
    pub fn change(&self, message: &str) {
        self.send(message, true);
    }

    /// A passing count, for a live display only.
    pub fn update(&self, message: &str) {
        self.send(message, false);
    }

    fn send(&self, message: &str, lasting: bool) {
        if let Some(observer) = &self.observer {
            observer.event(&RunEvent::AttemptProgress {
                task_id: self.task_id.clone(),
                attempt: self.attempt,
                message: message.to_string(),
                lasting,
            });
        }
    }
}

pub trait Observer: Send + Sync {
    fn event(&self, event: &RunEvent);
}

/// An observer that ignores everything (tests, benchmarks).
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: &RunEvent) {}
}

/// One task's place in a run when the scheduler takes over.
pub struct TaskPlan {
    /// `Succeeded` (reused from an earlier attempt of this run) or `Pending`.
    pub status: TaskStatus,
    /// Attempts already made in this run, so numbering continues on resume.
    pub attempts: u32,
    pub output: Option<serde_json::Value>,
    pub resolved: Result<ResolvedTask, String>,
}

pub struct Execution<'a> {
    pub dag: &'a Dag,
    pub run_id: &'a str,
    pub checkpoint: &'a mut Checkpoint,
    pub state_dir: &'a StateDir,
    pub max_parallel: usize,
    pub observer: Arc<dyn Observer>,
    /// Becomes `true` when the run must stop (Ctrl-C).
    pub cancel: watch::Receiver<bool>,
    /// What the kinds' preflight found (the Spark environment), set on the
    /// run's span.
    pub run_attributes: Vec<(String, String)>,
    /// The run's span ([`run_span`]): made before the kinds' preflight,
    /// whose checks are its first children.
    pub run_span: Span,
}

/// The span of a run (or of one resume of it): the root of its trace.
pub fn run_span(dag: &Dag, run_id: &str) -> Span {
    info_span!(
        "run",
        otel.name = %crate::spans::name::run(&dag.name),
        flux.run_id = %run_id,
        flux.dag = %dag.name,
        flux.status = field::Empty,
        otel.status_code = field::Empty,
        otel.status_description = field::Empty,
    )
}

enum Event {
    Finished {
        index: usize,
        attempt: u32,
        /// The output with its JSON text, serialized once in the attempt.
        result: Result<Option<(serde_json::Value, String)>, TaskFailure>,
        /// When the attempt's span ended, and the `flux.status` it ended
        /// with (`None`: it ended without one, its task kind panicked).
        span_end: (u64, Option<&'static str>),
    },
    RetryDue {
        index: usize,
    },
}

struct Slot {
    status: TaskStatus,
    attempts: u32,
    /// Attempts made since this process took over the run: the retry budget
    /// starts afresh on resume, as a fresh Step Functions execution would.
    attempts_here: u32,
    waiting_for: usize,
    /// An attempt is under way (not merely waiting to retry).
    attempt_running: bool,
    output: Option<serde_json::Value>,
    resolved: Option<ResolvedTask>,
    span: Option<Span>,
    /// The id of the task's span in this process (`span`'s, or one the
    /// scheduler made for a task span it does not open; see
    /// [`RunState::own_task_spans`]), while it is open.
    task_span_id: Option<u64>,
    /// The running attempt's span, so that a cancelled attempt (whose
    /// future is dropped) still ends with a status.
    attempt_span: Option<Span>,
    /// The current attempt's span ids are in its attempts row: its end
    /// goes there too.
    attempt_traced: bool,
}

/// What the loop owns while it drives a run.
struct RunState {
    run_span: Span,
    /// Task spans are not opened as `tracing` spans but only recorded in
    /// the attempts rows, from which the checkpoint rebuilds them: with
    /// the light recorder (no collector), where a `tracing` span per task
    /// was about half of what recording cost a run of short tasks (issue
    /// 11). A collector gets real task spans, as does a process storing
    /// every span (`FLUX_STORE_REBUILDABLE_SPANS=1`, for tests).
    own_task_spans: bool,
    slots: Vec<Slot>,
    /// Pending tasks whose dependencies all succeeded, by index.
    ready: BTreeSet<usize>,
    /// Attempts under way and retry delays, each ending in an [`Event`].
    running: JoinSet<Event>,
    /// The attempt each spawned future runs, to name one that panicked.
    in_flight: HashMap<Id, (usize, u32)>,
    /// Attempts under way (`running` also holds retry delays).
    attempts_running: usize,
    /// State changes not yet committed: the next commit takes them all.
    changes: Vec<Change>,
}

impl RunState {
    /// The event a joined future ended with; a panicked attempt becomes a
    /// failed one. `None` for a future that is not an attempt.
    fn event_of(&mut self, joined: Result<(Id, Event), JoinError>) -> Option<Event> {
        match joined {
            Ok((id, event)) => {
                self.in_flight.remove(&id);
                Some(event)
            }
            Err(join_error) => {
                let (index, attempt) = self.in_flight.remove(&join_error.id())?;
                Some(Event::Finished {
                    index,
                    attempt,
                    result: Err(TaskFailure::new(format!(
                        "the task kind crashed: {join_error}"
                    ))),
                    // Its span ended when the panic dropped it, without a status.
                    span_end: (crate::telemetry::now_unix_nano(), None),
                })
            }
        }
    }
}

impl Execution<'_> {
    /// Drives the run to its end and returns its final status.
    pub async fn run(mut self, plan: Vec<TaskPlan>) -> Result<RunStatus, CheckpointError> {
        // Taken, not cloned: the span ends when the run's state drops it.
        let run_span = std::mem::replace(&mut self.run_span, Span::none());
        self.link_to_earlier_traces(&run_span);
        for (key, value) in std::mem::take(&mut self.run_attributes) {
            crate::telemetry::set_attribute(&run_span, &key, &value);
        }
        let mut state = self.take_over(plan, run_span)?;
        let max_parallel = self.max_parallel.max(1);
        let mut cancelled = *self.cancel.borrow();
        while !cancelled {
            self.start_ready(&mut state, max_parallel)?;
            if state.running.is_empty() {
                break;
            }
            let first = tokio::select! {
                joined = state.running.join_next_with_id() => joined,
                _ = wait_cancel(&mut self.cancel) => {
                    cancelled = true;
                    continue;
                }
            };
            self.handle_events(&mut state, first);
            // The changes these events made are committed together with the
            // starts they release, at the top of the loop, before any spawn:
            // one transaction per wake-up instead of two.
        }
        if cancelled {
            self.end_cancelled(state).await
        } else {
            self.end(state)
        }
    }

    /// The run as the plan hands it over: a slot per task, the tasks that
    /// may start, and the tasks that cannot be resolved failed (with their
    /// descendants) and committed before anything starts.
    fn take_over(
        &mut self,
        plan: Vec<TaskPlan>,
        run_span: Span,
    ) -> Result<RunState, CheckpointError> {
        let dag = self.dag;
        let n = dag.tasks.len();
        let mut slots: Vec<Slot> = Vec::with_capacity(n);
        let mut unresolvable: Vec<(usize, String)> = Vec::new();
        for (i, p) in plan.into_iter().enumerate() {
            let resolved = match p.resolved {
                Ok(r) => Some(r),
                Err(e) => {
                    if p.status != TaskStatus::Succeeded {
                        unresolvable.push((i, e));
                    }
                    None
                }
            };
            slots.push(Slot {
                status: p.status,
                attempts: p.attempts,
                attempts_here: 0,
                waiting_for: 0,
                attempt_running: false,
                output: p.output,
                resolved,
                span: None,
                task_span_id: None,
                attempt_span: None,
                attempt_traced: false,
            });
        }
        for i in 0..n {
            slots[i].waiting_for = dag
                .dependencies(i)
                .filter(|&d| slots[d].status != TaskStatus::Succeeded)
                .count();
        }
        let ready = (0..n)
            .filter(|&i| slots[i].status == TaskStatus::Pending && slots[i].waiting_for == 0)
            .collect();
        let own_task_spans = crate::span_recorder::ids(&run_span).is_some()
            && !crate::telemetry::stores_rebuildable_spans();
        let mut state = RunState {
            own_task_spans,
            run_span,
            slots,
            ready,
            running: JoinSet::new(),
            in_flight: HashMap::new(),
            attempts_running: 0,
            changes: Vec::new(),
        };
        if let Some(root) = crate::telemetry::span_ids(&state.run_span) {
            state.changes.push(Change::TraceStarted {
                trace_id: root.trace_hex(),
                root_span_id: root.span_hex(),
                resource_json: crate::telemetry::resource_json().to_string(),
            });
        }
        for (i, error) in unresolvable {
            state.ready.remove(&i);
            self.fail(&mut state, i, error);
        }
        self.commit(&mut state)?;
        Ok(state)
    }

    /// Commits every change made since the last commit, in one transaction.
    fn commit(&mut self, state: &mut RunState) -> Result<(), CheckpointError> {
        self.checkpoint.apply(self.run_id, &state.changes)?;
        state.changes.clear();
        Ok(())
    }

    /// Starts what may start: commit first, then spawn. The attempts'
    /// spans are opened before the commit, which records their ids.
    fn start_ready(
        &mut self,
        state: &mut RunState,
        max_parallel: usize,
    ) -> Result<(), CheckpointError> {
        let mut starting = Vec::new();
        while state.attempts_running + starting.len() < max_parallel {
            let Some(i) = state.ready.pop_first() else {
                break;
            };
            let slot = &mut state.slots[i];
            slot.attempts += 1;
            slot.attempts_here += 1;
            slot.status = TaskStatus::Running;
            slot.attempt_running = true;
            let (attempt_span, ids) = self.attempt_span(state, i);
            let span = self.attempt_span_start(state, i, ids);
            state.slots[i].attempt_traced = span.is_some();
            state.changes.push(Change::AttemptStarted {
                task_id: self.dag.tasks[i].id.clone(),
                attempt: state.slots[i].attempts,
                span,
            });
            starting.push((i, attempt_span, ids));
        }
        self.commit(state)?;
        for (i, attempt_span, ids) in starting {
            self.spawn_attempt(state, i, attempt_span, ids);
        }
        Ok(())
    }

    /// Task `i`'s next attempt's span, below the task's, with its ids.
    /// [`Span::none`] with ids the scheduler made when only the attempts
    /// row records it (see [`TaskAction::traces_inside`]).
    fn attempt_span(&self, state: &mut RunState, i: usize) -> (Span, Option<SpanIds>) {
        let number = state.slots[i].attempts;
        let Some(task_span) = self.task_span(state, i) else {
            let traces_inside = state.slots[i]
                .resolved
                .as_ref()
                .is_none_or(|resolved| resolved.action.traces_inside());
            if !traces_inside {
                let ids = crate::telemetry::span_ids(&state.run_span).map(|run| SpanIds {
                    trace: run.trace,
                    span: crate::span_recorder::new_span_id(),
                });
                return (Span::none(), ids);
            }
            // No `tracing` span for the task: the attempt's opens under the
            // run's (which gives it the trace) and is told its parent.
            let span = self.attempt_span_under(&state.run_span, i, number);
            if let Some(task_span_id) = state.slots[i].task_span_id {
                crate::span_recorder::set_parent(&span, task_span_id);
            }
            let ids = crate::telemetry::span_ids(&span);
            return (span, ids);
        };
        let span = self.attempt_span_under(&task_span, i, number);
        let ids = crate::telemetry::span_ids(&span);
        (span, ids)
    }

    fn attempt_span_under(&self, parent: &Span, i: usize, number: u32) -> Span {
        let task = &self.dag.tasks[i];
        info_span!(
            parent: parent,
            "attempt",
            otel.name = %crate::spans::name::attempt(number),
            flux.run_id = %self.run_id,
            flux.task_id = %task.id,
            flux.task_type = %task.kind,
            flux.attempt = i64::from(number),
            flux.status = field::Empty,
            otel.status_code = field::Empty,
            otel.status_description = field::Empty,
        )
    }

    /// The ids of an attempt's span and its task's, and its start, for the
    /// attempts row (from which the checkpoint rebuilds both spans);
    /// `None` when the run is not traced.
    fn attempt_span_start(
        &self,
        state: &RunState,
        i: usize,
        ids: Option<SpanIds>,
    ) -> Option<AttemptSpanStart> {
        let ids = ids?;
        let task_span_id = state.slots[i].task_span_id?;
        Some(AttemptSpanStart {
            trace_id: ids.trace_hex(),
            task_type: self.dag.tasks[i].kind.clone(),
            task_span_id: format!("{task_span_id:016x}"),
            span_id: ids.span_hex(),
            // Taken after both spans opened: the span recorders' own start
            // stamps are not later than this.
            start_unix_nano: crate::telemetry::now_unix_nano(),
        })
    }

    /// Spawns task `i`'s next attempt (already committed as started) in
    /// its span.
    fn spawn_attempt(
        &self,
        state: &mut RunState,
        i: usize,
        attempt_span: Span,
        ids: Option<SpanIds>,
    ) {
        let task = &self.dag.tasks[i];
        let number = state.slots[i].attempts;
        let traceparent = if attempt_span.is_none() {
            ids.map(|ids| ids.traceparent())
        } else {
            // The SDK's flags when a collector samples the trace.
            crate::telemetry::traceparent(&attempt_span)
        };
        let attempt = self.attempt(&state.slots, i, traceparent);
        let action = state.slots[i]
            .resolved
            .as_ref()
            .expect("pending tasks are resolved")
            .action
            .clone();
        self.observer.event(&RunEvent::AttemptStarted {
            task_id: task.id.clone(),
            attempt: number,
        });
        state.slots[i].attempt_span = (!attempt_span.is_none()).then(|| attempt_span.clone());
        let work = run_attempt(action, attempt, task.timeout, i, attempt_span.clone())
            .instrument(attempt_span);
        let handle = state.running.spawn(work);
        state.in_flight.insert(handle.id(), (i, number));
        state.attempts_running += 1;
    }

    /// Task `i`'s span: opened with its first attempt in this process and
    /// kept across its retries; `None` when the scheduler only records it
    /// (an id of its own in `task_span_id`, see [`RunState::own_task_spans`]).
    fn task_span(&self, state: &mut RunState, i: usize) -> Option<Span> {
        let task = &self.dag.tasks[i];
        let slot = &mut state.slots[i];
        if state.own_task_spans {
            if slot.task_span_id.is_none() {
                slot.task_span_id = Some(crate::span_recorder::new_span_id());
            }
            return None;
        }
        if let Some(span) = &slot.span {
            return Some(span.clone());
        }
        let span = info_span!(
            parent: &state.run_span,
            "task",
            otel.name = %crate::spans::name::task(&task.id),
            flux.run_id = %self.run_id,
            flux.task_id = %task.id,
            flux.task_type = %task.kind,
            flux.status = field::Empty,
            otel.status_code = field::Empty,
            otel.status_description = field::Empty,
        );
        slot.task_span_id = crate::telemetry::span_ids(&span).map(|ids| ids.span);
        slot.span = Some(span.clone());
        Some(span)
    }

    /// What task `i`'s attempt numbered `slots[i].attempts` is told.
    fn attempt(&self, slots: &[Slot], i: usize, traceparent: Option<String>) -> Attempt {
        let dag = self.dag;
        let task = &dag.tasks[i];
        let number = slots[i].attempts;
        let dir = self.state_dir.attempt_dir(self.run_id, &task.id, number);
        Attempt {
            traceparent,
            run_id: self.run_id.to_string(),
            task_id: task.id.clone(),
            number,
            attempt_id: format!("{}.{}.{}", self.run_id, task.id, number),
            dag_dir: dag.dir.clone(),
            log_dir: dir.clone(),
            scratch_dir: dir.join("scratch"),
            state_root: self.state_dir.root().to_path_buf(),
            inputs: dag
                .dependencies(i)
                .map(|d| (dag.tasks[d].id.clone(), slots_output(slots, d)))
                .collect::<BTreeMap<_, _>>(),
            progress: TaskProgress::new(self.observer.clone(), &task.id, number),
            journal: crate::WorkJournal::in_checkpoint(
                self.state_dir.checkpoint_path(),
                self.run_id,
                &task.id,
                number,
            ),
        }
    }

    /// Handles the event that woke the loop and every other one already
    /// there, so that their changes share one commit.
    fn handle_events(&self, state: &mut RunState, first: Option<Result<(Id, Event), JoinError>>) {
        let mut events = Vec::new();
        events.extend(first);
        while let Some(more) = state.running.try_join_next_with_id() {
            events.push(more);
        }
        for joined in events {
            match state.event_of(joined) {
                None => {}
                Some(Event::RetryDue { index }) => {
                    state.ready.insert(index);
                }
                Some(Event::Finished {
                    index,
                    attempt,
                    result,
                    span_end,
                }) => {
                    state.attempts_running -= 1;
                    self.finish_attempt(state, index, attempt, result, span_end);
                }
            }
        }
    }

    fn finish_attempt(
        &self,
        state: &mut RunState,
        index: usize,
        attempt: u32,
        result: Result<Option<(serde_json::Value, String)>, TaskFailure>,
        (end_unix_nano, status): (u64, Option<&'static str>),
    ) {
        state.slots[index].attempt_running = false;
        state.slots[index].attempt_span = None;
        let span = state.slots[index].attempt_traced.then_some(AttemptSpanEnd {
            end_unix_nano,
            status,
            error: None,
            task_span_end_unix_nano: None,
            retry_delay_ms: None,
        });
        match result {
            Ok(output) => self.attempt_succeeded(state, index, attempt, output, span),
            Err(failure) => self.attempt_failed(state, index, attempt, failure, span),
        }
    }

    /// Ends task `index`'s span (opened with its first attempt in this
    /// process) with the task's status, and says when, for the attempts
    /// row; `None` when it has no span.
    fn end_task_span(&self, state: &mut RunState, index: usize, status: TaskStatus) -> Option<u64> {
        let slot = &mut state.slots[index];
        let had_id = slot.task_span_id.take().is_some();
        if let Some(span) = slot.span.take() {
            let error = crate::spans::task_error(status.as_str(), slot.attempts);
            end_span(&span, status.as_str(), error.as_deref());
        } else if !had_id {
            return None;
        }
        Some(crate::telemetry::now_unix_nano())
    }

    /// Records the success and readies the dependents it was the last
    /// dependency of.
    fn attempt_succeeded(
        &self,
        state: &mut RunState,
        index: usize,
        attempt: u32,
        output: Option<(serde_json::Value, String)>,
        mut span: Option<AttemptSpanEnd>,
    ) {
        let dag = self.dag;
        let task = &dag.tasks[index];
        let (value, text) = output.unzip();
        state.slots[index].status = TaskStatus::Succeeded;
        state.slots[index].output = value;
        let task_span_end = self.end_task_span(state, index, TaskStatus::Succeeded);
        if let Some(span) = &mut span {
            span.task_span_end_unix_nano = task_span_end;
        }
        state.changes.push(Change::AttemptEnded {
            task_id: task.id.clone(),
            attempt,
            status: AttemptStatus::Succeeded,
            error: None,
            task_status: TaskStatus::Succeeded,
            output: text,
            span,
        });
        let slots = &mut state.slots;
        self.observer.event(&RunEvent::TaskEnded {
            task_id: task.id.clone(),
            status: TaskStatus::Succeeded,
        });
        for d in dag.dependents(index) {
            slots[d].waiting_for -= 1;
            if slots[d].waiting_for == 0 && slots[d].status == TaskStatus::Pending {
                state.ready.insert(d);
            }
        }
    }

    /// Records the failure, then either schedules the retry its policy
    /// allows or fails the task and its descendants.
    fn attempt_failed(
        &self,
        state: &mut RunState,
        index: usize,
        attempt: u32,
        failure: TaskFailure,
        mut span: Option<AttemptSpanEnd>,
    ) {
        let task = &self.dag.tasks[index];
        let attempts_here = state.slots[index].attempts_here;
        let mut failure = failure;
        let allowed = task.retry.allows_another(attempts_here);
        if allowed && !failure.retryable {
            // The attempt's span ended with the message as the kind gave it.
            if let Some(span) = &mut span {
                span.error = Some(failure.message.clone());
            }
            failure.message.push_str(
                "\n(not retried: this fails the same way every time; fix the DAG or its files, then resume)",
            );
        }
        let retry = allowed && failure.retryable;
        let retry_in = retry.then(|| task.retry.delay(attempts_here, rand::random::<f64>()));
        self.observer.event(&RunEvent::AttemptFailed {
            task_id: task.id.clone(),
            attempt,
            error: failure.message.clone(),
            retry_in,
        });
        tracing::info!(flux.task_id = %task.id, flux.attempt = attempt, error = %failure.message, "attempt failed");
        let Some(delay) = retry_in else {
            let task_span_end = self.end_task_span(state, index, TaskStatus::Failed);
            if let Some(span) = &mut span {
                span.task_span_end_unix_nano = task_span_end;
            }
            state.changes.push(Change::AttemptEnded {
                task_id: task.id.clone(),
                attempt,
                status: AttemptStatus::Failed,
                error: Some(failure.message.clone()),
                task_status: TaskStatus::Failed,
                output: None,
                span,
            });
            self.mark_failed(state, index);
            return;
        };
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        if let Some(span) = &state.slots[index].span {
            tracing::info!(
                target: "flux_engine::trace",
                parent: span,
                { flux.attempt = i64::from(attempt), flux.retry_delay_ms = delay_ms },
                "retry"
            );
        }
        if let Some(span) = &mut span {
            span.retry_delay_ms = Some(delay_ms);
        }
        state.changes.push(Change::AttemptEnded {
            task_id: task.id.clone(),
            attempt,
            status: AttemptStatus::Failed,
            error: Some(failure.message),
            task_status: TaskStatus::Running,
            output: None,
            span,
        });
        state.running.spawn(async move {
            tokio::time::sleep(delay).await;
            Event::RetryDue { index }
        });
    }

    /// Ctrl-C: stops every attempt (dropping its future kills its process
    /// group), and records the tasks under way and the run as cancelled in
    /// one commit.
    async fn end_cancelled(&mut self, mut state: RunState) -> Result<RunStatus, CheckpointError> {
        for slot in state.slots.iter_mut() {
            if let Some(span) = slot.attempt_span.take() {
                end_span(&span, "cancelled", Some("cancelled"));
            }
        }
        state.running.abort_all();
        while state.running.join_next().await.is_some() {}
        for i in 0..state.slots.len() {
            if state.slots[i].status == TaskStatus::Running {
                self.cancel_task(&mut state, i);
            }
        }
        state.changes.push(Change::RunStatus {
            status: RunStatus::Cancelled,
            ended: true,
        });
        end_span(
            &state.run_span,
            RunStatus::Cancelled.as_str(),
            Some("cancelled"),
        );
        self.commit(&mut state)?;
        Ok(RunStatus::Cancelled)
    }

    /// Ends a task that was running, or waiting to retry, as cancelled.
    /// Its attempt's span, if one ran, ended with `end_cancelled`'s
    /// `end_span`, just before this.
    fn cancel_task(&self, state: &mut RunState, i: usize) {
        let task_span_end = self.end_task_span(state, i, TaskStatus::Cancelled);
        let slot = &mut state.slots[i];
        let attempt = slot.attempts;
        let task_id = self.dag.tasks[i].id.clone();
        slot.status = TaskStatus::Cancelled;
        let traced = slot.attempt_traced;
        if slot.attempt_running {
            let span = traced.then(|| AttemptSpanEnd {
                end_unix_nano: task_span_end.unwrap_or_else(crate::telemetry::now_unix_nano),
                status: Some("cancelled"),
                error: None,
                task_span_end_unix_nano: task_span_end,
                retry_delay_ms: None,
            });
            state.changes.push(Change::AttemptEnded {
                task_id: task_id.clone(),
                attempt,
                status: AttemptStatus::Cancelled,
                error: Some("cancelled".into()),
                task_status: TaskStatus::Cancelled,
                output: None,
                span,
            });
        } else {
            state.changes.push(Change::TaskEnded {
                task_id: task_id.clone(),
                status: TaskStatus::Cancelled,
                error: Some("cancelled while waiting to retry".into()),
                task_span_end: task_span_end
                    .filter(|_| traced)
                    .map(|end_unix_nano| TaskSpanEnd {
                        attempt,
                        end_unix_nano,
                    }),
            });
        }
        self.observer.event(&RunEvent::TaskEnded {
            task_id,
            status: TaskStatus::Cancelled,
        });
    }

    /// Nothing runs or waits any more: the run succeeded if every task
    /// did, and failed otherwise.
    fn end(&mut self, mut state: RunState) -> Result<RunStatus, CheckpointError> {
        let status = if state
            .slots
            .iter()
            .all(|s| s.status == TaskStatus::Succeeded)
        {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        state.changes.push(Change::RunStatus {
            status,
            ended: true,
        });
        let failed: Vec<&str> = state
            .slots
            .iter()
            .zip(&self.dag.tasks)
            .filter(|(s, _)| s.status == TaskStatus::Failed)
            .map(|(_, t)| t.id.as_str())
            .collect();
        let why = (!failed.is_empty()).then(|| format!("failed tasks: {}", failed.join(", ")));
        end_span(&state.run_span, status.as_str(), why.as_deref());
        self.commit(&mut state)?;
        Ok(status)
    }

    /// A resumed run is a new trace: its root links to the root span of
    /// every earlier trace of the run, so a viewer can go back to them.
    fn link_to_earlier_traces(&self, run_span: &Span) {
        let Ok(roots) = self.checkpoint.root_spans(self.run_id) else {
            return;
        };
        for (trace_id, span_id) in &roots {
            crate::telemetry::add_link(run_span, trace_id, span_id);
        }
    }

    /// A task failed without an attempt (it could not be resolved).
    fn fail(&self, state: &mut RunState, index: usize, error: String) {
        tracing::info!(
            target: "flux_engine::trace",
            { flux.task_id = %self.dag.tasks[index].id, exception.message = %error },
            "task not started"
        );
        state.changes.push(Change::TaskEnded {
            task_id: self.dag.tasks[index].id.clone(),
            status: TaskStatus::Failed,
            error: Some(error),
            task_span_end: None,
        });
        self.mark_failed(state, index);
    }

    /// Records the failure and ends every descendant as `upstream_failed`.
    fn mark_failed(&self, state: &mut RunState, index: usize) {
        let dag = self.dag;
        let slots = &mut state.slots;
        slots[index].status = TaskStatus::Failed;
        slots[index].span = None;
        slots[index].task_span_id = None;
        self.observer.event(&RunEvent::TaskEnded {
            task_id: dag.tasks[index].id.clone(),
            status: TaskStatus::Failed,
        });
        for d in dag.descendants(index) {
            if d == index || slots[d].status != TaskStatus::Pending {
                continue;
            }
            slots[d].status = TaskStatus::UpstreamFailed;
            state.changes.push(Change::TaskEnded {
                task_id: dag.tasks[d].id.clone(),
                status: TaskStatus::UpstreamFailed,
                error: Some(format!("upstream task `{}` failed", dag.tasks[index].id)),
                task_span_end: None,
            });
            self.observer.event(&RunEvent::TaskEnded {
                task_id: dag.tasks[d].id.clone(),
                status: TaskStatus::UpstreamFailed,
            });
        }
    }
}

/// One attempt, under the task's timeout. The attempt's span ends with
/// this future, so its status is recorded here, not when the scheduler
/// hears of it.
async fn run_attempt(
    action: Arc<dyn TaskAction>,
    attempt: Attempt,
    timeout: Option<Duration>,
    index: usize,
    span: Span,
) -> Event {
    let work = action.run(&attempt);
    let mut timed_out = false;
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => {
                timed_out = true;
                Err(TaskFailure::new(format!(
                    "timed out after {} s (timeout_seconds)",
                    limit.as_secs()
                )))
            }
        },
        None => work.await,
    };
    let result = limit_output(result);
    let status = match &result {
        Ok(_) => "succeeded",
        Err(_) if timed_out => "timed_out",
        Err(_) => "failed",
    };
    // An attempt without a `tracing` span is recorded by its row alone.
    if !span.is_none() {
        end_span(
            &span,
            status,
            result.as_ref().err().map(|f| f.message.as_str()),
        );
    }
    Event::Finished {
        index,
        attempt: attempt.number,
        result,
        span_end: (crate::telemetry::now_unix_nano(), Some(status)),
    }
}

/// The output with its JSON text (what the checkpoint stores); an output
/// over [`MAX_OUTPUT_BYTES`] fails the attempt.
fn limit_output(
    result: Result<Option<serde_json::Value>, TaskFailure>,
) -> Result<Option<(serde_json::Value, String)>, TaskFailure> {
    let Some(value) = result? else {
        return Ok(None);
    };
    let text = value.to_string();
    if text.len() > MAX_OUTPUT_BYTES {
        return Err(TaskFailure::new(format!(
            "the task's output is {} bytes; outputs are limited to {MAX_OUTPUT_BYTES} bytes (as in Step Functions): write large results to a file and pass its path",
            text.len()
        )));
    }
    Ok(Some((value, text)))
}

/// Records how a span ended: `flux.status`, and for an error the span's
/// status and an `exception` event with the message.
pub(crate) fn end_span(span: &Span, status: &str, error: Option<&str>) {
    span.record("flux.status", status);
    match error {
        None => {
            span.record("otel.status_code", "OK");
        }
        Some(message) => {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", message);
            tracing::info!(
                target: "flux_engine::trace",
                parent: span,
                { exception.message = message },
                "exception"
            );
        }
    }
}

fn slots_output(slots: &[Slot], index: usize) -> serde_json::Value {
    slots[index]
        .output
        .clone()
        .unwrap_or(serde_json::Value::Null)
}

pub(crate) async fn wait_cancel(cancel: &mut watch::Receiver<bool>) {
    loop {
        if *cancel.borrow_and_update() {
            return;
        }
        if cancel.changed().await.is_err() {
            // The sender is gone: nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

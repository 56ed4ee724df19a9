//! Starting and resuming runs: the engine's front door.
//!
//! A new run resolves every task, records the run in the checkpoint and hands
//! it to the scheduler. A resume reloads the DAG file the run was started
//! from, keeps the tasks that succeeded under an unchanged definition, and
//! runs the rest under the same run id (Metaflow's `resume` semantics).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::watch;

use crate::checkpoint::{Change, CheckpointError, RunRecord, RunStatus, TaskStatus};
use crate::dag::{self, Dag};
use crate::diagnostic::{Diagnostics, nearest};
use crate::kind::{Preflight, Registry};
use crate::scheduler::{Execution, Observer, RunEvent, TaskPlan};
use crate::state_dir::StateDir;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Dag(Diagnostics),
    #[error(
        "run `{0}` is being driven by another flux-engine process right now; wait for it or stop it first"
    )]
    RunActive(String),
    #[error(
        "another run is going on in {state_dir} ({holder}): the runs of one state dir share its local S3 store and catalog, so they go one at a time; wait for it to end, or give this one a state dir of its own with --state-dir"
    )]
    StateDirBusy { state_dir: String, holder: String },
    #[error("cannot lock run `{run_id}`: {source}")]
    Lock {
        run_id: String,
        source: std::io::Error,
    },
    #[error("--from {task}: no task `{task}` in the DAG{hint}")]
    UnknownTask { task: String, hint: String },
    #[error("no runs in {0}: start one with `flux-engine run DAG`")]
    NoRuns(String),
    #[error(
        "run {run_id} is of the DAG `{recorded}`, but {file} defines `{found}`: resume it with a file of the same DAG, or start a new run"
    )]
    OtherDag {
        run_id: String,
        recorded: String,
        file: String,
        found: String,
    },
    /// A kind's [`crate::Kind::preflight`] found that its tasks cannot
    /// run here; nothing was started or recorded.
    #[error("the `{kind}` tasks cannot run on this machine: {message}")]
    Preflight { kind: String, message: String },
    #[error(
        "run `{run_id}` did its work with --target {recorded}; a resume keeps the run's target, so it cannot continue with --target {asked}"
    )]
    TargetMismatch {
        run_id: String,
        recorded: String,
        asked: String,
    },
}

pub struct RunOptions {
    pub max_parallel: usize,
    pub observer: Arc<dyn Observer>,
    pub cancel: watch::Receiver<bool>,
}

/// How a run (or a resume) ended.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
    /// Things the user should know about how the run was planned (changed
    /// tasks on resume, for example).
    pub notes: Vec<String>,
}

pub struct Engine {
    pub registry: Registry,
    pub state_dir: StateDir,
    /// Where the registry's kinds do their work (`local`, `aws`): recorded
    /// with each new run, and checked on resume.
    pub target: String,
}

/// A new, sortable run id: UTC start time and 24 random bits.
pub fn new_run_id() -> String {
    format!(
        "{}-{:06x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

impl Engine {
    pub fn new(registry: Registry, state_dir: StateDir) -> Self {
        Engine {
            registry,
            state_dir,
            target: "local".to_string(),
        }
    }

    /// The same engine with kinds that do their work on `target` (the
    /// registry given must be the one for that target).
    pub fn with_target(mut self, target: &str) -> Self {
        self.target = target.to_string();
        self
    }

    /// Starts a new run of `dag`.
    pub async fn run(&self, dag: &Dag, options: RunOptions) -> Result<RunOutcome, EngineError> {
        let run_id = new_run_id();
        self.run_with_id(dag, &run_id, options).await
    }

    pub async fn run_with_id(
        &self,
        dag: &Dag,
        run_id: &str,
        options: RunOptions,
    ) -> Result<RunOutcome, EngineError> {
        let mut checkpoint = self.state_dir.open_checkpoint()?;
        let _state = self.lock_state(run_id)?;
        let _lock = self.lock(run_id)?;
        let run_span = crate::scheduler::run_span(dag, run_id);
        let preflight = self
            .checked_preflight(dag, &run_span, &options, |_| true)
            .await?;
        let Some(preflight) = preflight else {
            return Ok(cancelled_before_start(run_id));
        };
        for note in &preflight.notes {
            options.observer.event(&RunEvent::Note(note.clone()));
        }
        let notes = preflight.notes.clone();
        let plans: Vec<TaskPlan> = (0..dag.tasks.len())
            .map(|i| TaskPlan {
                status: TaskStatus::Pending,
                attempts: 0,
                output: None,
                resolved: dag.resolve(i, run_id, &self.registry),
            })
            .collect();
        let rows: Vec<(String, String, String)> = dag
            .tasks
            .iter()
            .zip(&plans)
            .map(|(t, p)| {
                let hash = p
                    .resolved
                    .as_ref()
                    .map(|r| r.definition_hash.clone())
                    .unwrap_or_default();
                (t.id.clone(), t.kind.clone(), hash)
            })
            .collect();
        let params = serde_json::to_value(&dag.params).unwrap_or_default();
        checkpoint.create_run(
            run_id,
            &dag.name,
            &dag.path.display().to_string(),
            &params,
            &self.target,
            &rows,
        )?;
        self.execute(
            dag, run_id, checkpoint, plans, options, notes, preflight, run_span,
        )
        .await
    }

    /// [`Engine::preflight`] inside the run's span, so that the kinds'
    /// checks (a first provisioning of PySpark, which can take a minute)
    /// are the first part of the run's trace, before any attempt's clock
    /// starts. `None` when Ctrl-C came first. A refusal is recorded on the
    /// span (a collector shows why the run did not start; the checkpoint
    /// keeps no run for it, nor shows its spans).
    async fn checked_preflight(
        &self,
        dag: &Dag,
        run_span: &tracing::Span,
        options: &RunOptions,
        will_run: impl Fn(usize) -> bool,
    ) -> Result<Option<Preflight>, EngineError> {
        use tracing::Instrument;
        let mut cancel = options.cancel.clone();
        let checked = tokio::select! {
            checked = self.preflight(dag, will_run).instrument(run_span.clone()) => checked,
            _ = crate::scheduler::wait_cancel(&mut cancel) => {
                crate::scheduler::end_span(run_span, RunStatus::Cancelled.as_str(), Some("cancelled while checking the machine"));
                return Ok(None);
            }
        };
        if let Err(refused) = &checked {
            crate::scheduler::end_span(run_span, "refused", Some(&refused.to_string()));
        }
        checked.map(Some)
    }

    /// Runs the [`crate::Kind::preflight`] of every kind that has a task
    /// for which `will_run` holds, once each, in registration order: a
    /// DAG without such a kind's tasks does not pay for its checks.
    async fn preflight(
        &self,
        dag: &Dag,
        will_run: impl Fn(usize) -> bool,
    ) -> Result<Preflight, EngineError> {
        let used: BTreeSet<&str> = dag
            .tasks
            .iter()
            .enumerate()
            .filter(|(i, _)| will_run(*i))
            .map(|(_, t)| t.kind.as_str())
            .collect();
        let mut all = Preflight::default();
        for kind in self.registry.kinds().filter(|k| used.contains(k.name())) {
            let found = kind
                .preflight()
                .await
                .map_err(|message| EngineError::Preflight {
                    kind: kind.name().to_string(),
                    message,
                })?;
            all.attributes.extend(found.attributes);
            all.notes.extend(found.notes);
        }
        Ok(all)
    }

    /// The newest run in the state dir.
    pub fn latest_run(&self) -> Result<RunRecord, EngineError> {
        let checkpoint = self.state_dir.open_checkpoint()?;
        checkpoint
            .latest_run()?
            .ok_or_else(|| EngineError::NoRuns(self.state_dir.root().display().to_string()))
    }

    /// Reloads the DAG file a run was started from, with the run's params
    /// (those the file still declares).
    pub fn reload_dag(&self, record: &RunRecord) -> Result<(Dag, Vec<String>), EngineError> {
        let path = std::path::Path::new(&record.dag_path);
        let declared = dag::load(path, &[], &self.registry).map_err(EngineError::Dag)?;
        let mut notes = Vec::new();
        let mut overrides = Vec::new();
        if let Some(stored) = record.params.as_object() {
            for (key, value) in stored {
                let value = value
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| value.to_string());
                if declared.params.contains_key(key) {
                    overrides.push((key.clone(), value));
                } else {
                    notes.push(format!("parameter `{key}` is no longer declared by the DAG; its value `{value}` is dropped"));
                }
            }
        }
        let dag = dag::load(path, &overrides, &self.registry).map_err(EngineError::Dag)?;
        Ok((dag, notes))
    }

    /// Continues a run: succeeded tasks whose definition is unchanged keep
    /// their result; `from` tasks, changed tasks and their descendants, and
    /// every task that did not succeed, run.
    pub async fn resume(
        &self,
        run_id: &str,
        from: &[String],
        options: RunOptions,
    ) -> Result<RunOutcome, EngineError> {
        self.resume_from_file(run_id, from, None, options).await
    }

    /// [`Engine::resume`], reading the DAG from `dag_path` instead of the
    /// file the run started from (an edited copy); the run then records
    /// that file. It must define the same DAG (by name).
    pub async fn resume_from_file(
        &self,
        run_id: &str,
        from: &[String],
        dag_path: Option<&std::path::Path>,
        options: RunOptions,
    ) -> Result<RunOutcome, EngineError> {
        let mut checkpoint = self.state_dir.open_checkpoint()?;
        let record = checkpoint.run(run_id)?;
        if record.target != self.target {
            return Err(EngineError::TargetMismatch {
                run_id: run_id.to_string(),
                recorded: record.target,
                asked: self.target.clone(),
            });
        }
        let _lock = self.lock(run_id)?;
        let _state = self.lock_state(run_id)?;
        let (dag, mut notes) = match dag_path {
            None => self.reload_dag(&record)?,
            Some(path) => {
                let mut moved = record.clone();
                moved.dag_path = path.display().to_string();
                let (dag, mut notes) = self.reload_dag(&moved)?;
                if dag.name != record.dag {
                    return Err(EngineError::OtherDag {
                        run_id: run_id.to_string(),
                        recorded: record.dag.clone(),
                        file: path.display().to_string(),
                        found: dag.name.clone(),
                    });
                }
                notes.push(format!(
                    "the DAG is read from {} (the run started from {})",
                    dag.path.display(),
                    record.dag_path
                ));
                (dag, notes)
            }
        };

        let mut forced: BTreeSet<usize> = BTreeSet::new();
        for task in from {
            let Some(i) = dag.index_of(task) else {
                let hint = nearest(task, dag.tasks.iter().map(|t| t.id.as_str()))
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                return Err(EngineError::UnknownTask {
                    task: task.clone(),
                    hint,
                });
            };
            forced.extend(dag.descendants(i));
        }

        let previous: HashMap<String, _> = checkpoint
            .tasks(run_id)?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let resolved: Vec<_> = (0..dag.tasks.len())
            .map(|i| dag.resolve(i, run_id, &self.registry))
            .collect();
        for (i, task) in dag.tasks.iter().enumerate() {
            let Some(before) = previous.get(&task.id) else {
                continue;
            };
            let Ok(now) = &resolved[i] else { continue };
            if before.status == TaskStatus::Succeeded
                && before.definition_hash != now.definition_hash
            {
                let descendants = dag.descendants(i);
                notes.push(format!(
                    "task `{}` changed since the run started: it and {} descendant(s) run again",
                    task.id,
                    descendants.len() - 1
                ));
                forced.extend(descendants);
            }
        }
        let ids: BTreeSet<&str> = dag.tasks.iter().map(|t| t.id.as_str()).collect();
        let mut gone: Vec<&str> = previous
            .keys()
            .map(String::as_str)
            .filter(|id| !ids.contains(id))
            .collect();
        gone.sort_unstable();
        for id in gone {
            notes.push(format!(
                "task `{id}` is no longer in the DAG; its record is kept but it does not run"
            ));
        }

        let mut changes = Vec::new();
        let mut plans = Vec::with_capacity(dag.tasks.len());
        for (i, (task, resolved)) in dag.tasks.iter().zip(resolved).enumerate() {
            let hash = resolved
                .as_ref()
                .map(|r| r.definition_hash.clone())
                .unwrap_or_default();
            match previous.get(&task.id) {
                Some(before) if before.status == TaskStatus::Succeeded && !forced.contains(&i) => {
                    plans.push(TaskPlan {
                        status: TaskStatus::Succeeded,
                        attempts: before.attempts,
                        output: before.output.clone(),
                        resolved,
                    });
                }
                Some(before) => {
                    changes.push(Change::TaskReset {
                        task_id: task.id.clone(),
                        kind: task.kind.clone(),
                        definition_hash: hash,
                    });
                    plans.push(TaskPlan {
                        status: TaskStatus::Pending,
                        attempts: before.attempts,
                        output: None,
                        resolved,
                    });
                }
                None => {
                    notes.push(format!(
                        "task `{}` is new in the DAG since the run started",
                        task.id
                    ));
                    changes.push(Change::TaskAdded {
                        task_id: task.id.clone(),
                        position: previous.len() + i,
                        kind: task.kind.clone(),
                        definition_hash: hash,
                    });
                    plans.push(TaskPlan {
                        status: TaskStatus::Pending,
                        attempts: 0,
                        output: None,
                        resolved,
                    });
                }
            }
        }
        if record.status == RunStatus::Succeeded
            && changes.is_empty()
            && plans.iter().all(|p| p.status == TaskStatus::Succeeded)
        {
            // Nothing to run: the record (status, end, duration) stays
            // what the run made it.
            notes.push(
                "nothing to do: every task succeeded and is as the DAG now defines it (`--from TASK` runs one again)"
                    .into(),
            );
            for note in &notes {
                options.observer.event(&RunEvent::Note(note.clone()));
            }
            return Ok(RunOutcome {
                run_id: run_id.to_string(),
                status: RunStatus::Succeeded,
                notes,
            });
        }
        let run_span = crate::scheduler::run_span(&dag, run_id);
        let preflight = self
            .checked_preflight(&dag, &run_span, &options, |i| {
                plans[i].status == TaskStatus::Pending
            })
            .await?;
        let Some(preflight) = preflight else {
            return Ok(cancelled_before_start(run_id));
        };
        notes.extend(preflight.notes.iter().cloned());
        for note in &notes {
            options.observer.event(&RunEvent::Note(note.clone()));
        }
        if dag_path.is_some() {
            checkpoint.set_dag_path(run_id, &dag.path.display().to_string())?;
        }
        checkpoint.mark_resumed(run_id)?;
        checkpoint.apply(run_id, &changes)?;
        self.execute(
            &dag, run_id, checkpoint, plans, options, notes, preflight, run_span,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        dag: &Dag,
        run_id: &str,
        mut checkpoint: crate::checkpoint::Checkpoint,
        plans: Vec<TaskPlan>,
        options: RunOptions,
        notes: Vec<String>,
        preflight: Preflight,
        run_span: tracing::Span,
    ) -> Result<RunOutcome, EngineError> {
        let status = Execution {
            dag,
            run_id,
            checkpoint: &mut checkpoint,
            state_dir: &self.state_dir,
            max_parallel: options.max_parallel,
            observer: options.observer,
            cancel: options.cancel,
            run_attributes: preflight.attributes,
            run_span,
        }
        .run(plans)
        .await?;
        Ok(RunOutcome {
            run_id: run_id.to_string(),
            status,
            notes,
        })
    }

    fn lock_state(&self, run_id: &str) -> Result<crate::state_dir::StateLock, EngineError> {
        match self.state_dir.lock_state(run_id) {
            Ok(Ok(lock)) => Ok(lock),
            Ok(Err(holder)) => Err(EngineError::StateDirBusy {
                state_dir: self.state_dir.root().display().to_string(),
                holder: if holder.is_empty() {
                    "a run that has not said which".into()
                } else {
                    holder
                },
            }),
            Err(source) => Err(EngineError::Lock {
                run_id: run_id.to_string(),
                source,
            }),
        }
    }

    fn lock(&self, run_id: &str) -> Result<crate::state_dir::RunLock, EngineError> {
        match self.state_dir.lock_run(run_id) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(EngineError::RunActive(run_id.to_string())),
            Err(source) => Err(EngineError::Lock {
                run_id: run_id.to_string(),
                source,
            }),
        }
    }
}

/// A Ctrl-C while the kinds were checking the machine: nothing started and
/// nothing was recorded.
fn cancelled_before_start(run_id: &str) -> RunOutcome {
    RunOutcome {
        run_id: run_id.to_string(),
        status: RunStatus::Cancelled,
        notes: Vec::new(),
    }
}

/// Params as stored in the checkpoint, for display.
pub fn params_of(record: &RunRecord) -> BTreeMap<String, String> {
    record
        .params
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

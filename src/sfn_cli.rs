//! Production from the same command line: `deploy` and `destroy` a DAG's
//! stack, `start` and `follow` Step Functions executions, which are runs
//! of the state dir (target `sfn`) that `runs`, `show`, `trace` and
//! `resume` read like local ones.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use engine::checkpoint::{Checkpoint, ImportedRun, ObservedRun, RunRecord, RunStatus, TaskStatus};
use engine::scheduler::{Observer, RunEvent};
use engine::state_dir::StateDir;
use engine::{Dag, Engine, Registry};
use tasks::aws::deploy::{self, DeployOptions};
use tasks::aws::executions::{self, EXECUTION_KEY, History, TARGET};
use tasks::aws::history::Definition;
use tasks::aws::{AwsRun, Poll};

use crate::exit::Exit;
use crate::output::RunReport;
use crate::progress::Progress;

fn say(line: &str) {
    tasks::aws::say(line);
}

fn connect(
    runtime: &tokio::runtime::Runtime,
    dag: &Dag,
    registry: &Registry,
) -> Result<Arc<AwsRun>, Exit> {
    runtime
        .block_on(AwsRun::connect(dag, registry))
        .map_err(|e| Exit::invalid(format_args!("cannot reach AWS: {e}")))
}

/// `flux-engine deploy DAG`.
pub fn deploy(
    registry: &Registry,
    dag_path: &Path,
    params: &[(String, String)],
    options: DeployOptions,
) -> Result<u8, Exit> {
    let dag = engine::dag::load(dag_path, params, registry)?;
    let runtime = crate::async_runtime()?;
    let aws = connect(&runtime, &dag, registry)?;
    let deployed = runtime
        .block_on(deploy::deploy(&aws, &dag, registry, &options, &say))
        .map_err(|e| Exit::failure(format_args!("{}: deploy failed: {e}", dag_path.display())))?;
    if let Some(arn) = &deployed.state_machine_arn {
        println!("{arn}");
    }
    Ok(0)
}

/// `flux-engine destroy DAG [--yes]`.
pub fn destroy(
    registry: &Registry,
    dag_path: &Path,
    params: &[(String, String)],
    yes: bool,
) -> Result<u8, Exit> {
    let dag = engine::dag::load(dag_path, params, registry)?;
    let runtime = crate::async_runtime()?;
    let aws = connect(&runtime, &dag, registry)?;
    let teardown = runtime
        .block_on(deploy::plan_teardown(&aws, &dag, registry))
        .map_err(Exit::failure)?;
    println!(
        "this deletes the stack {}{} and the objects deploy uploaded:",
        teardown.stack,
        if teardown.exists { "" } else { " (not found)" }
    );
    for object in &teardown.objects {
        println!("  {object}");
    }
    if let Some(prefix) = &teardown.artifacts {
        println!("  everything under {prefix}");
    }
    println!(
        "kept: the data (ingested or uploaded with --upload-data), what executions wrote, a bucket the stack created (retained)"
    );
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Exit::invalid(
                "destroy asks for confirmation on a terminal; without one, add --yes",
            ));
        }
        print!("type the stack name ({}) to confirm: ", teardown.stack);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if answer.trim() != teardown.stack {
            println!("not confirmed: nothing deleted");
            return Ok(1);
        }
    }
    runtime
        .block_on(deploy::destroy(&aws, &teardown, &say))
        .map_err(Exit::failure)?;
    println!("destroyed {}", teardown.stack);
    Ok(0)
}

/// What `start` and `follow` do on Ctrl-C.
#[derive(Clone, Copy)]
pub struct Following {
    pub stop_on_interrupt: bool,
}

/// `flux-engine start DAG`.
pub fn start(
    state_dir: &StateDir,
    registry: &Registry,
    dag_path: &Path,
    params: &[(String, String)],
    version: Option<u32>,
    no_wait: bool,
    following: Following,
) -> Result<u8, Exit> {
    let dag = engine::dag::load(dag_path, params, registry)?;
    let runtime = crate::async_runtime()?;
    let aws = connect(&runtime, &dag, registry)?;
    let machine = runtime
        .block_on(deploy::state_machine_arn(&aws, &dag))
        .map_err(Exit::invalid)?;
    let target = match version {
        Some(n) => format!("{machine}:{n}"),
        None => machine.clone(),
    };
    let run_id = engine::run::new_run_id();
    let arn = runtime
        .block_on(executions::start(
            &aws,
            &target,
            &run_id,
            &executions::input(params),
        ))
        .map_err(Exit::failure)?;
    let mut checkpoint = state_dir.open_checkpoint()?;
    record_execution(
        &mut checkpoint,
        &dag,
        &run_id,
        &engine::checkpoint::now(),
        &arn,
        &aws,
    )?;
    if no_wait {
        println!("{arn}");
        eprintln!(
            "run {run_id}: follow it with `flux-engine follow {run_id}`, see it with `flux-engine show {run_id}`"
        );
        return Ok(0);
    }
    say(&format!("run {run_id} is the execution {arn}"));
    follow_execution(&runtime, state_dir, &aws, &dag, &run_id, &arn, following)
}

/// Records an execution as a run of the state dir.
fn record_execution(
    checkpoint: &mut Checkpoint,
    dag: &Dag,
    run_id: &str,
    created_at: &str,
    arn: &str,
    aws: &AwsRun,
) -> Result<(), Exit> {
    let tasks: Vec<(String, String, String)> = dag
        .tasks
        .iter()
        .map(|t| (t.id.clone(), t.kind.clone(), String::new()))
        .collect();
    checkpoint.import_run(
        &ImportedRun {
            run_id: run_id.to_string(),
            dag_name: dag.name.clone(),
            dag_path: dag.path.display().to_string(),
            params: serde_json::to_value(&dag.params).unwrap_or_default(),
            created_at: created_at.to_string(),
            target: TARGET.to_string(),
        },
        &tasks,
    )?;
    let console = aws.console_link(&format!(
        "states/home?region={}#/v2/executions/details/{arn}",
        aws.region
    ));
    checkpoint.record_external_work(
        run_id,
        "",
        EXECUTION_KEY,
        0,
        &serde_json::json!({ "arn": arn, "console": console }),
    )?;
    Ok(())
}

/// The execution ARN of a run with target `sfn`.
fn execution_arn(checkpoint: &Checkpoint, run_id: &str) -> Result<String, Exit> {
    checkpoint
        .external_work(run_id)?
        .into_iter()
        .find(|w| w.task_id.is_empty() && w.key == EXECUTION_KEY)
        .and_then(|w| w.value.get("arn").and_then(|a| a.as_str()).map(str::to_string))
        .ok_or_else(|| {
            Exit::failure(format_args!(
                "run {run_id} is recorded as a Step Functions execution but its ARN is missing from the state dir"
            ))
        })
}

/// What a command about a recorded execution works with.
struct RecordedExecution {
    arn: String,
    dag: Dag,
    runtime: tokio::runtime::Runtime,
    aws: Arc<AwsRun>,
}

impl RecordedExecution {
    /// The run's execution ARN and DAG (with the parameters it ran with),
    /// connected to AWS.
    fn of(state_dir: &StateDir, registry: &Registry, record: &RunRecord) -> Result<Self, Exit> {
        let arn = execution_arn(&state_dir.open_checkpoint()?, &record.run_id)?;
        let dag = dag_of(state_dir, registry, record)?;
        let runtime = crate::async_runtime()?;
        let aws = connect(&runtime, &dag, registry)?;
        Ok(RecordedExecution {
            arn,
            dag,
            runtime,
            aws,
        })
    }
}

/// The DAG of a recorded run, with the parameters it ran with.
fn dag_of(state_dir: &StateDir, registry: &Registry, record: &RunRecord) -> Result<Dag, Exit> {
    let engine = Engine::new(registry.clone(), state_dir.clone());
    let (dag, _) = engine.reload_dag(record)?;
    Ok(dag)
}

/// The events a change from `before` to `after` shows the person watching;
/// a retry's delay is the one the definition's retrier gives.
fn events(
    before: Option<&ObservedRun>,
    after: &ObservedRun,
    definition: Option<&Definition>,
) -> Vec<RunEvent> {
    let mut out = Vec::new();
    for task in &after.tasks {
        let old = before.and_then(|b| b.tasks.iter().find(|t| t.id == task.id));
        for attempt in &task.attempts {
            let was = old.and_then(|t| t.attempts.iter().find(|a| a.attempt == attempt.attempt));
            if was.is_none() {
                out.push(RunEvent::AttemptStarted {
                    task_id: task.id.clone(),
                    attempt: attempt.attempt,
                });
            }
            let ended_now =
                attempt.status != "running" && was.is_none_or(|w| w.status == "running");
            if ended_now && attempt.status == "failed" {
                let last = task.attempts.last().map(|a| a.attempt) == Some(attempt.attempt);
                let retried = !last || task.status == TaskStatus::Running;
                out.push(RunEvent::AttemptFailed {
                    task_id: task.id.clone(),
                    attempt: attempt.attempt,
                    error: attempt.error.clone().unwrap_or_default(),
                    retry_in: retried.then(|| {
                        definition
                            .and_then(|d| d.retry_delay(&task.id, attempt.attempt))
                            .unwrap_or(Duration::ZERO)
                    }),
                });
            }
        }
        let final_now = !matches!(task.status, TaskStatus::Pending | TaskStatus::Running)
            && old.is_none_or(|o| o.status != task.status);
        if final_now {
            out.push(RunEvent::TaskEnded {
                task_id: task.id.clone(),
                status: task.status,
            });
        }
    }
    out
}

/// Follows an execution until it ends (or Ctrl-C), keeping the run's
/// record up to date and showing progress as a local run does; the exit
/// code is the execution's outcome.
fn follow_execution(
    runtime: &tokio::runtime::Runtime,
    state_dir: &StateDir,
    aws: &AwsRun,
    dag: &Dag,
    run_id: &str,
    arn: &str,
    following: Following,
) -> Result<u8, Exit> {
    let progress = Progress::for_stderr();
    let poll = Poll::from_env(5.0);
    let outcome: Result<Option<RunStatus>, Exit> = runtime.block_on(async {
        let mut history = History::default();
        let mut definition = None;
        let mut before: Option<ObservedRun> = None;
        let mut interrupt = Box::pin(tokio::signal::ctrl_c());
        let mut stopping = false;
        loop {
            let observed = executions::observe(aws, dag, arn, &mut history, &mut definition)
                .await
                .map_err(Exit::failure)?;
            let mut checkpoint = state_dir.open_checkpoint()?;
            checkpoint.replace_run_state(run_id, &observed.mapped.run)?;
            for event in events(before.as_ref(), &observed.mapped.run, definition.as_ref()) {
                progress.event(&event);
            }
            before = Some(observed.mapped.run.clone());
            if !observed.execution.is_running() {
                if let Some(error) = &observed.mapped.error {
                    say(&format!("execution {}: {error}", observed.execution.status));
                }
                return Ok(Some(observed.mapped.run.status));
            }
            tokio::select! {
                _ = tokio::time::sleep(poll.delay(0)) => {}
                _ = &mut interrupt, if !stopping => {
                    if following.stop_on_interrupt {
                        say("stopping the execution (--stop-on-interrupt)");
                        executions::stop(aws, arn).await.map_err(Exit::failure)?;
                        stopping = true;
                    } else {
                        return Ok(None);
                    }
                }
            }
        }
    });
    let Some(status) = outcome? else {
        println!(
            "\ndetached: the execution goes on in Step Functions. Follow it again with `flux-engine follow {run_id}`, see it with `flux-engine show {run_id}`"
        );
        return Ok(130);
    };
    let checkpoint = state_dir.open_checkpoint()?;
    if let Ok(report) = RunReport::load(&checkpoint, state_dir, run_id) {
        print!("{}", report.summary());
    }
    Ok(match status {
        RunStatus::Succeeded => 0,
        RunStatus::Cancelled => 130,
        _ => 1,
    })
}

/// `flux-engine follow RUN`.
pub fn follow(
    state_dir: &StateDir,
    registry: &Registry,
    record: &RunRecord,
    following: Following,
) -> Result<u8, Exit> {
    let RecordedExecution {
        arn,
        dag,
        runtime,
        aws,
    } = RecordedExecution::of(state_dir, registry, record)?;
    follow_execution(
        &runtime,
        state_dir,
        &aws,
        &dag,
        &record.run_id,
        &arn,
        following,
    )
}

/// Brings a run with target `sfn` up to date from its history (for
/// `show`, `trace`, `runs`); with `spans`, also rebuilds its trace.
pub fn refresh(
    state_dir: &StateDir,
    registry: &Registry,
    record: &RunRecord,
    spans: bool,
) -> Result<(), Exit> {
    let RecordedExecution {
        arn,
        dag,
        runtime,
        aws,
    } = RecordedExecution::of(state_dir, registry, record)?;
    let observed = runtime
        .block_on(executions::observe(
            &aws,
            &dag,
            &arn,
            &mut History::default(),
            &mut None,
        ))
        .map_err(Exit::failure)?;
    let mut checkpoint = state_dir.open_checkpoint()?;
    checkpoint.replace_run_state(&record.run_id, &observed.mapped.run)?;
    if spans {
        let now = chrono::Utc::now().timestamp_millis();
        let spans = executions::spans(
            &record.run_id,
            &dag,
            &observed.execution,
            &observed.mapped,
            now,
        );
        checkpoint.replace_spans(&record.run_id, &spans)?;
    }
    Ok(())
}

/// `runs --sfn DAG`: records the deployed state machine's executions
/// that are not runs of the state dir yet; how many.
pub fn import(
    state_dir: &StateDir,
    registry: &Registry,
    dag_path: &Path,
    params: &[(String, String)],
) -> Result<usize, Exit> {
    let dag = engine::dag::load(dag_path, params, registry)?;
    let runtime = crate::async_runtime()?;
    let aws = connect(&runtime, &dag, registry)?;
    let machine = runtime
        .block_on(deploy::state_machine_arn(&aws, &dag))
        .map_err(Exit::invalid)?;
    let found = runtime
        .block_on(executions::list(&aws, &machine))
        .map_err(Exit::failure)?;
    let mut checkpoint = state_dir.open_checkpoint()?;
    let mut imported = 0;
    for execution in found {
        if checkpoint
            .run_with_work(EXECUTION_KEY, "arn", &execution.arn)?
            .is_some()
        {
            continue;
        }
        let run_id = if checkpoint.run(&execution.name).is_err() {
            execution.name.clone()
        } else {
            format!("sfn-{}", execution.name)
        };
        let created = tasks::aws::history::timestamp(execution.start_ms);
        record_execution(
            &mut checkpoint,
            &dag,
            &run_id,
            &created,
            &execution.arn,
            &aws,
        )?;
        // The status as listed; `show` reads the history.
        checkpoint.replace_run_state(
            &run_id,
            &ObservedRun {
                status: execution.run_status(),
                ended_at: execution.stop_ms.map(tasks::aws::history::timestamp),
                resume_count: execution.redrive_count,
                tasks: Vec::new(),
            },
        )?;
        imported += 1;
    }
    Ok(imported)
}

/// `resume RUN` of a run with target `sfn`: a redrive, when Step
/// Functions can; else the reason and what to do instead (exit 2).
pub fn resume(
    state_dir: &StateDir,
    registry: &Registry,
    record: &RunRecord,
    following: Following,
) -> Result<u8, Exit> {
    let RecordedExecution {
        arn,
        dag,
        runtime,
        aws,
    } = RecordedExecution::of(state_dir, registry, record)?;
    let refusal = runtime.block_on(async {
        let execution = executions::describe(&aws, &arn).await?;
        let ran = executions::definition(&aws, &arn).await?;
        let (current, machine_type) =
            executions::state_machine(&aws, &execution.state_machine_arn).await?;
        Ok::<_, String>(executions::cannot_redrive(
            &execution,
            &ran,
            &current,
            &machine_type,
            chrono::Utc::now().timestamp_millis(),
        ))
    });
    if let Some(reason) = refusal.map_err(Exit::failure)? {
        return Err(Exit::invalid(format_args!(
            "cannot resume run {} (the Step Functions execution {arn}): {reason}",
            record.run_id
        )));
    }
    let token = format!("{}-{}", record.run_id, record.resume_count + 1);
    runtime
        .block_on(executions::redrive(&aws, &arn, &token))
        .map_err(Exit::failure)?;
    say(&format!(
        "redriving {arn}: Step Functions runs its failed states again"
    ));
    follow_execution(
        &runtime,
        state_dir,
        &aws,
        &dag,
        &record.run_id,
        &arn,
        following,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::checkpoint::{AttemptRecord, ObservedTask};

    fn attempt(n: u32, status: &str) -> AttemptRecord {
        AttemptRecord {
            task_id: "a".into(),
            attempt: n,
            status: status.into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            ended_at: None,
            error: (status == "failed").then(|| "boom".to_string()),
        }
    }

    fn run(status: TaskStatus, attempts: Vec<AttemptRecord>) -> ObservedRun {
        ObservedRun {
            status: RunStatus::Running,
            ended_at: None,
            resume_count: 0,
            tasks: vec![ObservedTask {
                id: "a".into(),
                status,
                ended_at: None,
                error: None,
                attempts,
            }],
        }
    }

    #[test]
    fn each_change_is_shown_once() {
        let definition = Definition::parse(
            r#"{"StartAt": "a", "States": {"a": {"Type": "Task", "Resource": "x", "End": true,
                "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 3, "BackoffRate": 2.0}]}}}"#,
        );
        let first = run(TaskStatus::Running, vec![attempt(1, "running")]);
        let second = run(
            TaskStatus::Running,
            vec![attempt(1, "failed"), attempt(2, "running")],
        );
        let third = run(
            TaskStatus::Succeeded,
            vec![attempt(1, "failed"), attempt(2, "succeeded")],
        );
        let shown: Vec<String> = [
            events(None, &first, None),
            events(Some(&first), &second, Some(&definition)),
            events(Some(&second), &third, None),
            events(Some(&third), &third, None),
        ]
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
        assert!(shown[0].contains("AttemptStarted") && shown[0].contains("attempt: 1"));
        assert!(shown[1].contains("AttemptFailed") && shown[1].contains("retry_in: Some(3s)"));
        assert!(shown[1].contains("AttemptStarted") && shown[1].contains("attempt: 2"));
        assert!(shown[2].contains("TaskEnded") && !shown[2].contains("AttemptStarted"));
        assert_eq!(shown[3], "[]");
    }
}

//! How runs are shown: `runs`, `show` and the summary at the end of a run.

use engine::checkpoint::{
    AttemptRecord, Checkpoint, CheckpointError, RunRecord, RunStatus, TaskRecord, TaskStatus,
    elapsed,
};
use engine::state_dir::StateDir;
use serde_json::json;

/// A run's status as a person should read it: a run recorded `running`
/// whose lock nobody holds was killed, and says `interrupted`.
fn run_status(run: &RunRecord, state_dir: &StateDir) -> &'static str {
    match run.status {
        // An execution in Step Functions runs without this machine.
        RunStatus::Running if run.target == tasks::aws::executions::TARGET => "running",
        RunStatus::Running if !state_dir.is_run_active(&run.run_id) => "interrupted",
        status => status.as_str(),
    }
}

fn duration_text(start: Option<&str>, end: Option<&str>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => elapsed(s, e)
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_default(),
        (Some(s), None) => elapsed(s, &engine::checkpoint::now())
            .map(|d| format!("{:.1}s…", d.as_secs_f64()))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn seconds(start: Option<&str>, end: Option<&str>) -> Option<f64> {
    Some(elapsed(start?, end?)?.as_secs_f64())
}

/// A plain text table with columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

pub fn runs(runs: &[RunRecord], state_dir: &StateDir, as_json: bool) -> String {
    if as_json {
        let items: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({
                    "run_id": r.run_id,
                    "dag": r.dag,
                    "status": run_status(r, state_dir),
                    "created_at": r.created_at,
                    "ended_at": r.ended_at,
                    "duration_seconds": seconds(Some(&r.created_at), r.ended_at.as_deref()),
                    "resume_count": r.resume_count,
                    "target": r.target,
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(items));
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.run_id.clone(),
                r.dag.clone(),
                run_status(r, state_dir).to_string(),
                r.created_at.clone(),
                duration_text(Some(&r.created_at), r.ended_at.as_deref()),
                r.target.clone(),
            ]
        })
        .collect();
    table(
        &["RUN ID", "DAG", "STATUS", "STARTED", "DURATION", "WHERE"],
        &rows,
    )
}

pub struct RunReport {
    run: RunRecord,
    status: &'static str,
    tasks: Vec<TaskRecord>,
    attempts: Vec<AttemptRecord>,
    external_work: Vec<engine::checkpoint::ExternalWork>,
    /// What the kinds' preflight recorded on the run's span (the Spark
    /// environment), `flux.`-prefixed keys with their values.
    environment: Vec<(String, serde_json::Value)>,
}

impl RunReport {
    pub fn load(
        checkpoint: &Checkpoint,
        state_dir: &StateDir,
        run_id: &str,
    ) -> Result<Self, CheckpointError> {
        let run = checkpoint.run(run_id)?;
        Ok(RunReport {
            status: run_status(&run, state_dir),
            tasks: checkpoint.tasks(run_id)?,
            attempts: checkpoint.attempts(run_id)?,
            external_work: checkpoint.external_work(run_id)?,
            environment: checkpoint
                .run_span_attributes(run_id)?
                .into_iter()
                .filter(|(key, _)| {
                    key.starts_with("flux.")
                        && !engine::spans::attr::ENGINE_OWN.contains(&key.as_str())
                })
                .collect(),
            run,
        })
    }

    pub fn json(&self) -> serde_json::Value {
        let tasks: Vec<_> = self
            .tasks
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "type": t.kind,
                    "status": t.status,
                    "attempts": t.attempts,
                    "started_at": t.started_at,
                    "ended_at": t.ended_at,
                    "duration_seconds": seconds(t.started_at.as_deref(), t.ended_at.as_deref()),
                    "error": t.error,
                    "output": t.output,
                })
            })
            .collect();
        json!({
            "run_id": self.run.run_id,
            "dag": self.run.dag,
            "dag_path": self.run.dag_path,
            "status": self.status,
            "params": self.run.params,
            "created_at": self.run.created_at,
            "ended_at": self.run.ended_at,
            "resume_count": self.run.resume_count,
            "target": self.run.target,
            "tasks": tasks,
            "attempts": self.attempts,
            "external_work": self.external_work,
            "environment": self.environment.iter().cloned().collect::<serde_json::Map<_, _>>(),
        })
    }

    fn task_rows<'a>(&self, tasks: impl Iterator<Item = &'a TaskRecord>) -> Vec<Vec<String>> {
        tasks
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.status.as_str().to_string(),
                    t.attempts.to_string(),
                    duration_text(t.started_at.as_deref(), t.ended_at.as_deref()),
                    t.error
                        .as_deref()
                        .and_then(|e| e.lines().next())
                        .unwrap_or_default()
                        .to_string(),
                ]
            })
            .collect()
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "run {}  dag {}  status {}  started {}  duration {}\n\n",
            self.run.run_id,
            self.run.dag,
            self.status,
            self.run.created_at,
            duration_text(Some(&self.run.created_at), self.run.ended_at.as_deref())
        );
        out.push_str(&table(
            &["TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"],
            &self.task_rows(self.tasks.iter()),
        ));
        out.push_str(&self.environment());
        out.push_str(&self.row_counts());
        out.push_str(&self.external_work());
        out.push_str(&self.artifacts());
        out
    }

    /// The environment the run's tasks ran in, as their kinds recorded it
    /// on the run's span (nothing for a run without such kinds, or not
    /// traced).
    fn environment(&self) -> String {
        if self.environment.is_empty() {
            return String::new();
        }
        let rows: Vec<Vec<String>> = self
            .environment
            .iter()
            .map(|(key, value)| {
                vec![
                    key.trim_start_matches("flux.").to_string(),
                    value.as_str().map_or(value.to_string(), str::to_string),
                ]
            })
            .collect();
        format!("\nenvironment:\n{}", table(&["WHAT", "VALUE"], &rows))
    }

    /// The work the run started in AWS, by the ids the services gave it,
    /// with console links.
    fn external_work(&self) -> String {
        if self.external_work.is_empty() {
            return String::new();
        }
        let rows: Vec<Vec<String>> = self
            .external_work
            .iter()
            .map(|w| {
                let ids: Vec<String> = w
                    .value
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(k, _)| k.as_str() != "console")
                            .map(|(k, v)| {
                                format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string))
                            })
                            .collect()
                    })
                    .unwrap_or_else(|| vec![w.value.to_string()]);
                vec![
                    if w.task_id.is_empty() {
                        "(run)".to_string()
                    } else {
                        w.task_id.clone()
                    },
                    w.key.clone(),
                    ids.join(" "),
                    w.value["console"].as_str().unwrap_or_default().to_string(),
                ]
            })
            .collect();
        format!(
            "\nwork started in AWS:\n{}",
            table(&["TASK", "WHAT", "IDS", "CONSOLE"], &rows)
        )
    }

    /// Rows read / clean / quarantined per raw file, from every task whose
    /// output carries such counts (the cleaning job's `output_json`).
    fn row_counts(&self) -> String {
        let mut out = String::new();
        for task in &self.tasks {
            let Some(files) = task
                .output
                .as_ref()
                .and_then(|o| o.get("files"))
                .and_then(|f| f.as_object())
            else {
                continue;
            };
            let count = |c: &serde_json::Value, key: &str| c.get(key).and_then(|v| v.as_u64());
            let rows: Vec<Vec<String>> = files
                .iter()
                .filter_map(|(file, c)| {
                    let (read, clean, quarantined) = (
                        count(c, "read")?,
                        count(c, "clean")?,
                        count(c, "quarantined")?,
                    );
                    let ratio = if read == 0 {
                        0.0
                    } else {
                        quarantined as f64 / read as f64
                    };
                    Some(vec![
                        file.clone(),
                        read.to_string(),
                        clean.to_string(),
                        quarantined.to_string(),
                        format!("{:.2}%", ratio * 100.0),
                    ])
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            out.push_str(&format!("\nrows of task {}:\n", task.id));
            out.push_str(&table(
                &["FILE", "READ", "CLEAN", "QUARANTINED", "RATIO"],
                &rows,
            ));
            if let Some(reasons) = task
                .output
                .as_ref()
                .and_then(|o| o.get("quarantine_reasons"))
                .and_then(|r| r.as_object())
                .filter(|r| !r.is_empty())
            {
                let list: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
                out.push_str(&format!("quarantine reasons: {}\n", list.join(", ")));
            }
        }
        out
    }

    /// Where the reports a run wrote are, as paths one can open.
    pub fn artifacts(&self) -> String {
        let mut out = String::new();
        for task in &self.tasks {
            let Some(output) = &task.output else { continue };
            if let (Some(uri), Some(path)) = (
                output.get("report").and_then(|v| v.as_str()),
                output.get("local_path").and_then(|v| v.as_str()),
            ) {
                // The run's own copy when it kept one: the shared location
                // holds whichever run wrote it last.
                match output.get("run_copy").and_then(|v| v.as_str()) {
                    Some(copy) => out.push_str(&format!(
                        "\nreport ({}): {copy}\n  (this run's copy; the latest run's is {path}, {uri})\n",
                        task.id
                    )),
                    None => {
                        out.push_str(&format!("\nreport ({}): {path}\n  ({uri})\n", task.id))
                    }
                }
            }
        }
        out
    }

    /// The end-of-run summary: every task for small DAGs; for large ones the
    /// counts by status and only the tasks that did not succeed.
    pub fn summary(&self) -> String {
        const FULL_LISTING_UP_TO: usize = 40;
        let mut out = String::from("\n");
        if self.tasks.len() <= FULL_LISTING_UP_TO {
            out.push_str(&table(
                &["TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"],
                &self.task_rows(self.tasks.iter()),
            ));
        } else {
            let mut counts: Vec<(TaskStatus, usize)> = Vec::new();
            for t in &self.tasks {
                match counts.iter_mut().find(|(s, _)| *s == t.status) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((t.status, 1)),
                }
            }
            let counts: Vec<String> = counts
                .iter()
                .map(|(s, n)| format!("{n} {}", s.as_str()))
                .collect();
            out.push_str(&format!(
                "{} tasks: {}\n",
                self.tasks.len(),
                counts.join(", ")
            ));
            let not_ok: Vec<&TaskRecord> = self
                .tasks
                .iter()
                .filter(|t| t.status != TaskStatus::Succeeded)
                .take(FULL_LISTING_UP_TO)
                .collect();
            if !not_ok.is_empty() {
                out.push_str(&table(
                    &["TASK", "STATUS", "ATTEMPTS", "DURATION", "ERROR"],
                    &self.task_rows(not_ok.into_iter()),
                ));
            }
        }
        out.push_str(&self.row_counts());
        out.push_str(&self.artifacts());
        out.push_str(&format!(
            "\nrun {} {} in {}\n",
            self.run.run_id,
            self.status,
            duration_text(Some(&self.run.created_at), self.run.ended_at.as_deref())
        ));
        if matches!(self.run.status, RunStatus::Failed | RunStatus::Cancelled) {
            out.push_str(&format!(
                "resume it with: flux-engine resume {}\nlook closer with: flux-engine show {}\n",
                self.run.run_id, self.run.run_id
            ));
        }
        out
    }
}

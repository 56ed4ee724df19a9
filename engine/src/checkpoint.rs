//! The durable record of every run: SQLite in WAL mode, one file per state
//! dir (`flux.db`).
//!
//! Every state change is committed here *before* the engine acts on it
//! (starts a process, releases a dependent), so a run killed at any instant
//! can be resumed from what this file says. This module never starts work;
//! it only records and reads.
//!
//! Durability: `synchronous = NORMAL` in WAL mode. A committed transaction
//! survives the engine process being killed (the crash the engine is built
//! for); after a power loss the last transactions may be lost but the file
//! is never corrupt, and resume then re-runs those tasks (at-least-once).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("checkpoint database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("state dir {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("checkpoint database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "checkpoint database has schema version {found}, newer than this flux-engine understands ({supported}); upgrade flux-engine or use another --state-dir"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("no run with id `{0}` in this state dir")]
    UnknownRun(String),
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts how
/// many have run. Released migrations are never edited, only appended to.
const MIGRATIONS: &[&str] = &[
    // 1: runs, tasks and attempts.
    "CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        dag_name TEXT NOT NULL,
        dag_path TEXT NOT NULL,
        params_json TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        ended_at TEXT,
        resume_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE tasks (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        task_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        definition_hash TEXT NOT NULL,
        started_at TEXT,
        ended_at TEXT,
        error TEXT,
        output_json TEXT,
        PRIMARY KEY (run_id, task_id)
    );
    CREATE TABLE attempts (
        run_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        error TEXT,
        PRIMARY KEY (run_id, task_id, attempt)
    );",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    UpstreamFailed,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::UpstreamFailed => "upstream_failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TaskStatus::Pending,
            "running" => TaskStatus::Running,
            "succeeded" => TaskStatus::Succeeded,
            "failed" => TaskStatus::Failed,
            "upstream_failed" => TaskStatus::UpstreamFailed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    Succeeded,
    Failed,
    Cancelled,
}

impl AttemptStatus {
    fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Cancelled => "cancelled",
        }
    }
}

/// One state change; a batch of them is committed in one transaction.
#[derive(Debug, Clone)]
pub enum Change {
    RunStatus {
        status: RunStatus,
        ended: bool,
    },
    /// The task is `running` with attempt `attempt` (its total count).
    AttemptStarted {
        task_id: String,
        attempt: u32,
    },
    /// An attempt ended; `task_status` is the task's status afterwards
    /// (`running` while a retry is pending).
    AttemptEnded {
        task_id: String,
        attempt: u32,
        status: AttemptStatus,
        error: Option<String>,
        task_status: TaskStatus,
        output: Option<String>,
    },
    /// A task reached a final status without an attempt of its own
    /// (`upstream_failed`, or `cancelled` while waiting to retry).
    TaskEnded {
        task_id: String,
        status: TaskStatus,
        error: Option<String>,
    },
    /// Resume: the task will run again under this definition.
    TaskReset {
        task_id: String,
        definition_hash: String,
    },
    /// Resume: a task the DAG file gained since the run started.
    TaskAdded {
        task_id: String,
        position: usize,
        kind: String,
        definition_hash: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub dag: String,
    pub dag_path: String,
    pub params: serde_json::Value,
    pub status: RunStatus,
    pub created_at: String,
    pub updated_at: String,
    pub ended_at: Option<String>,
    pub resume_count: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub id: String,
    pub kind: String,
    pub status: TaskStatus,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub error: Option<String>,
    pub output: Option<serde_json::Value>,
    pub definition_hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub task_id: String,
    pub attempt: u32,
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub error: Option<String>,
}

pub struct Checkpoint {
    conn: Connection,
}

/// The current UTC time as stored: RFC 3339 with milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The time between two stored timestamps.
pub fn elapsed(start: &str, end: &str) -> Option<Duration> {
    let start = chrono::DateTime::parse_from_rfc3339(start).ok()?;
    let end = chrono::DateTime::parse_from_rfc3339(end).ok()?;
    (end - start).to_std().ok()
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let open_err = |source| CheckpointError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrate(&mut conn)?;
        Ok(Checkpoint { conn })
    }

    pub fn schema_version(&self) -> Result<i64, CheckpointError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Records a new run and its tasks, all `pending`.
    pub fn create_run(
        &mut self,
        run_id: &str,
        dag_name: &str,
        dag_path: &str,
        params: &serde_json::Value,
        tasks: &[(String, String, String)],
    ) -> Result<(), CheckpointError> {
        let tx = self.conn.transaction()?;
        let at = now();
        tx.execute(
            "INSERT INTO runs (run_id, dag_name, dag_path, params_json, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?5)",
            params![run_id, dag_name, dag_path, params.to_string(), at],
        )?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO tasks (run_id, task_id, position, kind, status, definition_hash)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
            )?;
            for (position, (task_id, kind, hash)) in tasks.iter().enumerate() {
                insert.execute(params![run_id, task_id, position as i64, kind, hash])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Commits a batch of changes to one run in one transaction.
    pub fn apply(&mut self, run_id: &str, changes: &[Change]) -> Result<(), CheckpointError> {
        if changes.is_empty() {
            return Ok(());
        }
        let at = now();
        let tx = self.conn.transaction()?;
        for change in changes {
            match change {
                Change::RunStatus { status, ended } => {
                    tx.prepare_cached(
                        "UPDATE runs SET status = ?2, updated_at = ?3,
                             ended_at = CASE WHEN ?4 THEN ?3 ELSE NULL END
                         WHERE run_id = ?1",
                    )?
                    .execute(params![run_id, status.as_str(), at, ended])?;
                }
                Change::AttemptStarted { task_id, attempt } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET status = 'running', attempts = ?3,
                             started_at = COALESCE(started_at, ?4), ended_at = NULL, error = NULL
                         WHERE run_id = ?1 AND task_id = ?2",
                    )?
                    .execute(params![run_id, task_id, attempt, at])?;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO attempts (run_id, task_id, attempt, status, started_at)
                         VALUES (?1, ?2, ?3, 'running', ?4)",
                    )?
                    .execute(params![run_id, task_id, attempt, at])?;
                }
                Change::AttemptEnded {
                    task_id,
                    attempt,
                    status,
                    error,
                    task_status,
                    output,
                } => {
                    tx.prepare_cached(
                        "UPDATE attempts SET status = ?4, ended_at = ?5, error = ?6
                         WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3",
                    )?
                    .execute(params![
                        run_id,
                        task_id,
                        attempt,
                        status.as_str(),
                        at,
                        error
                    ])?;
                    let ended = *task_status != TaskStatus::Running;
                    tx.prepare_cached(
                        "UPDATE tasks SET status = ?3, error = ?4, output_json = ?5,
                             ended_at = CASE WHEN ?6 THEN ?7 ELSE NULL END
                         WHERE run_id = ?1 AND task_id = ?2",
                    )?
                    .execute(params![
                        run_id,
                        task_id,
                        task_status.as_str(),
                        error,
                        output,
                        ended,
                        at
                    ])?;
                }
                Change::TaskEnded {
                    task_id,
                    status,
                    error,
                } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET status = ?3, error = ?4, ended_at = ?5
                         WHERE run_id = ?1 AND task_id = ?2",
                    )?
                    .execute(params![
                        run_id,
                        task_id,
                        status.as_str(),
                        error,
                        at
                    ])?;
                }
                Change::TaskReset {
                    task_id,
                    definition_hash,
                } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET status = 'pending', definition_hash = ?3, started_at = NULL,
                             ended_at = NULL, error = NULL, output_json = NULL
                         WHERE run_id = ?1 AND task_id = ?2",
                    )?
                    .execute(params![run_id, task_id, definition_hash])?;
                    // An attempt left `running` by a crash did not finish.
                    tx.prepare_cached(
                        "UPDATE attempts SET status = 'interrupted'
                         WHERE run_id = ?1 AND task_id = ?2 AND status = 'running'",
                    )?
                    .execute(params![run_id, task_id])?;
                }
                Change::TaskAdded {
                    task_id,
                    position,
                    kind,
                    definition_hash,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO tasks (run_id, task_id, position, kind, status, definition_hash)
                         VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                    )?
                    .execute(params![run_id, task_id, *position as i64, kind, definition_hash])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn mark_resumed(&mut self, run_id: &str) -> Result<(), CheckpointError> {
        self.conn.execute(
            "UPDATE runs SET status = 'running', resume_count = resume_count + 1, ended_at = NULL, updated_at = ?2
             WHERE run_id = ?1",
            params![run_id, now()],
        )?;
        Ok(())
    }

    pub fn run(&self, run_id: &str) -> Result<RunRecord, CheckpointError> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"),
                [run_id],
                run_from_row,
            )
            .optional()?
            .ok_or_else(|| CheckpointError::UnknownRun(run_id.to_string()))
    }

    /// Runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, CheckpointError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, run_id DESC"
        ))?;
        let rows = stmt.query_map([], run_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn latest_run(&self) -> Result<Option<RunRecord>, CheckpointError> {
        Ok(self.runs()?.into_iter().next())
    }

    /// The run's tasks in declaration order.
    pub fn tasks(&self, run_id: &str) -> Result<Vec<TaskRecord>, CheckpointError> {
        let mut stmt = self.conn.prepare(
            "SELECT task_id, kind, status, attempts, started_at, ended_at, error, output_json, definition_hash
             FROM tasks WHERE run_id = ?1 ORDER BY position",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            let status: String = r.get(2)?;
            let output: Option<String> = r.get(7)?;
            Ok(TaskRecord {
                id: r.get(0)?,
                kind: r.get(1)?,
                status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Pending),
                attempts: r.get(3)?,
                started_at: r.get(4)?,
                ended_at: r.get(5)?,
                error: r.get(6)?,
                output: output.and_then(|o| serde_json::from_str(&o).ok()),
                definition_hash: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>, CheckpointError> {
        let mut stmt = self.conn.prepare(
            "SELECT a.task_id, a.attempt, a.status, a.started_at, a.ended_at, a.error
             FROM attempts a JOIN tasks t ON t.run_id = a.run_id AND t.task_id = a.task_id
             WHERE a.run_id = ?1 ORDER BY t.position, a.attempt",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(AttemptRecord {
                task_id: r.get(0)?,
                attempt: r.get(1)?,
                status: r.get(2)?,
                started_at: r.get(3)?,
                ended_at: r.get(4)?,
                error: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const RUN_COLUMNS: &str = "run_id, dag_name, dag_path, params_json, status, created_at, updated_at, ended_at, resume_count";

fn run_from_row(r: &rusqlite::Row) -> rusqlite::Result<RunRecord> {
    let params: String = r.get(3)?;
    let status: String = r.get(4)?;
    Ok(RunRecord {
        run_id: r.get(0)?,
        dag: r.get(1)?,
        dag_path: r.get(2)?,
        params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        ended_at: r.get(7)?,
        resume_count: r.get(8)?,
    })
}

fn migrate(conn: &mut Connection) -> Result<(), CheckpointError> {
    let supported = MIGRATIONS.len() as i64;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > supported {
        return Err(CheckpointError::TooNew {
            found: version,
            supported,
        });
    }
    for migration in &MIGRATIONS[version as usize..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", supported)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_gets_the_latest_schema_and_reopens_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        let cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(cp);
        let cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        assert!(matches!(
            Checkpoint::open(&path),
            Err(CheckpointError::TooNew { found: 999, .. })
        ));
    }

    #[test]
    fn changes_are_visible_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        let mut cp = Checkpoint::open(&path).unwrap();
        let tasks = vec![("a".to_string(), "noop".to_string(), "h".to_string())];
        cp.create_run("r1", "d", "/d.toml", &serde_json::json!({}), &tasks)
            .unwrap();
        cp.apply(
            "r1",
            &[
                Change::AttemptStarted {
                    task_id: "a".into(),
                    attempt: 1,
                },
                Change::AttemptEnded {
                    task_id: "a".into(),
                    attempt: 1,
                    status: AttemptStatus::Succeeded,
                    error: None,
                    task_status: TaskStatus::Succeeded,
                    output: Some("{\"n\":1}".into()),
                },
            ],
        )
        .unwrap();
        drop(cp);
        let cp = Checkpoint::open(&path).unwrap();
        let tasks = cp.tasks("r1").unwrap();
        assert_eq!(tasks[0].status, TaskStatus::Succeeded);
        assert_eq!(tasks[0].attempts, 1);
        assert_eq!(tasks[0].output, Some(serde_json::json!({"n": 1})));
        assert!(matches!(
            cp.run("nope"),
            Err(CheckpointError::UnknownRun(_))
        ));
    }
}

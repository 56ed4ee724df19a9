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

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::spans::{
    SpanEvent, SpanLink, SpanRecord, SpanStatus, attr, name as span_name, task_error,
};

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
    #[error(
        "checkpoint database {path} is read-only for this process ({source}): `run` and `resume` record every step there and need write access to the state dir; `runs`, `show`, `trace`, `catalog` and `query` only read and work without it"
    )]
    ReadOnly {
        path: String,
        source: rusqlite::Error,
    },
    /// Read without write access, with changes waiting in the WAL file
    /// that SQLite can only read through a `-shm` index it cannot create.
    #[error(
        "checkpoint database {path}: its latest changes are in {wal}, which SQLite cannot read without write access to the state dir (the -shm file is missing); open it once with write access (any `flux-engine runs` by a user who can write there) to fold them in"
    )]
    UnreadableWal { path: String, wal: String },
    #[error(
        "no run with id `{0}` in this state dir; `flux-engine runs` lists its runs (use --state-dir for another state dir)"
    )]
    UnknownRun(String),
    /// A span that cannot be stored as given (a time past the year 2262,
    /// which SQLite's signed 64-bit integers cannot hold in nanoseconds).
    #[error("run `{run_id}`: span {span_id} of trace {trace_id} cannot be stored: {reason}")]
    InvalidSpan {
        run_id: String,
        trace_id: String,
        span_id: String,
        reason: String,
    },
    /// A task or attempt span time that cannot be stored (past 2262).
    #[error("run `{run_id}`: a span of task `{task_id}` has a time out of range ({nanos} ns)")]
    InvalidSpanTime {
        run_id: String,
        task_id: String,
        nanos: u64,
    },
    /// An attempts row whose span columns do not read back.
    #[error("run `{run_id}`: the span of task `{task_id}` attempt {attempt} is corrupt: {reason}")]
    CorruptAttemptSpan {
        run_id: String,
        task_id: String,
        attempt: u32,
        reason: String,
    },
    /// A stored span row that does not read back (edited by hand, or
    /// written by a broken build): named so that it can be found and fixed.
    #[error("run `{run_id}`: span row {row} (span {span_id}) is corrupt: {reason}")]
    CorruptSpan {
        run_id: String,
        row: i64,
        span_id: String,
        reason: String,
    },
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
    // 2: finished OpenTelemetry spans, so that `flux-engine trace` works
    // without a collector. The columns a query filters, orders or links
    // by are columns; the rest of the span (kind, status, attributes,
    // events, links, resource, scope) is one JSON document, read back only
    // with its row. The primary key makes a re-delivered batch a no-op;
    // the index serves `WHERE run_id = ? ORDER BY start_unix_nano` for a
    // run of many thousands of spans without a sort or a scan.
    "CREATE TABLE spans (
        run_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_span_id TEXT,
        name TEXT NOT NULL,
        start_unix_nano INTEGER NOT NULL,
        end_unix_nano INTEGER NOT NULL,
        detail_json TEXT NOT NULL,
        PRIMARY KEY (trace_id, span_id)
    );
    CREATE INDEX spans_by_run ON spans (run_id, start_unix_nano);",
    // 3: the spans' unique key follows the order they are written in.
    // Spans arrive as they end; a key of (trace_id, span_id) put each of
    // them at a random place in its index, so a batch of 512 dirtied
    // nearly every page of that index and the write-ahead log grew about
    // four times faster than the spans themselves, slowing the
    // scheduler's own commits (its write lock and the log's checkpoints)
    // by a third on runs of many short tasks. A span ends once, so
    // (run_id, end_unix_nano, span_id) still makes a re-delivered batch a
    // no-op, and it grows at its end. Rows keep their rowid: "the order
    // they were stored" stays what it was.
    "CREATE TABLE spans_by_end (
        run_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        span_id TEXT NOT NULL,
        parent_span_id TEXT,
        name TEXT NOT NULL,
        start_unix_nano INTEGER NOT NULL,
        end_unix_nano INTEGER NOT NULL,
        detail_json TEXT NOT NULL,
        UNIQUE (run_id, end_unix_nano, span_id)
    );
    INSERT INTO spans_by_end (rowid, run_id, trace_id, span_id, parent_span_id, name,
                              start_unix_nano, end_unix_nano, detail_json)
        SELECT rowid, run_id, trace_id, span_id, parent_span_id, name,
               start_unix_nano, end_unix_nano, detail_json
        FROM spans ORDER BY rowid;
    DROP TABLE spans;
    ALTER TABLE spans_by_end RENAME TO spans;
    CREATE INDEX spans_by_run ON spans (run_id, start_unix_nano);",
    // 4: where a run's tasks do their work (`local`, `aws`), kept so that a
    // resume does it in the same place; and the work a run started outside
    // this process (an EMR cluster and its steps, an Athena query), by the
    // id the service gave it, committed before the engine waits on it so
    // that a resume reconnects to it instead of starting it again. The
    // key is the task's own name for the piece of work (`step`,
    // `query`); run-wide work (a cluster the run's tasks share) has the
    // task id ''.
    "ALTER TABLE runs ADD COLUMN target TEXT NOT NULL DEFAULT 'local';
    CREATE TABLE external_work (
        run_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        key TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        value_json TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (run_id, task_id, key)
    );",
    // 5: the `task` and `attempt` spans are rebuilt from the attempts rows
    // the scheduler commits anyway, instead of being stored as span rows
    // of their own (issue 11: converting and inserting two span rows per
    // task cost a run of no-op tasks 22-37 %). Per attempt: its trace, its
    // task's kind then, the ids of its span and its task's span, its span's start and end and
    // the `flux.status` it ended with (`timed_out` is not an attempt
    // status), its span's message where it differs from `error`, the
    // retry it was followed by, and on the attempt that ended its task's
    // span that span's end and status.
    // Per trace (a run or a resume): its root span, which task spans hang
    // under, and its resource (service name, version, host), so that
    // rebuilt spans have both even when the run span was never stored (an
    // engine killed mid-run).
    "ALTER TABLE attempts ADD COLUMN trace_id TEXT;
    ALTER TABLE attempts ADD COLUMN task_type TEXT;
    ALTER TABLE attempts ADD COLUMN task_span_id TEXT;
    ALTER TABLE attempts ADD COLUMN span_id TEXT;
    ALTER TABLE attempts ADD COLUMN span_start_unix_nano INTEGER;
    ALTER TABLE attempts ADD COLUMN span_end_unix_nano INTEGER;
    ALTER TABLE attempts ADD COLUMN span_status TEXT;
    ALTER TABLE attempts ADD COLUMN span_error TEXT;
    ALTER TABLE attempts ADD COLUMN task_span_end_unix_nano INTEGER;
    ALTER TABLE attempts ADD COLUMN task_span_status TEXT;
    ALTER TABLE attempts ADD COLUMN retry_delay_ms INTEGER;
    CREATE TABLE traces (
        trace_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        root_span_id TEXT NOT NULL,
        resource_json TEXT NOT NULL
    );
    CREATE INDEX traces_by_run ON traces (run_id);",
];

/// The first schema whose attempts rows rebuild their spans.
const REBUILT_SPANS_SCHEMA: i64 = 5;

/// The first schema with run targets and external work.
const EXTERNAL_WORK_SCHEMA: i64 = 4;

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
    /// A trace of the run began (the run or one resume of it, recorded):
    /// its root span and resource, for the spans rebuilt from attempts.
    TraceStarted {
        trace_id: String,
        root_span_id: String,
        /// The resource's attributes as a JSON array of `[key, value]`.
        resource_json: String,
    },
    /// The task is `running` with attempt `attempt` (its total count).
    AttemptStarted {
        task_id: String,
        attempt: u32,
        /// Its span and its task's span, when the run is traced.
        span: Option<AttemptSpanStart>,
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
        /// How its span ended, when the run is traced.
        span: Option<AttemptSpanEnd>,
    },
    /// A task reached a final status without an attempt of its own
    /// (`upstream_failed`, or `cancelled` while waiting to retry).
    TaskEnded {
        task_id: String,
        status: TaskStatus,
        error: Option<String>,
        /// The task's span ended here (cancelled while waiting to retry):
        /// recorded on its last attempt's row, with `status`.
        task_span_end: Option<TaskSpanEnd>,
    },
    /// Resume: the task will run again under this definition, of this
    /// kind (the DAG file may have changed its type since the run began).
    TaskReset {
        task_id: String,
        kind: String,
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

/// Where an attempt's span and its task's span sit in their trace (ids
/// in lowercase hex), and when the attempt's span started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSpanStart {
    pub trace_id: String,
    /// The task's kind when the attempt ran (`flux.task_type`): a resume
    /// may run a task under another kind than the run's first attempts.
    pub task_type: String,
    pub task_span_id: String,
    pub span_id: String,
    pub start_unix_nano: u64,
}

/// How an attempt's span ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSpanEnd {
    pub end_unix_nano: u64,
    /// The span's `flux.status` (`succeeded`, `failed`, `timed_out`,
    /// `cancelled`); `None` when it ended without one (its task kind
    /// panicked), which leaves its status unset.
    pub status: Option<&'static str>,
    /// The span's error message when it is not the attempt's `error`
    /// (which may carry a note the scheduler added afterwards).
    pub error: Option<String>,
    /// The task's span ended with this attempt, at this time; its status
    /// is the change's `task_status`.
    pub task_span_end_unix_nano: Option<u64>,
    /// The task will be tried again after this many milliseconds: a
    /// `retry` event on the task's span.
    pub retry_delay_ms: Option<i64>,
}

/// A task's span ended without an attempt ending with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpanEnd {
    /// The task's last attempt, whose row records the end.
    pub attempt: u32,
    pub end_unix_nano: u64,
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
    /// Where the run's tasks do their work: `local` or `aws`.
    pub target: String,
}

/// A piece of work a run started outside this process, as the task that
/// started it recorded it.
#[derive(Debug, Clone, Serialize)]
pub struct ExternalWork {
    /// Empty for work the run's tasks share.
    pub task_id: String,
    pub key: String,
    /// The attempt that recorded it last.
    pub attempt: u32,
    pub value: serde_json::Value,
    pub recorded_at: String,
}

/// A run that happened elsewhere, as first recorded.
#[derive(Debug, Clone)]
pub struct ImportedRun {
    pub run_id: String,
    pub dag_name: String,
    pub dag_path: String,
    pub params: serde_json::Value,
    /// RFC 3339, as [`now`] writes it.
    pub created_at: String,
    pub target: String,
}

/// What is known of a run that happens elsewhere (a Step Functions
/// execution's history, mapped onto the DAG's tasks).
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedRun {
    pub status: RunStatus,
    pub ended_at: Option<String>,
    /// How many times it was resumed (redriven).
    pub resume_count: u32,
    pub tasks: Vec<ObservedTask>,
}

/// One task of an [`ObservedRun`].
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedTask {
    pub id: String,
    pub status: TaskStatus,
    pub ended_at: Option<String>,
    pub error: Option<String>,
    pub attempts: Vec<AttemptRecord>,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// The schema version the file has: the latest, except for a file
    /// opened read-only from an older release (which cannot be migrated).
    schema: i64,
}

impl CheckpointError {
    /// Whether opening the checkpoint to write failed for want of write
    /// access (to `flux.db`, or to the state dir SQLite makes its `-wal`
    /// and `-shm` files in), so that reading it read-only may still work.
    pub fn is_no_write_access(&self) -> bool {
        match self {
            CheckpointError::ReadOnly { .. } => true,
            CheckpointError::Open { source, .. } | CheckpointError::Sql(source) => {
                cannot_share(source)
            }
            _ => false,
        }
    }
}

/// The first schema version with the `spans` table.
const SPANS_SCHEMA: i64 = 2;

/// Whether opening read-only failed because SQLite could not set up the
/// shared WAL index without write access (no `-shm` file and no right to
/// create one), which the `immutable` flag avoids.
fn cannot_share(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

/// Whether `e`, from opening the checkpoint to write, means that this
/// process may not write it: SQLite's "readonly" errors, or "cannot open"
/// when the file itself refuses to be opened for writing (permissions, a
/// read-only file system).
fn cannot_write(e: &rusqlite::Error, path: &Path) -> bool {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ReadOnly) => true,
        Some(rusqlite::ErrorCode::CannotOpen) => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .is_err_and(|e| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                )
            }),
        _ => false,
    }
}

fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// `file:PATH?immutable=1`, the path percent-encoded where SQLite's URI
/// syntax needs it (`?`, `#`, `%` and anything unusual).
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut uri = String::from("file:");
    for &b in absolute.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
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

/// How long a writer waits for another connection's write to end before
/// the database counts as busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The busy handler: SQLite's own (`busy_timeout`) sleeps 1, 2, 5, 10, ...
/// up to 100 ms between tries, so a scheduler commit that meets the span
/// writer's short transaction (a millisecond or two) would often sleep far
/// longer than the lock is held; a wait doubling from 50 us still
/// overshot the end of the transaction by about as much again (strace: 39
/// waits of 3.2 ms in a run of 10,000 noop tasks). So: a try every 50 us
/// for the first 5 ms, then every 2 ms; `tries` counts from 0 for each
/// busy statement.
fn wait_for_writer(tries: i32) -> bool {
    const SHORT: Duration = Duration::from_micros(50);
    const SHORT_TRIES: u32 = 100;
    const LONG: Duration = Duration::from_millis(2);
    let tries = u32::try_from(tries).unwrap_or(0);
    let (wait, waited) = if tries < SHORT_TRIES {
        (SHORT, SHORT * tries)
    } else {
        (LONG, SHORT * SHORT_TRIES + LONG * (tries - SHORT_TRIES))
    };
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(wait);
    true
}

impl Checkpoint {
    /// Opens (creating and migrating it if needed) the checkpoint for
    /// recording runs. Without write access to it, the error says so and
    /// which commands work anyway.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        Checkpoint::open_writable(path).map_err(|e| match e {
            CheckpointError::Open { source, .. } | CheckpointError::Sql(source)
                if cannot_write(&source, path) =>
            {
                CheckpointError::ReadOnly {
                    path: path.display().to_string(),
                    source,
                }
            }
            other => other,
        })
    }

    fn open_writable(path: &Path) -> Result<Self, CheckpointError> {
        let open_err = |source| CheckpointError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_handler(Some(wait_for_writer)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrate(&mut conn)?;
        Ok(Checkpoint {
            conn,
            schema: MIGRATIONS.len() as i64,
        })
    }

    /// Opens an existing checkpoint for reading only: what the inspection
    /// commands (`runs`, `show`, `trace`) need, which must work on a state
    /// dir the user cannot write (another user's, an archive, read-only
    /// media). Nothing is created, migrated or changed. `None` for a file
    /// that holds no schema yet (created by a process killed before its
    /// first commit): it has no runs.
    ///
    /// SQLite reads a WAL database without write access if the `-shm` and
    /// `-wal` files exist (a process has it open, or was killed), or with
    /// the `immutable` flag, which reads the main file alone and takes no
    /// locks. The first is tried first; the second only when there is no
    /// `-wal` file with changes in it (the last connection to close
    /// checkpoints the WAL into the main file and removes both files, so
    /// a cleanly closed checkpoint is whole in `flux.db`).
    pub fn open_read_only(path: &Path) -> Result<Option<Self>, CheckpointError> {
        let open_err = |source| CheckpointError::Open {
            path: path.display().to_string(),
            source,
        };
        let shared = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(10))?;
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            Ok((conn, version))
        });
        let (conn, version) = match shared {
            Ok(opened) => opened,
            Err(e) if cannot_share(&e) => {
                let wal = wal_path(path);
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    return Err(CheckpointError::UnreadableWal {
                        path: path.display().to_string(),
                        wal: wal.display().to_string(),
                    });
                }
                let conn = Connection::open_with_flags(
                    immutable_uri(path),
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_URI
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(open_err)?;
                let version: i64 = conn
                    .query_row("PRAGMA user_version", [], |r| r.get(0))
                    .map_err(open_err)?;
                (conn, version)
            }
            Err(e) => return Err(open_err(e)),
        };
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(CheckpointError::TooNew {
                found: version,
                supported,
            });
        }
        if version == 0 {
            return Ok(None);
        }
        Ok(Some(Checkpoint {
            conn,
            schema: version,
        }))
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
        target: &str,
        tasks: &[(String, String, String)],
    ) -> Result<(), CheckpointError> {
        let tx = self.conn.transaction()?;
        let at = now();
        tx.execute(
            "INSERT INTO runs (run_id, dag_name, dag_path, params_json, status, created_at, updated_at, target)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?5, ?6)",
            params![run_id, dag_name, dag_path, params.to_string(), at, target],
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
                Change::TraceStarted {
                    trace_id,
                    root_span_id,
                    resource_json,
                } => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO traces (trace_id, run_id, root_span_id, resource_json)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![trace_id, run_id, root_span_id, resource_json])?;
                }
                Change::AttemptStarted {
                    task_id,
                    attempt,
                    span,
                } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET status = 'running', attempts = ?3,
                             started_at = COALESCE(started_at, ?4), ended_at = NULL, error = NULL
                         WHERE run_id = ?1 AND task_id = ?2",
                    )?
                    .execute(params![run_id, task_id, attempt, at])?;
                    let start = span
                        .as_ref()
                        .map(|s| stored_nanos(run_id, task_id, s.start_unix_nano))
                        .transpose()?;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO attempts (run_id, task_id, attempt, status, started_at,
                             trace_id, task_span_id, span_id, span_start_unix_nano, task_type)
                         VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        run_id,
                        task_id,
                        attempt,
                        at,
                        span.as_ref().map(|s| &s.trace_id),
                        span.as_ref().map(|s| &s.task_span_id),
                        span.as_ref().map(|s| &s.span_id),
                        start,
                        span.as_ref().map(|s| &s.task_type)
                    ])?;
                }
                Change::AttemptEnded {
                    task_id,
                    attempt,
                    status,
                    error,
                    task_status,
                    output,
                    span,
                } => {
                    let end = span
                        .as_ref()
                        .map(|s| stored_nanos(run_id, task_id, s.end_unix_nano))
                        .transpose()?;
                    let task_span_end = span
                        .as_ref()
                        .and_then(|s| s.task_span_end_unix_nano)
                        .map(|t| stored_nanos(run_id, task_id, t))
                        .transpose()?;
                    tx.prepare_cached(
                        "UPDATE attempts SET status = ?4, ended_at = ?5, error = ?6,
                             span_end_unix_nano = ?7, span_status = ?8, span_error = ?9,
                             task_span_end_unix_nano = ?10,
                             task_span_status = CASE WHEN ?10 IS NULL THEN NULL ELSE ?11 END,
                             retry_delay_ms = ?12
                         WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3",
                    )?
                    .execute(params![
                        run_id,
                        task_id,
                        attempt,
                        status.as_str(),
                        at,
                        error,
                        end,
                        span.as_ref().and_then(|s| s.status),
                        span.as_ref().and_then(|s| s.error.as_ref()),
                        task_span_end,
                        task_status.as_str(),
                        span.as_ref().and_then(|s| s.retry_delay_ms)
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
                    task_span_end,
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
                    if let Some(end) = task_span_end {
                        let nanos = stored_nanos(run_id, task_id, end.end_unix_nano)?;
                        tx.prepare_cached(
                            "UPDATE attempts SET task_span_end_unix_nano = ?4, task_span_status = ?5
                             WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3",
                        )?
                        .execute(params![run_id, task_id, end.attempt, nanos, status.as_str()])?;
                    }
                }
                Change::TaskReset {
                    task_id,
                    kind,
                    definition_hash,
                } => {
                    tx.prepare_cached(
                        "UPDATE tasks SET status = 'pending', definition_hash = ?3, kind = ?4,
                             started_at = NULL, ended_at = NULL, error = NULL, output_json = NULL
                         WHERE run_id = ?1 AND task_id = ?2",
                    )?
                    .execute(params![
                        run_id,
                        task_id,
                        definition_hash,
                        kind
                    ])?;
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

    /// Records a run that happened elsewhere (a Step Functions execution)
    /// as it is known now: created at `created_at`, its tasks as `tasks`
    /// (`(id, kind, definition hash)`), all `pending` until
    /// [`Checkpoint::replace_run_state`] says otherwise.
    pub fn import_run(
        &mut self,
        run: &ImportedRun,
        tasks: &[(String, String, String)],
    ) -> Result<(), CheckpointError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO runs (run_id, dag_name, dag_path, params_json, status, created_at, updated_at, target)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?5, ?6)",
            params![
                run.run_id,
                run.dag_name,
                run.dag_path,
                run.params.to_string(),
                run.created_at,
                run.target
            ],
        )?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO tasks (run_id, task_id, position, kind, status, definition_hash)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
            )?;
            for (position, (task_id, kind, hash)) in tasks.iter().enumerate() {
                insert.execute(params![run.run_id, task_id, position as i64, kind, hash])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces what is known of a run that happens elsewhere with `state`,
    /// in one transaction: the run's status and end, each task's status,
    /// attempts, times and error, and the attempts themselves. Tasks the
    /// state does not name are left as they are.
    pub fn replace_run_state(
        &mut self,
        run_id: &str,
        state: &ObservedRun,
    ) -> Result<(), CheckpointError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE runs SET status = ?2, updated_at = ?3, ended_at = ?4, resume_count = ?5
             WHERE run_id = ?1",
            params![
                run_id,
                state.status.as_str(),
                now(),
                state.ended_at,
                state.resume_count
            ],
        )?;
        tx.execute("DELETE FROM attempts WHERE run_id = ?1", [run_id])?;
        {
            let mut task = tx.prepare(
                "UPDATE tasks SET status = ?3, attempts = ?4, started_at = ?5, ended_at = ?6, error = ?7
                 WHERE run_id = ?1 AND task_id = ?2",
            )?;
            let mut attempt = tx.prepare(
                "INSERT INTO attempts (run_id, task_id, attempt, status, started_at, ended_at, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for t in &state.tasks {
                task.execute(params![
                    run_id,
                    t.id,
                    t.status.as_str(),
                    t.attempts.len() as u32,
                    t.attempts.first().map(|a| &a.started_at),
                    t.ended_at,
                    t.error
                ])?;
                for a in &t.attempts {
                    attempt.execute(params![
                        run_id,
                        t.id,
                        a.attempt,
                        a.status,
                        a.started_at,
                        a.ended_at,
                        a.error
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces the spans stored for run `run_id` (a trace rebuilt from a
    /// Step Functions execution's history).
    pub fn replace_spans(
        &mut self,
        run_id: &str,
        spans: &[SpanRecord],
    ) -> Result<(), CheckpointError> {
        self.conn
            .execute("DELETE FROM spans WHERE run_id = ?1", [run_id])?;
        self.insert_spans(run_id, spans)
    }

    /// Runs that recorded run-wide external work `key` with `value`'s
    /// field `field` equal to `equals` (the run of an execution ARN).
    pub fn run_with_work(
        &self,
        key: &str,
        field: &str,
        equals: &str,
    ) -> Result<Option<String>, CheckpointError> {
        if self.schema < EXTERNAL_WORK_SCHEMA {
            return Ok(None);
        }
        Ok(self
            .conn
            .query_row(
                "SELECT run_id FROM external_work
                 WHERE task_id = '' AND key = ?1 AND json_extract(value_json, '$.' || ?2) = ?3
                 ORDER BY rowid LIMIT 1",
                params![key, field, equals],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The DAG file a run reads from now on (`resume --dag FILE`).
    pub fn set_dag_path(&mut self, run_id: &str, dag_path: &str) -> Result<(), CheckpointError> {
        self.conn.execute(
            "UPDATE runs SET dag_path = ?2 WHERE run_id = ?1",
            params![run_id, dag_path],
        )?;
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

    /// Records (or replaces) the piece of work `key` of task `task_id`
    /// (empty: the run's), committed when this returns.
    pub fn record_external_work(
        &mut self,
        run_id: &str,
        task_id: &str,
        key: &str,
        attempt: u32,
        value: &serde_json::Value,
    ) -> Result<(), CheckpointError> {
        self.conn.execute(
            "INSERT INTO external_work (run_id, task_id, key, attempt, value_json, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (run_id, task_id, key) DO UPDATE SET
                attempt = excluded.attempt, value_json = excluded.value_json,
                recorded_at = excluded.recorded_at",
            params![run_id, task_id, key, attempt, value.to_string(), now()],
        )?;
        Ok(())
    }

    /// The work run `run_id` started outside this process, in the order it
    /// was first recorded.
    pub fn external_work(&self, run_id: &str) -> Result<Vec<ExternalWork>, CheckpointError> {
        if self.schema < EXTERNAL_WORK_SCHEMA {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT task_id, key, attempt, value_json, recorded_at FROM external_work
             WHERE run_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            let value: String = r.get(3)?;
            Ok(ExternalWork {
                task_id: r.get(0)?,
                key: r.get(1)?,
                attempt: r.get(2)?,
                value: serde_json::from_str(&value).unwrap_or(serde_json::Value::Null),
                recorded_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn run(&self, run_id: &str) -> Result<RunRecord, CheckpointError> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM runs WHERE run_id = ?1", self.run_columns()),
                [run_id],
                run_from_row,
            )
            .optional()?
            .ok_or_else(|| CheckpointError::UnknownRun(run_id.to_string()))
    }

    /// Runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, CheckpointError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {} FROM runs ORDER BY created_at DESC, run_id DESC",
            self.run_columns()
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

impl Checkpoint {
    /// The columns of a [`RunRecord`]; a checkpoint read without being
    /// migrated from before targets were recorded ran everything locally.
    fn run_columns(&self) -> String {
        if self.schema < EXTERNAL_WORK_SCHEMA {
            format!("{RUN_COLUMNS}, 'local'")
        } else {
            format!("{RUN_COLUMNS}, target")
        }
    }
}

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
        target: r.get(9)?,
    })
}

/// The part of a [`SpanRecord`] kept as one JSON document (`detail_json`).
#[derive(Serialize)]
struct SpanDetailRef<'a> {
    kind: &'a str,
    status: &'a SpanStatus,
    attributes: &'a [(String, serde_json::Value)],
    events: &'a [SpanEvent],
    links: &'a [SpanLink],
    resource: &'a [(String, serde_json::Value)],
    scope: &'a str,
}

/// [`SpanDetailRef`] read back. The lists default to empty so that a row
/// written by a later release that drops an empty list still reads.
#[derive(Deserialize)]
struct SpanDetail {
    kind: String,
    status: SpanStatus,
    #[serde(default)]
    attributes: Vec<(String, serde_json::Value)>,
    #[serde(default)]
    events: Vec<SpanEvent>,
    #[serde(default)]
    links: Vec<SpanLink>,
    #[serde(default)]
    resource: Vec<(String, serde_json::Value)>,
    #[serde(default)]
    scope: String,
}

impl Checkpoint {
    /// Copies what the write-ahead log holds into the database file, as
    /// far as readers allow, without waiting for anyone (a passive
    /// checkpoint). The span writer calls it after its batches, so that
    /// the log's automatic checkpoint (run by whichever commit finds the
    /// log past 1000 pages) rarely falls on the scheduler's commits.
    pub fn checkpoint_log(&self) -> Result<(), CheckpointError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Stores finished spans of run `run_id`, all or none. A span already
    /// stored (same run, span id and end: an exporter that re-delivers a
    /// batch after a timeout) is left as it is, so delivery may repeat.
    pub fn insert_spans(
        &mut self,
        run_id: &str,
        spans: &[SpanRecord],
    ) -> Result<(), CheckpointError> {
        if spans.is_empty() {
            return Ok(());
        }
        // Everything but the inserts is done before the transaction: the
        // write lock it takes holds up the scheduler's own commits.
        let mut rows = Vec::with_capacity(spans.len());
        for span in spans {
            let invalid = |reason: String| CheckpointError::InvalidSpan {
                run_id: run_id.to_string(),
                trace_id: span.trace_id.clone(),
                span_id: span.span_id.clone(),
                reason,
            };
            // SQLite integers are signed; nanoseconds since 1970 fit
            // until 2262, and a time past that is a bug upstream.
            let nanos = |what: &str, t: u64| {
                i64::try_from(t).map_err(|_| invalid(format!("{what} {t} ns is out of range")))
            };
            let start = nanos("start", span.start_unix_nano)?;
            let end = nanos("end", span.end_unix_nano)?;
            let detail = serde_json::to_string(&SpanDetailRef {
                kind: &span.kind,
                status: &span.status,
                attributes: &span.attributes,
                events: &span.events,
                links: &span.links,
                resource: &span.resource,
                scope: &span.scope,
            })
            .map_err(|e| invalid(e.to_string()))?;
            rows.push((span, start, end, detail));
        }
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO spans (run_id, trace_id, span_id, parent_span_id, name,
                     start_unix_nano, end_unix_nano, detail_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (run_id, end_unix_nano, span_id) DO NOTHING",
            )?;
            for (span, start, end, detail) in rows {
                insert.execute(params![
                    run_id,
                    span.trace_id,
                    span.span_id,
                    span.parent_span_id,
                    span.name,
                    start,
                    end,
                    detail
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every span stored for run `run_id` (all its traces: the original
    /// run and each resume), ordered by start time, then by the order they
    /// were stored. An unknown run has none: callers that must tell the
    /// two apart ask [`Checkpoint::run`] first.
    /// `(trace_id, span_id)` of the root span of each of the run's traces,
    /// oldest first: what a resumed run links to, read without decoding
    /// every span.
    pub fn root_spans(&self, run_id: &str) -> Result<Vec<(String, String)>, CheckpointError> {
        if self.schema < SPANS_SCHEMA {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT trace_id, span_id FROM spans
             WHERE run_id = ?1 AND parent_span_id IS NULL
             ORDER BY start_unix_nano, rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The attributes of the run's root spans (one per trace: the run and
    /// each resume), a later trace's value replacing an earlier one's:
    /// what the run recorded about itself, such as the environment its
    /// kinds' preflight found. Empty for a run that was not traced.
    pub fn run_span_attributes(
        &self,
        run_id: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, CheckpointError> {
        if self.schema < SPANS_SCHEMA {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, trace_id, span_id, parent_span_id, name,
                    start_unix_nano, end_unix_nano, detail_json
             FROM spans WHERE run_id = ?1 AND parent_span_id IS NULL
             ORDER BY start_unix_nano, rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok(span_from_row(r)))?;
        let mut merged: Vec<(String, serde_json::Value)> = Vec::new();
        for row in rows {
            let (row, span_id, span) = row?;
            let span = span.map_err(|reason| CheckpointError::CorruptSpan {
                run_id: run_id.to_string(),
                row,
                span_id,
                reason,
            })?;
            for (key, value) in span.attributes {
                match merged.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = value,
                    None => merged.push((key, value)),
                }
            }
        }
        Ok(merged)
    }

    pub fn spans(&self, run_id: &str) -> Result<Vec<SpanRecord>, CheckpointError> {
        // A checkpoint from before spans were stored, read without being
        // migrated: its runs have none.
        if self.schema < SPANS_SCHEMA {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, trace_id, span_id, parent_span_id, name,
                    start_unix_nano, end_unix_nano, detail_json
             FROM spans WHERE run_id = ?1 ORDER BY start_unix_nano, rowid",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok(span_from_row(r)))?;
        let mut spans = Vec::new();
        for row in rows {
            let (row, span_id, span) = row?;
            spans.push(span.map_err(|reason| CheckpointError::CorruptSpan {
                run_id: run_id.to_string(),
                row,
                span_id,
                reason,
            })?);
        }
        // The task and attempt spans the span writer left out because the
        // attempts rows hold them. A stored row of the same span (one with
        // more in it: a retry event, events of its task kind) wins.
        let stored: std::collections::HashSet<(String, String)> = spans
            .iter()
            .map(|s| (s.trace_id.clone(), s.span_id.clone()))
            .collect();
        let mut rebuilt = self.rebuilt_spans(run_id)?;
        rebuilt.retain(|s| !stored.contains(&(s.trace_id.clone(), s.span_id.clone())));
        cover_children(&mut rebuilt, &spans);
        spans.extend(rebuilt);
        // Stable: spans that start together stay in the order they were
        // stored, then rebuilt ones (a task's before its first attempt's).
        spans.sort_by_key(|s| s.start_unix_nano);
        // The span writer stores the resource once per trace (with the
        // first span it keeps of it); every span of the trace has it.
        let mut resources: HashMap<String, Vec<(String, serde_json::Value)>> = HashMap::new();
        for span in spans.iter().filter(|span| !span.resource.is_empty()) {
            resources
                .entry(span.trace_id.clone())
                .or_insert_with(|| span.resource.clone());
        }
        for span in spans.iter_mut().filter(|span| span.resource.is_empty()) {
            if let Some(resource) = resources.get(&span.trace_id) {
                span.resource = resource.clone();
            }
        }
        Ok(spans)
    }
}

impl Checkpoint {
    /// The `task` and `attempt` spans of run `run_id` as its attempts rows
    /// record them (schema 5 on, traced runs only), ordered by start, a
    /// task's span before its first attempt's.
    ///
    /// An attempt's span is the attempt from the scheduler's start stamp
    /// to the end of its work. A task's span is one per trace (a resume
    /// opens a new one): from the start of its first attempt in that
    /// trace to the moment the scheduler ended it (its last attempt
    /// ended, or the run was cancelled while it waited to retry), with
    /// the task's status then. A span that never ended (the engine was
    /// killed) is not rebuilt, as such a span was never stored either.
    /// [`Checkpoint::spans`] merges them with the stored rows; on their
    /// own they let a test compare them with the rows the same spans make
    /// when stored (`FLUX_STORE_REBUILDABLE_SPANS=1`).
    pub fn rebuilt_spans(&self, run_id: &str) -> Result<Vec<SpanRecord>, CheckpointError> {
        if self.schema < REBUILT_SPANS_SCHEMA {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.task_id, a.attempt, a.error, a.trace_id, a.task_span_id, a.span_id,
                    a.span_start_unix_nano, a.span_end_unix_nano, a.span_status, a.span_error,
                    a.task_span_end_unix_nano, a.task_span_status, COALESCE(a.task_type, t.kind),
                    tr.root_span_id, tr.resource_json, a.retry_delay_ms
             FROM attempts a
             JOIN tasks t ON t.run_id = a.run_id AND t.task_id = a.task_id
             JOIN traces tr ON tr.trace_id = a.trace_id AND tr.run_id = a.run_id
             WHERE a.run_id = ?1 AND a.span_id IS NOT NULL
             ORDER BY a.span_start_unix_nano, t.position, a.attempt",
        )?;
        let rows = stmt.query_map([run_id], |r| Ok(attempt_span_row(r)))?;
        let mut resources: HashMap<String, Vec<(String, serde_json::Value)>> = HashMap::new();
        // Where each task span's record is in `spans`, by (trace, span id).
        let mut task_spans: HashMap<(String, String), usize> = HashMap::new();
        let mut spans: Vec<SpanRecord> = Vec::new();
        for row in rows {
            let row =
                row?.map_err(
                    |(task_id, attempt, reason)| CheckpointError::CorruptAttemptSpan {
                        run_id: run_id.to_string(),
                        task_id,
                        attempt,
                        reason,
                    },
                )?;
            if !resources.contains_key(&row.trace_id) {
                let resource: Vec<(String, serde_json::Value)> =
                    serde_json::from_str(&row.resource_json).map_err(|e| {
                        CheckpointError::CorruptAttemptSpan {
                            run_id: run_id.to_string(),
                            task_id: row.task_id.clone(),
                            attempt: row.attempt,
                            reason: format!("the resource of trace {}: {e}", row.trace_id),
                        }
                    })?;
                resources.insert(row.trace_id.clone(), resource);
            }
            let resource = resources[&row.trace_id].clone();
            let common = || -> Vec<(String, serde_json::Value)> {
                vec![
                    (attr::RUN_ID.to_string(), run_id.into()),
                    (attr::TASK_ID.to_string(), row.task_id.as_str().into()),
                    (attr::TASK_TYPE.to_string(), row.kind.as_str().into()),
                ]
            };
            let key = (row.trace_id.clone(), row.task_span_id.clone());
            let task_index = *task_spans.entry(key).or_insert_with(|| {
                spans.push(SpanRecord {
                    trace_id: row.trace_id.clone(),
                    span_id: row.task_span_id.clone(),
                    parent_span_id: Some(row.root_span_id.clone()),
                    name: span_name::task(&row.task_id),
                    kind: "internal".into(),
                    start_unix_nano: row.start,
                    // Not ended (yet): 0 until a row ends it, dropped if none.
                    end_unix_nano: 0,
                    status: SpanStatus::Unset,
                    attributes: common(),
                    events: Vec::new(),
                    links: Vec::new(),
                    resource: resource.clone(),
                    scope: crate::telemetry::SCOPE.to_string(),
                });
                spans.len() - 1
            });
            if let (Some(delay_ms), Some(at)) = (row.retry_delay_ms, row.end) {
                // As the scheduler's `retry` event on the task's span.
                spans[task_index].events.push(SpanEvent {
                    name: "retry".to_string(),
                    time_unix_nano: at,
                    attributes: vec![
                        ("level".to_string(), "INFO".into()),
                        ("target".to_string(), crate::telemetry::TRACE_TARGET.into()),
                        (attr::ATTEMPT.to_string(), i64::from(row.attempt).into()),
                        ("flux.retry_delay_ms".to_string(), delay_ms.into()),
                    ],
                });
            }
            if let (Some(end), Some(status)) = (row.task_span_end, row.task_span_status.as_deref())
            {
                let task = &mut spans[task_index];
                task.end_unix_nano = end;
                end_span_record(task, status, task_error(status, row.attempt), end);
            }
            let Some(end) = row.end else {
                continue;
            };
            let mut attributes = common();
            attributes.push((attr::ATTEMPT.to_string(), i64::from(row.attempt).into()));
            let mut attempt = SpanRecord {
                trace_id: row.trace_id.clone(),
                span_id: row.span_id.clone(),
                parent_span_id: Some(row.task_span_id.clone()),
                name: span_name::attempt(row.attempt),
                kind: "internal".into(),
                start_unix_nano: row.start,
                end_unix_nano: end,
                status: SpanStatus::Unset,
                attributes,
                events: Vec::new(),
                links: Vec::new(),
                resource,
                scope: crate::telemetry::SCOPE.to_string(),
            };
            if let Some(status) = row.span_status.as_deref() {
                let message = (status != "succeeded")
                    .then(|| row.span_error.or(row.error).unwrap_or_default());
                end_span_record(&mut attempt, status, message, end);
            }
            spans.push(attempt);
        }
        // A task span whose end no row records was still open when the
        // engine stopped.
        spans.retain(|s| s.end_unix_nano != 0);
        Ok(spans)
    }
}

/// What [`crate::scheduler`]'s `end_span` records on a span, on a rebuilt
/// one: `flux.status`, and the status; an error adds an `exception`
/// event as the span recorders make it from the event `end_span` emits
/// (its level and target, then the message).
fn end_span_record(span: &mut SpanRecord, status: &str, error: Option<String>, at: u64) {
    span.attributes
        .push((attr::STATUS.to_string(), status.into()));
    match error {
        None => span.status = SpanStatus::Ok,
        Some(message) => {
            span.events.push(SpanEvent {
                name: "exception".to_string(),
                time_unix_nano: at,
                attributes: vec![
                    ("level".to_string(), "INFO".into()),
                    ("target".to_string(), crate::telemetry::TRACE_TARGET.into()),
                    ("exception.message".to_string(), message.as_str().into()),
                ],
            });
            span.status = SpanStatus::Error { message };
        }
    }
}

/// A rebuilt task span covers its children that were stored with the
/// recorder's own times (taken a few microseconds from the scheduler's).
fn cover_children(rebuilt: &mut [SpanRecord], stored: &[SpanRecord]) {
    let mut by_id: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    for child in stored {
        if let Some(parent) = &child.parent_span_id {
            let slot = by_id
                .entry((child.trace_id.as_str(), parent.as_str()))
                .or_insert((child.start_unix_nano, child.end_unix_nano));
            slot.0 = slot.0.min(child.start_unix_nano);
            slot.1 = slot.1.max(child.end_unix_nano);
        }
    }
    for span in rebuilt {
        if let Some((start, end)) = by_id.get(&(span.trace_id.as_str(), span.span_id.as_str())) {
            span.start_unix_nano = span.start_unix_nano.min(*start);
            span.end_unix_nano = span.end_unix_nano.max(*end);
        }
    }
}

/// An attempts row with its span columns.
struct AttemptSpanRow {
    task_id: String,
    attempt: u32,
    error: Option<String>,
    trace_id: String,
    task_span_id: String,
    span_id: String,
    start: u64,
    end: Option<u64>,
    span_status: Option<String>,
    span_error: Option<String>,
    task_span_end: Option<u64>,
    task_span_status: Option<String>,
    kind: String,
    root_span_id: String,
    resource_json: String,
    retry_delay_ms: Option<i64>,
}

/// An attempts row of [`Checkpoint::rebuilt_spans`]'s query, or (task,
/// attempt, why it does not read).
fn attempt_span_row(r: &rusqlite::Row) -> Result<AttemptSpanRow, (String, u32, String)> {
    let task_id: String = r.get(0).unwrap_or_else(|_| "(unreadable)".to_string());
    let attempt: u32 = r.get(1).unwrap_or(0);
    let fail = |reason: String| (task_id.clone(), attempt, reason);
    let column =
        |i: usize, name: &str, e: rusqlite::Error| fail(format!("column {i} ({name}): {e}"));
    let nanos = |i: usize, name: &str| -> Result<Option<u64>, (String, u32, String)> {
        let v: Option<i64> = r.get(i).map_err(|e| column(i, name, e))?;
        v.map(|v| u64::try_from(v).map_err(|_| fail(format!("{name} is negative ({v})"))))
            .transpose()
    };
    Ok(AttemptSpanRow {
        task_id: task_id.clone(),
        attempt,
        error: r.get(2).map_err(|e| column(2, "error", e))?,
        trace_id: r.get(3).map_err(|e| column(3, "trace_id", e))?,
        task_span_id: r.get(4).map_err(|e| column(4, "task_span_id", e))?,
        span_id: r.get(5).map_err(|e| column(5, "span_id", e))?,
        start: nanos(6, "span_start_unix_nano")?
            .ok_or_else(|| fail("span_start_unix_nano is missing".to_string()))?,
        end: nanos(7, "span_end_unix_nano")?,
        span_status: r.get(8).map_err(|e| column(8, "span_status", e))?,
        span_error: r.get(9).map_err(|e| column(9, "span_error", e))?,
        task_span_end: nanos(10, "task_span_end_unix_nano")?,
        task_span_status: r.get(11).map_err(|e| column(11, "task_span_status", e))?,
        kind: r.get(12).map_err(|e| column(12, "kind", e))?,
        root_span_id: r.get(13).map_err(|e| column(13, "root_span_id", e))?,
        resource_json: r.get(14).map_err(|e| column(14, "resource_json", e))?,
        retry_delay_ms: r.get(15).map_err(|e| column(15, "retry_delay_ms", e))?,
    })
}

/// A `spans` row as (rowid, span id, the span or why it does not read),
/// so that a bad row is reported by name instead of as a bare SQL type
/// error.
fn span_from_row(r: &rusqlite::Row) -> (i64, String, Result<SpanRecord, String>) {
    let row: i64 = r.get(0).unwrap_or(-1);
    let span_id = r
        .get::<_, String>(2)
        .unwrap_or_else(|_| "(unreadable)".to_string());
    let span = (|| {
        let column = |i: usize, name: &str, e: rusqlite::Error| format!("column {i} ({name}): {e}");
        let nanos = |i: usize, name: &str| -> Result<u64, String> {
            let v: i64 = r.get(i).map_err(|e| column(i, name, e))?;
            u64::try_from(v).map_err(|_| format!("{name} is negative ({v})"))
        };
        let detail: String = r.get(7).map_err(|e| column(7, "detail_json", e))?;
        let detail: SpanDetail =
            serde_json::from_str(&detail).map_err(|e| format!("detail_json: {e}"))?;
        Ok(SpanRecord {
            trace_id: r.get(1).map_err(|e| column(1, "trace_id", e))?,
            span_id: r.get(2).map_err(|e| column(2, "span_id", e))?,
            parent_span_id: r.get(3).map_err(|e| column(3, "parent_span_id", e))?,
            name: r.get(4).map_err(|e| column(4, "name", e))?,
            kind: detail.kind,
            start_unix_nano: nanos(5, "start_unix_nano")?,
            end_unix_nano: nanos(6, "end_unix_nano")?,
            status: detail.status,
            attributes: detail.attributes,
            events: detail.events,
            links: detail.links,
            resource: detail.resource,
            scope: detail.scope,
        })
    })();
    (row, span_id, span)
}

/// A span time as SQLite's signed integer: nanoseconds since 1970 fit
/// until 2262, and a time past that is a bug upstream.
fn stored_nanos(run_id: &str, task_id: &str, nanos: u64) -> Result<i64, CheckpointError> {
    i64::try_from(nanos).map_err(|_| CheckpointError::InvalidSpanTime {
        run_id: run_id.to_string(),
        task_id: task_id.to_string(),
        nanos,
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
        cp.create_run(
            "r1",
            "d",
            "/d.toml",
            &serde_json::json!({}),
            "local",
            &tasks,
        )
        .unwrap();
        cp.apply(
            "r1",
            &[
                Change::AttemptStarted {
                    task_id: "a".into(),
                    attempt: 1,
                    span: None,
                },
                Change::AttemptEnded {
                    task_id: "a".into(),
                    attempt: 1,
                    status: AttemptStatus::Succeeded,
                    error: None,
                    task_status: TaskStatus::Succeeded,
                    output: Some("{\"n\":1}".into()),
                    span: None,
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

    fn span(trace: &str, id: &str, parent: Option<&str>, name: &str, start: u64) -> SpanRecord {
        SpanRecord {
            trace_id: trace.repeat(32 / trace.len()),
            span_id: id.repeat(16 / id.len()),
            parent_span_id: parent.map(|p| p.repeat(16 / p.len())),
            name: name.to_string(),
            kind: "internal".to_string(),
            start_unix_nano: start,
            end_unix_nano: start + 1_500_000_000,
            status: SpanStatus::Error {
                message: "exit code 3 <&>".to_string(),
            },
            attributes: vec![
                ("flux.task_id".to_string(), serde_json::json!("load")),
                ("flux.attempt".to_string(), serde_json::json!(2)),
                ("tags".to_string(), serde_json::json!(["a", true, 1.5])),
            ],
            events: vec![SpanEvent {
                name: "exception".to_string(),
                time_unix_nano: start + 5,
                attributes: vec![(
                    "exception.message".to_string(),
                    serde_json::json!("exit code 3 <&>"),
                )],
            }],
            links: vec![SpanLink {
                trace_id: "f".repeat(32),
                span_id: "e".repeat(16),
                attributes: vec![],
            }],
            resource: vec![("service.name".to_string(), serde_json::json!("flux-engine"))],
            scope: "flux-engine".to_string(),
        }
    }

    #[test]
    fn spans_read_back_as_stored_ordered_by_start_and_kept_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        let mut cp = Checkpoint::open(&path).unwrap();
        // Stored out of start order, and a second run's span in between.
        let late = span("a", "2", Some("1"), "task load", 1_700_000_000_000_000_300);
        let root = span("a", "1", None, "run d", 1_700_000_000_000_000_100);
        let other = span("b", "3", None, "run other", 1_700_000_000_000_000_200);
        cp.insert_spans("r1", &[late.clone(), root.clone()])
            .unwrap();
        cp.insert_spans("r2", std::slice::from_ref(&other)).unwrap();
        drop(cp);
        let cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.spans("r1").unwrap(), vec![root, late]);
        assert_eq!(cp.spans("r2").unwrap(), vec![other]);
        assert!(cp.spans("nope").unwrap().is_empty());
    }

    #[test]
    fn a_resource_stored_with_one_span_of_a_trace_reads_back_on_all_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::open(&dir.path().join("flux.db")).unwrap();
        let without = |mut s: SpanRecord| {
            s.resource.clear();
            s
        };
        let mut described = span("a", "2", Some("1"), "task t", 300);
        described.resource = vec![
            ("host.name".to_string(), serde_json::json!("h1")),
            ("service.name".to_string(), serde_json::json!("flux-engine")),
        ];
        // Stored first but started last; the trace's other spans are
        // stored in a later batch without it.
        cp.insert_spans("r1", std::slice::from_ref(&described))
            .unwrap();
        cp.insert_spans(
            "r1",
            &[
                without(span("a", "1", None, "run d", 100)),
                without(span("a", "3", Some("2"), "attempt 1", 400)),
                // Another trace of the run (a resume) with a resource of its own.
                span("b", "4", None, "run d", 500),
            ],
        )
        .unwrap();
        let stored = cp.spans("r1").unwrap();
        let resources: Vec<(&str, &[(String, serde_json::Value)])> = stored
            .iter()
            .map(|s| (&s.span_id[..1], s.resource.as_slice()))
            .collect();
        let own = span("b", "4", None, "run d", 500).resource;
        assert_eq!(
            resources,
            [
                ("1", described.resource.as_slice()),
                ("2", described.resource.as_slice()),
                ("3", described.resource.as_slice()),
                ("4", own.as_slice()),
            ]
        );
    }

    #[test]
    fn a_redelivered_batch_adds_no_spans() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::open(&dir.path().join("flux.db")).unwrap();
        let batch = vec![
            span("a", "1", None, "run d", 100),
            span("a", "2", Some("1"), "task t", 200),
        ];
        cp.insert_spans("r1", &batch).unwrap();
        cp.insert_spans("r1", &batch).unwrap();
        // A batch overlapping the first: only the new span is added.
        cp.insert_spans(
            "r1",
            &[
                batch[1].clone(),
                span("a", "3", Some("2"), "attempt 1", 300),
            ],
        )
        .unwrap();
        let stored = cp.spans("r1").unwrap();
        let ids: Vec<&str> = stored.iter().map(|s| &s.span_id[..1]).collect();
        assert_eq!(ids, ["1", "2", "3"]);
    }

    #[test]
    fn a_span_that_cannot_be_stored_stores_nothing_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::open(&dir.path().join("flux.db")).unwrap();
        let mut bad = span("a", "2", Some("1"), "task t", 200);
        bad.end_unix_nano = u64::MAX;
        let err = cp
            .insert_spans("r1", &[span("a", "1", None, "run d", 100), bad])
            .unwrap_err();
        assert!(
            matches!(&err, CheckpointError::InvalidSpan { span_id, .. } if span_id == &"2".repeat(16)),
            "{err}"
        );
        assert!(cp.spans("r1").unwrap().is_empty());
    }

    #[test]
    fn root_spans_are_the_roots_of_the_runs_traces_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::open(&dir.path().join("flux.db")).unwrap();
        cp.insert_spans(
            "r1",
            &[
                span("b", "20", None, "run d", 200),
                span("b", "21", Some("20"), "task t", 210),
                span("a", "10", None, "run d", 100),
            ],
        )
        .unwrap();
        cp.insert_spans("r2", &[span("c", "30", None, "run e", 50)])
            .unwrap();
        // span() writes ids at their full hex length by repeating them.
        assert_eq!(
            cp.root_spans("r1").unwrap(),
            [
                ("a".repeat(32), "10".repeat(8)),
                ("b".repeat(32), "20".repeat(8))
            ]
        );
        assert!(cp.root_spans("nope").unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_span_row_is_an_error_naming_the_run_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        let mut cp = Checkpoint::open(&path).unwrap();
        cp.insert_spans("r1", &[span("a", "1", None, "run d", 100)])
            .unwrap();
        drop(cp);
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE spans SET detail_json = '{not json'", [])
            .unwrap();
        drop(conn);
        let cp = Checkpoint::open(&path).unwrap();
        let err = cp.spans("r1").unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, CheckpointError::CorruptSpan { row: 1, .. }),
            "{text}"
        );
        assert!(text.contains("`r1`") && text.contains("row 1"), "{text}");

        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE spans SET detail_json = '{\"kind\":\"internal\",\"status\":{\"code\":\"ok\"}}', start_unix_nano = -5",
            [],
        )
        .unwrap();
        drop(conn);
        let err = Checkpoint::open(&path).unwrap().spans("r1").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }

    #[test]
    fn migrating_a_version_2_database_keeps_its_spans_their_order_and_the_no_op_redelivery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        // A database as the release with traces left it: migrations 1 and 2,
        // spans stored by the code of that release (the same columns).
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        let stored = [
            span("a", "1", None, "run d", 100),
            span("a", "2", Some("1"), "task t", 100),
            span("a", "3", Some("2"), "attempt 1", 50),
        ];
        for s in &stored {
            conn.execute(
                "INSERT INTO spans (run_id, trace_id, span_id, parent_span_id, name,
                     start_unix_nano, end_unix_nano, detail_json)
                 VALUES ('r1', ?1, ?2, ?3, ?4, ?5, ?6, '{\"kind\":\"internal\",\"status\":{\"code\":\"unset\"}}')",
                params![
                    s.trace_id,
                    s.span_id,
                    s.parent_span_id,
                    s.name,
                    s.start_unix_nano as i64,
                    s.end_unix_nano as i64
                ],
            )
            .unwrap();
        }
        drop(conn);

        let mut cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.schema_version().unwrap(), MIGRATIONS.len() as i64);
        // By start, then in the order stored: attempt (50), run, task.
        let names: Vec<String> = cp
            .spans("r1")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["attempt 1", "run d", "task t"]);
        // A migrated span delivered again is still a no-op; a new one is not.
        cp.insert_spans(
            "r1",
            &[
                stored[1].clone(),
                span("a", "4", Some("2"), "attempt 2", 70),
            ],
        )
        .unwrap();
        let names: Vec<String> = cp
            .spans("r1")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["attempt 1", "attempt 2", "run d", "task t"]);
    }

    #[test]
    fn migrating_a_version_1_database_keeps_its_runs_and_adds_spans() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        // A database as the first release left it: migration 1 only.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO runs (run_id, dag_name, dag_path, params_json, status, created_at, updated_at, resume_count)
             VALUES ('old', 'd', '/d.toml', '{\"k\":\"v\"}', 'failed', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z', 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO tasks (run_id, task_id, position, kind, status, attempts, definition_hash, error)
             VALUES ('old', 't', 0, 'shell', 'failed', 2, 'h', 'boom')",
            [],
        )
        .unwrap();
        drop(conn);

        let mut cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let run = cp.run("old").unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.resume_count, 1);
        assert_eq!(run.params, serde_json::json!({"k": "v"}));
        let tasks = cp.tasks("old").unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].attempts, 2);
        assert_eq!(tasks[0].error.as_deref(), Some("boom"));
        assert!(cp.spans("old").unwrap().is_empty());
        let s = span("a", "1", None, "run d", 100);
        cp.insert_spans("old", std::slice::from_ref(&s)).unwrap();
        assert_eq!(cp.spans("old").unwrap(), vec![s]);
    }

    /// A run of tasks `a` to `e` (kind `shell`) with its trace `ab..`,
    /// root span `01..` and resource `service.name = svc`.
    fn traced_run(cp: &mut Checkpoint) {
        let tasks: Vec<(String, String, String)> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|t| (t.to_string(), "shell".to_string(), "h".to_string()))
            .collect();
        cp.create_run(
            "r1",
            "d",
            "/d.toml",
            &serde_json::json!({}),
            "local",
            &tasks,
        )
        .unwrap();
        cp.apply(
            "r1",
            &[Change::TraceStarted {
                trace_id: "ab".repeat(16),
                root_span_id: "01".repeat(8),
                resource_json: r#"[["service.name","svc"]]"#.to_string(),
            }],
        )
        .unwrap();
    }

    fn started(task: &str, attempt: u32, task_span: &str, span: &str, start: u64) -> Change {
        Change::AttemptStarted {
            task_id: task.to_string(),
            attempt,
            span: Some(AttemptSpanStart {
                trace_id: "ab".repeat(16),
                task_type: "shell".to_string(),
                task_span_id: task_span.repeat(8),
                span_id: span.repeat(8),
                start_unix_nano: start,
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ended(
        task: &str,
        attempt: u32,
        status: AttemptStatus,
        error: Option<&str>,
        task_status: TaskStatus,
        end: u64,
        span_status: Option<&'static str>,
        span_error: Option<&str>,
        task_span_end: Option<u64>,
    ) -> Change {
        Change::AttemptEnded {
            task_id: task.to_string(),
            attempt,
            status,
            error: error.map(str::to_string),
            task_status,
            output: None,
            span: Some(AttemptSpanEnd {
                end_unix_nano: end,
                status: span_status,
                error: span_error.map(str::to_string),
                task_span_end_unix_nano: task_span_end,
                retry_delay_ms: None,
            }),
        }
    }

    /// A span as the checkpoint rebuilds it, written out by hand.
    #[allow(clippy::too_many_arguments)]
    fn expected(
        id: &str,
        parent: &str,
        name: &str,
        start: u64,
        end: u64,
        attributes: serde_json::Value,
        error: Option<&str>,
        status_set: bool,
    ) -> SpanRecord {
        let attributes = attributes
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| (kv[0].as_str().unwrap().to_string(), kv[1].clone()))
            .collect();
        SpanRecord {
            trace_id: "ab".repeat(16),
            span_id: id.repeat(8),
            parent_span_id: Some(parent.repeat(8)),
            name: name.to_string(),
            kind: "internal".to_string(),
            start_unix_nano: start,
            end_unix_nano: end,
            status: match (status_set, error) {
                (false, _) => SpanStatus::Unset,
                (true, None) => SpanStatus::Ok,
                (true, Some(m)) => SpanStatus::Error {
                    message: m.to_string(),
                },
            },
            attributes,
            events: error
                .filter(|_| status_set)
                .map(|m| SpanEvent {
                    name: "exception".to_string(),
                    time_unix_nano: end,
                    attributes: vec![
                        ("level".to_string(), serde_json::json!("INFO")),
                        (
                            "target".to_string(),
                            serde_json::json!("flux_engine::trace"),
                        ),
                        ("exception.message".to_string(), serde_json::json!(m)),
                    ],
                })
                .into_iter()
                .collect(),
            links: vec![],
            resource: vec![("service.name".to_string(), serde_json::json!("svc"))],
            scope: "flux-engine".to_string(),
        }
    }

    #[test]
    fn task_and_attempt_spans_are_rebuilt_from_the_attempts_rows() {
        use AttemptStatus as A;
        use TaskStatus as T;
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::open(&dir.path().join("flux.db")).unwrap();
        traced_run(&mut cp);
        cp.apply(
            "r1",
            &[
                // a: fails for good; the scheduler's note is not in its span.
                started("a", 1, "0a", "1a", 1000),
                // b: started, then the engine was killed.
                started("b", 1, "0b", "1b", 1500),
            ],
        )
        .unwrap();
        cp.apply(
            "r1",
            &[ended(
                "a",
                1,
                A::Failed,
                Some("boom\n(not retried)"),
                T::Failed,
                2000,
                Some("failed"),
                Some("boom"),
                Some(2500),
            )],
        )
        .unwrap();
        // c: times out, then succeeds; its task span was stored (it has a
        // retry event) and wins over the rebuilt one.
        cp.apply("r1", &[started("c", 1, "0c", "1c", 3000)])
            .unwrap();
        cp.apply(
            "r1",
            &[ended(
                "c",
                1,
                A::Failed,
                Some("timed out"),
                T::Running,
                3500,
                Some("timed_out"),
                None,
                None,
            )],
        )
        .unwrap();
        cp.apply("r1", &[started("c", 2, "0c", "2c", 4000)])
            .unwrap();
        cp.apply(
            "r1",
            &[ended(
                "c",
                2,
                A::Succeeded,
                None,
                T::Succeeded,
                5000,
                Some("succeeded"),
                None,
                Some(5100),
            )],
        )
        .unwrap();
        let mut stored_c = span("ab", "0c", Some("01"), "task c", 2900);
        stored_c.resource.clear();
        cp.insert_spans("r1", std::slice::from_ref(&stored_c))
            .unwrap();
        // d: fails, and the run is cancelled while it waits to retry.
        cp.apply("r1", &[started("d", 1, "0d", "1d", 6000)])
            .unwrap();
        cp.apply(
            "r1",
            &[
                {
                    let mut failed = ended(
                        "d",
                        1,
                        A::Failed,
                        Some("no"),
                        T::Running,
                        6500,
                        Some("failed"),
                        None,
                        None,
                    );
                    if let Change::AttemptEnded {
                        span: Some(span), ..
                    } = &mut failed
                    {
                        span.retry_delay_ms = Some(60_000);
                    }
                    failed
                },
                Change::TaskEnded {
                    task_id: "d".into(),
                    status: T::Cancelled,
                    error: Some("cancelled while waiting to retry".into()),
                    task_span_end: Some(TaskSpanEnd {
                        attempt: 1,
                        end_unix_nano: 7000,
                    }),
                },
            ],
        )
        .unwrap();
        // e: its kind panicked, so its span ended without a status.
        cp.apply("r1", &[started("e", 1, "0e", "1e", 8000)])
            .unwrap();
        cp.apply(
            "r1",
            &[ended(
                "e",
                1,
                A::Failed,
                Some("the task kind crashed"),
                T::Failed,
                8100,
                None,
                None,
                Some(8200),
            )],
        )
        .unwrap();

        let run = |task: &str| {
            serde_json::json!([
                ["flux.run_id", "r1"],
                ["flux.task_id", task],
                ["flux.task_type", "shell"]
            ])
        };
        let with = |base: serde_json::Value, more: serde_json::Value| {
            let mut all = base.as_array().unwrap().clone();
            all.extend(more.as_array().unwrap().iter().cloned());
            serde_json::Value::Array(all)
        };
        let mut stored_c_read = stored_c.clone();
        stored_c_read.resource = vec![("service.name".to_string(), serde_json::json!("svc"))];
        let want = vec![
            expected(
                "0a",
                "01",
                "task a",
                1000,
                2500,
                with(run("a"), serde_json::json!([["flux.status", "failed"]])),
                Some("attempt 1 failed"),
                true,
            ),
            expected(
                "1a",
                "0a",
                "attempt 1",
                1000,
                2000,
                with(
                    run("a"),
                    serde_json::json!([["flux.attempt", 1], ["flux.status", "failed"]]),
                ),
                Some("boom"),
                true,
            ),
            stored_c_read,
            expected(
                "1c",
                "0c",
                "attempt 1",
                3000,
                3500,
                with(
                    run("c"),
                    serde_json::json!([["flux.attempt", 1], ["flux.status", "timed_out"]]),
                ),
                Some("timed out"),
                true,
            ),
            expected(
                "2c",
                "0c",
                "attempt 2",
                4000,
                5000,
                with(
                    run("c"),
                    serde_json::json!([["flux.attempt", 2], ["flux.status", "succeeded"]]),
                ),
                None,
                true,
            ),
            {
                let mut task_d = expected(
                    "0d",
                    "01",
                    "task d",
                    6000,
                    7000,
                    with(run("d"), serde_json::json!([["flux.status", "cancelled"]])),
                    Some("cancelled"),
                    true,
                );
                // Its retry, when attempt 1 ended, before the exception.
                task_d.events.insert(
                    0,
                    SpanEvent {
                        name: "retry".to_string(),
                        time_unix_nano: 6500,
                        attributes: vec![
                            ("level".to_string(), serde_json::json!("INFO")),
                            (
                                "target".to_string(),
                                serde_json::json!("flux_engine::trace"),
                            ),
                            ("flux.attempt".to_string(), serde_json::json!(1)),
                            ("flux.retry_delay_ms".to_string(), serde_json::json!(60_000)),
                        ],
                    },
                );
                task_d
            },
            expected(
                "1d",
                "0d",
                "attempt 1",
                6000,
                6500,
                with(
                    run("d"),
                    serde_json::json!([["flux.attempt", 1], ["flux.status", "failed"]]),
                ),
                Some("no"),
                true,
            ),
            expected(
                "0e",
                "01",
                "task e",
                8000,
                8200,
                with(run("e"), serde_json::json!([["flux.status", "failed"]])),
                Some("attempt 1 failed"),
                true,
            ),
            expected(
                "1e",
                "0e",
                "attempt 1",
                8000,
                8100,
                with(run("e"), serde_json::json!([["flux.attempt", 1]])),
                None,
                false,
            ),
        ];
        let got = cp.spans("r1").unwrap();
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
    }

    #[test]
    fn a_rebuilt_task_span_covers_its_stored_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::open(&dir.path().join("flux.db")).unwrap();
        traced_run(&mut cp);
        cp.apply("r1", &[started("a", 1, "0a", "1a", 1000)])
            .unwrap();
        cp.apply(
            "r1",
            &[ended(
                "a",
                1,
                AttemptStatus::Succeeded,
                None,
                TaskStatus::Succeeded,
                2000,
                Some("succeeded"),
                None,
                Some(2100),
            )],
        )
        .unwrap();
        // The attempt's span was stored (its kind added an event), with
        // the recorder's stamps, a little before the scheduler's.
        let mut attempt = span("ab", "1a", Some("0a"), "attempt 1", 990);
        attempt.end_unix_nano = 2200;
        cp.insert_spans("r1", &[attempt]).unwrap();
        let spans = cp.spans("r1").unwrap();
        let times: Vec<(&str, u64, u64)> = spans
            .iter()
            .map(|s| (s.name.as_str(), s.start_unix_nano, s.end_unix_nano))
            .collect();
        assert_eq!(times, [("attempt 1", 990, 2200), ("task a", 990, 2200)]);
    }

    #[test]
    fn an_unreadable_trace_resource_is_an_error_naming_the_run_and_task() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        let mut cp = Checkpoint::open(&path).unwrap();
        traced_run(&mut cp);
        cp.apply("r1", &[started("a", 1, "0a", "1a", 1000)])
            .unwrap();
        cp.conn
            .execute("UPDATE traces SET resource_json = '{not json'", [])
            .unwrap();
        let err = cp.spans("r1").unwrap_err();
        assert!(
            matches!(&err, CheckpointError::CorruptAttemptSpan { task_id, attempt: 1, .. } if task_id == "a"),
            "{err}"
        );
        assert!(err.to_string().contains("`r1`"), "{err}");
        cp.conn
            .execute_batch(
                "UPDATE traces SET resource_json = '[]'; UPDATE attempts SET span_start_unix_nano = -1;",
            )
            .unwrap();
        let err = cp.spans("r1").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
    }

    #[test]
    fn migrating_a_version_4_database_keeps_its_attempts_and_spans_and_rebuilds_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        // As the release before rebuilt spans left it: a traced run whose
        // task and attempt spans are rows.
        let conn = Connection::open(&path).unwrap();
        for migration in &MIGRATIONS[..4] {
            conn.execute_batch(migration).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (run_id, dag_name, dag_path, params_json, status, created_at, updated_at)
                 VALUES ('old', 'd', '/d.toml', '{}', 'failed', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z');
             INSERT INTO tasks (run_id, task_id, position, kind, status, attempts, definition_hash)
                 VALUES ('old', 'a', 0, 'shell', 'failed', 1, 'h');
             INSERT INTO attempts (run_id, task_id, attempt, status, started_at, ended_at, error)
                 VALUES ('old', 'a', 1, 'failed', '2026-01-01T00:00:00.100Z', '2026-01-01T00:00:00.900Z', 'boom');",
        )
        .unwrap();
        drop(conn);
        let mut cp = Checkpoint::open(&path).unwrap();
        let old = span("ab", "1a", Some("0a"), "attempt 1", 100);
        cp.insert_spans("old", std::slice::from_ref(&old)).unwrap();
        drop(cp);

        let mut cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let attempts = cp.attempts("old").unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].error.as_deref(), Some("boom"));
        // The old run's spans are its rows; nothing is rebuilt for it.
        assert!(cp.rebuilt_spans("old").unwrap().is_empty());
        assert_eq!(cp.spans("old").unwrap(), vec![old]);
        // A resume of it records its spans the new way.
        cp.apply(
            "old",
            &[
                Change::TraceStarted {
                    trace_id: "cd".repeat(16),
                    root_span_id: "02".repeat(8),
                    resource_json: "[]".to_string(),
                },
                Change::AttemptStarted {
                    task_id: "a".into(),
                    attempt: 2,
                    span: Some(AttemptSpanStart {
                        trace_id: "cd".repeat(16),
                        // Its kind changed since the run's first attempt.
                        task_type: "python".to_string(),
                        task_span_id: "0b".repeat(8),
                        span_id: "2b".repeat(8),
                        start_unix_nano: 5000,
                    }),
                },
            ],
        )
        .unwrap();
        cp.apply(
            "old",
            &[ended(
                "a",
                2,
                AttemptStatus::Succeeded,
                None,
                TaskStatus::Succeeded,
                6000,
                Some("succeeded"),
                None,
                Some(6000),
            )],
        )
        .unwrap();
        let names: Vec<String> = cp
            .spans("old")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["attempt 1", "task a", "attempt 2"]);
        let kinds: Vec<serde_json::Value> = cp
            .rebuilt_spans("old")
            .unwrap()
            .iter()
            .map(|s| s.attribute(attr::TASK_TYPE).cloned().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [serde_json::json!("python"), serde_json::json!("python")]
        );
    }

    #[test]
    fn ten_thousand_spans_of_a_run_are_read_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::open(&dir.path().join("flux.db")).unwrap();
        let spans: Vec<SpanRecord> = (0..10_000u64)
            .map(|i| {
                let mut s = span("a", "1", Some("1"), "attempt 1", 1_000_000 - i);
                s.span_id = format!("{i:016x}");
                s
            })
            .collect();
        cp.insert_spans("r1", &spans).unwrap();
        let read = cp.spans("r1").unwrap();
        assert_eq!(read.len(), 10_000);
        assert!(
            read.windows(2)
                .all(|w| w[0].start_unix_nano <= w[1].start_unix_nano)
        );
        let plan: Vec<String> = {
            let mut stmt = cp
                .conn
                .prepare(
                    "EXPLAIN QUERY PLAN SELECT rowid FROM spans WHERE run_id = ?1 ORDER BY start_unix_nano, rowid",
                )
                .unwrap();
            stmt.query_map(["r1"], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert!(
            plan.iter().any(|p| p.contains("spans_by_run"))
                && !plan.iter().any(|p| p.starts_with("SCAN spans")),
            "{plan:?}"
        );
    }
}

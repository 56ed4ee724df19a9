//! flux-engine's core: a DAG file becomes a validated graph, the scheduler
//! runs it through task kinds, and the checkpoint records every step.
//!
//! Data flows one way through a run, and the modules follow it:
//!
//! DAG file → [`dag`] (the model, and its loader that validates; errors as
//! [`diagnostic`]s, `${...}` via [`template`], each task's fields as its
//! kind's typed [`config`]) → [`run`] (start or resume) → [`scheduler`]
//! (parallelism, [`retry`], timeouts) → [`kind`] (the task kinds' contract)
//! → [`checkpoint`] (SQLite), laid out on disk by [`state_dir`] (a process
//! drives a run under a [`file_lock`]). Work a task starts outside the
//! process is recorded in the checkpoint through its [`work_journal`].
//!
//! The engine knows no AWS service and no concrete task kind: those live in
//! the `tasks` crate and are handed in through a [`kind::Registry`].

pub mod checkpoint;
pub mod config;
pub mod dag;
pub mod diagnostic;
pub mod file_lock;
pub mod kind;
pub mod read_limit;
pub mod retry;
pub mod run;
pub mod scheduler;
pub mod span_recorder;
pub mod spans;
pub mod state_dir;
pub mod telemetry;
pub mod template;
pub mod work_journal;

pub use checkpoint::{RunStatus, TaskStatus};
pub use config::TaskConfig;
pub use dag::Dag;
pub use kind::{Attempt, FieldError, Kind, Preflight, Registry, TaskAction, TaskFailure, TaskKind};
pub use run::{Engine, EngineError, RunOptions, RunOutcome};
pub use work_journal::WorkJournal;

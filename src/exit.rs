//! How a command that did not succeed ends: an exit code and the message
//! printed on stderr. Codes: 1 something failed, 2 the input is invalid
//! (130, interrupted, is a run's outcome, not an error).
//!
//! Which library error means which code is decided here, once, so that
//! commands can use `?` and every one of them says the same thing the
//! same way.

use std::fmt::Display;
use std::process::ExitCode;

use engine::EngineError;
use engine::checkpoint::CheckpointError;
use engine::diagnostic::Diagnostics;
use tasks::sql::SqlError;

/// An error that already carries its exit code and its message.
#[derive(Debug)]
pub struct Exit {
    code: u8,
    message: String,
}

const FAILED: u8 = 1;

impl Exit {
    /// What the error says.
    pub fn message(&self) -> &str {
        &self.message
    }
}
const INVALID: u8 = 2;

impl Exit {
    /// Exit code 1, `error: {e}`: something failed (a file, the
    /// checkpoint, a service) that the user's input did not cause.
    pub fn failure(e: impl Display) -> Exit {
        Exit::error(FAILED, e)
    }

    /// Exit code 2, `error: {e}`: the user asked for something that
    /// cannot be (an unknown run, an unreadable payload).
    pub fn invalid(e: impl Display) -> Exit {
        Exit::error(INVALID, e)
    }

    /// Exit code 2 with `report` printed as it is: a DAG's diagnostics,
    /// which start with the file and the place, not with `error:`.
    pub fn diagnostics(report: impl Display) -> Exit {
        Exit {
            code: INVALID,
            message: report.to_string(),
        }
    }

    fn error(code: u8, e: impl Display) -> Exit {
        Exit {
            code,
            message: format!("error: {e}"),
        }
    }

    /// Prints the message on stderr and gives the process's exit code.
    pub fn report(self) -> ExitCode {
        if !self.message.is_empty() {
            // After a hang-up there may be no terminal left to tell: the
            // exit code still says it.
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "{}", self.message);
        }
        ExitCode::from(self.code)
    }
}

impl From<Diagnostics> for Exit {
    fn from(e: Diagnostics) -> Exit {
        Exit::diagnostics(e)
    }
}

impl From<EngineError> for Exit {
    fn from(e: EngineError) -> Exit {
        match &e {
            EngineError::Checkpoint(CheckpointError::UnknownRun(_))
            | EngineError::Dag(_)
            | EngineError::UnknownTask { .. }
            | EngineError::NoRuns(_)
            | EngineError::OtherDag { .. }
            | EngineError::RunActive(_)
            | EngineError::StateDirBusy { .. }
            | EngineError::Preflight { .. } => Exit::invalid(e),
            _ => Exit::failure(e),
        }
    }
}

/// A run id that is not in the checkpoint is invalid input; anything else
/// the checkpoint says is a failure.
impl From<CheckpointError> for Exit {
    fn from(e: CheckpointError) -> Exit {
        match e {
            CheckpointError::UnknownRun(_) => Exit::invalid(e),
            e => Exit::failure(e),
        }
    }
}

impl From<SqlError> for Exit {
    fn from(e: SqlError) -> Exit {
        if e.is_user_error() {
            Exit::invalid(e)
        } else {
            Exit::failure(e)
        }
    }
}

impl From<tasks::sample_data::Error> for Exit {
    fn from(e: tasks::sample_data::Error) -> Exit {
        Exit::error(e.exit_code(), e)
    }
}

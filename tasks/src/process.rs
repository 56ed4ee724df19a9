//! Running a task's child process: in a process group of its own, with its
//! output in the attempt's log files, killed with its whole group if the
//! attempt is dropped (timeout, Ctrl-C). Shared by every kind whose local
//! backend runs a program (`shell`, `emr_spark`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use engine::TaskFailure;

/// Kills the process group when dropped, unless the command already ended.
struct ProcessGroup {
    pgid: Option<i32>,
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) takes no pointers, so no memory is at stake.
            // The negative pid addresses the group this attempt created
            // (`process_group(0)` makes its id the child's pid, which is
            // above 1) and nothing else.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

pub fn failure(context: &str, err: impl std::fmt::Display) -> TaskFailure {
    TaskFailure::new(format!("{context}: {err}"))
}

/// The last `lines` non-blank lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where an attempt's process writes.
pub struct Logs {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Logs {
    pub fn in_dir(dir: &Path) -> Self {
        Logs {
            stdout: dir.join("stdout.log"),
            stderr: dir.join("stderr.log"),
        }
    }
}

/// Runs `command` to its end with stdout and stderr in `logs`; a non-zero
/// exit becomes a failure whose first line is the last line of stderr.
pub async fn run_logged(
    mut command: tokio::process::Command,
    what: &str,
    logs: &Logs,
) -> Result<(), TaskFailure> {
    let stdout = std::fs::File::create(&logs.stdout)
        .map_err(|e| failure(&format!("cannot create {}", logs.stdout.display()), e))?;
    let stderr = std::fs::File::create(&logs.stderr)
        .map_err(|e| failure(&format!("cannot create {}", logs.stderr.display()), e))?;
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| failure(&format!("cannot start {what}"), e))?;
    let mut group = ProcessGroup {
        pgid: child.id().map(|pid| pid as i32),
    };
    let status = child
        .wait()
        .await
        .map_err(|e| failure(&format!("waiting for {what}"), e))?;
    group.pgid = None;
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "failed".to_string(),
    };
    // The first line is what tables show: make it the most telling one, the
    // last line of stderr; more context follows.
    let last = tail(&logs.stderr, 5);
    let mut message = format!("{what} failed with {how}");
    if let Some(final_line) = last.lines().last() {
        message.push_str(&format!(": {final_line}\nstderr ends with:\n{last}"));
    }
    message.push_str(&format!("\n(full log: {})", logs.stderr.display()));
    Err(TaskFailure::new(message))
}

//! Running a task's child process: in a process group of its own, with its
//! output in the attempt's log files. Shared by every kind whose local
//! backend runs a program (`shell`, `emr_spark`).
//!
//! Nothing an attempt starts outlives it: when the attempt ends (its
//! command exited, or the attempt was dropped on a timeout or a cancel),
//! its whole process group is killed, background processes included. And
//! nothing outlives the engine: a small reaper process, started with the
//! first task process and holding a pipe from the engine, kills the
//! groups of the attempts still running when the engine's end of the pipe
//! closes, which happens however the engine ends, SIGKILL included.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};

use engine::TaskFailure;

/// The reaper: reads `+PGID` when an attempt's group starts and `-PGID`
/// when it ended; at the end of its input (the engine is gone) it kills
/// the groups still listed. It ignores the signals that stop the engine
/// (Ctrl-C, a closed terminal) and runs in a group of its own, so that it
/// is there to clean up after it.
const REAPER: &str = r#"
trap '' INT HUP TERM QUIT
live=" "
while IFS= read -r line; do
  case $line in
    +*) live="$live${line#+} " ;;
    -*) g=${line#-}
        case $live in *" $g "*) live="${live%% $g *} ${live#* $g }" ;; esac ;;
  esac
done
for g in $live; do kill -KILL "-$g" 2>/dev/null; done
"#;

/// The engine's end of the reaper's pipe; `None` if it could not start.
fn reaper() -> &'static Mutex<Option<std::process::ChildStdin>> {
    static REAPER_INPUT: OnceLock<Mutex<Option<std::process::ChildStdin>>> = OnceLock::new();
    REAPER_INPUT.get_or_init(|| {
        let started = std::process::Command::new("sh")
            .arg("-c")
            .arg(REAPER)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        match started {
            // The child is never waited for: it ends after the engine,
            // and init reaps it.
            Ok(mut child) => Mutex::new(child.stdin.take()),
            Err(e) => {
                tracing::warn!(
                    "cannot start the process that stops task processes if flux-engine dies: {e}; they may outlive a killed engine"
                );
                Mutex::new(None)
            }
        }
    })
}

/// Tells the reaper about a group (`+`) or that it ended (`-`).
fn tell_reaper(sign: char, pgid: i32) {
    if let Ok(mut input) = reaper().lock()
        && let Some(pipe) = input.as_mut()
        && writeln!(pipe, "{sign}{pgid}").is_err()
    {
        *input = None;
    }
}

/// An attempt's process group: known to the reaper while it lives, killed
/// whole when dropped.
struct ProcessGroup {
    pgid: i32,
}

impl ProcessGroup {
    fn new(pgid: i32) -> Self {
        tell_reaper('+', pgid);
        ProcessGroup { pgid }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes no pointers, so no memory is at stake.
        // The negative pid addresses the group this attempt created
        // (`process_group(0)` makes its id the child's pid, which is above
        // 1) and nothing else; an empty group makes it fail with ESRCH.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
        tell_reaper('-', self.pgid);
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

/// Runs `command` to its end with stdout and stderr in `logs`, then ends
/// whatever it left in its process group; a non-zero exit becomes a
/// failure whose first line is the last line of stderr.
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
    let group = child.id().map(|pid| ProcessGroup::new(pid as i32));
    let status = child
        .wait()
        .await
        .map_err(|e| failure(&format!("waiting for {what}"), e))?;
    // What the command left running in its group ends with the attempt.
    drop(group);
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

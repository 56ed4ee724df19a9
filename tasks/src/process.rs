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
pub struct ProcessGroup {
    pgid: i32,
}

impl ProcessGroup {
    /// The group of a child that told the reaper itself (see
    /// [`tell_reaper_from_child`]).
    fn told(pgid: i32) -> Self {
        ProcessGroup { pgid }
    }
}

/// Makes `command`'s child tell the reaper `+PGID` itself, between fork
/// and exec, before any of its own code runs. Told by the engine after
/// `spawn` returned, a SIGKILL landing in between (a busy machine makes
/// that window milliseconds wide) left a group the reaper never heard of:
/// its processes outlived the engine. The child holds the pipe's write
/// end until its exec, so the reaper reads the line before it can see the
/// engine's end close.
fn tell_reaper_from_child(command: &mut std::process::Command) {
    use std::os::fd::AsRawFd;
    let Some(fd) = reaper()
        .lock()
        .ok()
        .and_then(|input| input.as_ref().map(|pipe| pipe.as_raw_fd()))
    else {
        return;
    };
    let announce = move || {
        // Only async-signal-safe calls between fork and exec: getpid and
        // write, into a buffer on the stack.
        // SAFETY: getpid(2) takes no arguments and cannot fail.
        let pid = unsafe { libc::getpid() };
        let mut line = [0u8; 16];
        let mut digits = [0u8; 12];
        let (mut n, mut count) = (pid as u32, 0);
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        line[0] = b'+';
        for i in 0..count {
            line[1 + i] = digits[count - 1 - i];
        }
        line[1 + count] = b'\n';
        // SAFETY: `line` is a live buffer of at least `count + 2` bytes;
        // `fd` is the reaper pipe's write end, inherited across the fork
        // (it closes at exec). A write of at most PIPE_BUF bytes to a
        // pipe is atomic, so it never interleaves with the engine's.
        unsafe {
            libc::write(fd, line.as_ptr().cast(), count + 2);
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls getpid and write, which are async-signal-safe; it allocates
    // nothing and takes no lock.
    unsafe {
        command.pre_exec(announce);
    }
}

/// Starts a command that runs outside any attempt (provisioning's
/// `python -m venv` and `pip install`) so that it cannot outlive the engine
/// either: in a process group of its own that the reaper knows of. The
/// group is killed whole when the returned [`ProcessGroup`] is dropped, so
/// keep it until the command has ended. Without this, a SIGKILLed engine
/// left pip downloading in the background.
pub fn spawn_reaped(
    command: &mut std::process::Command,
) -> std::io::Result<(std::process::Child, ProcessGroup)> {
    command.process_group(0);
    tell_reaper_from_child(command);
    let child = command.spawn()?;
    let group = ProcessGroup::told(child.id() as i32);
    Ok((child, group))
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
    let text = read_end(path, SUMMARY_BYTES);
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

/// How a failed command's output (the ends of its stdout and stderr)
/// becomes the first line of its failure.
pub type Summary = fn(&str, &str) -> Option<String>;

/// The last non-blank line of stderr: what a shell command's failure shows.
pub fn last_line(_stdout: &str, stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
}

/// The end of a log file, at most `max` bytes, as text.
pub fn read_end(path: &Path, max: u64) -> String {
    read_since(path, 0, max)
}

/// What a log file got from byte `from` on, at most its last `max` bytes,
/// as text.
pub fn read_since(path: &Path, from: u64, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if file
        .seek(SeekFrom::Start(from.max(len.saturating_sub(max))))
        .is_ok()
    {
        let _ = file.take(max).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// How much of stderr the summary reads: errors are at its end, and a
/// Spark log can be long.
const SUMMARY_BYTES: u64 = 256 * 1024;

/// Runs `command` to its end with stdout and stderr in `logs`, then ends
/// whatever it left in its process group; a non-zero exit becomes a
/// failure whose first line is the last line of stderr.
pub async fn run_logged(
    command: tokio::process::Command,
    what: &str,
    logs: &Logs,
) -> Result<(), TaskFailure> {
    run_watched(command, what, logs, last_line, std::future::pending()).await
}

/// [`run_logged`], with `summary` choosing the failure's first line from
/// the command's output, and `stop`: if it completes while the command
/// runs, the command's whole group is killed at once and the attempt fails
/// with the reason it gives (say, the server the command talks to died,
/// and the command would otherwise retry for minutes).
pub async fn run_watched(
    mut command: tokio::process::Command,
    what: &str,
    logs: &Logs,
    summary: Summary,
    stop: impl std::future::Future<Output = String>,
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
    tell_reaper_from_child(command.as_std_mut());
    let mut child = command
        .spawn()
        .map_err(|e| failure(&format!("cannot start {what}"), e))?;
    let group = child.id().map(|pid| ProcessGroup::told(pid as i32));
    let ended = tokio::select! {
        status = child.wait() => Ok(status),
        reason = stop => Err(reason),
    };
    // What the command left running in its group ends with the attempt
    // (the command too, if it was stopped).
    drop(group);
    let status = match ended {
        Ok(status) => status.map_err(|e| failure(&format!("waiting for {what}"), e))?,
        Err(reason) => {
            let _ = child.wait().await;
            let mut message = format!("{what} was stopped: {reason}");
            let last = tail(&logs.stderr, 5);
            if !last.is_empty() {
                message.push_str(&format!("\nstderr ends with:\n{last}"));
            }
            message.push_str(&format!("\n(full log: {})", logs.stderr.display()));
            return Err(TaskFailure::new(message));
        }
    };
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "failed".to_string(),
    };
    // The first line is what tables show: make it the most telling one
    // (`summary`'s pick from the output); the end of stderr follows.
    let last = tail(&logs.stderr, 5);
    let mut message = format!("{what} failed with {how}");
    let (out, err) = (
        read_end(&logs.stdout, SUMMARY_BYTES),
        read_end(&logs.stderr, SUMMARY_BYTES),
    );
    if let Some(headline) = summary(&out, &err) {
        message.push_str(&format!(": {headline}\nstderr ends with:\n{last}"));
    }
    message.push_str(&format!("\n(full log: {})", logs.stderr.display()));
    Err(TaskFailure::new(message))
}

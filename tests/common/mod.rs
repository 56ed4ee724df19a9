//! Helpers shared by the integration tests: they drive the real
//! `flux-engine` binary and read what it reports.
//!
//! Each test crate uses its own subset, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod aws_endpoint;
pub mod sfn_local;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flux-engine")
}

/// A command for the binary with an explicit state dir and no inherited
/// `FLUX_HOME` or log filter.
pub fn command(state: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--state-dir")
        .arg(state)
        .env_remove("FLUX_HOME")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Runs the binary to completion and returns what it printed.
pub fn flux(state: &Path, args: &[&str]) -> Output {
    command(state)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()))
}

/// Starts the binary in the background; its stdout and stderr go to
/// `log_prefix.stdout` / `log_prefix.stderr` so that a failing test can
/// show them.
pub fn spawn(state: &Path, args: &[&str], log_prefix: &Path) -> Child {
    let out = File::create(log_prefix.with_extension("stdout")).unwrap();
    let err = File::create(log_prefix.with_extension("stderr")).unwrap();
    command(state)
        .args(args)
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()))
}

/// The logs a [`spawn`]ed process wrote, for failure messages.
pub fn logs(log_prefix: &Path) -> String {
    let read = |ext| std::fs::read_to_string(log_prefix.with_extension(ext)).unwrap_or_default();
    format!(
        "--- stdout\n{}--- stderr\n{}",
        read("stdout"),
        read("stderr")
    )
}

/// Waits for `child` to exit, at most `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `done` every few milliseconds until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Parses a command's stdout as JSON, failing the test with its output
/// if it exited non-zero or printed something else.
pub fn json_of(output: &Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed with {}\n--- stdout\n{stdout}--- stderr\n{stderr}",
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{what} printed invalid JSON ({e}):\n{stdout}"))
}

/// `flux-engine show RUN --format json`.
pub fn show(state: &Path, run_id: &str) -> serde_json::Value {
    json_of(
        &flux(state, &["show", run_id, "--format", "json"]),
        &format!("show {run_id}"),
    )
}

/// `flux-engine runs --format json`, newest first.
pub fn runs(state: &Path) -> Vec<serde_json::Value> {
    match json_of(&flux(state, &["runs", "--format", "json"]), "runs") {
        serde_json::Value::Array(items) => items,
        other => panic!("runs --format json printed {other}, not a list"),
    }
}

/// The `tasks` of a `show` report, by id.
pub fn tasks_by_id(
    report: &serde_json::Value,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    report["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("show has no tasks list: {report}"))
        .iter()
        .map(|t| (t["id"].as_str().expect("task id").to_string(), t.clone()))
        .collect()
}

/// A string field of a JSON value, or "" if absent.
pub fn str_of<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}

/// The non-empty lines of a file (none if it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether process `pid` exists and is not a zombie. (Killed processes
/// whose parent died may stay zombies if PID 1 does not reap them; a
/// zombie runs no code, so it counts as gone.)
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised name.
        Ok(stat) => match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
        {
            Some(state) => state != "Z" && state != "X",
            None => true,
        },
        Err(_) => false,
    }
}

/// Whether process `pid` is alive and has `needle` in its environment.
///
/// PIDs are reused (often quickly: `pid_max` may be 32768), so a test that
/// checks or kills a process by a PID recorded earlier first makes sure the
/// PID still names a process of its own, e.g. with `needle` =
/// `FLUX_SCRATCH_DIR=<its state dir>`, which every task process inherits.
pub fn own_process_alive(pid: i32, needle: &str) -> bool {
    if !process_alive(pid) {
        return false;
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    environ
        .split(|&b| b == 0)
        .any(|var| String::from_utf8_lossy(var).starts_with(needle))
}

/// The live processes with `needle` in their environment (as
/// [`own_process_alive`] reads it), for finding what a run left behind.
pub fn processes_with(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32 && own_process_alive(pid, needle))
        .collect()
}

/// Processes (other than this one) with a file under `dir` open: every
/// task process, Spark job and Spark server of a run holds its logs there.
pub fn processes_holding(dir: &Path) -> Vec<i32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32)
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(&dir)))
        })
        .collect()
}

/// The environment entry every task process of a run in `state` has.
pub fn task_env_marker(state: &Path) -> String {
    format!("FLUX_SCRATCH_DIR={}", state.display())
}

/// Reads a PID written by a task (`echo $$ > file`), if the file is complete.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Sends SIGKILL to process group `pgid`, ignoring "no such process".
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: sends a signal to a process group a test task created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Sends `signal` to one process.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: sends a signal to a child process this test started.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// What a bounded run of the binary gave: its output, and its peak resident
/// memory (the kernel's `ru_maxrss`).
pub struct Measured {
    pub code: Option<i32>,
    pub stderr: String,
    pub peak_rss_mib: u64,
}

/// Runs `flux-engine ARGS` with its address space capped at 2 GiB (so that
/// a reader without a bound fails fast instead of taking the machine's
/// memory) and kills it after `limit`.
pub fn run_capped(state: &Path, args: &[&str], limit: Duration) -> Measured {
    use std::os::unix::process::CommandExt;
    let err_path = state.with_extension("capped.stderr");
    let mut cmd = command(state);
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    // SAFETY: the closure runs in the child between fork and exec, and
    // calls only setrlimit(2), which is async-signal-safe; the struct it
    // passes lives on the closure's stack for the call.
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Reaped by `wait4` below, which also gives its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("start flux-engine");
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + limit;
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; the pointers are to locals that
        // outlive the call.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(rc >= 0, "wait4: {}", std::io::Error::last_os_error());
        if rc == pid {
            break;
        }
        if Instant::now() >= deadline {
            // Not reaped yet, so the pid is still our child's.
            signal(pid as u32, libc::SIGKILL);
            // SAFETY: as above, blocking until the killed child is reaped.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            panic!(
                "flux-engine {} did not end in {limit:?}; stderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        !libc::WIFSIGNALED(status),
        "flux-engine {} was killed by signal {}:\n{stderr}",
        args.join(" "),
        libc::WTERMSIG(status)
    );
    Measured {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stderr,
        peak_rss_mib: usage.ru_maxrss as u64 / 1024,
    }
}

/// A fresh temporary folder, and paths inside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `name`, creating its folders.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

// ------------------------------------------------------------ exports

/// The repository's root, where `dags/` is.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The DAGs under dags/ that export (the others have shell tasks).
pub const EXPORTABLE: &[&str] = &["dags/rental.toml", "dags/sfn_example.toml"];

/// `flux-engine ARGS...` run from the repository's root.
pub fn run_in_root(s: &Scratch, args: &[&str]) -> Output {
    command(&s.path("state"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("start flux-engine")
}

/// `flux-engine export FLAG ARGS...` run from the repository's root.
pub fn export_with(s: &Scratch, flag: &str, args: &[&str]) -> Output {
    let mut all = vec!["export", flag];
    all.extend_from_slice(args);
    run_in_root(s, &all)
}

/// Bytes a command printed, as text.
/// The `python3` on `PATH`, as the interpreter itself rather than a shim,
/// when it has pyspark (the Python the Spark tests use); else why not.
/// Asked from the temporary folder: the repository's `pyspark/` folder of
/// jobs would pass for the package from its root.
pub fn python_with_pyspark() -> Result<PathBuf, String> {
    let found = Command::new("python3")
        .args(["-c", "import sys, pyspark; print(sys.executable)"])
        .current_dir(std::env::temp_dir())
        .output()
        .map_err(|e| format!("python3 does not start: {e}"))?;
    if !found.status.success() {
        return Err(text(&found.stderr));
    }
    Ok(PathBuf::from(text(&found.stdout).trim()))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ------------------------------------------------------------ checkers

/// A checker or server a test needs is missing: the test fails under
/// `FLUX_REQUIRE_CHECKERS=1` (CI), else it says SKIPPED loudly and the
/// caller returns.
pub fn checker_missing(message: &str) {
    if std::env::var_os("FLUX_REQUIRE_CHECKERS").is_some_and(|v| v == "1") {
        panic!("{message} (FLUX_REQUIRE_CHECKERS=1)");
    }
    eprintln!("\n!!!!!!!! {message}\n");
}

/// Checks `pages` in headless Chromium at 1280 and 390 px wide
/// (tests/browser/check_pages.py): screenshots go to `shots`; returns one
/// JSON object per page and width, or `None` (after [`checker_missing`])
/// when no browser can be started here.
pub fn check_in_browser(pages: &[&Path], shots: &Path) -> Option<Vec<serde_json::Value>> {
    let script = root().join("tests/browser/check_pages.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg("--out")
        .arg(shots)
        .args(pages)
        .output()
        .expect("python3 runs");
    match output.status.code() {
        Some(0) => {}
        Some(2) => {
            checker_missing(&format!(
                "the pages cannot be checked in a browser: {}",
                text(&output.stderr).trim()
            ));
            return None;
        }
        _ => panic!(
            "check_pages.py failed: {}\n{}",
            output.status,
            text(&output.stderr)
        ),
    }
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("check_pages.py prints JSON");
    assert_eq!(results.len(), pages.len() * 2, "{results:?}");
    Some(results)
}

/// What a person would see wrong in a page at one width: something wider
/// than the screen, or text drawn below 10 px. Empty when nothing.
pub fn page_problems(result: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let width = &result["width"];
    let page = result["page"].as_str().unwrap_or("?");
    if result["page_scroll_width"].as_f64() > result["viewport"].as_f64() {
        problems.push(format!(
            "{page} at {width} px scrolls sideways ({} px wide)",
            result["page_scroll_width"]
        ));
    }
    if result["overflow_count"].as_u64() != Some(0) {
        problems.push(format!(
            "{page} at {width} px: {} elements stick out of the screen, first {}",
            result["overflow_count"], result["overflow"]
        ));
    }
    if result["small_text_count"].as_u64() != Some(0) {
        problems.push(format!(
            "{page} at {width} px: {} texts drawn below 10 px, first {}",
            result["small_text_count"], result["small_text"]
        ));
    }
    problems
}

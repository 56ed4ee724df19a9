//! One warm local Spark for all the jobs of a process: a Spark Connect
//! server started on first use and reused by every later `emr_spark`
//! attempt.
//!
//! Why: a cold `spark-submit` spends 10–20 s starting a JVM and a
//! SparkContext before the job's first line runs, and the rental pipeline
//! has three such jobs. With the server warm, a job costs a Python start
//! (about a second) plus its own work. The scripts stay unchanged: each job
//! is still its own Python process (its own logs, exit code and process
//! group to kill), started by `connect_launcher.py` with `SPARK_REMOTE`
//! set, so a script that asks for the active session gets a Connect
//! session, exactly as it gets the `spark-submit` one on EMR.
//!
//! The server belongs to the flux-engine process: it runs under a small
//! `sh` guard whose stdin is a pipe from flux-engine; when flux-engine
//! exits for any reason, even SIGKILL, the pipe closes and the guard stops
//! the server. It listens on 127.0.0.1 only.
//!
//! A job's client does not notice a dead server: it retries against the
//! closed port for minutes. So while a job runs, [`ConnectServer::died`]
//! watches the server (the guard's exit, and the port every 2 s), and the
//! job is stopped as soon as the server is gone, with a message that says
//! how it ended; the next attempt starts a new server.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::runtime::SparkRuntime;

/// The launcher every warm-mode job runs through (`python3 -c`).
pub const LAUNCHER: &str = include_str!("connect_launcher.py");

/// How long a server may take to accept connections; a cold JVM on a busy
/// two-core machine takes 10–40 s.
const START_TIMEOUT: Duration = Duration::from_secs(240);

/// Stops the server when flux-engine's end of the pipe closes, and exits
/// when the server exits so that a dead server is seen at once.
/// (A background job's stdin is /dev/null unless redirected explicitly,
/// hence the pipe is passed to it as fd 3.) The watcher lets go of the
/// server's log at once and ends as soon as the server is gone: it used
/// to hold the log open for 5 s after every engine kill, the last trace
/// of the run on the machine (the soak counted it as an orphan).
const GUARD: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
server=$!
(
  exec >/dev/null 2>&1
  cat <&3
  kill -TERM "$server"
  tries=0
  while kill -0 "$server" && [ "$tries" -lt 50 ]; do sleep 0.1; tries=$((tries + 1)); done
  kill -KILL "$server"
) &
exec 3<&-
wait "$server"
"#;

/// Sail's setting for the partitions of each step of a plan (its file
/// scans' byte ranges among them); 0, its default, means one per core.
const SAIL_PARALLELISM: &str = "SAIL_EXECUTION__DEFAULT_PARALLELISM";

/// A running Spark Connect server.
pub struct ConnectServer {
    pub url: String,
    pub port: u16,
    pub log: PathBuf,
    /// The guard of a server this process started; `None` for a
    /// persistent server (`flux-engine spark start`), which outlives runs.
    guard: Option<std::sync::Mutex<tokio::process::Child>>,
    /// A persistent server's process.
    pid: Option<u32>,
}

impl ConnectServer {
    /// How the server's process ended, if it did.
    fn exit(&self) -> Option<String> {
        match &self.guard {
            Some(guard) => {
                let Ok(mut guard) = guard.lock() else {
                    return None;
                };
                match guard.try_wait() {
                    Ok(Some(status)) => Some(describe_exit(status)),
                    Ok(None) => None,
                    Err(e) => Some(format!("ended in a way that cannot be read ({e})")),
                }
            }
            None => self
                .pid
                .filter(|&pid| !pid_alive(pid))
                .map(|pid| format!("is gone (process {pid})")),
        }
    }

    /// Completes when the server has died: its process ended, or its
    /// port refuses connections (checked every 2 s). Gives how it ended,
    /// with the most telling line its log got since byte `log_from`.
    pub async fn died(&self, log_from: u64) -> String {
        let tick = Duration::from_millis(250);
        let mut ticks = 0u32;
        let how = loop {
            tokio::time::sleep(tick).await;
            ticks += 1;
            if let Some(how) = self.exit() {
                break how;
            }
            if ticks.is_multiple_of(8) && refused(self.port).await {
                // The process may be on its way out: give it a moment to
                // say how it ended.
                tokio::time::sleep(Duration::from_millis(500)).await;
                break self.exit().unwrap_or_else(|| {
                    format!("stopped accepting connections on 127.0.0.1:{}", self.port)
                });
            }
        };
        let since = crate::process::read_since(&self.log, log_from, 256 * 1024);
        let mut message = format!(
            "the warm Spark server (127.0.0.1:{}) died while the job ran: it {how}",
            self.port
        );
        // The guard's shell reports a killed server with a bare "Killed"
        // line, which the exit status already says.
        let since: String = since
            .lines()
            .filter(|l| l.trim() != "Killed")
            .collect::<Vec<_>>()
            .join("\n");
        if let Some(line) = super::cause::root_cause(&since) {
            message.push_str(&format!("; its log: {}", line.trim_end_matches('.')));
        }
        message.push_str(if self.guard.is_some() {
            ". The job was stopped rather than left retrying; another attempt starts a new server"
        } else {
            ". The job was stopped rather than left retrying; start the server again with `flux-engine spark start` (or stop it with `flux-engine spark stop` to let runs start their own)"
        });
        message
    }

    fn alive(&self) -> bool {
        let exited = self.guard.as_ref().is_some_and(|guard| {
            guard
                .lock()
                .map(|mut g| !matches!(g.try_wait(), Ok(None)))
                .unwrap_or(true)
        });
        !exited && port_open(self.port)
    }

    /// Stops the server (closes the guard's stdin) and waits a little for
    /// it to go. A persistent server is left running.
    fn stop(&self) {
        let Some(guard) = &self.guard else { return };
        if let Ok(mut guard) = guard.lock() {
            drop(guard.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(guard.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

static SERVER: Mutex<Option<Arc<ConnectServer>>> = Mutex::const_new(None);

/// Whether `emr_spark` jobs run on the warm server (the default) or each
/// with its own `spark-submit` (`FLUX_SPARK_MODE=submit`, what EMR does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Warm,
    Submit,
}

impl Mode {
    /// The `FLUX_SPARK_MODE` value that selects it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Warm => "warm",
            Mode::Submit => "submit",
        }
    }

    pub fn from_env() -> Result<Mode, String> {
        match std::env::var("FLUX_SPARK_MODE").as_deref() {
            Err(_) | Ok("") | Ok("warm") | Ok("connect") => Ok(Mode::Warm),
            Ok("submit") => Ok(Mode::Submit),
            Ok(other) => Err(format!(
                "FLUX_SPARK_MODE=`{other}` is not a mode: use `warm` (one Spark Connect server for all jobs, the default) or `submit` (a cold spark-submit per job)"
            )),
        }
    }
}

/// Which Spark Connect server the warm mode starts: the JVM Spark's
/// (`spark`, the default) or Sail's (`FLUX_SPARK_BACKEND=sail`: a Spark
/// Connect server written in Rust on DataFusion, the `pysail` package; it
/// starts in about a second and needs no JVM). The jobs are the same
/// PySpark scripts either way, connecting through `SPARK_REMOTE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Spark,
    Sail,
}

impl Backend {
    /// The `FLUX_SPARK_BACKEND` value that selects it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Spark => "spark",
            Backend::Sail => "sail",
        }
    }

    /// The backend when neither `--spark` nor `FLUX_SPARK_BACKEND` names
    /// one (README: "Sail or the JVM Spark").
    pub const DEFAULT: Backend = Backend::Sail;

    /// `--spark` (which main turns into the variable) or
    /// `FLUX_SPARK_BACKEND`, else [`Backend::DEFAULT`].
    pub fn from_env() -> Result<Backend, String> {
        match std::env::var("FLUX_SPARK_BACKEND").as_deref() {
            Err(_) | Ok("") => Ok(Backend::DEFAULT),
            Ok("spark") => Ok(Backend::Spark),
            Ok("sail") => Ok(Backend::Sail),
            Ok(other) => Err(format!(
                "FLUX_SPARK_BACKEND=`{other}` is not a backend: use `sail` (Sail's Spark Connect server) or `spark` (the JVM Spark)"
            )),
        }
    }
}

/// How the guard's exit tells the server's: `sh` exits with the status of
/// `wait`, which is 128 + the signal for a server killed by one.
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    let signal_name = |n: i32| match n {
        6 => " (SIGABRT)",
        9 => " (SIGKILL: killed from outside, or by the kernel when memory ran out)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    };
    match (status.code(), status.signal()) {
        (Some(code), _) if code > 128 => {
            format!(
                "was killed by signal {}{}",
                code - 128,
                signal_name(code - 128)
            )
        }
        // SparkExitCode.OOM
        (Some(52), _) => "exited with code 52 (Spark's exit code for OutOfMemoryError)".into(),
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!(
            "is gone: its guard was killed by signal {signal}{}",
            signal_name(signal)
        ),
        _ => "exited".into(),
    }
}

/// Whether a connection to the local port is refused (nothing listens).
/// A timeout is no proof of death: a busy machine may be slow to answer.
async fn refused(port: u16) -> bool {
    let connect = move || {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_secs(2),
        )
    };
    matches!(
        tokio::task::spawn_blocking(connect).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )
    .is_ok()
}

fn free_port() -> std::io::Result<u16> {
    // The port is released before Spark binds it; another process could
    // take it in between, in which case the server fails to start and the
    // error says so (a retry picks another port).
    Ok(
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port(),
    )
}

/// Settings for the whole server from `FLUX_SPARK_SERVER_CONF`
/// (`key=value` pairs separated by spaces or commas), for static settings
/// such as `spark.driver.memory` that a running server cannot change.
fn server_conf() -> Vec<String> {
    std::env::var("FLUX_SPARK_SERVER_CONF")
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|s| s.contains('='))
        .map(str::to_string)
        .collect()
}

/// The warm server: the persistent one of this state dir if it runs
/// (`flux-engine spark start`), else one this process starts (again, if
/// the last one died). `state_root` holds `spark/` with the servers' logs.
pub async fn server(
    runtime: &SparkRuntime,
    state_root: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Arc<ConnectServer>, String> {
    let log_dir = &state_root.join("spark");
    let mut slot = SERVER.lock().await;
    let wanted = runtime.backend().name();
    if let Some(found) = persistent(state_root) {
        if found.backend != wanted {
            // Its tables would be another engine's: the run asked for this
            // one. Said once per process.
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                say(&format!(
                    "note: the server kept by `flux-engine spark start` ({}) is {}, and this run's backend is {wanted}: the run starts its own (`--spark {}` would use the kept one)",
                    found.url, found.backend, found.backend
                ));
            }
        } else {
            return Ok(Arc::new(ConnectServer {
                url: found.url,
                port: found.port,
                log: PathBuf::from(found.log),
                guard: None,
                pid: Some(found.pid),
            }));
        }
    }
    if let Some(running) = slot.as_ref() {
        if running.alive() {
            return Ok(running.clone());
        }
        running.stop();
        *slot = None;
    }
    let started = start(runtime, log_dir, say).await?;
    *slot = Some(started.clone());
    Ok(started)
}

/// Stops the warm server if one is running. Called when a run ends, so the
/// JVM's memory is given back before the process exits.
pub async fn shutdown() {
    if let Some(server) = SERVER.lock().await.take() {
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .ok();
    }
}

async fn start(
    runtime: &SparkRuntime,
    log_dir: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Arc<ConnectServer>, String> {
    // Its own span under the attempt that needed it: the JVM's start is
    // seconds the trace would otherwise leave unexplained.
    let span = crate::steps::step(&tracing::Span::current(), "spark.server_start", "local");
    let started = spawn_server(runtime, log_dir, true, say).await;
    crate::steps::finish(
        &span,
        &started
            .as_ref()
            .map_err(|e| engine::TaskFailure::new(e.clone())),
    );
    let (guard, port, log) = started?;
    span.record("flux.step.target", format!("127.0.0.1:{port}").as_str());
    Ok(Arc::new(ConnectServer {
        url: format!("sc://127.0.0.1:{port}"),
        port,
        log,
        guard: Some(std::sync::Mutex::new(guard)),
        pid: None,
    }))
}

/// Starts a server, under the guard (`guarded`) or on its own, and waits
/// until it accepts connections.
async fn spawn_server(
    runtime: &SparkRuntime,
    log_dir: &Path,
    guarded: bool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(tokio::process::Child, u16, PathBuf), String> {
    std::fs::create_dir_all(log_dir)
        .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    let port = free_port().map_err(|e| format!("no free local port for Spark Connect: {e}"))?;
    let log = log_dir.join(format!("spark-connect-{port}.log"));
    let log_file =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let master = std::env::var("FLUX_SPARK_MASTER").unwrap_or_else(|_| "local[*]".into());
    // The server's program and arguments: Sail's, or spark-submit's with
    // the Spark Connect server class.
    let (program, arguments, what): (PathBuf, Vec<String>, String) = match &runtime.sail {
        Some(sail) => (
            sail.program.clone(),
            sail.leading_args
                .iter()
                .cloned()
                .chain(
                    ["spark", "server", "--ip", "127.0.0.1", "--port"]
                        .iter()
                        .map(|a| a.to_string()),
                )
                .chain([port.to_string()])
                .collect(),
            format!(
                "a warm Sail {} (Spark Connect on 127.0.0.1:{port}",
                sail.version
            ),
        ),
        None => {
            let mut arguments: Vec<String> = [
                "--class",
                "org.apache.spark.sql.connect.service.SparkConnectServer",
                "--name",
                "flux-engine Spark Connect",
                "--master",
                &master,
                "--conf",
                "spark.ui.enabled=false",
                "--conf",
                "spark.sql.session.timeZone=UTC",
                "--conf",
                "spark.connect.grpc.binding.address=127.0.0.1",
                "--conf",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            arguments.push(format!("spark.connect.grpc.binding.port={port}"));
            for setting in server_conf() {
                arguments.push("--conf".into());
                arguments.push(setting);
            }
            (
                runtime.spark_submit.clone(),
                arguments,
                format!("a warm Spark ({master}, Spark Connect on 127.0.0.1:{port}"),
            )
        }
    };
    let mut command = if guarded {
        let mut sh = tokio::process::Command::new("sh");
        sh.arg("-c")
            .arg(GUARD)
            .arg("flux-spark-connect")
            .arg(&program);
        sh.stdin(Stdio::piped());
        sh
    } else {
        let mut direct = tokio::process::Command::new(&program);
        direct.stdin(Stdio::null());
        direct
    };
    command.args(&arguments);
    runtime.apply_to(&mut command);
    if runtime.sail.is_some() && std::env::var_os(SAIL_PARALLELISM).is_none() {
        // Sail reads a file in as many byte ranges as it has partitions,
        // and hands them to its partitions in no fixed order: with two, the
        // one holding the header is the first, so the clean job's line
        // numbers (the quarantine's, and which copy of a duplicate key is
        // kept) are Spark's on any machine; with more, nothing tells their
        // order (README: "Sail or the JVM Spark"). Set the variable to
        // choose another value.
        command.env(SAIL_PARALLELISM, "2");
    }
    command
        .stdout(log_file)
        .stderr(log_err)
        // Its own group, so a Ctrl-C at the terminal reaches flux-engine,
        // which cancels the run, and not the shared server mid-job.
        .process_group(0);
    say(&format!("starting {what}; log {})", log.display()));
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let began = Instant::now();
    loop {
        if port_open(port) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the Spark Connect server exited ({status}) before accepting connections; its log ends with:\n{}\n(full log: {})",
                crate::process::tail(&log, 8),
                log.display()
            ));
        }
        if began.elapsed() > START_TIMEOUT {
            drop(child.stdin.take());
            if !guarded {
                let _ = child.start_kill();
            }
            return Err(format!(
                "the Spark Connect server did not accept connections on 127.0.0.1:{port} within {} s; its log ends with:\n{}\n(full log: {})",
                START_TIMEOUT.as_secs(),
                crate::process::tail(&log, 8),
                log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    say(&format!(
        "warm {} ready in {:.1} s",
        if runtime.sail.is_some() {
            "Sail"
        } else {
            "Spark"
        },
        began.elapsed().as_secs_f64()
    ));
    Ok((child, port, log))
}

// ---------------------------------------------------------------------
// The persistent server of a state dir (`flux-engine spark start|stop`)
// ---------------------------------------------------------------------

/// What `STATE_ROOT/spark/server.json` records about a persistent server.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PersistentServer {
    pub pid: u32,
    pub port: u16,
    pub url: String,
    pub log: String,
    pub started_at: String,
    /// `sail` or `spark`; a file written before backends existed is a JVM
    /// Spark's.
    #[serde(default = "spark_backend_name")]
    pub backend: String,
}

fn spark_backend_name() -> String {
    Backend::Spark.name().to_string()
}

fn persistent_file(state_root: &Path) -> PathBuf {
    state_root.join("spark").join("server.json")
}

/// Whether `pid` runs (a zombie, dead but not yet reaped, does not).
fn pid_alive(pid: u32) -> bool {
    // A pid from server.json that is not a process's (0, 1, or past
    // i32::MAX, which `as i32` would turn into a group or "every process")
    // is never alive, so `stop_persistent` never signals anything else.
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes no pointers, and signal 0 only checks that the
    // process exists; `pid` is above 1, so it names one process.
    if pid <= 1 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(true)
}

/// The persistent server of this state dir, if one is recorded and answers.
pub fn persistent(state_root: &Path) -> Option<PersistentServer> {
    let bytes = std::fs::read(persistent_file(state_root)).ok()?;
    let found: PersistentServer = serde_json::from_slice(&bytes).ok()?;
    (pid_alive(found.pid) && port_open(found.port)).then_some(found)
}

/// Starts a Spark Connect server that outlives this process and serves
/// every run of the state dir until [`stop_persistent`]: during
/// development the JVM start and its warm-up are then paid once, not per
/// run. Returns the running one if there is one.
pub async fn start_persistent(
    runtime: &SparkRuntime,
    state_root: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<PersistentServer, String> {
    if let Some(found) = persistent(state_root) {
        let wanted = runtime.backend().name();
        if found.backend != wanted {
            return Err(format!(
                "a {} server is already kept for this state dir ({}, pid {}); stop it with `flux-engine spark stop` before starting a {wanted} one, or use it with `--spark {}`",
                found.backend, found.url, found.pid, found.backend
            ));
        }
        return Ok(found);
    }
    let (child, port, log) = spawn_server(runtime, &state_root.join("spark"), false, say).await?;
    let pid = child
        .id()
        .ok_or_else(|| "the Spark Connect server exited at once".to_string())?;
    let record = PersistentServer {
        pid,
        port,
        url: format!("sc://127.0.0.1:{port}"),
        log: log.display().to_string(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        backend: runtime.backend().name().to_string(),
    };
    let path = persistent_file(state_root);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&record).unwrap_or_default())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // Not waited for: the server is meant to outlive this process.
    drop(child);
    Ok(record)
}

/// Stops the persistent server of this state dir (its process group:
/// spark-submit's JVM and any Python workers). Returns whether one ran.
pub fn stop_persistent(state_root: &Path) -> Result<bool, String> {
    let path = persistent_file(state_root);
    let Some(found) = persistent(state_root) else {
        let _ = std::fs::remove_file(&path);
        return Ok(false);
    };
    let group = found.pid as i32;
    // SAFETY: kill(2) takes no pointers. `persistent` found the pid alive,
    // so it is within 2..=i32::MAX and `-group` addresses the process
    // group the server was started in, never "every process".
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while pid_alive(found.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if pid_alive(found.pid) {
        // SAFETY: as for SIGTERM above: no pointers, and the same group.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::describe_exit;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    /// What the guard's `sh` exits with (`wait` gives 128 + the signal of
    /// a server killed by one), as waitpid reports it.
    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn a_servers_end_is_told_from_its_guards_exit() {
        assert!(describe_exit(exited(137)).starts_with("was killed by signal 9 (SIGKILL"));
        assert_eq!(
            describe_exit(exited(143)),
            "was killed by signal 15 (SIGTERM)"
        );
        assert_eq!(
            describe_exit(exited(52)),
            "exited with code 52 (Spark's exit code for OutOfMemoryError)"
        );
        assert_eq!(describe_exit(exited(1)), "exited with code 1");
        assert_eq!(
            describe_exit(ExitStatus::from_raw(libc::SIGKILL)),
            "is gone: its guard was killed by signal 9 (SIGKILL: killed from outside, or by the kernel when memory ran out)"
        );
    }
}

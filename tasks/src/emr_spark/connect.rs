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
/// hence the pipe is passed to it as fd 3.)
const GUARD: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
server=$!
( cat <&3 >/dev/null; kill -TERM "$server" 2>/dev/null; sleep 5; kill -KILL "$server" 2>/dev/null ) &
exec 3<&-
wait "$server"
"#;

/// A running Spark Connect server.
pub struct ConnectServer {
    pub url: String,
    pub port: u16,
    pub log: PathBuf,
    guard: std::sync::Mutex<tokio::process::Child>,
}

impl ConnectServer {
    fn alive(&self) -> bool {
        let exited = self
            .guard
            .lock()
            .map(|mut g| !matches!(g.try_wait(), Ok(None)))
            .unwrap_or(true);
        !exited && port_open(self.port)
    }

    /// Stops the server (closes the guard's stdin) and waits a little for
    /// it to go.
    fn stop(&self) {
        if let Ok(mut guard) = self.guard.lock() {
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

/// The warm server, started if there is none or the last one died.
/// `log_dir` is where a newly started server writes its log.
pub async fn server(
    runtime: &SparkRuntime,
    log_dir: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Arc<ConnectServer>, String> {
    let mut slot = SERVER.lock().await;
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
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(GUARD)
        .arg("flux-spark-connect")
        .arg(&runtime.spark_submit)
        .args([
            "--class",
            "org.apache.spark.sql.connect.service.SparkConnectServer",
        ])
        .args(["--name", "flux-engine Spark Connect"])
        .arg("--master")
        .arg(&master)
        .args(["--conf", "spark.ui.enabled=false"])
        .args(["--conf", "spark.sql.session.timeZone=UTC"])
        .args(["--conf", "spark.connect.grpc.binding.address=127.0.0.1"])
        .arg("--conf")
        .arg(format!("spark.connect.grpc.binding.port={port}"));
    for setting in server_conf() {
        command.arg("--conf").arg(setting);
    }
    if let Some(python) = &runtime.python {
        command
            .env("PYSPARK_PYTHON", python)
            .env("PYSPARK_DRIVER_PYTHON", python);
    }
    command
        .stdin(Stdio::piped())
        .stdout(log_file)
        .stderr(log_err)
        // Its own group, so a Ctrl-C at the terminal reaches flux-engine,
        // which cancels the run, and not the shared server mid-job.
        .process_group(0);
    say(&format!(
        "starting a warm Spark ({master}, Spark Connect on 127.0.0.1:{port}; log {})",
        log.display()
    ));
    let mut guard = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", runtime.spark_submit.display()))?;
    let began = Instant::now();
    loop {
        if port_open(port) {
            break;
        }
        if let Ok(Some(status)) = guard.try_wait() {
            return Err(format!(
                "the Spark Connect server exited ({status}) before accepting connections; its log ends with:\n{}\n(full log: {})",
                crate::process::tail(&log, 8),
                log.display()
            ));
        }
        if began.elapsed() > START_TIMEOUT {
            drop(guard.stdin.take());
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
        "warm Spark ready in {:.1} s",
        began.elapsed().as_secs_f64()
    ));
    Ok(Arc::new(ConnectServer {
        url: format!("sc://127.0.0.1:{port}"),
        port,
        log,
        guard: std::sync::Mutex::new(guard),
    }))
}

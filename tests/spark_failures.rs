//! How `emr_spark` jobs fail, through the real binary and a real Spark:
//! the message carries the cause, not the last stack frame, and a job
//! whose warm Spark server dies fails at once and says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{flux, show, spawn, tasks_by_id, wait_until};

fn text(output: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A DAG of one `emr_spark` task running `script` with `args`, retried
/// `attempts` times, in `dir` (the script sits next to it).
fn spark_dag(dir: &Path, script: &str, args: &[&str], attempts: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("job.py"), script).unwrap();
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    let dag = format!(
        r#"[dag]
name = "spark_failures"

[tasks.job]
type = "emr_spark"
script = "job.py"
args = [{}]
retry = {{ max_attempts = {attempts}, interval_seconds = 1 }}
timeout_seconds = 900
"#,
        args.join(", ")
    );
    let path = dir.join("dag.toml");
    std::fs::write(&path, dag).unwrap();
    path
}

/// The first line of the task's error: what `runs` and `show` tables print.
fn first_line(error: &str) -> &str {
    error.lines().next().unwrap_or("")
}

// ---------------------------------------------------------------------
// The message carries the cause
// ---------------------------------------------------------------------

const READ_MISSING: &str = r#"import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
print(spark.read.parquet(sys.argv[1]).count())
"#;

/// On the JVM Spark. (Sail reads a missing path as an empty table, so the
/// rental jobs check their local inputs themselves: `rental_common.read_parquet`.)
#[test]
fn a_job_reading_a_missing_path_fails_with_the_error_class_in_both_modes() {
    let work = tempfile::tempdir().unwrap();
    let dag = spark_dag(work.path(), READ_MISSING, &["s3://flux-test/nowhere/"], 1);
    for mode in ["warm", "submit"] {
        let state = work.path().join(format!("state-{mode}"));
        let output = common::command(&state)
            .env("FLUX_SPARK_MODE", mode)
            .args(["run", "--spark", "spark", dag.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{mode}: {}", text(&output));
        let run_id = common::runs(&state)[0]["run_id"]
            .as_str()
            .unwrap()
            .to_string();
        let tasks = tasks_by_id(&show(&state, &run_id));
        let error = tasks["job"]["error"].as_str().unwrap_or_default();
        let headline = first_line(error);
        assert!(
            headline.starts_with("the Spark job failed with exit code 1: "),
            "{mode}: {error}"
        );
        // The error class and the path the job asked for, on the first line.
        let missing = state.join("s3/flux-test/nowhere");
        assert!(
            headline.contains("[PATH_NOT_FOUND] Path does not exist")
                && headline.contains(&missing.display().to_string()),
            "{mode}: the first line does not say which path is missing: {error}"
        );
        assert!(
            !headline.trim_end().ends_with(')') && !headline.contains("\tat "),
            "{mode}: the first line is a stack frame: {headline}"
        );
    }
}

// ---------------------------------------------------------------------
// A warm server that dies mid-job
// ---------------------------------------------------------------------

/// The first attempt writes its pid to the marker file and runs a query
/// of minutes; the next one, finding the marker, runs a small query.
const LONG_THEN_SHORT: &str = r#"import os
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
marker = sys.argv[1]
if not os.path.exists(marker):
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(marker + ".tmp", marker)
    # Long enough to be killed in; `id % 7` keeps the sum within a long
    # (`id * id` overflowed past 3e9 rows under ANSI mode and failed the
    # job on its own before the test killed the server).
    spark.range(0, 10**13, 1, 2).selectExpr("sum(id % 7) AS s").collect()
    sys.exit(3)
print(spark.range(1000).count())
"#;

/// The ports of the warm servers the run started (from their logs' names).
fn server_ports(state: &Path) -> Vec<u16> {
    std::fs::read_dir(state.join("spark"))
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().to_string();
                name.strip_prefix("spark-connect-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect()
        })
        .unwrap_or_default()
}

/// The pid of the server (the JVM's Spark Connect, or Sail's) on `port`.
fn server_pid(port: u16) -> Option<i32> {
    let jvm = format!("spark.connect.grpc.binding.port={port}");
    let sail = format!("spark\0server\0--ip\0127.0.0.1\0--port\0{port}\0");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            let program = cmdline.split('\0').next().unwrap_or("");
            (program.ends_with("java")
                && cmdline.contains("SparkConnectServer")
                && cmdline.contains(&jvm))
                || (!program.ends_with("sh") && cmdline.contains(&sail))
        })
}

/// The attempts of task `job` recorded so far: (status, error).
fn attempts(state: &Path, run_id: &str) -> Vec<(String, String)> {
    let output = flux(state, &["show", run_id, "--format", "json"]);
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        return Vec::new();
    };
    report["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["task_id"] == "job")
        .map(|a| {
            (
                a["status"].as_str().unwrap_or("").to_string(),
                a["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_job_whose_warm_jvm_spark_is_killed_fails_within_seconds_and_the_retry_gets_a_new_server() {
    a_job_whose_warm_server_is_killed_fails_within_seconds_and_the_retry_gets_a_new_one("spark");
}

#[test]
fn a_job_whose_warm_sail_is_killed_fails_within_seconds_and_the_retry_gets_a_new_server() {
    a_job_whose_warm_server_is_killed_fails_within_seconds_and_the_retry_gets_a_new_one("sail");
}

fn a_job_whose_warm_server_is_killed_fails_within_seconds_and_the_retry_gets_a_new_one(
    backend: &str,
) {
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("first-attempt.pid");
    let dag = spark_dag(
        &work.path().join("dag"),
        LONG_THEN_SHORT,
        &[marker.to_str().unwrap()],
        2,
    );
    let state = work.path().join("state");
    let logs = work.path().join("run");
    let mut child = spawn(
        &state,
        &["run", "--spark", backend, dag.to_str().unwrap()],
        &logs,
    );
    /// Kills the run however the test ends, so a failure leaks no JVM.
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = KillOnDrop(&mut child);

    let started = wait_until(Duration::from_secs(300), || {
        marker.exists() || child.0.try_wait().ok().flatten().is_some()
    });
    assert!(
        started && marker.exists(),
        "the job's first attempt never started\n{}",
        common::logs(&logs)
    );
    let job_pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let run_id = common::runs(&state)[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The query is under way on the server.
    std::thread::sleep(Duration::from_secs(3));
    let ports = server_ports(&state);
    assert_eq!(ports.len(), 1, "one warm server expected: {ports:?}");
    let pid = server_pid(ports[0])
        .unwrap_or_else(|| panic!("no {backend} server serves port {}", ports[0]));
    if backend == "sail" {
        // Two partitions per step, whatever the cores: the clean job's
        // line numbers rely on a file being read in at most two ranges.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            environ
                .split(|b| *b == 0)
                .any(|v| v == b"SAIL_EXECUTION__DEFAULT_PARALLELISM=2"),
            "the Sail server was not started with two partitions per step"
        );
    }
    common::signal(pid as u32, libc::SIGKILL);
    let killed = Instant::now();

    // Attempt 1 fails within seconds, saying the server died, and its
    // Python client (which would retry for minutes) is gone.
    let mut first = None;
    let failed_in_time = wait_until(Duration::from_secs(15), || {
        first = attempts(&state, &run_id)
            .into_iter()
            .next()
            .filter(|(status, _)| status == "failed");
        first.is_some()
    });
    let took = killed.elapsed();
    assert!(
        failed_in_time,
        "attempt 1 had not failed 15 s after its server was killed: {:?}\n{}",
        attempts(&state, &run_id),
        common::logs(&logs)
    );
    let (_, error) = first.unwrap();
    let headline = first_line(&error);
    assert!(
        headline.contains("the warm Spark server")
            && headline.contains("died while the job ran")
            && headline.contains("killed by signal 9"),
        "attempt 1 does not say its server died: {error}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !common::own_process_alive(
            job_pid,
            "FLUX_TASK_ID=job"
        )),
        "the first attempt's job process {job_pid} still runs"
    );
    eprintln!(
        "attempt 1 failed {:.1} s after the server was killed:\n{error}",
        took.as_secs_f64()
    );

    // The retry starts a new server and succeeds.
    let status = common::wait_timeout(child.0, Duration::from_secs(400));
    assert!(
        status.is_some_and(|s| s.success()),
        "the run did not succeed after the retry ({status:?})\n{}",
        common::logs(&logs)
    );
    let attempts = attempts(&state, &run_id);
    assert_eq!(
        attempts.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        ["failed", "succeeded"],
        "{attempts:?}"
    );
    let ports_after = server_ports(&state);
    assert_eq!(
        ports_after.len(),
        2,
        "a new server expected: {ports_after:?}"
    );
    // Nothing of the run is left: no job process, no server.
    let marker_env = format!("FLUX_RUN_ID={run_id}");
    assert!(
        wait_until(Duration::from_secs(10), || common::processes_with(
            &marker_env
        )
        .is_empty()),
        "processes of the run are still running: {:?}",
        common::processes_with(&marker_env)
    );
    for port in ports_after {
        assert!(
            wait_until(Duration::from_secs(20), || server_pid(port).is_none()),
            "the server on port {port} outlived the run"
        );
    }
}

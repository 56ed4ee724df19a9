//! How a run chooses the Spark environment, through the real binary with
//! real virtualenvs on `PATH`: a project venv without pyspark first on
//! `PATH` does not break the run, and an environment that cannot work
//! (`PYSPARK_PYTHON` or `SPARK_HOME` pointing at the wrong thing) stops
//! the run before any task, with exit 2 and the variable named.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{show, text};

/// A virtualenv without pyspark, as `python3 -m venv .venv` makes one.
fn bare_venv(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 runs");
    assert!(made.status.success(), "{}", text(&made.stderr));
    // The premise: this venv's Python cannot import pyspark.
    // (From the scratch folder: the repository's `pyspark/` folder of
    // jobs would pass for a package from the test's working folder.)
    let import = Command::new(venv.join("bin/python3"))
        .args(["-c", "import pyspark"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!import.status.success(), "the new venv has pyspark?");
    venv
}

/// `PATH` with `venv/bin` first, as `. venv/bin/activate` makes it.
fn activated(venv: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![venv.join("bin")];
    dirs.extend(std::env::split_paths(&rest));
    std::env::join_paths(dirs).unwrap()
}

/// The binary with the environment variables that choose Spark removed,
/// so that each test sets only the ones it is about.
fn flux(state: &Path) -> Command {
    let mut command = common::command(state);
    command
        .env_remove("SPARK_HOME")
        .env_remove("PYSPARK_PYTHON")
        .env_remove("PYSPARK_DRIVER_PYTHON")
        .env_remove("FLUX_SPARK_MODE");
    command
}

/// A DAG of one small `emr_spark` job that writes the path of the Python
/// it ran with to `executable.txt` beside the DAG, and a shell task that
/// runs after it.
fn spark_dag(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("job.py"),
        r#"import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
assert spark.range(3).count() == 3
with open(sys.argv[1], "w") as f:
    f.write(sys.executable)
"#,
    )
    .unwrap();
    let out = dir.join("executable.txt");
    let dag = format!(
        r#"[dag]
name = "spark_environment"

[tasks.job]
type = "emr_spark"
script = "job.py"
args = ["{}"]
retry = {{ max_attempts = 3, interval_seconds = 1 }}

[tasks.after]
type = "shell"
command = "true"
depends_on = ["job"]
"#,
        out.display()
    );
    let path = dir.join("dag.toml");
    std::fs::write(&path, dag).unwrap();
    path
}

/// A `python3` shell script (`script`) in `dir/bin`, and a `PATH` with
/// that folder first, then only the system's: what the provisioning tests
/// give flux-engine as "the Python on PATH".
fn python3_on_path(dir: &Path, script: &str) -> std::ffi::OsString {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let python3 = bin.join("python3");
    std::fs::write(&python3, script).unwrap();
    std::fs::set_permissions(&python3, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::env::join_paths([bin, "/usr/bin".into(), "/bin".into()]).unwrap()
}

fn report(output: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Exit 2 with nothing run or recorded: the environment was refused
/// before the first task.
fn assert_refused_before_any_task(state: &Path, output: &Output) {
    assert_eq!(output.status.code(), Some(2), "{}", report(output));
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("attempt 1"),
        "a task started: {}",
        report(output)
    );
    assert!(
        common::runs(state).is_empty(),
        "a run was recorded: {}",
        report(output)
    );
}

#[test]
fn a_venv_without_pyspark_first_on_path_runs_with_a_python_that_has_it() {
    let work = tempfile::tempdir().unwrap();
    let venv = bare_venv(work.path());
    let dag = spark_dag(work.path());
    let state = work.path().join("state");
    let output = flux(&state)
        .env("PATH", activated(&venv))
        .env("VIRTUAL_ENV", &venv)
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", report(&output));
    let stderr = text(&output.stderr);
    // One line says which Python is used instead of the venv's, and why.
    let venv_python = venv.join("bin/python3");
    let note = stderr
        .lines()
        .find(|l| l.contains("note: Spark jobs run with"))
        .unwrap_or_else(|| panic!("no note: {}", report(&output)));
    assert!(
        note.contains(&format!("not {}", venv_python.display())) && note.contains("no pyspark"),
        "{note}"
    );

    // The job ran with a Python that is not the venv's and has pyspark,
    // and the run recorded that Python on its span, for `show`.
    let used = std::fs::read_to_string(work.path().join("executable.txt")).unwrap();
    assert!(!used.starts_with(&venv.display().to_string()), "{used}");
    let import = Command::new(&used)
        .args(["-c", "import pyspark; print(pyspark.__version__)"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(import.status.success(), "{used}: {}", text(&import.stderr));
    let version = text(&import.stdout).trim().to_string();
    let run_id = common::runs(&state)[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let environment = &show(&state, &run_id)["environment"];
    assert_eq!(
        environment["flux.spark.python"],
        used.as_str(),
        "{environment}"
    );
    assert_eq!(environment["flux.spark.pyspark_version"], version.as_str());
    assert_eq!(environment["flux.spark.mode"], "warm");
    let home = environment["flux.spark.home"].as_str().unwrap();
    assert!(
        Path::new(home).join("bin/spark-submit").is_file(),
        "{environment}"
    );
    // Every task ran once: nothing burnt a retry on the environment.
    let tasks = common::tasks_by_id(&show(&state, &run_id));
    assert_eq!(tasks["job"]["attempts"], 1, "{tasks:?}");
}

#[test]
fn pyspark_python_without_pyspark_stops_the_run_before_any_task_naming_the_variable() {
    let work = tempfile::tempdir().unwrap();
    let venv = bare_venv(work.path());
    let dag = spark_dag(work.path());
    let state = work.path().join("state");
    let python = venv.join("bin/python3");
    let output = flux(&state)
        .env("PYSPARK_PYTHON", &python)
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_refused_before_any_task(&state, &output);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "PYSPARK_PYTHON={} cannot run the Spark jobs: it has no pyspark",
            python.display()
        )) && stderr.contains("unset PYSPARK_PYTHON"),
        "{}",
        report(&output)
    );
}

#[test]
fn spark_home_without_spark_stops_the_run_before_any_task() {
    let work = tempfile::tempdir().unwrap();
    let dag = spark_dag(work.path());
    let state = work.path().join("state");
    let empty = work.path().join("not-spark");
    std::fs::create_dir_all(&empty).unwrap();
    let output = flux(&state)
        .env("SPARK_HOME", &empty)
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_refused_before_any_task(&state, &output);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("SPARK_HOME={} holds no Spark", empty.display()))
            && stderr.contains("bin/spark-submit is missing"),
        "{}",
        report(&output)
    );
}

#[test]
fn a_dag_without_spark_tasks_does_not_check_spark() {
    let work = tempfile::tempdir().unwrap();
    let dag = work.path().join("dag.toml");
    std::fs::write(
        &dag,
        "[dag]\nname = \"no_spark\"\n\n[tasks.hello]\ntype = \"shell\"\ncommand = \"true\"\n",
    )
    .unwrap();
    let state = work.path().join("state");
    // An environment every Spark task would be refused in.
    let output = flux(&state)
        .env("SPARK_HOME", work.path().join("nowhere"))
        .env("PYSPARK_PYTHON", work.path().join("no-python"))
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", report(&output));
    let run_id = common::runs(&state)[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let report_json = show(&state, &run_id);
    assert_eq!(report_json["environment"], serde_json::json!({}));
}

#[test]
fn doctor_reports_the_environment_a_run_would_use() {
    let work = tempfile::tempdir().unwrap();
    let venv = bare_venv(work.path());
    let state = work.path().join("state");
    let spark_line = |output: &Output| -> String {
        text(&output.stdout)
            .lines()
            .skip_while(|l| !l.contains(" spark "))
            .take_while(|l| !l.contains("state dir"))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // As the machine is: no note, the whole environment on one line.
    let plain = flux(&state).arg("doctor").output().unwrap();
    let line = spark_line(&plain);
    assert!(line.starts_with("ok"), "{}", report(&plain));
    for part in ["Spark ", " at ", "Python ", "with pyspark ", "mode warm"] {
        assert!(line.contains(part), "{part:?} missing: {line}");
    }
    assert!(!line.contains("note:"), "{line}");
    // The backend the jobs would run on leads: Sail by default, the JVM
    // Spark with `--spark spark`.
    let detail = |line: &str| line.split_whitespace().nth(2).map(str::to_string);
    assert_eq!(detail(&line).as_deref(), Some("sail"), "{line}");
    let jvm = flux(&state)
        .args(["--spark", "spark", "doctor"])
        .output()
        .unwrap();
    let jvm_line = spark_line(&jvm);
    assert_eq!(detail(&jvm_line).as_deref(), Some("Spark"), "{jvm_line}");
    assert!(!jvm_line.contains("sail"), "{jvm_line}");

    // From inside the venv: the same environment is found, with a note.
    let inside = flux(&state)
        .env("PATH", activated(&venv))
        .arg("doctor")
        .output()
        .unwrap();
    let line = spark_line(&inside);
    assert!(line.starts_with("ok"), "{}", report(&inside));
    assert!(
        line.contains(&format!("not {}", venv.join("bin/python3").display())),
        "{line}"
    );
}

/// A Python on this machine that has pyspark (the one the Spark tests
/// use), as the interpreter itself rather than a shim.
fn python_with_pyspark() -> PathBuf {
    common::python_with_pyspark()
        .unwrap_or_else(|e| panic!("these tests need a python3 with pyspark on PATH: {e}"))
}

/// A virtualenv at `dir` that sees the pyspark of [`python_with_pyspark`]
/// through its system site-packages.
fn venv_seeing_pyspark(dir: &Path) {
    let made = Command::new(python_with_pyspark())
        .args(["-m", "venv", "--system-site-packages"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
}

#[test]
fn with_no_pyspark_on_path_the_provisioned_environment_runs_the_jobs() {
    use sha2::Digest;
    let work = tempfile::tempdir().unwrap();
    let venv = bare_venv(work.path());
    let dag = spark_dag(work.path());
    let state = work.path().join("state");
    // What provisioning makes, without its 500 MB download: a venv in the
    // cache folder named after the requirements' hash, marked complete,
    // that sees the machine's pyspark through its system site-packages.
    let cache = work.path().join("cache");
    let requirements = std::fs::read(common::root().join("pyspark/requirements.txt")).unwrap();
    let hash = format!("{:x}", sha2::Sha256::digest(&requirements));
    let provisioned = cache.join("spark").join(&hash[..12]);
    venv_seeing_pyspark(&provisioned);
    std::fs::write(provisioned.join(".complete"), &requirements).unwrap();
    // A PATH with the bare venv and the system's tools only: no pyspark,
    // no spark-submit (java stays, from /usr/bin or JAVA_HOME).
    let path = std::env::join_paths([venv.join("bin"), "/usr/bin".into(), "/bin".into()]).unwrap();

    let output = flux(&state)
        .env("PATH", &path)
        .env("FLUX_CACHE_DIR", &cache)
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", report(&output));
    assert!(
        text(&output.stderr).contains("(provisioned by flux-engine, pyspark "),
        "{}",
        report(&output)
    );
    let used = std::fs::read_to_string(work.path().join("executable.txt")).unwrap();
    assert_eq!(Path::new(&used), provisioned.join("bin/python"));
    let run_id = common::runs(&state)[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let environment = &show(&state, &run_id)["environment"];
    assert_eq!(
        environment["flux.spark.python_origin"], "provisioned by flux-engine",
        "{environment}"
    );
}

#[test]
fn a_spark_home_no_python_here_matches_is_reported_not_half_used() {
    let work = tempfile::tempdir().unwrap();
    let dag = spark_dag(work.path());
    let state = work.path().join("state");
    // A Spark 3.5 folder (as far as its layout tells) beside this
    // machine's pyspark 4: the client and the server would not agree.
    let home = work.path().join("spark-3.5.1");
    std::fs::create_dir_all(home.join("bin")).unwrap();
    std::fs::create_dir_all(home.join("jars")).unwrap();
    std::fs::write(home.join("bin/spark-submit"), "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::write(home.join("jars/spark-core_2.13-3.5.1.jar"), "").unwrap();
    let ours = python_with_pyspark();
    let ours_version = Command::new(&ours)
        .args(["-c", "import pyspark; print(pyspark.__version__)"])
        .current_dir(work.path())
        .output()
        .unwrap();
    let ours_version = text(&ours_version.stdout).trim().to_string();
    assert!(
        !ours_version.starts_with("3.5."),
        "the premise: {ours_version}"
    );
    let output = flux(&state)
        .env("SPARK_HOME", &home)
        // No provisioned venv: it would not match 3.5 either.
        .env("FLUX_CACHE_DIR", work.path().join("cache"))
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_refused_before_any_task(&state, &output);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{} (from SPARK_HOME) is Spark 3.5.1",
            home.display()
        )) && stderr.contains(&format!(
            "pyspark {ours_version} does not match Spark 3.5.1"
        )),
        "{}",
        report(&output)
    );
    assert!(
        !work.path().join("cache").exists(),
        "nothing is provisioned for a Spark it could not match"
    );
}

/// The spans of a run's trace as OTLP JSON gives them (`trace --otlp-json`).
fn otlp_spans(state: &Path, run_id: &str) -> Vec<serde_json::Value> {
    let file = state.with_extension("trace.json");
    let out = common::flux(
        state,
        &["trace", run_id, "--otlp-json", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let mut spans = Vec::new();
    for resource in trace["resourceSpans"].as_array().unwrap() {
        for scope in resource["scopeSpans"].as_array().unwrap() {
            spans.extend(scope["spans"].as_array().unwrap().iter().cloned());
        }
    }
    spans
}

fn nanos(span: &serde_json::Value, key: &str) -> u128 {
    let value = &span[key];
    value
        .as_str()
        .map(|s| s.parse().unwrap())
        .or(value.as_u64().map(u128::from))
        .unwrap_or_else(|| panic!("{key} of {span}"))
}

/// A first use provisions PySpark, then Sail (the default backend, found
/// neither beside that Python nor on `PATH`), before the run's first
/// attempt: the person waiting sees pip's milestones with the time of
/// day, and the trace has a `spark.provision` span for each (under the
/// run's `spark.environment` check) that ends before the first attempt
/// starts, so the provisioning counts against no task's attempt or
/// timeout. The warm server is then the provisioned Sail.
#[test]
fn a_first_provisioning_shows_timed_progress_and_is_a_span_before_the_first_attempt() {
    let work = tempfile::tempdir().unwrap();
    let venv = bare_venv(work.path());
    let dag = spark_dag(work.path());
    let state = work.path().join("state");
    let cache = work.path().join("cache");
    // `python3` on PATH is the project venv's (no pyspark), except that
    // the virtualenv it makes for flux-engine sees this machine's pyspark
    // (system site-packages): the provisioning is real (venv, then
    // `pip install -r requirements.txt`), but pip finds every
    // requirement satisfied and downloads nothing.
    let real = python_with_pyspark();
    let path = python3_on_path(
        work.path(),
        &format!(
            "#!/bin/sh\nif [ \"$1\" = -m ] && [ \"$2\" = venv ]; then shift 2; exec '{}' -m venv --system-site-packages \"$@\"; fi\nexec '{}' \"$@\"\n",
            real.display(),
            venv.join("bin/python3").display()
        ),
    );

    let output = flux(&state)
        .env("PATH", &path)
        .env("FLUX_CACHE_DIR", &cache)
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", report(&output));
    let used = std::fs::read_to_string(work.path().join("executable.txt")).unwrap();
    assert!(
        Path::new(&used).starts_with(cache.join("spark")),
        "the job ran with {used}, not the provisioned venv: {}",
        report(&output)
    );

    // Progress: `flux-engine: 2026-12-05T10:02:11.412Z provisioning: ...`,
    // from the virtualenv to "ready", the clock never going back.
    let stderr = text(&output.stderr);
    let progress: Vec<(chrono::DateTime<chrono::FixedOffset>, &str)> = stderr
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("flux-engine: ")?;
            let (stamp, said) = rest.split_once(" provisioning: ")?;
            Some((chrono::DateTime::parse_from_rfc3339(stamp).ok()?, said))
        })
        .collect();
    let said: Vec<&str> = progress.iter().map(|(_, s)| *s).collect();
    for wanted in [
        "installing PySpark into",
        "creating a virtualenv with",
        "pip install pyspark",
        "PySpark is ready (",
        "installing Sail into",
        "pip install pysail==",
        "Sail is ready (",
    ] {
        assert!(
            said.iter().any(|s| s.starts_with(wanted)),
            "no timed progress line starting {wanted:?}: {}",
            report(&output)
        );
    }
    let ready = |what: &str| said.iter().position(|s| s.starts_with(what));
    assert!(
        ready("PySpark is ready (") < ready("installing Sail into")
            && said.last().unwrap().starts_with("Sail is ready ("),
        "{said:?}"
    );
    assert!(
        stderr.contains("starting a warm Sail"),
        "{}",
        report(&output)
    );
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "{progress:?}"
    );

    // The trace: run > spark.environment > spark.provision, all before
    // the first attempt of `job`.
    let run_id = common::runs(&state)[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let spans = otlp_spans(&state, &run_id);
    let named = |name: &str| -> &serde_json::Value {
        spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| {
            panic!(
                "no span {name} among {:?}",
                spans.iter().map(|s| &s["name"]).collect::<Vec<_>>()
            )
        })
    };
    let provisions: Vec<&serde_json::Value> = spans
        .iter()
        .filter(|s| s["name"] == "spark.provision")
        .collect();
    let environment = named("spark.environment");
    let into = |folder: &str| -> &serde_json::Value {
        provisions
            .iter()
            .find(|s| {
                s["attributes"].as_array().is_some_and(|attributes| {
                    attributes.iter().any(|a| {
                        a["key"] == "flux.step.target"
                            && a["value"]["stringValue"]
                                .as_str()
                                .is_some_and(|t| Path::new(t).starts_with(cache.join(folder)))
                    })
                })
            })
            .unwrap_or_else(|| panic!("no provisioning span into {folder}: {provisions:?}"))
    };
    let (pyspark, sail) = (into("spark"), into("sail"));
    assert_eq!(pyspark["parentSpanId"], environment["spanId"]);
    assert_eq!(sail["parentSpanId"], environment["spanId"]);
    let provision = sail;
    let root = spans
        .iter()
        .find(|s| s["spanId"] == environment["parentSpanId"])
        .expect("the environment check's parent is in the trace");
    assert!(
        root["parentSpanId"].as_str().unwrap_or("").is_empty(),
        "the environment check is a child of the run's root span: {root}"
    );
    let attempts: Vec<&serde_json::Value> = spans
        .iter()
        .filter(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("attempt "))
        })
        .collect();
    let first_attempt_start = attempts
        .iter()
        .map(|s| nanos(s, "startTimeUnixNano"))
        .min()
        .expect("an attempt span");
    assert!(
        nanos(provision, "endTimeUnixNano") <= first_attempt_start,
        "the provisioning ended after the first attempt began"
    );
    assert!(nanos(root, "startTimeUnixNano") <= nanos(pyspark, "startTimeUnixNano"));
    assert!(nanos(pyspark, "endTimeUnixNano") <= nanos(sail, "startTimeUnixNano"));
    // The warm server (the default mode) starts inside the attempt that
    // needs it, as a span of its own.
    let server = named("spark.server_start");
    assert!(
        attempts
            .iter()
            .any(|a| a["spanId"] == server["parentSpanId"]),
        "the server's start is not under an attempt: {server}"
    );

    // The next run finds it provisioned: no progress, no provisioning span.
    let again = flux(&state)
        .env("PATH", &path)
        .env("FLUX_CACHE_DIR", &cache)
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", report(&again));
    assert!(
        !text(&again.stderr).contains(" provisioning: "),
        "{}",
        report(&again)
    );
}

/// With no Sail beside the chosen Python, on `PATH` or provisioned,
/// `doctor` (which installs nothing without `--fix`) reports it missing
/// with the command that provisions it and the pip command; a run with
/// `FLUX_SPARK_MODE=submit` and the sail backend is refused before any
/// task (Sail is a server, not a `spark-submit`); an unknown backend is
/// refused the same way, naming both. (A run provisions Sail: see
/// `a_first_provisioning_shows_timed_progress_and_is_a_span_before_the_first_attempt`.)
#[test]
fn a_missing_sail_is_named_with_the_provisioning_command_and_a_bad_backend_stops_the_run() {
    let work = tempfile::tempdir().unwrap();
    let dag = spark_dag(work.path());
    // A Python that has pyspark (from the system site-packages) but whose
    // folder holds no `sail`.
    let venv = work.path().join("venv-pyspark");
    venv_seeing_pyspark(&venv);
    let python = venv.join("bin/python");
    assert!(!venv.join("bin/sail").exists());
    let path = std::env::join_paths(["/usr/bin", "/bin"]).unwrap();
    let cache = work.path().join("cache");

    let state = work.path().join("state");
    let output = flux(&state)
        .env("PATH", &path)
        .env("PYSPARK_PYTHON", &python)
        .env("FLUX_CACHE_DIR", &cache)
        .args(["doctor", "--spark", "sail"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", report(&output));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("the Spark backend is sail, but Sail was not found")
            && stdout.contains("`flux-engine doctor --spark sail --fix` provisions pysail==")
            && stdout.contains(&cache.join("sail").display().to_string())
            && stdout.contains(&format!("{} -m pip install pysail==", python.display())),
        "{}",
        report(&output)
    );
    assert!(!cache.join("sail").exists(), "doctor installed something");

    let output = flux(&state)
        .env("PYSPARK_PYTHON", &python)
        .env("FLUX_SPARK_MODE", "submit")
        .args(["run", "--spark", "sail", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_refused_before_any_task(&state, &output);
    assert!(
        text(&output.stderr).contains("the sail backend runs the jobs on Sail's Spark Connect server, and FLUX_SPARK_MODE=submit"),
        "{}",
        report(&output)
    );

    let state = work.path().join("state-bogus");
    let output = flux(&state)
        .env("PYSPARK_PYTHON", &python)
        .env("FLUX_SPARK_BACKEND", "jvm")
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_refused_before_any_task(&state, &output);
    assert!(
        text(&output.stderr).contains("FLUX_SPARK_BACKEND=`jvm` is not a backend"),
        "{}",
        report(&output)
    );
}

/// A SIGKILLed engine takes a provisioning pip with it, and what pip
/// started: nothing a run starts outlives it, not even before its first
/// task. (Before, pip went on downloading in the background.)
#[test]
fn a_sigkilled_engine_mid_provisioning_leaves_no_pip_behind() {
    let work = tempfile::tempdir().unwrap();
    let venv = bare_venv(work.path());
    let dag = spark_dag(work.path());
    let state = work.path().join("state");
    let pids = work.path().join("pip.pids");
    // `python3` on PATH is the bare venv's (no pyspark), except that the
    // virtualenv it makes for flux-engine gets a `pip` standing for a long
    // download: it starts a child, writes its own pid and the child's,
    // and waits for it.
    let path = python3_on_path(
        work.path(),
        &format!(
            r#"#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
  for dir; do :; done
  mkdir -p "$dir/bin"
  printf '#!/bin/sh\nsleep 300 &\necho $$ $! > {}\nwait\n' > "$dir/bin/pip"
  chmod +x "$dir/bin/pip"
  exit 0
fi
exec '{}' "$@"
"#,
            pids.display(),
            venv.join("bin/python3").display()
        ),
    );

    let mut engine = flux(&state)
        .env("PATH", &path)
        .env("FLUX_CACHE_DIR", work.path().join("cache"))
        .args(["run", dag.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let read_pids = || -> Option<Vec<i32>> {
        let text = std::fs::read_to_string(&pids).ok()?;
        let found: Vec<i32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        (found.len() == 2).then_some(found)
    };
    let started = common::wait_until(std::time::Duration::from_secs(60), || read_pids().is_some());
    common::signal(engine.id(), libc::SIGKILL);
    let _ = engine.wait();
    assert!(started, "the stand-in pip never started");
    let pip = read_pids().unwrap();
    assert!(pip.iter().all(|&p| p > 1));
    let gone = common::wait_until(std::time::Duration::from_secs(10), || {
        !pip.iter().any(|&p| common::process_alive(p))
    });
    if !gone {
        for &p in &pip {
            // SAFETY: sends a signal to a process this test's stand-in pip
            // started (its pid was written a moment ago).
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
    }
    assert!(
        gone,
        "pip (pid {}) or its child (pid {}) outlived the SIGKILLed engine by 10 s",
        pip[0], pip[1]
    );
}

/// A job on the warm server starts without pyspark's Connect client
/// importing IPython (0.25 s of every job's start, spent on a terminal
/// width for a progress bar), yet the script can still import IPython.
#[test]
fn a_warm_job_starts_without_ipython_yet_can_import_it() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let out = work.path().join("ipython.txt");
    std::fs::write(
        work.path().join("job.py"),
        r#"import sys

loaded_before = sys.modules.get("IPython") is not None
import IPython

with open(sys.argv[1], "w") as f:
    f.write(f"loaded before the script: {loaded_before}; importable: {IPython.__name__}")
"#,
    )
    .unwrap();
    let dag = work.path().join("dag.toml");
    std::fs::write(
        &dag,
        format!(
            "[dag]\nname = \"ipython\"\n\n[tasks.job]\ntype = \"emr_spark\"\nscript = \"job.py\"\nargs = [\"{}\"]\n",
            out.display()
        ),
    )
    .unwrap();
    let output = flux(&state)
        .args(["run", dag.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", report(&output));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "loaded before the script: False; importable: IPython"
    );
}

//! `emr_spark`: runs a PySpark script with arguments: on EMR in production,
//! in Spark's local mode here.
//!
//! ```toml
//! [tasks.clean]
//! type = "emr_spark"
//! script = "../pyspark/rental_clean.py"          # relative to the DAG file
//! py_files = ["../pyspark/rental_common.py"]     # shipped with --py-files
//! args = ["--raw", "s3://${params.bucket}/raw/", "--output", "s3://${params.bucket}/processed/clean/"]
//! reads = ["s3://${params.bucket}/raw/"]         # prefixes the job reads
//! writes = ["s3://${params.bucket}/processed/clean/"]   # prefixes it writes
//! spark_conf = { "spark.sql.shuffle.partitions" = "8" }
//! output_json = "s3://${params.bucket}/processed/clean/_counts.json"  # optional
//! ```
//!
//! The script is a plain PySpark script that takes `s3://` URIs on EMR; the
//! local backend rewrites every `s3://` URI in `args` to the `file://` path
//! of the local S3 store, so the script runs unchanged. `reads` and
//! `writes` declare the job's data: production derives its IAM policy from
//! them, and locally each `writes` prefix is given to the job as an empty
//! staging folder that is published atomically only when the job succeeds,
//! so readers see the previous complete output or the new one, never a
//! half-written folder (also after a crash: an unpublished staging folder
//! is discarded). A job that exits 0 without writing anything under a
//! `writes` prefix that holds objects fails rather than publish nothing
//! over them. `output_json`, read after publishing, becomes the task's
//! output (for example the job's row counts).
//!
//! Two ways to run a job locally ([`connect::Mode`], `FLUX_SPARK_MODE`):
//! `warm` (the default) runs each script in its own Python process against
//! one Spark Connect server that the engine starts on first use and keeps
//! for the rest of the process; `submit` starts each job with its own cold
//! `spark-submit`, as EMR does.
//!
//! The Spark and the Python the jobs run with are chosen together, once
//! per run before its first task, by [`runtime`] (the kind's preflight). In Step Functions ([`sfn`])
//! the same config becomes an EMR step (`command-runner.jar spark-submit`)
//! on a cluster the state machine creates and terminates, or an EMR
//! Serverless job run.

mod aws;
mod cause;
mod config;
pub mod connect;
pub mod runtime;
pub mod sfn;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use engine::{Attempt, Kind, Preflight, TaskAction, TaskFailure};
use tracing::Instrument;

use crate::process::{Logs, failure, run_watched};
use crate::s3::{LocalS3, PrefixWrite, S3Uri};
pub use config::SparkJob;
use connect::{ConnectServer, Mode};
use runtime::SparkRuntime;

pub struct EmrSpark;

impl Kind for EmrSpark {
    const NAME: &'static str = "emr_spark";
    const SUMMARY: &'static str = "runs a PySpark script: Spark local mode here, EMR in production";
    type Config = SparkJob;

    fn action(&self, job: SparkJob) -> Arc<dyn TaskAction> {
        Arc::new(LocalSpark { job })
    }

    /// The warm Spark (if a Spark task started one) holds gigabytes: give
    /// them back when the run ends rather than when the guard notices the
    /// engine's exit.
    async fn end_of_run(&self) {
        connect::shutdown().await;
    }

    /// Resolves the Spark environment (provisioning it on first use)
    /// before the run's first task, so that a machine that cannot run
    /// the jobs stops the run at once with the fix, and every job of the
    /// run uses the same Spark and Python.
    /// The check is a `spark.environment` span under the run's (with a
    /// `spark.provision` child on first use): the trace shows where the
    /// time before the first task went.
    async fn preflight(&self) -> Result<Preflight, String> {
        let span = crate::steps::step(&tracing::Span::current(), "spark.environment", "");
        let inside = span.clone();
        let found = tokio::task::spawn_blocking(move || {
            let _entered = inside.enter();
            runtime::resolve_for_run(&say)
        })
        .await
        .map_err(|e| format!("checking the Spark environment: {e}"))
        .and_then(|resolved| resolved.map_err(|e| e.to_string()));
        crate::steps::finish(
            &span,
            &found.as_ref().map_err(|e| TaskFailure::new(e.clone())),
        );
        let found = found?;
        span.record("flux.step.target", found.mode.name());
        Ok(Preflight {
            attributes: found.attributes(),
            notes: found.note.iter().cloned().collect(),
        })
    }
}

struct LocalSpark {
    job: SparkJob,
}

/// A line for the person at the terminal; there may be none any more
/// (a closed terminal), which is no reason to fail a job.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "flux-engine: {line}");
}

/// Rewrites every `s3://` URI inside `arg` to a `file://` path: into the
/// staging folder of the `writes` prefix it falls under, else into the
/// local store.
fn local_arg(arg: &str, store: &LocalS3, staged: &[(S3Uri, PathBuf)]) -> Result<String, String> {
    let Some(start) = arg.find("s3://") else {
        return Ok(arg.to_string());
    };
    let text = &arg[start..];
    let end = text.find([' ', ',', ';']).unwrap_or(text.len());
    let uri = S3Uri::parse(&text[..end]).map_err(|e| e.to_string())?;
    let path = staged
        .iter()
        .find_map(|(prefix, dir)| uri.relative_to(prefix).map(|rel| dir.join(rel)))
        .unwrap_or_else(|| store.path_of(&uri));
    let mut local = format!("{}file://{}", &arg[..start], path.display());
    if uri.is_prefix() && !local.ends_with('/') {
        local.push('/');
    }
    let rest = local_arg(&text[end..], store, staged)?;
    Ok(local + &rest)
}

/// Whether `dir` holds a file, at any depth.
fn holds_a_file(dir: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() || holds_a_file(&entry.path())? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Refuses to publish an empty staging folder over a prefix that holds
/// objects: a job that exits 0 without writing one of its `writes`
/// prefixes (a wrong path, an error it swallowed) would otherwise replace
/// the published data with nothing. Checked for every prefix before any
/// is published, so the job's outputs stay together.
fn check_not_emptied(store: &LocalS3, staging: &[PrefixWrite]) -> Result<(), TaskFailure> {
    for write in staging {
        let prefix = write.prefix();
        let written = holds_a_file(write.path())
            .map_err(|e| failure(&format!("cannot read the job's output for {prefix}"), e))?;
        if written {
            continue;
        }
        let published = store
            .list(prefix)
            .map_err(|e| failure(&format!("cannot list {prefix}"), e))?
            .len();
        if published > 0 {
            return Err(TaskFailure::new(format!(
                "the Spark job succeeded but wrote nothing under {prefix} (one of its `writes`); publishing that would replace the {published} object(s) there with nothing, so none of the job's output was published and {prefix} keeps its previous content: check that the job writes where its `args` say"
            )));
        }
    }
    Ok(())
}

fn resolve(dag_dir: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dag_dir.join(path)
    }
}

/// A cold `spark-submit` of the script: what EMR's `spark-submit` step
/// does, and the baseline the warm mode is measured against.
fn submit_command(
    runtime: &SparkRuntime,
    job: &SparkJob,
    script: &Path,
    py_files: &[PathBuf],
    args: &[String],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&runtime.spark_submit);
    command
        .arg("--master")
        .arg(std::env::var("FLUX_SPARK_MASTER").unwrap_or_else(|_| "local[*]".into()))
        .args(["--conf", "spark.ui.enabled=false"])
        .args(["--conf", "spark.sql.session.timeZone=UTC"]);
    for (key, value) in &job.spark_conf {
        command.arg("--conf").arg(format!("{key}={value}"));
    }
    if !py_files.is_empty() {
        let files: Vec<String> = py_files.iter().map(|f| f.display().to_string()).collect();
        command.arg("--py-files").arg(files.join(","));
    }
    command.arg(script).args(args);
    runtime.apply_to(&mut command);
    command
}

/// The script in a Python process of its own, on the warm server. The
/// `py_files` folders go on `PYTHONPATH`, which is what `--py-files` gives
/// a driver.
fn warm_command(
    runtime: &SparkRuntime,
    server: &ConnectServer,
    job: &SparkJob,
    script: &Path,
    py_files: &[PathBuf],
    args: &[String],
) -> Result<tokio::process::Command, TaskFailure> {
    let python = &runtime.python;
    let mut path: Vec<PathBuf> = Vec::new();
    for file in py_files {
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        if !path.contains(&dir) {
            path.push(dir);
        }
    }
    path.extend(
        std::env::var_os("PYTHONPATH")
            .iter()
            .flat_map(std::env::split_paths),
    );
    let pythonpath = std::env::join_paths(&path)
        .map_err(|e| TaskFailure::new(format!("field `py_files`: {e}")))?;
    let conf =
        serde_json::to_string(&job.spark_conf).map_err(|e| failure("field `spark_conf`", e))?;
    let mut command = tokio::process::Command::new(python);
    command
        .arg("-c")
        .arg(connect::LAUNCHER)
        .arg(script)
        .args(args)
        .env("SPARK_REMOTE", &server.url)
        .env("PYTHONPATH", pythonpath)
        .env("FLUX_SPARK_CONF", conf);
    Ok(command)
}

#[async_trait]
impl TaskAction for LocalSpark {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let job = &self.job;
        std::fs::create_dir_all(&attempt.log_dir)
            .map_err(|e| failure(&format!("cannot create {}", attempt.log_dir.display()), e))?;
        let script = resolve(&attempt.dag_dir, &job.script);
        if !script.is_file() {
            return Err(TaskFailure::new(format!(
                "the Spark script {} does not exist (field `script`, relative to the DAG file's folder)",
                script.display()
            )));
        }
        // Resolved by the run's preflight: a job never looks for its own
        // Spark, and an environment that does not work is no reason to
        // try again.
        let runtime = tokio::task::spawn_blocking(|| runtime::current(&say))
            .await
            .map_err(|e| failure("finding Spark", e))?
            .map_err(|e| TaskFailure::permanent(e.to_string()))?;

        let store = LocalS3::new(&attempt.state_root);
        let mut staging: Vec<PrefixWrite> = Vec::new();
        for prefix in &job.writes {
            staging.push(
                store
                    .begin_prefix_write(prefix.uri())
                    .map_err(|e| failure(&format!("cannot stage {prefix}"), e))?,
            );
        }
        let staged: Vec<(S3Uri, PathBuf)> = staging
            .iter()
            .map(|w| (w.prefix().clone(), w.path().to_path_buf()))
            .collect();
        let args: Vec<String> = job
            .args
            .iter()
            .map(|a| local_arg(a, &store, &staged))
            .collect::<Result<_, _>>()
            .map_err(|e| TaskFailure::new(format!("field `args`: {e}")))?;

        let mode = runtime.mode;
        let py_files: Vec<PathBuf> = job
            .py_files
            .iter()
            .map(|f| resolve(&attempt.dag_dir, f))
            .collect();
        // The warm server the job talks to, and where its log stood when
        // the job started.
        let mut warm: Option<(Arc<ConnectServer>, u64)> = None;
        let mut command = match mode {
            Mode::Submit => submit_command(&runtime, job, &script, &py_files, &args),
            Mode::Warm => {
                let server = connect::server(&runtime, &attempt.state_root, &say)
                    .await
                    .map_err(TaskFailure::new)?;
                let log_from = std::fs::metadata(&server.log).map_or(0, |m| m.len());
                let command = warm_command(&runtime, &server, job, &script, &py_files, &args)?;
                warm = Some((server, log_from));
                command
            }
        };
        if let Some(traceparent) = &attempt.traceparent {
            // The job's driver script can join the run's trace.
            command.env("TRACEPARENT", traceparent);
        }
        command
            .current_dir(&attempt.dag_dir)
            .env("FLUX_RUN_ID", &attempt.run_id)
            .env("FLUX_TASK_ID", &attempt.task_id)
            .env("FLUX_ATTEMPT_ID", &attempt.attempt_id);
        let logs = Logs::in_dir(&attempt.log_dir);
        let span = crate::steps::step(
            &tracing::Span::current(),
            "spark.submit",
            &script.display().to_string(),
        );
        // A job whose warm server dies would retry against the dead port
        // for minutes: it is stopped as soon as the server is seen gone.
        let server_died = async {
            match &warm {
                Some((server, log_from)) => server.died(*log_from).await,
                None => std::future::pending().await,
            }
        };
        let submitted = run_watched(
            command,
            "the Spark job",
            &logs,
            cause::job_failure,
            server_died,
        )
        .instrument(span.clone())
        .await;
        crate::steps::finish(&span, &submitted);
        submitted.map_err(|mut e| {
            if let Some((server, _)) = &warm {
                e.message.push_str(&format!(
                    "\n(warm Spark server log: {})",
                    server.log.display()
                ));
            }
            e
        })?;

        // Published only now: a failed or killed job leaves the previous
        // output in place (dropping the staging folder discards it).
        let check_store = store.clone();
        tokio::task::spawn_blocking(move || {
            check_not_emptied(&check_store, &staging)?;
            for write in staging {
                let prefix = write.prefix().clone();
                write
                    .commit()
                    .map_err(|e| failure(&format!("cannot publish {prefix}"), e))?;
            }
            Ok::<(), TaskFailure>(())
        })
        .await
        .map_err(|e| failure("publishing the job's output", e))??;

        let Some(uri) = &job.output_json else {
            return Ok(None);
        };
        let bytes = store
            .get(uri)
            .map_err(|e| failure(&format!("cannot read the job's output_json {uri}"), e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| failure(&format!("{uri} is not JSON"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_in_args_become_local_paths_and_staging_folders() {
        let store = LocalS3::new("/state");
        let staged = vec![(
            S3Uri::parse("s3://bucket/processed/clean/").unwrap(),
            PathBuf::from("/state/stage"),
        )];
        let got = |a: &str| local_arg(a, &store, &staged).unwrap();
        assert_eq!(got("--raw"), "--raw");
        assert_eq!(got("s3://bucket/raw/"), "file:///state/s3/bucket/raw/");
        assert_eq!(
            got("s3://bucket/processed/clean/quarantine/"),
            "file:///state/stage/quarantine/"
        );
        assert_eq!(got("s3://bucket/processed/clean/"), "file:///state/stage/");
        assert_eq!(
            got("--in=s3://bucket/a.csv,s3://bucket/b.csv"),
            "--in=file:///state/s3/bucket/a.csv,file:///state/s3/bucket/b.csv"
        );
        assert!(local_arg("s3://bucket/../x", &store, &staged).is_err());
    }

    #[test]
    fn an_empty_output_is_not_published_over_a_prefix_that_holds_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalS3::new(dir.path());
        let prefix = S3Uri::parse("s3://bucket/processed/clean/").unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("rentals")).unwrap();
        std::fs::write(src.join("rentals/part-0.parquet"), b"rows").unwrap();
        std::fs::write(src.join("_SUCCESS"), b"").unwrap();
        store.publish_dir(&src, &prefix).unwrap();

        // A job that wrote nothing (an empty subfolder is nothing too).
        let empty = store.begin_prefix_write(&prefix).unwrap();
        std::fs::create_dir_all(empty.path().join("rentals")).unwrap();
        let other = S3Uri::parse("s3://bucket/processed/other/").unwrap();
        let fresh = store.begin_prefix_write(&other).unwrap();
        std::fs::write(fresh.path().join("x"), b"x").unwrap();
        let err = check_not_emptied(&store, &[fresh, empty]).unwrap_err();
        assert!(
            err.message
                .contains("wrote nothing under s3://bucket/processed/clean/")
                && err.message.contains("the 2 object(s) there"),
            "{}",
            err.message
        );
        // Dropped unpublished: the prefix still holds what it held.
        assert_eq!(store.list(&prefix).unwrap().len(), 2);

        // A job that wrote something may publish it, however little.
        let small = store.begin_prefix_write(&prefix).unwrap();
        std::fs::write(small.path().join("_SUCCESS"), b"").unwrap();
        assert!(check_not_emptied(&store, &[small]).is_ok());
        // Nothing over nothing is no loss.
        let new = S3Uri::parse("s3://bucket/processed/new/").unwrap();
        let nothing = store.begin_prefix_write(&new).unwrap();
        assert!(check_not_emptied(&store, &[nothing]).is_ok());
    }
}

//! The one line that says why a Spark job failed, found in its stderr (or
//! in the warm server's log).
//!
//! The last line of a Spark job's stderr is rarely the cause: a Spark
//! Connect error ends with the server's JVM stack trace
//! (`...ExecuteThreadRunner.scala:347)`), a JVM error with
//! `at java.lang.Thread.run(...)`, a gRPC error with a lone `>`, and
//! `spark-submit` adds its shutdown log lines after everything. What is
//! looked for instead, in this order:
//!
//! 1. the headline: the exception line of the last Python traceback
//!    (`pyspark...AnalysisException: [PATH_NOT_FOUND] Path does not
//!    exist: ...`, with a gRPC error's status and details), or a script's
//!    own `PROG: error: ...` line if it comes later, else the last
//!    top-level JVM exception line (`Exception in thread "main"
//!    java.lang.OutOfMemoryError: Java heap space`), else the last line
//!    that is not a stack frame or a routine log line;
//! 2. the root cause, added when the headline does not already say it:
//!    the last `Caused by:` after the headline (`java.io.IOException: No
//!    space left on device`), else a line anywhere naming a resource that
//!    ran out (disk, memory, file handles).

/// What a line must hold to name a resource that ran out.
const EXHAUSTED: &[&str] = &[
    "No space left on device",
    "Disk quota exceeded",
    "OutOfMemoryError",
    "Too many open files",
    "Cannot allocate memory",
];

/// The longest summary kept (a message can hold a whole query plan).
const MAX_CHARS: usize = 600;

/// Why a job failed, from the ends of its stdout and stderr. Both count:
/// under `spark-submit` the Python driver's traceback goes to stdout
/// (Spark's PythonRunner merges the script's two streams into the JVM's
/// stdout) while the JVM logs on stderr; a warm-mode job writes its
/// traceback on stderr.
pub fn job_failure(stdout: &str, stderr: &str) -> Option<String> {
    root_cause(&format!("{stdout}\n{stderr}"))
}

/// The line that says why the job failed, with its root cause; `None` if
/// `text` holds nothing but blank lines.
pub fn root_cause(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let (at, headline) = headline(&lines)?;
    let mut summary = headline;
    let cause = deepest_cause(&lines[at + 1..])
        .or_else(|| exhausted(&lines).filter(|_| !EXHAUSTED.iter().any(|e| summary.contains(e))));
    if let Some(cause) = cause
        && !summary.contains(cause.as_str())
    {
        summary.push_str(&format!(" (caused by {cause})"));
    }
    Some(shorten(summary))
}

/// The headline and the index of its line.
fn headline(lines: &[&str]) -> Option<(usize, String)> {
    let python = python_exception(lines);
    let script = lines.iter().rposition(|l| script_error(l));
    match (python, script) {
        (Some((at, _)), Some(own)) if own > at => return Some((own, lines[own].to_string())),
        (Some(found), _) => return Some(found),
        (None, Some(own)) => return Some((own, lines[own].to_string())),
        (None, None) => {}
    }
    if let Some(at) = lines.iter().rposition(|l| java_exception(l)) {
        let line = lines[at].trim();
        let line = line
            .strip_prefix("Exception in thread \"")
            .and_then(|rest| rest.split_once("\" "))
            .map_or(line, |(_, exception)| exception);
        return Some((at, line.to_string()));
    }
    let telling = |l: &&str| !noise(l);
    lines
        .iter()
        .rposition(|l| telling(l) && !routine_log(l))
        .or_else(|| lines.iter().rposition(telling))
        .map(|at| (at, lines[at].trim().to_string()))
}

/// The exception line of the last Python traceback (the first line after
/// `Traceback (most recent call last):` that is not indented).
fn python_exception(lines: &[&str]) -> Option<(usize, String)> {
    let start = lines
        .iter()
        .rposition(|l| l.trim_start() == "Traceback (most recent call last):")?;
    let at = start
        + 1
        + lines[start + 1..]
            .iter()
            .position(|l| !l.is_empty() && !l.starts_with([' ', '\t']))?;
    let line = lines[at];
    // Py4J (spark-submit): `Py4JJavaError: An error occurred while calling
    // o212.parquet.` then `: org.apache.spark.SparkException: [CLASS] ...`.
    if let Some(java) = lines.get(at + 1).and_then(|l| l.strip_prefix(": ")) {
        return Some((at + 1, format!("{line} {java}")));
    }
    if !line.trim_end().ends_with("terminated with:") {
        return Some((at, line.to_string()));
    }
    // A gRPC error: `Name: <_MultiThreadedRendezvous of RPC that terminated
    // with:` then `status = ...`, `details = "..."`, `debug_error_string
    // = ...` and `>` on lines of their own.
    let name = line.split(": <").next().unwrap_or(line);
    let field = |key: &str| {
        lines[at + 1..]
            .iter()
            .take_while(|l| l.trim() != ">")
            .find_map(|l| l.trim().strip_prefix(key)?.trim().strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    let said: Vec<String> = [field("status"), field("details")]
        .into_iter()
        .flatten()
        .collect();
    if said.is_empty() {
        return Some((at, line.to_string()));
    }
    Some((at, format!("{name}: {}", said.join(": "))))
}

/// `PROG: error: ...`: what argparse prints, and the jobs of pyspark/ for
/// the errors they expect.
fn script_error(line: &str) -> bool {
    line.split_once(": error: ").is_some_and(|(prog, _)| {
        !prog.is_empty() && !prog.contains(char::is_whitespace) && !line.starts_with([' ', '\t'])
    })
}

/// A JVM exception's first line: `a.b.SomeException: ...` or
/// `Exception in thread "main" a.b.SomeError: ...`, not indented and not a
/// `Caused by:` (those are causes, not the error).
fn java_exception(line: &str) -> bool {
    if line.starts_with([' ', '\t']) {
        return false;
    }
    let line = line
        .strip_prefix("Exception in thread \"")
        .and_then(|rest| rest.split_once("\" "))
        .map_or(line, |(_, exception)| exception);
    let name = line.split(':').next().unwrap_or("");
    let class = name.rsplit('.').next().unwrap_or("");
    name.contains('.')
        && !name.contains(char::is_whitespace)
        && (class.ends_with("Exception") || class.ends_with("Error"))
}

/// The last `Caused by:` among `lines`, without its prefix.
fn deepest_cause(lines: &[&str]) -> Option<String> {
    lines
        .iter()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Caused by: "))
        .map(|c| c.trim().to_string())
}

/// The first line naming a resource that ran out.
fn exhausted(lines: &[&str]) -> Option<String> {
    lines
        .iter()
        .find(|l| EXHAUSTED.iter().any(|e| l.contains(e)))
        .map(|l| {
            let l = l.trim();
            // `25/12/04 22:01:02 ERROR Executor: java.io...`: the message only.
            match routine_prefix(l) {
                Some(rest) => rest.split_once(": ").map_or(rest, |(_, m)| m).to_string(),
                None => l.to_string(),
            }
        })
}

/// A stack frame, `... 12 more`, or a line of punctuation (a gRPC
/// error's closing `>`, a caret line): nothing a reader can act on.
fn noise(line: &str) -> bool {
    let t = line.trim();
    t.is_empty()
        || t.starts_with("at ")
        || (t.starts_with("... ") && (t.ends_with(" more") || t.ends_with(" omitted")))
        || !t.chars().any(char::is_alphanumeric)
}

/// A log4j line below ERROR (`25/12/04 22:01:02 INFO SparkContext: ...`),
/// as Spark prints them on stderr while it starts and stops.
fn routine_log(line: &str) -> bool {
    routine_prefix(line.trim()).is_some_and(|_| {
        let level = line.split_whitespace().nth(2).unwrap_or("");
        matches!(level, "INFO" | "WARN" | "DEBUG" | "TRACE")
    })
}

/// The rest of a log4j line after its date, time and level.
fn routine_prefix(line: &str) -> Option<&str> {
    let mut words = line.splitn(4, ' ');
    let (date, time, level, rest) = (words.next()?, words.next()?, words.next()?, words.next()?);
    let digits = |s: &str, seps: char| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || c == seps || c == '-')
    };
    (digits(date, '/')
        && digits(time.split(['.', ',']).next().unwrap_or(""), ':')
        && matches!(
            level,
            "INFO" | "WARN" | "DEBUG" | "TRACE" | "ERROR" | "FATAL"
        ))
    .then_some(rest)
}

fn shorten(text: String) -> String {
    if text.chars().count() <= MAX_CHARS {
        return text;
    }
    let cut: String = text.chars().take(MAX_CHARS).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::{job_failure, root_cause};

    /// A Spark Connect client's error (warm mode): the Python exception,
    /// then the server's JVM stack trace, whose last frame ended the log.
    const CONNECT_PATH_NOT_FOUND: &str = r#"WARNING: Using incubator modules: jdk.incubator.vector
Traceback (most recent call last):
  File "<string>", line 39, in <module>
  File "<frozen runpy>", line 286, in run_path
  File "<frozen runpy>", line 98, in _run_module_code
  File "<frozen runpy>", line 88, in _run_code
  File "/work/dags/jobs/read_missing.py", line 4, in <module>
    spark.read.parquet("file:///tmp/flux/nowhere/").count()
  File "/venv/lib/python3.12/site-packages/pyspark/sql/connect/dataframe.py", line 239, in count
    table, _ = self.agg(F._invoke_function("count", F.lit(1)))._to_table()
               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.12/site-packages/pyspark/sql/connect/client/core.py", line 1781, in _handle_rpc_error
    raise convert_exception(
pyspark.errors.exceptions.connect.AnalysisException: [PATH_NOT_FOUND] Path does not exist: file:/tmp/flux/nowhere. SQLSTATE: 42K03

JVM stacktrace:
org.apache.spark.sql.AnalysisException
	at org.apache.spark.sql.errors.QueryCompilationErrors$.dataPathNotExistError(QueryCompilationErrors.scala:1693)
	at org.apache.spark.sql.execution.datasources.DataSource$.$anonfun$checkAndGlobPathIfNecessary$4(DataSource.scala:789)
	at org.apache.spark.util.ThreadUtils$.$anonfun$parmap$2(ThreadUtils.scala:384)
	at scala.concurrent.Future$.$anonfun$apply$1(Future.scala:687)
	at java.util.concurrent.ForkJoinTask$RunnableExecuteAction.exec(ForkJoinTask.java:1395)
	at java.util.concurrent.ForkJoinPool.runWorker(ForkJoinPool.java:1622)
	at java.util.concurrent.ForkJoinWorkerThread.run(ForkJoinWorkerThread.java:165)
"#;

    #[test]
    fn a_connect_error_gives_its_error_class_not_the_last_frame() {
        assert_eq!(
            root_cause(CONNECT_PATH_NOT_FOUND).unwrap(),
            "pyspark.errors.exceptions.connect.AnalysisException: [PATH_NOT_FOUND] Path does not exist: file:/tmp/flux/nowhere. SQLSTATE: 42K03"
        );
    }

    /// A header-only CSV read with schema inference, on the warm server:
    /// the log ended with `...ExecuteThreadRunner.scala:347)`.
    const CONNECT_UNABLE_TO_INFER: &str = r#"Traceback (most recent call last):
  File "/work/pyspark/job.py", line 12, in <module>
    df = spark.read.option("header", True).csv(path)
  File "/venv/lib/python3.12/site-packages/pyspark/sql/connect/client/core.py", line 1781, in _handle_rpc_error
    raise convert_exception(
pyspark.errors.exceptions.connect.AnalysisException: [UNABLE_TO_INFER_SCHEMA] Unable to infer schema for CSV. It must be specified manually. SQLSTATE: 42KD9

JVM stacktrace:
org.apache.spark.sql.AnalysisException
	at org.apache.spark.sql.errors.QueryCompilationErrors$.dataSchemaNotSpecifiedError(QueryCompilationErrors.scala:1765)
	at org.apache.spark.sql.execution.datasources.DataSource.$anonfun$getOrInferFileFormatSchema$12(DataSource.scala:213)
	at org.apache.spark.sql.connect.execution.ExecuteThreadRunner.execute(ExecuteThreadRunner.scala:125)
	at org.apache.spark.sql.connect.execution.ExecuteThreadRunner$ExecutionThread.run(ExecuteThreadRunner.scala:347)
"#;

    #[test]
    fn a_schema_that_cannot_be_inferred_says_so() {
        let got = root_cause(CONNECT_UNABLE_TO_INFER).unwrap();
        assert!(
            got.contains("[UNABLE_TO_INFER_SCHEMA] Unable to infer schema for CSV"),
            "{got}"
        );
        assert!(!got.contains("ExecuteThreadRunner"), "{got}");
    }

    /// A full disk under a write (spark-submit mode): the Python error is
    /// a write failure, the JVM's cause chain ends at the disk, and the
    /// shutdown's log lines and the last frame come after.
    const SUBMIT_DISK_FULL: &str = r#"25/12/04 21:40:11 INFO SparkContext: Running Spark version 4.0.1
25/12/04 21:40:30 ERROR Utils: Aborting task
java.io.IOException: No space left on device
	at java.base/java.io.FileOutputStream.writeBytes(Native Method)
	at java.base/java.io.FileOutputStream.write(FileOutputStream.java:367)
25/12/04 21:40:30 ERROR FileFormatWriter: Job job_202512042140 aborted.
Traceback (most recent call last):
  File "/work/pyspark/rental_clean.py", line 247, in <module>
    main()
  File "/venv/lib/python3.12/site-packages/py4j/protocol.py", line 327, in get_return_value
    raise Py4JJavaError(
py4j.protocol.Py4JJavaError: An error occurred while calling o212.parquet.
: org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows to file:/state/s3/flux-rental/processed/.flux-v.clean.1/rentals_clean. SQLSTATE: 58030
	at org.apache.spark.sql.errors.QueryExecutionErrors$.taskFailedWhileWritingRowsError(QueryExecutionErrors.scala:774)
	at org.apache.spark.scheduler.Task.run(Task.scala:147)
Caused by: org.apache.hadoop.fs.FSError: java.io.IOException: No space left on device
	at org.apache.hadoop.fs.RawLocalFileSystem$LocalFSFileOutputStream.write(RawLocalFileSystem.java:337)
	... 22 more
Caused by: java.io.IOException: No space left on device
	at java.base/java.io.FileOutputStream.writeBytes(Native Method)
	at java.base/java.io.FileOutputStream.write(FileOutputStream.java:367)
	at java.base/java.util.concurrent.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:642)
	at java.base/java.lang.Thread.run(Thread.java:840)

25/12/04 21:40:31 INFO SparkContext: Successfully stopped SparkContext
25/12/04 21:40:31 INFO ShutdownHookManager: Shutdown hook called
25/12/04 21:40:31 INFO ShutdownHookManager: Deleting directory /tmp/spark-4f0c/pyspark-9a1e
"#;

    #[test]
    fn a_full_disk_gives_the_write_error_and_its_root_cause() {
        let got = root_cause(SUBMIT_DISK_FULL).unwrap();
        assert!(
            got.starts_with(
                "py4j.protocol.Py4JJavaError: An error occurred while calling o212.parquet. \
                 org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows"
            ),
            "{got}"
        );
        assert!(
            got.ends_with("(caused by java.io.IOException: No space left on device)"),
            "{got}"
        );
    }

    /// The same on the warm server: the JVM stack trace is the server's.
    const CONNECT_DISK_FULL: &str = r#"Traceback (most recent call last):
  File "/work/pyspark/rental_clean.py", line 247, in <module>
    main()
pyspark.errors.exceptions.connect.SparkException: Job aborted due to stage failure: Task 0 in stage 7.0 failed 1 times, most recent failure: Lost task 0.0 in stage 7.0 (TID 12) (localhost executor driver): org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows to file:/state/s3/b/processed/.flux-v.clean.2. SQLSTATE: 58030

JVM stacktrace:
org.apache.spark.SparkException: Job aborted due to stage failure
	at org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2935)
Caused by: java.io.IOException: No space left on device
	at java.base/java.io.FileOutputStream.writeBytes(Native Method)
	at java.base/java.lang.Thread.run(Thread.java:840)
"#;

    #[test]
    fn a_full_disk_on_the_warm_server_names_the_disk() {
        let got = root_cause(CONNECT_DISK_FULL).unwrap();
        assert!(got.contains("[TASK_WRITE_FAILED]"), "{got}");
        assert!(got.contains("No space left on device"), "{got}");
        assert!(!got.contains("Thread.run"), "{got}");
    }

    /// The driver JVM out of memory (spark-submit): no Python traceback.
    const SUBMIT_OOM: &str = r#"25/12/04 21:50:02 INFO DAGScheduler: Submitting 1 missing tasks
Exception in thread "main" java.lang.OutOfMemoryError: Java heap space
	at java.base/java.util.Arrays.copyOf(Arrays.java:3537)
	at java.base/java.lang.StringBuilder.append(StringBuilder.java:179)
	at java.base/java.lang.Thread.run(Thread.java:840)
25/12/04 21:50:03 INFO ShutdownHookManager: Shutdown hook called
"#;

    #[test]
    fn a_jvm_out_of_memory_says_java_heap_space() {
        assert_eq!(
            root_cause(SUBMIT_OOM).unwrap(),
            "java.lang.OutOfMemoryError: Java heap space"
        );
    }

    /// The server died (a 40 MB line, out of memory) while the job waited:
    /// the gRPC error's repr ends with a lone `>`; the server log, read for
    /// the cause, has the OutOfMemoryError.
    const GRPC_UNAVAILABLE: &str = r#"Traceback (most recent call last):
  File "/work/pyspark/rental_clean.py", line 247, in <module>
    main()
  File "/venv/lib/python3.12/site-packages/grpc/_channel.py", line 952, in _next
    raise self
pyspark.errors.exceptions.connect.SparkConnectGrpcException: <_MultiThreadedRendezvous of RPC that terminated with:
	status = StatusCode.UNAVAILABLE
	details = "Socket closed"
	debug_error_string = "UNKNOWN:Error received from peer  {grpc_message:"Socket closed", grpc_status:14, created_time:"2026-12-04T21:52:10.1+00:00"}"
>
"#;

    #[test]
    fn a_grpc_error_gives_its_status_and_details_not_a_lone_bracket() {
        assert_eq!(
            root_cause(GRPC_UNAVAILABLE).unwrap(),
            "pyspark.errors.exceptions.connect.SparkConnectGrpcException: StatusCode.UNAVAILABLE: Socket closed"
        );
    }

    const SERVER_LOG_OOM: &str = r#"25/12/04 21:51:40 INFO SparkConnectServer: Spark Connect server started at: 127.0.0.1:41231
25/12/04 21:52:09 ERROR SparkUncaughtExceptionHandler: Uncaught exception in thread Thread[#63,Executor task launch worker for task 0.0 in stage 2.0 (TID 2),5,main]
java.lang.OutOfMemoryError: Java heap space
	at java.base/java.util.Arrays.copyOf(Arrays.java:3537)
	at java.base/java.lang.Thread.run(Thread.java:840)
25/12/04 21:52:09 INFO SparkContext: Invoking stop() from shutdown hook
25/12/04 21:52:10 INFO ShutdownHookManager: Deleting directory /tmp/spark-0c1d
"#;

    #[test]
    fn a_server_log_gives_the_error_that_ended_the_server() {
        assert_eq!(
            root_cause(SERVER_LOG_OOM).unwrap(),
            "java.lang.OutOfMemoryError: Java heap space"
        );
    }

    /// A plain Python error in the script: the last `XxxError: ...` line,
    /// though the warm launcher's `spark.stop()` logs after it.
    const PYTHON_ERROR: &str = r#"Traceback (most recent call last):
  File "<string>", line 39, in <module>
  File "/work/pyspark/rental_clean.py", line 3, in <module>
    import rental_commonn
ModuleNotFoundError: No module named 'rental_commonn'
25/12/04 21:55:00 WARN SparkSession: session stopped while a query ran
"#;

    /// spark-submit: the driver's traceback is on stdout (the JVM's, which
    /// the Python driver's streams are merged into), stderr ends with the
    /// shutdown's log lines after a WARN with an unrelated exception.
    const SUBMIT_STDOUT: &str = r#"Traceback (most recent call last):
  File "/tmp/m/job.py", line 5, in <module>
    print(spark.read.parquet(sys.argv[1]).count())
          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/py/lib/python3.11/site-packages/pyspark/python/lib/pyspark.zip/pyspark/errors/exceptions/captured.py", line 288, in deco
pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does not exist: file:/tmp/m/state/s3/flux-test/nowhere. SQLSTATE: 42K03
"#;
    const SUBMIT_STDERR: &str = r#"26/12/04 22:12:31 WARN FileStreamSink: Assume no metadata directory. Error while looking for metadata directory in the path: file:///tmp/m/state/s3/flux-test/nowhere/.
java.io.FileNotFoundException: File file:/tmp/m/state/s3/flux-test/nowhere does not exist
	at org.apache.hadoop.fs.RawLocalFileSystem.deprecatedGetFileStatus(RawLocalFileSystem.java:917)
	at java.base/java.lang.Thread.run(Thread.java:840)
26/12/04 22:12:32 INFO SparkContext: Successfully stopped SparkContext
26/12/04 22:12:32 INFO ShutdownHookManager: Shutdown hook called
26/12/04 22:12:32 INFO ShutdownHookManager: Deleting directory /tmp/spark-08cba0c9
"#;

    #[test]
    fn under_spark_submit_the_traceback_on_stdout_is_the_cause() {
        assert_eq!(
            job_failure(SUBMIT_STDOUT, SUBMIT_STDERR).unwrap(),
            "pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does not exist: file:/tmp/m/state/s3/flux-test/nowhere. SQLSTATE: 42K03"
        );
        // A job with no traceback: stderr's error, not stdout's prints.
        assert_eq!(
            job_failure("rows: 12\n", SUBMIT_OOM).unwrap(),
            "java.lang.OutOfMemoryError: Java heap space"
        );
    }

    #[test]
    fn a_python_error_gives_its_exception_line() {
        assert_eq!(
            root_cause(PYTHON_ERROR).unwrap(),
            "ModuleNotFoundError: No module named 'rental_commonn'"
        );
    }

    #[test]
    fn a_scripts_own_error_line_wins_over_an_earlier_traceback_and_later_logs() {
        let text = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: retried\n\
                    rental_clean: error: vehicles.csv: missing required column(s) brand\n\
                    25/12/04 21:55:00 INFO ShutdownHookManager: Shutdown hook called\n";
        assert_eq!(
            root_cause(text).unwrap(),
            "rental_clean: error: vehicles.csv: missing required column(s) brand"
        );
    }

    #[test]
    fn without_a_known_shape_the_last_telling_line_is_kept() {
        assert_eq!(
            root_cause("starting\nsomething went wrong\n\tat x.y(Z.java:1)\n>\n\n").unwrap(),
            "something went wrong"
        );
        assert_eq!(root_cause("only\n").unwrap(), "only");
        assert_eq!(root_cause("\n  \n"), None);
    }
}

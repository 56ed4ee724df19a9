//! The `flux-engine` command: parses the command line, calls the libraries,
//! prints. Exit codes: 0 success, 1 a run failed, 2 invalid input,
//! 130 interrupted.

mod doctor;
mod exit;
mod export_cli;
mod lambda_cli;
mod output;
mod progress;
mod query_cli;
mod sfn_cli;
mod trace_cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use engine::checkpoint::Checkpoint;
use engine::state_dir::StateDir;
use engine::{Engine, EngineError, RunOptions, RunOutcome, RunStatus};
use tasks::sample_data;

use crate::exit::Exit;

#[derive(Parser)]
#[command(
    name = "flux-engine",
    version,
    about = "Run data-pipeline DAGs locally with retries, timeouts and resume; export them to AWS Step Functions"
)]
struct Cli {
    /// Where runs are recorded [default: $FLUX_HOME, else ./.flux]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The Spark the local `emr_spark` jobs run on: `sail` (Sail's Spark Connect server, no JVM) or `spark` (the JVM Spark) [default: $FLUX_SPARK_BACKEND, else sail]
    #[arg(long, global = true, value_enum, value_name = "BACKEND")]
    spark: Option<SparkBackend>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a DAG file and report every problem with its place
    Validate {
        dag: PathBuf,
        /// Override a parameter: --param key=value
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Run a DAG
    #[command(after_help = RUN_HELP)]
    Run {
        /// The DAG file (TOML): `[dag]`, `[params]`, `[tasks.ID]`; `flux-engine validate` checks it
        dag: PathBuf,
        /// Override a parameter: --param key=value (repeatable)
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Attempts running at once [default: number of cores]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_parallel: Option<u32>,
        /// Record no trace: no spans kept or sent (OTEL_SDK_DISABLED=true does the same)
        #[arg(long)]
        no_traces: bool,
        /// Where the tasks do their work: `local` (local S3, Spark, catalog and SQL) or `aws` (the real S3, EMR, Glue and Athena of the DAG's [aws] section, with your AWS credentials)
        #[arg(long, value_enum, default_value_t = Target::Local)]
        target: Target,
    },
    /// Continue a failed, cancelled or crashed run under the same run id (where it did its work: a run on AWS resumes on AWS)
    Resume {
        /// The run to continue
        #[arg(required_unless_present = "latest", conflicts_with = "latest")]
        run_id: Option<String>,
        /// Continue the newest run
        #[arg(long)]
        latest: bool,
        /// Re-run this task and its descendants even if they succeeded (repeatable)
        #[arg(long, value_name = "TASK")]
        from: Vec<String>,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_parallel: Option<u32>,
        /// Record no trace of this part of the run (OTEL_SDK_DISABLED=true does the same)
        #[arg(long)]
        no_traces: bool,
        /// Read the DAG from FILE (an edited copy of the same DAG) instead of the file the run started from; the run reads FILE from then on
        #[arg(long, value_name = "FILE")]
        dag: Option<PathBuf>,
    },
    /// List runs, newest first: local runs, runs on AWS and Step Functions executions
    Runs {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// First record the executions of DAG's deployed state machine that are not runs here yet
        #[arg(long, value_name = "DAG")]
        sfn: Option<PathBuf>,
        /// The parameters DAG was deployed with: --param key=value
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param, requires = "sfn")]
        params: Vec<(String, String)>,
    },
    /// Deploy a DAG to AWS: upload what production reads (scripts, the report function's package), then create or update its CloudFormation stack (state machine, roles, crawlers, workgroup, report function) through a change set shown first; prints the state machine's ARN
    Deploy {
        dag: PathBuf,
        /// Fix a parameter's value in the deployment: --param key=value
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Show the change set and stop: nothing uploaded or changed
        #[arg(long)]
        dry_run: bool,
        /// Also upload the data s3_ingest tasks check for (the files their sources name)
        #[arg(long)]
        upload_data: bool,
        /// Create the buckets the uploads go to if they do not exist (kept by destroy)
        #[arg(long)]
        create_bucket: bool,
    },
    /// Delete a deployed DAG's stack and what deploy uploaded (after confirmation)
    Destroy {
        dag: PathBuf,
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Do not ask
        #[arg(long)]
        yes: bool,
    },
    /// Start an execution of a deployed DAG in Step Functions and follow it like a local run (exit 0 if it succeeds, 1 if not)
    Start {
        dag: PathBuf,
        /// A parameter for this execution: --param key=value (the others keep their deployed defaults)
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Start this published version of the state machine instead of the latest definition
        #[arg(long, value_name = "N")]
        version: Option<u32>,
        /// Print the execution's ARN and return at once
        #[arg(long)]
        no_wait: bool,
        /// On Ctrl-C, stop the execution instead of detaching from it
        #[arg(long)]
        stop_on_interrupt: bool,
    },
    /// Follow a Step Functions execution recorded as a run (after `start --no-wait` or a Ctrl-C)
    Follow {
        run_id: String,
        /// On Ctrl-C, stop the execution instead of detaching from it
        #[arg(long)]
        stop_on_interrupt: bool,
    },
    /// One run's tasks, attempts and errors
    Show {
        run_id: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One run's traces (the original run and each resume) from the spans
    /// the checkpoint keeps: a waterfall, or --html / --otlp-json files
    Trace {
        run_id: String,
        /// Write a self-contained timeline page to FILE
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Write the spans as OTLP JSON (an ExportTraceServiceRequest) to FILE
        #[arg(long = "otlp-json", value_name = "FILE")]
        otlp_json: Option<PathBuf>,
        /// Send the spans to the collector OTEL_EXPORTER_OTLP_ENDPOINT names (http/protobuf or grpc, as for runs)
        #[arg(long)]
        send: bool,
    },
    /// Draw a DAG as Graphviz DOT or Mermaid
    Graph {
        dag: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Export a DAG for production: --sfn writes the AWS Step Functions
    /// state machine (Amazon States Language JSON), --iam its execution
    /// role's policy and trust policy, --cfn a CloudFormation template
    /// deploying both. The state machine reads the DAG's parameters from
    /// its execution input ({"params": {...}}), the export's values being
    /// the defaults
    #[command(group(clap::ArgGroup::new("document").required(true).args(["sfn", "iam", "cfn"])))]
    Export {
        dag: PathBuf,
        /// Amazon States Language for AWS Step Functions (the [aws] section
        /// of the DAG holds the production settings)
        #[arg(long, conflicts_with_all = ["iam", "cfn"])]
        sfn: bool,
        /// The state machine role's IAM policy and trust policy, as
        /// {"RolePolicy": ..., "TrustPolicy": ...}
        #[arg(long, conflicts_with = "cfn")]
        iam: bool,
        /// With --iam: instead, the policy your own credentials need to run
        /// the DAG with `run --target aws` (a different principal from the
        /// state machine's role)
        #[arg(long, requires = "iam")]
        for_run: bool,
        /// A CloudFormation template (JSON): the state machine, its role,
        /// the Glue database and crawlers, the Athena workgroup and,
        /// optionally, the bucket
        #[arg(long)]
        cfn: bool,
        /// Override a parameter: --param key=value (repeatable)
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// With --sfn: write the parameters' values into the state machine
        /// instead of reading them from the execution input
        #[arg(long, requires = "sfn")]
        inline_params: bool,
        /// Write to FILE instead of stdout
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write deterministic rental sample CSVs (locations, users, vehicles,
    /// rental_transactions); tables scale with --transactions
    SampleData {
        /// Directory for the four files (created if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Rental transactions to write; the other tables scale with it
        #[arg(long, value_name = "N", default_value_t = 2000, value_parser = transactions_range())]
        transactions: u64,
        /// Same seed and N give byte-identical files
        #[arg(long, value_name = "S", default_value_t = 42)]
        seed: u64,
        /// Also mix bad lines into each file, one of every kind the
        /// cleaning job quarantines, up to this share of the file's lines
        /// (0.05 stays within the default quarantine gate); they are listed
        /// in DIR/dirty_rows.csv
        #[arg(long, value_name = "RATIO", value_parser = dirty_ratio)]
        dirty: Option<f64>,
    },
    /// Run SQL on the local catalog's tables (DataFusion here, Athena in
    /// production); tables are DATABASE.TABLE, or TABLE when the catalog
    /// has one database or with --database
    Query {
        /// The query, e.g. "SELECT count(*) FROM rental.rentals_clean"
        /// (`flux-engine catalog` lists the tables)
        sql: String,
        /// The database bare table names belong to [default: the catalog's
        /// only database, if it has one]
        #[arg(long, value_name = "DB")]
        database: Option<String>,
        #[arg(long, value_enum, default_value_t = query_cli::QueryFormat::Table)]
        format: query_cli::QueryFormat,
    },
    /// List the local catalog's tables: columns, partitions, location, format
    Catalog {
        /// Only this database's tables
        #[arg(long, value_name = "DB")]
        database: Option<String>,
        #[arg(long, value_enum, default_value_t = query_cli::CatalogFormat::Table)]
        format: query_cli::CatalogFormat,
    },
    /// A warm Spark Connect server that serves every run of the state dir
    /// until stopped (for the development loop: Spark starts once)
    Spark {
        #[command(subcommand)]
        action: SparkAction,
    },
    /// Production entry points: `lambda report` is the report Lambda
    /// function's Runtime API loop (the container image's entry point)
    Lambda {
        #[command(subcommand)]
        function: LambdaFunction,
    },
    /// Render once the report a Lambda payload (as `export --sfn` writes
    /// it) describes: reads the inputs from S3, writes the HTML to S3, and
    /// prints {"report": URI, "bytes": N}; for debugging the function
    ReportPayload {
        /// The payload, a JSON file
        payload: PathBuf,
    },
    /// Check what local runs need (sh, Java, Python, Spark, the state dir)
    Doctor {
        /// Provision PySpark now if it is missing, instead of on first use
        #[arg(long)]
        fix: bool,
    },
}

/// What `run --help` adds after the options.
const RUN_HELP: &str = "\
Examples:
  flux-engine run dags/rental.toml
  flux-engine run dags/rental.toml --param input_dir=../shared/data/rental
  flux-engine run dags/example.toml --param greeting=hi --max-parallel 1

Environment:
  FLUX_HOME                     the state dir when --state-dir is not given (else .flux/)
  RUST_LOG                      log detail on stderr (warn by default)
  OTEL_EXPORTER_OTLP_ENDPOINT   also send the run's spans to this OTLP collector
  OTEL_SDK_DISABLED=true        record no spans (as --no-traces)
  SPARK_HOME, PYSPARK_PYTHON    the Spark and the Python the emr_spark tasks use (see doctor)
  FLUX_SPARK_BACKEND            sail or spark (as --spark)
  FLUX_SPARK_MODE               warm (one Spark Connect server, the default) or submit
  AWS_PROFILE, AWS_REGION, ...  with --target aws: the usual AWS configuration

The run id, a summary and the report's path are printed at the end; exit 0 if
every task succeeded, 1 if one failed, 2 on invalid input, 130 if interrupted.";

#[derive(Subcommand)]
enum LambdaFunction {
    /// The report function behind `[aws] report_function`
    Report,
}

#[derive(Subcommand)]
enum SparkAction {
    /// Start it (or report the one running) and return
    Start,
    /// Stop it
    Stop,
    /// Say whether one runs, and where
    Status,
}

/// `--spark`: the names `FLUX_SPARK_BACKEND` takes.
#[derive(Clone, Copy, ValueEnum)]
enum SparkBackend {
    Sail,
    Spark,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

/// `--dirty`: a share of a file's lines, above 0 and below 1.
fn dirty_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number; give a share such as 0.05"))?;
    if ratio > 0.0 && ratio < 1.0 {
        Ok(ratio)
    } else {
        Err(format!(
            "{text} is not a share of the lines; give a number above 0 and below 1, such as 0.05"
        ))
    }
}

fn transactions_range() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=sample_data::MAX_TRANSACTIONS)
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "`{s}` is not KEY=VALUE; write for example --param greeting=hi"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that only print what exists end quietly when the reader of
    // their output goes away (`| head`), as Unix tools do; Rust ignores
    // SIGPIPE, so `println!` would panic instead. Commands that run or
    // change something keep ignoring it: a closed pipe must not kill a run
    // or a deploy half-way.
    if matches!(
        cli.command,
        Command::Validate { .. }
            | Command::Graph { .. }
            | Command::Export { .. }
            | Command::Runs { sfn: None, .. }
            | Command::Show { .. }
            | Command::Trace { .. }
            | Command::Query { .. }
            | Command::Catalog { .. }
    ) {
        // SAFETY: called first thing in main, before any thread exists;
        // SIG_DFL is a valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Some(backend) = cli.spark {
        let name = match backend {
            SparkBackend::Sail => "sail",
            SparkBackend::Spark => "spark",
        };
        // The one place the backend is read from is the variable, so that
        // the flag and FLUX_SPARK_BACKEND mean the same everywhere (runs,
        // doctor, spark start) and reach the jobs' environment too.
        // SAFETY: no thread exists yet (telemetry starts below), so
        // nothing reads the environment while it changes.
        unsafe { std::env::set_var("FLUX_SPARK_BACKEND", name) };
    }
    // Runs are traced (spans kept in the checkpoint, sent to a collector
    // when OTEL_EXPORTER_OTLP_ENDPOINT says so) unless told not to; other
    // commands are not.
    let traced = match cli.command {
        Command::Run { no_traces, .. } | Command::Resume { no_traces, .. } => {
            !no_traces && !engine::telemetry::disabled_by_environment()
        }
        _ => false,
    };
    let telemetry = traced.then(|| {
        engine::telemetry::Telemetry::start(
            StateDir::resolve(cli.state_dir.clone()).checkpoint_path(),
        )
    });
    init_logging(telemetry.as_ref());
    let result = dispatch(cli);
    // Flushed on every way out of a run: success, failure and Ctrl-C
    // (which ends the run, then returns here).
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(exit) => exit.report(),
    }
}

/// The terminal log (warnings by default, `RUST_LOG` to change) and, for
/// traced commands, the OpenTelemetry layer, which sees the engine's spans
/// whatever `RUST_LOG` says.
fn init_logging(telemetry: Option<&engine::telemetry::Telemetry>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let log_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn".into())
        // Events that exist for the trace only (an attempt's exception).
        .add_directive(
            format!("{}=off", engine::telemetry::TRACE_TARGET)
                .parse()
                .expect("a valid directive"),
        );
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(log_filter);
    let traces = telemetry.map(|t| {
        t.layer()
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry().with(log).with(traces).init();
}

/// The one shape of tokio runtime every async command runs on.
pub fn async_runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Exit::failure(format_args!("starting the async runtime: {e}")))
}

/// The checkpoint of a state dir that has runs; none is invalid input for
/// a command about one run.
pub fn checkpoint_with_runs(state_dir: &StateDir) -> Result<Checkpoint, Exit> {
    state_dir
        .existing_checkpoint()?
        .ok_or_else(|| Exit::invalid(format_args!("no runs in {}", state_dir.root().display())))
}

fn dispatch(cli: Cli) -> Result<u8, Exit> {
    let state_dir = StateDir::resolve(cli.state_dir);
    let registry = tasks::registry();
    match cli.command {
        Command::Validate { dag, params } => {
            let loaded = engine::dag::load(&dag, &params, &registry)?;
            println!(
                "{}: ok: DAG `{}` with {} task(s)",
                dag.display(),
                loaded.name,
                loaded.tasks.len()
            );
            Ok(0)
        }
        Command::Graph { dag, format } => {
            let loaded = engine::dag::load(&dag, &[], &registry)?;
            print!(
                "{}",
                match format {
                    GraphFormat::Dot => exporters::graph::dot(&loaded),
                    GraphFormat::Mermaid => exporters::graph::mermaid(&loaded),
                }
            );
            Ok(0)
        }
        Command::Export {
            dag,
            sfn: _,
            iam,
            for_run,
            cfn,
            params,
            inline_params,
            output,
        } => {
            let target = if for_run {
                export_cli::Target::IamForRun
            } else if iam {
                export_cli::Target::Iam
            } else if cfn {
                export_cli::Target::CloudFormation
            } else if inline_params {
                export_cli::Target::StateMachineInline
            } else {
                export_cli::Target::StateMachine
            };
            export_cli::export(target, &dag, &params, output.as_deref(), &registry)
        }
        Command::Run {
            dag,
            params,
            max_parallel,
            no_traces: _,
            target,
        } => {
            let loaded = engine::dag::load(&dag, &params, &registry)?;
            let runtime = async_runtime()?;
            let run_id = engine::run::new_run_id();
            let engine = engine_for(&runtime, target, registry, state_dir, &loaded, &run_id)?;
            drive(runtime, &engine, max_parallel, |options| {
                Box::pin(async { engine.run_with_id(&loaded, &run_id, options).await })
            })
        }
        Command::Resume {
            run_id,
            latest,
            from,
            max_parallel,
            no_traces: _,
            dag: dag_file,
        } => {
            let local = Engine::new(registry.clone(), state_dir.clone());
            let record = match run_id {
                Some(id) if !latest => local.state_dir.open_checkpoint()?.run(&id)?,
                _ => local.latest_run()?,
            };
            let run_id = record.run_id.clone();
            if record.target == tasks::aws::executions::TARGET {
                return sfn_cli::resume(
                    &state_dir,
                    &registry,
                    &record,
                    sfn_cli::Following {
                        stop_on_interrupt: false,
                    },
                );
            }
            let runtime = async_runtime()?;
            let engine = match Target::from_recorded(&record.target)? {
                Target::Local => local,
                Target::Aws => {
                    let (dag, _) = local.reload_dag(&record)?;
                    engine_for(&runtime, Target::Aws, registry, state_dir, &dag, &run_id)?
                }
            };
            drive(runtime, &engine, max_parallel, |options| {
                Box::pin(async {
                    engine
                        .resume_from_file(&run_id, &from, dag_file.as_deref(), options)
                        .await
                })
            })
        }
        Command::Lambda {
            function: LambdaFunction::Report,
        } => lambda_cli::report_function(),
        Command::ReportPayload { payload } => lambda_cli::report_payload(&payload),
        Command::Doctor { fix } => Ok(doctor::run(&state_dir, fix)),
        Command::Spark { action } => spark_server(&state_dir, action),
        Command::Query {
            sql,
            database,
            format,
        } => query_cli::query(&state_dir, &sql, database.as_deref(), format),
        Command::Catalog { database, format } => {
            query_cli::catalog(&state_dir, database.as_deref(), format)
        }
        Command::SampleData {
            out,
            transactions,
            seed,
            dirty,
        } => {
            let summary = sample_data::generate(&out, transactions, seed)?;
            println!("{summary}");
            if let Some(ratio) = dirty {
                let added = tasks::dirty_rows::add(&out, ratio)?;
                let mut by_file: Vec<(&str, usize)> = Vec::new();
                for row in &added {
                    match by_file.iter_mut().find(|(f, _)| *f == row.file) {
                        Some(slot) => slot.1 += 1,
                        None => by_file.push((row.file, 1)),
                    }
                }
                let listed: Vec<String> = by_file
                    .iter()
                    .map(|(file, n)| format!("{file} {n}"))
                    .collect();
                println!(
                    "added {} bad lines ({}), listed in {}",
                    added.len(),
                    if listed.is_empty() {
                        "the files are too small for any at this ratio".to_string()
                    } else {
                        listed.join(", ")
                    },
                    out.join(tasks::dirty_rows::MANIFEST).display()
                );
            }
            Ok(0)
        }
        Command::Runs {
            format,
            sfn,
            params,
        } => {
            if let Some(dag) = sfn {
                let n = sfn_cli::import(&state_dir, &registry, &dag, &params)?;
                eprintln!(
                    "flux-engine: recorded {n} execution(s) of the deployed state machine as runs"
                );
            }
            refresh_running_executions(&state_dir, &registry);
            let Some(checkpoint) = state_dir.existing_checkpoint()? else {
                if matches!(format, Format::Json) {
                    println!("[]");
                } else {
                    println!("no runs in {}", state_dir.root().display());
                }
                return Ok(0);
            };
            let runs = checkpoint.runs()?;
            print!(
                "{}",
                output::runs(&runs, &state_dir, matches!(format, Format::Json))
            );
            Ok(0)
        }
        Command::Show { run_id, format } => {
            let checkpoint = checkpoint_with_runs(&state_dir)?;
            let record = checkpoint.run(&run_id).ok();
            drop(checkpoint);
            if let Some(record) = record.filter(|r| r.target == tasks::aws::executions::TARGET) {
                // An execution's record is brought up to date first; when
                // AWS cannot be reached, what was last recorded is shown.
                if let Err(e) = sfn_cli::refresh(&state_dir, &registry, &record, false) {
                    eprintln!(
                        "flux-engine: showing what was last recorded: {}",
                        e.message()
                    );
                }
            }
            let checkpoint = checkpoint_with_runs(&state_dir)?;
            let report = output::RunReport::load(&checkpoint, &state_dir, &run_id)?;
            match format {
                Format::Json => println!("{}", report.json()),
                Format::Table => print!("{}", report.table()),
            }
            Ok(0)
        }
        Command::Trace {
            run_id,
            html,
            otlp_json,
            send,
        } => {
            if let Some(record) = state_dir
                .existing_checkpoint()?
                .and_then(|c| c.run(&run_id).ok())
                .filter(|r| r.target == tasks::aws::executions::TARGET)
            {
                // The trace of an execution is built from its history.
                sfn_cli::refresh(&state_dir, &registry, &record, true)?;
            }
            trace_cli::trace(
                &state_dir,
                &run_id,
                html.as_deref(),
                otlp_json.as_deref(),
                send,
            )
        }
        Command::Deploy {
            dag,
            params,
            dry_run,
            upload_data,
            create_bucket,
        } => sfn_cli::deploy(
            &registry,
            &dag,
            &params,
            tasks::aws::deploy::DeployOptions {
                dry_run,
                upload_data,
                create_buckets: create_bucket,
                report_binary: std::env::var_os("FLUX_REPORT_BINARY").map(PathBuf::from),
            },
        ),
        Command::Destroy { dag, params, yes } => sfn_cli::destroy(&registry, &dag, &params, yes),
        Command::Start {
            dag,
            params,
            version,
            no_wait,
            stop_on_interrupt,
        } => sfn_cli::start(
            &state_dir,
            &registry,
            &dag,
            &params,
            version,
            no_wait,
            sfn_cli::Following { stop_on_interrupt },
        ),
        Command::Follow {
            run_id,
            stop_on_interrupt,
        } => {
            let record = state_dir.open_checkpoint()?.run(&run_id)?;
            if record.target != tasks::aws::executions::TARGET {
                return Err(Exit::invalid(format_args!(
                    "run {run_id} ran {} (target {}), not in Step Functions: `flux-engine show {run_id}` shows it",
                    if record.target == "local" {
                        "here"
                    } else {
                        "from here"
                    },
                    record.target
                )));
            }
            sfn_cli::follow(
                &state_dir,
                &registry,
                &record,
                sfn_cli::Following { stop_on_interrupt },
            )
        }
    }
}

/// Brings the runs that are Step Functions executions still running up
/// to date, for `runs`; one that cannot be reached stays as recorded.
fn refresh_running_executions(state_dir: &StateDir, registry: &engine::Registry) {
    let Ok(Some(checkpoint)) = state_dir.existing_checkpoint() else {
        return;
    };
    let running: Vec<_> = checkpoint
        .runs()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.target == tasks::aws::executions::TARGET && r.status == RunStatus::Running)
        .collect();
    drop(checkpoint);
    for record in running {
        if let Err(e) = sfn_cli::refresh(state_dir, registry, &record, false) {
            eprintln!(
                "flux-engine: run {}: showing what was last recorded: {}",
                record.run_id,
                e.message()
            );
        }
    }
}

/// `flux-engine spark start|stop|status`.
fn spark_server(state_dir: &StateDir, action: SparkAction) -> Result<u8, Exit> {
    use tasks::emr_spark::{connect, runtime};
    let root = state_dir.root();
    match action {
        SparkAction::Status => {
            match connect::persistent(root) {
                Some(found) => println!(
                    "a warm {} server runs for {}: {} (pid {}, since {}; log {})",
                    found.backend,
                    root.display(),
                    found.url,
                    found.pid,
                    found.started_at,
                    found.log
                ),
                None => println!(
                    "no warm Spark runs for {}; runs start their own (`flux-engine spark start` keeps one)",
                    root.display()
                ),
            }
            Ok(0)
        }
        SparkAction::Stop => {
            let stopped = connect::stop_persistent(root).map_err(Exit::failure)?;
            println!(
                "{}",
                if stopped {
                    "stopped the warm Spark"
                } else {
                    "no warm Spark was running"
                }
            );
            Ok(0)
        }
        SparkAction::Start => {
            let say = |line: &str| eprintln!("flux-engine: {line}");
            let spark = runtime::resolve(true, &say).map_err(Exit::failure)?;
            let started = async_runtime()?
                .block_on(connect::start_persistent(&spark, root, &say))
                .map_err(Exit::failure)?;
            println!(
                "a warm {} server runs for {}: {} (pid {}); every run of this state dir with that backend uses it until `flux-engine spark stop`",
                started.backend,
                root.display(),
                started.url,
                started.pid
            );
            Ok(0)
        }
    }
}

type RunFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<RunOutcome, EngineError>> + 'a>>;

/// Runs or resumes on a tokio runtime, with Ctrl-C (SIGINT, SIGTERM)
/// cancelling the run, and prints the outcome.
/// Where a run's tasks do their work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    Local,
    Aws,
}

impl Target {
    /// The target a run recorded.
    fn from_recorded(name: &str) -> Result<Target, Exit> {
        match name {
            "local" => Ok(Target::Local),
            tasks::aws::TARGET => Ok(Target::Aws),
            other => Err(Exit::invalid(format_args!(
                "the run was recorded with target `{other}`, which this build of flux-engine does not know; resume it with the release that started it"
            ))),
        }
    }
}

/// The engine for a run of `dag` (id `run_id`) on `target`. On AWS, the
/// connection is checked (the DAG's [aws] settings, a region,
/// credentials) before anything starts: a problem is an invalid-input
/// error naming what to set.
fn engine_for(
    runtime: &tokio::runtime::Runtime,
    target: Target,
    registry: engine::Registry,
    state_dir: StateDir,
    dag: &engine::Dag,
    run_id: &str,
) -> Result<Engine, Exit> {
    match target {
        Target::Local => Ok(Engine::new(registry, state_dir)),
        Target::Aws => {
            let aws = runtime
                .block_on(tasks::aws::AwsRun::connect(dag, &registry))
                .map_err(|e| Exit::invalid(format_args!("cannot run on AWS: {e}")))?;
            aws.serve_run(state_dir.checkpoint_path(), run_id);
            let registry = tasks::aws::registry(registry, &aws);
            Ok(Engine::new(registry, state_dir).with_target(tasks::aws::TARGET))
        }
    }
}

fn drive<'a>(
    runtime: tokio::runtime::Runtime,
    engine: &'a Engine,
    max_parallel: Option<u32>,
    start: impl FnOnce(RunOptions) -> RunFuture<'a>,
) -> Result<u8, Exit> {
    let progress = Arc::new(progress::Progress::for_stderr());
    let max_parallel = max_parallel
        .map(|n| n as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let outcome = runtime.block_on(async {
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        // Registered before the run starts, so that a Ctrl-C at any moment
        // of the run cancels it instead of killing the process outright. A
        // closed terminal (SIGHUP) cancels it too: its task processes stop
        // and the run is recorded cancelled, ready to resume.
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        let hangup = signal(SignalKind::hangup());
        let signals = tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (interrupt, terminate, hangup) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            let _ = cancel_tx.send(true);
        });
        let options = RunOptions {
            max_parallel,
            observer: progress.clone(),
            cancel: cancel_rx,
        };
        let outcome = start(options).await;
        signals.abort();
        // What the kinds kept for the run (a warm Spark holds gigabytes)
        // goes now rather than when their guards notice our exit.
        engine.registry.end_of_run().await;
        outcome
    });
    let outcome = outcome?;
    let checkpoint = engine.state_dir.open_checkpoint()?;
    if let Ok(report) = output::RunReport::load(&checkpoint, &engine.state_dir, &outcome.run_id) {
        // After a hang-up there may be no terminal to print to: the run's
        // record is what counts, so a lost summary is no error.
        use std::io::Write;
        let _ = write!(std::io::stdout().lock(), "{}", report.summary());
    }
    Ok(match outcome.status {
        RunStatus::Succeeded => 0,
        RunStatus::Cancelled => 130,
        RunStatus::Failed | RunStatus::Running => 1,
    })
}

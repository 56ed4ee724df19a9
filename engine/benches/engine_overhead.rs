//! The engine's own overhead: how many trivial tasks per second it completes
//! through the real code path (DAG loader, scheduler, durable SQLite
//! checkpoint), and how much memory that takes.
//!
//! A program that prints figures, not a timed test:
//!
//! ```text
//! cargo bench -p flux-engine-core --bench engine_overhead
//! ```
//!
//! The parent process runs every repetition of every scenario in a fresh
//! child process (this same binary with `--scenario NAME --tracing MODE`),
//! so that each child's peak RSS (`VmHWM`) belongs to one run alone.
//! Repetitions are interleaved (wide off, wide checkpoint, wide collector,
//! chain off, ...) so that drift in the machine's speed spreads over all.
//!
//! Tracing modes (issue 5): `off` (no span layer: the baseline),
//! `checkpoint` (spans kept in the checkpoint by the recorder layer, as
//! every `flux-engine run` without a collector does), `collector` (sent
//! over OTLP/HTTP through tracing-opentelemetry and the SDK to a receiver
//! the parent runs on 127.0.0.1, which answers 200 and counts what it
//! gets, and kept in the checkpoint too). The run time includes flushing
//! the spans at the end (`flush ms`); `paired` is the median of each
//! repetition's ratio to the `off` run of the same repetition.
//! `FLUX_BENCH_REPETITIONS=N` runs N repetitions instead of 5.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use engine::scheduler::Silent;
use engine::state_dir::StateDir;
use engine::{
    Attempt, Engine, Kind, Registry, RunOptions, RunStatus, TaskAction, TaskConfig, TaskFailure,
};

/// Runs per scenario and mode, unless `FLUX_BENCH_REPETITIONS` says
/// otherwise (more on a busy machine: the medians settle).
const REPETITIONS: usize = 5;

fn repetitions() -> usize {
    std::env::var("FLUX_BENCH_REPETITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(REPETITIONS)
}

const MODES: &[&str] = &["off", "checkpoint", "collector"];

/// (name, task count)
const SCENARIOS: &[(&str, usize)] = &[("wide", 10_000), ("chain", 10_000), ("fan_in", 1_001)];

/// `type = "noop"`: does nothing and succeeds. The engine crate cannot use
/// the tasks crate's noop, so the bench has its own.
struct Noop;

struct NoopAction;

/// A noop takes no fields.
#[derive(serde::Deserialize)]
struct NoFields {}

impl TaskConfig for NoFields {}

impl Kind for Noop {
    const NAME: &'static str = "noop";
    const SUMMARY: &'static str = "does nothing";
    type Config = NoFields;

    fn action(&self, _config: NoFields) -> Arc<dyn TaskAction> {
        Arc::new(NoopAction)
    }
}

#[async_trait]
impl TaskAction for NoopAction {
    async fn run(&self, _attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        Ok(None)
    }

    /// Nothing happens inside a `noop` attempt that its span could show.
    fn traces_inside(&self) -> bool {
        false
    }
}

/// The DAG file text for a scenario.
fn dag_text(scenario: &str) -> String {
    let mut text = format!("[dag]\nname = \"bench_{scenario}\"\n");
    match scenario {
        "wide" => {
            for i in 0..10_000 {
                text += &format!("\n[tasks.t{i}]\ntype = \"noop\"\n");
            }
        }
        "chain" => {
            text += "\n[tasks.t0]\ntype = \"noop\"\n";
            for i in 1..10_000 {
                text += &format!(
                    "\n[tasks.t{i}]\ntype = \"noop\"\ndepends_on = [\"t{}\"]\n",
                    i - 1
                );
            }
        }
        "fan_in" => {
            let mut leaves = Vec::new();
            for i in 0..1_000 {
                text += &format!("\n[tasks.leaf{i}]\ntype = \"noop\"\n");
                leaves.push(format!("\"leaf{i}\""));
            }
            text += &format!(
                "\n[tasks.sink]\ntype = \"noop\"\ndepends_on = [{}]\n",
                leaves.join(", ")
            );
        }
        other => panic!("unknown scenario `{other}`"),
    }
    text
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Peak resident set size of this process, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child: one run of one scenario; prints one `RESULT` line.
fn child(scenario: &str, mode: &str) {
    let mut registry = Registry::new();
    registry.register(Arc::new(Noop));
    let text = dag_text(scenario);
    let state = tempfile::tempdir().expect("a temp dir");
    let path = state.path().join(format!("{scenario}.toml"));

    let load_start = Instant::now();
    let dag = engine::dag::load_str(&path, &text, &[], &registry)
        .unwrap_or_else(|e| panic!("the generated DAG is invalid: {e}"));
    let load_s = load_start.elapsed().as_secs_f64();
    let tasks = dag.tasks.len();

    let state_dir = StateDir::new(state.path().join("state"));
    let telemetry = (mode != "off").then(|| {
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        let telemetry = engine::telemetry::Telemetry::start(state_dir.checkpoint_path());
        assert_eq!(telemetry.exports(), mode == "collector", "{mode}");
        let subscriber = tracing_subscriber::registry().with(
            telemetry
                .layer()
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        );
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        telemetry
    });
    let engine = Engine::new(registry, state_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (_cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let options = RunOptions {
        max_parallel: cores(),
        observer: Arc::new(Silent),
        cancel: cancel_rx,
    };
    let run_start = Instant::now();
    let outcome = runtime
        .block_on(engine.run_with_id(&dag, "bench-run", options))
        .expect("the run completes");
    let flush_start = Instant::now();
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    let flush_s = flush_start.elapsed().as_secs_f64();
    let run_s = run_start.elapsed().as_secs_f64();
    assert_eq!(outcome.status, RunStatus::Succeeded, "{scenario}");

    println!(
        "RESULT scenario={scenario} tasks={tasks} load_s={load_s:.6} run_s={run_s:.6} flush_s={flush_s:.6} hwm_kib={}",
        vm_hwm_kib()
    );
}

struct Sample {
    load_s: f64,
    run_s: f64,
    /// Of `run_s`: writing and sending the spans still queued at the end.
    flush_s: f64,
    hwm_kib: u64,
}

/// Parent: runs one child and parses its `RESULT` line.
fn sample(scenario: &str, mode: &str, collector: &str) -> Sample {
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut command = Command::new(exe);
    command
        .args(["--scenario", scenario, "--tracing", mode])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if mode == "collector" {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector);
    }
    let out = command.output().expect("the child starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scenario {scenario} failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line from {scenario}: {stdout}"));
    let field = |name: &str| -> &str {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in `{line}`"))
    };
    Sample {
        load_s: field("load_s").parse().expect("load_s"),
        run_s: field("run_s").parse().expect("run_s"),
        flush_s: field("flush_s").parse().expect("flush_s"),
        hwm_kib: field("hwm_kib").parse().expect("hwm_kib"),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo bench` adds `--bench` (and perhaps a filter); only
    // `--scenario NAME` means anything here.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let mode = args
            .iter()
            .position(|a| a == "--tracing")
            .and_then(|j| args.get(j + 1))
            .map_or("off", String::as_str);
        child(args.get(i + 1).expect("--scenario NAME"), mode);
        return;
    }
    let (collector, received) = receiver();

    let repetitions = repetitions();
    println!(
        "engine_overhead: noop tasks, durable SQLite checkpoint, max_parallel = {}, {repetitions} runs per scenario, one process per run",
        cores()
    );
    let cases: Vec<(&str, usize, &str)> = SCENARIOS
        .iter()
        .flat_map(|&(name, tasks)| MODES.iter().map(move |&mode| (name, tasks, mode)))
        .collect();
    let mut samples: Vec<Vec<Sample>> = cases.iter().map(|_| Vec::new()).collect();
    for rep in 0..repetitions {
        for (c, (name, _, mode)) in cases.iter().enumerate() {
            let got = sample(name, mode, &collector);
            eprintln!(
                "  run {}/{repetitions} {name:<7} {mode:<10} load {:7.1} ms  run {:7.3} s  peak {:6.1} MiB",
                rep + 1,
                got.load_s * 1e3,
                got.run_s,
                got.hwm_kib as f64 / 1024.0
            );
            samples[c].push(got);
        }
    }

    println!();
    println!(
        "{:<8} {:<10} {:>6} {:>14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "scenario",
        "tracing",
        "tasks",
        "median tasks/s",
        "min",
        "max",
        "vs off",
        "paired",
        "flush ms",
        "load ms",
        "peak MiB"
    );
    let mut baseline = 0.0;
    let mut baseline_runs: &[Sample] = &[];
    for ((name, tasks, mode), runs) in cases.iter().zip(&samples) {
        let rates: Vec<f64> = runs.iter().map(|r| *tasks as f64 / r.run_s).collect();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        let load_ms = median(runs.iter().map(|r| r.load_s * 1e3).collect());
        let rss = median(runs.iter().map(|r| r.hwm_kib as f64 / 1024.0).collect());
        let rate = median(rates);
        if *mode == "off" {
            baseline = rate;
            baseline_runs = runs;
        }
        // Each repetition's run against the `off` run of the same
        // repetition (minutes apart at most): steadier than the ratio of
        // the medians when the machine's speed drifts.
        let paired = median(
            runs.iter()
                .zip(baseline_runs)
                .map(|(r, off)| off.run_s / r.run_s)
                .collect(),
        );
        let flush_ms = median(runs.iter().map(|r| r.flush_s * 1e3).collect());
        println!(
            "{name:<8} {mode:<10} {tasks:>6} {rate:>14.0} {min:>8.0} {max:>8.0} {:>8.2} {paired:>8.2} {flush_ms:>8.1} {load_ms:>8.1} {rss:>12.1}",
            rate / baseline
        );
    }
    let (requests, bytes) = received();
    println!();
    println!(
        "the collector received {requests} OTLP requests, {:.1} MiB in all",
        bytes as f64 / (1024.0 * 1024.0)
    );
}

/// An OTLP/HTTP sink on 127.0.0.1: answers every request with 200 and
/// counts requests and body bytes. Returns its URL and a reader of the
/// counts.
fn receiver() -> (String, impl Fn() -> (u64, u64)) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (r, b) = (requests.clone(), bytes.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (r, b) = (r.clone(), b.clone());
            std::thread::spawn(move || {
                let Ok(clone) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(clone);
                let mut writer = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    r.fetch_add(1, Ordering::Relaxed);
                    b.fetch_add(length as u64, Ordering::Relaxed);
                    let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, move || {
        (
            requests.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
        )
    })
}

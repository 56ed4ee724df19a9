//! Traces sent over OTLP/HTTP to a receiver this test runs on 127.0.0.1:
//! what arrives is decoded with the OpenTelemetry protobuf definitions
//! (`opentelemetry-proto`, not flux-engine's code) and checked against
//! the DAG: one trace, the run span as root, a span per task under it and
//! a span per attempt under each task, with their attributes, statuses
//! and the failing attempt's exception.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Scratch, text};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use prost::Message;

/// A retried task (fails once, then succeeds after a fixed 1 s delay) and
/// a failing task with a dependent, after a first task.
const DAG: &str = r#"
[dag]
name = "traced"

[tasks.first]
type = "shell"
command = "printf %s \"$TRACEPARENT\" > traceparent.txt"

[tasks.flaky]
type = "shell"
depends_on = ["first"]
command = "test -f flaky.ok || { touch flaky.ok; exit 3; }"
retry = { max_attempts = 2, interval_seconds = 1, jitter = "none" }

[tasks.broken]
type = "shell"
depends_on = ["first"]
command = "echo the disk is on fire >&2; exit 1"

[tasks.after_broken]
type = "shell"
depends_on = ["broken"]
command = "true"

[tasks.upload]
type = "s3_ingest"
depends_on = ["first"]
source = "landing.csv"
destination = "s3://lake/raw/"
"#;

/// One request: path, content type, body.
type Request = (String, String, Vec<u8>);

/// An OTLP/HTTP receiver: every POST body, with its path and content type.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let store = store.clone();
                std::thread::spawn(move || serve(stream, &store));
            }
        });
        Receiver { port, requests }
    }

    fn requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn spans(&self) -> (Vec<Span>, Vec<KeyValue>) {
        let requests = self.requests.lock().unwrap();
        let mut spans = Vec::new();
        let mut resource = Vec::new();
        for (path, content_type, body) in requests.iter() {
            assert_eq!(path, "/v1/traces");
            assert_eq!(content_type, "application/x-protobuf");
            let request = ExportTraceServiceRequest::decode(body.as_slice())
                .expect("the body is an ExportTraceServiceRequest");
            for resource_spans in request.resource_spans {
                if let Some(r) = resource_spans.resource {
                    resource = r.attributes;
                }
                for scope_spans in resource_spans.scope_spans {
                    spans.extend(scope_spans.spans);
                }
            }
        }
        (spans, resource)
    }
}

/// HTTP/1.1 with keep-alive: requests until the client closes.
fn serve(stream: TcpStream, store: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut length = 0usize;
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        store.lock().unwrap().push((path, content_type, body));
        let reply =
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// `flux-engine run DAG` in `dir` with `env`.
fn run(s: &Scratch, dir: &Path, env: &[(&str, String)]) -> (Output, Duration) {
    let mut command = common::command(&s.path("state"));
    command.current_dir(dir).arg("run").arg("traced.toml");
    for (k, v) in env {
        command.env(k, v);
    }
    // The test's own environment must not send this run elsewhere.
    command
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES");
    let started = Instant::now();
    let output = command.output().expect("start flux-engine");
    (output, started.elapsed())
}

/// A folder holding `traced.toml` (the DAG `text`) and the file the
/// upload task sends.
fn dag_dir(s: &Scratch, text: &str) -> std::path::PathBuf {
    let dir = s.path("dag");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("traced.toml"), text).unwrap();
    std::fs::write(dir.join("landing.csv"), "id\n1\n").unwrap();
    dir
}

fn the_run_id(s: &Scratch) -> String {
    let runs: Vec<_> = std::fs::read_dir(s.path("state").join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

#[test]
fn a_run_arrives_at_the_collector_as_one_tree_of_spans() {
    let receiver = Receiver::start();
    let s = Scratch::new();
    let dir = dag_dir(&s, DAG);
    let (output, _) = run(
        &s,
        &dir,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{}", receiver.port),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_SERVICE_NAME", "flux-test".into()),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        !text(&output.stderr).contains("warning: traces"),
        "{}",
        text(&output.stderr)
    );
    let run_id = the_run_id(&s);

    // The spans were flushed before the process exited.
    let (spans, resource) = receiver.spans();
    assert_eq!(
        string(&resource, "service.name").as_deref(),
        Some("flux-test")
    );
    assert!(string(&resource, "service.version").is_some());
    let traces: std::collections::BTreeSet<String> =
        spans.iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(traces.len(), 1, "one trace per run");

    // The root: the run.
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1);
    let root = roots[0];
    assert_eq!(root.name, "run traced");
    assert_eq!(
        string(&root.attributes, "flux.run_id"),
        Some(run_id.clone())
    );
    assert_eq!(
        string(&root.attributes, "flux.dag").as_deref(),
        Some("traced")
    );
    assert_eq!(
        string(&root.attributes, "flux.status").as_deref(),
        Some("failed")
    );
    assert_eq!(
        root.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    // One span per task that ran, under the run; none for the task that
    // never started.
    let by_id: BTreeMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let tasks: BTreeMap<String, &Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .map(|s| (string(&s.attributes, "flux.task_id").unwrap(), s))
        .collect();
    assert_eq!(
        tasks.keys().map(String::as_str).collect::<Vec<_>>(),
        ["broken", "first", "flaky", "upload"]
    );
    for (id, span) in &tasks {
        assert_eq!(span.name, format!("task {id}"));
        assert_eq!(
            string(&span.attributes, "flux.task_type").as_deref(),
            Some(if id == "upload" { "s3_ingest" } else { "shell" })
        );
        assert_eq!(
            string(&span.attributes, "flux.run_id"),
            Some(run_id.clone())
        );
    }
    assert_eq!(
        string(&tasks["first"].attributes, "flux.status").as_deref(),
        Some("succeeded")
    );
    assert_eq!(
        string(&tasks["flaky"].attributes, "flux.status").as_deref(),
        Some("succeeded")
    );
    assert_eq!(
        string(&tasks["broken"].attributes, "flux.status").as_deref(),
        Some("failed")
    );

    // Attempts under their task: flaky's two are siblings, the second
    // starting after the 1 s retry delay.
    let attempts = |task: &str| -> Vec<&Span> {
        let mut a: Vec<&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id == tasks[task].span_id)
            .collect();
        a.sort_by_key(|s| int(&s.attributes, "flux.attempt"));
        a
    };
    let flaky = attempts("flaky");
    assert_eq!(flaky.len(), 2);
    assert_eq!(flaky[0].name, "attempt 1");
    assert_eq!(flaky[1].name, "attempt 2");
    assert_eq!(
        int(&flaky[0].attributes, "flux.attempt"),
        Some(1),
        "{:?}",
        flaky[0].attributes
    );
    assert_eq!(
        string(&flaky[0].attributes, "flux.status").as_deref(),
        Some("failed")
    );
    assert_eq!(
        string(&flaky[1].attributes, "flux.status").as_deref(),
        Some("succeeded")
    );
    assert_eq!(
        flaky[0].status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        flaky[1].status.as_ref().map(|s| s.code),
        Some(StatusCode::Ok as i32)
    );
    let gap = flaky[1].start_time_unix_nano - flaky[0].end_time_unix_nano;
    assert!(gap >= 900_000_000, "the retry delay is visible: {gap} ns");
    let retry = tasks["flaky"].events.iter().find(|e| e.name == "retry");
    assert!(retry.is_some(), "a retry event on the task");

    // The failure: the attempt's status and its exception event.
    let broken = attempts("broken");
    assert_eq!(broken.len(), 1);
    let status = broken[0].status.as_ref().unwrap();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert!(status.message.contains("exit code 1"), "{}", status.message);
    let exception = broken[0]
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("an exception event");
    assert!(
        string(&exception.attributes, "exception.message")
            .unwrap()
            .contains("the disk is on fire")
    );
    // A step inside a task kind: the upload, under its attempt.
    let upload = attempts("upload");
    assert_eq!(upload.len(), 1);
    let puts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == upload[0].span_id)
        .collect();
    assert_eq!(puts.len(), 1, "one object, one s3.put");
    assert_eq!(puts[0].name, "s3.put");
    assert_eq!(
        string(&puts[0].attributes, "flux.step.target").as_deref(),
        Some("s3://lake/raw/landing.csv")
    );
    assert_eq!(
        puts[0].status.as_ref().map(|s| s.code),
        Some(StatusCode::Ok as i32)
    );
    assert!(puts[0].start_time_unix_nano >= upload[0].start_time_unix_nano);
    assert!(puts[0].end_time_unix_nano <= upload[0].end_time_unix_nano);

    // The shell command got its attempt's W3C traceparent.
    let first = attempts("first");
    let traceparent = std::fs::read_to_string(dir.join("traceparent.txt")).unwrap();
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", hex(&root.trace_id), hex(&first[0].span_id))
    );

    // Every span's parent is in the trace.
    for span in &spans {
        if !span.parent_span_id.is_empty() {
            assert!(by_id.contains_key(&span.parent_span_id), "{}", span.name);
        }
    }

    // The checkpoint kept the same spans: `trace` shows them.
    let shown = common::command(&s.path("state"))
        .args(["trace", &run_id])
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let waterfall = text(&shown.stdout);
    for line in ["run traced", "task flaky", "attempt 2", "task broken"] {
        assert!(waterfall.contains(line), "{line}\n{waterfall}");
    }
    assert!(waterfall.contains(&hex(&root.trace_id)), "{waterfall}");
}

#[test]
fn an_unreachable_collector_costs_a_warning_not_the_run() {
    // A port nothing listens on: connections are refused.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let s = Scratch::new();
    let dir = dag_dir(&s, DAG);
    let (output, took) = run(
        &s,
        &dir,
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )],
    );
    let stderr = text(&output.stderr);
    // The run's own result, as without a collector.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("warning: traces could not").count(),
        1,
        "{stderr}"
    );
    // flaky's retry waits 1 s; the rest is quick. A collector that cannot
    // be reached must not add its timeouts.
    assert!(took < Duration::from_secs(6), "{took:?}");
    // The spans are in the checkpoint all the same.
    let run_id = the_run_id(&s);
    let shown = common::command(&s.path("state"))
        .args(["trace", &run_id])
        .output()
        .unwrap();
    assert!(
        text(&shown.stdout).contains("attempt 2"),
        "{}",
        text(&shown.stdout)
    );
}

/// Ctrl-C ends the run, and its spans still reach the collector before
/// the process exits, the cancelled attempt with its status.
#[test]
fn spans_are_flushed_when_the_run_is_interrupted() {
    let receiver = Receiver::start();
    let s = Scratch::new();
    let dir = dag_dir(
        &s,
        "[dag]\nname = \"slow\"\n[tasks.wait]\ntype = \"shell\"\ncommand = \"sleep 30\"\n",
    );
    let child = common::command(&s.path("state"))
        .current_dir(&dir)
        .args(["run", "traced.toml"])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", receiver.port),
        )
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the attempt runs (its folder exists), then interrupt.
    let started = Instant::now();
    loop {
        let runs = s.path("state").join("runs");
        let attempt = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path().join("wait").join("1"));
        if attempt.is_some_and(|a| a.exists()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the attempt never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) takes no pointers; the pid is this test's child,
    // not yet waited for, so it cannot name another process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    assert_ne!(output.status.code(), Some(0), "{}", text(&output.stderr));

    let (spans, _) = receiver.spans();
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name} among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let root = find("run slow");
    assert_eq!(
        string(&root.attributes, "flux.status").as_deref(),
        Some("cancelled")
    );
    let attempt = find("attempt 1");
    assert_eq!(
        string(&attempt.attributes, "flux.status").as_deref(),
        Some("cancelled")
    );
    assert_eq!(
        attempt.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
}

/// The same run over OTLP/gRPC, to a `TraceService` server of the test's
/// own (the generated server of `opentelemetry-proto`, on tonic).
#[test]
fn spans_arrive_over_grpc_too() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };

    struct Sink(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

    #[tonic::async_trait]
    impl TraceService for Sink {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            self.0.lock().unwrap().push(request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        }
    }

    let received = Arc::new(Mutex::new(Vec::new()));
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sink = Sink(received.clone());
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink))
                .serve_with_shutdown(([127, 0, 0, 1], port).into(), async {
                    let _ = stopped.await;
                }),
        )
    });
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gRPC server never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let s = Scratch::new();
    let dir = dag_dir(&s, DAG);
    let (output, _) = run(
        &s,
        &dir,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("warning: traces"), "{stderr}");
    let _ = stop.send(());
    server.join().unwrap().expect("the gRPC server ran");

    let requests = received.lock().unwrap();
    let spans: Vec<&Span> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let traces: std::collections::BTreeSet<String> =
        spans.iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(traces.len(), 1);
    let root = spans
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .expect("a root");
    assert_eq!(root.name, "run traced");
    assert_eq!(
        string(&root.attributes, "flux.run_id"),
        Some(the_run_id(&s))
    );
    let mut names: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == root.span_id)
        .map(|s| s.name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["task broken", "task first", "task flaky", "task upload"]
    );
    // first, flaky twice, broken, upload: five attempts.
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.name.starts_with("attempt "))
            .count(),
        5
    );
}

/// `resume` is a new trace whose root links to the original run's root.
#[test]
fn a_resumed_run_is_a_new_trace_linked_to_the_first() {
    let receiver = Receiver::start();
    let s = Scratch::new();
    let dir = dag_dir(&s, DAG);
    let endpoint = (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{}", receiver.port),
    );
    let (first, _) = run(&s, &dir, std::slice::from_ref(&endpoint));
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let run_id = the_run_id(&s);
    let resumed = common::command(&s.path("state"))
        .current_dir(&dir)
        .args(["resume", &run_id])
        .env(endpoint.0, &endpoint.1)
        .output()
        .unwrap();
    // `broken` fails again.
    assert_eq!(resumed.status.code(), Some(1), "{}", text(&resumed.stderr));

    let (spans, _) = receiver.spans();
    let mut roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    roots.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(roots.len(), 2, "one trace per run and per resume");
    assert_ne!(roots[0].trace_id, roots[1].trace_id);
    assert!(roots[0].links.is_empty());
    let links: Vec<(String, String)> = roots[1]
        .links
        .iter()
        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
        .collect();
    assert_eq!(links, [(hex(&roots[0].trace_id), hex(&roots[0].span_id))]);
    for root in &roots {
        assert_eq!(
            string(&root.attributes, "flux.run_id"),
            Some(run_id.clone())
        );
    }

    // `trace` shows both, the resume following the original.
    let shown = common::command(&s.path("state"))
        .args(["trace", &run_id])
        .output()
        .unwrap();
    let waterfall = text(&shown.stdout);
    assert!(waterfall.contains(&hex(&roots[0].trace_id)), "{waterfall}");
    assert!(waterfall.contains(&hex(&roots[1].trace_id)), "{waterfall}");
    assert!(
        waterfall.contains(&format!("follows trace {}", hex(&roots[0].trace_id))),
        "{waterfall}"
    );
}

/// The switch: `--no-traces`, or the specification's `OTEL_SDK_DISABLED`,
/// records nothing (no spans in the checkpoint, nothing sent, no
/// TRACEPARENT for the tasks) and the run is otherwise the same; `trace`
/// then says why it has nothing. A run without the switch, against the
/// same collector, is traced: the receiver works.
#[test]
fn recording_can_be_turned_off() {
    let receiver = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    for (flag, env) in [
        (Some("--no-traces"), None),
        (None, Some(("OTEL_SDK_DISABLED", "TRUE"))),
    ] {
        let s = Scratch::new();
        let dir = dag_dir(&s, DAG);
        let mut command = common::command(&s.path("state"));
        command
            .current_dir(&dir)
            .args(["run", "traced.toml"])
            .args(flag)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        if let Some((k, v)) = env {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        // The DAG's own outcome: `broken` fails.
        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
        assert_eq!(
            std::fs::read_to_string(dir.join("traceparent.txt")).unwrap(),
            "",
            "{flag:?} {env:?}"
        );
        let run_id = the_run_id(&s);
        let shown = common::command(&s.path("state"))
            .args(["trace", &run_id])
            .output()
            .unwrap();
        let out = text(&shown.stdout);
        assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.stderr));
        assert!(
            out.contains("no spans stored") && out.contains("--no-traces"),
            "{out}"
        );
        let shown = common::command(&s.path("state"))
            .args(["show", &run_id])
            .output()
            .unwrap();
        assert!(
            text(&shown.stdout).contains("after_broken"),
            "{}",
            text(&shown.stdout)
        );
    }
    assert_eq!(receiver.requests(), 0, "nothing may be sent");

    let s = Scratch::new();
    let dir = dag_dir(&s, DAG);
    let (output, _) = run(&s, &dir, &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(!receiver.spans().0.is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.join("traceparent.txt"))
            .unwrap()
            .len(),
        55
    );
}

/// `trace RUN --send`: a run recorded without a collector is sent later,
/// span for span as the checkpoint keeps them (the same ids, names,
/// parents and attributes), decoded by the receiver with the
/// OpenTelemetry protobuf definitions. Step Functions executions' traces
/// go the same way.
#[test]
fn a_stored_trace_is_sent_later_as_it_was_recorded() {
    let receiver = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let s = Scratch::new();
    let dir = dag_dir(&s, DAG);
    let (output, _) = run(&s, &dir, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(receiver.requests(), 0);
    let run_id = the_run_id(&s);
    let otlp = s.path("stored.json");
    let stored = common::command(&s.path("state"))
        .args(["trace", &run_id, "--otlp-json", otlp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(stored.status.success(), "{}", text(&stored.stderr));
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&otlp).unwrap()).unwrap();
    let mut expected: Vec<(String, String, String)> = stored["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["scopeSpans"].as_array().unwrap().iter())
        .flat_map(|s| s["spans"].as_array().unwrap().iter())
        .map(|span| {
            (
                span["spanId"].as_str().unwrap().to_string(),
                span["name"].as_str().unwrap().to_string(),
                span["parentSpanId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert!(expected.len() >= 8, "{expected:?}");

    let sent = common::command(&s.path("state"))
        .args(["trace", &run_id, "--send"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .output()
        .unwrap();
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    assert!(
        text(&sent.stdout).contains(&format!("sent {} span(s)", expected.len())),
        "{}",
        text(&sent.stdout)
    );
    let (spans, resource) = receiver.spans();
    let mut received: Vec<(String, String, String)> = spans
        .iter()
        .map(|span| {
            (
                hex(&span.span_id),
                span.name.clone(),
                hex(&span.parent_span_id),
            )
        })
        .collect();
    expected.sort();
    received.sort();
    assert_eq!(received, expected);
    assert_eq!(
        string(&resource, "service.name").as_deref(),
        Some("flux-engine")
    );
    let flaky_attempts = spans
        .iter()
        .filter(|span| {
            span.name.starts_with("attempt ")
                && string(&span.attributes, "flux.task_id").as_deref() == Some("flaky")
        })
        .count();
    assert_eq!(flaky_attempts, 2);

    // Without a collector configured: a clear error.
    let refused = common::command(&s.path("state"))
        .args(["trace", &run_id, "--send"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{}",
        text(&refused.stderr)
    );
}

/// A run's stored spans in a form two runs can be compared by: per span
/// its name, kind, parent's name, status, attributes and events (without
/// ids, times and the run id), and how many links it has; sorted.
fn comparable_spans(s: &Scratch, run_id: &str) -> Vec<String> {
    let file = s.path("spans.json");
    let shown = common::command(&s.path("state"))
        .args(["trace", run_id, "--otlp-json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let mut spans = Vec::new();
    for resource in request["resourceSpans"].as_array().unwrap() {
        for scope in resource["scopeSpans"].as_array().unwrap() {
            spans.extend(scope["spans"].as_array().unwrap().iter().cloned());
        }
    }
    let s_root = s
        .path("")
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string();
    let name_of: BTreeMap<String, String> = spans
        .iter()
        .map(|s| {
            (
                s["spanId"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let attributes = |value: &serde_json::Value| -> Vec<String> {
        let mut out: Vec<String> = value
            .as_array()
            .into_iter()
            .flatten()
            .filter(|kv| kv["key"] != "flux.run_id")
            .map(|kv| format!("{}={}", kv["key"], kv["value"]))
            .collect();
        out.sort();
        out
    };
    let mut out: Vec<String> = spans
        .iter()
        .map(|span| {
            let parent = span["parentSpanId"]
                .as_str()
                .and_then(|p| name_of.get(p))
                .cloned()
                .unwrap_or_default();
            let events: Vec<String> = span["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("{} {:?}", e["name"], attributes(&e["attributes"])))
                .collect();
            format!(
                "{} kind={} parent={parent:?} status={} attributes={:?} events={events:?} links={}",
                span["name"],
                span["kind"],
                span["status"],
                attributes(&span["attributes"]),
                span["links"].as_array().map_or(0, Vec::len)
            )
            // Messages name the attempt's log, under this run's folder.
            .replace(s_root.as_str(), "SCRATCH")
            .replace(run_id, "RUN")
        })
        .collect();
    out.sort();
    out
}

/// Without a collector a lighter layer records the spans (issue 11: the
/// cost of recording); with one, tracing-opentelemetry and the SDK do.
/// Either way the task and attempt spans are rebuilt from the attempts
/// rows unless `FLUX_STORE_REBUILDABLE_SPANS=1` stores them as recorded.
/// The same run and resume, each of the four ways, read back as the same
/// spans; and without a collector the task's TRACEPARENT is its attempt's
/// span.
#[test]
fn the_checkpoint_holds_the_same_spans_with_or_without_a_collector() {
    let receiver = Receiver::start();
    let mut stored = Vec::new();
    let collector = format!("http://127.0.0.1:{}", receiver.port);
    for (endpoint, store_everything) in [
        (Some(collector.clone()), true),
        (Some(collector), false),
        (None, true),
        (None, false),
    ] {
        let s = Scratch::new();
        let dir = dag_dir(&s, DAG);
        let mut env: Vec<(&str, String)> = endpoint
            .iter()
            .map(|e| ("OTEL_EXPORTER_OTLP_ENDPOINT", e.clone()))
            .collect();
        if store_everything {
            env.push(("FLUX_STORE_REBUILDABLE_SPANS", "1".to_string()));
        }
        let (first, _) = run(&s, &dir, &env);
        assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
        let run_id = the_run_id(&s);
        let mut resume = common::command(&s.path("state"));
        resume
            .current_dir(&dir)
            .args(["resume", &run_id])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        for (k, v) in &env {
            resume.env(k, v);
        }
        let resumed = resume.output().unwrap();
        assert_eq!(resumed.status.code(), Some(1), "{}", text(&resumed.stderr));
        let spans = comparable_spans(&s, &run_id);
        if !store_everything {
            // Both recorders leave the attempt spans to the attempts rows.
            let conn = rusqlite::Connection::open(s.path("state").join("flux.db")).unwrap();
            let stored: Vec<String> = conn
                .prepare("SELECT name FROM spans WHERE name LIKE 'attempt %'")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(stored.is_empty(), "{endpoint:?}: {stored:?}");
        }
        if endpoint.is_none() {
            // The attempt of `first` is the parent the task was given.
            let traceparent = std::fs::read_to_string(dir.join("traceparent.txt")).unwrap();
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(s.path("spans.json")).unwrap())
                    .unwrap();
            let attempt = json["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .iter()
                .find(|sp| {
                    sp["name"] == "attempt 1"
                        && sp["attributes"].as_array().unwrap().iter().any(|kv| {
                            kv["key"] == "flux.task_id" && kv["value"]["stringValue"] == "first"
                        })
                })
                .cloned()
                .expect("first's attempt span");
            assert_eq!(
                traceparent,
                format!(
                    "00-{}-{}-01",
                    attempt["traceId"].as_str().unwrap(),
                    attempt["spanId"].as_str().unwrap()
                )
            );
        }
        stored.push(spans);
    }
    assert!(stored[0].len() > 10, "{:#?}", stored[0]);
    for (i, other) in stored.iter().enumerate().skip(1) {
        assert_eq!(&stored[0], other, "way {i}");
    }
}

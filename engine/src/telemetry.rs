//! Traces of runs: the scheduler's `tracing` spans (run, task, attempt,
//! and the steps task kinds open) become OpenTelemetry spans. With a
//! collector they go through `tracing-opentelemetry` and the
//! OpenTelemetry SDK; without one (the usual development run) the lighter
//! [`crate::span_recorder`] layer records them for the checkpoint alone,
//! at a fraction of the cost on the scheduler's thread. Every finished
//! span goes two ways:
//!
//! * into the checkpoint (`spans` table), so `flux-engine trace RUN_ID`
//!   works later without any collector;
//! * to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, over
//!   `OTEL_EXPORTER_OTLP_PROTOCOL` = `http/protobuf` (the default) or
//!   `grpc`. `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` set the
//!   resource, as the SDK reads them.
//!
//! Both run on threads of their own, fed through bounded queues, so that a
//! slow disk or an unreachable collector never slows the run: a full
//! queue drops spans (and says how many at the end), a failed export is
//! one warning on stderr. [`Telemetry::shutdown`] flushes both before the
//! process exits, waiting at most [`FLUSH_DEADLINE`] for the collector.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::checkpoint::Checkpoint;
use crate::span_recorder::{self, RecordedSpan, Recorder, SpanIds, SpanSink};
use crate::spans::{SpanEvent, SpanLink, SpanRecord, SpanStatus, attr};

/// The `tracing` target of events that exist for the trace only (an
/// attempt's exception, a retry): the terminal log leaves them out. (The
/// macros take it as a literal: `tracing` cannot tell a constant there
/// from a field name.)
pub const TRACE_TARGET: &str = "flux_engine::trace";

/// The instrumentation scope of flux-engine's spans.
pub const SCOPE: &str = "flux-engine";

/// How long the end of a process waits for the collector, at most.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(3);

/// Set once an export failed: the end of the process then does not wait
/// for a collector that is not there.
static COLLECTOR_FAILED: AtomicBool = AtomicBool::new(false);
/// An export is under way, and whether one ever succeeded: a first export
/// still retrying at the end is a collector that is not there either.
static EXPORTING: AtomicBool = AtomicBool::new(false);
static COLLECTOR_ANSWERED: AtomicBool = AtomicBool::new(false);
/// The one warning about the collector was written.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Spans waiting for a thread beyond this many are dropped (and counted).
const QUEUE: usize = 16_384;
/// Spans per OTLP request.
const BATCH: usize = 512;
/// Spans per checkpoint transaction: the scheduler's commits wait for
/// each, so it is kept to a fraction of a millisecond.
const STORE_CHUNK: usize = 128;
/// A partial batch goes after this long.
const BATCH_DELAY: Duration = Duration::from_millis(500);

/// The tracer provider (with a collector) and the two outlets; dropping
/// it without [`Telemetry::shutdown`] loses what is still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    outlets: Arc<Outlets>,
}

/// A finished span on its way to the checkpoint: from the SDK (with a
/// collector, which gets it too) or from the recorder layer.
enum Ended {
    Sdk(SpanData),
    Recorded(RecordedSpan),
}

impl Telemetry {
    /// Starts the pipeline: spans are kept in the checkpoint at
    /// `checkpoint`, and sent to a collector when the OTLP variables say
    /// so. A collector that cannot be configured is a warning.
    pub fn start(checkpoint: PathBuf) -> Telemetry {
        let resource = resource();
        let mut endpoint = String::new();
        let otlp = match collector() {
            None => None,
            Some(Err(e)) => {
                eprintln!("warning: traces are not sent to a collector: {e}");
                None
            }
            Some(Ok((protocol, to))) => {
                let resource = resource.clone();
                endpoint = to.clone();
                Some(Arc::new(Outlet::spawn("flux-otlp", move |inbox| {
                    send_spans(protocol, &resource, to, inbox)
                })))
            }
        };
        // The conversion for the checkpoint runs on the store's thread,
        // which then hands the span on to the collector's: the scheduler's
        // thread only queues it.
        let attributes = resource_attributes(&resource);
        let keep_rebuildable = stores_rebuildable_spans();
        let forward = otlp.clone();
        let store = Outlet::spawn("flux-spans", move |inbox| {
            store_spans(checkpoint, attributes, forward, keep_rebuildable, inbox)
        });
        let outlets = Arc::new(Outlets {
            store,
            endpoint,
            otlp,
        });
        let provider = outlets.otlp.is_some().then(|| {
            SdkTracerProvider::builder()
                .with_resource(resource)
                .with_span_processor(Processor(outlets.clone()))
                .build()
        });
        Telemetry { provider, outlets }
    }

    /// Whether spans go to a collector too.
    pub fn exports(&self) -> bool {
        self.outlets.otlp.is_some()
    }

    /// The `tracing` layer that records spans: tracing-opentelemetry's
    /// with a collector, the recorder's without.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let sdk = self.provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SCOPE))
                .with_error_records_to_exceptions(true)
                // The flux.* attributes say where a span belongs; source
                // locations and thread names would only add bytes per span.
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
        });
        let recorder = self.provider.is_none().then(|| {
            Recorder::new(self.outlets.clone()).keeping_rebuildable(stores_rebuildable_spans())
        });
        Layer::and_then(sdk, recorder)
    }

    /// Flushes the checkpoint and the collector, then stops both threads.
    pub fn shutdown(self) {
        // Ends the provider first, so that no span arrives after the flush.
        if let Some(provider) = &self.provider {
            let _ = provider.shutdown_with_timeout(FLUSH_DEADLINE);
        }
        self.outlets.close(FLUSH_DEADLINE);
    }
}

/// Whether the environment turns the OpenTelemetry SDK off
/// (`OTEL_SDK_DISABLED=true`, as the specification names it): a run then
/// records no spans at all, like `--no-traces`.
pub fn disabled_by_environment() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// `FLUX_STORE_REBUILDABLE_SPANS=1`, for tests: the `task` and `attempt`
/// spans the checkpoint rebuilds from its attempts rows are stored as
/// span rows too (which then win), so that a test can compare the two.
pub(crate) fn stores_rebuildable_spans() -> bool {
    std::env::var("FLUX_STORE_REBUILDABLE_SPANS").is_ok_and(|v| v == "1")
}

/// The resource's attributes as the checkpoint keeps them, sorted: the
/// SDK's order varies between processes, and a run and its resume must
/// read as the same resource.
fn resource_attributes(resource: &Resource) -> Vec<(String, serde_json::Value)> {
    let mut attributes: Vec<(String, serde_json::Value)> = resource
        .iter()
        .map(|(k, v)| (k.to_string(), json_value(v)))
        .collect();
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    attributes
}

/// This process's resource as JSON (`[[key, value], ...]`), made once:
/// the scheduler records it with each trace it starts, for the spans the
/// checkpoint rebuilds.
pub fn resource_json() -> &'static str {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        serde_json::to_string(&resource_attributes(&resource())).unwrap_or_else(|_| "[]".into())
    })
}

/// Now, in nanoseconds since the Unix epoch (the spans' clock).
pub fn now_unix_nano() -> u64 {
    unix_nanos(SystemTime::now())
}

/// The ids of `span` in its trace, whichever layer records it; `None`
/// when it is not recorded.
pub fn span_ids(span: &tracing::Span) -> Option<SpanIds> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(ids) = span_recorder::ids(span) {
        return Some(ids);
    }
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| SpanIds {
        trace: u128::from_be_bytes(span_context.trace_id().to_bytes()),
        span: u64::from_be_bytes(span_context.span_id().to_bytes()),
    })
}

/// The resource: the SDK's (`service.name` from `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), `flux-engine` by default, with the version
/// and the host.
fn resource() -> Resource {
    let mut builder = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        builder = builder.with_service_name("flux-engine");
    }
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Some(host) = hostname() {
        attributes.push(KeyValue::new("host.name", host));
    }
    builder.with_attributes(attributes).build()
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

/// Where the environment asks spans to go: the protocol and the endpoint
/// (for messages); `None` when no endpoint is set.
fn collector() -> Option<Result<(Protocol, String), String>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let endpoint =
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    Some(match protocol.as_str() {
        "http/protobuf" => Ok((Protocol::HttpProtobuf, format!("{endpoint} ({protocol})"))),
        "grpc" => Ok((Protocol::Grpc, format!("{endpoint} ({protocol})"))),
        other => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported; use http/protobuf or grpc"
        )),
    })
}

#[derive(Clone, Copy)]
enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// The OTLP exporter; the SDK's builders read the endpoint, headers and
/// timeout from the standard variables. Called inside the exporter
/// thread's runtime: the gRPC client needs one to exist.
fn exporter(protocol: Protocol) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::WithExportConfig;
    match protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
    }
    .map_err(|e| e.to_string())
}

/// What a thread takes from its queue at once.
struct Delivery<T> {
    items: Vec<T>,
    /// Flushes asked for: answered once `items` are written or sent.
    flushes: Vec<mpsc::Sender<()>>,
    /// The queue is closed: nothing more will come.
    closed: bool,
}

impl<T> Delivery<T> {
    fn answer_flushes(&mut self) {
        for ack in self.flushes.drain(..) {
            let _ = ack.send(());
        }
    }
}

struct Queue<T> {
    items: Vec<T>,
    flushes: Vec<mpsc::Sender<()>>,
    closed: bool,
}

/// The receiving end of an [`Outlet`], for its thread.
struct Inbox<T> {
    shared: Arc<(Mutex<Queue<T>>, Condvar)>,
}

impl<T> Inbox<T> {
    /// Everything queued, once there is a batch, a flush, the end, or
    /// `wait` has passed (then possibly nothing).
    fn take(&self, wait: Duration) -> Delivery<T> {
        let (queue, ready) = &*self.shared;
        let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.items.len() < BATCH && queue.flushes.is_empty() && !queue.closed {
            queue = ready
                .wait_timeout(queue, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Delivery {
            items: std::mem::take(&mut queue.items),
            flushes: std::mem::take(&mut queue.flushes),
            closed: queue.closed,
        }
    }
}

/// A thread fed through a bounded queue. The thread is woken per batch,
/// not per span: a wake-up per span costs the run's thread a system call
/// each time, about as much as the span itself.
struct Outlet<T> {
    shared: Arc<(Mutex<Queue<T>>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    dropped: AtomicU64,
}

impl<T: Send + 'static> Outlet<T> {
    fn spawn(name: &str, body: impl FnOnce(Inbox<T>) + Send + 'static) -> Outlet<T> {
        let shared = Arc::new((
            Mutex::new(Queue {
                items: Vec::new(),
                flushes: Vec::new(),
                closed: false,
            }),
            Condvar::new(),
        ));
        let inbox = Inbox {
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(inbox))
            .ok();
        if thread.is_none() {
            // No thread to take anything: the queue is closed from the start.
            shared.0.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        }
        Outlet {
            shared,
            thread: Mutex::new(thread),
            dropped: AtomicU64::new(0),
        }
    }

    fn send(&self, item: T) {
        self.send_all(std::iter::once(item));
    }

    fn send_all(&self, items: impl IntoIterator<Item = T>) {
        let (queue, ready) = &*self.shared;
        let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
        let before = queue.items.len();
        for item in items {
            if queue.closed || queue.items.len() >= QUEUE {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                queue.items.push(item);
            }
        }
        if before < BATCH && queue.items.len() >= BATCH {
            ready.notify_one();
        }
    }

    /// Asks the thread to flush and waits until `deadline`.
    fn flush(&self, deadline: Instant) -> bool {
        let (ack_tx, ack_rx) = mpsc::channel();
        {
            let (queue, ready) = &*self.shared;
            let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.closed {
                return self
                    .thread
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none();
            }
            queue.flushes.push(ack_tx);
            ready.notify_one();
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// Flushes, then closes the queue; the thread ends when it has done.
    fn close(&self, deadline: Instant) -> bool {
        let flushed = self.flush(deadline);
        {
            let (queue, ready) = &*self.shared;
            queue.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            ready.notify_one();
        }
        if flushed
            && let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            let _ = thread.join();
        }
        flushed
    }
}

struct Outlets {
    store: Outlet<Ended>,
    /// The collector, for messages.
    endpoint: String,
    otlp: Option<Arc<Outlet<SpanData>>>,
}

impl Outlets {
    fn close(&self, wait: Duration) {
        // The checkpoint is the record: it gets a long wait of its own.
        if !self.store.close(Instant::now() + Duration::from_secs(30)) {
            eprintln!("warning: some spans of this run could not be written to the checkpoint");
        }
        if let Some(otlp) = &self.otlp {
            // A collector that failed, or has not answered its first
            // export yet, is not waited for: the run is over.
            let absent = COLLECTOR_FAILED.load(Ordering::Relaxed)
                || (EXPORTING.load(Ordering::Relaxed)
                    && !COLLECTOR_ANSWERED.load(Ordering::Relaxed));
            let wait = if absent {
                Duration::from_millis(200)
            } else {
                wait
            };
            if !otlp.close(Instant::now() + wait) && !WARNED.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "warning: traces could not all be sent to {} before the run ended; its spans are in the checkpoint (flux-engine trace RUN_ID)",
                    self.endpoint
                );
            }
        }
        let dropped = self.store.dropped.load(Ordering::Relaxed)
            + self
                .otlp
                .as_ref()
                .map_or(0, |o| o.dropped.load(Ordering::Relaxed));
        if dropped > 0 {
            eprintln!("warning: {dropped} spans were dropped because the trace queue was full");
        }
    }
}

impl SpanSink for Outlets {
    fn ended(&self, span: RecordedSpan) {
        self.store.send(Ended::Recorded(span));
    }
}

/// The SDK's span processor: hands each finished span to both outlets.
struct Processor(Arc<Outlets>);

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("flux-engine span processor")
    }
}

impl SpanProcessor for Processor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.store.send(Ended::Sdk(span));
    }

    fn force_flush(&self) -> OTelSdkResult {
        let deadline = Instant::now() + FLUSH_DEADLINE;
        self.0.store.flush(deadline);
        if let Some(otlp) = &self.0.otlp {
            otlp.flush(deadline);
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // The outlets are closed by Telemetry::shutdown, after the provider.
        Ok(())
    }

    // The resource is given to the outlets by Telemetry::start.
    fn set_resource(&mut self, _resource: &Resource) {}
}

/// The checkpoint's thread: spans are written per run; a span whose trace
/// has not shown its run yet (a step span ends before its attempt) waits
/// until one of the trace's spans names the run.
fn store_spans(
    checkpoint: PathBuf,
    resource: Vec<(String, serde_json::Value)>,
    forward: Option<Arc<Outlet<SpanData>>>,
    keep_rebuildable: bool,
    inbox: Inbox<Ended>,
) {
    let mut db: Option<Checkpoint> = None;
    // The resource is the same for every span of this process: it is
    // stored with the first span kept of each trace and read back into
    // the others (`Checkpoint::spans`), instead of being copied, encoded
    // and written with every span.
    let mut described: HashSet<String> = HashSet::new();
    let mut run_of_trace: HashMap<String, String> = HashMap::new();
    let mut waiting: HashMap<String, Vec<SpanRecord>> = HashMap::new();
    let mut ready: HashMap<String, Vec<SpanRecord>> = HashMap::new();
    let mut warned = false;
    let mut write = |ready: &mut HashMap<String, Vec<SpanRecord>>| {
        if ready.is_empty() {
            return;
        }
        if db.is_none() {
            db = Checkpoint::open(&checkpoint).ok();
        }
        for (run_id, mut spans) in ready.drain() {
            // A transaction per batch: each holds the checkpoint's write
            // lock, which the scheduler's commits wait for.
            for batch in spans.chunks_mut(STORE_CHUNK) {
                let mut describing = HashSet::new();
                for span in batch.iter_mut() {
                    if !described.contains(&span.trace_id)
                        && describing.insert(span.trace_id.clone())
                    {
                        span.resource = resource.clone();
                    }
                }
                let result = match db.as_mut() {
                    Some(db) => db.insert_spans(&run_id, batch).map_err(|e| e.to_string()),
                    None => Err(format!("cannot open {}", checkpoint.display())),
                };
                match result {
                    // Only a batch that was kept describes its traces.
                    Ok(()) => described.extend(describing),
                    Err(e) => {
                        if !std::mem::replace(&mut warned, true) {
                            eprintln!("warning: spans of run {run_id} were not kept: {e}");
                        }
                    }
                }
            }
        }
        if let Some(db) = &db {
            // Best effort: the automatic checkpoint still runs if this fails.
            let _ = db.checkpoint_log();
        }
    };
    loop {
        let mut delivery = inbox.take(BATCH_DELAY);
        let mut sent = Vec::new();
        for ended in delivery.items.drain(..) {
            let span = match ended {
                Ended::Recorded(recorded) => recorded.into_record(Vec::new(), SCOPE),
                Ended::Sdk(data) => {
                    let span = record(&data, Vec::new());
                    if forward.is_some() {
                        sent.push(data);
                    }
                    // The collector gets every span; the checkpoint
                    // rebuilds these from its attempts rows.
                    if !keep_rebuildable && rebuildable(&span) {
                        continue;
                    }
                    span
                }
            };
            let run = span
                .attribute(attr::RUN_ID)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .or_else(|| run_of_trace.get(&span.trace_id).cloned());
            match run {
                Some(run_id) => {
                    run_of_trace.insert(span.trace_id.clone(), run_id.clone());
                    let bucket = ready.entry(run_id).or_default();
                    if let Some(earlier) = waiting.remove(&span.trace_id) {
                        bucket.extend(earlier);
                    }
                    bucket.push(span);
                }
                None => waiting.entry(span.trace_id.clone()).or_default().push(span),
            }
        }
        if let Some(otlp) = &forward {
            otlp.send_all(sent);
        }
        write(&mut ready);
        delivery.answer_flushes();
        if delivery.closed {
            return;
        }
    }
}

/// The collector's thread: batches of spans sent by the OTLP exporter on a
/// runtime of its own; the first failure is a warning, later ones are
/// counted silently (the run goes on either way).
fn send_spans(protocol: Protocol, resource: &Resource, endpoint: String, inbox: Inbox<SpanData>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("warning: traces are not sent to {endpoint}: no runtime for the exporter");
        return;
    };
    let built = {
        let _inside = runtime.enter();
        exporter(protocol)
    };
    let mut exporter = match built {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("warning: traces are not sent to {endpoint}: {e}");
            // Answer flushes so that the end of the run does not wait.
            loop {
                let mut delivery = inbox.take(Duration::from_secs(3600));
                delivery.answer_flushes();
                if delivery.closed {
                    return;
                }
            }
        }
    };
    // The SDK hands the resource to its own processors' exporters; this
    // one is driven here.
    exporter.set_resource(resource);
    let mut batch: Vec<SpanData> = Vec::new();
    let mut oldest: Option<Instant> = None;
    let send = |batch: &mut Vec<SpanData>, exporter: &mut opentelemetry_otlp::SpanExporter| {
        while !batch.is_empty() {
            let spans: Vec<SpanData> = batch.drain(..batch.len().min(BATCH)).collect();
            EXPORTING.store(true, Ordering::Relaxed);
            let result = runtime.block_on(async {
                tokio::time::timeout(FLUSH_DEADLINE, exporter.export(spans)).await
            });
            EXPORTING.store(false, Ordering::Relaxed);
            let error = match result {
                Ok(Ok(())) => {
                    COLLECTOR_ANSWERED.store(true, Ordering::Relaxed);
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {} s", FLUSH_DEADLINE.as_secs())),
            };
            if error.is_some() {
                COLLECTOR_FAILED.store(true, Ordering::Relaxed);
            }
            if let Some(e) = error
                && !WARNED.swap(true, Ordering::Relaxed)
            {
                eprintln!(
                    "warning: traces could not be sent to {endpoint}: {e}; the run goes on and its spans are in the checkpoint"
                );
            }
        }
    };
    loop {
        let wait = oldest.map_or(Duration::from_secs(3600), |t| {
            BATCH_DELAY.saturating_sub(t.elapsed())
        });
        let mut delivery = inbox.take(wait);
        if batch.is_empty() && !delivery.items.is_empty() {
            oldest = Some(Instant::now());
        }
        batch.append(&mut delivery.items);
        let due = oldest.is_some_and(|t| t.elapsed() >= BATCH_DELAY);
        if batch.len() >= BATCH || due || !delivery.flushes.is_empty() || delivery.closed {
            send(&mut batch, &mut exporter);
            oldest = None;
        }
        delivery.answer_flushes();
        if delivery.closed {
            let _ = exporter.shutdown();
            return;
        }
    }
}

/// Whether the checkpoint rebuilds `span` from its attempts rows: a
/// scheduler's `task` or `attempt` span (its name and exactly the
/// attributes the scheduler gives it) with nothing else in it than
/// `end_span` adds. The light recorder decides the same on its own
/// record of the span ([`span_recorder::RecordedSpan`]); a test checks
/// both paths store the same.
fn rebuildable(span: &SpanRecord) -> bool {
    use crate::spans::name;
    let Some(task_id) = span.attribute(attr::TASK_ID).and_then(|v| v.as_str()) else {
        return false;
    };
    let attempt = span.attribute(attr::ATTEMPT).and_then(|v| v.as_i64());
    let (expected_name, own_keys): (String, &[&str]) = match attempt {
        Some(n) => match u32::try_from(n) {
            Ok(n) => (
                name::attempt(n),
                &[
                    attr::RUN_ID,
                    attr::TASK_ID,
                    attr::TASK_TYPE,
                    attr::ATTEMPT,
                    attr::STATUS,
                ],
            ),
            Err(_) => return false,
        },
        None => (
            name::task(task_id),
            &[attr::RUN_ID, attr::TASK_ID, attr::TASK_TYPE, attr::STATUS],
        ),
    };
    let end_span_event = |events: &[SpanEvent]| match (events, &span.status) {
        ([], _) => true,
        ([event], SpanStatus::Error { message }) => {
            event.name == "exception"
                && event.attributes.len() == 3
                && event.attributes.iter().all(|(k, v)| match k.as_str() {
                    "level" => v == "INFO",
                    "target" => v == TRACE_TARGET,
                    "exception.message" => v == message.as_str(),
                    _ => false,
                })
        }
        _ => false,
    };
    span.name == expected_name
        && span.kind == "internal"
        && span.parent_span_id.is_some()
        && span.links.is_empty()
        && span
            .attributes
            .iter()
            .all(|(k, _)| own_keys.contains(&k.as_str()))
        && end_span_event(&span.events)
}

/// A finished SDK span as the checkpoint keeps it.
pub fn record(span: &SpanData, resource: Vec<(String, serde_json::Value)>) -> SpanRecord {
    let parent = span.parent_span_id;
    SpanRecord {
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_span_id: (parent != opentelemetry::trace::SpanId::INVALID)
            .then(|| parent.to_string()),
        name: span.name.to_string(),
        kind: match span.span_kind {
            SpanKind::Client => "client",
            SpanKind::Server => "server",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        }
        .into(),
        start_unix_nano: unix_nanos(span.start_time),
        end_unix_nano: unix_nanos(span.end_time),
        status: match &span.status {
            Status::Unset => SpanStatus::Unset,
            Status::Ok => SpanStatus::Ok,
            Status::Error { description } => SpanStatus::Error {
                message: description.to_string(),
            },
        },
        attributes: attributes(&span.attributes),
        events: span
            .events
            .iter()
            .map(|e| SpanEvent {
                name: e.name.to_string(),
                time_unix_nano: unix_nanos(e.timestamp),
                attributes: attributes(&e.attributes),
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|l| SpanLink {
                trace_id: l.span_context.trace_id().to_string(),
                span_id: l.span_context.span_id().to_string(),
                attributes: attributes(&l.attributes),
            })
            .collect(),
        resource,
        scope: span.instrumentation_scope.name().to_string(),
    }
}

fn attributes(kvs: &[KeyValue]) -> Vec<(String, serde_json::Value)> {
    kvs.iter()
        .map(|kv| (kv.key.to_string(), json_value(&kv.value)))
        .collect()
}

fn json_value(value: &Value) -> serde_json::Value {
    match value {
        Value::Bool(b) => (*b).into(),
        Value::I64(i) => (*i).into(),
        Value::F64(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::String(s) => s.as_str().into(),
        Value::Array(array) => match array {
            Array::Bool(v) => v.clone().into(),
            Array::I64(v) => v.clone().into(),
            Array::F64(v) => v.iter().map(|f| serde_json::json!(f)).collect(),
            Array::String(v) => v
                .iter()
                .map(|s| serde_json::Value::String(s.as_str().to_string()))
                .collect(),
            _ => serde_json::Value::Null,
        },
        _ => serde_json::Value::String(value.to_string()),
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// The W3C `traceparent` of the current span, for child processes:
/// `None` when no trace is being recorded.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(ids) = span_recorder::ids(span) {
        return Some(ids.traceparent());
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Links `span` to the span `span_id` of trace `trace_id` (hex; invalid
/// ids are ignored): a resumed run's root to the roots of earlier traces.
pub fn add_link(span: &tracing::Span, trace_id: &str, span_id: &str) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let (Ok(trace), Ok(id)) = (
        u128::from_str_radix(trace_id, 16),
        u64::from_str_radix(span_id, 16),
    ) else {
        return;
    };
    if trace == 0 || id == 0 {
        return;
    }
    if span_recorder::add_link(span, SpanIds { trace, span: id }) {
        return;
    }
    span.add_link(SpanContext::new(
        TraceId::from(trace),
        SpanId::from(id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    ));
}

/// Sets attribute `key` of `span` to `value`, whichever layer records
/// it: for keys known only at run time (a kind's preflight findings).
pub fn set_attribute(span: &tracing::Span, key: &str, value: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !span_recorder::set_attribute(span, key, value) {
        span.set_attribute(key.to_string(), value.to_string());
    }
}

/// Sends stored spans (`flux-engine trace RUN --send`) to the collector
/// the OTLP variables name, as the run's own exporter would; the endpoint
/// and how many were sent.
pub fn send_records(spans: &[SpanRecord]) -> Result<(String, usize), String> {
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let (protocol, endpoint) = match collector() {
        None => {
            return Err(
                "no collector: set OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)"
                    .into(),
            );
        }
        Some(found) => found?,
    };
    let value = |v: &serde_json::Value| -> Value {
        match v {
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::I64(i),
                None => Value::F64(n.as_f64().unwrap_or_default()),
            },
            serde_json::Value::String(s) => Value::String(s.clone().into()),
            serde_json::Value::Array(items) => Value::Array(Array::String(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map_or_else(|| i.to_string(), str::to_string)
                            .into()
                    })
                    .collect(),
            )),
            other => Value::String(other.to_string().into()),
        }
    };
    let key_values = |attributes: &[(String, serde_json::Value)]| -> Vec<KeyValue> {
        attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), value(v)))
            .collect()
    };
    let time = |nanos: u64| UNIX_EPOCH + Duration::from_nanos(nanos);
    let context = |trace: &str, span: &str| {
        SpanContext::new(
            TraceId::from_hex(trace).unwrap_or(TraceId::INVALID),
            SpanId::from_hex(span).unwrap_or(SpanId::INVALID),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    };
    let resource = spans
        .iter()
        .find(|s| !s.resource.is_empty())
        .map(|s| {
            Resource::builder_empty()
                .with_attributes(key_values(&s.resource))
                .build()
        })
        .unwrap_or_else(resource);
    let data: Vec<SpanData> = spans
        .iter()
        .map(|s| SpanData {
            span_context: context(&s.trace_id, &s.span_id),
            parent_span_id: s
                .parent_span_id
                .as_deref()
                .and_then(|p| SpanId::from_hex(p).ok())
                .unwrap_or(SpanId::INVALID),
            parent_span_is_remote: false,
            span_kind: match s.kind.as_str() {
                "client" => SpanKind::Client,
                "server" => SpanKind::Server,
                "producer" => SpanKind::Producer,
                "consumer" => SpanKind::Consumer,
                _ => SpanKind::Internal,
            },
            name: s.name.clone().into(),
            start_time: time(s.start_unix_nano),
            end_time: time(s.end_unix_nano),
            attributes: key_values(&s.attributes),
            dropped_attributes_count: 0,
            events: span_events(s, &key_values, &time),
            links: span_links(s, &key_values, &context),
            status: match &s.status {
                SpanStatus::Unset => Status::Unset,
                SpanStatus::Ok => Status::Ok,
                SpanStatus::Error { message } => Status::error(message.clone()),
            },
            instrumentation_scope: InstrumentationScope::builder(SCOPE).build(),
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime for the exporter: {e}"))?;
    let mut exporter = {
        let _inside = runtime.enter();
        exporter(protocol)?
    };
    exporter.set_resource(&resource);
    let n = data.len();
    let mut data = data;
    while !data.is_empty() {
        let batch: Vec<SpanData> = data.drain(..data.len().min(BATCH)).collect();
        runtime
            .block_on(async { tokio::time::timeout(FLUSH_DEADLINE, exporter.export(batch)).await })
            .map_err(|_| {
                format!(
                    "{endpoint} did not answer within {} s",
                    FLUSH_DEADLINE.as_secs()
                )
            })?
            .map_err(|e| format!("{endpoint}: {e}"))?;
    }
    let _ = exporter.shutdown();
    Ok((endpoint, n))
}

/// Stored attributes as the SDK's key-values.
type ToKeyValues<'a> = &'a dyn Fn(&[(String, serde_json::Value)]) -> Vec<KeyValue>;

/// The stored span's events as the SDK's (a non-exhaustive struct: built
/// from its default).
fn span_events(
    span: &SpanRecord,
    key_values: ToKeyValues,
    time: &dyn Fn(u64) -> SystemTime,
) -> opentelemetry_sdk::trace::SpanEvents {
    let mut events = opentelemetry_sdk::trace::SpanEvents::default();
    events.events = span
        .events
        .iter()
        .map(|e| {
            opentelemetry::trace::Event::new(
                e.name.clone(),
                time(e.time_unix_nano),
                key_values(&e.attributes),
                0,
            )
        })
        .collect();
    events
}

/// The stored span's links as the SDK's.
fn span_links(
    span: &SpanRecord,
    key_values: ToKeyValues,
    context: &dyn Fn(&str, &str) -> opentelemetry::trace::SpanContext,
) -> opentelemetry_sdk::trace::SpanLinks {
    let mut links = opentelemetry_sdk::trace::SpanLinks::default();
    links.links = span
        .links
        .iter()
        .map(|l| {
            opentelemetry::trace::Link::new(
                context(&l.trace_id, &l.span_id),
                key_values(&l.attributes),
                0,
            )
        })
        .collect();
    links
}

//! The light `tracing` layer that records a run's spans for the
//! checkpoint when no collector is configured (issue 11: span recording
//! cost 13-36 % of a run of no-op tasks through `tracing-opentelemetry`
//! and the SDK, which build a span builder, an OpenTelemetry context, key
//! values and an SDK span for every span, on the scheduler's thread).
//!
//! Here a span costs the scheduler's thread two random ids, its fields
//! (names stay `&'static str`), a time stamp and one push onto the
//! store's queue when it closes; hex ids and JSON values are made on the
//! store's thread. With a collector, `tracing-opentelemetry` and the SDK
//! do the work instead (see [`crate::telemetry`]); both produce the same
//! [`SpanRecord`]s, which `tests/trace_layers.rs` checks.
//!
//! The field conventions are tracing-opentelemetry's: `otel.name`,
//! `otel.kind`, `otel.status_code` (`OK`, `ERROR`) and
//! `otel.status_description` set the span's name, kind and status; an
//! event inside a span becomes a span event named by its message (an
//! event whose first field is `error` becomes an `exception` event), with
//! its `level` and `target`; an `ERROR` event marks its span failed.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::spans::{SpanEvent, SpanLink, SpanRecord, SpanStatus};

/// A span's place in its trace, kept in the span's extensions for its
/// children, for `traceparent` and for links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace: u128,
    pub span: u64,
}

impl SpanIds {
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace)
    }

    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span)
    }

    /// The W3C `traceparent` of the span, for child processes: sampled,
    /// as this recorder records every span.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_hex(), self.span_hex())
    }
}

/// A field's value, converted to JSON only on the store's thread.
#[derive(Debug, Clone)]
pub enum FieldValue {
    Str(String),
    I64(i64),
    F64(f64),
    Bool(bool),
}

impl FieldValue {
    fn json(self) -> serde_json::Value {
        match self {
            FieldValue::Str(s) => s.into(),
            FieldValue::I64(i) => i.into(),
            FieldValue::F64(f) => {
                serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
            }
            FieldValue::Bool(b) => b.into(),
        }
    }
}

type Fields = Vec<(&'static str, FieldValue)>;

#[derive(Debug)]
struct RecordedEvent {
    name: String,
    time_unix_nano: u64,
    attributes: Fields,
}

/// A span while it is open, and once it ends (with `end_unix_nano`).
#[derive(Debug)]
pub struct RecordedSpan {
    ids: SpanIds,
    parent: Option<u64>,
    /// `otel.name`, when set; else the span's name in the code.
    name: Option<String>,
    code_name: &'static str,
    /// The `tracing` target (module) that opened it.
    target: &'static str,
    kind: &'static str,
    start_unix_nano: u64,
    end_unix_nano: u64,
    status: SpanStatus,
    attributes: Fields,
    /// Attributes whose keys are only known at run time (what a kind's
    /// preflight found), after the fields.
    named_attributes: Vec<(String, FieldValue)>,
    events: Vec<RecordedEvent>,
    links: Vec<SpanIds>,
}

impl RecordedSpan {
    /// Whether the checkpoint rebuilds this span from its attempts rows,
    /// so that it need not be stored: the scheduler's `task` or `attempt`
    /// span with nothing in it but its own fields and what `end_span`
    /// adds (an `exception` event carrying the status's message). Spans
    /// with more (a retry event, events or links a task kind added) are
    /// stored. The same rule for the SDK's spans is
    /// `telemetry::rebuildable`.
    fn rebuildable(&self) -> bool {
        let end_span_event = match (self.events.as_slice(), &self.status) {
            ([], _) => true,
            ([event], SpanStatus::Error { message }) => {
                event.name == "exception"
                    && matches!(
                        event.attributes.as_slice(),
                        [
                            ("level", FieldValue::Str(level)),
                            ("target", FieldValue::Str(target)),
                            ("exception.message", FieldValue::Str(said)),
                        ] if level == "INFO" && target == crate::telemetry::TRACE_TARGET && said == message
                    )
            }
            _ => false,
        };
        self.target == crate::scheduler::SPAN_TARGET
            && matches!(self.code_name, "task" | "attempt")
            && self.kind == "internal"
            && self.parent.is_some()
            && self.links.is_empty()
            && self.named_attributes.is_empty()
            && end_span_event
    }

    /// The span as the checkpoint keeps it.
    pub fn into_record(
        self,
        resource: Vec<(String, serde_json::Value)>,
        scope: &str,
    ) -> SpanRecord {
        let fields = |fields: Fields| -> Vec<(String, serde_json::Value)> {
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.json()))
                .collect()
        };
        SpanRecord {
            trace_id: self.ids.trace_hex(),
            span_id: self.ids.span_hex(),
            parent_span_id: self.parent.map(|p| format!("{p:016x}")),
            name: self.name.unwrap_or_else(|| self.code_name.to_string()),
            kind: self.kind.to_string(),
            start_unix_nano: self.start_unix_nano,
            end_unix_nano: self.end_unix_nano,
            status: self.status,
            attributes: fields(self.attributes)
                .into_iter()
                .chain(
                    self.named_attributes
                        .into_iter()
                        .map(|(k, v)| (k, v.json())),
                )
                .collect(),
            events: self
                .events
                .into_iter()
                .map(|e| SpanEvent {
                    name: e.name,
                    time_unix_nano: e.time_unix_nano,
                    attributes: fields(e.attributes),
                })
                .collect(),
            links: self
                .links
                .into_iter()
                .map(|l| SpanLink {
                    trace_id: l.trace_hex(),
                    span_id: l.span_hex(),
                    attributes: Vec::new(),
                })
                .collect(),
            resource,
            scope: scope.to_string(),
        }
    }
}

/// Where ended spans go: the store's queue.
pub trait SpanSink: Send + Sync + 'static {
    fn ended(&self, span: RecordedSpan);
}

/// The layer; see the module's documentation.
pub struct Recorder {
    sink: Arc<dyn SpanSink>,
    /// Hand on the spans the checkpoint rebuilds too (for tests that
    /// compare the two).
    keep_rebuildable: bool,
}

impl Recorder {
    pub fn new(sink: Arc<dyn SpanSink>) -> Recorder {
        Recorder {
            sink,
            keep_rebuildable: false,
        }
    }

    /// Whether the spans the checkpoint rebuilds from its attempts rows
    /// are handed on as well (by default they are left out).
    pub fn keeping_rebuildable(mut self, keep: bool) -> Recorder {
        self.keep_rebuildable = keep;
        self
    }
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// A new span id, for a span the scheduler records without opening it.
pub fn new_span_id() -> u64 {
    span_id()
}

/// A random id that is not all zeroes (W3C: zero is invalid).
fn span_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

fn trace_id() -> u128 {
    loop {
        let id = rand::random::<u128>();
        if id != 0 {
            return id;
        }
    }
}

/// Sets a span's name, kind, status and attributes from its fields.
struct SpanFields<'a>(&'a mut RecordedSpan);

impl SpanFields<'_> {
    fn str(&mut self, field: &Field, value: String) {
        let span = &mut *self.0;
        match field.name() {
            "otel.name" => span.name = Some(value),
            "otel.kind" => span.kind = kind(&value),
            "otel.status_code" => {
                span.status = match value.as_str() {
                    "OK" | "ok" => SpanStatus::Ok,
                    "ERROR" | "error" => SpanStatus::Error {
                        message: String::new(),
                    },
                    _ => SpanStatus::Unset,
                }
            }
            "otel.status_description" => span.status = SpanStatus::Error { message: value },
            name => set(&mut span.attributes, name, FieldValue::Str(value)),
        }
    }
}

/// An attribute set again replaces its value, as the SDK's span does.
fn set(fields: &mut Fields, name: &'static str, value: FieldValue) {
    match fields.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => fields.push((name, value)),
    }
}

fn kind(value: &str) -> &'static str {
    match value {
        "client" | "CLIENT" => "client",
        "server" | "SERVER" => "server",
        "producer" | "PRODUCER" => "producer",
        "consumer" | "CONSUMER" => "consumer",
        _ => "internal",
    }
}

/// An unsigned value beyond `i64` is kept as its decimal text.
fn unsigned(value: u64) -> FieldValue {
    i64::try_from(value).map_or_else(|_| FieldValue::Str(value.to_string()), FieldValue::I64)
}

impl Visit for SpanFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.str(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.str(field, text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        set(&mut self.0.attributes, field.name(), FieldValue::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        set(&mut self.0.attributes, field.name(), unsigned(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        set(&mut self.0.attributes, field.name(), FieldValue::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        set(
            &mut self.0.attributes,
            field.name(),
            FieldValue::Bool(value),
        );
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.str(field, value.to_string());
    }
}

/// An event's name (its message) and fields.
struct EventFields<'a> {
    event: &'a mut RecordedEvent,
    /// The event was an error report: the span's status.
    error: Option<String>,
}

impl EventFields<'_> {
    fn str(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.event.name = value,
            // `error = %e` without a message: an exception, as
            // tracing-opentelemetry maps it.
            "error" if self.event.name.is_empty() => {
                self.event.name = "exception".into();
                self.error = Some(value.clone());
                self.event
                    .attributes
                    .push(("exception.message", FieldValue::Str(value)));
            }
            name => self.event.attributes.push((name, FieldValue::Str(value))),
        }
    }
}

impl Visit for EventFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.str(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.str(field, text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.event
            .attributes
            .push((field.name(), FieldValue::I64(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.event.attributes.push((field.name(), unsigned(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.event
            .attributes
            .push((field.name(), FieldValue::F64(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.event
            .attributes
            .push((field.name(), FieldValue::Bool(value)));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.str(field, value.to_string());
    }
}

impl<S> Layer<S> for Recorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanIds>().copied());
        let ids = SpanIds {
            trace: parent.map_or_else(trace_id, |p| p.trace),
            span: span_id(),
        };
        let mut recorded = RecordedSpan {
            ids,
            parent: parent.map(|p| p.span),
            name: None,
            code_name: attrs.metadata().name(),
            target: attrs.metadata().target(),
            kind: "internal",
            start_unix_nano: now_unix_nano(),
            end_unix_nano: 0,
            status: SpanStatus::Unset,
            attributes: Vec::with_capacity(attrs.fields().len()),
            named_attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
        };
        attrs.record(&mut SpanFields(&mut recorded));
        let mut extensions = span.extensions_mut();
        extensions.insert(ids);
        extensions.insert(recorded);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(recorded) = span.extensions_mut().get_mut::<RecordedSpan>()
        {
            values.record(&mut SpanFields(recorded));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Only events inside a span are kept: the span is what they belong to.
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let meta = event.metadata();
        let mut recorded_event = RecordedEvent {
            name: String::new(),
            time_unix_nano: now_unix_nano(),
            attributes: vec![
                ("level", FieldValue::Str(meta.level().as_str().to_string())),
                ("target", FieldValue::Str(meta.target().to_string())),
            ],
        };
        let mut fields = EventFields {
            event: &mut recorded_event,
            error: None,
        };
        event.record(&mut fields);
        let error = fields.error;
        if recorded_event.name.is_empty() {
            recorded_event.name = meta.name().to_string();
        }
        let mut extensions = span.extensions_mut();
        if let Some(recorded) = extensions.get_mut::<RecordedSpan>() {
            if recorded.status == SpanStatus::Unset {
                if let Some(message) = error {
                    recorded.status = SpanStatus::Error { message };
                } else if *meta.level() == tracing::Level::ERROR {
                    recorded.status = SpanStatus::Error {
                        message: String::new(),
                    };
                }
            }
            recorded.events.push(recorded_event);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let recorded = span.extensions_mut().remove::<RecordedSpan>();
        if let Some(mut recorded) = recorded {
            // Decided here, on the closing thread: a span left out costs
            // neither the queue nor the store's thread anything.
            if !self.keep_rebuildable && recorded.rebuildable() {
                return;
            }
            recorded.end_unix_nano = now_unix_nano();
            self.sink.ended(recorded);
        }
    }
}

/// The recorded ids of `span`, when this layer records it.
pub fn ids(span: &tracing::Span) -> Option<SpanIds> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        span.extensions().get::<SpanIds>().copied()
    })
    .flatten()
}

/// Adds a link to `span` (which this layer records); false when it does
/// not record it.
pub fn add_link(span: &tracing::Span, to: SpanIds) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        let mut extensions = span.extensions_mut();
        let recorded = extensions.get_mut::<RecordedSpan>()?;
        recorded.links.push(to);
        Some(())
    })
    .flatten()
    .is_some()
}

/// Makes `parent` the parent of `span` (which this layer records): an
/// attempt's span opened under the run's for a task span the scheduler
/// records itself. False when this layer does not record it.
pub fn set_parent(span: &tracing::Span, parent: u64) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        let mut extensions = span.extensions_mut();
        let recorded = extensions.get_mut::<RecordedSpan>()?;
        recorded.parent = Some(parent);
        Some(())
    })
    .flatten()
    .is_some()
}

/// Sets attribute `key` of `span` (which this layer records); false when
/// it does not record it.
pub fn set_attribute(span: &tracing::Span, key: &str, value: &str) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        let mut extensions = span.extensions_mut();
        let recorded = extensions.get_mut::<RecordedSpan>()?;
        let value = FieldValue::Str(value.to_string());
        match recorded.named_attributes.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => recorded.named_attributes.push((key.to_string(), value)),
        }
        Some(())
    })
    .flatten()
    .is_some()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Keeps what the recorder hands on.
    #[derive(Default)]
    struct Kept(Mutex<Vec<RecordedSpan>>);

    impl SpanSink for Kept {
        fn ended(&self, span: RecordedSpan) {
            self.0.lock().unwrap().push(span);
        }
    }

    /// Opens an `attempt` span as the scheduler does (its target, its
    /// fields), under `parent`, and runs `inside` in it.
    fn attempt(parent: &tracing::Span, inside: impl FnOnce(&tracing::Span)) {
        let span = tracing::info_span!(
            target: "engine::scheduler",
            parent: parent,
            "attempt",
            otel.name = "attempt 1",
            flux.run_id = "r1",
            flux.task_id = "t",
            flux.task_type = "shell",
            flux.attempt = 1i64,
            flux.status = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        inside(&span);
    }

    #[test]
    fn scheduler_spans_with_nothing_more_are_left_to_the_checkpoint_and_richer_ones_kept() {
        assert_eq!(crate::scheduler::SPAN_TARGET, "engine::scheduler");
        let kept = Arc::new(Kept::default());
        let subscriber = tracing_subscriber::registry().with(Recorder::new(kept.clone()));
        let task_span_id = 0x1234_u64;
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("run", otel.name = "run d");
            // Ended as `end_span` ends a failed attempt: left out.
            attempt(&run, |span| {
                assert!(set_parent(span, task_span_id));
                crate::scheduler::end_span(span, "failed", Some("boom"));
            });
            // An event of its task kind inside it: kept, under the task
            // span the scheduler named.
            attempt(&run, |span| {
                set_parent(span, task_span_id);
                span.in_scope(|| tracing::info!("the kind says something"));
                crate::scheduler::end_span(span, "succeeded", None);
            });
            // Two exceptions (ended twice): kept.
            attempt(&run, |span| {
                crate::scheduler::end_span(span, "failed", Some("boom"));
                crate::scheduler::end_span(span, "cancelled", Some("cancelled"));
            });
            drop(run);
        });
        let kept = kept.0.lock().unwrap();
        let names: Vec<(&str, usize)> =
            kept.iter().map(|s| (s.code_name, s.events.len())).collect();
        assert_eq!(names, [("attempt", 1), ("attempt", 2), ("run", 0)]);
        // Under the task span the scheduler named, and under the run's.
        assert_eq!(kept[0].parent, Some(task_span_id));
        assert_eq!(kept[1].parent, Some(kept[2].ids.span));
        // Kept with everything in it.
        assert_eq!(kept[0].status, SpanStatus::Ok);
    }
}

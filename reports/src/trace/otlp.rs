//! A run's spans as OTLP JSON: the protobuf JSON mapping of an
//! `ExportTraceServiceRequest` (`resourceSpans` → `scopeSpans` → `spans`),
//! with OTLP's own deviations from plain proto3 JSON: trace and span ids
//! as hex strings (not base64), enums as integers. 64-bit integers (times,
//! `intValue`) are decimal strings, as proto3 JSON writes them, so that
//! JavaScript readers do not round them.

use engine::spans::{SpanEvent, SpanLink, SpanRecord, SpanStatus};
use serde_json::{Map, Value, json};

/// Spans of one scope: the scope's name and the spans' JSON.
type ScopeGroup<'a> = (&'a str, Vec<Value>);
/// Scopes of one resource: the resource's attributes and its scopes.
type ResourceGroup<'a> = (&'a [(String, Value)], Vec<ScopeGroup<'a>>);

/// The request for `spans`: one `resourceSpans` per distinct resource,
/// one `scopeSpans` per scope within it, spans in the order given.
pub fn otlp_json(spans: &[SpanRecord]) -> Value {
    // Groups in order of first appearance; a run has one resource and one
    // scope in practice, so a linear search is as fast as a map.
    let mut groups: Vec<ResourceGroup> = Vec::new();
    for span in spans {
        let resource = span.resource.as_slice();
        let index = match groups.iter().position(|(r, _)| same_set(r, resource)) {
            Some(i) => i,
            None => {
                groups.push((resource, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[index].1;
        let scope = match scopes.iter().position(|(s, _)| *s == span.scope) {
            Some(i) => i,
            None => {
                scopes.push((&span.scope, Vec::new()));
                scopes.len() - 1
            }
        };
        scopes[scope].1.push(span_json(span));
    }
    let resource_spans: Vec<Value> = groups
        .into_iter()
        .map(|(resource, scopes)| {
            let scope_spans: Vec<Value> = scopes
                .into_iter()
                .map(|(scope, spans)| json!({"scope": {"name": scope}, "spans": spans}))
                .collect();
            json!({
                "resource": {"attributes": key_values(resource)},
                "scopeSpans": scope_spans,
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

/// Whether two resources have the same attributes, in any order: the
/// SDK keeps a resource's attributes in a hash map, so each process (a run,
/// then its resume) lists the same resource in an order of its own.
fn same_set(a: &[(String, Value)], b: &[(String, Value)]) -> bool {
    a.len() == b.len() && a.iter().all(|kv| b.contains(kv))
}

fn span_json(span: &SpanRecord) -> Value {
    let mut out = Map::new();
    out.insert("traceId".into(), span.trace_id.clone().into());
    out.insert("spanId".into(), span.span_id.clone().into());
    if let Some(parent) = span.parent_span_id.as_ref().filter(|p| !p.is_empty()) {
        out.insert("parentSpanId".into(), parent.clone().into());
    }
    out.insert("name".into(), span.name.clone().into());
    out.insert("kind".into(), span_kind(&span.kind).into());
    out.insert(
        "startTimeUnixNano".into(),
        span.start_unix_nano.to_string().into(),
    );
    out.insert(
        "endTimeUnixNano".into(),
        span.end_unix_nano.to_string().into(),
    );
    out.insert("attributes".into(), key_values(&span.attributes));
    out.insert(
        "events".into(),
        span.events
            .iter()
            .map(event_json)
            .collect::<Vec<_>>()
            .into(),
    );
    out.insert(
        "links".into(),
        span.links.iter().map(link_json).collect::<Vec<_>>().into(),
    );
    out.insert("status".into(), status_json(&span.status));
    Value::Object(out)
}

fn event_json(event: &SpanEvent) -> Value {
    json!({
        "timeUnixNano": event.time_unix_nano.to_string(),
        "name": event.name,
        "attributes": key_values(&event.attributes),
    })
}

fn link_json(link: &SpanLink) -> Value {
    json!({
        "traceId": link.trace_id,
        "spanId": link.span_id,
        "attributes": key_values(&link.attributes),
    })
}

/// `Status`: `code` is `STATUS_CODE_UNSET` (0), `OK` (1) or `ERROR` (2).
fn status_json(status: &SpanStatus) -> Value {
    match status {
        SpanStatus::Unset => json!({"code": 0}),
        SpanStatus::Ok => json!({"code": 1}),
        SpanStatus::Error { message } if message.is_empty() => json!({"code": 2}),
        SpanStatus::Error { message } => json!({"code": 2, "message": message}),
    }
}

/// `SpanKind`'s number for the lowercase name SpanRecord keeps; a name
/// it does not know is `SPAN_KIND_UNSPECIFIED` (0), not an error, so
/// that a span from a newer capture still exports.
pub(super) fn span_kind(kind: &str) -> u8 {
    let kind = kind.to_ascii_lowercase();
    match kind.strip_prefix("span_kind_").unwrap_or(&kind) {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => 0,
    }
}

fn key_values(attributes: &[(String, Value)]) -> Value {
    attributes
        .iter()
        .map(|(key, value)| json!({"key": key, "value": any_value(value)}))
        .collect::<Vec<_>>()
        .into()
}

/// `AnyValue`: one of its fields, by the JSON value's type. Integers that
/// fit an int64 are `intValue`; other numbers are `doubleValue`; objects
/// (not produced by flux-engine, but representable) are `kvlistValue`;
/// null is an empty `AnyValue`.
fn any_value(value: &Value) -> Value {
    match value {
        Value::Null => json!({}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::String(s) => json!({"stringValue": s}),
        Value::Number(n) => match n.as_i64() {
            Some(i) => json!({"intValue": i.to_string()}),
            None => json!({"doubleValue": n.as_f64().unwrap_or(0.0)}),
        },
        Value::Array(items) => {
            json!({"arrayValue": {"values": items.iter().map(any_value).collect::<Vec<_>>()}})
        }
        Value::Object(map) => json!({"kvlistValue": {"values": map
            .iter()
            .map(|(k, v)| json!({"key": k, "value": any_value(v)}))
            .collect::<Vec<_>>()}}),
    }
}
